"""Plumbing shared by the explainers: models inside ``jit``, argument checks.

Every explainer splits the NNX model into a static ``GraphDef`` and a ``State``
pytree and calls a module-level ``jax.jit`` function with the graphdef as a
static argument, so JAX's own cache keeps one executable per (model graph,
static options, input shapes): a notebook's second call does not recompile.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def split(model: nnx.Module):
  """``(graphdef, state)`` of an NNX module (the graphdef is hashable)."""
  if not isinstance(model, nnx.Module):
    raise TypeError(
        f"model must be a flax.nnx.Module with the conv-model interface "
        f"(see bort_jax.explain); got {type(model).__name__}")
  return nnx.split(model)


def merge_eval(graphdef, state) -> nnx.Module:
  """The module rebuilt inside a trace, in eval mode (BatchNorm running stats,
  no dropout); the caller's module is left untouched."""
  model = nnx.merge(graphdef, state)
  model.eval()
  return model


def as_function(model):
  """``(definition, params)`` of a black-box model ``x -> logits``.

  An ``nnx.Module`` is split into its graphdef and state; any other callable
  (a JAX-traceable function of a (B, H, W, C) batch) is its own definition,
  with ``params=None``.  Both parts go through ``jax.jit``: the definition as
  a static (hashed) argument, so a new function object compiles anew.
  """
  if isinstance(model, nnx.Module):
    return nnx.split(model)
  if callable(model):
    return model, None
  raise TypeError(
      f"model must be a flax.nnx.Module or a callable x -> logits; got "
      f"{type(model).__name__}")


def logits_fn(definition, params):
  """Inside a trace: the ``x -> logits`` function of :func:`as_function`'s
  pair (an NNX module is rebuilt in eval mode)."""
  if params is None:
    return definition
  return merge_eval(definition, params)


def black_box(model, x, target):
  """``(definition, params, target)`` of a black-box explainer's call: the
  model as :func:`as_function`'s pair and ``target`` checked against the
  width of its logits on ``x`` (None stays None)."""
  definition, params = as_function(model)
  target = resolve_target(target, x.shape[0],
                          num_classes(definition, params, x))
  return definition, params, target


def num_classes(definition, params, x) -> int:
  """Width of the model's logits on ``x`` (shape inference only, no FLOPs)."""
  logits = jax.eval_shape(lambda p, images: logits_fn(definition, p)(images),
                          params, x)
  if len(logits.shape) != 2 or logits.shape[0] != x.shape[0]:
    raise ValueError(
        f"model must map images {x.shape} to logits (B, num_classes); got "
        f"shape {logits.shape}")
  return logits.shape[1]


def check_images(x, name: str = "x") -> jax.Array:
  """``x`` as a finite float array of shape (B, H, W, C)."""
  x = jnp.asarray(x)
  if x.ndim != 4:
    raise ValueError(
        f"{name} must be a batch of NHWC images (B, H, W, C); got shape "
        f"{x.shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{name} must be a float array; got dtype {x.dtype}")
  check_finite(x, name)
  return x


def check_finite(values, name: str):
  """Raises ValueError naming the first NaN/inf entry of ``values``."""
  finite = np.asarray(jnp.isfinite(values))
  if not finite.all():
    bad = np.argwhere(~finite)[0]
    raise ValueError(
        f"{name} must hold finite values only; got "
        f"{np.asarray(values)[tuple(bad)]} at index {tuple(int(i) for i in bad)}"
        f" ({int((~finite).sum())} non-finite of {finite.size})")


def check_finite_result(result, explainer: str):
  """A map with NaN/inf from finite inputs is a bug: raise, never return it."""
  for leaf in jax.tree.leaves(result):
    if jnp.issubdtype(leaf.dtype, jnp.floating) and not bool(
        jnp.all(jnp.isfinite(leaf))):
      raise FloatingPointError(
          f"{explainer} produced {int(jnp.sum(~jnp.isfinite(leaf)))} "
          f"non-finite values from finite inputs (model or explainer bug; "
          f"the result is not returned)")
  return result


def check_positive_int(value, name: str) -> int:
  """``value`` as an int >= 1 (Python or NumPy integer)."""
  if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
      or value < 1):
    raise ValueError(f"{name} must be a positive int; got {value!r}")
  return int(value)


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
  if isinstance(layer, (int, np.integer)):
    if not 1 <= layer <= len(names):
      raise ValueError(
          f"layer index {layer} is out of range; allowed 1..{len(names)} "
          f"(layer_names={names})")
    return int(layer)
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


def resolve_target(target, batch: int, num_classes: int):
  """``None`` (predicted class) or an int / (B,) int array of class ids, each
  in [0, num_classes)."""
  if target is None:
    return None
  target = np.asarray(target)
  if not np.issubdtype(target.dtype, np.integer):
    raise TypeError(f"target must hold integer class ids; got {target.dtype}")
  if target.ndim == 0:
    target = np.full((batch,), target)
  if target.shape != (batch,):
    raise ValueError(
        f"target must be None, an int or shape ({batch},); got shape "
        f"{target.shape}")
  bad = (target < 0) | (target >= num_classes)
  if bad.any():
    raise ValueError(
        f"target must be a class id in [0, {num_classes}); got "
        f"{target[bad].tolist()} (at {np.flatnonzero(bad).tolist()})")
  return jnp.asarray(target, jnp.int32)


def target_logit_sum(model, images, target):
  """``Σ_b logits[b, target[b]]``: its gradient is each image's own."""
  return jnp.sum(pick(model(images), target))


def broadcast_baseline(baseline, x):
  """x₀ of a path method broadcast to ``x``'s shape (None = zeros), finite."""
  if baseline is None:
    return jnp.zeros_like(x)
  baseline = jnp.asarray(baseline, x.dtype)
  check_finite(baseline, "baseline")
  try:
    return jnp.broadcast_to(baseline, x.shape)
  except ValueError:
    raise ValueError(
        f"baseline of shape {baseline.shape} does not broadcast to the "
        f"images' shape {x.shape}") from None


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
