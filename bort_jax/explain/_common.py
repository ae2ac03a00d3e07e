"""Plumbing shared by the explainers: models inside ``jit``, argument checks.

Every explainer splits the NNX model into a static ``GraphDef`` and a ``State``
pytree (:mod:`bort_jax.models.functional`) and calls a module-level
``jax.jit`` function with the graphdef as a static argument, so JAX's own
cache keeps one executable per (model graph, static options, input shapes):
a notebook's second call does not recompile.  The argument checks themselves
live in :mod:`bort_jax.validate`, shared with the models.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bort_jax import validate
from bort_jax.models import functional
from bort_jax.models.functional import as_function, logits_fn, merge_eval


def split(model: nnx.Module):
  """``(graphdef, state)`` of an NNX module (the graphdef is hashable)."""
  if not isinstance(model, nnx.Module):
    raise TypeError(
        f"model must be a flax.nnx.Module with the conv-model interface "
        f"(see bort_jax.explain); got {type(model).__name__}")
  return nnx.split(model)


def black_box(model, x, target):
  """``(definition, params, target)`` of a black-box explainer's call: the
  model as :func:`as_function`'s pair and ``target`` as a (B,) int32 array,
  checked against the width of the model's logits on ``x``, or the class the
  model predicts where it is None.  Logits that are not (B, num_classes) or
  hold NaN/inf raise ValueError: no map is computed from them."""
  definition, params = as_function(model)
  logits = functional.jit_logits(definition, params, x)
  if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
    raise ValueError(
        f"model must map images {x.shape} to logits (B, num_classes); got "
        f"shape {logits.shape}")
  validate.check_finite("the model's logits on x (image, class)", logits)
  if target is None:
    return definition, params, functional.predicted_class(logits)
  return definition, params, resolve_target(target, x.shape[0],
                                            logits.shape[1])


def num_classes(graphdef, state, x) -> int:
  """Width of the model's logits on ``x`` (shape inference only, no FLOPs)."""
  logits = jax.eval_shape(lambda p, images: merge_eval(graphdef, p)(images),
                          state, x)
  if len(logits.shape) != 2 or logits.shape[0] != x.shape[0]:
    raise ValueError(
        f"model must map images {x.shape} to logits (B, num_classes); got "
        f"shape {logits.shape}")
  return logits.shape[1]


def images(model, x, name: str = "x") -> jax.Array:
  """``x`` as a finite, non-empty float NHWC batch
  (:func:`bort_jax.validate.check_images`), checked against the model's
  ``in_channels`` and ``image_size`` where it declares them."""
  expected = {}
  for attribute, key in (("in_channels", "channels"),
                         ("image_size", "image_size")):
    value = getattr(model, attribute, None)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
      expected[key] = int(value)
  return validate.check_images(name, x, **expected)


def reduce_channels(attributions) -> jax.Array:
  """(N, H, W, C) per-channel attributions -> (N, H, W) saliency: ``Σ_c |a_c|``.

  The reduction the explainers apply to IG and GuidedIG unless
  ``per_channel=True`` (and PAIR saliency's ``VisualizeImageGrayscale``
  before its normalisation); give its result to
  :func:`bort_jax.explain.deletion_insertion` to rank pixels by attributions
  computed elsewhere (e.g. captum's, transposed to NHWC).

  Examples:
    >>> import jax.numpy as jnp
    >>> from bort_jax import explain
    >>> explain.reduce_channels(jnp.array([[[[1.0, -2.0]]]]))
    Array([[[3.]]], dtype=float32)
  """
  attributions = jnp.asarray(attributions)
  if attributions.ndim != 4:
    raise ValueError(
        f"attributions must be per-channel (N, H, W, C); got shape "
        f"{attributions.shape}")
  return jnp.sum(jnp.abs(attributions), axis=-1)


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


def layer_index(model, layer) -> int:
  """1-based index of ``layer`` (int index or name) in ``model.layer_names``."""
  return validate.layer_index(conv_layer_names(model), layer)


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
  validate.check_finite("baseline", baseline)
  try:
    return jnp.broadcast_to(baseline, x.shape)
  except ValueError:
    raise ValueError(
        f"baseline of shape {baseline.shape} does not broadcast to the "
        f"images' shape {x.shape}") from None


def predicted_or(target, logits: jax.Array) -> jax.Array:
  """Inside a trace: ``target`` or, if it is None, the arg-max class."""
  return functional.predicted_class(logits) if target is None else target


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
