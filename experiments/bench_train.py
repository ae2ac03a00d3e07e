"""Train-step throughput of ACNN-Small (paper width, MNIST shape) on this CPU.

For SGD and Bort-S (Table 1's recipe: lr 0.01, wd 0.01, λ 0.1, batch 64),
times the jitted, donated ``bort_jax.train`` train step and reports images/s,
the step's FLOPs from XLA's cost analysis, the achieved FLOP/s, and that as a
fraction of the float32 GEMM rate measured in the same run:

    fraction = (FLOPs per step / step time) / GEMM FLOP/s

    python -m experiments.bench_train [--batch_size 64] [--steps 5]
        [--repeats 3] [--json out.json]

XLA flags are read from ``XLA_FLAGS`` as usual; pass them there to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import ml_collections
import numpy as np

from bort_jax.train import mesh as mesh_lib
from bort_jax.train import optimizers
from bort_jax.train import state as state_lib
from bort_jax.train import step as step_lib
from experiments.gemm import gemm_rate


def bench_config(optimizer: str, batch_size: int) -> ml_collections.ConfigDict:
  from experiments.configs import recipes
  config = recipes.table1("mnist", "acnn_small", optimizer)
  config.batch_size = batch_size
  return config


def bench_optimizer(optimizer: str, batch_size: int, steps: int,
                    repeats: int) -> dict:
  config = bench_config(optimizer, batch_size)
  mesh = mesh_lib.create_mesh(jax.devices()[:1])
  transform = optimizers.create_optimizer(config, config.learning_rate)
  state, defs, shardings = state_lib.create_train_state(
      lambda: state_lib.create_model(config), transform, mesh)
  train_step = step_lib.make_train_step(
      graphdef=defs.train, optimizer=transform, loss_name="ce",
      num_classes=10, label_smoothing=0.0, state_shardings=shardings,
      replicated=mesh_lib.replicated(mesh))
  rng = np.random.default_rng(0)
  batch = jax.device_put({
      "image": rng.normal(size=(batch_size, 28, 28, 1)).astype(np.float32),
      "label": rng.integers(0, 10, batch_size).astype(np.int32),
      "mask": np.ones(batch_size, bool)}, mesh_lib.batch_sharding(mesh))
  compiled = train_step.lower(state, batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost["flops"])
  state, metrics = train_step(state, batch)  # warm-up
  jax.block_until_ready(metrics)
  step_times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = train_step(state, batch)
    jax.block_until_ready(metrics)
    step_times.append((time.perf_counter() - start) / steps)
  return {"optimizer": optimizer, "flops_per_step": flops,
          "step_seconds_best": min(step_times),
          "step_seconds_median": statistics.median(step_times),
          "loss": float(metrics["loss"])}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--optimizers", default="sgd,bort_sgd")
  parser.add_argument("--json", default=None, help="also write results here")
  args = parser.parse_args()

  gemm_before = gemm_rate()
  results = [bench_optimizer(name, args.batch_size, args.steps, args.repeats)
             for name in args.optimizers.split(",")]
  gemm = max(gemm_before, gemm_rate())
  print(f"CPU: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; jax {jax.__version__}; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  print(f"GEMM float32 2048^3: {gemm / 1e9:.1f} GFLOP/s (best of 10)")
  print("| optimizer | images/s | GFLOP/step | GFLOP/s | fraction of GEMM |")
  print("|---|---|---|---|---|")
  for r in results:
    r["images_per_sec"] = args.batch_size / r["step_seconds_best"]
    r["achieved_flops_per_sec"] = r["flops_per_step"] / r["step_seconds_best"]
    r["fraction_of_gemm"] = r["achieved_flops_per_sec"] / gemm
    r["fraction_of_gemm_median"] = (r["flops_per_step"] /
                                    r["step_seconds_median"] / gemm)
    print(f"| {r['optimizer']} | {r['images_per_sec']:.1f} | "
          f"{r['flops_per_step'] / 1e9:.1f} | "
          f"{r['achieved_flops_per_sec'] / 1e9:.1f} | "
          f"{r['fraction_of_gemm']:.2f} (median {r['fraction_of_gemm_median']:.2f}) |")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"gemm_flops_per_sec": gemm, "batch_size": args.batch_size,
                 "xla_flags": os.environ.get("XLA_FLAGS", ""),
                 "results": results}, f, indent=2)


if __name__ == "__main__":
  main()
