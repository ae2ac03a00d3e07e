"""What reading Table 3 twice costs in the demo: ``deletion_insertion`` as it
is (probability and logit curves from the same model calls) against the same
function at ``--baseline_commit`` (probability curves only), and the
``table3_logit`` analysis (the authors' AUC from those curves) against one
``deletion_insertion`` pass.

Trains the demo's four runs for ``--steps`` steps (cost depends on shapes
only), computes each run's SAT map (the demo's most tied map), then times
both versions on all four runs, interleaved, best of ``--repeats``: once with
JAX's caches cleared (compilation included, as in a fresh ``make demo``) and
once warm. Prints seconds, the ratio to the baseline and the load average.

    python -m experiments.bench_table3_logit [--baseline_commit 0062f9a]
        [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import tempfile
import time

import jax
import numpy as np

from bort_jax import explain
from bort_jax.report import analyses
from experiments import bench_report
from experiments.configs import quickstart as quickstart_config


def baseline_metrics(commit: str, folder: str):
  """``bort_jax.explain.metrics`` as it was at ``commit``."""
  path = os.path.join(folder, "metrics_baseline.py")
  source = subprocess.run(["git", "show", f"{commit}:bort_jax/explain/metrics.py"],
                          capture_output=True, text=True, check=True).stdout
  with open(path, "w", encoding="utf-8") as f:
    f.write(source)
  spec = importlib.util.spec_from_file_location(
      "bort_jax.explain.metrics_baseline", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--baseline_commit", default="0062f9a")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--steps", type=int, default=2)
  args = parser.parse_args()
  ecfg = quickstart_config.explain_config()
  with tempfile.TemporaryDirectory() as workdir:
    versions = {"baseline": baseline_metrics(args.baseline_commit, workdir),
                "with logits": explain}
    cases = [(run, ctx, np.asarray(explain.sat(run.model, ctx.images,
                                               layer=ctx.layer, k=ctx.k)))
             for ctx, runs in bench_report.demo_runs(workdir, args.steps)
             for run in runs]

    def curves(version, cold):
      if cold:
        jax.clear_caches()
      start = time.perf_counter()
      out = [jax.block_until_ready(versions[version].deletion_insertion(
          run.model, ctx.images, saliency, step=ecfg.deletion_step,
          tie_orders=ecfg.deletion_tie_orders)) for run, ctx, saliency in cases]
      return time.perf_counter() - start, out

    best = {}
    for _ in range(args.repeats):
      for version in versions:  # warm right after its own compile
        for cold in (True, False):
          seconds, out = curves(version, cold)
          best[version, cold] = min(best.get((version, cold), np.inf), seconds)
    start = time.perf_counter()
    for (run, ctx, _), result in zip(cases, out):
      measured = {"table3": {"SAT": {k: np.asarray(v) for k, v in
                                     result._asdict().items()}}}
      analyses._normalized_aucs(  # pylint: disable=protected-access
          type("Run", (), {"measured": measured, "errors": []})(), ctx)
    reading = time.perf_counter() - start
  print(f"deletion_insertion of the SAT maps of the demo's {len(cases)} runs, "
        f"best of {args.repeats} (interleaved); load average "
        f"{os.getloadavg()}")
  for cold, what in ((True, "compile included"), (False, "warm")):
    base, new = best["baseline", cold], best["with logits", cold]
    print(f"  {what}: baseline ({args.baseline_commit}) {base:.2f} s, with "
          f"logit curves {new:.2f} s ({new / base:.2f}x)")
  print(f"  table3_logit's reading of those curves: {reading * 1e3:.1f} ms "
        f"({reading / best['with logits', False]:.4f}x one warm pass)")


if __name__ == "__main__":
  main()
