"""Feature decomposition and adversarial synthesis (Section 4.2.4, Appendix
A.5, Fig. 6): reconstructions from a few binarised top-layer variables."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bort_jax import validate
from bort_jax.models import functional
from bort_jax.explain import _common
from bort_jax.explain import guided_backprop
from bort_jax.explain import onehot_backtrack


class Decomposition(NamedTuple):
  components: jax.Array      # (N, k, H, W, C) reconstruction of each variable
  reconstruction: jax.Array  # (N, H, W, C) reconstruction of all k together
  channels: jax.Array        # (N, k) the chosen channels, most salient first


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "layer", "k", "top_kind", "batch_size"))
def _decompose(graphdef, state, x, B, *, layer, k, top_kind, batch_size):
  model = _common.merge_eval(graphdef, state)

  def one_image(image):
    image = image[None]
    z, back = onehot_backtrack.onehot_backtracker(model, image, layer, top_kind)
    channels, positions, _ = onehot_backtrack.salient_channels(z, k)
    components = jax.vmap(back, in_axes=(1, 1, None), out_axes=1)(
        channels, positions, jnp.full((1,), B, z.dtype))
    # All k binarised variables at once (guided backprop is not additive).
    n, h, w, c = z.shape
    sparse = jnp.zeros((n, h * w, c), z.dtype).at[
        0, positions[0], channels[0]].set(B).reshape(z.shape)
    _, vjp = jax.vjp(
        lambda i: guided_backprop.guided_features(model, i, layer), image)
    return components[0], vjp(sparse)[0][0], channels[0]

  return Decomposition(*jax.lax.map(one_image, x, batch_size=batch_size))


def decompose(model, x, *, layer, k: int = 64, B: float = 1.0,
              batch_size: int = 16) -> Decomposition:
  """Decomposition of Fig. 6a/b (Appendix A.5).

  The k channels of ``Z = model.features(x, layer)`` with the largest max
  activation are chosen; each is binarised to ``B`` at the position of its
  maximum and 0 elsewhere.  ``components`` backtracks each variable alone,
  ``reconstruction`` backtracks the map holding only the k variables (guided
  backprop, as :func:`bort_jax.explain.reconstruct`).  ``x``: images
  (N, H, W, C), NHWC; N ≥ 1.
  """
  x = _common.images(model, x)
  index = _common.layer_index(model, layer)
  k = validate.check_positive_int("k", k)
  batch_size = validate.check_positive_int("batch_size", batch_size)
  validate.check_positive_float("B", B)
  graphdef, state = _common.split(model)
  top_kind = onehot_backtrack.top_conv_kind(model, index)
  return _common.check_finite_result(
      _decompose(graphdef, state, x, jnp.asarray(B, x.dtype), layer=index,
                 k=k, top_kind=top_kind, batch_size=batch_size), "decompose")


def cluster_components(components, n_clusters: int, *, seed: int = 0):
  """K-means labels of components (Fig. 6b) with scikit-learn.

  Args:
    components: (..., H, W, C); all leading axes are flattened into samples.
    n_clusters: number of clusters.

  Returns:
    int labels with the leading shape of ``components`` minus (H, W, C).
  """
  from sklearn.cluster import KMeans  # pylint: disable=import-outside-toplevel

  components = np.asarray(components, np.float64)
  if components.ndim < 4:
    raise ValueError(
        f"components must be (..., H, W, C); got shape {components.shape}")
  lead = components.shape[:-3]
  samples = components.reshape(int(np.prod(lead)), -1)
  if not 1 <= n_clusters <= samples.shape[0]:
    raise ValueError(
        f"n_clusters must be in 1..{samples.shape[0]} (number of "
        f"components); got {n_clusters}")
  labels = KMeans(n_clusters=n_clusters, n_init=10,
                  random_state=seed).fit_predict(samples)
  return labels.reshape(lead)


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "layer", "k", "batch_size"))
def _synthesize(graphdef, state, x_source, x_target, B, *, layer, k,
                batch_size):
  model = _common.merge_eval(graphdef, state)

  def one_pair(pair):
    source, target = pair[0][None], pair[1][None]
    z_source, vjp = jax.vjp(
        lambda i: guided_backprop.guided_features(model, i, layer), source)
    z_target = model.features(target, layer)
    channels, _, y_target = onehot_backtrack.salient_channels(z_target, k)
    n, h, w, c = z_source.shape
    flat_source = z_source.reshape(n, h * w, c)
    positions = jnp.argmax(flat_source, axis=1)[0, channels[0]]
    sparse = jnp.zeros((h * w, c), z_source.dtype).at[
        positions, channels[0]].set(y_target[0] * B)
    return vjp(sparse.reshape(z_source.shape))[0][0]

  return jax.lax.map(one_pair, jnp.stack([x_source, x_target], axis=1),
                     batch_size=batch_size)


def synthesize_adversarial(model, x_source, x_target, *, layer, k: int = 64,
                           B: float = 1.0, batch_size: int = 16) -> jax.Array:
  """Adversarial samples of Fig. 6c (Appendix A.5), no training.

  For each (source, target) pair: the target's k most salient channels
  (largest max activation ``y_i``) are placed, with value ``y_i · B``, at the
  positions where the *source*'s same channels peak; that sparse map is
  backtracked by guided backprop through the source's forward pass.
  ``x_source`` and ``x_target``: images (N, H, W, C) of one shape, NHWC;
  N ≥ 1.

  Returns:
    (N, H, W, C) synthesized images.
  """
  x_source = _common.images(model, x_source, "x_source")
  x_target = _common.images(model, x_target, "x_target")
  if x_source.shape != x_target.shape:
    raise ValueError(
        f"x_source and x_target must have the same shape; got "
        f"{x_source.shape} and {x_target.shape}")
  index = _common.layer_index(model, layer)
  k = validate.check_positive_int("k", k)
  batch_size = validate.check_positive_int("batch_size", batch_size)
  validate.check_positive_float("B", B)
  graphdef, state = _common.split(model)
  return _common.check_finite_result(
      _synthesize(graphdef, state, x_source, x_target,
                  jnp.asarray(B, x_source.dtype), layer=index, k=k,
                  batch_size=batch_size), "synthesize_adversarial")


def adversarial_outcomes(source_classes, target_classes, adversarial_classes):
  """Fig. 6c's outcome per source/target pair: ``(success, counted)``.

  A pair is *counted* when the model's predicted class of the source differs
  from that of the target (otherwise a sample classified as the target's
  class may just have kept the source's, and fools no one). A counted pair is
  a *success* when the synthesized sample is classified as the target's
  predicted class. This is the one definition of the rule: the report's
  Fig. 6c and :func:`adversarial_success_rate` both use it.

  Args:
    source_classes: (P,) predicted class of each source image.
    target_classes: (P,) predicted class of each target image.
    adversarial_classes: (P,) predicted class of each synthesized sample.

  Returns:
    ``success``: float 0/1 per *counted* pair; ``counted``: (P,) bool.

  Examples:
    >>> success, counted = adversarial_outcomes([3, 1, 2], [4, 1, 6], [4, 1, 2])
    >>> success.tolist(), counted.tolist()
    ([1.0, 0.0], [True, False, True])
  """
  source_classes, target_classes, adversarial_classes = (
      np.asarray(a).reshape(-1) for a in (source_classes, target_classes,
                                          adversarial_classes))
  if not len(source_classes) == len(target_classes) == len(adversarial_classes):
    raise ValueError(f"one class per pair each; got {len(source_classes)} "
                     f"sources, {len(target_classes)} targets and "
                     f"{len(adversarial_classes)} synthesized samples")
  counted = source_classes != target_classes
  success = adversarial_classes[counted] == target_classes[counted]
  return success.astype(np.float64), counted


def adversarial_success_rate(model, x_adv, x_target, x_source=None) -> float:
  """Fraction of synthesized samples classified as their target's predicted
  class (Appendix A.5's "fools the classifier").

  With ``x_source`` (the images the samples were synthesized from), a pair
  whose source is already predicted as its target's class proves nothing and
  is left out, as the report's Fig. 6c does; the rate is over the rest, and a
  ValueError is raised when no pair is left.  All images are NHWC
  (N, H, W, C), N ≥ 1; predictions come from :func:`bort_jax.models.predict`.
  """
  x_adv = _common.images(model, x_adv, "x_adv")
  x_target = _common.images(model, x_target, "x_target")
  pairs = {"x_target": x_target}
  if x_source is not None:
    pairs["x_source"] = _common.images(model, x_source, "x_source")
  for name, images in pairs.items():
    if images.shape[0] != x_adv.shape[0]:
      raise ValueError(
          f"x_adv and {name} must hold the same number of images; got "
          f"{x_adv.shape[0]} and {images.shape[0]}")
  predicted = lambda images: np.asarray(functional.predict(model, images))
  target_class = predicted(x_target)
  if x_source is None:
    return float(np.mean(predicted(x_adv) == target_class))
  success, counted = adversarial_outcomes(predicted(pairs["x_source"]),
                                          target_class, predicted(x_adv))
  if not counted.any():
    raise ValueError(
        f"every one of the {counted.size} sources is already predicted as "
        f"its target's class: no pair can show the synthesis fooling the "
        f"model; pick source/target pairs of different predicted classes")
  return float(success.mean())
