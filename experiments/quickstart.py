r"""`make demo`: SGD vs Bort-S, trained, explained and checked against the paper.

  python -m experiments.quickstart [--workdir runs/quickstart]
      [--config experiments/configs/quickstart.py] [--config.train.num_epochs=4]
      [--docs_dir docs]

Trains every model of ``config.models`` with every optimizer of
``config.optimizers`` on the offline ``digits`` dataset (one run per pair in
``WORKDIR/<model>_<optimizer>``, resumed if already there), then writes the
report with the paper's claims checked (``WORKDIR/report.md``,
``report.json``, figures). ``--docs_dir`` also writes the README's demo
section (``DOCS_DIR/demo.md``, ending with ``DOCS_DIR/demo_choices.md`` when
``studies.demo_choices`` wrote one) and three of its figures.
"""

from __future__ import annotations

import os
import shutil
import sys
import time

from absl import flags
import ml_collections
from ml_collections import config_flags

from bort_jax import report
from experiments import _cli
from experiments import explain as explain_cli
from experiments.configs import quickstart as quickstart_config

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs",
                              "quickstart.py")
DOC_FIGURES = {"curves": "accuracy and loss vs epoch, SGD vs Bort-S",
               "fig3b": "reconstruction ratio ‖z − Wᵀ(Wz)‖/‖z‖ per layer",
               "fig5": "CAM and SAT saliency, SGD vs Bort-S"}


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


def train_runs(run_configs: dict, workdir: str) -> tuple[list[str], float]:
  """Trains ``{run name: config}`` into ``workdir/<name>`` (resuming);
  returns the run folders and the wall time."""
  from bort_jax import train  # pylint: disable=import-outside-toplevel

  start = time.perf_counter()
  run_dirs = []
  for name, config in run_configs.items():
    run_dir = os.path.join(workdir, name)
    print(f"training {name} -> {run_dir}", flush=True)
    train.train_and_evaluate(config, run_dir)
    run_dirs.append(run_dir)
  return run_dirs, time.perf_counter() - start


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
    overrides = dict(config.model_overrides[model])
    width = overrides.get("width_multiplier", 1.0)
    same = "unchanged" if width == 1.0 else "scaled"
    lines.append(f"`{model}` width multiplier: paper 1.0, here {width:g} "
                 f"({same})")
    floor = overrides.get("min_channels", 1)
    if floor != 1 and width < 1.0:
      lines.append(f"`{model}` width floor: each scaled layer keeps at least "
                   f"min(paper width, {floor}) channels (`min_channels`)")
  lines.append("no data augmentation (as in the paper); Bort-S runs use λ = "
               f"{train.lam:g}, the SGD runs λ = 0")
  return lines


def write_docs(results: dict, workdir: str, docs_dir: str) -> str:
  """``docs_dir/demo.md`` (the README's demo section) with figures of the last
  model copied to ``docs_dir/figures``; returns the snippet's path."""
  model = list(results["models"].values())[-1]
  os.makedirs(os.path.join(docs_dir, "figures"), exist_ok=True)
  embedded = {}
  for name, what in DOC_FIGURES.items():
    source = model["figures"].get(name)
    if source is None:
      continue  # failed: the report's errors say why
    shutil.copyfile(os.path.join(workdir, source),
                    os.path.join(docs_dir, "figures", f"demo_{source}"))
    embedded[f"{model['label']}: {what}"] = f"figures/demo_{source}"
  snippet = report.demo_snippet(results, embedded)
  choices = os.path.join(docs_dir, "demo_choices.md")  # studies.demo_choices
  if os.path.isfile(choices):
    with open(choices, encoding="utf-8") as f:
      snippet += "\n" + f.read()
  path = os.path.join(docs_dir, "demo.md")
  with open(path, "w", encoding="utf-8") as f:
    f.write(snippet)
  return path


def define_flags():
  flags.DEFINE_string("workdir", "runs/quickstart", "where runs and the report go")
  config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "quickstart config")
  flags.DEFINE_string("docs_dir", None, "also write DOCS_DIR/demo.md (the "
                      "README's demo section) and its figures")


def main(argv):
  del argv
  config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
  report.check_writable(workdir)
  run_dirs, train_seconds = train_runs(
      {f"{m}_{o}": run_config(config, m, o)
       for m in config.models for o in config.optimizers}, workdir)
  results = report.build(
      run_dirs, workdir, config.explain,
      title="Bort quickstart: " + " vs ".join(
          report.OPTIMIZER_LABELS.get(o, o) for o in config.optimizers)
      + f" on {config.train.dataset}",
      command=" ".join(["python -m experiments.quickstart", *sys.argv[1:]]),
      recipe=recipe_lines(config), train_seconds=train_seconds,
      progress=config.train.progress)
  status = explain_cli.write(results, workdir)
  wall = results["setup"]["wall_time_s"]
  print(f"{wall['total']:.0f} s (train {wall['train']:.0f} s, explain "
        f"{wall['explain']:.0f} s)")
  if flags.FLAGS.docs_dir:
    print(f"wrote {write_docs(results, workdir, flags.FLAGS.docs_dir)}")
  return status


if __name__ == "__main__":
  define_flags()
  _cli.run(main)
