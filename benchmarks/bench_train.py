"""Train-step throughput of ACNN-Small (paper width, MNIST shape) on this CPU.

For SGD and Bort-S (Table 1's recipe: lr 0.01, wd 0.01, λ 0.1, batch 64),
times the jitted, donated ``bort_jax.train`` train step with each conv
lowering (``gemm``: the models' default on CPU, ``bort_jax.models.gemm_conv``;
``xla``: ``lax.conv_general_dilated``) and reports images/s, FLOPs per step,
the achieved FLOP/s, and that as a fraction of the float32 GEMM rate measured
in the same run:

    fraction = (FLOPs per step / step time) / GEMM FLOP/s

FLOPs per step are XLA's cost analysis of the step compiled with the ``xla``
lowering, which counts only the multiply-adds that touch the input (a 3×3 tap
on a padding zero is not counted); both lowerings are divided by that same
number. ``dense GFLOP`` counts every tap, as PyTorch's FLOP counter does.

    python -m benchmarks.bench_train [--batch_size 64] [--steps 5]
        [--repeats 3] [--lowerings gemm,xla] [--json out.json]

XLA flags are read from ``XLA_FLAGS`` as usual; pass them there to compare.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics

import jax
import ml_collections
import numpy as np
from jax import lax

from benchmarks.results import write_json
from benchmarks.timing import gemm_rate, seconds_per_step
from bort_jax.models import gemm_conv
from bort_jax.train import mesh as mesh_lib
from bort_jax.train import optimizers
from bort_jax.train import state as state_lib
from bort_jax.train import step as step_lib
from experiments import _cli


def bench_config(optimizer: str, batch_size: int) -> ml_collections.ConfigDict:
  from bort_jax.train import recipes
  config = recipes.table1("mnist", "acnn_small", optimizer)
  config.batch_size = batch_size
  return config


LOWERINGS = {"gemm": gemm_conv.conv_general_dilated,
             "xla": lax.conv_general_dilated}


def build_step(config: ml_collections.ConfigDict, lowering: str,
               image_shape=(28, 28, 1)):
  """(jitted train step, fresh state, batch) for ``config``'s model and
  optimizer, its convs lowered by ``LOWERINGS[lowering]``, on one device."""
  batch_size = config.batch_size
  mesh = mesh_lib.create_mesh(jax.devices()[:1])
  transform = optimizers.create_optimizer(config, config.learning_rate)

  def create_model():
    model = state_lib.create_model(config)
    gemm_conv.set_lowering(model, LOWERINGS[lowering])
    return model

  state, defs, shardings = state_lib.create_train_state(
      create_model, transform, mesh)
  train_step = step_lib.make_train_step(
      graphdef=defs.train, optimizer=transform, loss_name="ce",
      num_classes=config.num_classes,
      state_shardings=shardings, replicated=mesh_lib.replicated(mesh))
  rng = np.random.default_rng(0)
  batch = jax.device_put({
      "image": rng.normal(size=(batch_size,) + tuple(image_shape)).astype(
          np.float32),
      "label": rng.integers(0, config.num_classes, batch_size).astype(np.int32),
      "mask": np.ones(batch_size, bool)}, mesh_lib.batch_sharding(mesh))
  return train_step, state, batch


def step_flops(optimizer: str, lowering: str, batch_size: int) -> float:
  """XLA's cost-analysis FLOPs of the compiled step (compiled, not run)."""
  train_step, state, batch = build_step(bench_config(optimizer, batch_size),
                                        lowering)
  cost = train_step.lower(state, batch).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def time_steps(train_step, state, batch, steps: int, repeats: int
               ) -> tuple[list[float], float]:
  """Seconds per step of each of ``repeats`` runs of ``steps`` steps (after one
  compiling warm-up step), and the last loss."""
  carry = {"state": state}

  def run_steps(count):
    for _ in range(count):
      carry["state"], carry["metrics"] = train_step(carry["state"], batch)

  step_times = seconds_per_step(
      run_steps, steps, repeats, lambda: jax.block_until_ready(carry["metrics"]))
  return step_times, float(carry["metrics"]["loss"])


def time_step(optimizer: str, lowering: str, batch_size: int, steps: int,
              repeats: int) -> dict:
  step_times, loss = time_steps(
      *build_step(bench_config(optimizer, batch_size), lowering), steps, repeats)
  return {"optimizer": optimizer, "lowering": lowering,
          "step_seconds_best": min(step_times),
          "step_seconds_median": statistics.median(step_times), "loss": loss}


def comma_choices(allowed, what: str):
  """An argparse ``type``: text split on commas, an error naming any name not
  in ``allowed`` (so a bad value fails while the flags are parsed)."""

  def parse(text: str) -> list[str]:
    names = text.split(",")
    unknown = sorted(set(names) - set(allowed))
    if unknown:
      raise argparse.ArgumentTypeError(
          f"unknown {what} {unknown}; expected some of {sorted(allowed)}")
    return names

  return parse


def main(argv=None):
  parser = _cli.ArgumentParser(__doc__)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--optimizers", default="sgd,bort_sgd")
  parser.add_argument("--lowerings", default="gemm,xla",
                      type=comma_choices(LOWERINGS, "lowerings"),
                      help=f"conv lowerings to time, of {sorted(LOWERINGS)}")
  parser.add_argument("--json", default=None, help="also write results here")
  args = parser.parse_args(argv)
  lowerings = args.lowerings
  names = args.optimizers.split(",")
  # One FLOP count per optimizer, whatever the lowering timed: XLA's count of
  # the convolution-lowered step (padding taps not counted), and of the
  # im2col-lowered one (every tap counted).
  model_flops = {n: step_flops(n, "xla", args.batch_size) for n in names}
  dense_flops = {n: step_flops(n, "gemm", args.batch_size) for n in names}
  gemm_before = gemm_rate()
  results = [time_step(name, lowering, args.batch_size, args.steps,
                       args.repeats)
             for name in names for lowering in lowerings]
  gemm = max(gemm_before, gemm_rate())
  print(f"CPU: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; jax {jax.__version__}; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  print(f"GEMM float32 2048^3: {gemm / 1e9:.1f} GFLOP/s (best of 10)")
  print("| optimizer | conv lowering | images/s | GFLOP/step | dense GFLOP "
        "| GFLOP/s | fraction of GEMM (best / median) |")
  print("|---|---|---|---|---|---|---|")
  for r in results:
    r["flops_per_step"] = model_flops[r["optimizer"]]
    r["dense_flops_per_step"] = dense_flops[r["optimizer"]]
    r["images_per_sec"] = args.batch_size / r["step_seconds_best"]
    r["achieved_flops_per_sec"] = r["flops_per_step"] / r["step_seconds_best"]
    r["fraction_of_gemm"] = r["achieved_flops_per_sec"] / gemm
    r["fraction_of_gemm_median"] = (r["flops_per_step"] /
                                    r["step_seconds_median"] / gemm)
    print(f"| {r['optimizer']} | {r['lowering']} | {r['images_per_sec']:.1f} | "
          f"{r['flops_per_step'] / 1e9:.1f} | "
          f"{r['dense_flops_per_step'] / 1e9:.1f} | "
          f"{r['achieved_flops_per_sec'] / 1e9:.1f} | "
          f"{r['fraction_of_gemm']:.2f} / {r['fraction_of_gemm_median']:.2f} |")
  write_json(args.json, {"gemm_flops_per_sec": gemm,
                         "batch_size": args.batch_size,
                         "xla_flags": os.environ.get("XLA_FLAGS", ""),
                         "results": results})


if __name__ == "__main__":
  main()
