"""Where the wall clock of a whole ``experiments.train`` run goes.

Runs ``bort_jax.train.train_and_evaluate`` on a recipe (default: the digits
ACNN-Small Bort-S row, at ``--width`` of the paper's width, for
``--epochs``) with timing hooks put around the loop's parts from outside
(the loop itself is unchanged):

* ``compile``: JAX's tracing, lowering and XLA compilation (jax.monitoring
  events), taken out of whichever part triggered it;
* ``train_steps``: the jitted train step, waited for after each call (the
  hook adds this one sync per step so that the time is the step's own);
* ``evaluation``: ``loop.evaluate``;
* ``diagnostics``: fetching ``orthogonality_stats`` to the host;
* ``checkpointing``: ``Checkpointer.save`` (orbax; asynchronous saves show
  up here only as the time they block);
* ``input_wait``: ``next()`` on the training iterator;
* ``other``: the rest (model and state creation, logging, metrics files).

``goodput`` is the fraction in ``train_steps``.

    python -m experiments.bench_goodput [--config digits_acnn_small_bort_sgd]
        [--width 0.25] [--epochs 3] [--dataset synthetic] [--json goodput.json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import tempfile
import time

import jax

from bort_jax.data import iterator as iterator_lib
from bort_jax.train import checkpoint as checkpoint_lib
from bort_jax.train import loop as loop_lib
from bort_jax.train import step as step_lib

PARTS = ("compile", "train_steps", "evaluation", "diagnostics",
         "checkpointing", "input_wait", "other")
_COMPILE_EVENTS = ("/jax/core/compile/backend_compile_duration",
                   "/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration")


class Clock:
  """Seconds per part; a timed region inside another counts for the outer."""

  def __init__(self):
    self.seconds = dict.fromkeys(PARTS, 0.0)
    self.compile_seconds = 0.0
    self._depth = 0

  def on_event(self, name, duration, **_):
    if name in _COMPILE_EVENTS:
      self.compile_seconds += duration

  @contextlib.contextmanager
  def part(self, name):
    if self._depth:
      yield
      return
    self._depth += 1
    start, compiled = time.perf_counter(), self.compile_seconds
    try:
      yield
    finally:
      self._depth -= 1
      spent = self.compile_seconds - compiled
      self.seconds["compile"] += spent
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
def hooks(clock: Clock):
  """Timing hooks around the loop's parts, removed on exit."""
  saved = [(step_lib, "make_train_step"), (loop_lib, "evaluate"),
           (loop_lib, "to_host"), (checkpoint_lib.Checkpointer, "save"),
           (iterator_lib.DataIterator, "__next__")]
  originals = [getattr(owner, name) for owner, name in saved]
  make_train_step, _, to_host, save, next_batch = originals
  step_lib.make_train_step = lambda **kw: clock.wrap(
      "train_steps", make_train_step(**kw), sync=True)
  loop_lib.evaluate = clock.wrap("evaluation", originals[1])

  def timed_to_host(tree):
    if _is_orthogonality(tree):
      with clock.part("diagnostics"):
        return to_host(tree)
    return to_host(tree)

  loop_lib.to_host = timed_to_host
  checkpoint_lib.Checkpointer.save = (
      lambda self, *a, **k: clock.wrap("checkpointing", save)(self, *a, **k))
  iterator_lib.DataIterator.__next__ = (
      lambda self: clock.wrap("input_wait", next_batch)(self))
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


def run(config, workdir) -> dict:
  clock = Clock()
  with hooks(clock):
    start = time.perf_counter()
    final = loop_lib.train_and_evaluate(config, workdir)
    total = time.perf_counter() - start
  seconds = dict(clock.seconds)
  seconds["other"] = total - sum(v for k, v in seconds.items() if k != "other")
  return {"total_s": total, "seconds": seconds,
          "fractions": {k: v / total for k, v in seconds.items()},
          "goodput": seconds["train_steps"] / total,
          "steps": final["step"], "top1": final.get("top1")}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="digits_acnn_small_bort_sgd",
                      help="a module of experiments/configs")
  parser.add_argument("--width", type=float, default=0.25,
                      help="model width_multiplier")
  parser.add_argument("--epochs", type=float, default=3.0)
  parser.add_argument("--dataset", default=None,
                      help="replace the recipe's dataset (e.g. 'synthetic', "
                      "50k 28x28 images, where MNIST is not downloadable)")
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  config = importlib.import_module(
      f"experiments.configs.{args.config}").get_config()
  config.model_overrides.width_multiplier = args.width
  config.num_epochs = args.epochs
  if args.dataset:
    config.dataset = args.dataset
  config.progress = False
  with tempfile.TemporaryDirectory() as workdir:
    result = run(config, workdir)
  result.update(config=args.config, dataset=config.dataset, width=args.width,
                epochs=args.epochs,
                device=jax.devices()[0].device_kind,
                device_count=jax.device_count())
  print(f"{args.config} x{args.width} width, {args.epochs} epochs, "
        f"{result['steps']} steps on {jax.device_count()} "
        f"{result['device']}: {result['total_s']:.1f} s")
  for part in PARTS:
    print(f"  {part:<14}{result['seconds'][part]:>8.2f} s"
          f"{100 * result['fractions'][part]:>7.1f}%")
  print(f"goodput (train steps / wall clock): {result['goodput']:.3f}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
