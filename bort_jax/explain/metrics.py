"""Deletion / insertion (Petsiuk et al., 2018), the metrics of Table 3."""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from bort_jax import validate
from bort_jax.explain import _common

SCORES = ("prob", "logit")


class DeletionInsertion(NamedTuple):
  deletion: jax.Array       # (N, n_steps + 1) score after t·step pixels removed
  insertion: jax.Array      # (N, n_steps + 1) score after t·step pixels inserted
  deletion_auc: jax.Array   # (N,) lower is better
  insertion_auc: jax.Array  # (N,) higher is better
  tied_fraction: jax.Array  # (N,) share of pixels whose saliency equals
                            # another pixel's in the same map
  deletion_logit: jax.Array   # (N, n_steps + 1) the target's logit along
  insertion_logit: jax.Array  # the same perturbations (for normalized_auc)


def rise_blur_kernel(size: int = 11, sigma: float = 5.0) -> np.ndarray:
  """RISE's insertion substrate kernel: a centred Dirac smoothed by
  ``scipy.ndimage.gaussian_filter`` (σ=5) on an 11×11 grid."""
  dirac = np.zeros((size, size))
  dirac[size // 2, size // 2] = 1.0
  return ndimage.gaussian_filter(dirac, sigma).astype(np.float32)


def blur(x: jax.Array) -> jax.Array:
  """Each channel convolved with :func:`rise_blur_kernel`, zero padding."""
  kernel = jnp.asarray(rise_blur_kernel(), x.dtype)
  c = x.shape[-1]
  kernel = jnp.tile(kernel[:, :, None, None], (1, 1, 1, c))  # depthwise HWIO
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=c)


def pixel_ranks(saliency: jax.Array, key=None) -> jax.Array:
  """(N, H·W) rank of every pixel, 0 = most salient.

  Ties go to the pixel earlier in raster order (stable sort), or, with a PRNG
  ``key``, to a uniformly random order (one permutation per map).
  """
  flat = saliency.reshape(saliency.shape[0], -1)
  if key is None:
    order = jnp.argsort(-flat, axis=-1, stable=True)
  else:
    keys = jax.random.split(key, flat.shape[0])
    shuffle = jax.vmap(
        lambda k: jax.random.permutation(k, flat.shape[1]))(keys)
    order = jnp.lexsort((shuffle, -flat), axis=-1)  # last key is primary
  return jnp.argsort(order, axis=-1, stable=True)


def tied_fraction(saliency: jax.Array) -> jax.Array:
  """(N,) share of each map's pixels whose value equals another pixel's."""
  flat = jnp.sort(saliency.reshape(saliency.shape[0], -1), axis=-1)
  same = flat[:, 1:] == flat[:, :-1]
  edge = jnp.zeros_like(same[:, :1])
  tied = jnp.concatenate([edge, same], -1) | jnp.concatenate([same, edge], -1)
  return jnp.mean(tied, axis=-1)


def normalized_auc(curve, mode: str) -> np.ndarray:
  """The AUC of the Bort authors' benchmark: each curve divided by its value
  on the unperturbed image (the first point of a deletion curve, the last of
  an insertion curve), then averaged over its points (a plain mean, not a
  trapezoid).  Our own code after ``auc`` in ``src/benchmark/metric.py`` of
  zbr17/ExplainAttr, whose ``Metric`` scores logits (``use_softmax=False``);
  on logit curves it can be negative or exceed 1, as in the paper's Table 3.

  Args:
    curve: (..., T) scores along one perturbation, e.g. ``deletion_logit``.
    mode: ``"deletion"`` or ``"insertion"``.

  Returns:
    (...,) float64 AUCs.  A reference value of 0 raises ``ValueError``
    (the ratio would be infinite); a negative one is divided by as the
    authors do, which flips that curve's sign.
  """
  if mode not in ("deletion", "insertion"):
    raise ValueError(f"mode must be 'deletion' or 'insertion'; got {mode!r}")
  curve = np.asarray(curve, np.float64)
  if curve.ndim == 0 or curve.shape[-1] < 2:
    raise ValueError(f"curve needs at least 2 points on its last axis; got "
                     f"shape {curve.shape}")
  validate.check_finite("curve", curve)
  reference = curve[..., :1] if mode == "deletion" else curve[..., -1:]
  if np.any(reference == 0):
    bad = np.argwhere(reference[..., 0] == 0)
    raise ValueError(f"{mode} curves {bad.tolist()[:10]} ({len(bad)} in all) "
                     "are 0 on the unperturbed image: the normalised AUC "
                     "divides by that value")
  return (curve / reference).mean(-1)


def rise_auc(curve: jax.Array) -> jax.Array:
  """RISE's normalised area: the trapezoid rule on ``t / n_steps`` (equal
  spacing, also when the last step changes fewer than ``step`` pixels)."""
  return (jnp.sum(curve, -1) - 0.5 * (curve[..., 0] + curve[..., -1])) / (
      curve.shape[-1] - 1)


@functools.partial(
    jax.jit,
    static_argnames=("definition", "step", "score", "tie_orders",
                     "batch_size"))
def _deletion_insertion(definition, params, x, saliency, target, key, *, step,
                        score, tie_orders, batch_size):
  model = _common.logits_fn(definition, params)
  n, h, w, c = x.shape
  if tie_orders == 1:  # no ties: one order, the descending sort
    ranks = pixel_ranks(saliency)[None]
  else:
    ranks = jax.vmap(lambda k: pixel_ranks(saliency, k))(
        jax.random.split(key, tie_orders))
  ranks = ranks.reshape(tie_orders, n, h, w, 1)
  blurred = blur(x)
  n_steps = math.ceil(h * w / step)
  counts = jnp.minimum(jnp.arange(n_steps + 1) * step, h * w)
  both = jnp.tile(target, 2 * tie_orders)

  def scores_at(count):
    changed = ranks < count  # all channels of a pixel together
    deleted = jnp.where(changed, jnp.zeros_like(x), x)
    inserted = jnp.where(changed, x, blurred)
    images = jnp.concatenate([deleted, inserted]).reshape(-1, h, w, c)
    logits = model(images)
    out = jax.nn.softmax(logits) if score == "prob" else logits
    # Mean over the tie orders: the expected score at this count.
    picked = jnp.stack([_common.pick(out, both), _common.pick(logits, both)])
    return picked.reshape(2, 2, tie_orders, n).mean(2)

  # (T, score or logit, deletion or insertion, N) -> (2, 2, N, T)
  curves = jnp.moveaxis(jax.lax.map(scores_at, counts, batch_size=batch_size),
                        0, -1)
  (deletion, insertion), logits = curves
  return DeletionInsertion(deletion, insertion, rise_auc(deletion),
                           rise_auc(insertion), tied_fraction(saliency),
                           *logits)


def deletion_insertion(model, x, saliency, *, step: int, target=None,
                       score: str = "prob", tie_orders: int = 8,
                       seed: int = 0,
                       batch_size: int = 8) -> DeletionInsertion:
  """Deletion and insertion curves and AUCs (RISE protocol), tie-invariant.

  Pixels are ranked by saliency (descending) and changed ``step`` at a time,
  all channels of a pixel together.  Deletion starts at ``x`` and sets pixels
  to 0 (in the model's normalised input space); insertion starts at RISE's
  blurred copy (:func:`blur`) and restores pixels of ``x``.  The curve is the
  softmax probability (``score="prob"``) or logit (``"logit"``) of the class
  predicted on ``x`` (or ``target``), at ``t = 0 .. ceil(H·W / step)``; the
  AUC is RISE's (:func:`rise_auc`: trapezoid on ``t / n_steps``, in [0, 1]).
  The target's logit along the same perturbations comes with it (from the
  same model calls), for the authors' normalised AUC (:func:`normalized_auc`).

  Ties: pixels of equal saliency have no order, so the curve is the
  expectation over random orders of each tied group, estimated by averaging
  the scores of ``tie_orders`` seeded uniformly random tie-breaks (all orders
  evaluated in the same batched model call).  A map without ties has one
  order and needs one evaluation per step: then the result is exactly
  RISE's ``CausalMetric``.  ``tied_fraction`` reports how much of each map
  was tied (exact equality).

  Args:
    model: an ``nnx.Module`` or any JAX-traceable callable mapping
      (N, H, W, C) images to (N, num_classes) finite logits.
    x: images (N, H, W, C), NHWC; N ≥ 1.
    saliency: (N, H, W) maps, one per image, finite (what every saliency
      explainer returns; reduce per-channel attributions with
      :func:`reduce_channels`).
    step: pixels changed per step.
    target: class per image, None = predicted class.
    score: "prob" or "logit".
    tie_orders: random tie-breaks averaged when any map has ties.
    seed: PRNG seed of the tie-breaks.
    batch_size: steps evaluated together (each on 2·N·orders images).

  Returns:
    :class:`DeletionInsertion`.
  """
  x = _common.images(model, x)
  step = validate.check_positive_int("step", step)
  tie_orders = validate.check_positive_int("tie_orders", tie_orders)
  batch_size = validate.check_positive_int("batch_size", batch_size)
  if score not in SCORES:
    raise ValueError(f"score must be one of {SCORES}; got {score!r}")
  saliency = jnp.asarray(saliency)
  if saliency.shape != x.shape[:3]:
    per_channel = (" (per-channel attributions: reduce them with "
                   "explain.reduce_channels)"
                   if saliency.shape == x.shape else "")
    raise ValueError(
        f"saliency must hold one (H, W) map per image, shape {x.shape[:3]} "
        f"for images of shape {x.shape}; got {saliency.shape}{per_channel}")
  validate.check_finite("saliency", saliency)
  saliency = saliency.astype(jnp.float32)
  if not bool(jnp.any(tied_fraction(saliency) > 0)):
    tie_orders = 1
  definition, params, target = _common.black_box(model, x, target)
  return _common.check_finite_result(
      _deletion_insertion(definition, params, x, saliency, target,
                          jax.random.key(int(seed)), step=step, score=score,
                          tie_orders=tie_orders, batch_size=batch_size),
      "deletion_insertion")
