"""What a width floor (``min_channels``) costs the demo's ACNN-Small training.

The demo (``experiments/configs/quickstart.py``) trains ACNN-Small at width
×0.125 on digits; a floor widens only its narrow layers (conv1, conv2), whose
convs are cheap next to conv5's. For each floor in ``--floors`` (1 is no
floor), on the demo's own run configs (SGD and Bort-S), this times:

* ``step``: the jitted train step (``experiments.bench_train.build_step``,
  batch of the demo's size), best of ``--step_repeats`` timings of
  ``--steps`` steps, in wall and in process CPU time, and XLA's cost analysis
  of it (FLOPs and bytes accessed: load-independent);
* ``run`` (skipped with ``--repeats 0``): a whole
  ``bort_jax.train.train_and_evaluate`` of ``--epochs`` epochs, split into
  compile / train steps / evaluation / diagnostics / rest
  (``experiments.bench_goodput``), and projected to the demo's epochs as
  ``fixed + (total - fixed) · demo epochs / epochs``, where ``fixed`` is
  compile and ``other`` (model/state creation, data loading, logging: paid
  about once per run).

With ``--parts explain``, the explain part of the demo on ACNN-Small:
every registered report analysis's ``measure`` (what ``report.build`` runs;
no plots or claims) on the SGD and Bort-S runs trained ``--explain_steps``
steps only (the cost depends on shapes, not weights), JAX's caches cleared
first so compilation counts as in a fresh ``make demo``.

Floors and optimizers are interleaved within each repeat; each time is the
best of ``--repeats``; ratios are to the first floor, measured in the same
run. The load average is printed: on a shared machine absolute times inflate,
the ratios less so.

    python -m experiments.bench_demo_width [--floors 1,8,16] [--repeats 3]
        [--steps 5] [--step_repeats 20] [--epochs 2] [--parts train,explain]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time

import jax

from bort_jax import report
from bort_jax.report import runs as runs_lib
from bort_jax.report.build import _context  # pylint: disable=protected-access
from bort_jax.train import state as state_lib
from experiments import bench_goodput
from experiments import bench_train
from experiments import quickstart
from experiments.configs import quickstart as quickstart_config

MODEL = "acnn_small_mnist"


def run_config(optimizer: str, floor: int, epochs: float | None = None):
  """The demo's ACNN-Small run config for ``optimizer``, with ``floor``."""
  config = quickstart_config.get_config()
  run = quickstart.run_config(config, MODEL, optimizer)
  run.model_overrides = {**run.model_overrides, "min_channels": floor}
  run.progress = False
  if epochs is not None:
    run.num_epochs = epochs
  return run


def step_runner(train_step, state, batch):
  """``(run_steps(count), sync(), cost)`` stepping one donated state forward;
  ``cost`` is XLA's cost analysis of the compiled step (FLOPs, bytes)."""
  cost = train_step.lower(state, batch).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  carry = {"state": state}

  def run_steps(count):
    for _ in range(count):
      carry["state"], carry["metrics"] = train_step(carry["state"], batch)

  run_steps(1)  # compile
  return (run_steps, lambda: jax.block_until_ready(carry["metrics"]),
          {"flops": float(cost["flops"]),
           "bytes": float(cost["bytes accessed"])})


def channels(floor: int) -> tuple[int, ...]:
  model = jax.eval_shape(lambda: state_lib.create_model(
      run_config("sgd", floor)))
  return tuple(model.conv(n).kernel.shape[-1] for n in model.layer_names)


def explain_runs(workdir: str, optimizers, floor: int, steps: int):
  """``(context, [Run])`` of the demo's ACNN-Small runs with ``floor``,
  trained ``steps`` steps, as ``report.build`` sees them."""
  configs = {}
  for opt in optimizers:
    configs[f"{opt}_min{floor}"] = run_config(opt, floor)
    configs[f"{opt}_min{floor}"].num_train_steps = steps
  run_dirs, _ = quickstart.train_runs(configs, workdir)
  (key, group), = runs_lib.group_runs(run_dirs).items()
  first_config = configs[f"{optimizers[0]}_min{floor}"]
  explain = quickstart_config.explain_config()
  images, labels, _ = runs_lib.test_images(first_config, explain.num_images)
  ctx = _context(key, group, images, labels, explain, first_config)
  return ctx, [report.Run(run_dir=d, model=m, config=c,
                          metrics=runs_lib.read_metrics(d), measured={})
               for items in group["runs"].values() for d, m, c in items]


def explain_seconds(ctx, runs) -> float:
  """Seconds of every registered analysis's ``measure`` on ``runs``, in
  registry order, compilation included."""
  jax.clear_caches()
  start = time.perf_counter()
  for run in runs:
    run = dataclasses.replace(run, measured={})
    for analysis in report.REGISTRY.values():
      run.measured[analysis.id] = jax.block_until_ready(
          analysis.measure(run, ctx))
  return time.perf_counter() - start


def step_seconds(run_steps, sync, steps: int) -> tuple[float, float]:
  """(wall, process CPU) seconds per step of ``run_steps(steps)``. CPU time
  counts the work of all of XLA's threads and not the time spent waiting for
  other processes, so it survives a shared machine better than wall time."""
  wall, cpu = time.perf_counter(), time.process_time()
  run_steps(steps)
  sync()
  return ((time.perf_counter() - wall) / steps,
          (time.process_time() - cpu) / steps)


def time_training(args, floors, optimizers, loads) -> list[dict]:
  """Step and whole-run times per (optimizer, floor), printed as a table."""
  cases = [(opt, floor) for opt in optimizers for floor in floors]
  demo_epochs = quickstart_config.train_config().num_epochs
  steppers = {case: step_runner(*bench_train.build_step(run_config(*case),
                                                        "gemm"))
              for case in cases}
  step_s = {case: (float("inf"), float("inf")) for case in cases}
  run_s = {case: None for case in cases}
  for _ in range(args.step_repeats):
    for case in cases:  # floors interleaved
      run_steps, sync, _ = steppers[case]
      wall, cpu = step_seconds(run_steps, sync, args.steps)
      step_s[case] = (min(step_s[case][0], wall), min(step_s[case][1], cpu))
  loads.append(os.getloadavg())
  for _ in range(args.repeats):
    for case in cases:
      with tempfile.TemporaryDirectory() as workdir:
        result = bench_goodput.run(run_config(*case, args.epochs), workdir)
      if run_s[case] is None or result["total_s"] < run_s[case]["total_s"]:
        run_s[case] = result
    loads.append(os.getloadavg())

  print(f"| optimizer | min_channels | channels conv1..5 | step GFLOP, MB "
        f"accessed (XLA) | vs {floors[0]} | step ms wall, CPU | vs {floors[0]} "
        f"| {args.epochs:g}-epoch run s (compile, steps, eval, diagnostics, "
        f"other) | projected {demo_epochs:g} epochs s | vs {floors[0]} |")
  print("|---|---:|---|---|---|---|---|---|---:|---:|")
  rows = []
  for opt, floor in cases:
    row = {"optimizer": opt, "min_channels": floor,
           "channels": channels(floor), "cost": steppers[(opt, floor)][2],
           "step_s": step_s[(opt, floor)][0],
           "step_cpu_s": step_s[(opt, floor)][1]}
    result = run_s[(opt, floor)]
    if result is not None:
      parts = result["seconds"]
      fixed = parts["compile"] + parts["other"]
      row["run"] = result
      row["projected_demo_s"] = fixed + ((result["total_s"] - fixed)
                                         * demo_epochs / args.epochs)
    rows.append(row)
    base = rows[[r["optimizer"] for r in rows].index(opt)]
    cost, base_cost = row["cost"], base["cost"]
    line = (f"| {opt} | {floor} | {', '.join(map(str, row['channels']))} | "
            f"{cost['flops'] / 1e9:.3f}, {cost['bytes'] / 1e6:.1f} | "
            f"{cost['flops'] / base_cost['flops']:.3f}x, "
            f"{cost['bytes'] / base_cost['bytes']:.3f}x | "
            f"{1e3 * row['step_s']:.2f}, {1e3 * row['step_cpu_s']:.2f} | "
            f"{row['step_s'] / base['step_s']:.3f}x, "
            f"{row['step_cpu_s'] / base['step_cpu_s']:.3f}x | ")
    if result is None:
      line += "– | – | – |"
    else:
      line += (f"{result['total_s']:.1f} ({parts['compile']:.1f}, "
               f"{parts['train_steps']:.1f}, {parts['evaluation']:.1f}, "
               f"{parts['diagnostics']:.1f}, {parts['other']:.1f}) | "
               f"{row['projected_demo_s']:.0f} | "
               f"{row['projected_demo_s'] / base['projected_demo_s']:.3f}x |")
    print(line)
  if args.repeats:
    first = sum(r["projected_demo_s"] for r in rows
                if r["min_channels"] == floors[0])
    for floor in floors:
      total = sum(r["projected_demo_s"] for r in rows
                  if r["min_channels"] == floor)
      print(f"min_channels={floor}: {' + '.join(optimizers)} projected "
            f"{total:.0f} s ({total / first:.3f}x min_channels={floors[0]})")
  return rows


def time_explain(args, floors, optimizers, loads) -> dict:
  """Best-of seconds of the explain part per floor, printed."""
  best = dict.fromkeys(floors, float("inf"))
  with tempfile.TemporaryDirectory() as workdir:
    models = {floor: explain_runs(os.path.join(workdir, str(floor)),
                                  optimizers, floor, args.explain_steps)
              for floor in floors}
    for _ in range(args.repeats):
      for floor in floors:  # interleaved
        best[floor] = min(best[floor], explain_seconds(*models[floor]))
      loads.append(os.getloadavg())
  for floor in floors:
    print(f"explain part (every analysis's measure, {' + '.join(optimizers)} "
          f"runs, compile included), min_channels={floor}: "
          f"{best[floor]:.1f} s ({best[floor] / best[floors[0]]:.3f}x "
          f"min_channels={floors[0]})")
  return best


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--parts", default="train",
                      help="comma list of 'train' and 'explain'")
  parser.add_argument("--floors", default="1,8,16")
  parser.add_argument("--optimizers", default="sgd,bort_sgd")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--steps", type=int, default=5,
                      help="train steps per step timing")
  parser.add_argument("--step_repeats", type=int, default=20,
                      help="step timings per case (best kept)")
  parser.add_argument("--epochs", type=float, default=2.0)
  parser.add_argument("--explain_steps", type=int, default=2)
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  parts = bench_train.comma_list(parser, args.parts, ("train", "explain"),
                                 "parts")
  floors = [int(f) for f in args.floors.split(",")]
  optimizers = args.optimizers.split(",")
  config = run_config(optimizers[0], floors[0])
  loads = [os.getloadavg()]
  print(f"ACNN-Small x{config.model_overrides['width_multiplier']:g} on "
        f"{config.dataset}, batch {config.batch_size}; best of {args.repeats}, "
        f"floors interleaved")
  results = {"argv": vars(args), "loads": loads}
  if "train" in parts:
    results["train"] = time_training(args, floors, optimizers, loads)
  if "explain" in parts:
    results["explain"] = time_explain(args, floors, optimizers, loads)
  print("load average at the start and after each repeat: "
        f"{[tuple(round(x, 2) for x in l) for l in loads]}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
