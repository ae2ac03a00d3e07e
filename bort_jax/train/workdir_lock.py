"""One run per workdir: a lock file that process 0 holds while it trains.

The holder keeps ``workdir/lock`` open with an exclusive ``fcntl.flock``: the
kernel decides atomically which of two racing runs gets it, and releases it
when the holder exits, however it dies (kill -9 included). The file holds the
holder's host, pid, the pid's start time (``/proc/<pid>/stat``) and the boot
id, only to name the holder in messages and to judge a lock written by a run
the flock cannot speak for (another host, or a filesystem without locks): a
same-host holder whose pid is gone, or whose pid now belongs to another
process (a restarted container where the run is pid 1 again), is stale and
taken over. A second run refuses the workdir naming the holder and how to
clear the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import pathlib
import socket
import time

import numpy as np

LOCK_NAME = "lock"


class WorkdirBusyError(RuntimeError):
  """Another run holds the workdir."""


def _boot_id() -> str | None:
  try:
    return pathlib.Path("/proc/sys/kernel/random/boot_id").read_text().strip()
  except OSError:
    return None


def _start_ticks(pid: int) -> int | None:
  """The start time of ``pid`` in clock ticks after boot (field 22 of
  ``/proc/<pid>/stat``), None if it does not run or /proc is absent."""
  try:
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
  except OSError:
    return None
  # The command name (field 2) is in parentheses and may hold spaces.
  return int(stat.rsplit(")", 1)[1].split()[19])


def _me() -> dict:
  return {"host": socket.gethostname(), "pid": os.getpid(),
          "pid_start": _start_ticks(os.getpid()), "boot_id": _boot_id(),
          "started": time.time()}


def _is_running(pid) -> bool:
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # runs, as another user
    return True
  return True


def _is_alive(holder: dict) -> bool:
  """Whether the same-host ``holder`` still runs: its pid runs, in this boot,
  and (when recorded) started when the holder did."""
  pid = holder.get("pid")
  if not _is_running(pid):
    return False
  if holder.get("boot_id") not in (None, _boot_id()):
    return False
  recorded = holder.get("pid_start")
  return recorded is None or recorded == _start_ticks(pid)


def _read_holder(path: pathlib.Path) -> dict:
  try:
    holder = json.loads(path.read_text())
  except (OSError, ValueError):  # vanished, empty, or torn by a crash
    return {}
  return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
  started = holder.get("started")
  when = (time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started))
          if isinstance(started, (int, float)) else "an unknown time")
  return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
          f"since {when}")


def _busy(path: pathlib.Path, holder: dict) -> WorkdirBusyError:
  return WorkdirBusyError(
      f"workdir {path.parent} is in use by another run ({_describe(holder)});"
      f" two runs would interleave its checkpoints and metrics. Wait for it, "
      f"stop it, or use another --workdir. If that run is gone, delete "
      f"{path}.")


def _open_locked(path: pathlib.Path):
  """``(fd, locked)``: ``path`` opened, with our flock when ``locked``
  (False: held by another; None: the filesystem has no locks)."""
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      return fd, False
    except OSError as e:
      if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
        os.close(fd)
        raise
      logging.warning("%s: the filesystem does not support flock (%s); two "
                      "runs started at the same moment are not kept apart.",
                      path, e)
      return fd, None
    # The previous holder unlinks the file before releasing it: a lock on
    # the unlinked file is worth nothing, open the new one.
    try:
      if os.stat(path).st_ino == os.fstat(fd).st_ino:
        return fd, True
    except FileNotFoundError:
      pass
    os.close(fd)


# Locks this process holds: path -> the descriptor that carries the flock.
_HELD: dict[pathlib.Path, int] = {}


def acquire(workdir) -> pathlib.Path:
  """Locks ``workdir/lock`` for this process; takes over a stale one.

  Returns the lock's path; the lock is held until :func:`release` of it or
  this process's exit.

  Raises:
    WorkdirBusyError: naming the workdir, the holder and how to clear it.
  """
  path = pathlib.Path(workdir) / LOCK_NAME
  fd, locked = _open_locked(path)
  if locked is False:
    os.close(fd)
    raise _busy(path, _read_holder(path))
  try:
    holder = _read_holder(path)
    if holder:
      if holder.get("host") != socket.gethostname() or _is_alive(holder):
        # Another host (its flock may not reach us) or a live holder that
        # does not flock: only a person can tell it is gone.
        raise _busy(path, holder)
      logging.warning("Stale lock %s (%s, no longer running): taking it "
                      "over.", path, _describe(holder))
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(_me()).encode(), 0)
  except BaseException:
    os.close(fd)
    raise
  _HELD[path] = fd
  return path


def release(path: pathlib.Path) -> None:
  """Removes the lock file and lets the lock go, if this process holds it."""
  holder = _read_holder(path)
  if (holder.get("pid") == os.getpid()
      and holder.get("host") == socket.gethostname()):
    path.unlink(missing_ok=True)  # before the flock goes: see _open_locked
  fd = _HELD.pop(path, None)
  if fd is not None:
    os.close(fd)


@contextlib.contextmanager
def workdir_lock(workdir):
  """Holds ``workdir``'s lock (process 0) for the block; every process of a
  multi-host run raises :class:`WorkdirBusyError` if process 0 cannot."""
  import jax  # pylint: disable=g-import-not-at-top
  path, error = None, None
  if jax.process_index() == 0:
    try:
      path = acquire(workdir)
    except WorkdirBusyError as e:
      error = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    locked = multihost_utils.broadcast_one_to_all(np.int32(error is None))
    if not locked and error is None:
      error = WorkdirBusyError(f"process 0 could not lock workdir {workdir}; "
                               f"see its log for the holder.")
  if error is not None:
    raise error
  try:
    yield
  finally:
    if path is not None:
      release(path)
