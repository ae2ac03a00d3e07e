"""config.diagnostics_every_epochs: which epoch records carry the
orthogonality statistics."""

import json
import pathlib

import pytest

from bort_jax import train
from bort_jax.train import loop
from bort_jax.train import recipes


def test_diagnostics_due_every_n_epochs_and_at_the_end():
  due = [loop.diagnostics_due(step, 10, 2, is_last=step == 50)
         for step in range(10, 51, 10)]
  assert due == [False, True, False, True, True]
  assert all(loop.diagnostics_due(s, 10, 1, False) for s in range(10, 51, 10))


def test_run_writes_orthogonality_only_on_due_epochs(tmp_path):
  config = recipes.digits("lenet", "bort_sgd")
  config.batch_size = 512  # 1437 digits: 2 steps per epoch
  config.num_epochs = 3.0
  config.diagnostics_every_epochs = 2
  config.progress = False
  train.train_and_evaluate(config, tmp_path)
  records = [json.loads(line) for line in
             (pathlib.Path(tmp_path) / "metrics.jsonl").read_text().splitlines()]
  epochs = {round(r["epoch"]): "orthogonality" in r for r in records
            if "epoch" in r}
  assert epochs == {1: False, 2: True, 3: True}


def test_diagnostics_every_epochs_must_be_positive():
  config = recipes.digits("lenet", "bort_sgd")
  config.diagnostics_every_epochs = 0
  with pytest.raises(ValueError, match="diagnostics_every_epochs=0"):
    train.train_and_evaluate(config, "/nonexistent/never-created")
