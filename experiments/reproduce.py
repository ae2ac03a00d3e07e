r"""Table 1 at paper scale, then Section 4's report with the claims checked.

  python -m experiments.reproduce --dataset mnist --data_dir ~/tensorflow_datasets \
      --workdir runs/reproduce_mnist

Trains Table 1's recipe (Section 4.1.1: 40 epochs, batch 256, lr 0.01, weight
decay 0.01, λ 0.1, no augmentation) at the paper's full width, SGD vs Bort-S,
for LeNet and ACNN-Small, into ``WORKDIR/<model>_<optimizer>`` (resumed if
there), then writes ``WORKDIR/report.md`` / ``report.json`` with every figure
of Section 4 and the claims. ``--dataset`` is any ``bort_jax.data`` name: tfds
``mnist`` / ``cifar10`` (prepared in ``--data_dir``) or ``idx:/dir``; the
ACNN-Small variant and LeNet's input channels follow the images' channels.
``--width`` and ``--num_train_steps`` exist for tests and quick looks; the
report's recipe lines say when they depart from the paper.
"""

from __future__ import annotations

import sys

from absl import flags
from ml_collections import config_flags

from bort_jax import report
from experiments import _cli
from experiments import explain as explain_cli
from experiments import quickstart
from experiments.configs import quickstart as quickstart_config
from experiments.configs import recipes

MODELS = ("lenet", "acnn_small")
OPTIMIZERS = ("sgd", "bort_sgd")


def recipe_row(dataset: str, data_dir: str | None) -> str:
  """The Table 1 row ("mnist" or "cifar10") whose models fit the images."""
  from bort_jax import data  # pylint: disable=import-outside-toplevel

  if dataset in ("mnist", "cifar10"):
    return dataset
  shape = data.load(dataset, split="test", batch_size=1, train=False,
                    data_dir=data_dir).image_shape
  if shape[-1] not in (1, 3):
    raise ValueError(f"--dataset {dataset!r} has images of shape {shape}; "
                     "Table 1's models take 1 (MNIST) or 3 (CIFAR-10) channels")
  return "mnist" if shape[-1] == 1 else "cifar10"


def run_configs(dataset: str, data_dir: str | None, *, width: float = 1.0,
                num_train_steps: int = -1, batch_size: int = 0,
                seed: int = 0) -> dict:
  """``{run name: training config}`` of the four Table 1 runs."""
  row = recipe_row(dataset, data_dir)
  configs = {}
  for model in MODELS:
    for optimizer in OPTIMIZERS:
      config = recipes.table1(row, model, optimizer)
      config.dataset, config.data_dir = dataset, data_dir
      config.num_train_steps, config.seed = num_train_steps, seed
      if batch_size:
        config.batch_size = config.eval_batch_size = batch_size
      if width != 1.0 and model == "acnn_small":
        config.model_overrides = {**config.model_overrides,
                                  "width_multiplier": width}
      configs[f"{config.model}_{optimizer}"] = config
  return configs


def recipe_lines(configs: dict, width: float, num_train_steps: int) -> list[str]:
  some = next(iter(configs.values()))
  lines = [f"Table 1 recipe ({some.dataset}): {some.num_epochs:g} epochs, "
           f"batch {some.batch_size} (paper: 256), lr {some.learning_rate:g} "
           f"{some.lr_schedule}, weight decay {some.weight_decay:g}, λ 0.1 "
           "(Bort-S), no augmentation, momentum 0 (not stated in the paper)"]
  if width != 1.0:
    lines.append(f"ACNN-Small width ×{width:g} (paper: ×1)")
  if num_train_steps > 0:
    lines.append(f"{num_train_steps} steps per run (overrides the 40 epochs)")
  return lines


def define_flags():
  flags.DEFINE_string("dataset", None, "a bort_jax.data name: mnist, cifar10, "
                      "idx:/dir, ...", required=True)
  flags.DEFINE_string("data_dir", None, "tfds data directory")
  flags.DEFINE_string("workdir", None, "where runs and the report go",
                      required=True)
  flags.DEFINE_float("width", 1.0, "ACNN-Small width multiplier (paper: 1)")
  flags.DEFINE_integer("num_train_steps", -1, "steps per run; -1: 40 epochs")
  flags.DEFINE_integer("batch_size", 0, "train/eval batch; 0: the paper's 256")
  flags.DEFINE_integer("seed", 0, "training seed")
  flags.DEFINE_bool("progress", True, "show progress bars")
  config_flags.DEFINE_config_dict("explain", quickstart_config.explain_config(),
                                  "explainer settings")


def main(argv):
  del argv
  f = flags.FLAGS
  workdir = report.check_writable(f.workdir)
  configs = run_configs(f.dataset, f.data_dir, width=f.width,
                        num_train_steps=f.num_train_steps,
                        batch_size=f.batch_size, seed=f.seed)
  for config in configs.values():
    config.progress = f.progress
  run_dirs, train_seconds = quickstart.train_runs(configs, workdir)
  results = report.build(
      run_dirs, workdir, f.explain,
      title=f"Bort, Table 1 and Section 4 reproduced on {f.dataset}",
      command=" ".join(["python -m experiments.reproduce", *sys.argv[1:]]),
      recipe=recipe_lines(configs, f.width, f.num_train_steps),
      train_seconds=train_seconds, progress=f.progress)
  return explain_cli.write(results, workdir)


if __name__ == "__main__":
  define_flags()
  _cli.run(main)
