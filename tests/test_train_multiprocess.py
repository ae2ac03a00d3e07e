"""Two local processes (jax.distributed, CPU/gloo) train like one process,
also across a stop and a resume from their shared checkpoint."""

import importlib
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

import bort_jax
from bort_jax import train
from bort_jax.train import mesh as mesh_lib
from bort_jax.train import optimizers
from bort_jax.train import state as state_lib
from bort_jax.train import step as step_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = REPO / "experiments" / "configs" / "digits_lenet_bort_sgd.py"
OVERRIDES = {"batch_size": 16, "eval_batch_size": 120, "num_train_steps": 2,
             "momentum": 0.9, "progress": False, "log_every_steps": 1}


def launch(process_id, port, workdir, num_train_steps):
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="2", JAX_PLATFORMS="cpu")
  overrides = dict(OVERRIDES, num_train_steps=num_train_steps)
  flags = [f"--config.{k}={v}" for k, v in overrides.items()]
  return subprocess.Popen(
      [sys.executable, "-m", "experiments.train", f"--config={CONFIG}",
       f"--workdir={workdir}", f"--coordinator_address=localhost:{port}",
       "--num_processes=2", f"--process_id={process_id}",
       "--allow_config_change", *flags],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)


def single_process_params(config):
  """The same 2 steps in this process: each global batch is process 0's
  batch followed by process 1's, as the 2-process mesh assembles it."""
  shards = [bort_jax.data.load(config.dataset, split="train", batch_size=8,
                               train=True, seed=config.seed, process_index=p,
                               process_count=2) for p in range(2)]
  mesh = mesh_lib.create_mesh(jax.devices()[:4])
  steps_per_epoch = shards[0].steps_per_epoch
  optimizer = optimizers.create_optimizer(
      config, optimizers.learning_rate_schedule(config, steps_per_epoch, 2))
  state, defs, shardings = state_lib.create_train_state(
      lambda: state_lib.create_model(config), optimizer, mesh)
  step = step_lib.make_train_step(
      graphdef=defs.train, optimizer=optimizer, loss_name=config.loss,
      num_classes=config.num_classes,
      state_shardings=shardings, replicated=mesh_lib.replicated(mesh))
  for _ in range(2):
    parts = [next(shard) for shard in shards]
    batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    state, _ = step(state, bort_jax.data.shard_batch(batch, mesh))
  return jax.device_get(state.params)


def run_two_processes(workdir, num_train_steps):
  portpicker = pytest.importorskip("portpicker")
  port = portpicker.pick_unused_port()
  workers = [launch(p, port, workdir, num_train_steps) for p in range(2)]
  try:
    outputs = [w.communicate(timeout=240)[0] for w in workers]
  finally:
    for worker in workers:
      if worker.poll() is None:
        worker.kill()
  for worker, output in zip(workers, outputs):
    assert worker.returncode == 0, output[-3000:]


def test_two_processes_stop_resume_and_train_like_one(tmp_path):
  # Step 1, stop (checkpoint), then both processes resume to step 2: the
  # optimizer's momentum, the RNG and each process's data position (the
  # iterator state process 0 saved, the same on every process) carry over.
  run_two_processes(tmp_path, num_train_steps=1)
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()
                if p.name.isdigit()) == ["1"]
  run_two_processes(tmp_path, num_train_steps=2)
  records = [json.loads(line) for line in
             (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records if "train_loss" in r] == [1, 2]

  config = importlib.import_module(
      "experiments.configs.digits_lenet_bort_sgd").get_config()
  for key, value in OVERRIDES.items():
    config[key] = value
  model, saved_config = train.load_trained(tmp_path)
  assert saved_config.batch_size == 16 and saved_config.num_train_steps == 2
  two_process = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5,
                                                       atol=2e-6),
               single_process_params(config), two_process)
