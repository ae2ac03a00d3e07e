r"""Explains trained runs and checks the paper's claims on them.

  python -m experiments.explain --workdir DIR [--out OUT] [--explain.num_images=32]

``DIR`` is one run written by ``experiments.train`` (it holds ``config.json``)
or a folder of such runs (e.g. ``runs/quickstart``). Runs of the same model on
the same dataset are compared (the non-Bort optimizer is the baseline; several
runs of one optimizer are seeds). ``report.md``, ``report.json`` and the PNG
figures go to ``OUT`` (default ``DIR``), which is checked for writing first.
Exits with status 1 when any part of the report failed (listed in the report).
"""

from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from bort_jax import report
from experiments import _cli
from experiments.configs import quickstart as quickstart_config


def write(results: dict, out_dir: str) -> int:
  """Writes the report, prints where and what failed; the exit status."""
  md_path, _ = report.write_report(results, out_dir)
  print(f"wrote {md_path} ({len(results['models'])} models)")
  for claim in results["claims"]:
    print(f"  {claim['id']}: {claim['verdict']}")
  for error in results["errors"]:
    print(f"FAILED {error['analysis']} on {error['model']} ({error['part']}): "
          f"{error['error']}", file=sys.stderr)
  return 1 if results["errors"] else 0


def define_flags():
  """The CLI flags (defined on demand, so importing this module is free)."""
  flags.DEFINE_string("workdir", None, "a run of experiments.train, or a "
                      "folder of runs", required=True)
  flags.DEFINE_string("out", None, "where the report goes (default: --workdir)")
  config_flags.DEFINE_config_dict("explain", quickstart_config.explain_config(),
                                  "explainer settings")


def main(argv):
  del argv
  out_dir = report.check_writable(flags.FLAGS.out or flags.FLAGS.workdir)
  runs = report.find_runs(flags.FLAGS.workdir)
  results = report.build(
      runs, out_dir, flags.FLAGS.explain,
      title="Bort explainability report: "
            + ", ".join(os.path.basename(os.path.normpath(r)) for r in runs),
      command="python -m experiments.explain " + " ".join(sys.argv[1:]))
  return write(results, out_dir)


if __name__ == "__main__":
  define_flags()
  _cli.run(main)
