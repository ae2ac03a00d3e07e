"""Where the wall clock of a whole ``experiments.train`` run goes.

Runs ``bort_jax.train.train_and_evaluate`` on a recipe (default: the digits
ACNN-Small Bort-S row, at ``--width`` of the paper's width, for
``--epochs``) with timing hooks put around the loop's parts from outside
(the loop itself is unchanged):

* ``compile``: JAX's tracing, lowering and XLA compilation (or loading from
  the persistent cache) in the loop's thread (jax.monitoring events), taken
  out of whichever part triggered it. Compiles in the prefetch thread (the
  data's device-side finish) run beside the loop, so they are not a part of
  the wall clock: the loop sees them only as ``input_wait`` when it had to
  wait; they are reported on their own as ``background_compile_s``;
* ``setup``: data sources, model and train state creation, checkpoint
  restore (what precedes the first step, less its compiles);
* ``train_steps``: the jitted train step, waited for after each call (the
  hook adds this one sync per step so that the time is the step's own;
  ``--no_step_sync`` leaves the loop's own syncs only);
* ``evaluation``: ``loop.evaluate``;
* ``diagnostics``: fetching ``orthogonality_stats`` to the host;
* ``checkpointing``: ``Checkpointer.save`` (orbax; asynchronous saves show
  up here only as the time they block);
* ``input_wait``: the loop waiting for its next training batch (the
  prefetcher's ``next``: with prefetch, only the time the batch was not
  ready yet);
* ``logging``: ``metrics.jsonl`` and TensorBoard writes;
* ``other``: the rest (the loop's own bookkeeping, closing the run).

``goodput`` is the fraction in ``train_steps``. With ``--prefetch 0,2`` the
run is repeated with each ``prefetch_batches``, interleaved ``--repeats``
times, best (shortest) run of each shown side by side.

``--compile_cache N`` also measures what ``config.compilation_cache_dir``
saves on a resume: a first process fills a cache directory, then N pairs of
fresh processes run the same config with and without the cache; it prints
their compile seconds and the ratio.

``--config synthetic_imagenet_tiny`` is a run whose input is not trivial:
the DeiT recipe's Table 7 augmentation (RandAugment, colour jitter, random
erasing, Mixup/CutMix) on random 112x112 RGB images, a DeiT-S at 0.125 width
and depth 2, batch 32, ``--steps`` steps.

    python -m benchmarks.bench_goodput [--config digits_acnn_small_bort_sgd]
        [--width 0.25] [--epochs 3] [--steps N] [--dataset synthetic]
        [--prefetch 0,2] [--repeats 1] [--compile_cache 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

import jax

from benchmarks import timing
from benchmarks.results import write_json
from bort_jax.train import checkpoint as checkpoint_lib
from bort_jax.train import loop as loop_lib
from bort_jax.train import metrics as metrics_lib
from bort_jax.train import prefetch as prefetch_lib
from bort_jax.train import state as state_lib
from bort_jax.train import step as step_lib
from experiments import _cli

PARTS = ("compile", "setup", "train_steps", "evaluation", "diagnostics",
         "checkpointing", "input_wait", "logging", "other")
_COMPILE_EVENTS = ("/jax/core/compile/backend_compile_duration",
                   "/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration")
INPUT_HEAVY = "synthetic_imagenet_tiny"


class Clock:
  """Seconds per part of the loop thread's wall clock; a timed region inside
  another counts for the outer. A part gives up the compiles of the loop's
  thread to ``compile``; compiles in other threads (the prefetcher's) are
  summed apart, since they overlap the loop's parts."""

  def __init__(self):
    self.seconds = dict.fromkeys(PARTS, 0.0)
    self.compile_seconds = 0.0  # all threads
    self.loop_compile_seconds = 0.0  # the thread that runs the loop
    self._loop_thread = threading.get_ident()
    self._depth = 0

  def on_event(self, name, duration, **_):
    if name in _COMPILE_EVENTS:
      self.compile_seconds += duration
      if threading.get_ident() == self._loop_thread:
        self.loop_compile_seconds += duration

  @contextlib.contextmanager
  def part(self, name):
    if self._depth:
      yield
      return
    self._depth += 1
    start, compiled = time.perf_counter(), self.loop_compile_seconds
    try:
      yield
    finally:
      self._depth -= 1
      spent = self.loop_compile_seconds - compiled
      self.seconds[name] += time.perf_counter() - start - spent

  def wrap(self, name, fn, sync=False):
    def timed(*args, **kwargs):
      with self.part(name):
        out = fn(*args, **kwargs)
        return jax.block_until_ready(out) if sync else out
    return timed


def _is_orthogonality(tree) -> bool:
  return isinstance(tree, dict) and any(
      isinstance(v, dict) and "sigma_max" in v for v in tree.values())


@contextlib.contextmanager
def hooks(clock: Clock, step_sync: bool = True):
  """Timing hooks around the loop's parts, removed on exit."""
  timed_methods = {
      "setup": [(loop_lib, "_prepare"), (state_lib, "create_train_state"),
                (checkpoint_lib.Checkpointer, "restore")],
      "evaluation": [(loop_lib, "evaluate")],
      "checkpointing": [(checkpoint_lib.Checkpointer, "save")],
      "input_wait": [(prefetch_lib.Prefetcher, "__next__")],
      "logging": [(metrics_lib.MetricsWriter, name) for name in
                  ("__init__", "write_scalars", "write_record", "close")],
  }
  saved = [(step_lib, "make_train_step"), (loop_lib, "to_host")] + [
      target for targets in timed_methods.values() for target in targets]
  originals = [getattr(owner, name) for owner, name in saved]
  make_train_step, to_host = originals[:2]
  step_lib.make_train_step = lambda **kw: clock.wrap(
      "train_steps", make_train_step(**kw), sync=step_sync)

  def timed_to_host(tree):
    if _is_orthogonality(tree):
      with clock.part("diagnostics"):
        return to_host(tree)
    return to_host(tree)

  loop_lib.to_host = timed_to_host
  for part, targets in timed_methods.items():
    for owner, name in targets:
      # A plain function also works as a method (self comes first).
      setattr(owner, name, clock.wrap(part, getattr(owner, name)))
  jax.monitoring.register_event_duration_secs_listener(clock.on_event)
  try:
    yield
  finally:
    for (owner, name), original in zip(saved, originals):
      setattr(owner, name, original)
    unregister = getattr(jax.monitoring,
                         "unregister_event_duration_listener", None)
    if unregister is not None:  # older jax: the listener stays, harmless
      unregister(clock.on_event)


def run(config, workdir, step_sync: bool = True) -> dict:
  clock = Clock()
  with hooks(clock, step_sync):
    total, final = timing.timed(
        lambda: loop_lib.train_and_evaluate(config, workdir))
  seconds = dict(clock.seconds, compile=clock.loop_compile_seconds)
  seconds["other"] = total - sum(v for k, v in seconds.items() if k != "other")
  return {"total_s": total, "seconds": seconds,
          "background_compile_s": clock.compile_seconds
                                  - clock.loop_compile_seconds,
          "fractions": {k: v / total for k, v in seconds.items()},
          "goodput": seconds["train_steps"] / total,
          "prefetch_batches": config.prefetch_batches,
          "steps": final["step"], "top1": final.get("top1")}


def input_heavy_config(steps: int):
  """The DeiT recipe's Table 7 train transform on random 112x112 RGB images,
  a narrow 2-block DeiT-S (the input, not the model, is the work)."""
  from bort_jax.train import recipes  # pylint: disable=g-import-not-at-top
  config = recipes.imagenet("deit_small", "adamw")
  config.dataset, config.num_classes = "synthetic:10", 10
  config.image_size, config.eval_split = 112, "test"
  config.augment.crop_size, config.augment.eval_resize = 112, 128
  config.model_overrides = {"width_multiplier": 0.125, "depth": 2,
                            "image_size": 112, "patch_size": 16}
  config.batch_size, config.eval_batch_size = 32, 500
  config.num_train_steps, config.warmup_epochs = steps, 0.0
  config.log_every_steps = 10
  return config


def make_config(args):
  if args.config == INPUT_HEAVY:
    config = input_heavy_config(args.steps or 40)
  else:
    config = importlib.import_module(
        f"experiments.configs.{args.config}").get_config()
    config.model_overrides.width_multiplier = args.width
    config.num_epochs = args.epochs
    if args.steps:
      config.num_train_steps = args.steps
  if args.dataset:
    config.dataset = args.dataset
  config.progress = False
  return config


def _print_table(columns: dict, title: str):
  print(title)
  names = list(columns)
  print(f"  {'part':<14}" + "".join(f"{n:>22}" for n in names))
  for part in PARTS:
    cells = "".join(f"{columns[n]['seconds'][part]:>12.2f} s "
                    f"{100 * columns[n]['fractions'][part]:>6.1f}%"
                    for n in names)
    print(f"  {part:<14}{cells}")
  print(f"  {'total':<14}" + "".join(
      f"{columns[n]['total_s']:>12.2f} s {'':>7}" for n in names))
  print(f"  {'goodput':<14}" + "".join(
      f"{columns[n]['goodput']:>22.3f}" for n in names))
  print(f"  {'(prefetch-thread compile, overlapped)':<14}" + "".join(
      f"{columns[n]['background_compile_s']:>12.2f} s" for n in names))


def compare_prefetch(args, depths, repeats: int) -> dict:
  """Each depth ``repeats`` times, interleaved; the shortest run of each.

  A 2-step warm-up run first pays what only a process's first run pays
  (imports, the memoised dataset arrays), which would favour later runs.
  """
  if len(depths) * repeats > 1:
    warm_up = make_config(args)
    warm_up.num_train_steps = 2
    with tempfile.TemporaryDirectory() as workdir:
      loop_lib.train_and_evaluate(warm_up, workdir)
  runs = {depth: [] for depth in depths}
  for _ in range(repeats):
    for depth in depths:
      config = make_config(args)
      config.prefetch_batches = depth
      with tempfile.TemporaryDirectory() as workdir:
        runs[depth].append(run(config, workdir, not args.no_step_sync))
  return {depth: min(results, key=lambda r: r["total_s"])
          for depth, results in runs.items()}


def _child(args, cache_dir: str, out: pathlib.Path) -> dict:
  """One run in a fresh process (what a resumed job is), its result."""
  argv = [sys.executable, "-m", "benchmarks.bench_goodput",
          f"--config={args.config}", f"--width={args.width}",
          f"--epochs={args.epochs}", f"--steps={args.steps or 0}",
          f"--prefetch={args.prefetch.split(',')[-1]}",
          f"--child_cache_dir={cache_dir}", f"--json={out}"]
  if args.dataset:
    argv.append(f"--dataset={args.dataset}")
  subprocess.run(argv, check=True, stdout=subprocess.DEVNULL,
                 cwd=pathlib.Path(__file__).resolve().parents[1])
  return json.loads(out.read_text())["runs"][0]


def compare_compile_cache(args, pairs: int) -> dict:
  """Compile seconds of fresh processes with a filled cache vs none."""
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    cache = str(tmp / "cache")
    _child(args, cache, tmp / "fill.json")
    entries = len(os.listdir(cache))
    cached, uncached = [], []
    for i in range(pairs):
      uncached.append(_child(args, "", tmp / f"off{i}.json"))
      cached.append(_child(args, cache, tmp / f"on{i}.json"))
  # Every compile of the run, the prefetch thread's included.
  compiled = lambda r: r["seconds"]["compile"] + r["background_compile_s"]
  without, with_cache = min(uncached, key=compiled), min(cached, key=compiled)
  return {"entries": entries, "pairs": pairs, "without": without,
          "with": with_cache,
          "ratio": compiled(with_cache) / compiled(without)}


def main(argv=None):
  parser = _cli.ArgumentParser(__doc__)
  parser.add_argument("--config", default="digits_acnn_small_bort_sgd",
                      help=f"a module of experiments/configs, or "
                      f"{INPUT_HEAVY!r}")
  parser.add_argument("--width", type=float, default=0.25,
                      help="model width_multiplier (recipe configs)")
  parser.add_argument("--epochs", type=float, default=3.0)
  parser.add_argument("--steps", type=int, default=0,
                      help="num_train_steps instead of --epochs (0: epochs)")
  parser.add_argument("--dataset", default=None,
                      help="replace the recipe's dataset (e.g. 'synthetic', "
                      "50k 28x28 images, where MNIST is not downloadable)")
  parser.add_argument("--prefetch", default="2",
                      help="prefetch_batches values to compare, e.g. 0,2")
  parser.add_argument("--repeats", type=int, default=1)
  parser.add_argument("--no_step_sync", action="store_true",
                      help="do not wait for each train step (its time then "
                      "lands where the loop next waits)")
  parser.add_argument("--compile_cache", type=int, default=0,
                      help="pairs of fresh processes with/without a filled "
                      "compilation cache (0: skip)")
  parser.add_argument("--child_cache_dir", default=None,
                      help=argparse.SUPPRESS)
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  depths = [int(d) for d in args.prefetch.split(",")]
  result = {"config": args.config, "width": args.width, "epochs": args.epochs,
            "steps": args.steps, "device": jax.devices()[0].device_kind,
            "device_count": jax.device_count(),
            "load_average": os.getloadavg()}
  if args.child_cache_dir is not None:
    config = make_config(args)
    config.prefetch_batches = depths[0]
    config.compilation_cache_dir = args.child_cache_dir
    with tempfile.TemporaryDirectory() as workdir:
      result["runs"] = [run(config, workdir)]
    pathlib.Path(args.json).write_text(json.dumps(result))
    return
  best = compare_prefetch(args, depths, args.repeats)  # dict: depth -> run
  result["dataset"] = make_config(args).dataset
  result["runs"] = list(best.values())
  some = next(iter(best.values()))
  print(f"{args.config}, {some['steps']} steps on {jax.device_count()} "
        f"{result['device']}, load average {os.getloadavg()[0]:.1f}"
        f"{' (no per-step sync)' if args.no_step_sync else ''}")
  _print_table({f"prefetch_batches={d}": r for d, r in best.items()},
               f"best of {args.repeats} run(s) each, interleaved"
               f"{', after a warm-up run' if len(depths) * args.repeats > 1 else ''}:")
  if len(depths) > 1:
    first, last = best[depths[0]], best[depths[-1]]
    result["input_wait_ratio"] = (last["seconds"]["input_wait"] /
                                  max(first["seconds"]["input_wait"], 1e-9))
    result["total_ratio"] = last["total_s"] / first["total_s"]
    print(f"prefetch {depths[-1]} vs {depths[0]}: input wait "
          f"{first['seconds']['input_wait']:.2f} -> "
          f"{last['seconds']['input_wait']:.2f} s "
          f"(x{result['input_wait_ratio']:.3f}), wall clock "
          f"x{result['total_ratio']:.3f}")
  if args.compile_cache:
    cache = compare_compile_cache(args, args.compile_cache)
    result["compile_cache"] = cache
    _print_table({"no cache": cache["without"],
                  f"cache ({cache['entries']} entries)": cache["with"]},
                 f"a fresh process (a resumed job), best compile of "
                 f"{cache['pairs']} pair(s), interleaved:")
    print(f"compile with the cache / without: x{cache['ratio']:.3f}")
  print(f"load average after: {os.getloadavg()}")
  write_json(args.json, result)


if __name__ == "__main__":
  main()
