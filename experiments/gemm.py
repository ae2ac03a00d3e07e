"""The machine's float32 matmul rate: the baseline every benchmark divides by."""

import time

import jax
import jax.numpy as jnp


def gemm_rate(n: int = 2048, repeats: int = 5) -> float:
  """float32 FLOP/s of an n×n×n matmul on the default device (best of runs)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  jax.block_until_ready(matmul(a, b))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a, b))
    times.append(time.perf_counter() - start)
  return 2 * n ** 3 / min(times)
