"""studies.demo_choices: the table of verdicts and accuracies built from
report.json files the report package writes."""

import pathlib
import sys

import numpy as np
from scipy import stats

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))  # `studies` is a folder, not installed

from bort_jax import report  # noqa: E402
from bort_jax.report.build import claims  # noqa: E402
from bort_jax.report.stats import Difference  # noqa: E402
from studies import demo_choices  # noqa: E402


def _difference(name, low, high, better="lower"):
  """Five seed pairs whose paired t-interval (4 degrees of freedom) is
  [low, high], against a threshold of 0."""
  spread = (high - low) / 2 / (stats.t.ppf(0.975, 4) * np.sqrt(2.5 / 5))
  return Difference(name=name, better=better, threshold=0.0, bort=0.0,
                    baseline=0.0, runs={"baseline": 5, "bort": 5},
                    seed_differences=tuple((low + high) / 2 + spread
                                           * np.arange(-2, 3)))


def _report(per_model, top1, wall, command):
  """A report.json as report.build + report.to_json write it, reduced to
  what the table reads: the claims (from report.build's own ``claims``), the
  runs' top-1, the wall time and the command."""
  models = {"lenet": {"label": "LeNet"},
            "acnn_small_mnist_w0.125": {"label": "ACNN-Small (width ×0.125)"}}
  for key, model in models.items():
    model["runs"] = {opt: [{"top1": t} for t in top1[key][opt]]
                     for opt in ("SGD", "Bort-S")}
  return report.to_json({"title": "t", "command": command,
                         "claims": claims(per_model),
                         "setup": {"wall_time_s": wall}, "models": models})


def test_choices_table_cells():
  short = _report(
      {"LeNet": {"table1": [_difference("acc", -0.09, -0.03, "higher")],
                 "fig3b": [_difference("conv1", -0.8, -0.7),
                           _difference("conv2", -0.1, 0.2)]},
       "ACNN-Small (width ×0.125)": {
           "table1": [_difference("acc", 0.01, 0.02, "higher")],
           "fig3b": [_difference("conv5", -0.3, -0.2)]}},
      {"lenet": {"SGD": [0.9667], "Bort-S": [0.95]},
       "acnn_small_mnist_w0.125": {"SGD": [0.98056], "Bort-S": [0.9, 0.925]}},
      {"train": 100.4, "explain": 50.0, "total": 150.4}, "python -m a")
  long = _report(
      {"LeNet": {"table1": [_difference("acc", -0.01, 0.01, "higher")],
                 "fig3b": [_difference("conv1", -0.8, -0.7),
                           _difference("conv2", -0.3, -0.2)]},
       "ACNN-Small (width ×0.125)": {
           "table1": [_difference("acc", -0.01, 0.02, "higher")],
           "fig3b": [_difference("conv5", -0.3, -0.2)]}},
      {"lenet": {"SGD": [0.9], "Bort-S": [0.9]},
       "acnn_small_mnist_w0.125": {"SGD": [0.5], "Bort-S": [0.25]}},
      {"explain": 61.6}, "python -m b")
  long["claims"] = [c for c in long["claims"] if c["id"] != "fig6c"]
  table = demo_choices.choices_table({"12 epochs": short, "40 epochs": long})
  rows = {line.split(" | ")[0].lstrip("| "): line
          for line in table.splitlines() if line.startswith("| ")}
  assert rows[""] == "| | 12 epochs | 40 epochs |"
  assert rows["`table1`"] == (
      "| `table1` | **mixed** (1 supports, 1 contradicts) | "
      "**inconclusive** (2 undecided) |")
  assert rows["`fig3b`"] == (
      "| `fig3b` | **inconclusive** (2 supports, 1 undecided) | "
      "**holds** (3 supports) |")
  # Registered but measured on no model, then missing from one report.
  assert rows["`fig6c`"] == (
      "| `fig6c` | **inconclusive** (nothing measured) | – |")
  assert rows["top-1 (%), LeNet, Bort-S"] == (
      "| top-1 (%), LeNet, Bort-S | 95.00 | 90.00 |")
  assert rows["top-1 (%), ACNN-Small, Bort-S"] == (
      "| top-1 (%), ACNN-Small, Bort-S | 90.00 / 92.50 | 25.00 |")
  assert rows["top-1 (%), ACNN-Small, SGD"] == (
      "| top-1 (%), ACNN-Small, SGD | 98.06 | 50.00 |")
  # Train + explain when the report has both, else what it has.
  assert rows["wall time (s)"] == "| wall time (s) | 150 | 62 |"
  ids = [line.split(" | ")[0][2:] for line in table.splitlines()
         if line.startswith("| `")]
  assert ids == [f"`{a.id}`" for a in report.REGISTRY.values() if a.claim]
  assert "- 12 epochs: `python -m a`" in table
  assert "- 40 epochs: `python -m b`" in table


def test_the_history_of_settings_survives_a_regenerated_table():
  old = ("### How the demo's settings change the verdicts\n\n| old |\n\n"
         f"{demo_choices.HISTORY}\n\n### 2026-11-30: floor 8\n\nverdicts\n")
  new_table = "### How the demo's settings change the verdicts\n\n| new |\n"
  written = demo_choices.with_history(new_table, old)
  assert written.startswith(new_table) and "| old |" not in written
  assert written.endswith(f"{demo_choices.HISTORY}\n\n### 2026-11-30: "
                          "floor 8\n\nverdicts\n")
  assert demo_choices.with_history(new_table, "| old |\n") == new_table
