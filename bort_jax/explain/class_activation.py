"""Class activation maps (Zhou et al., 2016), the paper's CAM baseline (Fig. 5)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from bort_jax.explain import _common


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _cam(graphdef, state, x, target):
  model = _common.merge_eval(graphdef, state)
  z = model.features(x, len(model.layer_names))  # (N, h, w, c)
  target = _common.predicted_or(target, model(x))
  if model.head is None:  # ACNN-Base: the class channel itself
    maps = jnp.take_along_axis(z, target[:, None, None, None], axis=-1)[..., 0]
  else:  # M_c = Σ_k w_kc Z_k (no bias)
    weights = model.head.kernel[...][:, target].T  # (N, c)
    maps = jnp.einsum("nhwc,nc->nhw", z, weights.astype(z.dtype))
  return jax.image.resize(maps, (x.shape[0],) + x.shape[1:3], "bilinear")


def cam(model, x, target=None) -> jax.Array:
  """CAM: ``Σ_k w_ck Z_k`` of the last conv layer's features, bilinearly
  upsampled to the input size.

  For a model with a dense head after global pooling (``model.head``), ``w``
  is the head's kernel column of class c.  For a model whose last conv
  channels are the class scores (``head is None`` with ``head_pool`` set, e.g.
  ACNN-Base), the map is channel c itself.

  Args:
    model: a conv model of the ``bort_jax.models`` interface.
    x: images (N, H, W, C), NHWC; N ≥ 1.
    target: class per image (int or (N,)), None = predicted class.

  Returns:
    (N, H, W) maps (unnormalised).

  Raises:
    ValueError: for models without a global-pooling head on their last conv
      layer (``head_pool`` is None: LeNet's and VGG16's flatten + dense,
      DeiT-S's class token, Swin-S's pooled transformer tokens), where CAM is
      not defined.
  """
  x = _common.images(model, x)
  _common.conv_layer_names(model)
  if getattr(model, "head_pool", None) is None:
    raise ValueError(
        f"CAM needs a global-pooling head on the last conv layer "
        f"{model.layer_names[-1]!r}; {type(model).__name__} has "
        "head_pool=None: its head reads something else (a flatten + dense "
        "head as in LeNet and VGG16, a ViT's class token, Swin's average of "
        "its last stage's tokens). Use sat, integrated_gradients or rise "
        "instead.")
  graphdef, state = _common.split(model)
  target = _common.resolve_target(
      target, x.shape[0], _common.num_classes(graphdef, state, x))
  return _common.check_finite_result(_cam(graphdef, state, x, target), "cam")
