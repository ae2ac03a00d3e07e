"""What one report analysis costs in the demo, at several values of one
explain setting (default: Fig. 6c at 16 and 64 adversarial pairs).

Trains the demo's four runs (``experiments/configs/quickstart.py``: LeNet and
ACNN-Small ×0.125, SGD and Bort-S on digits) for ``--steps`` steps only: what
an analysis costs depends on the shapes, not on the weights. Then times the
analysis's ``measure`` on all four runs as ``report.build`` calls it, once per
value, the values interleaved, best of ``--repeats``. JAX's caches are
cleared before each timing, so every time includes compilation, as in a fresh
``make demo``. Prints seconds per value, the ratio to the first value and the
load average (a shared machine inflates both times; the ratio survives better).

    python -m experiments.bench_report [--analysis fig6c]
        [--field adversarial_pairs] [--values 16,64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import jax

from bort_jax import report
from bort_jax.report.build import _context  # pylint: disable=protected-access
from bort_jax.report import runs as runs_lib
from experiments import quickstart
from experiments.configs import quickstart as quickstart_config


def demo_runs(workdir: str, steps: int):
  """``[(context, [Run, ...])]`` per model of the demo, trained ``steps``."""
  config = quickstart_config.get_config()
  config.train.num_train_steps = steps
  config.train.progress = False
  run_dirs, _ = quickstart.train_runs(
      {f"{m}_{o}": quickstart.run_config(config, m, o)
       for m in config.models for o in config.optimizers}, workdir)
  groups = runs_lib.group_runs(run_dirs)
  first_config = next(iter(next(iter(groups.values()))["runs"].values()))[0][2]
  images, labels, _ = runs_lib.test_images(first_config,
                                           config.explain.num_images)
  models = []
  for key, group in groups.items():
    ctx = _context(key, group, images, labels, config.explain, first_config)
    models.append((ctx, [report.Run(run_dir=d, model=m, config=c,
                                    metrics=runs_lib.read_metrics(d),
                                    measured={})
                         for items in group["runs"].values()
                         for d, m, c in items]))
  return models


def time_analysis(analysis, models, field: str, value) -> float:
  """Seconds of ``analysis.measure`` on every run with ``explain.field``
  set to ``value``, compilation included."""
  jax.clear_caches()
  start = time.perf_counter()
  for ctx, runs in models:
    explain = ctx.explain.copy_and_resolve_references()
    explain[field] = value
    ctx = dataclasses.replace(ctx, explain=explain)
    for run in runs:
      jax.block_until_ready(analysis.measure(run, ctx))
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--analysis", default="fig6c")
  parser.add_argument("--field", default="adversarial_pairs")
  parser.add_argument("--values", default="16,64")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--steps", type=int, default=2)
  args = parser.parse_args()
  analysis = report.REGISTRY[args.analysis]
  values = [int(v) for v in args.values.split(",")]
  with tempfile.TemporaryDirectory() as workdir:
    models = demo_runs(workdir, args.steps)
    for ctx, runs in models:  # what the analysis reads, measured untimed
      for needed in analysis.needs:
        for run in runs:
          run.measured[needed] = report.REGISTRY[needed].measure(run, ctx)
    best = {v: float("inf") for v in values}
    for _ in range(args.repeats):
      for value in values:
        best[value] = min(best[value], time_analysis(analysis, models,
                                                     args.field, value))
  print(f"{args.analysis} on the demo's {sum(len(r) for _, r in models)} "
        f"runs, compile included, best of {args.repeats} (interleaved); load "
        f"average {os.getloadavg()}")
  for value in values:
    print(f"  {args.field}={value}: {best[value]:.2f} s  "
          f"({best[value] / best[values[0]]:.2f}x {args.field}={values[0]})")


if __name__ == "__main__":
  main()
