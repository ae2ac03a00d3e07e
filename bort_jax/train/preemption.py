"""SIGINT / SIGTERM stop a run at a step boundary instead of killing it.

Inside :class:`StopSignals` the first SIGINT or SIGTERM only sets a flag (and
puts the previous handlers back, so a second signal acts as it did before:
KeyboardInterrupt, or termination). The loop asks :meth:`StopSignals.agreed`
at step boundaries, saves a checkpoint and raises :class:`TrainingInterrupted`.

All processes of a multi-host run must stop at the same step (a checkpoint is
a collective save) although the signal may reach only some of them. So with
more than one process the flag is all-gathered, and only at the loop's sync
steps (log, checkpoint and epoch-end steps), where the loop already waits for
the device: no extra host round-trip on ordinary steps. One process never
communicates and stops at the very next step.
"""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_INTERRUPTED = 75  # sysexits.h EX_TEMPFAIL: the exit status of a CLI stopped by one


class TrainingInterrupted(Exception):
  """The run stopped on a signal after saving a checkpoint at ``step``."""

  def __init__(self, message: str, *, step: int, signal_name: str):
    super().__init__(message)
    self.step = step
    self.signal_name = signal_name


class StopSignals:
  """Context manager: SIGINT/SIGTERM request a stop instead of ending Python.

  Handlers can only be set from the main thread; elsewhere signals keep their
  handlers and a stop is never requested.
  """

  def __init__(self):
    self.signal_name = None
    self._previous = {}

  @property
  def requested(self) -> bool:
    return self.signal_name is not None

  def _handle(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name
    self._restore()

  def _restore(self):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
    return self

  def __exit__(self, *exc_info):
    self._restore()

  def agreed(self, sync_step: bool) -> bool:
    """Whether every process stops after this step.

    Args:
      sync_step: the step is one at which every process calls this with
        ``sync_step=True`` (only then do several processes communicate).
    """
    if jax.process_count() == 1:
      return self.requested
    if not sync_step:
      return False
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.int32(self.requested))
    return bool(np.max(flags))
