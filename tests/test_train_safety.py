"""Runs that never lose work: divergence, one run per workdir, preemption,
metrics and config provenance on resume, data checked before training."""

import ast
import json
import logging
import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import bort_jax
from bort_jax import train
from bort_jax.train import metrics as metrics_lib
from bort_jax.data import idx
from bort_jax.train import checkpoint as checkpoint_lib
from bort_jax.train import loop, optimizers
from bort_jax.train import step as step_lib
from bort_jax.train import recipes

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("compilation_cache")
CONFIG_FILE = REPO / "experiments" / "configs" / "digits_lenet_bort_sgd.py"


def tiny(**changes):
  """Digits LeNet Bort-S at half width, batches of 16 (89 steps per epoch)."""
  config = recipes.digits("lenet", "bort_sgd")
  config.model_overrides.width_multiplier = 0.5
  config.batch_size, config.eval_batch_size = 16, 120
  config.num_train_steps, config.progress = 2, False
  for key, value in changes.items():
    config[key] = value
  return config


def steps_on_disk(workdir):
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                if p.name.isdigit())


def read_metrics(workdir):
  return [json.loads(line) for line in
          (workdir / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------- divergence


def test_divergence_never_checkpoints_nan_and_names_the_step(tmp_path):
  train.train_and_evaluate(tiny(num_train_steps=4, checkpoint_every_steps=2),
                           tmp_path)
  # The repro: lr 100 from a good checkpoint, saving every 2 steps,
  # the loss looked at only every 50 steps.
  diverging = tiny(num_train_steps=60, learning_rate=100.0,
                   checkpoint_every_steps=2, log_every_steps=50,
                   prefetch_batches=2)
  with pytest.raises(train.DivergenceError, match=r"at step (\d+)") as error:
    train.train_and_evaluate(diverging, tmp_path, allow_config_change=True)
  failed_at = int(error.value.args[0].split("at step ")[1].split()[0])
  assert 4 < failed_at < 60
  assert not prefetch_threads()
  assert str(tmp_path / "checkpoints") in str(error.value)
  # Every checkpoint left (max_to_keep=3 of them) is finite, the newest
  # restores, and it is older than the step that failed.
  assert max(steps_on_disk(tmp_path)) < failed_at
  with ocp.StandardCheckpointer() as checkpointer:
    for step in steps_on_disk(tmp_path):
      state = checkpointer.restore(tmp_path / "checkpoints" / str(step) /
                                   "state")
      assert not checkpoint_lib.nonfinite_paths(state), step
  model, _ = train.load_trained(tmp_path)
  assert model is not None


def test_checkpointer_refuses_a_nonfinite_state(tmp_path):
  checkpointer = checkpoint_lib.Checkpointer(tmp_path, every_steps=1)
  state = {"params": {"kernel": np.ones((2, 3), np.float32)},
           "opt_state": {"trace": np.ones(3, np.float32)},
           "count": np.int32(1)}
  checkpointer.save(1, state, {})
  state["opt_state"]["trace"][1] = np.inf
  with pytest.raises(train.DivergenceError,
                     match=r"at step 2 \(NaN/inf in \['opt_state'\]\['trace"
                     r"'\]\).*kept checkpoints in " + str(tmp_path) +
                     r": step 1 \(no loss recorded\).*restore_step='best'"):
    checkpointer.save(2, state, {})
  assert checkpointer.latest_step() == 1 and not (tmp_path / "2").exists()
  checkpointer.close()


def test_nan_lam_and_bad_schedules_are_refused_before_training(tmp_path):
  with pytest.raises(ValueError, match="lam=nan"):
    train.train_and_evaluate(tiny(lam=float("nan")), tmp_path)
  assert not (tmp_path / "config.json").exists()
  assert not (tmp_path / "checkpoints").exists()
  with pytest.raises(ValueError, match="learning_rate=inf"):
    train.check_config(tiny(learning_rate=float("inf")))
  # A schedule is checked at every step, the error names the first bad one.
  ramp = optax.linear_schedule(0.1, -0.1, transition_steps=10)
  with pytest.raises(ValueError, match=r"lam schedule is -0.02.* step 6 "):
    optimizers.check_schedules({"learning_rate": optax.constant_schedule(
        0.1), "lam": ramp}, total_steps=20)
  with pytest.raises(ValueError, match="learning_rate schedule is nan at "
                     "step 3 "):
    optimizers.check_schedules(
        {"learning_rate": lambda s: jax.numpy.where(s == 3, jax.numpy.nan,
                                                    0.1)}, total_steps=5)
  optimizers.check_schedules({"lam": ramp}, total_steps=6)  # steps 0..5 fine


# --------------------------------------------------------------- lock


def _lock(workdir, host, pid):
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "lock").write_text(json.dumps({"host": host, "pid": pid,
                                            "started": time.time()}))


def test_a_second_run_on_a_locked_workdir_is_refused(tmp_path):
  _lock(tmp_path, socket.gethostname(), os.getpid())  # a live holder
  with pytest.raises(train.WorkdirBusyError,
                     match=f"{tmp_path} .*pid {os.getpid()} on host "
                     f"{socket.gethostname()}"):
    train.train_and_evaluate(tiny(), tmp_path)
  assert not (tmp_path / "config.json").exists()
  assert (tmp_path / "lock").exists()  # not ours to remove
  _lock(tmp_path, "another-host", 1)  # cannot be checked from here
  with pytest.raises(train.WorkdirBusyError,
                     match=f"another-host.*delete {tmp_path / 'lock'}"):
    train.train_and_evaluate(tiny(), tmp_path)


def test_leftovers_of_a_dead_run_do_not_block_the_corrected_command(
    tmp_path, caplog):
  # A run on another model died (killed: stale lock) before its first
  # checkpoint: its lock and config.json must not lock the workdir.
  finished = subprocess.Popen(["true"])
  finished.wait()
  _lock(tmp_path, socket.gethostname(), finished.pid)
  other = tiny(model_overrides={"in_channels": 1, "width_multiplier": 0.25})
  (tmp_path / "config.json").write_text(other.to_json_best_effort())
  with caplog.at_level(logging.WARNING):
    final = train.train_and_evaluate(tiny(), tmp_path)
  assert final["step"] == 2
  assert f"Stale lock {tmp_path / 'lock'}" in caplog.text
  assert str(finished.pid) in caplog.text
  assert not (tmp_path / "lock").exists()  # released after the run
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["model_overrides"]["width_multiplier"] == 0.5


# --------------------------------------------------------------- preemption


def signal_at_step(monkeypatch, step, signum):
  """The train step sends ``signum`` to this process while running step
  ``step`` (1-based): the loop stops right after it, whatever the prefetch
  thread has read ahead."""
  make_train_step = step_lib.make_train_step
  calls = []

  def make(**kwargs):
    train_step = make_train_step(**kwargs)

    def signalling(state, batch):
      calls.append(None)
      if len(calls) == step:
        os.kill(os.getpid(), signum)
      return train_step(state, batch)
    return signalling

  monkeypatch.setattr(step_lib, "make_train_step", make)


def prefetch_threads():
  return [t for t in threading.enumerate() if t.name == "bort_jax-prefetch"]


def params_of(workdir):
  model, _ = train.load_trained(workdir)
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


@pytest.mark.parametrize("prefetch_batches", [0, 3])
def test_sigint_saves_at_the_next_step_and_resumes(tmp_path, monkeypatch,
                                                   prefetch_batches):
  config = tiny(num_train_steps=5, checkpoint_every_steps=100,
                prefetch_batches=prefetch_batches)
  handler = signal.getsignal(signal.SIGINT)
  signal_at_step(monkeypatch, 3, signal.SIGINT)
  with pytest.raises(train.TrainingInterrupted,
                     match=f"SIGINT at step 3 of 5.*{tmp_path}") as error:
    train.train_and_evaluate(config, tmp_path / "resumed")
  monkeypatch.undo()
  assert not prefetch_threads()
  assert error.value.step == 3 and error.value.signal_name == "SIGINT"
  assert signal.getsignal(signal.SIGINT) is handler  # put back
  assert steps_on_disk(tmp_path / "resumed") == [3]
  assert not (tmp_path / "resumed" / "lock").exists()
  final = train.train_and_evaluate(config, tmp_path / "resumed")
  assert final["step"] == 5 and steps_on_disk(tmp_path / "resumed") == [3, 5]
  # The checkpoint holds the position of the last batch TRAINED ON (step 3),
  # not of those prefetched: the resumed run is the uninterrupted one, here
  # without prefetch, bit for bit.
  straight = train.train_and_evaluate(
      tiny(num_train_steps=5, checkpoint_every_steps=100, prefetch_batches=0),
      tmp_path / "straight")
  assert not prefetch_threads()
  jax.tree.map(np.testing.assert_array_equal, params_of(tmp_path / "straight"),
               params_of(tmp_path / "resumed"))
  assert final["train_loss"] == straight["train_loss"]


class _BrokenAt:
  """A train iterator whose batch of step ``step`` (1-based) fails to load."""

  def __init__(self, iterator, step):
    self._iterator, self._step = iterator, step

  def __getattr__(self, name):
    return getattr(self._iterator, name)

  def __next__(self):
    if self._iterator.get_state()["step"] + 1 == self._step:
      raise OSError(f"cannot read the batch of step {self._step}")
    return next(self._iterator)


def test_a_failing_batch_raises_in_the_loop_with_its_traceback(
    tmp_path, monkeypatch):
  load = loop._load
  monkeypatch.setattr(loop, "_load", lambda config, **kw: _BrokenAt(
      load(config, **kw), 4) if kw["train"] else load(config, **kw))
  with pytest.raises(OSError, match="batch of step 4") as error:
    train.train_and_evaluate(tiny(num_train_steps=6, prefetch_batches=2,
                                  checkpoint_every_steps=2), tmp_path)
  # Raised where the loop asked for that batch, with the producer's frames
  # down to the line that failed.
  frames = [(pathlib.Path(f.path).name, f.name) for f in error.traceback]
  assert ("loop.py", "_loop") in frames, frames
  assert frames[-1] == ("test_train_safety.py", "__next__"), frames
  assert not prefetch_threads()
  assert steps_on_disk(tmp_path) == [2]  # steps 1-3 trained, 2 saved


def test_sigterm_to_the_cli_checkpoints_and_exits_75(tmp_path):
  # --config.model_overrides.width_multiplier: a key the config lacks;
  # a Bort mode and amplitude other than the defaults.
  command = [sys.executable, "-m", "experiments.train",
             f"--config={CONFIG_FILE}", f"--workdir={tmp_path}",
             "--config.model_overrides.width_multiplier=0.5",
             "--config.bort_mode=l1-row", "--config.bort_amplitude=ada",
             "--config.batch_size=16", "--config.eval_batch_size=120",
             "--config.num_train_steps=100000", "--config.progress=False"]
  # 8 devices as in this process: the compiled steps come from the cache.
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="8", JAX_PLATFORMS="cpu",
             JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  process = subprocess.Popen(command, cwd=REPO, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  try:
    deadline = time.monotonic() + 240
    # Signals are caught from the moment the lock is taken: the run stops
    # at its first step boundary after this one.
    while not (tmp_path / "lock").exists():
      assert process.poll() is None, process.communicate()
      assert time.monotonic() < deadline
      time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
  finally:
    if process.poll() is None:
      process.kill()
  assert process.returncode == 75, stderr[-3000:]
  assert "Traceback" not in stderr
  message = [l for l in stderr.splitlines() if "stopped by SIGTERM" in l]
  assert message, stderr[-3000:]
  step = int(message[0].split("at step ")[1].split()[0])
  assert 1 <= step < 200  # before any scheduled checkpoint
  assert steps_on_disk(tmp_path) == [step]
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["model_overrides"] == {"in_channels": 1,
                                      "width_multiplier": 0.5}
  assert (saved["bort_mode"], saved["bort_amplitude"]) == ("l1-row", "ada")
  assert not (tmp_path / "lock").exists()


# ---------------------------------------------------- resume: metrics, config


def test_resume_keeps_one_record_per_step_and_the_config_history(
    tmp_path, caplog):
  config = tiny(num_train_steps=4, checkpoint_every_steps=2)
  expected = train.train_and_evaluate(config, tmp_path)
  # A crash after the record of step 4 but before its checkpoint, then one
  # in the middle of writing another line.
  shutil.rmtree(tmp_path / "checkpoints" / "4")
  with (tmp_path / "metrics.jsonl").open("a") as f:
    f.write('{"step": 5, "train_lo')
  with caplog.at_level(logging.WARNING):
    final = train.train_and_evaluate(config, tmp_path)
  assert "torn last line" in caplog.text
  assert read_metrics(tmp_path) == [final]  # step 4 once, not twice
  # Its train loss still averages steps 1-4, not the replayed 3-4 only.
  assert final["train_loss"] == expected["train_loss"]

  config_json = (tmp_path / "config.json").read_text()
  changed = tiny(num_train_steps=5, checkpoint_every_steps=2, lam=0.5,
                 log_every_steps=3)
  with pytest.raises(train.ConfigChangeError,
                     match=r"step 4\).*: lam: 0.1 -> 0.5, num_train_steps: "
                     r"4 -> 5\..*--allow_config_change"):
    train.train_and_evaluate(changed, tmp_path)
  assert (tmp_path / "config.json").read_text() == config_json
  train.train_and_evaluate(changed, tmp_path, allow_config_change=True)
  history = [json.loads(line) for line in
             (tmp_path / "config_history.jsonl").read_text().splitlines()]
  assert history == [{"step": 4, "time": history[0]["time"], "changed": {
      "lam": {"from": 0.1, "to": 0.5},
      "num_train_steps": {"from": 4, "to": 5}}}]
  assert json.loads((tmp_path / "config.json").read_text())["lam"] == 0.5


# ---------------------------------------------------------- config schema


@pytest.mark.parametrize("name", ["bort_sgd", "bort_adamw", "bort_lamb"])
def test_config_bort_mode_and_amplitude_reach_the_optimizer(name):
  config = tiny(optimizer=name, bort_mode="l1-row", bort_amplitude="ada",
                momentum=0.0, lam=0.3, weight_decay=0.0)
  params = {"conv": {"kernel": jax.random.normal(jax.random.key(0),
                                                 (3, 3, 2, 4))}}
  grads = jax.tree.map(lambda x: 0.1 * x, params)

  def update(transform):
    return transform.update(grads, transform.init(params), params)[0]

  alias = getattr(bort_jax, name)
  extra = {"momentum": 0.0} if name == "bort_sgd" else {}
  expected = update(alias(0.01, lam=0.3, mode="l1-row", amplitude="ada",
                          weight_decay=0.0, **extra))
  got = update(optimizers.create_optimizer(config, 0.01))
  jax.tree.map(np.testing.assert_array_equal, got, expected)
  default = update(alias(0.01, lam=0.3, weight_decay=0.0, **extra))
  assert not np.allclose(got["conv"]["kernel"], default["conv"]["kernel"])
  config.optimizer = name[len("bort_"):]
  config.lam = 0.0
  with pytest.raises(ValueError, match="'bort_mode': 'l1-row'"):
    optimizers.create_optimizer(config, 0.01)



def test_one_schema_refuses_unknown_and_missing_fields():
  config = tiny()
  assert sorted(config) == sorted(train.default_config())
  with pytest.raises(AttributeError, match="lamda"):
    config.lamda = 0.1  # a typo cannot become a silently ignored field
  config.model_overrides.depth = 3  # model_overrides / augment stay open
  config.augment.mixup = 0.2
  loose = config.copy_and_resolve_references()
  loose.unlock()
  loose.lamda = 0.1
  with pytest.raises(ValueError, match=r"unknown fields \['lamda'\]"):
    train.check_config(loose)
  del loose["lamda"], loose["seed"]
  with pytest.raises(ValueError, match=r"lacks the fields \['seed'\]"):
    train.check_config(loose)
  with pytest.raises(ValueError, match=r"prefetch_batches=-2 must be an int >= -1"):
    train.check_config(tiny(prefetch_batches=-2))


# ----------------------------------------------------------- data checks


def test_truncated_or_corrupt_gzip_idx_names_the_file(tmp_path):
  images = np.random.default_rng(0).integers(0, 255, (40, 28, 28), np.uint8)
  idx.write_idx(tmp_path / "good.gz", images)
  data = (tmp_path / "good.gz").read_bytes()
  (tmp_path / "truncated.gz").write_bytes(data[:len(data) // 2])
  corrupt = bytearray(data)
  corrupt[len(data) // 2:len(data) // 2 + 32] = bytes(32)
  (tmp_path / "corrupt.gz").write_bytes(bytes(corrupt))
  np.testing.assert_array_equal(idx.read_idx(tmp_path / "good.gz"), images)
  for name in ("truncated.gz", "corrupt.gz"):
    with pytest.raises(ValueError, match=f"{tmp_path / name} is a truncated "
                       "or corrupt gzip file"):
      idx.read_idx(tmp_path / name)


def test_a_missing_eval_split_fails_before_training(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  rng = np.random.default_rng(0)
  idx.write_idx(data / "train-images-idx3-ubyte.gz",
                rng.integers(0, 255, (64, 28, 28), np.uint8))
  idx.write_idx(data / "train-labels-idx1-ubyte.gz",
                np.arange(64, dtype=np.uint8) % 10)
  workdir = tmp_path / "run"
  with pytest.raises(bort_jax.data.DatasetNotFoundError, match="t10k-images"):
    train.train_and_evaluate(tiny(dataset=f"idx:{data}", num_train_steps=4),
                             workdir)
  assert not (workdir / "config.json").exists()
  assert not (workdir / "tb").exists()


# ------------------------------------------------- evaluation, TensorBoard


def test_the_eval_split_is_opened_once_and_read_whole_each_time(
    tmp_path, monkeypatch):
  opened, load = [], loop._load

  def counting_load(config, **kwargs):
    opened.append(kwargs["split"])
    return load(config, **kwargs)

  monkeypatch.setattr(loop, "_load", counting_load)
  # 2 steps per epoch: evaluations at steps 2 and 4, from one iterator.
  train.train_and_evaluate(tiny(batch_size=512, num_train_steps=4), tmp_path)
  assert opened == ["train", "test"]
  records = read_metrics(tmp_path)
  assert [(r["step"], r["eval_examples"]) for r in records] == [(2, 360),
                                                                (4, 360)]


def tensorboard_scalars(logdir):
  """``{tag: [step, ...]}`` as TensorBoard reads the event files: in file
  name order, a SessionLog.START at step s hiding the events already read
  at steps >= s (its EventAccumulator's _CheckForRestartAndMaybePurge)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  scalars = {}
  for path in sorted(pathlib.Path(logdir).glob("events.out.tfevents.*")):
    raw, offset = path.read_bytes(), 0
    while offset < len(raw):  # TFRecord: u64 length, u32 crc, data, u32 crc
      length = int.from_bytes(raw[offset:offset + 8], "little")
      event = event_pb2.Event.FromString(
          raw[offset + 12:offset + 12 + length])
      offset += 16 + length
      if event.session_log.status == event_pb2.SessionLog.START:
        scalars = {tag: [s for s in steps if s < event.step]
                   for tag, steps in scalars.items()}
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append(event.step)
  return scalars


def test_tensorboard_shows_each_step_once_after_a_resume(tmp_path):
  config = tiny(batch_size=512, num_train_steps=4, log_every_steps=1,
                checkpoint_every_steps=2)
  train.train_and_evaluate(config, tmp_path)
  # A crash after the events of steps 3-4 but before step 4's checkpoint:
  # the resumed run replays steps 3 and 4.
  shutil.rmtree(tmp_path / "checkpoints" / "4")
  train.train_and_evaluate(config, tmp_path)
  scalars = tensorboard_scalars(tmp_path / "tb")
  assert scalars["train_loss"] == [1, 2, 3, 4]
  assert scalars["epoch/top1"] == scalars["epoch/train_loss"] == [2, 4]


def test_a_compilation_cache_dir_serves_the_compiles_of_the_next_run(
    tmp_path):
  events = []
  listener = lambda name, **kwargs: events.append(name)
  jax.monitoring.register_event_listener(listener)
  outer = jax.config.jax_compilation_cache_dir  # this module's fixture
  jax.jit(lambda x: x * 3.0)(1.0)  # JAX's cache is opened (on outer) now
  try:
    config = tiny(batch_size=512, compilation_cache_dir=str(tmp_path / "cc"))
    train.train_and_evaluate(config, tmp_path / "first")
    assert jax.config.jax_compilation_cache_dir == outer  # put back
    written = sorted(p.name for p in (tmp_path / "cc").iterdir())
    assert written
    # A new process would recompile all of them; this one compiles only the
    # functions created per run (train/eval step ...): all from the cache.
    events.clear()
    train.train_and_evaluate(config, tmp_path / "second")
  finally:
    jax.monitoring.unregister_event_listener(listener)
  hits = events.count("/jax/compilation_cache/cache_hits")
  assert hits >= 2 and "/jax/compilation_cache/cache_misses" not in events
  jax.jit(lambda x: x * 5.0)(1.0)  # after the run: not cached there
  assert sorted(p.name for p in (tmp_path / "cc").iterdir()) == written


def test_a_resume_in_the_same_second_keeps_the_earlier_event_file(
    tmp_path, monkeypatch):
  # tensorboardX names event files by the second: two writers started in the
  # same second must still write two files (the second used to truncate the
  # first, losing the earlier run's events).
  import tensorboardX.event_file_writer as event_file_writer  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(event_file_writer.time, "time", lambda: 1.7e9)
  for purge_step in (None, 3):
    writer = metrics_lib.MetricsWriter(tmp_path, purge_step=purge_step)
    writer.write_scalars(purge_step or 1, {"train_loss": 1.0})
    writer.close()
  assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 2


# ------------------------------------------- divergence you can resume from


def cli_env():
  """The environment of a CLI run: 8 devices as in this process, so the
  compiled steps come from this module's cache."""
  return dict(os.environ, JAX_NUM_CPU_DEVICES="8", JAX_PLATFORMS="cpu",
              JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")


def test_a_diverged_run_resumes_from_its_best_checkpoint(tmp_path):
  # 1 epoch (89 steps of 16) at lr 0.01, then lr 100 with a checkpoint
  # every 2 steps: the scenario.
  flags = {"model_overrides.width_multiplier": 0.5, "batch_size": 16,
           "eval_batch_size": 120, "progress": False}
  train.train_and_evaluate(tiny(num_train_steps=-1, num_epochs=1.0),
                           tmp_path)
  # The divergence through the CLI, which prints the command to resume with.
  diverging = [sys.executable, "-m", "experiments.train",
               f"--config={CONFIG_FILE}", f"--workdir={tmp_path}",
               "--config.num_train_steps=120",
               "--config.learning_rate", "100.0", "--allow_config_change",
               "--config.checkpoint_every_steps=2",
               "--config.log_every_steps=1",
               *[f"--config.{k}={v}" for k, v in flags.items()]]
  diverged = subprocess.run(diverging, cwd=REPO, env=cli_env(), text=True,
                            capture_output=True, timeout=300)
  message = diverged.stderr
  assert diverged.returncode == 1, message[-3000:]
  assert "DivergenceError" in message, message[-3000:]
  # Every kept step is listed with its losses; the epoch's checkpoint
  # (step 89, evaluated) is the best.
  kept = steps_on_disk(tmp_path)
  assert kept[0] == 89 and len(kept) >= 2, (kept, message)
  for step in kept:
    assert f"step {step} (loss on the first eval batch " in message
  assert re.search(r"step 89 \(loss on the first eval batch [0-9.]+, train "
                   r"loss [0-9.]+, eval loss [0-9.]+\)", message), message
  assert "Resume from the best one (step 89)" in message
  printed = message.split("Resume from the best checkpoint with:\n", 1)[1]
  command = shlex.split(printed.strip().splitlines()[0])
  assert command[-3:] == ["--config.restore_step=best",
                          "--config.learning_rate=0.01",
                          "--allow_config_change"]
  assert "100.0" not in command
  done = subprocess.run(command, cwd=REPO, env=cli_env(), text=True,
                        capture_output=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  final = ast.literal_eval(done.stdout.strip().splitlines()[-1])
  assert final["step"] == 120 and np.isfinite(final["train_loss"])
  # The continuation after step 89 was abandoned and recorded as such.
  history = [json.loads(line) for line in
             (tmp_path / "config_history.jsonl").read_text().splitlines()]
  assert history[-1]["step"] == 89
  assert history[-1]["abandoned_steps"] == kept[1:]
  assert history[-1]["changed"]["learning_rate"] == {"from": 100.0,
                                                     "to": 0.01}


def test_restore_step_names_a_kept_step(tmp_path):
  checkpointer = checkpoint_lib.Checkpointer(tmp_path, every_steps=1,
                                             max_to_keep=1)
  state = {"w": np.ones(3, np.float32)}
  for step, loss in [(1, 0.5), (2, 0.2), (3, 0.9), (4, 3.0)]:
    checkpointer.save(step, state, {}, metrics={"eval_batch_loss": loss})
  assert [s for s, _ in checkpointer.kept()] == [2, 4]  # best + newest
  assert checkpointer.resolve("best") == 2 and checkpointer.abandoned == [4]
  assert checkpointer.resolve("latest") == 4 and checkpointer.abandoned == []
  with pytest.raises(ValueError, match=r"restore_step=3 is not a kept "
                     r"checkpoint; allowed: 'latest', 'best' or one of the "
                     r"steps \[2, 4\]"):
    checkpointer.resolve(3)
  checkpointer.close()
  with pytest.raises(ValueError, match="restore_step='newest' must be"):
    train.check_config(tiny(restore_step="newest"))


# ------------------------------------------------ records that never lie


def test_records_follow_the_checkpoints(tmp_path):
  config = tiny(num_train_steps=2)
  train.train_and_evaluate(config, tmp_path)
  # Checkpoints without config.json: what they were trained with is
  # unknown, so a changed lam is not silently recorded as theirs.
  (tmp_path / "config.json").unlink()
  changed = tiny(num_train_steps=3, lam=0.5)
  with pytest.raises(train.ConfigChangeError,
                     match=r"checkpoints \(resuming step 2\) but no "
                     r"config.json.*--allow_config_change"):
    train.train_and_evaluate(changed, tmp_path)
  train.train_and_evaluate(changed, tmp_path, allow_config_change=True)
  history = [json.loads(line) for line in
             (tmp_path / "config_history.jsonl").read_text().splitlines()]
  assert len(history) == 1 and history[0]["step"] == 2
  assert "config.json was missing" in history[0]["config_before"]
  assert json.loads((tmp_path / "config.json").read_text())["lam"] == 0.5
  # A failed attempt (diverged before its first checkpoint) rewrites no
  # record: the original command still resumes.
  records = {name: (tmp_path / name).read_text()
             for name in ("config.json", "config_history.jsonl")}
  with pytest.raises(train.DivergenceError):
    train.train_and_evaluate(
        tiny(num_train_steps=60, lam=0.5, learning_rate=1000.0,
             log_every_steps=1), tmp_path, allow_config_change=True)
  assert {name: (tmp_path / name).read_text() for name in records} == records
  assert train.train_and_evaluate(changed, tmp_path)["step"] == 3
  # A config.json that is not JSON is named.
  (tmp_path / "config.json").write_text("{garbage")
  with pytest.raises(ValueError, match=f"{tmp_path / 'config.json'} is not "
                     "valid JSON"):
    train.train_and_evaluate(changed, tmp_path)
  with pytest.raises(ValueError, match="config.json is not valid JSON"):
    train.load_trained(tmp_path)


def test_metrics_jsonl_is_standard_json(tmp_path):
  writer = metrics_lib.MetricsWriter(tmp_path)
  writer.write_record({"step": 1, "train_loss": 0.5, "eval_loss": np.nan,
                       "orthogonality": {"mean": {"sigma_max": np.inf}}})
  writer.close()

  def refuse(token):
    raise ValueError(f"not JSON: {token}")

  (line,) = (tmp_path / "metrics.jsonl").read_text().splitlines()
  record = json.loads(line, parse_constant=refuse)
  assert record["eval_loss"] is None and record["train_loss"] == 0.5
  assert record["orthogonality"]["mean"]["sigma_max"] is None
  assert record["nonfinite"] == ["eval_loss", "orthogonality/mean/sigma_max"]


# ------------------------------------------- every input before step 1


def write_idx_dir(directory, *, train_labels=None, test_images=None,
                  test_labels=None):
  """A small IDX dataset (64 train, 16 test 28x28 images, 10 classes) with
  the given parts replaced."""
  rng = np.random.default_rng(0)
  directory.mkdir()
  test_images = (rng.integers(0, 255, (16, 28, 28), np.uint8)
                 if test_images is None else test_images)
  parts = {
      "train-images-idx3-ubyte": rng.integers(0, 255, (64, 28, 28),
                                              np.uint8),
      "train-labels-idx1-ubyte": (np.arange(64, dtype=np.uint8) % 10
                                  if train_labels is None else train_labels),
      "t10k-images-idx3-ubyte": test_images,
      "t10k-labels-idx1-ubyte": (np.arange(len(test_images), dtype=np.uint8)
                                 % 10 if test_labels is None else
                                 test_labels)}
  for name, array in parts.items():
    idx.write_idx(directory / name, array)
  return f"idx:{directory}"


@pytest.mark.parametrize("case, parts, error", [
    ("negative", {"train_labels": np.arange(64, dtype=np.int8) % 11 - 1},
     r"train-labels-idx1-ubyte: label -1 at index 0 .*integers in \[0, 10\)"),
    ("fractional", {"train_labels": np.arange(64, dtype=np.float32) % 10 +
                    0.5}, r"label 0.5 at index 0.*integers in \[0, 10\)"),
    ("too large", {"test_labels": np.full(16, 12, np.uint8)},
     r"t10k-labels-idx1-ubyte: label 12 at index 0.*integers in \[0, 10\)"),
    ("one column", {"train_labels": (np.arange(64, dtype=np.uint8) %
                                     10)[:, None]},
     r"labels have shape \(64, 1\); one label per image is allowed, shape "
     r"\(64,\)"),
    ("eval size", {"test_images": np.zeros((16, 20, 20), np.uint8)},
     r"'test' split .* images of shape \(20, 20, 1\) but the train split "
     r"\(28, 28, 1\)"),
    ("empty eval", {"test_images": np.zeros((0, 28, 28), np.uint8)},
     r"'test' split of .* is empty"),
])
def test_bad_data_fails_before_step_1(tmp_path, monkeypatch, case, parts,
                                      error):
  del case
  dataset = write_idx_dir(tmp_path / "data", **parts)
  monkeypatch.setattr(step_lib, "make_train_step", None)  # never reached
  with pytest.raises(ValueError, match=error):
    train.train_and_evaluate(tiny(dataset=dataset), tmp_path / "run")
  assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("steps", [-5, 0])
def test_num_train_steps_is_minus_one_or_positive(tmp_path, steps):
  with pytest.raises(ValueError, match=f"num_train_steps={steps!r} must be "
                     r"-1 \(num_epochs epochs\) or an int > 0"):
    train.train_and_evaluate(tiny(num_train_steps=steps), tmp_path)
  assert not list(tmp_path.iterdir())


# ------------------------------------------------- failed background saves


def test_a_failed_background_save_stops_the_run_with_one_message(
    tmp_path, monkeypatch, caplog):
  from orbax.checkpoint._src.handlers import json_checkpoint_handler  # pylint: disable=g-import-not-at-top
  save = json_checkpoint_handler.JsonCheckpointHandler._save_fn

  async def disk_full_at_step_10(self, item, directory):
    if "10.orbax-checkpoint-tmp" in str(directory):
      raise OSError(28, "No space left on device")
    return await save(self, item, directory)

  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler,
                      "_save_fn", disk_full_at_step_10)
  make_train_step, calls = step_lib.make_train_step, []

  def make(**kwargs):
    train_step = make_train_step(**kwargs)

    def counting(state, batch):
      calls.append(None)
      if len(calls) == 11:  # the failing save is over by the next step
        time.sleep(1.0)
      return train_step(state, batch)
    return counting

  monkeypatch.setattr(step_lib, "make_train_step", make)
  with caplog.at_level(logging.WARNING), pytest.raises(
      train.CheckpointSaveError,
      match=rf"step 10 to {tmp_path / 'checkpoints' / '10'} failed "
      r"\(OSError: \[Errno 28\] No space left on device\).*kept checkpoints"
      r" in .*: step 5 \(loss on the first eval batch [0-9.]+, train loss "
      r"[0-9.]+\)\. Fix the cause") as error:
    train.train_and_evaluate(tiny(num_train_steps=20,
                                  checkpoint_every_steps=5), tmp_path)
  # At a step boundary right after the failure (before step 11, or before
  # step 12 at the latest: step 11 waits for it), not at the next save (15).
  assert len(calls) in (10, 11), len(calls)
  assert error.value.__cause__ is not None
  assert not [r for r in caplog.records if r.exc_info]  # no traceback logs
