"""Reconstruction ratio of each conv layer: ``‖z − Wᵀ(W z)‖ / ‖z‖`` (Fig. 3b).

How much of the input a conv's transpose recovers (Section 4.2.1, Eq. 4-5);
Bort drives it towards 0.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from bort_jax.explain import _common
from bort_jax.explain import _conv_geometry


def _patches_and_matrix(conv, z):
  """Fan-in vectors of every output position of ``conv`` on ``z`` and the
  kernel as a (fan_in, out) matrix in the same feature order."""
  kernel = conv.kernel[...]
  kh, kw, cin, cout = kernel.shape
  pads = _conv_geometry.explicit_pads(conv, z.shape[1:3])
  if pads is None or getattr(conv, "feature_group_count", 1) != 1:
    raise ValueError(
        f"reconstruction_ratios supports ungrouped convs with SAME/VALID/"
        f"explicit padding; got padding={conv.padding!r}")
  patches = jax.lax.conv_general_dilated_patches(
      z, (kh, kw), _conv_geometry.pair(conv.strides), pads,
      rhs_dilation=_conv_geometry.pair(conv.kernel_dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  # conv_general_dilated_patches orders features (in, kh, kw).
  matrix = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(cin * kh * kw, cout)
  return patches, matrix


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _reconstruction_ratios(graphdef, state, x):
  model = _common.merge_eval(graphdef, state)
  inputs = model.conv_inputs(x)
  ratios = {}
  for name in model.layer_names:  # a handful of layers, unrolled at trace time
    conv = model.conv(name)
    z = inputs[name]
    patches, matrix = _patches_and_matrix(conv, z.astype(jnp.float32))
    s = patches @ matrix.astype(jnp.float32)  # W z, no bias
    z_hat = s @ matrix.T.astype(jnp.float32)  # Wᵀ s (Eq. 4)
    err = jnp.sqrt(jnp.sum((patches - z_hat) ** 2, axis=(1, 2, 3)))
    norm = jnp.sqrt(jnp.sum(patches ** 2, axis=(1, 2, 3)))
    ratios[name] = jnp.where(norm > 0, err / jnp.where(norm > 0, norm, 1.0),
                             0.0)
  return ratios


def reconstruction_ratios(model, x) -> dict:
  """Per conv layer and image, ``‖z − Wᵀ(W z)‖ / ‖z‖`` (Section 4.2.1, Fig. 3b).

  ``z`` is each fan-in vector the conv sees (the unfolded receptive field of
  every output position of ``model.conv_inputs(x)[name]``, the row vector of
  Eq. 5) and ``W`` the (out, fan_in) kernel matrix; the norms are taken over
  all positions of an image.  The bias is not part of ``g`` (linear part
  only).  An all-zero input gives ratio 0.  ``x``: images (B, H, W, C),
  NHWC; B ≥ 1.

  Returns:
    ``{layer_name: (B,) float32}``.
  """
  x = _common.images(model, x)
  _common.conv_layer_names(model)
  graphdef, state = _common.split(model)
  return _common.check_finite_result(
      _reconstruction_ratios(graphdef, state, x), "reconstruction_ratios")
