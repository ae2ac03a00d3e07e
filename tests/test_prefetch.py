"""The device prefetcher: same batches as the inline path, a position that
counts only handed-out batches, errors raised in the caller, no stray thread."""

import threading
import time

import numpy as np
import pytest

from bort_jax import data
from bort_jax.train import prefetch


def digits(train=True):
  """Digits: 2 train steps per epoch (1437 images), 6 eval batches."""
  return data.load("digits", split="train" if train else "test",
                   batch_size=512 if train else 64, train=train, seed=3, process_index=0,
                   process_count=1)


def wait_until(predicate, timeout=10.0):
  deadline = time.monotonic() + timeout
  while not predicate():
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.01)


def test_depth_must_be_a_nonnegative_int():
  for bad in (-1, 1.5, True, "2"):
    with pytest.raises(ValueError, match=rf"depth={bad!r} must be an int"):
      prefetch.Prefetcher(digits(), lambda b: b, bad)


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_same_batches_and_a_position_after_the_batches_handed_out(depth):
  source, reference = digits(), digits()
  putters = set()

  def put(batch):
    putters.add(threading.current_thread().name)
    return batch

  with prefetch.Prefetcher(source, put, depth) as batches:
    assert batches.get_state() == reference.get_state()
    for _ in range(5):  # across two epoch ends
      got, want = next(batches), next(reference)
      for key in want:
        np.testing.assert_array_equal(got[key], want[key])
      if depth:  # the producer has read ahead of what was handed out
        wait_until(lambda: source.get_state() != reference.get_state())
      assert batches.get_state() == reference.get_state()
  # put (the host -> device copy in the loop) runs in the producer thread.
  assert putters == ({"bort_jax-prefetch"} if depth else
                     {threading.current_thread().name})


@pytest.mark.parametrize("depth", [0, 2])
def test_a_finite_iterator_ends_once_and_the_thread_with_it(depth):
  want = [b["label"] for b in digits(train=False)]
  batches = prefetch.Prefetcher(digits(train=False), lambda b: b["label"],
                                depth)
  got = list(batches)
  assert len(got) == len(want) > 1
  for g, w in zip(got, want):
    np.testing.assert_array_equal(g, w)
  with pytest.raises(StopIteration):
    next(batches)
  batches.close()
  assert not [t for t in threading.enumerate()
              if t.name == "bort_jax-prefetch"]


def test_close_stops_a_producer_blocked_on_a_full_queue():
  source = digits()
  batches = prefetch.Prefetcher(source, lambda b: b, 2)
  # 2 queued + 1 waiting for room = 3 read, none handed out.
  wait_until(lambda: source.get_state() == {**source.get_state(),
                                             "epoch": 1, "step": 1})
  thread = batches._thread
  batches.close()
  assert not thread.is_alive()
  with pytest.raises(StopIteration):
    next(batches)


class _Device:

  def __init__(self, platform):
    self.platform = platform


def test_auto_depth_is_zero_on_host_cpus_and_two_on_accelerators():
  cpus, gpus = [_Device("cpu")] * 2, [_Device("gpu")] * 2
  assert prefetch.depth_for(-1, cpus) == 0
  assert prefetch.depth_for(-1, gpus) == prefetch.AUTO_DEPTH == 2
  assert prefetch.depth_for(-1, [_Device("tpu")]) == 2
  # An explicit depth is kept on any platform.
  assert prefetch.depth_for(3, cpus) == 3 and prefetch.depth_for(0, gpus) == 0
