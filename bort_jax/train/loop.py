"""``train_and_evaluate``: the training loop of ``experiments/train.py``.

One code path for 1 device, N devices and N processes: a 1-D ``data`` mesh
over all devices, each process feeding its own shard of every global batch.
"""

from __future__ import annotations

import contextlib
import functools
import math
import pathlib
import time

import jax
import ml_collections
import numpy as np
import optax
from tqdm.auto import tqdm

import bort_jax
from bort_jax import data
from bort_jax.train import checkpoint as checkpoint_lib
from bort_jax.train import compile_cache
from bort_jax.train import init_from
from bort_jax.train import mesh as mesh_lib
from bort_jax.train import metrics as metrics_lib
from bort_jax.train import optimizers
from bort_jax.train import prefetch
from bort_jax.train import preemption
from bort_jax.train import provenance
from bort_jax.train import schema
from bort_jax.train import state as state_lib
from bort_jax.train import step as step_lib
from bort_jax.train import workdir_lock


def _augment(config):
  augment = config.augment
  if augment is None:
    return None
  augment = augment.to_dict() if hasattr(augment, "to_dict") else dict(augment)
  return augment or None


def _load(config, *, split: str, batch_size: int, train: bool):
  return data.load(
      config.dataset, split=split, batch_size=batch_size, train=train,
      seed=config.seed, data_dir=config.data_dir,
      augment=_augment(config), image_size=config.image_size, finish=False)


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


def evaluate(eval_step, state, eval_iter, mesh, prefetch_batches: int) -> dict:
  """CE loss, top-1 and top-5 over the eval split, each example counted once.

  ``eval_iter`` is rewound to the split's start, so one iterator serves every
  evaluation. Every process has the same number of (padded, masked) eval
  batches, so all run the same collective steps. The per-batch sums stay on
  the devices until the split is done: one host transfer per evaluation.
  """
  eval_iter.set_state({**eval_iter.get_state(), "epoch": 0, "step": 0})
  with prefetch.Prefetcher(
      eval_iter, lambda b: eval_iter.finish(to_global_batch(b, mesh)),
      prefetch_batches) as batches:
    sums = [eval_step(state.params, state.model_state, batch)
            for batch in batches]
  totals = {k: np.sum([np.float64(s[k]) for s in to_host(sums)])
            for k in sums[0]}
  count = max(totals["count"], 1.0)
  return {"eval_loss": float(totals["loss_sum"] / count),
          "top1": float(totals["top1_sum"] / count),
          "top5": float(totals["top5_sum"] / count),
          "eval_examples": int(totals["count"])}


def ranking_batch(eval_iter, mesh) -> dict:
  """The first eval batch, on the devices: every checkpoint's state is
  scored on it (one forward pass) to rank checkpoints for
  ``restore_step="best"``."""
  eval_iter.set_state({**eval_iter.get_state(), "epoch": 0, "step": 0})
  return eval_iter.finish(to_global_batch(next(eval_iter), mesh))


def batch_loss(eval_step, state, batch) -> float:
  """The mean CE loss of ``state`` on ``batch``'s real rows."""
  sums = to_host(eval_step(state.params, state.model_state, batch))
  return float(sums["loss_sum"] / max(float(sums["count"]), 1.0))


def _check_losses(pending: list, step: int, schedule, checkpointer,
                  config_lr: float) -> list:
  """Host floats of the losses of the steps ``step - len(pending) + 1 ..
  step``; raises :class:`DivergenceError` naming the first non-finite one."""
  losses = [float(x) for x in to_host(pending)]
  for offset, loss in enumerate(losses):
    if not math.isfinite(loss):
      bad_step = step - len(losses) + 1 + offset
      lr = float(schedule(bad_step - 1))
      raise checkpointer.divergence(
          f"train loss became {loss} at step {bad_step} (lr={lr})",
          diverged_lr=lr, config_lr=config_lr)
  return losses


def _check_splits(config, train_iter, eval_iter) -> None:
  """The eval split fits the model trained on the train split."""
  for split, iterator in (("train", train_iter),
                          (config.eval_split, eval_iter)):
    if iterator.num_classes != config.num_classes:
      raise ValueError(f"num_classes={config.num_classes} but the {split} "
                       f"split of {config.dataset!r} has "
                       f"{iterator.num_classes} classes.")
  if eval_iter.num_examples == 0:
    raise ValueError(f"the {config.eval_split!r} split of {config.dataset!r}"
                     f" is empty; evaluation needs at least one example.")
  if eval_iter.image_shape != train_iter.image_shape:
    raise ValueError(
        f"the {config.eval_split!r} split of {config.dataset!r} gives images "
        f"of shape {eval_iter.image_shape} but the train split "
        f"{train_iter.image_shape}; both must match the model's input.")


def _prepare(config, mesh, stack: contextlib.ExitStack):
  """Data, schedule and optimizer, each checked before any training step.
  The iterators are closed when ``stack`` is."""
  train_batch = per_process_batch(config.batch_size, mesh)
  eval_batch = per_process_batch(config.eval_batch_size, mesh)
  train_iter = stack.enter_context(contextlib.closing(
      _load(config, split="train", batch_size=train_batch, train=True)))
  # Opened once (a missing, unreadable, empty or mismatched eval split fails
  # now, not after an epoch) and rewound for each evaluation.
  eval_iter = stack.enter_context(contextlib.closing(
      _load(config, split=config.eval_split, batch_size=eval_batch,
            train=False)))
  _check_splits(config, train_iter, eval_iter)
  steps_per_epoch = train_iter.steps_per_epoch
  total_steps = (config.num_train_steps if config.num_train_steps > 0 else
                 int(math.ceil(config.num_epochs * steps_per_epoch)))
  schedule = optimizers.learning_rate_schedule(config, steps_per_epoch,
                                               total_steps)
  optimizers.check_schedules({"learning_rate": schedule,
                              "lam": optax.constant_schedule(config.lam)},
                             total_steps)
  optimizer = optimizers.create_optimizer(config, schedule)
  return train_iter, eval_iter, total_steps, schedule, optimizer


def train_and_evaluate(config: ml_collections.ConfigDict, workdir, *,
                       allow_config_change: bool = False) -> dict:
  """Trains ``config`` in ``workdir`` (resuming from its checkpoints).

  Evaluates at every epoch end and at the last step, appending one record per
  evaluation to ``workdir/metrics.jsonl``; returns the last record.

  Resumes from the checkpoint ``config.restore_step`` names: ``"latest"``,
  ``"best"`` (lowest loss on the first eval batch) or a kept step; the newer
  checkpoints are deleted at the run's first checkpoint.

  Guarantees: one run per workdir (``workdir/lock``); resuming with another
  config (or without ``config.json``) is refused unless
  ``allow_config_change`` (then recorded in ``config_history.jsonl``);
  ``config.json`` and the history are written once the run's first
  checkpoint exists; a non-finite loss or state stops the run with
  :class:`DivergenceError` and is never checkpointed; a failed background
  save raises :class:`CheckpointSaveError` at the next step; SIGINT/SIGTERM
  save a checkpoint at the next step boundary and raise
  :class:`TrainingInterrupted`.

  Raises:
    WorkdirBusyError: another run holds ``workdir``.
    ConfigChangeError, CheckpointError: the checkpoints do not match
      ``config``.
    DivergenceError: the loss or the train state became NaN/inf; lists the
      kept checkpoints and the values to resume with (``.resume``).
    CheckpointSaveError: a checkpoint could not be written.
    TrainingInterrupted: stopped by SIGINT/SIGTERM after a checkpoint.
  """
  schema.check_config(config)
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  with contextlib.ExitStack() as stack:  # closed in reverse order
    # Signals are caught from the start (a pod may be stopped while
    # compiling): the run then stops at its first step boundary.
    stop = stack.enter_context(preemption.StopSignals())
    stack.enter_context(workdir_lock.workdir_lock(workdir))
    stack.enter_context(
        compile_cache.persistent_cache(config.compilation_cache_dir))
    mesh = mesh_lib.create_mesh()
    train_iter, eval_iter, total_steps, schedule, optimizer = _prepare(
        config, mesh, stack)
    checkpointer = checkpoint_lib.Checkpointer(
        workdir / "checkpoints", every_steps=config.checkpoint_every_steps)
    stack.callback(checkpointer.close)
    restored = checkpointer.resolve(config.restore_step)
    changes, config_was_missing = provenance.check_resume(
        config, workdir, step=restored, allow_change=allow_config_change)
    state, defs, shardings = state_lib.create_train_state(
        lambda: state_lib.create_model(config), optimizer, mesh,
        fsdp=config.fsdp)
    epoch_loss = (0.0, 0)
    if restored is not None:
      init_from.warn_ignored(config, restored)
      state, data_state = checkpointer.restore(restored, state)
      epoch_loss = tuple(data_state.pop("epoch_loss", epoch_loss))
      train_iter.set_state(data_state)
    elif config.init_from:
      state = init_from.initialize(config, workdir, state, shardings, optimizer,
                                   lambda: state_lib.create_model(config))
    # From the restored position on, batches are made ahead (during the
    # compiles below, evaluations and checkpoints too).
    depth = prefetch.depth_for(config.prefetch_batches, mesh.devices.flat)
    batches = stack.enter_context(prefetch.Prefetcher(
        train_iter, lambda b: train_iter.finish(to_global_batch(b, mesh)),
        depth))
    checkpointer.on_saved = functools.partial(
        provenance.record, config, workdir, step=restored or 0,
        changes=changes, config_was_missing=config_was_missing,
        abandoned=checkpointer.abandoned)
    records = metrics_lib.records_up_to(workdir, restored or 0)
    replicated = mesh_lib.replicated(mesh)
    train_step = step_lib.make_train_step(
        graphdef=defs.train, optimizer=optimizer, loss_name=config.loss,
        num_classes=config.num_classes, state_shardings=shardings,
        replicated=replicated)
    eval_step = step_lib.make_eval_step(graphdef=defs.eval,
                                        num_classes=config.num_classes,
                                        replicated=replicated)
    evaluate_state = lambda s: evaluate(eval_step, s, eval_iter, mesh, depth)
    probe = ranking_batch(eval_iter, mesh)
    score_state = lambda s: batch_loss(eval_step, s, probe)
    return _loop(config, workdir, mesh, state, batches, train_step,
                 evaluate_state, score_state, checkpointer, schedule,
                 total_steps, records[-1] if records else {}, epoch_loss, stop)


def diagnostics_due(step: int, steps_per_epoch: int, every_epochs: int,
                    is_last: bool) -> bool:
  """Whether the epoch record ending at ``step`` gets ``orthogonality_stats``:
  every ``every_epochs``-th epoch, and always the last record."""
  return is_last or (step // steps_per_epoch) % every_epochs == 0


def _loop(config, workdir, mesh, state, batches, train_step,
          evaluate_state, score_state, checkpointer, schedule, total_steps,
          record, epoch_loss, stop) -> dict:
  """Steps from ``state.step`` to ``total_steps``: logs, epoch records,
  checkpoints, stops on divergence or a signal. Returns the last record.

  ``epoch_loss`` is the (sum, count) of the train losses of the current
  epoch's steps before ``state.step`` (from the checkpoint).
  """
  orthogonality = jax.jit(bort_jax.orthogonality_stats,
                          out_shardings=mesh_lib.replicated(mesh))
  step = int(to_host(state.step))
  # Events past the resumed step (written after its checkpoint) are hidden.
  writer = metrics_lib.MetricsWriter(workdir, purge_step=step + 1)
  steps_per_epoch = batches.steps_per_epoch
  progress = tqdm(total=total_steps, initial=step, unit="step",
                  disable=not config.progress or jax.process_index() != 0)
  pending, (loss_sum, loss_count) = [], epoch_loss
  window_loss = math.nan  # mean train loss since the last log point
  epoch_start, epoch_steps = time.perf_counter(), 0
  if step == 0 and config.init_from:  # the loaded weights, before any step
    record = {"step": 0, "epoch": 0.0, **evaluate_state(state),
              "orthogonality": metrics_lib.summarize_orthogonality(
                  to_host(orthogonality(state.params)))}
    writer.write_record(record)
  try:
    while step < total_steps:
      checkpointer.poll()  # a failed background save stops the run here
      state, step_metrics = train_step(state, next(batches))
      step += 1
      epoch_steps += 1
      pending.append(step_metrics["loss"])
      is_last = step == total_steps
      is_epoch_end = step % steps_per_epoch == 0 or is_last
      is_checkpoint = step % config.checkpoint_every_steps == 0 or is_last
      is_sync = (is_checkpoint or is_epoch_end or
                 step % config.log_every_steps == 0)
      stopping = stop.agreed(sync_step=is_sync) and not is_last
      if is_sync or stopping:
        losses = _check_losses(pending, step, schedule, checkpointer,
                               config.learning_rate)
        pending = []
        window_loss = sum(losses) / len(losses)
        loss_sum, loss_count = loss_sum + sum(losses), loss_count + len(
            losses)
        images_per_sec = (epoch_steps * config.batch_size /
                          max(time.perf_counter() - epoch_start, 1e-9))
        writer.write_scalars(step, {
            "train_loss": losses[-1],
            "learning_rate": float(schedule(step - 1)),
            "images_per_sec": images_per_sec})
        progress.set_postfix(loss=f"{losses[-1]:.4f}",
                             img_s=f"{images_per_sec:.0f}")
      progress.update(1)
      if is_epoch_end:
        record = {"step": step, "epoch": step / steps_per_epoch,
                  "train_loss": loss_sum / max(loss_count, 1),
                  "images_per_sec": images_per_sec,
                  **evaluate_state(state)}
        if diagnostics_due(step, steps_per_epoch,
                           config.diagnostics_every_epochs, is_last):
          record["orthogonality"] = metrics_lib.summarize_orthogonality(
              to_host(orthogonality(state.params)))
        writer.write_record(record)
        loss_sum, loss_count = 0.0, 0
        epoch_start, epoch_steps = time.perf_counter(), 0
      if checkpointer.should_save(step, final=is_last or stopping):
        # The saved state's loss on the first eval batch ranks checkpoints
        # for restore_step="best" (the train losses are those of the
        # states before each update).
        metrics = {"eval_batch_loss": score_state(state),
                   "train_loss": window_loss,
                   "learning_rate": float(schedule(step - 1))}
        if is_epoch_end:
          metrics["eval_loss"] = record["eval_loss"]
        metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
        checkpointer.save(step, state, {
            **batches.get_state(), "epoch_loss": [loss_sum, loss_count]},
                          metrics=metrics, diverged_lr=metrics["learning_rate"],
                          config_lr=config.learning_rate)
      if stopping:
        again = ("Run the same command again to resume" if
                 config.restore_step == "latest" else
                 "Run the command again without --config.restore_step to "
                 "resume from it")
        raise preemption.TrainingInterrupted(
            f"stopped by {stop.signal_name or 'a signal to another process'}"
            f" at step {step} of {total_steps}; saved the checkpoint "
            f"{checkpointer.step_dir(step)}. {again}.", step=step,
            signal_name=stop.signal_name)
  finally:
    progress.close()
    writer.close()
  return record


def load_trained(workdir):
  """``(model, config)`` of a run: its latest checkpoint, in eval mode."""
  workdir = pathlib.Path(workdir).absolute()
  config_path = workdir / "config.json"
  if not config_path.exists():
    raise FileNotFoundError(f"{config_path} does not exist: is {workdir} a "
                            f"workdir written by train_and_evaluate?")
  config = schema.from_json(provenance.read_config_json(config_path))
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
