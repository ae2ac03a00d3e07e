"""The workdir lock under races: two processes released together by a barrier
against a stale lock (a dead pid, or a live pid that another process now
owns) never both get it."""

import json
import multiprocessing
import os
import pathlib
import socket
import subprocess

import pytest

from bort_jax.train import workdir_lock

ROUNDS = 100


def _race(workdirs, barrier, results):
  """One contender: in each round, try the round's workdir at the barrier,
  hold what it got until the other has tried too, then let it go."""
  got = []
  for workdir in workdirs:
    barrier.wait()
    try:
      path = workdir_lock.acquire(workdir)
    except workdir_lock.WorkdirBusyError:
      path = None
    barrier.wait()  # both have tried while a winner still holds it
    got.append(path is not None)
    if path is not None:
      workdir_lock.release(path)
  results.put((os.getpid(), got))


def _stale_lock(workdir: pathlib.Path, **holder):
  workdir.mkdir()
  (workdir / "lock").write_text(json.dumps(
      {"host": socket.gethostname(), "started": 0.0, **holder}))


def _dead_pid() -> int:
  finished = subprocess.Popen(["true"])
  finished.wait()
  return finished.pid


@pytest.mark.parametrize("holder", ["dead pid", "reused live pid"])
def test_two_processes_never_both_take_over_a_stale_lock(tmp_path, holder):
  dead = _dead_pid()
  workdirs = [tmp_path / str(r) for r in range(ROUNDS)]
  for workdir in workdirs:
    if holder == "dead pid":
      _stale_lock(workdir, pid=dead)
    else:  # pid 1 runs, but is not the process that wrote the lock
      _stale_lock(workdir, pid=1, pid_start=workdir_lock._start_ticks(1) + 7,
                  boot_id=workdir_lock._boot_id())
  context = multiprocessing.get_context("spawn")
  barrier, results = context.Barrier(2), context.Queue()
  racers = [context.Process(target=_race, args=(workdirs, barrier, results))
            for _ in range(2)]
  for racer in racers:
    racer.start()
  got = [results.get(timeout=120)[1] for _ in racers]
  for racer in racers:
    racer.join(timeout=30)
  winners = [a + b for a, b in zip(*got)]
  assert winners == [1] * ROUNDS, winners  # never both, never neither
  assert not any((w / "lock").exists() for w in workdirs)  # released


def test_a_live_holder_is_refused_with_how_to_clear_it(tmp_path):
  path = workdir_lock.acquire(tmp_path)
  holder = json.loads(path.read_text())
  assert holder["pid"] == os.getpid()
  assert holder["pid_start"] == workdir_lock._start_ticks(os.getpid())
  with pytest.raises(workdir_lock.WorkdirBusyError,
                     match=f"pid {os.getpid()} .*another --workdir. If that "
                     f"run is gone, delete {path}"):
    workdir_lock.acquire(tmp_path)
  workdir_lock.release(path)
  assert not path.exists()
  workdir_lock.release(workdir_lock.acquire(tmp_path))
