"""``train_and_evaluate``: the training loop of ``experiments/train.py``.

One code path for 1 device, N devices and N processes: a 1-D ``data`` mesh
over all devices, each process feeding its own shard of every global batch.
"""

from __future__ import annotations

import json
import math
import pathlib
import time

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

import bort_jax
from bort_jax import data
from bort_jax.train import checkpoint as checkpoint_lib
from bort_jax.train import mesh as mesh_lib
from bort_jax.train import metrics as metrics_lib
from bort_jax.train import optimizers
from bort_jax.train import state as state_lib
from bort_jax.train import step as step_lib

REQUIRED_FIELDS = (
    "dataset", "data_dir", "model", "model_overrides", "num_classes",
    "optimizer", "learning_rate", "lr_schedule", "warmup_epochs", "lam",
    "weight_decay", "momentum", "batch_size", "eval_batch_size", "num_epochs",
    "num_train_steps", "seed", "augment", "loss", "drop_path",
    "checkpoint_every_steps", "log_every_steps", "fsdp", "progress")

# Fields that change the parameter tree: a checkpoint written under other
# values cannot be resumed.
MODEL_FIELDS = ("model", "model_overrides", "num_classes", "drop_path",
                "optimizer")


def check_config(config) -> None:
  missing = [f for f in REQUIRED_FIELDS if f not in config]
  if missing:
    raise ValueError(f"config lacks the fields {missing}; every training "
                     f"config needs {REQUIRED_FIELDS}.")
  for name in ("batch_size", "eval_batch_size", "log_every_steps",
               "checkpoint_every_steps"):
    if int(config[name]) < 1:
      raise ValueError(f"{name}={config[name]!r} must be >= 1.")
  if config.num_train_steps < 1 and config.num_epochs <= 0:
    raise ValueError(f"num_epochs={config.num_epochs!r} must be > 0 when "
                     f"num_train_steps={config.num_train_steps!r} is -1.")


def _augment(config):
  augment = config.augment
  if augment is None:
    return None
  augment = augment.to_dict() if hasattr(augment, "to_dict") else dict(augment)
  return augment or None


def _load(config, *, split: str, batch_size: int, train: bool):
  return data.load(
      config.dataset, split=split, batch_size=batch_size, train=train,
      seed=config.seed, data_dir=config.get("data_dir"),
      augment=_augment(config), image_size=config.get("image_size"))


def per_process_batch(global_batch: int, mesh) -> int:
  """The share of ``global_batch`` each process loads."""
  if global_batch % mesh.size:
    raise ValueError(f"batch size {global_batch} must be divisible by the "
                     f"{mesh.size} devices of the mesh.")
  return global_batch // jax.process_count()


def to_global_batch(batch: dict, mesh) -> dict:
  """Per-process numpy batch → global arrays sharded on the ``data`` axis."""
  return data.shard_batch(batch, mesh, mesh_lib.DATA_AXIS)


def to_host(tree):
  """Fully replicated global arrays → numpy (works on every process)."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def _check_same_model(config, workdir: pathlib.Path) -> None:
  """Refuses a workdir whose ``config.json`` describes another model."""
  path = workdir / "config.json"
  if not path.exists():
    return
  previous = json.loads(path.read_text())
  current = json.loads(config.to_json_best_effort())
  changed = [f for f in MODEL_FIELDS if previous.get(f) != current.get(f)]
  if changed:
    differences = ", ".join(
        f"{f}: {previous.get(f)!r} -> {current.get(f)!r}" for f in changed)
    raise checkpoint_lib.CheckpointError(
        f"{path} was written for another model ({differences}); its "
        f"checkpoints cannot be resumed. Use another --workdir.")


def _write_config(config, workdir: pathlib.Path) -> None:
  if jax.process_index() == 0:
    (workdir / "config.json").write_text(
        config.to_json_best_effort(indent=2, sort_keys=True))


def evaluate(eval_step, state, config, mesh, eval_batch_size: int) -> dict:
  """CE loss, top-1 and top-5 over the eval split, each example counted once.

  Every process has the same number of (padded, masked) eval batches, so all
  run the same collective steps.
  """
  eval_iter = _load(config, split=config.get("eval_split", "test"),
                    batch_size=eval_batch_size, train=False)
  totals = None
  for batch in eval_iter:
    sums = eval_step(state.params, state.model_state,
                     to_global_batch(batch, mesh))
    sums = {k: np.float64(v) for k, v in to_host(sums).items()}
    totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
  count = max(totals["count"], 1.0)
  return {"eval_loss": float(totals["loss_sum"] / count),
          "top1": float(totals["top1_sum"] / count),
          "top5": float(totals["top5_sum"] / count),
          "eval_examples": int(totals["count"])}


def _last_record(workdir: pathlib.Path) -> dict:
  path = workdir / "metrics.jsonl"
  lines = path.read_text().splitlines() if path.exists() else []
  return json.loads(lines[-1]) if lines else {}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict:
  """Trains ``config`` in ``workdir`` (resuming from its checkpoints).

  Evaluates at every epoch end and at the last step, appending one record per
  evaluation to ``workdir/metrics.jsonl``; returns the last record.
  """
  check_config(config)
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  _check_same_model(config, workdir)
  mesh = mesh_lib.create_mesh()

  train_batch = per_process_batch(config.batch_size, mesh)
  eval_batch = per_process_batch(config.eval_batch_size, mesh)
  train_iter = _load(config, split="train", batch_size=train_batch, train=True)
  if train_iter.num_classes != config.num_classes:
    raise ValueError(f"num_classes={config.num_classes} but dataset "
                     f"{config.dataset!r} has {train_iter.num_classes}.")
  steps_per_epoch = train_iter.steps_per_epoch
  total_steps = (config.num_train_steps if config.num_train_steps > 0 else
                 int(math.ceil(config.num_epochs * steps_per_epoch)))

  schedule = optimizers.learning_rate_schedule(config, steps_per_epoch,
                                               total_steps)
  optimizer = optimizers.create_optimizer(config, schedule)
  state, defs, shardings = state_lib.create_train_state(
      lambda: state_lib.create_model(config), optimizer, mesh, fsdp=config.fsdp)

  checkpointer = checkpoint_lib.Checkpointer(
      workdir / "checkpoints", every_steps=config.checkpoint_every_steps)
  latest = checkpointer.latest_step()
  if latest is not None:
    state, data_state = checkpointer.restore(latest, state)
    train_iter.set_state(data_state)
  _write_config(config, workdir)  # only once the checkpoint is known to fit

  replicated = mesh_lib.replicated(mesh)
  train_step = step_lib.make_train_step(
      graphdef=defs.train, optimizer=optimizer, loss_name=config.loss,
      num_classes=config.num_classes,
      label_smoothing=float((_augment(config) or {}).get("label_smoothing",
                                                         0.0)),
      state_shardings=shardings, replicated=replicated)
  eval_step = step_lib.make_eval_step(graphdef=defs.eval,
                                      num_classes=config.num_classes,
                                      replicated=replicated)
  orthogonality = jax.jit(bort_jax.orthogonality_stats,
                          out_shardings=replicated)
  writer = metrics_lib.MetricsWriter(workdir)

  step = int(to_host(state.step))
  progress = tqdm(total=total_steps, initial=step, unit="step",
                  disable=not config.progress or jax.process_index() != 0)
  record = _last_record(workdir)  # what a finished run returns if resumed
  losses_to_log, epoch_losses = [], []
  epoch_start, epoch_steps = time.perf_counter(), 0
  try:
    while step < total_steps:
      batch = to_global_batch(next(train_iter), mesh)
      state, step_metrics = train_step(state, batch)
      step += 1
      epoch_steps += 1
      losses_to_log.append(step_metrics["loss"])
      is_last = step == total_steps
      is_epoch_end = step % steps_per_epoch == 0 or is_last
      if step % config.log_every_steps == 0 or is_epoch_end:
        losses = [float(x) for x in to_host(losses_to_log)]
        losses_to_log = []
        if not all(map(math.isfinite, losses)):
          raise FloatingPointError(
              f"train loss became {losses[-1]} at step {step} "
              f"(lr={float(schedule(step - 1))}); lower learning_rate or lam.")
        epoch_losses.extend(losses)
        images_per_sec = (epoch_steps * config.batch_size /
                          max(time.perf_counter() - epoch_start, 1e-9))
        writer.write_scalars(step, {"train_loss": losses[-1],
                                    "learning_rate": float(schedule(step - 1)),
                                    "images_per_sec": images_per_sec})
        progress.set_postfix(loss=f"{losses[-1]:.4f}",
                             img_s=f"{images_per_sec:.0f}")
      progress.update(1)
      if is_epoch_end:
        record = {"step": step, "epoch": step / steps_per_epoch,
                  "train_loss": float(np.mean(epoch_losses)),
                  "images_per_sec": images_per_sec,
                  **evaluate(eval_step, state, config, mesh, eval_batch),
                  "orthogonality": metrics_lib.summarize_orthogonality(
                      to_host(orthogonality(state.params)))}
        writer.write_record(record)
        epoch_losses = []
        epoch_start, epoch_steps = time.perf_counter(), 0
      if checkpointer.should_save(step, final=is_last):
        checkpointer.save(step, state, train_iter.get_state())
  finally:
    progress.close()
    writer.close()
    checkpointer.close()
  return record


def load_trained(workdir):
  """``(model, config)`` of a run: its latest checkpoint, in eval mode."""
  workdir = pathlib.Path(workdir).absolute()
  config_path = workdir / "config.json"
  if not config_path.exists():
    raise FileNotFoundError(f"{config_path} does not exist: is {workdir} a "
                            f"workdir written by train_and_evaluate?")
  config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
  optimizer = optimizers.create_optimizer(
      config, optimizers.learning_rate_schedule(config, 1, 1))
  mesh = mesh_lib.create_mesh(jax.local_devices()[:1])
  state, defs, _ = state_lib.create_train_state(
      lambda: state_lib.create_model(config), optimizer, mesh)
  checkpointer = checkpoint_lib.Checkpointer(
      workdir / "checkpoints", every_steps=config.checkpoint_every_steps)
  latest = checkpointer.latest_step()
  if latest is None:
    raise FileNotFoundError(f"no checkpoint in {checkpointer.directory}.")
  state, _ = checkpointer.restore(latest, state)
  checkpointer.close()
  return state_lib.merge_model(defs.eval, state.params, state.model_state), config
