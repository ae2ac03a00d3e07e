"""What a workdir's checkpoints were trained with: config.json and its history.

``config.json`` is the config of the run that owns the checkpoints. A resumed
run must use the same config, except ``schema.OPERATIONAL_FIELDS``; any other
change is refused unless allowed, and then appended with its step to
``config_history.jsonl``. Model fields can never change (the checkpoint would
not fit). Without a checkpoint nothing is owned yet: the config.json of a run
that failed before its first checkpoint is simply replaced.

Records never run ahead of the checkpoints: ``config.json`` and the history
entry of a run are written (:func:`record`) only once its first checkpoint is
completely written, so an attempt that fails before (diverged, bad data,
killed) leaves the record of the checkpoints that exist. Checkpoints without
a ``config.json`` are refused: what they were trained with is unknown.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Optional

import jax

from bort_jax.train import schema
from bort_jax.train.checkpoint import CheckpointError

CONFIG_NAME = "config.json"
HISTORY_NAME = "config_history.jsonl"


class ConfigChangeError(ValueError):
  """A resumed run's hyper-parameters differ from those of its checkpoints."""


def _as_json(config) -> dict:
  return json.loads(config.to_json_best_effort())


def read_config_json(path: pathlib.Path) -> dict:
  """The fields of a ``config.json``; a file that is not one raises
  ``ValueError`` naming it."""
  try:
    values = json.loads(path.read_text())
  except ValueError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); it should hold the "
                     f"config of the run in {path.parent}. Restore it, or "
                     f"move it away and resume with --allow_config_change.") \
        from None
  if not isinstance(values, dict):
    raise ValueError(f"{path} holds a {type(values).__name__}, not the "
                     f"config object of the run in {path.parent}.")
  return values


def config_changes(previous: dict, current) -> dict:
  """``{field: (before, after)}`` between a config.json and a config."""
  before = _as_json(schema.from_json(previous))
  after = _as_json(current)
  return {f: (before.get(f), after.get(f)) for f in sorted(after)
          if before.get(f) != after.get(f)}


def _describe(changes: dict) -> str:
  return ", ".join(f"{f}: {a!r} -> {b!r}" for f, (a, b) in changes.items())


def check_resume(config, workdir: pathlib.Path, *, step: Optional[int],
                 allow_change: bool) -> tuple[dict, bool]:
  """The hyper-parameter changes of resuming ``workdir`` at ``step``, and
  whether ``config.json`` is missing (the gap to record).

  Args:
    step: the checkpoint to resume, None if there is none.
    allow_change: accept hyper-parameter changes and a missing config.json
      (returned, to be recorded).

  Raises:
    CheckpointError: a model field changed (the checkpoint cannot be used).
    ConfigChangeError: another non-operational field changed, or there are
      checkpoints but no config.json, and ``allow_change`` is False.
  """
  path = workdir / CONFIG_NAME
  if step is None:
    return {}, False
  if not path.exists():
    if not allow_change:
      raise ConfigChangeError(
          f"{workdir} has checkpoints (resuming step {step}) but no "
          f"{CONFIG_NAME}: what they were trained with is unknown. Put "
          f"{path} back, or pass --allow_config_change "
          f"(allow_config_change=True) to continue with this config; the "
          f"gap is then recorded in {workdir / HISTORY_NAME}.")
    return {}, True
  changes = config_changes(read_config_json(path), config)
  model = {f: c for f, c in changes.items() if f in schema.MODEL_FIELDS}
  if model:
    raise CheckpointError(
        f"{path} was written for another model ({_describe(model)}); its "
        f"checkpoints cannot be resumed. Use another --workdir.")
  changes = {f: c for f, c in changes.items()
             if f not in schema.OPERATIONAL_FIELDS}
  if changes and not allow_change:
    raise ConfigChangeError(
        f"the checkpoints in {workdir} (step {step}) were trained with "
        f"another config: {_describe(changes)}. Resume with the config of "
        f"{path}, or pass --allow_config_change (allow_config_change=True) "
        f"to continue with the new values; the change is then recorded in "
        f"{workdir / HISTORY_NAME}.")
  return changes, False


def record(config, workdir: pathlib.Path, *, step: int, changes: dict,
           config_was_missing: bool = False, abandoned=()) -> None:
  """Writes config.json (process 0) and appends what changed at ``step``:
  ``changes``, a missing config.json before it, the newer checkpoints
  ``abandoned`` by resuming an older one.

  Called once the first checkpoint of the run with ``config`` is written.
  """
  if jax.process_index() != 0:
    return
  if changes or config_was_missing or abandoned:
    entry = {"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                 time.gmtime()),
             "changed": {f: {"from": a, "to": b}
                         for f, (a, b) in changes.items()}}
    if config_was_missing:
      entry["config_before"] = (f"unknown: {CONFIG_NAME} was missing; the "
                                f"checkpoints up to step {step} were trained "
                                f"with a config that was not recorded")
    if abandoned:
      entry["abandoned_steps"] = list(abandoned)
    with (workdir / HISTORY_NAME).open("a") as f:
      f.write(json.dumps(entry, sort_keys=True) + "\n")
  tmp = workdir / (CONFIG_NAME + ".tmp")
  tmp.write_text(config.to_json_best_effort(indent=2, sort_keys=True))
  tmp.replace(workdir / CONFIG_NAME)
