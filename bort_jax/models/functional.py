"""A model as a pure function for ``jax.jit``, and the one jitted predict.

An ``nnx.Module`` is split into a static, hashable ``GraphDef`` and a ``State``
pytree (:func:`as_function`), and rebuilt in eval mode inside the trace
(:func:`logits_fn`), so JAX's own cache keeps one executable per (model graph,
input shapes) and the caller's module is left untouched.  Any other callable
``x -> logits`` is its own definition.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx


def as_function(model):
  """``(definition, params)`` of a model ``x -> logits``.

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


def merge_eval(graphdef, state) -> nnx.Module:
  """The module rebuilt inside a trace, in eval mode (BatchNorm running stats,
  no dropout); the caller's module is left untouched."""
  model = nnx.merge(graphdef, state)
  model.eval()
  return model


def logits_fn(definition, params):
  """Inside a trace: the ``x -> logits`` function of :func:`as_function`'s
  pair (an NNX module is rebuilt in eval mode)."""
  if params is None:
    return definition
  return merge_eval(definition, params)


def predicted_class(logits: jax.Array) -> jax.Array:
  """(B,) int32 arg-max class of (B, num_classes) logits."""
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("definition",))
def jit_logits(definition, params, x):
  """Logits of :func:`as_function`'s pair on ``x``, jit-compiled."""
  return logits_fn(definition, params)(x)


def logits(model, x) -> jax.Array:
  """The model's logits on ``x``, jit-compiled, in eval mode.

  Args:
    model: an ``nnx.Module`` (run in eval mode, left untouched) or any
      JAX-traceable callable mapping (B, H, W, C) images to logits.
    x: a batch of images.

  Returns:
    (B, num_classes) logits.
  """
  definition, params = as_function(model)
  return jit_logits(definition, params, jnp.asarray(x))


def predict(model, x) -> jax.Array:
  """The class a model predicts on each image: arg-max of its logits.

  One jitted forward pass per call (compiled once per model graph and input
  shape); an ``nnx.Module`` runs in eval mode (BatchNorm running statistics,
  no dropout) and is left untouched.

  Args:
    model: an ``nnx.Module`` or any JAX-traceable callable mapping
      (B, H, W, C) images to (B, num_classes) logits.
    x: a batch of images.

  Returns:
    (B,) int32 class ids.

  Examples:
    >>> import jax.numpy as jnp
    >>> from bort_jax import models
    >>> models.predict(lambda x: x.mean((1, 2)), jnp.ones((2, 4, 4, 3)))
    Array([0, 0], dtype=int32)
  """
  definition, params = as_function(model)
  return _predict(definition, params, jnp.asarray(x))


@functools.partial(jax.jit, static_argnames=("definition",))
def _predict(definition, params, x):
  return predicted_class(logits_fn(definition, params)(x))
