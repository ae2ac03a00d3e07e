r"""Table 1 at paper scale with paired seeds, then Section 4's report.

  python -m experiments.reproduce --dataset mnist --data_dir ~/tensorflow_datasets \
      --workdir runs/reproduce_mnist --seeds 5

Trains Table 1's recipe (Section 4.1.1: 40 epochs, batch 256, lr 0.01, weight
decay 0.01, λ 0.1, no augmentation) at the paper's full width, SGD vs Bort-S,
for LeNet and ACNN-Small (``--models``), ``--seeds`` seeds each (seed s of SGD and of Bort-S
share initialisation and data order), into
``WORKDIR/<model>_<optimizer>_s<seed>`` (resumed if there), then writes
``WORKDIR/report.md`` / ``report.json`` with every figure of Section 4 and the
claims. ``--dataset`` is any ``bort_jax.data`` name: tfds ``mnist`` /
``cifar10`` (prepared in ``--data_dir``) or ``idx:/dir``; the ACNN-Small
variant and LeNet's input channels follow the images' channels. ``--width``
and ``--num_train_steps`` exist for tests and quick looks; the report's recipe
lines say when they depart from the paper. SIGINT/SIGTERM exit with status 75
(run the same command again to resume), as ``experiments.train``.
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from bort_jax import data
from bort_jax.report import pipeline
from experiments import _cli
from bort_jax.train import recipes

MODELS = ("lenet", "acnn_small")
OPTIMIZERS = ("sgd", "bort_sgd")

flags.DEFINE_string("dataset", None, "a bort_jax.data name: mnist, cifar10, "
                    "idx:/dir, ...", required=True)
flags.DEFINE_string("data_dir", None, "tfds data directory")
flags.DEFINE_string("workdir", None, "where runs and the report go",
                    required=True)
flags.DEFINE_list("models", list(MODELS), "Table 1 models to train: lenet, "
                  "acnn_small")
flags.DEFINE_integer("seeds", 1, "paired seeds per model and optimizer "
                     "(5 or more for verdicts)")
flags.DEFINE_integer("seed", 0, "the first training seed")
flags.DEFINE_float("width", 1.0, "ACNN-Small width multiplier (paper: 1)")
flags.DEFINE_integer("num_train_steps", -1, "steps per run; -1: 40 epochs")
flags.DEFINE_integer("batch_size", 0, "train/eval batch; 0: the paper's 256")
flags.DEFINE_bool("progress", True, "show progress bars")
_EXPLAIN = config_flags.DEFINE_config_dict("explain", pipeline.explain_config(),
                                           "explainer settings")


def recipe_row(dataset: str, data_dir: str | None) -> str:
  """The Table 1 row ("mnist" or "cifar10") whose models fit the images."""
  if dataset in ("mnist", "cifar10"):
    return dataset
  shape = data.load(dataset, split="test", batch_size=1, train=False,
                    data_dir=data_dir).image_shape
  if shape[-1] not in (1, 3):
    raise ValueError(f"--dataset {dataset!r} has images of shape {shape}; "
                     "Table 1's models take 1 (MNIST) or 3 (CIFAR-10) channels")
  return "mnist" if shape[-1] == 1 else "cifar10"


def run_configs(f) -> dict:
  """``{run name: training config}``: Table 1's four runs × ``--seeds``."""
  unknown = sorted(set(f.models) - set(MODELS))
  if unknown or not f.models:
    raise app.UsageError(f"--models={','.join(f.models)}: allowed are "
                         f"{', '.join(MODELS)} (at least one)")
  row = recipe_row(f.dataset, f.data_dir)
  configs = {}
  for model in f.models:
    for optimizer in OPTIMIZERS:
      config = recipes.table1(row, model, optimizer)
      config.dataset, config.data_dir = f.dataset, f.data_dir
      config.num_train_steps, config.progress = f.num_train_steps, f.progress
      if f.batch_size:
        config.batch_size = config.eval_batch_size = f.batch_size
      if f.width != 1.0 and model == "acnn_small":
        config.model_overrides = {**config.model_overrides,
                                  "width_multiplier": f.width}
      configs[f"{config.model}_{optimizer}"] = config
  return pipeline.with_seeds(configs, f.seeds, f.seed)


def recipe_lines(some, f) -> list[str]:
  lines = [f"Table 1 recipe ({some.dataset}): {some.num_epochs:g} epochs, "
           f"batch {some.batch_size} (paper: 256), lr {some.learning_rate:g} "
           f"{some.lr_schedule}, weight decay {some.weight_decay:g}, λ 0.1 "
           "(Bort-S), no augmentation, momentum 0 (not stated in the paper)",
           f"{f.seeds} seed(s) per model and optimizer from seed {f.seed} "
           "(the paper reports one run); seed s of SGD and of Bort-S share "
           "initialisation and data order"]
  if f.width != 1.0 and "acnn_small" in f.models:
    lines.append(f"ACNN-Small width ×{f.width:g} (paper: ×1)")
  if f.num_train_steps > 0:
    lines.append(f"{f.num_train_steps} steps per run (overrides the 40 epochs)")
  return lines


def main(argv):
  del argv
  f = flags.FLAGS
  pipeline.check_seeds(f.seeds)
  configs = run_configs(f)
  return pipeline.run(
      configs, f.workdir, _EXPLAIN.value,
      title=f"Bort, Table 1 and Section 4 reproduced on {f.dataset}",
      command=" ".join(["python -m experiments.reproduce", *sys.argv[1:]]),
      recipe=recipe_lines(next(iter(configs.values())), f),
      progress=f.progress)


if __name__ == "__main__":
  _cli.run(main)
