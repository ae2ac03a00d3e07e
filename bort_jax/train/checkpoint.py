"""Orbax checkpoints of the :class:`TrainState` and the data iterator position.

``workdir/checkpoints/<step>/`` holds ``state`` (the arrays, sharded as they
were on the mesh) and ``data`` (the iterator's JSON state, so a resumed run sees
exactly the batches it would have seen). Saves are asynchronous: ``save``
returns once the arrays are copied off the devices, and orbax writes them in a
background thread while training goes on (the next ``save``, ``restore`` and
``close`` wait for it). Orbax writes each step to a temporary directory and
renames it when complete, so an interrupted save never replaces a good
checkpoint; a checkpoint that cannot be read raises
:class:`CheckpointError` naming its directory and is left untouched.

A state holding a NaN or an infinity is never written (:class:`DivergenceError`
names the step), so every checkpoint on disk is finite and the newest one
survives whatever ``max_to_keep`` deletes.
"""

from __future__ import annotations

import pathlib
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(ValueError):
  """A checkpoint that is corrupt or does not fit the configured model."""


class DivergenceError(FloatingPointError):
  """The train state (or loss) stopped being finite; nothing was saved."""


@jax.jit
def _finite_per_leaf(leaves):
  return [jnp.all(jnp.isfinite(x)) for x in leaves]


def nonfinite_paths(tree) -> list[str]:
  """Key paths of the floating leaves of ``tree`` that hold a NaN or inf."""
  floats = [(path, x) for path, x in jax.tree_util.tree_leaves_with_path(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  finite = _finite_per_leaf([x for _, x in floats])
  return [jax.tree_util.keystr(path) for (path, _), ok in zip(floats, finite)
          if not np.asarray(ok.addressable_data(0))]


def _is_key(x) -> bool:
  return jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


def _storable(tree):
  """Typed PRNG keys → their uint32 key data (what orbax can write)."""
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x,
                      tree)


def _unstorable(stored, template):
  return jax.tree.map(
      lambda s, t: jax.random.wrap_key_data(s, impl=jax.random.key_impl(t))
      if _is_key(t) else s, stored, template)


def _abstract(tree):
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                     sharding=getattr(x, "sharding", None)),
      tree)


class Checkpointer:
  """Saves every ``every_steps`` steps (and when asked), restores the latest."""

  def __init__(self, directory, *, every_steps: int, max_to_keep: int = 3):
    if every_steps < 1:
      raise ValueError(f"checkpoint_every_steps={every_steps!r} must be >= 1.")
    self.directory = pathlib.Path(directory).absolute()
    self.every_steps = every_steps
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True,
        enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "data"))

  def step_dir(self, step: int) -> pathlib.Path:
    return self.directory / str(step)

  def latest_step(self) -> Optional[int]:
    """The newest step written completely (a save in flight is waited for)."""
    self._manager.wait_until_finished()
    return self._manager.latest_step()

  def newest_kept(self) -> str:
    """What a diverged run leaves to resume from, for its error message."""
    latest = self.latest_step()
    return (f"the newest checkpoint ({self.step_dir(latest)}) is finite and "
            f"is kept" if latest is not None else "no checkpoint exists yet")

  def should_save(self, step: int, final: bool = False) -> bool:
    return (final or step % self.every_steps == 0) and (
        step not in self._manager.all_steps())

  def save(self, step: int, state, data_state: dict) -> None:
    """Writes ``step``; raises :class:`DivergenceError` (writing nothing) if
    ``state`` is not finite."""
    bad = nonfinite_paths(state)
    if bad:
      raise DivergenceError(
          f"the train state is not finite at step {step} (NaN/inf in "
          f"{', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}); no "
          f"checkpoint was written and {self.newest_kept()}. Lower "
          f"learning_rate or lam and resume.")
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_storable(state)),
        data=ocp.args.JsonSave(data_state)))

  def restore(self, step: int, template):
    """``(state, data_state)`` of ``step``, laid out like ``template``.

    Raises:
      CheckpointError: naming the step's directory, when it cannot be read or
        its arrays do not have the template's shapes and dtypes.
    """
    self._manager.wait_until_finished()
    path = self.step_dir(step)
    target = _abstract(_storable(template))
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target),
          data=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types; the path is what helps.
      raise CheckpointError(
          f"Cannot restore the checkpoint {path}: {type(e).__name__}: {e}. It "
          f"was left as it is; move it away to resume from an older one, or "
          f"use another --workdir.") from e
    stored = restored["state"]
    mismatched = [
        f"{jax.tree_util.keystr(p)}: {np.shape(got)} {got.dtype} (model "
        f"expects {want.shape} {want.dtype})"
        for (p, got), want in zip(jax.tree_util.tree_leaves_with_path(stored),
                                  jax.tree.leaves(target))
        if np.shape(got) != want.shape or got.dtype != want.dtype]
    if mismatched:
      raise CheckpointError(
          f"The checkpoint {path} does not fit the configured model/optimizer:"
          f" {'; '.join(mismatched[:5])}. It was left as it is.")
    state = _unstorable(stored, template)
    bad = nonfinite_paths(state)
    if bad:  # written before saves were checked
      raise CheckpointError(
          f"The checkpoint {path} holds NaN/inf in {', '.join(bad[:4])}. It "
          f"was left as it is; move it away to resume from an older one.")
    return state, dict(restored["data"] or {})

  def close(self) -> None:
    self._manager.close()
