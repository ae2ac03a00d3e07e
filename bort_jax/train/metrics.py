"""Run metrics: one JSON object per line in ``metrics.jsonl`` + TensorBoard.

Only process 0 writes. Nested dicts are flattened to ``a/b`` tags for
TensorBoard; the JSONL keeps them nested.
"""

from __future__ import annotations

import json
import math
import pathlib

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


class MetricsWriter:
  """Appends metric dicts to ``workdir/metrics.jsonl`` and TensorBoard events."""

  def __init__(self, workdir):
    self.enabled = jax.process_index() == 0
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    self._tensorboard = None
    if self.enabled:
      from tensorboardX import SummaryWriter  # heavy import, process 0 only
      self._tensorboard = SummaryWriter(str(pathlib.Path(workdir) / "tb"))

  def write_scalars(self, step: int, scalars: dict) -> None:
    """TensorBoard only (the frequent train-loss points)."""
    if not self.enabled:
      return
    for tag, value in _flatten(scalars):
      if math.isfinite(value):
        self._tensorboard.add_scalar(tag, value, step)

  def write_record(self, record: dict) -> None:
    """One JSONL line and its scalars in TensorBoard (at ``record['step']``)."""
    if not self.enabled:
      return
    with self.path.open("a") as f:
      f.write(json.dumps(record, sort_keys=True) + "\n")
    self.write_scalars(record["step"], {
        k: v for k, v in record.items()
        if k not in ("step", "orthogonality")} | {
            "orthogonality": record.get("orthogonality", {}).get("mean", {})})
    self._tensorboard.flush()

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()
