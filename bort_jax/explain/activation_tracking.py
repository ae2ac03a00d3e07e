"""Salient Activation Tracking (SAT), the paper's Algorithm 1 (Appendix A.3)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from bort_jax import validate
from bort_jax.explain import _common
from bort_jax.explain import onehot_backtrack

# γ of Algorithm 1, line 9, in our own definition (the paper gives no scale):
# the fraction of each backtracked signal's peak of max_c |S_c| above which a
# pixel enters that channel's mask.  Relative, so models whose kernels differ
# in scale (Bort vs SGD) are binarised alike.
DEFAULT_GAMMA = 0.5


def binarize(signals, gamma):
  """Masks of backtracked signals (..., H, W, C) -> (..., H, W) in {0, 1}.

  The signal is reduced over input channels by the largest magnitude
  ``max_c |S_c|``; a pixel is 1 where that exceeds ``gamma`` times its
  maximum over the image.  An all-zero signal gives an all-zero mask.
  """
  magnitude = jnp.max(jnp.abs(signals), axis=-1)
  peak = jnp.max(magnitude, axis=(-2, -1), keepdims=True)
  return ((magnitude > gamma * peak) & (peak > 0)).astype(signals.dtype)


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "layer", "k", "top_kind", "batch_size"))
def _sat(graphdef, state, x, B, gamma, *, layer, k, top_kind, batch_size):
  model = _common.merge_eval(graphdef, state)

  def one_image(image):
    z, back = onehot_backtrack.onehot_backtracker(model, image[None], layer,
                                                  top_kind)
    channels, positions, y = onehot_backtrack.salient_channels(z, k)
    # Algorithm 1, lines 4-8: all k channels at once.
    signals = jax.vmap(back, in_axes=(1, 1, None), out_axes=1)(
        channels, positions, jnp.full((1,), B, z.dtype))
    masks = binarize(signals[0], gamma)  # (k, H, W)
    return jnp.einsum("k,khw->hw", y[0], masks)  # line 11

  return jax.lax.map(one_image, x, batch_size=batch_size)


def sat(model, x, *, layer, k: int = 64, B: float = 1.0,
        gamma: float = DEFAULT_GAMMA, batch_size: int = 16) -> jax.Array:
  """SAT saliency maps (Algorithm 1).

  For each image: max-pool the feature map ``Z = model.features(x, layer)``
  to ``y`` (one value per channel), take the k channels with the largest
  ``y_i``; for each, put ``B`` at the position of that channel's maximum
  (explicit arg-max) in an all-zero map and backtrack it to the input by
  guided backprop (:func:`bort_jax.explain.reconstruct`'s VJP); binarise the
  signal (:func:`binarize`: ``max_c |S_c| > gamma · max``) and return
  ``A = Σ_i y_i M_i``.

  Args:
    model: a conv model of the ``bort_jax.models`` interface.
    x: images (N, H, W, C), NHWC; N ≥ 1.
    layer: the top layer (1-based index or name); the paper uses conv5 of
      ACNN-Small and conv8 of ACNN-Base.
    k: number of salient channels (paper: 64).
    B: the value set at each maximum (paper's constant B), > 0 (guided
      backprop passes only positive signals).
    gamma: the binarisation threshold γ of Algorithm 1 (line 9), in [0, 1).
      Our own definition, since the paper fixes no scale: a pixel is in
      channel i's mask where ``max_c |S_c|`` exceeds γ times that backtracked
      signal's peak ``max_{h,w} max_c |S_c|`` (see :func:`binarize`); default
      ``DEFAULT_GAMMA`` = 0.5.
    batch_size: images processed together (``lax.map``); bounds memory.

  Returns:
    (N, H, W) saliency.
  """
  x = _common.images(model, x)
  index = _common.layer_index(model, layer)
  k = validate.check_positive_int("k", k)
  batch_size = validate.check_positive_int("batch_size", batch_size)
  validate.check_positive_float("B", B)
  if not 0.0 <= float(gamma) < 1.0:
    raise ValueError(f"gamma must be in [0, 1); got {gamma!r}")
  graphdef, state = _common.split(model)
  top_kind = onehot_backtrack.top_conv_kind(model, index)
  return _common.check_finite_result(
      _sat(graphdef, state, x, jnp.asarray(B, x.dtype),
           jnp.asarray(gamma, x.dtype), layer=index, k=k, top_kind=top_kind,
           batch_size=batch_size), "sat")
