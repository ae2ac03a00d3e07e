r"""How the demo's settings change the verdicts: one table from several reports.

  python -m experiments.demo_choices --out docs/demo_choices.md \
      --report "12 epochs, ACNN-Small ×0.125=runs/a/report.json" \
      --report "40 epochs, ACNN-Small ×0.125=runs/b/report.json"

Each ``--report LABEL=PATH`` is a ``report.json`` of ``experiments.quickstart``
run with other settings; the table shows every claim's verdict and the
accuracy of each run under each setting. ``experiments.quickstart
--docs_dir DIR`` embeds ``DIR/demo_choices.md`` in the demo section.
"""

from __future__ import annotations

import json

from absl import app
from absl import flags


def _short(claim: dict) -> str:
  readings = [e["reading"] for e in claim["evidence"]]
  counts = ", ".join(f"{readings.count(r)} {r}" for r in
                     ("supports", "contradicts", "undecided", "observation")
                     if r in readings)
  return f"**{claim['verdict']}** ({counts or 'nothing measured'})"


def choices_table(reports: dict) -> str:
  """Markdown: claims × settings, then top-1 and wall time per setting."""
  labels = list(reports)
  ids = list(dict.fromkeys(c["id"] for r in reports.values()
                           for c in r["claims"]))
  lines = ["| | " + " | ".join(labels) + " |",
           "|---|" + "---|" * len(labels)]
  for claim_id in ids:
    cells = []
    for label in labels:
      found = [c for c in reports[label]["claims"] if c["id"] == claim_id]
      cells.append(_short(found[0]) if found else "–")
    lines.append(f"| `{claim_id}` | " + " | ".join(cells) + " |")
  rows = {}
  for label in labels:
    for model in reports[label]["models"].values():
      for opt, runs in model["runs"].items():
        name = f"top-1 (%), {model['label'].split(' (')[0]}, {opt}"
        rows.setdefault(name, {})[label] = " / ".join(
            f"{100 * r['top1']:.2f}" for r in runs)
    wall = reports[label]["setup"]["wall_time_s"]
    rows.setdefault("wall time (s)", {})[label] = (
        f"{wall.get('total', wall['explain']):.0f}")
  for name, cells in rows.items():
    lines.append(f"| {name} | " + " | ".join(cells.get(l, "–")
                                              for l in labels) + " |")
  commands = [f"- {label}: `{reports[label]['command']}`" for label in labels]
  return "\n".join(
      ["### How the demo's settings change the verdicts", "",
       "Each column is one run of the demo with other settings (verdict, and "
       "how many of the claim's differences support it, contradict it or are "
       "undecided). Wall times were measured on a shared 2-core machine.", ""]
      + lines + ["", *commands, ""])


def define_flags():
  flags.DEFINE_multi_string("report", None, "LABEL=PATH of a report.json",
                            required=True)
  flags.DEFINE_string("out", "docs/demo_choices.md", "markdown file to write")


def main(argv):
  del argv
  reports = {}
  for item in flags.FLAGS.report:
    label, sep, path = item.rpartition("=")
    if not sep or not label:
      raise ValueError(f"--report must be LABEL=PATH; got {item!r}")
    with open(path, encoding="utf-8") as f:
      reports[label] = json.load(f)
  with open(flags.FLAGS.out, "w", encoding="utf-8") as f:
    f.write(choices_table(reports))
  print(f"wrote {flags.FLAGS.out}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
