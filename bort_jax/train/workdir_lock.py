"""One run per workdir: a lock file that process 0 holds while it trains.

``workdir/lock`` is created atomically (``O_CREAT | O_EXCL``) and holds the
holder's host, pid and start time. A second run refuses the workdir naming
the holder. A lock whose pid no longer runs on this host is stale (the holder
was killed): it is reported and taken over. A lock from another host cannot be
checked from here; the error says to delete it if that run is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import socket
import time

import jax
import numpy as np

LOCK_NAME = "lock"


class WorkdirBusyError(RuntimeError):
  """Another run holds the workdir."""


def _read_holder(path: pathlib.Path) -> dict:
  try:
    holder = json.loads(path.read_text())
  except (OSError, ValueError):  # vanished, or torn by a crash mid-write
    return {}
  return holder if isinstance(holder, dict) else {}


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


def _describe(holder: dict) -> str:
  started = holder.get("started")
  when = (time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started))
          if isinstance(started, (int, float)) else "an unknown time")
  return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
          f"since {when}")


def _create(path: pathlib.Path) -> bool:
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, "w") as f:
    json.dump({"host": socket.gethostname(), "pid": os.getpid(),
               "started": time.time()}, f)
  return True


def acquire(workdir) -> pathlib.Path:
  """Creates ``workdir/lock`` for this process; takes over a stale one.

  Raises:
    WorkdirBusyError: naming the workdir and the holder.
  """
  path = pathlib.Path(workdir) / LOCK_NAME
  if _create(path):
    return path
  holder = _read_holder(path)
  if not holder:  # maybe being written right now: look once more
    time.sleep(0.2)
    holder = _read_holder(path)
  same_host = holder.get("host") == socket.gethostname()
  if not holder or (same_host and not _is_running(holder.get("pid"))):
    logging.warning("Stale lock %s (%s, no longer running): taking it over.",
                    path, _describe(holder) if holder else "unreadable")
    path.unlink(missing_ok=True)
    if _create(path):
      return path
    holder = _read_holder(path)
  hint = ("" if holder.get("host") == socket.gethostname() else
          f" If that run is gone, delete {path}.")
  raise WorkdirBusyError(
      f"workdir {path.parent} is in use by another run ({_describe(holder)}); "
      f"two runs would interleave its checkpoints and metrics. Wait for it or "
      f"use another --workdir.{hint}")


def release(path: pathlib.Path) -> None:
  """Removes the lock if this process still holds it."""
  holder = _read_holder(path)
  if (holder.get("pid") == os.getpid()
      and holder.get("host") == socket.gethostname()):
    path.unlink(missing_ok=True)


@contextlib.contextmanager
def workdir_lock(workdir):
  """Holds ``workdir``'s lock (process 0) for the block; every process of a
  multi-host run raises :class:`WorkdirBusyError` if process 0 cannot."""
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
