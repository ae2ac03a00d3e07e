"""Plumbing shared by the explainers: NNX models inside ``jit``, argument checks.

Every explainer splits the NNX model into a static ``GraphDef`` and a ``State``
pytree and calls a module-level ``jax.jit`` function with the graphdef as a
static argument, so JAX's own cache keeps one executable per (model graph,
static options, input shapes): a notebook's second call does not recompile.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


def split(model: nnx.Module):
  """``(graphdef, state)`` of an NNX module (the graphdef is hashable)."""
  if not isinstance(model, nnx.Module):
    raise TypeError(
        f"expected an flax.nnx.Module, got {type(model).__name__}")
  return nnx.split(model)


def merge_eval(graphdef, state) -> nnx.Module:
  """The module rebuilt inside a trace, in eval mode (BatchNorm running stats,
  no dropout); the caller's module is left untouched."""
  model = nnx.merge(graphdef, state)
  model.eval()
  return model


def check_images(x, name: str = "x") -> jax.Array:
  """``x`` as a float array of shape (B, H, W, C)."""
  x = jnp.asarray(x)
  if x.ndim != 4:
    raise ValueError(
        f"{name} must be a batch of NHWC images (B, H, W, C); got shape "
        f"{x.shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{name} must be a float array; got dtype {x.dtype}")
  return x


def check_positive_int(value, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be a positive int; got {value!r}")
  return value


def check_positive_float(value, name: str) -> float:
  value = float(value)
  if not value > 0.0 or value == float("inf"):
    raise ValueError(f"{name} must be a finite float > 0; got {value!r}")
  return value


def layer_index(model, layer) -> int:
  """1-based index of ``layer`` (int index or name) in ``model.layer_names``."""
  names = conv_layer_names(model)
  if isinstance(layer, bool):
    raise TypeError(f"layer must be an int or a name; got {layer!r}")
  if isinstance(layer, int):
    if not 1 <= layer <= len(names):
      raise ValueError(
          f"layer index {layer} is out of range; allowed 1..{len(names)} "
          f"(layer_names={names})")
    return layer
  if isinstance(layer, str):
    if layer not in names:
      raise ValueError(f"unknown layer {layer!r}; allowed: {names}")
    return names.index(layer) + 1
  raise TypeError(f"layer must be an int or a name; got {type(layer).__name__}")


def conv_layer_names(model) -> tuple[str, ...]:
  names = getattr(model, "layer_names", None)
  if names is None or not hasattr(model, "features"):
    raise TypeError(
        f"{type(model).__name__} is not a convolutional model of the "
        "bort_jax.models interface (needs .layer_names and .features)")
  return tuple(names)


def resolve_target(target, batch: int):
  """``None`` (predicted class) or an int / (B,) int array of class ids."""
  if target is None:
    return None
  target = jnp.asarray(target)
  if not jnp.issubdtype(target.dtype, jnp.integer):
    raise TypeError(f"target must hold integer class ids; got {target.dtype}")
  if target.ndim == 0:
    target = jnp.full((batch,), target, dtype=jnp.int32)
  if target.shape != (batch,):
    raise ValueError(
        f"target must be None, an int or shape ({batch},); got shape "
        f"{target.shape}")
  return target.astype(jnp.int32)


def predicted_or(target, logits: jax.Array) -> jax.Array:
  """Inside a trace: ``target`` or, if it is None, the arg-max class."""
  if target is None:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return target


def pick(scores: jax.Array, target: jax.Array) -> jax.Array:
  """``scores[b, target[b]]`` for a (B, num_classes) array."""
  return jnp.take_along_axis(scores, target[:, None], axis=-1)[:, 0]


def chunked_sum(fn, num_items: int, batch_size: int, init):
  """``sum_i fn(i)`` for i < num_items, ``batch_size`` items vmapped at a time.

  A ``lax.scan`` over chunks; the padding items of the last chunk are masked.
  """
  batch_size = min(batch_size, num_items)
  n_chunks = math.ceil(num_items / batch_size)
  ids = jnp.arange(n_chunks * batch_size).reshape(n_chunks, batch_size)

  def body(total, chunk):
    parts = jax.vmap(fn)(chunk)
    valid = chunk < num_items
    parts = jax.tree.map(
        lambda p: jnp.where(valid.reshape((-1,) + (1,) * (p.ndim - 1)), p, 0),
        parts)
    return jax.tree.map(lambda t, p: t + p.sum(0), total, parts), None

  total, _ = jax.lax.scan(body, init, ids)
  return total
