r"""`make demo`: SGD vs Bort-S, trained and explained, in about 10 CPU minutes.

  python -m experiments.quickstart [--workdir runs/quickstart]
      [--config experiments/configs/quickstart.py] [--config.train.num_epochs=4]

Trains every model of ``config.models`` with every optimizer of
``config.optimizers`` on the offline ``digits`` dataset (one run per pair in
``WORKDIR/<model>_<optimizer>``, resumed if already there), then runs the
explainers on all of them and writes ``WORKDIR/report.md``, ``report.json``
and the figures.
"""

from __future__ import annotations

import os
import shutil
import sys
import time

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from experiments import explain as explain_lib
from experiments.configs import quickstart as quickstart_config

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs",
                              "quickstart.py")


def run_config(config, model: str, optimizer: str) -> ml_collections.ConfigDict:
  """The training config of one (model, optimizer) run."""
  if model not in config.model_overrides:
    raise ValueError(f"model {model!r} has no entry in config.model_overrides "
                     f"(has {sorted(config.model_overrides)})")
  run = ml_collections.ConfigDict(config.train.to_dict())
  run.model = model
  run.model_overrides = dict(config.model_overrides[model])
  run.optimizer = optimizer
  if not optimizer.startswith("bort_"):
    run.lam = 0.0
  return run


def _show(value) -> str:
  return repr(value) if isinstance(value, str) else f"{value:g}"


def recipe_lines(config) -> list[str]:
  """How this config departs from the paper's Table 1 recipe, line by line."""
  paper = quickstart_config.PAPER_RECIPE
  train = config.train
  lines = []
  for field in ("dataset", "num_epochs", "batch_size", "learning_rate",
                "lr_schedule", "weight_decay", "lam", "momentum"):
    here = train[field]
    same = "unchanged" if here == paper[field] else "scaled"
    lines.append(f"`{field}`: paper {_show(paper[field])}, here {_show(here)} "
                 f"({same})")
  if train.num_train_steps > 0:
    lines.append(f"`num_train_steps`: {train.num_train_steps} (overrides "
                 "num_epochs)")
  for model in config.models:
    width = dict(config.model_overrides[model]).get("width_multiplier", 1.0)
    same = "unchanged" if width == 1.0 else "scaled"
    lines.append(f"`{model}` width multiplier: paper 1.0, here {width:g} "
                 f"({same})")
  lines.append("no data augmentation (as in the paper); Bort-S runs use λ = "
               f"{train.lam:g}, the SGD runs λ = 0")
  return lines


def run(config, workdir: str) -> dict:
  """Trains every (model, optimizer) of ``config`` and writes the report."""
  from bort_jax import train  # pylint: disable=import-outside-toplevel

  start = time.perf_counter()
  run_dirs = []
  for model in config.models:
    for optimizer in config.optimizers:
      run_dir = os.path.join(workdir, f"{model}_{optimizer}")
      print(f"training {model} with {optimizer} -> {run_dir}", flush=True)
      train.train_and_evaluate(run_config(config, model, optimizer), run_dir)
      run_dirs.append(run_dir)
  train_seconds = time.perf_counter() - start
  return explain_lib.explain_runs(
      run_dirs, workdir, config.explain,
      title="Bort quickstart: " + " vs ".join(
          explain_lib.OPTIMIZER_LABELS.get(o, o) for o in config.optimizers)
      + f" on {config.train.dataset}",
      command=" ".join(["python -m experiments.quickstart", *sys.argv[1:]]),
      recipe=recipe_lines(config), train_seconds=train_seconds,
      progress=config.train.progress)


def write_docs(results: dict, workdir: str, docs_dir: str,
               figures=("fig3b", "fig5")) -> str:
  """``docs_dir/demo.md`` (the README's demo section) with two figures of the
  last model copied to ``docs_dir/figures``; returns the snippet's path."""
  from bort_jax import report  # pylint: disable=import-outside-toplevel

  key, model = list(results["models"].items())[-1]
  os.makedirs(os.path.join(docs_dir, "figures"), exist_ok=True)
  embedded = {}
  for name in figures:
    source = model["figures"][name]
    shutil.copyfile(os.path.join(workdir, source),
                    os.path.join(docs_dir, "figures", f"demo_{source}"))
    caption = f"{model['label']}: {report.FIGURES[name].split(':')[0]}"
    if name == "fig3b":
      caption += ", reconstruction ratio ‖z − Wᵀ(Wz)‖/‖z‖ per layer, SGD vs Bort-S"
    elif name == "fig4":
      caption += f", reconstruction from `{model['layer']}` by guided backprop"
    elif name == "fig5":
      caption += ", CAM and SAT saliency, SGD vs Bort-S"
    embedded[caption] = f"figures/demo_{source}"
  path = os.path.join(docs_dir, "demo.md")
  with open(path, "w", encoding="utf-8") as f:
    f.write(report.demo_snippet(results, embedded))
  return path


def define_flags():
  flags.DEFINE_string("workdir", "runs/quickstart", "where runs and the report go")
  config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "quickstart config")
  flags.DEFINE_string("docs_dir", None, "also write DOCS_DIR/demo.md (the "
                      "README's demo section) and its two figures")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # PAIR's XRAI logs every image
  workdir = flags.FLAGS.workdir
  results = run(flags.FLAGS.config, workdir)
  wall = results["setup"]["wall_time_s"]
  print(f"wrote {os.path.join(workdir, 'report.md')} in {wall['total']:.0f} s "
        f"(train {wall['train']:.0f} s, explain {wall['explain']:.0f} s)")
  if flags.FLAGS.docs_dir:
    print(f"wrote {write_docs(results, workdir, flags.FLAGS.docs_dir)}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
