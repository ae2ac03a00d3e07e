"""``config.init_from``: start a run from trained weights instead of random init.

``init_from`` is either a bort_jax workdir (its latest checkpoint's params and
batch statistics) or a torchvision / timm checkpoint file (converted by
``bort_jax.models.load_pretrained`` for ``config.model`` and
``config.num_classes``). The optimizer state always starts fresh, and so do
the dropout / drop-path RNG streams (seeded by ``config.seed``).

Only a fresh workdir is initialised this way: a workdir with a checkpoint
resumes from it and ``init_from`` is ignored (with a warning). What the weights
came from is written once, to ``workdir/init_from.json``.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any, NamedTuple

import jax
import numpy as np
from absl import logging
from flax import nnx

RECORD_NAME = "init_from.json"
_MODEL_FIELDS = ("model", "model_overrides", "num_classes")


class Source(NamedTuple):
  params: Any          # pure dict of nnx.Param values
  batch_stats: Any     # pure dict of nnx.BatchStat values
  provenance: dict     # what init_from.json records


def _split(model: nnx.Module):
  _, params, batch_stats, _ = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
  return nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with path.open("rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _from_workdir(config, path: pathlib.Path) -> Source:
  # pylint: disable-next=import-outside-toplevel
  from bort_jax.train.loop import load_trained  # loop imports this module
  model, source = load_trained(path)
  for field in _MODEL_FIELDS:
    mine, theirs = config[field], source[field]
    if hasattr(mine, "to_dict"):
      mine, theirs = mine.to_dict(), theirs.to_dict()
    if mine != theirs:
      raise ValueError(f"init_from={str(path)!r} was trained with {field}="
                       f"{theirs!r}, this config has {field}={mine!r}; the "
                       f"weights only fit the same {field}.")
  from bort_jax.train.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  checkpointer = Checkpointer(path / "checkpoints", every_steps=1)
  step = checkpointer.latest_step()
  checkpointer.close()
  params, batch_stats = _split(model)
  return Source(params, batch_stats, {
      "kind": "workdir", "path": str(path), "step": step,
      "model": source.model, "optimizer": source.optimizer,
      "lam": source.lam, "seed": source.seed})


def _from_file(config, path: pathlib.Path) -> Source:
  from bort_jax import models  # pylint: disable=import-outside-toplevel
  model = models.load_pretrained(config.model, str(path),
                                 num_classes=config.num_classes,
                                 rngs=nnx.Rngs(config.seed))
  params, batch_stats = _split(model)
  return Source(params, batch_stats, {
      "kind": "checkpoint", "path": str(path), "sha256": _sha256(path),
      "model": config.model})


def load_source(config) -> Source:
  """The weights ``config.init_from`` names, as pure dicts.

  Raises:
    FileNotFoundError: the path does not exist.
    ValueError: a directory that is not a workdir, or a workdir trained for
      another model / num_classes (names the field).
  """
  path = pathlib.Path(config.init_from).expanduser().absolute()
  if not path.exists():
    raise FileNotFoundError(
        f"init_from={config.init_from!r} does not exist; it takes a bort_jax "
        f"workdir or a torchvision/timm checkpoint file (.pth, .safetensors).")
  if path.is_dir():
    if not (path / "config.json").exists():
      raise ValueError(
          f"init_from={config.init_from!r} is a directory without config.json:"
          f" not a bort_jax workdir. init_from takes a workdir or a "
          f"torchvision/timm checkpoint file (.pth, .safetensors).")
    return _from_workdir(config, path)
  return _from_file(config, path)


def _by_path(tree) -> dict:
  return {jax.tree_util.keystr(p): x
          for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _replace_leaves(target, source, what: str, init_from: str):
  """``target`` with every leaf taken from ``source``, which must have the
  same paths and shapes; errors name the first offending tensor."""
  want, have = _by_path(target), _by_path(source)
  missing = sorted(set(want) - set(have))
  unexpected = sorted(set(have) - set(want))
  if missing or unexpected:
    raise ValueError(f"init_from={init_from!r}: {what} {missing} missing and "
                     f"{unexpected} unexpected for this config's model.")
  for name, x in want.items():
    if tuple(np.shape(have[name])) != tuple(x.shape):
      raise ValueError(f"init_from={init_from!r}: {what} {name} has shape "
                       f"{tuple(np.shape(have[name]))}, the model expects "
                       f"{tuple(x.shape)}.")
  treedef = jax.tree_util.tree_structure(target)
  return jax.tree_util.tree_unflatten(
      treedef, [np.asarray(have[name], dtype=x.dtype)
                for name, x in want.items()])


def initialize(config, workdir, state, shardings, optimizer, model_fn):
  """``state`` with params and batch statistics from ``config.init_from``,
  a fresh optimizer state, and ``workdir/init_from.json`` written.

  Args:
    state, shardings: the fresh ``TrainState`` and its shardings
      (``bort_jax.train.state.create_train_state``).
    optimizer: the run's optimizer (its state is re-initialised from the
      loaded params).
    model_fn: builds the config's model (tells which model-state leaves are
      batch statistics).
  """
  source = load_source(config)
  params = _replace_leaves(state.params, source.params, "parameters",
                           config.init_from)
  _, target_stats = _split(nnx.eval_shape(model_fn))
  stats = _by_path(_replace_leaves(target_stats, source.batch_stats,
                                   "batch statistics", config.init_from))
  model_state = jax.tree_util.tree_map_with_path(
      lambda p, x: stats.get(jax.tree_util.keystr(p), x), state.model_state)
  params = jax.device_put(params, shardings.params)
  model_state = jax.device_put(model_state, shardings.model_state)
  opt_state = jax.jit(optimizer.init,
                      out_shardings=shardings.opt_state)(params)
  if jax.process_index() == 0:
    (pathlib.Path(workdir) / RECORD_NAME).write_text(
        json.dumps(source.provenance, indent=2, sort_keys=True))
  logging.info("Initialised from %s (%s).", config.init_from,
               source.provenance["kind"])
  return state._replace(params=params, model_state=model_state,
                        opt_state=opt_state)


def warn_ignored(config, step: int) -> None:
  """Says that a resumed run does not read ``init_from``."""
  if config.init_from:
    logging.warning("init_from=%r is ignored: the workdir resumes from its "
                    "own checkpoint at step %d.", config.init_from, step)
