"""How every benchmark measures time: wall-clock seconds of calls that wait for
the device, and the machine's float32 matmul rate, the baseline every
benchmark divides by."""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
  """``(seconds, result)`` of one ``fn()``, waiting for its device arrays."""
  start = time.perf_counter()
  result = jax.block_until_ready(fn())
  return time.perf_counter() - start, result


def best_seconds(fn: Callable[[], Any], repeats: int) -> float:
  """The fastest of ``repeats`` calls of ``fn()`` (compile it beforehand)."""
  return min(timed(fn)[0] for _ in range(repeats))


def seconds_per_step(run_steps: Callable[[int], None], steps: int,
                     repeats: int, sync: Callable[[], None],
                     warmup: int = 1) -> list[float]:
  """Seconds per step of each of ``repeats`` timed ``run_steps(steps)``, after
  ``run_steps(warmup)`` (compilation; none if 0); ``sync()`` waits for the
  device before the clock is read."""
  if warmup:
    run_steps(warmup)
    sync()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run_steps(steps)
    sync()
    times.append((time.perf_counter() - start) / steps)
  return times


def gemm_rate(n: int = 2048, repeats: int = 5, dtype=jnp.float32) -> float:
  """FLOP/s of an n×n×n ``dtype`` matmul (default float32) on the default
  device (best of runs)."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  matmul = jax.jit(jnp.matmul)
  last = [None]

  def run_steps(count):
    for _ in range(count):
      last[0] = matmul(a, b)

  times = seconds_per_step(run_steps, 1, repeats,
                           lambda: jax.block_until_ready(last[0]))
  return 2 * n ** 3 / min(times)

