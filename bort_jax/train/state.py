"""The training state as plain pytrees, and the model it is cut from.

An NNX model is split once into a static graph definition and two pure dicts:
``params`` (every ``nnx.Param``) and ``model_state`` (everything else:
BatchNorm statistics and the dropout / drop-path RNG streams, so a resumed run
draws the same masks). The jitted steps merge them back into a model.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bort_jax import models
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


# Models with stochastic depth, and the name of their rate override.
DROP_PATH_MODELS = ("deit_small", "swin_small")


def create_model(config) -> nnx.Module:
  """``bort_jax.models.create`` from ``config`` (seeded by ``config.seed``).

  ``config.drop_path`` becomes the model's ``drop_path_rate`` (Table 6), so a
  0 there really turns stochastic depth off; ``config.compute_dtype`` its
  ``dtype`` (parameters stay float32).
  """
  overrides = dict(config.model_overrides or {})
  if config.model in DROP_PATH_MODELS:
    overrides["drop_path_rate"] = float(config.drop_path)
  elif config.drop_path:
    raise ValueError(f"drop_path={config.drop_path!r} but model "
                     f"{config.model!r} has no stochastic depth; models with "
                     f"it: {DROP_PATH_MODELS}.")
  return models.create(
      config.model, num_classes=config.num_classes, rngs=nnx.Rngs(config.seed),
      dtype=config.compute_dtype, **overrides)


def split_model(model: nnx.Module):
  """``(ModelDefs, params, model_state)`` with params/state as pure dicts."""
  model.eval()
  eval_def = nnx.graphdef(model)
  model.train()
  train_def, params, model_state = nnx.split(model, nnx.Param, ...)
  return (ModelDefs(train_def, eval_def), nnx.to_pure_dict(params),
          nnx.to_pure_dict(model_state))


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


def create_train_state(model_fn: Callable[[], nnx.Module],
                       optimizer: optax.GradientTransformation, mesh,
                       fsdp: bool = False):
  """A fresh :class:`TrainState` of ``model_fn()``, created on ``mesh``.

  The model is built inside one jitted function that writes every leaf
  straight into its sharding (one compilation instead of one per
  initializer, and no full copy of an FSDP kernel on any device).

  Returns ``(state, ModelDefs, shardings)``; ``shardings`` mirrors ``state``.
  """
  defs, _, _ = split_model(nnx.eval_shape(model_fn))

  def init() -> TrainState:
    _, params, model_state = split_model(model_fn())
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      model_state=model_state,
                      opt_state=optimizer.init(params))

  # XLA:CPU compiles the initializers' partitionable threefry bits 5-7x slower
  # (20 s vs 3 s for a narrow ACNN); the classic scheme gives equally
  # deterministic values, identical for every mesh.
  with jax.threefry_partitionable(False):
    shardings = state_shardings(jax.eval_shape(init), optimizer, mesh, fsdp)
    state = jax.jit(init, out_shardings=shardings)()
  return state, defs, shardings
