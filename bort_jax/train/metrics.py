"""Run metrics: one JSON object per line in ``metrics.jsonl`` + TensorBoard.

Only process 0 writes. The JSONL is standard JSON: a non-finite value (a
diverged evaluation) is written as ``null`` and its ``a/b`` key listed under
``"nonfinite"``. Nested dicts are flattened to ``a/b`` tags for
TensorBoard; the JSONL keeps them nested. A resumed run first cuts
``metrics.jsonl`` back to its checkpoint (:func:`records_up_to`) and purges
the TensorBoard events past it (``MetricsWriter(purge_step=...)``), so the
replayed steps are not recorded twice.
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
import time

import jax
import numpy as np

ORTHOGONALITY_KEYS = ("gram_diag_mean", "gram_diag_std",
                      "gram_offdiag_abs_mean", "orth_residual", "sigma_min",
                      "sigma_max")


def summarize_orthogonality(stats: dict) -> dict:
  """``orthogonality_stats`` output → per-layer floats and their mean."""
  per_layer = {name: {k: float(v) for k, v in values.items()}
               for name, values in stats.items()}
  mean = {k: float(np.mean([v[k] for v in per_layer.values()]))
          for k in ORTHOGONALITY_KEYS if per_layer}
  return {"mean": mean, "per_layer": per_layer}


def _flatten(tree: dict, prefix: str = ""):
  for key, value in tree.items():
    tag = f"{prefix}{key}"
    if isinstance(value, dict):
      yield from _flatten(value, tag + "/")
    elif isinstance(value, (int, float, np.number)) and not isinstance(
        value, bool):
      yield tag, float(value)


def _finite_or_none(tree: dict, prefix: str, nonfinite: list) -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      value = _finite_or_none(value, f"{prefix}{key}/", nonfinite)
    elif isinstance(value, (float, np.floating)) and not math.isfinite(value):
      nonfinite.append(f"{prefix}{key}")
      value = None
    out[key] = value
  return out


def to_json_line(record: dict) -> str:
  """``record`` as one line of standard JSON (NaN/inf → null, listed in
  ``"nonfinite"``)."""
  nonfinite = []
  clean = _finite_or_none(record, "", nonfinite)
  if nonfinite:
    clean["nonfinite"] = nonfinite
  return json.dumps(clean, sort_keys=True, allow_nan=False) + "\n"


def read_records(path: pathlib.Path) -> tuple[list[dict], bool]:
  """The records of a ``metrics.jsonl`` and whether its last line was torn
  (a crash mid-write); a bad line elsewhere raises naming the line."""
  lines = path.read_text().splitlines() if path.exists() else []
  records = []
  for number, line in enumerate(lines, 1):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if number == len(lines):
        return records, True
      raise ValueError(f"{path}, line {number}, is not JSON ({e}); only a "
                       f"torn last line is dropped automatically.") from e
  return records, False


def records_up_to(workdir, step: int) -> list[dict]:
  """Cuts ``workdir/metrics.jsonl`` back to the records of steps <= ``step``
  (one per step, the last written), dropping a torn last line; returns them.

  Every process reads; process 0 rewrites the file when anything is dropped.
  """
  path = pathlib.Path(workdir) / "metrics.jsonl"
  records, torn = read_records(path)
  by_step = {r["step"]: r for r in records if r.get("step", 0) <= step}
  kept = [by_step[s] for s in sorted(by_step)]
  if torn:
    logging.warning("%s: dropped a torn last line (a crash while writing).",
                    path)
  if len(kept) < len(records):
    logging.warning("%s: dropped %d record(s) past the resumed step %d or "
                    "repeating a step.", path, len(records) - len(kept), step)
  if (torn or len(kept) < len(records)) and jax.process_index() == 0:
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(to_json_line(r) for r in kept))
    tmp.replace(path)
  return kept


class MetricsWriter:
  """Appends metric dicts to ``workdir/metrics.jsonl`` and TensorBoard events.

  ``purge_step``: the first step this run writes. TensorBoard then hides the
  events of earlier runs at that step and later (a resumed run replays the
  steps after its checkpoint; without it TensorBoard plots them twice).
  """

  def __init__(self, workdir, purge_step: int | None = None):
    self.enabled = jax.process_index() == 0
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    self._tensorboard = None
    if self.enabled:
      from tensorboardX import SummaryWriter  # heavy import, process 0 only
      # tensorboardX names event files by the second and host only: a run
      # resumed within the same second would open (and truncate) the earlier
      # run's file. Nanoseconds keep the names unique and in start order.
      self._tensorboard = SummaryWriter(
          str(pathlib.Path(workdir) / "tb"), purge_step=purge_step,
          filename_suffix=f".{time.time_ns():020d}")

  def write_scalars(self, step: int, scalars: dict) -> None:
    """TensorBoard only (the frequent train-loss points)."""
    if not self.enabled:
      return
    for tag, value in _flatten(scalars):
      if math.isfinite(value):
        self._tensorboard.add_scalar(tag, value, step)

  def write_record(self, record: dict) -> None:
    """One JSONL line and its scalars in TensorBoard (at ``record['step']``,
    tagged ``epoch/...``: its epoch-mean ``train_loss`` is not the last
    step's ``train_loss`` of :meth:`write_scalars`)."""
    if not self.enabled:
      return
    with self.path.open("a") as f:
      f.write(to_json_line(record))
    self.write_scalars(record["step"], {"epoch": {
        k: v for k, v in record.items()
        if k not in ("step", "epoch", "orthogonality")} | {
            "orthogonality": record.get("orthogonality", {}).get("mean", {})}})
    self._tensorboard.flush()

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()
