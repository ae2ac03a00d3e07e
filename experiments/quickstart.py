r"""`make demo`: SGD vs Bort-S, trained, explained and checked against the paper.

  python -m experiments.quickstart [--workdir runs/quickstart]
      [--config experiments/configs/quickstart.py] [--config.seeds=5]
      [--config.train.num_epochs=4] [--docs_dir docs]

Trains every model of ``config.models`` with every optimizer of
``config.optimizers`` and ``config.seeds`` paired seeds on the offline
``digits`` dataset (one run each in ``WORKDIR/<model>_<optimizer>_s<seed>``,
resumed if already there), then writes the report with the paper's claims
checked (``WORKDIR/report.md``, ``report.json``, figures). ``--docs_dir``
also writes the demo's page (``DOCS_DIR/demo.md``, ending with
``DOCS_DIR/demo_choices.md`` when ``studies.demo_choices`` wrote one) and
three of its figures. SIGINT/SIGTERM exit with status 75 (run the same command
again to resume), as ``experiments.train``.
"""

import os
import sys

from absl import flags
from ml_collections import config_flags

from bort_jax import report
from bort_jax.report import pipeline
from experiments import _cli

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs",
                              "quickstart.py")
flags.DEFINE_string("workdir", "runs/quickstart", "where runs and the report go")
_CONFIG = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG,
                                          "quickstart config")
flags.DEFINE_string("docs_dir", None, "also write DOCS_DIR/demo.md (the "
                    "demo's page, linked from the README) and its figures")


def main(argv):
  del argv
  config, f = _CONFIG.value, flags.FLAGS
  labels = " vs ".join(report.OPTIMIZER_LABELS.get(o, o)
                       for o in config.optimizers)
  return pipeline.run(
      pipeline.demo_run_configs(config), f.workdir, config.explain,
      title=f"Bort quickstart: {labels} on {config.train.dataset}",
      command=" ".join(["python -m experiments.quickstart", *sys.argv[1:]]),
      recipe=pipeline.recipe_lines(config, config.paper_recipe),
      progress=config.train.progress, docs_dir=f.docs_dir)


if __name__ == "__main__":
  _cli.run(main)
