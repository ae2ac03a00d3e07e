"""What K seeds of one (model, optimizer) cost, run four ways.

On the demo's run configs (``experiments/configs/quickstart.py``: digits,
batch 32; LeNet at full width, ACNN-Small x0.125 with the floor of 8), Bort-S,
``--seeds`` seeds of ``--epochs`` epochs each:

* ``sequential``: the seeds one after the other in this process, each a
  fresh ``train_and_evaluate`` (the pipeline before this change): every run
  compiles its steps again;
* ``cache``: the same with one persistent compilation cache shared by the
  seeds (what ``bort_jax.report.pipeline.train_runs`` now does): the first
  seed compiles, the others load;
* ``processes``: the seeds split over ``--processes`` Python processes run at
  once, sharing a cache (interpreter and JAX start-up included);
* ``diagnostics``: ``cache`` again with ``orthogonality_stats`` only at the
  last epoch (``diagnostics_every_epochs`` = the epochs) instead of every
  epoch (the report reads none of the per-epoch diagnostics);
* ``explain_images``: ``report.build`` on one seed pair at each of
  ``--image_counts`` explained images, wall and process CPU;
* ``vmap``: the train step ``jax.vmap``-ed over the seeds (states and batches
  stacked), ``--steps`` steps, against the same number of single-seed steps
  run one after the other (steady state, compiles excluded): a vmapped loop
  would be a new training loop, so only its ceiling is measured;

* ``explain``: ``report.build`` (every registered analysis, figures and
  claims) on runs trained ``2`` steps (its cost depends on shapes, not
  weights) at ``--num_images`` images: one seed pair, then all seeds' pairs,
  JAX's caches cleared before each, without and with a shared persistent
  compilation cache; the per-pair cost of each extra seed is
  ``(all - one) / (seeds - 1)``;

and, from the ``sequential`` runs, the share of evaluation and diagnostics in
a run (``benchmarks.bench_goodput``'s split): what evaluating or measuring
less often could save at most.

Wall times on a shared machine: ratios are against ``sequential`` measured in
the same run; the load average is printed.

    python -m benchmarks.bench_seeds [--models lenet,acnn_small_mnist]
        [--seeds 3] [--epochs 2] [--processes 2] [--steps 20]
        [--parts sequential,cache,processes,vmap] [--json out.json]
"""

from __future__ import annotations

import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.results import write_json
from bort_jax.report import pipeline
from bort_jax.train import mesh as mesh_lib
from bort_jax.train import optimizers
from bort_jax.train import state as state_lib
from bort_jax.train import step as step_lib
from benchmarks import bench_goodput
from experiments import _cli
from experiments.configs import quickstart as quickstart_config

PARTS = ("sequential", "cache", "processes", "vmap", "explain", "diagnostics",
         "explain_images")


def run_config(model: str, seed: int, epochs: float, cache: str = "",
               diagnostics_every: int = 1):
  config = pipeline.run_config(quickstart_config.get_config(), model,
                               "bort_sgd")
  config.num_epochs, config.seed, config.progress = epochs, seed, False
  config.compilation_cache_dir = cache
  config.diagnostics_every_epochs = diagnostics_every
  return config


def sequential(model, seeds, epochs, cache: bool,
               diagnostics_every: int = 1) -> dict:
  """Wall time of the seeds one after the other, and the summed parts."""
  with tempfile.TemporaryDirectory() as tmp:
    cache_dir = os.path.join(tmp, "cache") if cache else ""
    start, cpu = time.perf_counter(), time.process_time()
    results = [bench_goodput.run(run_config(model, s, epochs, cache_dir,
                                            diagnostics_every),
                                 os.path.join(tmp, f"s{s}"))
               for s in range(seeds)]
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
  parts = {k: sum(r["seconds"][k] for r in results)
           for k in results[0]["seconds"]}
  return {"wall_s": wall, "cpu_s": cpu, "parts": parts,
          "compile_per_run": [r["seconds"]["compile"] for r in results]}


_CHILD = """
import sys, json
from benchmarks.bench_seeds import run_config
from bort_jax.report import pipeline
model, epochs, cache, workdir = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
seeds = json.loads(sys.argv[5])
pipeline.train_runs({f"s{s}": run_config(model, s, epochs, cache) for s in seeds}, workdir)
"""


def processes(model, seeds, epochs, count: int) -> dict:
  """Wall time of the seeds split over ``count`` processes run at once."""
  with tempfile.TemporaryDirectory() as tmp:
    cache = os.path.join(tmp, "cache")
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    start = time.perf_counter()
    children = [subprocess.Popen(
        [sys.executable, "-c", _CHILD, model, str(epochs), cache,
         os.path.join(tmp, f"p{i}"), json.dumps(list(range(seeds))[i::count])],
        env=env, stdout=subprocess.DEVNULL) for i in range(count)]
    codes = [child.wait() for child in children]
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  if any(codes):
    raise RuntimeError(f"a child process failed: exit codes {codes}")
  return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime}


def vmap_ratio(model, seeds, steps: int) -> dict:
  """Seconds per step of all seeds: vmapped vs one seed at a time."""
  configs = [run_config(model, s, 1.0) for s in range(seeds)]
  config = configs[0]
  mesh = mesh_lib.create_mesh(jax.devices()[:1])
  transform = optimizers.create_optimizer(config, config.learning_rate)
  states, defs = [], None
  for c in configs:
    state, defs, _ = state_lib.create_train_state(
        lambda c=c: state_lib.create_model(c), transform, mesh)
    states.append(state)
  rng = np.random.default_rng(0)
  batches = [{"image": jnp.asarray(rng.normal(size=(
                  config.batch_size, 28, 28, 1)).astype(np.float32)),
              "label": jnp.asarray(rng.integers(0, 10, config.batch_size)
                                   .astype(np.int32)),
              "mask": jnp.ones(config.batch_size, bool)}
             for _ in range(seeds)]
  step = functools.partial(step_lib.train_step, graphdef=defs.train,
                           optimizer=transform, loss_name="ce",
                           num_classes=config.num_classes)
  single = jax.jit(step)
  stacked = jax.jit(jax.vmap(step))
  stacked_state = jax.tree.map(lambda *x: jnp.stack(x), *states)
  stacked_batch = jax.tree.map(lambda *x: jnp.stack(x), *batches)

  def run_single(count):
    out = None
    for _ in range(count):
      for i in range(seeds):
        states[i], out = single(states[i], batches[i])
    return out

  def run_stacked(count):
    nonlocal stacked_state
    out = None
    for _ in range(count):
      stacked_state, out = stacked(stacked_state, stacked_batch)
    return out

  times = {}
  for name, fn in (("sequential", run_single), ("vmap", run_stacked)):
    jax.block_until_ready(fn(1))  # compile
  for _ in range(3):  # interleaved, best of 3
    for name, fn in (("sequential", run_single), ("vmap", run_stacked)):
      start = time.perf_counter()
      jax.block_until_ready(fn(steps))
      elapsed = (time.perf_counter() - start) / steps
      times[name] = min(times.get(name, float("inf")), elapsed)
  return {"step_s": times, "throughput_ratio":
          times["sequential"] / times["vmap"]}


def explain(model, seeds, num_images: int) -> dict:
  """Seconds of ``report.build`` on one seed pair and on all ``seeds``
  pairs, without and with a shared persistent compilation cache."""
  from bort_jax.report.build import build
  from bort_jax.train import compile_cache

  ecfg = pipeline.explain_config()
  ecfg.num_images = num_images
  out = {}
  with tempfile.TemporaryDirectory() as tmp:
    configs = {}
    for s in range(seeds):
      for opt in ("sgd", "bort_sgd"):
        c = pipeline.run_config(quickstart_config.get_config(), model, opt)
        c.num_train_steps, c.seed, c.progress = 2, s, False
        configs[pipeline.run_name(model, opt, s)] = c
    run_dirs, _ = pipeline.train_runs(configs, os.path.join(tmp, "runs"))
    for cache in (False, True):
      for count in (2, len(run_dirs)):
        jax.clear_caches()
        cache_dir = os.path.join(tmp, f"cache_{count}") if cache else ""
        start, cpu = time.perf_counter(), time.process_time()
        with compile_cache.persistent_cache(cache_dir):
          build(run_dirs[:count], os.path.join(tmp, "out"), ecfg,
                title="bench", command="bench", progress=False)
        name = f"{'cache' if cache else 'no_cache'}_{count // 2}_pairs"
        out[f"{name}_s"] = time.perf_counter() - start
        out[f"{name}_cpu_s"] = time.process_time() - cpu
    for cache in ("no_cache", "cache"):
      one, every = (out[f"{cache}_1_pairs_s"], out[f"{cache}_{seeds}_pairs_s"])
      out[f"{cache}_per_extra_pair_s"] = (every - one) / max(seeds - 1, 1)
  return out


def explain_images(model, counts) -> dict:
  """Wall and process-CPU seconds of ``report.build`` on one seed pair at
  each number of explained images in ``counts`` (JAX's caches cleared)."""
  from bort_jax.report.build import build

  out = {}
  with tempfile.TemporaryDirectory() as tmp:
    configs = {}
    for opt in ("sgd", "bort_sgd"):
      c = pipeline.run_config(quickstart_config.get_config(), model, opt)
      c.num_train_steps, c.progress = 2, False
      configs[pipeline.run_name(model, opt, 0)] = c
    run_dirs, _ = pipeline.train_runs(configs, os.path.join(tmp, "runs"))
    for count in counts:
      ecfg = pipeline.explain_config()
      ecfg.num_images = count
      jax.clear_caches()
      start, cpu = time.perf_counter(), time.process_time()
      build(run_dirs, os.path.join(tmp, "out"), ecfg, title="bench",
            command="bench", progress=False)
      out[count] = {"wall_s": time.perf_counter() - start,
                    "cpu_s": time.process_time() - cpu}
      print(f"{model} explain, one pair, {count} images: wall "
            f"{out[count]['wall_s']:.1f} s, CPU {out[count]['cpu_s']:.1f} s",
            flush=True)
  return out


def main(argv=None):
  parser = _cli.ArgumentParser(__doc__)
  parser.add_argument("--models", default="lenet,acnn_small_mnist")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--epochs", type=float, default=2.0)
  parser.add_argument("--processes", type=int, default=2)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--num_images", type=int, default=64)
  parser.add_argument("--image_counts", default="16,64",
                      help="explain_images: numbers of explained images")
  parser.add_argument("--parts", default=",".join(PARTS))
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  parts = args.parts.split(",")
  unknown = sorted(set(parts) - set(PARTS))
  if unknown:
    parser.error(f"--parts {unknown} unknown; known: {PARTS}")
  out = {"args": vars(args), "load_before": os.getloadavg(), "models": {}}
  print(f"load average {out['load_before'][0]:.2f}; {args.seeds} seeds x "
        f"{args.epochs:g} epochs, Bort-S", flush=True)
  for model in args.models.split(","):
    found = out["models"][model] = {}
    if "sequential" in parts:
      found["sequential"] = sequential(model, args.seeds, args.epochs, False)
    if "cache" in parts:
      found["cache"] = sequential(model, args.seeds, args.epochs, True)
    if "processes" in parts:
      found["processes"] = processes(model, args.seeds, args.epochs,
                                     args.processes)
    if "vmap" in parts:
      found["vmap"] = vmap_ratio(model, args.seeds, args.steps)
    if "diagnostics" in parts:
      found["diagnostics_last_only"] = sequential(
          model, args.seeds, args.epochs, True, max(int(args.epochs), 1))
    if "explain_images" in parts:
      found["explain_images"] = explain_images(
          model, [int(c) for c in args.image_counts.split(",")])
    if "explain" in parts:
      found["explain"] = explain(model, args.seeds, args.num_images)
    base = found.get("sequential", {}).get("wall_s")
    for name in ("sequential", "cache", "processes", "diagnostics_last_only"):
      if name in found:
        ratio = f" (x{found[name]['wall_s'] / base:.3f})" if base else ""
        print(f"{model} {name}: {found[name]['wall_s']:.1f} s{ratio}, CPU "
              f"{found[name]['cpu_s']:.1f} s", flush=True)
    for name in ("sequential", "cache", "diagnostics_last_only"):
      if name in found:
        p = found[name]["parts"]
        total = sum(p.values())
        print(f"{model} {name} parts: compile {p['compile']:.1f} s "
              f"(per run {[round(c, 1) for c in found[name]['compile_per_run']]}),"
              f" steps {p['train_steps']:.1f}, evaluation {p['evaluation']:.1f}"
              f" ({p['evaluation'] / total:.1%}), diagnostics "
              f"{p['diagnostics']:.1f} ({p['diagnostics'] / total:.1%})",
              flush=True)
    if "vmap" in found:
      v = found["vmap"]
      print(f"{model} vmap over {args.seeds} seeds: "
            f"{1e3 * v['step_s']['vmap']:.1f} ms vs sequential "
            f"{1e3 * v['step_s']['sequential']:.1f} ms per step of all seeds:"
            f" throughput x{v['throughput_ratio']:.3f}", flush=True)
    if "explain" in found:
      e = found["explain"]
      for cache in ("no_cache", "cache"):
        print(f"{model} explain at {args.num_images} images, {cache}: one pair "
              f"{e[f'{cache}_1_pairs_s']:.1f} s, {args.seeds} pairs "
              f"{e[f'{cache}_{args.seeds}_pairs_s']:.1f} s, each extra pair "
              f"{e[f'{cache}_per_extra_pair_s']:.1f} s; CPU one pair "
              f"{e[f'{cache}_1_pairs_cpu_s']:.1f} s, {args.seeds} pairs "
              f"{e[f'{cache}_{args.seeds}_pairs_cpu_s']:.1f} s", flush=True)
      print(f"{model} explain with / without the cache, all pairs: x"
            f"{e[f'cache_{args.seeds}_pairs_s'] / e[f'no_cache_{args.seeds}_pairs_s']:.3f}",
            flush=True)
  out["load_after"] = os.getloadavg()
  print(f"load average {out['load_after'][0]:.2f}")
  write_json(args.json, out)


if __name__ == "__main__":
  main()
