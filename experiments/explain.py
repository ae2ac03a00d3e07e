r"""Explains trained runs and checks the paper's claims on them.

  python -m experiments.explain --workdir DIR [--out OUT] [--explain.num_images=32]

``DIR`` is one run written by ``experiments.train`` (it holds ``config.json``)
or a folder of such runs (e.g. ``runs/quickstart``). Runs of the same model on
the same dataset are compared (the non-Bort optimizer is the baseline; runs of
one optimizer with different ``config.seed`` are seeds, paired with the
baseline's run of the same seed). ``report.md``, ``report.json`` and the PNG
figures go to ``OUT`` (default ``DIR``), which is checked for writing first; a
``DIR`` holding no run fails before anything is created. Exits with status 1
when any part of the report failed (listed in the report).
"""

import sys

from absl import flags
from ml_collections import config_flags

from bort_jax.report import pipeline
from experiments import _cli

flags.DEFINE_string("workdir", None, "a run of experiments.train, or a folder "
                    "of runs", required=True)
flags.DEFINE_string("out", None, "where the report goes (default: --workdir)")
_EXPLAIN = config_flags.DEFINE_config_dict("explain", pipeline.explain_config(),
                                           "explainer settings")


def main(argv):
  del argv
  return pipeline.explain_runs(
      flags.FLAGS.workdir, flags.FLAGS.out, _EXPLAIN.value,
      command="python -m experiments.explain " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
  _cli.run(main)
