"""Cost of the Bort term: a Bort-S update vs the same SGD update, under jit.

For each model's parameters, times one jitted, donated optimizer step of
``bort_sgd`` and of ``optax.sgd`` with the same momentum and weight decay, and
compares the overhead with what the Bort term must cost at this machine's GEMM
rate, measured in the same run:

    ratio = (t_bort − t_sgd) / (FLOPs_bort / GEMM rate),
    FLOPs_bort = Σ_kernels 2·2·min(m, n)·m·n     (Gram on the smaller side).

A ratio near 1 means the term runs at matmul speed with no extra passes.

It also times ``bort_jax.orthogonality_stats`` of the same parameters, jitted,
and prints it as a multiple of one Bort-S update (``stats/bort``, the same
run): what a diagnostics call costs the training loop.

    python -m benchmarks.bench_optimizer [--models acnn_small_mnist,resnet50]
"""

from __future__ import annotations

import functools
import platform

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks.bench_train import comma_choices
from benchmarks.results import write_json
from benchmarks.timing import gemm_rate, seconds_per_step
import bort_jax
from bort_jax import models
from experiments import _cli


def model_params(name: str, width: float = 1.0):
  """Random float32 params with the shapes of a registered model at
  ``width`` of its width."""
  abstract = nnx.eval_shape(
      lambda: models.create(name, num_classes=10 if "acnn_small" in name
                            else 1000, rngs=nnx.Rngs(0),
                            width_multiplier=width))
  shapes = nnx.as_pure(nnx.state(abstract, nnx.Param))
  leaves, treedef = jax.tree.flatten(shapes)
  keys = jax.random.split(jax.random.key(0), len(leaves))
  return treedef.unflatten([
      0.05 * jax.random.normal(k, l.shape, jnp.float32)
      for k, l in zip(keys, leaves)])


def bort_flops(params) -> float:
  mask = bort_jax.default_mask(params)
  dims = bort_jax.optim.default_dimension_numbers(params)
  total = 0.0
  for leaf, selected, dim in zip(
      jax.tree.leaves(params), jax.tree.leaves(mask),
      jax.tree.leaves(dims, is_leaf=lambda x: isinstance(
          x, bort_jax.BortDimensionNumbers))):
    if selected:
      fan_in, out = bort_jax.kernels.matrix_view(leaf, dim)[0].shape[-2:]
      total += 4.0 * min(out, fan_in) * out * fan_in
  return total


def time_update(tx, params, repeats: int) -> float:
  """Best-of-runs seconds of one jitted optimizer step, params and state donated.

  The minimum, not the median, so that other load on a shared machine shows
  up as little as possible; the GEMM rate is measured the same way.
  """

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  grads = jax.tree.map(lambda p: 0.01 * jnp.ones_like(p), params)
  params = jax.tree.map(jnp.copy, params)
  state = tx.init(params)
  carry = [params, state]

  def run_steps(count):
    for _ in range(count):
      carry[0], carry[1] = step(carry[0], carry[1], grads)

  return min(seconds_per_step(run_steps, 1, repeats,
                              lambda: jax.block_until_ready(carry[0])))


def time_stats(params, repeats: int) -> float:
  """Best-of-runs seconds of one jitted ``orthogonality_stats`` call."""
  stats = jax.jit(bort_jax.orthogonality_stats)
  out = [None]

  def run_steps(count):
    for _ in range(count):
      out[0] = stats(params)

  return min(seconds_per_step(run_steps, 1, repeats,
                              lambda: jax.block_until_ready(out[0])))


def bench(name: str, repeats: int, width: float = 1.0) -> dict:
  params = model_params(name, width)
  rate = gemm_rate()
  lr, lam, momentum, wd = 0.01, 0.1, 0.9, 1e-4
  sgd = optax.chain(optax.add_decayed_weights(wd, bort_jax.default_mask),
                    optax.sgd(lr, momentum=momentum))
  bort = bort_jax.bort_sgd(lr, lam=lam, momentum=momentum, weight_decay=wd)
  t_sgd = time_update(sgd, params, repeats)
  t_bort = time_update(bort, params, repeats)
  t_stats = time_stats(params, repeats)
  flops = bort_flops(params)
  ideal = flops / rate
  return {
      "model": name,
      "width": width,
      "gemm_gflops": rate / 1e9,
      "params": int(sum(x.size for x in jax.tree.leaves(params))),
      "kernels": int(sum(jax.tree.leaves(bort_jax.default_mask(params)))),
      "sgd_ms": 1e3 * t_sgd,
      "bort_sgd_ms": 1e3 * t_bort,
      "overhead_ms": 1e3 * (t_bort - t_sgd),
      "bort_gflop": flops / 1e9,
      "ideal_ms": 1e3 * ideal,
      "ratio": (t_bort - t_sgd) / ideal,
      "stats_ms": 1e3 * t_stats,
      "stats_over_bort": t_stats / t_bort,
  }


def main(argv=None):
  parser = _cli.ArgumentParser(__doc__)
  parser.add_argument("--models", default="acnn_small_mnist,resnet50",
                      type=comma_choices(models.NAMES, "models"))
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--width", type=float, default=1.0,
                      help="the models' width_multiplier (1.0: paper width)")
  parser.add_argument("--json", default=None, help="also write results here")
  args = parser.parse_args(argv)

  print(f"device: {jax.devices()[0].device_kind} ({platform.machine()}, "
        f"{jax.device_count()} device(s)); jax {jax.__version__}; GEMM rate: "
        "float32 2048³ matmul, measured before each model")
  header = (f"{'model':<18}{'params':>12}{'kernels':>9}{'GEMM GF/s':>10}"
            f"{'sgd ms':>10}"
            f"{'bort ms':>10}{'overhead':>10}{'GFLOP':>9}{'ideal ms':>10}"
            f"{'ratio':>7}{'stats ms':>10}{'stats/bort':>11}")
  print(header)
  rows = []
  for name in args.models:
    row = bench(name, args.repeats, args.width)
    rows.append(row)
    print(f"{row['model']:<18}{row['params']:>12,}{row['kernels']:>9}"
          f"{row['gemm_gflops']:>10.1f}"
          f"{row['sgd_ms']:>10.2f}{row['bort_sgd_ms']:>10.2f}"
          f"{row['overhead_ms']:>10.2f}{row['bort_gflop']:>9.2f}"
          f"{row['ideal_ms']:>10.2f}{row['ratio']:>7.2f}"
          f"{row['stats_ms']:>10.2f}{row['stats_over_bort']:>11.2f}")
  write_json(args.json, {"device": jax.devices()[0].device_kind, "rows": rows})


if __name__ == "__main__":
  main()
