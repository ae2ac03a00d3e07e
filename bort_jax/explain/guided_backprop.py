"""Guided reconstruction: a feature map walked back to the input (Eq. 4, A.4).

``reconstruct`` is the VJP of ``model.features(x, layer, activation=guided_relu)``:
every conv is walked back by its transpose, ``ẑ = Wᵀ s`` (Eq. 4), every ReLU by
the guided rule of Appendix A.4 (Eq. 16).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from bort_jax import validate
from bort_jax.explain import _common


# --------------------------------------------------------------------- guided ReLU


@jax.custom_vjp
def guided_relu(x):
  """ReLU whose backward pass is guided backprop (Appendix A.4, Eq. 15-16).

  Forward ``max(x, 0)``; backward ``g · 1[x > 0] · 1[g > 0]``: only positive
  signals flow back, and only through units that were active.
  """
  return jax.nn.relu(x)


def _guided_relu_fwd(x):
  return jax.nn.relu(x), x


def _guided_relu_bwd(x, g):
  return (jnp.where((x > 0) & (g > 0), g, jnp.zeros_like(g)),)


guided_relu.defvjp(_guided_relu_fwd, _guided_relu_bwd)


def guided_features(model, x, layer):
  """``model.features`` with every ReLU replaced by :func:`guided_relu`."""
  return model.features(x, layer, activation=guided_relu)


# ------------------------------------------------------------------- reconstruct


@functools.partial(jax.jit, static_argnames=("graphdef", "layer"))
def _reconstruct(graphdef, state, x, features, *, layer):
  model = _common.merge_eval(graphdef, state)
  z, vjp = jax.vjp(lambda inputs: guided_features(model, inputs, layer), x)
  if features is None:
    features = z
  elif features.shape != z.shape:
    raise ValueError(
        f"features must have the shape of layer {layer}'s output {z.shape}; "
        f"got {features.shape}")
  return vjp(features.astype(z.dtype))[0]


def reconstruct(model, x, *, layer, features=None) -> jax.Array:
  """Input-space reconstruction of a feature map by guided backprop (Fig. 4).

  Args:
    model: a conv model of the ``bort_jax.models`` interface.
    x: images (B, H, W, C), NHWC, B ≥ 1; they fix the forward pass whose active ReLUs gate
      the backward signal.
    layer: 1-based index into ``model.layer_names`` or a layer name.
    features: the map to backtrack, shape of ``model.features(x, layer)``
      (e.g. a sparsified copy); ``None`` backtracks the features themselves.

  Returns:
    (B, H, W, C) reconstruction.
  """
  x = _common.images(model, x)
  index = _common.layer_index(model, layer)
  graphdef, state = _common.split(model)
  if features is not None:
    features = jnp.asarray(features)
    validate.check_finite("features", features)
  return _common.check_finite_result(
      _reconstruct(graphdef, state, x, features, layer=index), "reconstruct")
