"""Deletion / insertion (Petsiuk et al., 2018), the metrics of Table 3."""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from bort_jax.explain import _common

SCORES = ("prob", "logit")


class DeletionInsertion(NamedTuple):
  deletion: jax.Array       # (N, n_steps + 1) score after t·step pixels removed
  insertion: jax.Array      # (N, n_steps + 1) score after t·step pixels inserted
  deletion_auc: jax.Array   # (N,) lower is better
  insertion_auc: jax.Array  # (N,) higher is better


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


def pixel_ranks(saliency: jax.Array) -> jax.Array:
  """(N, H·W) rank of every pixel, 0 = most salient; ties go to the pixel
  earlier in raster order (stable sort)."""
  flat = saliency.reshape(saliency.shape[0], -1)
  order = jnp.argsort(-flat, axis=-1, stable=True)
  return jnp.argsort(order, axis=-1, stable=True)


@functools.partial(
    jax.jit, static_argnames=("graphdef", "step", "score", "batch_size"))
def _deletion_insertion(graphdef, state, x, saliency, target, *, step, score,
                        batch_size):
  model = _common.merge_eval(graphdef, state)
  n, h, w, _ = x.shape
  logits = model(x)
  target = _common.predicted_or(target, logits)
  ranks = pixel_ranks(saliency).reshape(n, h, w, 1)
  blurred = blur(x)
  n_steps = math.ceil(h * w / step)
  counts = jnp.minimum(jnp.arange(n_steps + 1) * step, h * w)

  def scores_at(count):
    changed = ranks < count  # all channels of a pixel together
    deleted = jnp.where(changed, jnp.zeros_like(x), x)
    inserted = jnp.where(changed, x, blurred)
    out = model(jnp.concatenate([deleted, inserted]))
    if score == "prob":
      out = jax.nn.softmax(out)
    both = jnp.concatenate([target, target])
    return _common.pick(out, both).reshape(2, n)

  curves = jax.lax.map(scores_at, counts, batch_size=batch_size)  # (T, 2, N)
  deletion, insertion = curves[:, 0].T, curves[:, 1].T
  fraction = counts / (h * w)
  return DeletionInsertion(deletion, insertion,
                           jnp.trapezoid(deletion, fraction, axis=-1),
                           jnp.trapezoid(insertion, fraction, axis=-1))


def deletion_insertion(model, x, saliency, *, step: int, target=None,
                       score: str = "prob",
                       batch_size: int = 8) -> DeletionInsertion:
  """Deletion and insertion curves and AUCs (RISE protocol).

  Pixels are ranked by saliency (descending; ties by raster order) and
  changed ``step`` at a time, all channels of a pixel together.  Deletion
  starts at ``x`` and sets pixels to 0 (in the model's normalised input
  space); insertion starts at RISE's blurred copy (:func:`blur`) and restores
  pixels of ``x``.  The curve is the softmax probability (``score="prob"``)
  or logit (``"logit"``) of the class predicted on ``x`` (or ``target``),
  at ``t = 0 .. ceil(H·W / step)``; AUCs use the trapezoid rule over the
  fraction of pixels changed, in [0, 1].

  Args:
    model: a model mapping images to logits.
    x: images (N, H, W, C).
    saliency: (N, H, W), or (N, H, W, C) reduced by ``Σ_c |·|``.
    step: pixels changed per step.
    target: class per image, None = predicted class.
    score: "prob" or "logit".
    batch_size: steps evaluated together (each on 2·N images).

  Returns:
    :class:`DeletionInsertion`.
  """
  x = _common.check_images(x)
  _common.check_positive_int(step, "step")
  _common.check_positive_int(batch_size, "batch_size")
  if score not in SCORES:
    raise ValueError(f"score must be one of {SCORES}; got {score!r}")
  saliency = jnp.asarray(saliency)
  if saliency.ndim == 4 and saliency.shape == x.shape:
    saliency = jnp.sum(jnp.abs(saliency), axis=-1)
  if saliency.shape != x.shape[:3]:
    raise ValueError(
        f"saliency must have shape {x.shape[:3]} or {x.shape}; got "
        f"{saliency.shape}")
  if bool(jnp.any(jnp.isnan(saliency))):
    raise ValueError("saliency contains NaN; pixel ranking is undefined")
  target = _common.resolve_target(target, x.shape[0])
  graphdef, state = _common.split(model)
  return _deletion_insertion(graphdef, state, x, saliency.astype(jnp.float32),
                             target, step=step, score=score,
                             batch_size=batch_size)
