"""The train → explain → report pipeline (``bort_jax.report.pipeline``):
paired seeds, runs grouped by seed, and the CLIs' exits on a signal or a
mistyped workdir (run as subprocesses)."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from bort_jax import train
from bort_jax.report import pipeline
from bort_jax.report import runs as runs_lib
from bort_jax.train import loop as loop_lib
from bort_jax.train import state as state_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "tfds"
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def _demo_config(seeds):
  config = ml_collections.ConfigDict()
  config.models = ("lenet",)
  config.model_overrides = {"lenet": {"in_channels": 1}}
  config.optimizers = ("sgd", "bort_sgd")
  config.seeds = seeds
  config.train = train.default_config()
  config.train.update(dataset="digits", batch_size=32, lam=0.1, seed=3)
  return config


def test_runs_are_named_and_seeded_seed_major():
  configs = pipeline.demo_run_configs(_demo_config(2))
  assert list(configs) == ["lenet_sgd_s3", "lenet_bort_sgd_s3",
                           "lenet_sgd_s4", "lenet_bort_sgd_s4"]
  assert [c.seed for c in configs.values()] == [3, 3, 4, 4]
  assert [c.lam for c in configs.values()] == [0.0, 0.1, 0.0, 0.1]
  for bad in (0, -1, 2.5, True):
    with pytest.raises(ValueError, match=f"seeds={bad!r}"):
      pipeline.with_seeds(configs, bad)


def _initial_params(config):
  """The model's parameters as the training state starts from them (the
  state is built from ``create_model(config)``), computed eagerly."""
  from flax import nnx
  return jax.tree.leaves(nnx.state(state_lib.create_model(config), nnx.Param))


def _first_labels(config, batches=3):
  """The labels of the first training batches, as the loop loads them."""
  iterator = loop_lib._load(config, split="train",  # pylint: disable=protected-access
                            batch_size=config.batch_size, train=True)
  it = iter(iterator)
  return np.concatenate([np.asarray(next(it)["label"]) for _ in range(batches)])


def test_seed_s_of_both_optimizers_shares_init_and_data_order():
  configs = pipeline.demo_run_configs(_demo_config(2))
  params = {name: _initial_params(configs[name])
            for name in ("lenet_sgd_s3", "lenet_bort_sgd_s3", "lenet_sgd_s4")}
  labels = {name: _first_labels(c) for name, c in configs.items()}
  for a, b in zip(params["lenet_sgd_s3"], params["lenet_bort_sgd_s3"],
                  strict=True):
    np.testing.assert_array_equal(a, b)
  for seed in (3, 4):
    np.testing.assert_array_equal(labels[f"lenet_sgd_s{seed}"],
                                  labels[f"lenet_bort_sgd_s{seed}"])
  assert not all(np.array_equal(a, b) for a, b in zip(
      params["lenet_sgd_s3"], params["lenet_sgd_s4"], strict=True))
  assert not np.array_equal(labels["lenet_sgd_s3"], labels["lenet_sgd_s4"])


def _runs(**seeds_of):
  out = {}
  for opt, seeds in seeds_of.items():
    out[opt] = []
    for seed in seeds:
      config = ml_collections.ConfigDict({"seed": seed})
      out[opt].append(runs_lib.SeedRun(f"{opt}_s{seed}", None, config))
  return out


def test_runs_are_paired_by_seed_or_refused():
  assert runs_lib.check_paired("LeNet", _runs(SGD=[0, 1, 2],
                                              Bort=[0, 1, 2])) == [0, 1, 2]
  assert runs_lib.check_paired("LeNet", _runs(Bort=[4])) == [4]
  with pytest.raises(ValueError, match=r"LeNet: the optimizers were trained "
                     r"with different seeds \(SGD: \[0, 1, 2\]; Bort: \[0, 1\]"):
    runs_lib.check_paired("LeNet", _runs(SGD=[0, 1, 2], Bort=[0, 1]))
  with pytest.raises(ValueError, match=r"different seeds \(SGD: \[0, 1\]; "
                     r"Bort: \[0, 2\]"):
    runs_lib.check_paired("LeNet", _runs(SGD=[0, 1], Bort=[2, 0]))
  with pytest.raises(ValueError, match=r"Bort has several runs of seed\(s\) "
                     r"\[1\]"):
    runs_lib.check_paired("LeNet", _runs(SGD=[0, 1], Bort=[1, 0, 1]))


def test_explain_refuses_a_workdir_holding_no_run_before_creating_anything(
    tmp_path):
  typo = tmp_path / "runs" / "quickstrat"
  result = subprocess.run(
      [sys.executable, "-m", "experiments.explain", f"--workdir={typo}"],
      cwd=REPO, env=ENV, capture_output=True, text=True, check=False)
  assert result.returncode != 0
  assert f"'{typo}' holds no run: it does not exist" in result.stderr
  assert not (tmp_path / "runs").exists()


def _stopped(argv, signum, tmp_path):
  """Starts ``argv``, sends ``signum`` once its first run trains, returns the
  finished process's (exit status, stderr)."""
  log = tmp_path / "stdout"
  with open(log, "w", encoding="utf-8") as out:
    child = subprocess.Popen(argv, cwd=REPO, env=ENV, stdout=out,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while "training " not in log.read_text() and child.poll() is None:
      assert time.monotonic() < deadline, "no run started in 120 s"
      time.sleep(0.2)
    time.sleep(1.0)
    child.send_signal(signum)
    _, stderr = child.communicate(timeout=120)
  return child.returncode, stderr


@pytest.mark.parametrize("module, signum, flags", [
    ("experiments.quickstart", signal.SIGTERM,
     ["--config.models=('lenet',)", "--config.seeds=1",
      "--config.train.num_train_steps=100000",
      "--config.train.progress=False"]),
    ("experiments.reproduce", signal.SIGINT,
     ["--dataset=mnist", f"--data_dir={FIXTURE}", "--num_train_steps=100000",
      "--batch_size=16", "--noprogress"]),
])
def test_a_signal_stops_the_pipeline_with_status_75(module, signum, flags,
                                                    tmp_path):
  status, stderr = _stopped(
      [sys.executable, "-m", module, f"--workdir={tmp_path / 'w'}", *flags],
      signum, tmp_path)
  assert status == pipeline.EXIT_INTERRUPTED == 75, stderr[-3000:]
  name = signal.Signals(signum).name
  assert f"stopped by {name}" in stderr
  assert "Run the same command again to resume." in stderr
  assert "Traceback" not in stderr
