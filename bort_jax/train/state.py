"""The training state as plain pytrees, and the model it is cut from.

An NNX model is split once into a static graph definition and two pure dicts:
``params`` (every ``nnx.Param``) and ``model_state`` (everything else:
BatchNorm statistics and the dropout / drop-path RNG streams, so a resumed run
draws the same masks). The jitted steps merge them back into a model.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import bort_jax
from bort_jax.train import mesh as mesh_lib


class TrainState(NamedTuple):
  step: jax.Array      # int32 scalar: optimizer steps taken
  params: Any          # pure dict of the model's nnx.Param values
  model_state: Any     # pure dict of the other model variables
  opt_state: optax.OptState


class ModelDefs(NamedTuple):
  """Static graph definitions of the same model in train and eval mode."""
  train: nnx.GraphDef
  eval: nnx.GraphDef


def create_model(config) -> nnx.Module:
  """``bort_jax.models.create`` from ``config`` (seeded by ``config.seed``)."""
  overrides = dict(config.model_overrides or {})
  if config.drop_path:
    overrides.setdefault("drop_path", config.drop_path)
  return bort_jax.models.create(config.model, num_classes=config.num_classes,
                                rngs=nnx.Rngs(config.seed), **overrides)


def split_model(model: nnx.Module):
  """``(ModelDefs, params, model_state)`` with params/state as pure dicts."""
  model.eval()
  eval_def = nnx.graphdef(model)
  model.train()
  train_def, params, model_state = nnx.split(model, nnx.Param, ...)
  return (ModelDefs(train_def, eval_def), params.to_pure_dict(),
          model_state.to_pure_dict())


def merge_model(graphdef: nnx.GraphDef, params, model_state) -> nnx.Module:
  return nnx.merge(graphdef, params, model_state)


def state_shardings(state: TrainState, optimizer: optax.GradientTransformation,
                    mesh, fsdp: bool = False) -> TrainState:
  """Where each leaf of ``state`` lives: optimizer moments follow their param."""
  replicated = mesh_lib.replicated(mesh)
  params = mesh_lib.param_shardings(state.params, mesh, fsdp)
  opt_state = optax.tree_map_params(
      optimizer, lambda _, sharding: sharding, state.opt_state, params,
      transform_non_params=lambda _: replicated)
  return TrainState(step=replicated,
                    params=params,
                    model_state=jax.tree.map(lambda _: replicated,
                                             state.model_state),
                    opt_state=opt_state)


def create_train_state(model: nnx.Module,
                       optimizer: optax.GradientTransformation, mesh,
                       fsdp: bool = False):
  """Splits ``model`` and places a fresh :class:`TrainState` on ``mesh``.

  Returns ``(state, ModelDefs, shardings)``; ``shardings`` mirrors ``state``.
  """
  defs, params, model_state = split_model(model)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     model_state=model_state,
                     opt_state=jax.eval_shape(optimizer.init, params))
  shardings = state_shardings(state, optimizer, mesh, fsdp)
  params = jax.device_put(params, shardings.params)
  opt_state = jax.jit(optimizer.init, out_shardings=shardings.opt_state)(params)
  state = TrainState(step=jax.device_put(state.step, shardings.step),
                     params=params,
                     model_state=jax.device_put(model_state,
                                                shardings.model_state),
                     opt_state=opt_state)
  return state, defs, shardings
