r"""How the demo's settings change the verdicts: one table from several reports.

  python -m studies.demo_choices --out docs/demo_choices.md \
      --report "12 epochs, ACNN-Small ×0.125=runs/a/report.json" \
      --report "40 epochs, ACNN-Small ×0.125=runs/b/report.json"

Each ``--report LABEL=PATH`` is a ``report.json`` of ``experiments.quickstart``
run with other settings; the table shows every claim's verdict and the
accuracy of each run under each setting. ``experiments.quickstart
--docs_dir DIR`` embeds ``DIR/demo_choices.md`` in the demo section.
"""

from __future__ import annotations

import json

from experiments import _cli


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


def main(argv=None):
  parser = _cli.ArgumentParser(__doc__)
  parser.add_argument("--report", action="append", required=True,
                      metavar="LABEL=PATH", help="a report.json and its label "
                      "(repeat for each setting)")
  parser.add_argument("--out", default=None,
                      help="also write the table here (docs/demo_choices.md)")
  args = parser.parse_args(argv)
  reports = {}
  for item in args.report:
    label, sep, path = item.rpartition("=")
    if not sep or not label:
      parser.error(f"--report must be LABEL=PATH; got {item!r}")
    with open(path, encoding="utf-8") as f:
      reports[label] = json.load(f)
  text = choices_table(reports)
  _cli.print_and_write(text, args.out)


if __name__ == "__main__":
  main()
