"""The paper's figures: one function per figure of Section 4.

Every function takes arrays (numpy or jax) keyed by what they show and returns
a ``matplotlib.figure.Figure``; the caller saves it (:func:`save` writes a
PNG) or displays it. Figures are drawn on a bare
``matplotlib.figure.Figure`` with the Agg canvas, so importing this module never
changes the pyplot backend of a notebook. Images are in the model's (normalised)
input space and are min-max scaled per image for display only.

Keys of the ``dict`` arguments are row/series labels, usually optimizer labels
such as ``"SGD"`` and ``"Bort-S"``; their order is the drawing order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

_DPI = 110
_CELL = 1.35  # inches per image cell


def _as_array(name: str, value, ndim: int | tuple[int, ...]) -> np.ndarray:
  array = np.asarray(value, dtype=np.float64)
  allowed = (ndim,) if isinstance(ndim, int) else ndim
  if array.ndim not in allowed:
    raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} "
                     f"dimensions; got shape {array.shape}")
  if not np.all(np.isfinite(array)):
    raise ValueError(f"{name} contains non-finite values "
                     f"({np.sum(~np.isfinite(array))} of {array.size})")
  return array


def _images(name: str, value) -> np.ndarray:
  """(N, H, W, C) with C in {1, 3} -> (N, H, W, C) float array."""
  array = _as_array(name, value, 4)
  if array.shape[-1] not in (1, 3):
    raise ValueError(f"{name} must be (N, H, W, C) with C = 1 or 3; got shape "
                     f"{array.shape}")
  return array


def _display(image: np.ndarray) -> np.ndarray:
  """One (H, W, C) image min-max scaled to [0, 1]; (H, W) when grey."""
  low, high = image.min(), image.max()
  scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
  return scaled[..., 0] if scaled.shape[-1] == 1 else scaled


def save(fig: Figure, path: str | os.PathLike) -> str:
  """Writes ``fig`` as a PNG to ``path`` (folders created); returns ``path``."""
  path = os.fspath(path)
  if not path.lower().endswith(".png"):
    raise ValueError(f"path must end in .png; got {path!r}")
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  FigureCanvasAgg(fig)
  fig.savefig(path, dpi=_DPI, format="png")
  return path


def _check_labels(name: str, mapping: Mapping) -> list[str]:
  if not isinstance(mapping, Mapping) or not mapping:
    raise ValueError(f"{name} must be a non-empty mapping of label -> data; "
                     f"got {type(mapping).__name__} {mapping!r:.80}")
  return list(mapping)


def _image_rows(rows: Mapping[str, np.ndarray], title: str,
                captions: Mapping[str, Sequence[str]] | None = None) -> Figure:
  """A grid with one row per entry of ``rows`` (each (N, H, W, C))."""
  labels = _check_labels("rows", rows)
  arrays = {label: _images(f"rows[{label!r}]", rows[label]) for label in labels}
  n = arrays[labels[0]].shape[0]
  for label, array in arrays.items():
    if array.shape[0] != n:
      raise ValueError(f"every row needs {n} images (the first row has {n}); "
                       f"row {label!r} has shape {array.shape}")
  fig = Figure(figsize=(_CELL * n + 1.2, _CELL * len(labels) + 0.6))
  axes = fig.subplots(len(labels), n, squeeze=False)
  for r, label in enumerate(labels):
    for c in range(n):
      ax = axes[r, c]
      ax.imshow(_display(arrays[label][c]), cmap="gray", interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if captions and label in captions:
        ax.set_title(captions[label][c], fontsize=7)
    axes[r, 0].set_ylabel(label, fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return fig


def plot_gram_histograms(grams: Mapping[str, Mapping[str, Mapping[str, object]]],
                         *, bins: int = 60, title: str = "") -> Figure:
  """Fig. 3a: histograms of the Gram matrix's diagonal and off-diagonal entries.

  Args:
    grams: ``{optimizer label: {layer: {"diag": 1-D, "offdiag": 1-D}}}`` as
      returned per model by :func:`bort_jax.explain.gram_distribution`.
    bins: histogram bins, shared by all optimizers within one panel.
    title: figure title.
  """
  labels = _check_labels("grams", grams)
  layers = list(grams[labels[0]])
  for label in labels:
    if list(grams[label]) != layers:
      raise ValueError(f"grams[{label!r}] has layers {list(grams[label])}; "
                       f"expected the same layers as {labels[0]!r}: {layers}")
  fig = Figure(figsize=(7.0, 1.8 * len(layers) + 0.6))
  axes = fig.subplots(len(layers), 2, squeeze=False)
  for r, layer in enumerate(layers):
    for c, part in enumerate(("diag", "offdiag")):
      values = {label: _as_array(f"grams[{label!r}][{layer!r}][{part!r}]",
                                 grams[label][layer][part], 1)
                for label in labels}
      ax = axes[r, c]
      ax.set_title(f"{layer}: {'diagonal' if part == 'diag' else 'off-diagonal'}",
                   fontsize=8)
      if not any(v.size for v in values.values()):  # a 1-output layer
        ax.text(0.5, 0.5, "no entries", ha="center", va="center", fontsize=8,
                transform=ax.transAxes)
        continue
      low = min(v.min() for v in values.values() if v.size)
      high = max(v.max() for v in values.values() if v.size)
      edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
      for label, v in values.items():
        ax.hist(v, bins=edges, density=True, histtype="stepfilled", alpha=0.45,
                label=label)
      ax.set_yscale("log")
      ax.yaxis.set_minor_formatter(NullFormatter())
      ax.tick_params(which="both", labelsize=7)
  axes[0, 0].legend(fontsize=7)
  fig.suptitle(title or "Gram matrix entries per layer (Fig. 3a)", fontsize=10)
  fig.tight_layout()
  return fig


def plot_reconstruction_ratios(ratios: Mapping[str, Mapping[str, object]], *,
                               title: str = "") -> Figure:
  """Fig. 3b: the per-layer reconstruction ratio ‖z − Wᵀ(Wz)‖/‖z‖.

  Args:
    ratios: ``{optimizer label: {layer: (B,) ratios or a scalar}}``; bars show
      the mean over images, whiskers the standard deviation.
    title: figure title.
  """
  labels = _check_labels("ratios", ratios)
  layers = list(ratios[labels[0]])
  fig = Figure(figsize=(1.1 * len(layers) * len(labels) + 2.0, 3.2))
  ax = fig.subplots()
  width = 0.8 / len(labels)
  x = np.arange(len(layers))
  for i, label in enumerate(labels):
    if list(ratios[label]) != layers:
      raise ValueError(f"ratios[{label!r}] has layers {list(ratios[label])}; "
                       f"expected {layers}")
    values = [_as_array(f"ratios[{label!r}][{layer!r}]", ratios[label][layer],
                        (0, 1)).reshape(-1) for layer in layers]
    ax.bar(x + (i - (len(labels) - 1) / 2) * width,
           [v.mean() for v in values], width,
           yerr=[v.std() for v in values], capsize=3, label=label)
  ax.set_xticks(x, layers)
  ax.set_ylabel("‖z − Wᵀ(Wz)‖ / ‖z‖")
  ax.legend(fontsize=8)
  ax.set_title(title or "Reconstruction ratio per layer (Fig. 3b)", fontsize=10)
  fig.tight_layout()
  return fig


def plot_reconstructions(images, reconstructions: Mapping[str, object], *,
                         title: str = "") -> Figure:
  """Fig. 4: inputs and their guided-backprop reconstructions from a layer.

  Args:
    images: (N, H, W, C) inputs.
    reconstructions: ``{optimizer label: (N, H, W, C)}``.
    title: figure title.
  """
  _check_labels("reconstructions", reconstructions)
  rows = {"input": images, **reconstructions}
  return _image_rows(rows, title or "Reconstruction by guided backprop (Fig. 4)")


def plot_saliency_maps(images, maps: Mapping[str, object], *,
                       title: str = "") -> Figure:
  """Fig. 5: saliency maps over their images, one row per method/optimizer.

  Args:
    images: (N, H, W, C) inputs.
    maps: ``{row label, e.g. "SAT · Bort-S": (N, H, W)}``.
    title: figure title.
  """
  labels = _check_labels("maps", maps)
  images = _images("images", images)
  n, height, width = images.shape[:3]
  arrays = {}
  for label in labels:
    array = _as_array(f"maps[{label!r}]", maps[label], 3)
    if array.shape != (n, height, width):
      raise ValueError(f"maps[{label!r}] must have shape {(n, height, width)} "
                       f"to match images; got {array.shape}")
    arrays[label] = array
  fig = Figure(figsize=(_CELL * n + 1.2, _CELL * (len(labels) + 1) + 0.6))
  axes = fig.subplots(len(labels) + 1, n, squeeze=False)
  for c in range(n):
    background = _display(images[c])
    if background.ndim == 3:
      background = background.mean(-1)
    axes[0, c].imshow(background, cmap="gray", interpolation="nearest")
    for r, label in enumerate(labels, start=1):
      axes[r, c].imshow(background, cmap="gray", interpolation="nearest")
      axes[r, c].imshow(_display(arrays[label][c][..., None]), cmap="jet",
                        alpha=0.5, interpolation="bilinear")
  for r, label in enumerate(["input", *labels]):
    axes[r, 0].set_ylabel(label, fontsize=8)
  for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(title or "Saliency maps (Fig. 5)", fontsize=10)
  fig.tight_layout()
  return fig


def plot_deletion_insertion(curves: Mapping[str, Mapping[str, Mapping[str, object]]],
                            *, title: str = "") -> Figure:
  """Table 3's curves: mean deletion and insertion score per method.

  Args:
    curves: ``{method: {optimizer label: {"deletion": (B, S) or (S,),
      "insertion": (B, S) or (S,)}}}``; the x axis is the fraction of pixels
      removed/inserted, from 0 to 1.
    title: figure title.
  """
  methods = _check_labels("curves", curves)
  fig = Figure(figsize=(2.4 * len(methods) + 0.6, 4.6))
  axes = fig.subplots(2, len(methods), squeeze=False)
  for c, method in enumerate(methods):
    for label in _check_labels(f"curves[{method!r}]", curves[method]):
      for r, part in enumerate(("deletion", "insertion")):
        curve = _as_array(f"curves[{method!r}][{label!r}][{part!r}]",
                          curves[method][label][part], (1, 2))
        mean = curve.reshape(-1, curve.shape[-1]).mean(0)
        axes[r, c].plot(np.linspace(0.0, 1.0, mean.size), mean, label=label)
    axes[0, c].set_title(method, fontsize=9)
    for r, part in enumerate(("deletion ↓", "insertion ↑")):
      axes[r, c].tick_params(labelsize=7)
      axes[r, c].set_ylim(-0.02, 1.02)
      if c == 0:
        axes[r, c].set_ylabel(f"{part}\nscore", fontsize=8)
  axes[0, 0].legend(fontsize=7)
  fig.suptitle(title or "Deletion / insertion curves (Table 3)", fontsize=10)
  fig.tight_layout()
  return fig


def plot_decomposition(images, reconstructions: Mapping[str, object], *,
                       title: str = "") -> Figure:
  """Fig. 6a: reconstructions from only the k binarised salient variables.

  Args:
    images: (N, H, W, C) inputs.
    reconstructions: ``{optimizer label: (N, H, W, C)}`` top-k reconstructions.
    title: figure title.
  """
  _check_labels("reconstructions", reconstructions)
  rows = {"input": images, **reconstructions}
  return _image_rows(rows, title or "Top-k decomposition (Fig. 6a)")


def plot_component_clusters(components: Mapping[str, object],
                            cluster_labels: Mapping[str, object], *,
                            max_per_cluster: int = 8, title: str = "") -> Figure:
  """Fig. 6b: the k per-channel reconstructions of one image, grouped by K-means.

  Args:
    components: ``{optimizer label: (k, H, W, C)}`` reconstructions of single
      binarised variables.
    cluster_labels: ``{optimizer label: (k,) int}`` cluster of each component.
    max_per_cluster: components drawn per cluster row (the rest are counted).
    title: figure title.
  """
  labels = _check_labels("components", components)
  if list(cluster_labels) != labels:
    raise ValueError(f"cluster_labels must have the same keys as components "
                     f"({labels}); got {list(cluster_labels)}")
  if max_per_cluster < 1:
    raise ValueError(f"max_per_cluster must be >= 1; got {max_per_cluster}")
  groups = {}
  for label in labels:
    comps = _images(f"components[{label!r}]", components[label])
    assignment = np.asarray(cluster_labels[label])
    if assignment.shape != (comps.shape[0],) or not np.issubdtype(
        assignment.dtype, np.integer):
      raise ValueError(f"cluster_labels[{label!r}] must be ({comps.shape[0]},) "
                       f"integers; got {assignment.dtype} {assignment.shape}")
    groups[label] = (comps, assignment, np.unique(assignment))
  n_rows = max(len(g[2]) for g in groups.values())
  n_cols = min(max_per_cluster, max(np.bincount(g[1] - g[1].min()).max()
                                    for g in groups.values()))
  fig = Figure(figsize=(len(labels) * (_CELL * n_cols * 0.8 + 0.8),
                        _CELL * 0.8 * n_rows + 1.2))
  subfigs = np.atleast_1d(fig.subfigures(1, len(labels)))
  for subfig, label in zip(subfigs, labels):
    comps, assignment, clusters = groups[label]
    axes = subfig.subplots(n_rows, n_cols, squeeze=False)
    for ax in axes.flat:
      ax.set_axis_off()
    for r, cluster in enumerate(clusters):
      members = np.flatnonzero(assignment == cluster)
      for c, index in enumerate(members[:n_cols]):
        axes[r, c].imshow(_display(comps[index]), cmap="gray",
                          interpolation="nearest")
      axes[r, 0].set_title(f"cluster {cluster}: {members.size}", fontsize=7,
                           loc="left")
    subfig.suptitle(label, fontsize=9, y=0.94)
  fig.suptitle(title or "Top-k components clustered by K-means (Fig. 6b)",
               fontsize=10, y=0.995, va="top")
  return fig


def plot_adversarial(sources, targets, adversarials: Mapping[str, object], *,
                     predictions: Mapping[str, object] | None = None,
                     target_classes=None,
                     success_rates: Mapping[str, float] | None = None,
                     title: str = "") -> Figure:
  """Fig. 6c: adversarial syntheses (the target's channels at the source's places).

  Args:
    sources: (N, H, W, C) images whose spatial layout is kept.
    targets: (N, H, W, C) images whose salient channels are kept.
    adversarials: ``{optimizer label: (N, H, W, C)}`` synthesized samples.
    predictions: optional ``{optimizer label: (N,) int}`` class predicted on
      each synthesized sample, shown above it.
    target_classes: optional (N,) class the model predicts on each target.
    success_rates: optional ``{optimizer label: fraction}`` for the row labels.
    title: figure title.
  """
  labels = _check_labels("adversarials", adversarials)
  rows = {"source": sources, "target": targets}
  captions = {}
  if target_classes is not None:
    captions["target"] = [f"class {int(t)}" for t in np.asarray(target_classes)]
  for label in labels:
    row = label
    if success_rates is not None:
      row = f"{label}\nsuccess {float(success_rates[label]):.0%}"
    rows[row] = adversarials[label]
    if predictions is not None:
      captions[row] = [f"pred {int(p)}" for p in np.asarray(predictions[label])]
  return _image_rows(rows, title or "Adversarial synthesis (Fig. 6c)",
                     captions=captions)


def plot_training_curves(histories: Mapping[str, Sequence[Mapping[str, float]]],
                         *, title: str = "") -> Figure:
  """Training loss, test loss and test top-1 per epoch for each run.

  Args:
    histories: ``{run label: [metrics dict per evaluation]}`` as in a run's
      ``metrics.jsonl``: each dict has ``epoch`` and at least one of
      ``train_loss``, ``eval_loss``, ``top1``.
    title: figure title.
  """
  labels = _check_labels("histories", histories)
  keys = (("train_loss", "train loss"), ("eval_loss", "test loss"),
          ("top1", "test top-1"))
  fig = Figure(figsize=(10.0, 3.0))
  axes = fig.subplots(1, len(keys))
  for label in labels:
    records = list(histories[label])
    if not records:
      raise ValueError(f"histories[{label!r}] is empty; expected one metrics "
                       "dict per evaluation")
    for ax, (key, _) in zip(axes, keys):
      points = [(r["epoch"], r[key]) for r in records if key in r]
      if points:
        xs, ys = zip(*points)
        ax.plot(xs, _as_array(f"histories[{label!r}][{key!r}]", ys, 1),
                marker="o", markersize=3, label=label)
  for ax, (_, name) in zip(axes, keys):
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("epoch", fontsize=8)
    ax.tick_params(labelsize=7)
  axes[0].legend(fontsize=7)
  fig.suptitle(title or "Training curves", fontsize=10)
  fig.tight_layout()
  return fig
