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
names the step), so every checkpoint on disk is finite. Each checkpoint
records its metrics (``eval_batch_loss``: the saved state's loss on the first
eval batch; ``train_loss``: the mean loss of the steps since the previous log
point, each measured before its update; ``learning_rate``; ``eval_loss`` at
an epoch end); retention keeps the newest ``max_to_keep`` plus the best by
``eval_batch_loss`` (orbax's ``LatestN`` and ``BestN`` preservation
policies), so a run that
diverges slowly still has a good checkpoint to go back to
(:meth:`Checkpointer.resolve` with ``"best"``).

A save that fails in the background (disk full, permissions) is raised at
the next step boundary (:meth:`Checkpointer.poll`) as one
:class:`CheckpointSaveError` naming the path, the cause and what is kept.
"""

from __future__ import annotations

import logging
import math
import pathlib
from typing import Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(ValueError):
  """A checkpoint that is corrupt or does not fit the configured model."""


class DivergenceError(FloatingPointError):
  """The train state (or loss) stopped being finite; nothing was saved.

  ``resume``: the config values to resume with (``restore_step``,
  ``learning_rate``), or None when no checkpoint exists.
  """

  def __init__(self, message: str, resume: Optional[dict] = None):
    super().__init__(message)
    self.resume = resume


class CheckpointSaveError(OSError):
  """A checkpoint could not be written (e.g. the disk is full)."""


RANK_METRIC = "eval_batch_loss"


def _rank(metrics) -> float:
  """The loss that orders checkpoints (lower is better)."""
  loss = (metrics or {}).get(RANK_METRIC)
  return float(loss) if isinstance(loss, (int, float)) and math.isfinite(
      loss) else math.inf


def _describe_metrics(metrics: Optional[dict]) -> str:
  names = {RANK_METRIC: "loss on the first eval batch",
           "train_loss": "train loss", "eval_loss": "eval loss"}
  parts = [f"{text} {metrics[key]:.4g}" for key, text in names.items()
           if key in (metrics or {})]
  return ", ".join(parts) or "no loss recorded"


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


class _LeaveOutTracebacks(logging.Filter):
  """orbax logs a failed background save with 4 tracebacks of its threads
  (~170 lines); :class:`CheckpointSaveError` says what failed, so its log
  lines keep only their message."""

  def filter(self, record):
    if record.exc_info and "orbax" in record.pathname:
      record.msg = f"{record.msg} [traceback left out: {record.exc_info[1]!r}]"
      record.exc_info, record.exc_text = None, None
    return True


_ORBAX_LOGS = logging.getLogger("absl")
_TRACEBACKS_LEFT_OUT = _LeaveOutTracebacks()


class Checkpointer:
  """Saves every ``every_steps`` steps (and when asked), restores the latest,
  the best or a given step.

  ``on_saved`` (also settable as an attribute): called once, without
  arguments, when the first checkpoint of this Checkpointer is completely
  written (the run's config record is committed then).
  """

  def __init__(self, directory, *, every_steps: int, max_to_keep: int = 3,
               on_saved: Optional[Callable[[], None]] = None):
    if every_steps < 1:
      raise ValueError(f"checkpoint_every_steps={every_steps!r} must be >= 1.")
    self.directory = pathlib.Path(directory).absolute()
    self.every_steps = every_steps
    self.on_saved = on_saved
    self._unconfirmed = None  # the step of the save in flight
    self._save_failure_reported = False
    _ORBAX_LOGS.addFilter(_TRACEBACKS_LEFT_OUT)
    self._abandon = []       # newer steps to delete at the first save
    policies = ocp.checkpoint_managers
    options = ocp.CheckpointManagerOptions(
        create=True, enable_async_checkpointing=True,
        best_fn=_rank, best_mode="min",  # also makes orbax keep the metrics
        preservation_policy=policies.AnyPreservationPolicy([
            policies.LatestN(n=max_to_keep),
            policies.BestN(get_metric_fn=_rank, reverse=True, n=1,
                           keep_checkpoints_without_metrics=False)]))
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "data"))

  def step_dir(self, step: int) -> pathlib.Path:
    return self.directory / str(step)

  def latest_step(self) -> Optional[int]:
    """The newest step written completely (a save in flight is waited for)."""
    self._manager.wait_until_finished()
    return self._manager.latest_step()

  def kept(self, wait: bool = True) -> list[tuple[int, Optional[dict]]]:
    """``(step, metrics)`` of every checkpoint on disk, oldest first
    (metrics None for checkpoints written before they were recorded).
    ``wait``: for the save in flight (False: read the disk as it is)."""
    if wait:
      self._manager.wait_until_finished()
    else:
      self._manager.reload()
    return [(step, self._manager.metrics(step))
            for step in sorted(self._manager.all_steps())]

  def describe_kept(self, wait: bool = True) -> str:
    kept = self.kept(wait)
    if not kept:
      return "no checkpoint is kept"
    return "the kept checkpoints in {}: {}".format(self.directory, "; ".join(
        f"step {step} ({_describe_metrics(metrics)})"
        for step, metrics in kept))

  def best_step(self) -> Optional[int]:
    """The kept step of the lowest recorded ``eval_batch_loss`` (the latest
    when none is recorded)."""
    scored = [(_rank(m), step) for step, m in self.kept()
              if math.isfinite(_rank(m))]
    return min(scored)[1] if scored else self.latest_step()

  def resolve(self, restore_step: Union[str, int]) -> Optional[int]:
    """The step ``restore_step`` names: ``"latest"``, ``"best"`` or a kept
    step (None: no checkpoint yet). Checkpoints newer than the step chosen
    are deleted at this Checkpointer's first save (they belong to the
    abandoned continuation).

    Raises:
      ValueError: a step that is not kept, or another value.
    """
    steps = [step for step, _ in self.kept()]
    if isinstance(restore_step, str) and restore_step.isdigit():
      restore_step = int(restore_step)  # as a command line may give it
    if restore_step == "latest":
      step = self.latest_step()
    elif restore_step == "best":
      step = self.best_step()
    elif isinstance(restore_step, int) and not isinstance(restore_step, bool):
      if restore_step not in steps:
        raise ValueError(
            f"restore_step={restore_step!r} is not a kept checkpoint; "
            f"allowed: 'latest', 'best' or one of the steps {steps} "
            f"({self.describe_kept()}).")
      step = restore_step
    else:
      raise ValueError(f"restore_step={restore_step!r} must be 'latest', "
                       f"'best' or the step of a kept checkpoint {steps}.")
    self._abandon = [s for s in steps if step is not None and s > step]
    if self._abandon:
      logging.warning("Resuming from step %d, before the newest checkpoints "
                      "%s: they are deleted at this run's first checkpoint.",
                      step, self._abandon)
    return step

  @property
  def abandoned(self) -> list[int]:
    """The steps newer than the restored one (see :meth:`resolve`)."""
    return list(self._abandon)

  def divergence(self, what: str, *, diverged_lr: Optional[float] = None,
                 config_lr: Optional[float] = None) -> DivergenceError:
    """The error of a run that diverged: ``what`` happened, the kept
    checkpoints with their losses, and which values to resume with: the
    best checkpoint and, when the learning rates are known, a
    ``learning_rate`` at the best checkpoint's own rate if that was lower,
    else a tenth of the one that diverged."""
    best = self.best_step()
    if best is None:
      return DivergenceError(
          f"{what}; no checkpoint was written and none is kept. Lower "
          f"learning_rate or lam and start again.")
    resume = {"restore_step": "best"}
    if diverged_lr and config_lr:
      best_lr = (self._manager.metrics(best) or {}).get("learning_rate",
                                                        diverged_lr)
      resume["learning_rate"] = float(
          f"{config_lr * min(best_lr / diverged_lr, 0.1):.3g}")
    values = ", ".join(f"{k}={v!r}" for k, v in resume.items())
    flags = " ".join(f"--config.{k}={v}" for k, v in resume.items())
    return DivergenceError(
        f"{what}; no checkpoint was written after it; "
        f"{self.describe_kept()}. Resume from the best one (step {best}) "
        f"with a lower learning rate (or lam): {values} and "
        f"allow_config_change=True ({flags} --allow_config_change).",
        resume=resume)

  def should_save(self, step: int, final: bool = False) -> bool:
    return (final or step % self.every_steps == 0) and (
        step in self._abandon or step not in self._manager.all_steps())

  def save(self, step: int, state, data_state: dict, *,
           metrics: Optional[dict] = None,
           diverged_lr: Optional[float] = None,
           config_lr: Optional[float] = None) -> None:
    """Writes ``step`` with its ``metrics``; raises :class:`DivergenceError`
    (writing nothing) if ``state`` is not finite."""
    bad = nonfinite_paths(state)
    if bad:
      raise self.divergence(
          f"the train state is not finite at step {step} (NaN/inf in "
          f"{', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''})",
          diverged_lr=diverged_lr, config_lr=config_lr)
    self.poll(wait=True)  # orbax waits for the previous save anyway
    if self._abandon:
      for old in self._abandon:
        self._manager.delete(old)
      logging.warning("Deleted the checkpoints %s of the abandoned "
                      "continuation.", self._abandon)
      self._abandon = []
    self._unconfirmed = step
    self._manager.save(step, metrics=metrics, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_storable(state)),
        data=ocp.args.JsonSave(data_state)))

  def poll(self, wait: bool = False) -> None:
    """At a step boundary: raises a failed background save as
    :class:`CheckpointSaveError`; calls ``on_saved`` once a save of this
    Checkpointer is complete. ``wait``: for the save in flight."""
    step = self._unconfirmed
    if step is None:
      return
    try:
      if wait:
        self._manager.wait_until_finished()
      self._manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      self._unconfirmed = None
      raise self._save_failed(step, e) from e
    if self._manager.is_saving_in_progress():
      return
    self._unconfirmed = None
    # orbax's finalize thread may have taken (and logged) the error: a save
    # that failed never got its final directory.
    self._manager.reload()
    if step not in self._manager.all_steps():
      try:
        self._manager.wait_until_finished()  # re-raises the thread's error
        cause = None
      except Exception as e:  # pylint: disable=broad-except
        cause = e
      raise self._save_failed(step, cause) from cause
    if self.on_saved is not None:
      on_saved, self.on_saved = self.on_saved, None
      on_saved()

  def _save_failed(self, step: int, cause) -> CheckpointSaveError:
    self._save_failure_reported = True
    why = f"{type(cause).__name__}: {cause}" if cause else (
        "the background write failed (see the log above)")
    return CheckpointSaveError(
        f"saving the checkpoint of step {step} to {self.step_dir(step)} "
        f"failed ({why}). Nothing of it is used; "
        f"{self.describe_kept(wait=False)}."
        f" Fix the cause (free disk space, permissions) and run the same "
        f"command again to resume from the newest kept checkpoint.")

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
    """Waits for the save in flight (raising :class:`CheckpointSaveError`
    if it failed) and closes the manager."""
    try:
      self.poll(wait=True)
    finally:
      _ORBAX_LOGS.removeFilter(_TRACEBACKS_LEFT_OUT)
      try:
        self._manager.close()
      except Exception:  # pylint: disable=broad-except
        # orbax raises a failed save again at every wait; it was reported.
        if not self._save_failure_reported:
          raise
