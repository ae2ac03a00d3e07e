"""What a workdir's checkpoints were trained with: config.json and its history.

``config.json`` is the config of the run that owns the checkpoints. A resumed
run must use the same config, except ``schema.OPERATIONAL_FIELDS``; any other
change is refused unless allowed, and then appended with its step to
``config_history.jsonl``. Model fields can never change (the checkpoint would
not fit). Without a checkpoint nothing is owned yet: the config.json of a run
that failed before its first checkpoint is simply replaced.
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


def config_changes(previous: dict, current) -> dict:
  """``{field: (before, after)}`` between a config.json and a config."""
  before = _as_json(schema.from_json(previous))
  after = _as_json(current)
  return {f: (before.get(f), after.get(f)) for f in sorted(after)
          if before.get(f) != after.get(f)}


def _describe(changes: dict) -> str:
  return ", ".join(f"{f}: {a!r} -> {b!r}" for f, (a, b) in changes.items())


def check_resume(config, workdir: pathlib.Path, *, step: Optional[int],
                 allow_change: bool) -> dict:
  """The hyper-parameter changes of resuming ``workdir`` at ``step``.

  Args:
    step: the checkpoint to resume, None if there is none.
    allow_change: accept hyper-parameter changes (returned, to be recorded).

  Raises:
    CheckpointError: a model field changed (the checkpoint cannot be used).
    ConfigChangeError: another non-operational field changed and
      ``allow_change`` is False; names the fields.
  """
  path = workdir / CONFIG_NAME
  if step is None or not path.exists():
    return {}
  changes = config_changes(json.loads(path.read_text()), config)
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
  return changes


def record(config, workdir: pathlib.Path, *, step: int, changes: dict) -> None:
  """Writes config.json (process 0) and appends ``changes`` at ``step``."""
  if jax.process_index() != 0:
    return
  if changes:
    entry = {"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                 time.gmtime()),
             "changed": {f: {"from": a, "to": b}
                         for f, (a, b) in changes.items()}}
    with (workdir / HISTORY_NAME).open("a") as f:
      f.write(json.dumps(entry, sort_keys=True) + "\n")
  tmp = workdir / (CONFIG_NAME + ".tmp")
  tmp.write_text(config.to_json_best_effort(indent=2, sort_keys=True))
  tmp.replace(workdir / CONFIG_NAME)
