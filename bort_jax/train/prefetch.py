"""Device prefetch: the next batches are loaded and put on the devices by a
background thread while the loop runs steps, evaluates or checkpoints.

:class:`Prefetcher` wraps a resumable iterator (``next``, ``get_state``) and
a ``put`` function (numpy batch → global arrays). Its ``get_state`` is the
position after the last batch it HANDED OUT, not the last one it prefetched,
so a checkpoint taken between steps resumes exactly where the loop was. With
``depth=0`` it calls ``next`` and ``put`` inline, in the caller's thread.

Safe with several processes: the producer only reads local data and calls
``put`` (``jax.make_array_from_process_local_data`` assembles the global
array from this process's shard without communicating); every collective
stays in the loop's thread.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

# Seconds between checks of the stop flag while the queue is full.
_POLL_S = 0.05
# What ``prefetch_batches=-1`` (auto) means on accelerators.
AUTO_DEPTH = 2


def depth_for(prefetch_batches: int, devices) -> int:
  """The prefetch depth of a run: ``prefetch_batches`` itself when >= 0;
  for -1 (auto) :data:`AUTO_DEPTH` unless every device is the host's CPU,
  then 0: there the producer thread's augmentation takes cores from the step
  itself (a 2-core digits run: wall clock x1.12 with depth 2,
  benchmarks.bench_goodput in BENCHMARKS.md)."""
  if prefetch_batches != -1:
    return prefetch_batches
  on_cpu = all(device.platform == "cpu" for device in devices)
  return 0 if on_cpu else AUTO_DEPTH


class _End:
  """The source iterator is exhausted (eval splits end; train never does)."""


class _Failed:

  def __init__(self, error: BaseException):
    self.error = error


class Prefetcher:
  """Iterator of ``put(next(iterator))``, ``depth`` batches ahead.

  Use as a context manager (or call :meth:`close`): closing stops and joins
  the producer thread. An exception raised by ``next`` or ``put`` in the
  producer is raised again by the ``next`` call that would have returned
  that batch, with the producer's traceback.
  """

  def __init__(self, iterator, put: Callable[[Any], Any], depth: int):
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
      raise ValueError(f"prefetch depth={depth!r} must be an int >= 0 (0: "
                       f"load each batch inline when it is needed).")
    self._iterator = iterator
    self._put = put
    self.depth = depth
    self._state = iterator.get_state()
    self._done = False
    self._stop = threading.Event()
    self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    self._thread = None
    if depth:
      self._thread = threading.Thread(target=self._produce, daemon=True,
                                      name="bort_jax-prefetch")
      self._thread.start()

  @property
  def steps_per_epoch(self) -> int:
    return self._iterator.steps_per_epoch

  def get_state(self) -> dict:
    """The source iterator's position after the last batch handed out."""
    return dict(self._state)

  def _offer(self, item) -> bool:
    """Queues ``item`` unless closed first; whether it was queued."""
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=_POLL_S)
        return True
      except queue.Full:
        continue
    return False

  def _advance(self):
    """The next placed batch and the position after it, read in the thread
    that advances the iterator (so the position travels with its batch);
    StopIteration at the end."""
    batch = next(self._iterator)
    return self._put(batch), self._iterator.get_state()

  def _produce(self):
    try:
      while not self._stop.is_set():
        try:
          item = self._advance()
        except StopIteration:
          self._offer(_End())
          return
        if not self._offer(item):
          return
    except BaseException as e:  # pylint: disable=broad-except
      self._offer(_Failed(e))

  def __iter__(self):
    return self

  def __next__(self):
    if self._done:
      raise StopIteration
    if not self._thread:
      try:
        batch, self._state = self._advance()
      except StopIteration:
        self._done = True
        raise
      return batch
    item = self._queue.get()
    if isinstance(item, _End):
      self._done = True
      raise StopIteration
    if isinstance(item, _Failed):
      self._done = True
      raise item.error
    batch, self._state = item
    return batch

  def close(self) -> None:
    """Stops the producer and waits for it (at most the batch in progress).
    Idempotent; batches prefetched but not handed out are dropped."""
    self._stop.set()  # a producer waiting for room sees it within _POLL_S
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    self._done = True

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()
