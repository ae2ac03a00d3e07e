"""``report.md`` and ``report.json`` from a results dict (:func:`build`).

Nothing here computes a number: the markdown shows the values of ``results``
and the JSON is ``results`` itself, with non-finite numbers written as null
and listed under the notes. Both start with the claims.
"""

from __future__ import annotations

from collections.abc import Mapping
import json
import math
import os


def _finite_copy(value, path: str, bad: list[str]):
  """``value`` with numpy scalars as Python numbers and non-finite as None."""
  if isinstance(value, Mapping):
    return {str(k): _finite_copy(v, f"{path}.{k}", bad) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_finite_copy(v, f"{path}[{i}]", bad) for i, v in enumerate(value)]
  if isinstance(value, (str, bool)) or value is None:
    return value
  if hasattr(value, "item") and getattr(value, "size", 1) == 1:
    value = value.item()  # numpy / jax scalar
  if isinstance(value, int):
    return value
  if isinstance(value, float):
    if not math.isfinite(value):
      bad.append(path)
      return None
    return value
  raise TypeError(f"results{path} has type {type(value).__name__}; the report "
                  "takes numbers, strings, lists and dicts only (reduce arrays "
                  "to scalars first)")


def to_json(results: Mapping) -> dict:
  """The JSON form of ``results``; non-finite numbers become null + a note."""
  if not isinstance(results, Mapping) or "claims" not in results:
    raise ValueError("results must be a dict with a 'claims' entry; got "
                     f"{type(results).__name__} with keys "
                     f"{list(results) if isinstance(results, Mapping) else '-'}")
  bad: list[str] = []
  clean = _finite_copy(results, "", bad)
  if bad:
    clean["notes"] = list(clean.get("notes", [])) + [
        f"non-finite value at results{p} (written as null)" for p in bad]
  return {"claims": clean.pop("claims"), **clean}


def _num(value, digits: int = 3) -> str:
  if value is None:
    return "n/a"
  if isinstance(value, bool) or isinstance(value, int):
    return str(value)
  if isinstance(value, float):
    return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 \
        else f"{value:.2g}"
  return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  # A "|" inside a cell (e.g. |G_ii − 1|) would end the cell: escape it.
  cell = lambda text: str(text).replace("|", "\\|")
  lines = ["| " + " | ".join(map(cell, header)) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
  return lines + [""]


def _interval(ci) -> str:
  return f"[{_num(ci[0])}, {_num(ci[1])}]" if ci else "no interval"


def _evidence(difference: Mapping) -> str:
  runs = difference["runs"]
  seeds = difference["seeds"]
  sides = (f"{runs['bort']} vs {runs['baseline']} runs" if runs["baseline"]
           else f"{runs['bort']} runs vs a reference")
  line = (f"{difference['name']}: Bort {_num(difference['bort'])} vs "
          f"{_num(difference['baseline'])}, Δ = "
          f"{_num(difference['difference'])} (threshold "
          f"{_num(difference['threshold'])}); seeds ({sides}): "
          f"{_interval(seeds['ci'])}, {difference['reading']}")
  within = difference.get("within_run")
  if within:
    line += (f" · within-run, {within['n']} {within['unit']} "
             f"({within['method']}): " + (
                 _interval(within["ci"]) if within["usable"]
                 else f"unusable ({within['why']})"))
  return line


def _verdict(claim: Mapping) -> str:
  note = f" — {claim['note']}" if claim.get("note") else ""
  return f"**{claim['verdict']}**{note}"


def _threshold(claim: Mapping) -> str:
  if "margin" in claim:
    return f"margin {_num(claim['margin'])}"
  if "min_effect" in claim:
    return f"min. effect {_num(claim['min_effect'])}"
  return "none"


def claims_table(results: Mapping) -> list[str]:
  """The claims as a markdown table and the verdict rule under it."""
  rows = []
  for claim in results["claims"]:
    evidence = [_evidence(d) for d in claim["evidence"]]
    evidence += [f"missing: {m}" for m in claim.get("missing", [])]
    rows.append([f"`{claim['id']}`", claim["claim"], _threshold(claim),
                 _verdict(claim), "<br>".join(evidence) or "none"])
  return _table(["Id", "Paper claim", "Threshold", "Verdict",
                 "Evidence: mean Bort vs baseline, Δ; 95% interval over seed "
                 "pairs (decides); within-run interval (secondary)"],
                rows) + [f"Verdict rule: {results['verdict_rule']}", ""]


def _summary_table(rows: Mapping[str, Mapping]) -> list[str]:
  columns = list(dict.fromkeys(c for row in rows.values() for c in row))
  return _table([""] + columns, [[name] + [_num(row.get(c)) for c in columns]
                                 for name, row in rows.items()])


def _setup(results: Mapping) -> list[str]:
  setup = results["setup"]
  data = setup["dataset"]
  lines = [f"Command: `{results['command']}`", "",
           f"- Dataset: `{data['name']}`: {data['num_train']} training and "
           f"{data['num_test']} test images of shape "
           f"{tuple(data['image_shape'])}, {data['num_classes']} classes.",
           "- Seeds: " + ", ".join(f"{k} = {v}" for k, v in
                                   setup["seeds"].items()) + ".",
           "- Wall time: " + ", ".join(f"{k} {_num(v, 1)} s" for k, v in
                                       setup["wall_time_s"].items()) + ".",
           f"- Devices: {setup['devices']}.",
           "- Versions: " + ", ".join(f"{k} {v}" for k, v in
                                      setup["versions"].items()) + ".", ""]
  if setup.get("recipe"):
    lines += ["Recipe (the paper's Table 1 recipe, and how it was scaled to "
              "fit this run):", ""]
    lines += [f"- {line}" for line in setup["recipe"]] + [""]
  lines += ["Explainer settings: " + ", ".join(
      f"{k} = {v}" for k, v in setup["explain"].items()) + ".", ""]
  rows = [[m["label"], opt, str(run["epochs"]), str(run["steps"]),
           str(run["batch_size"]), _num(run["learning_rate"], 4),
           _num(run["weight_decay"], 4), _num(run["lam"], 4),
           _num(100 * run["top1"], 2), f"`{m['layer']}`", str(m["k"])]
          for m in results["models"].values()
          for opt, opt_runs in m["runs"].items() for run in opt_runs]
  return lines + _table(["Model", "Optimizer", "Epochs", "Steps", "Batch",
                         "Lr", "λ_wd", "λ", "Last top-1 (%)", "Paper layer",
                         "k"], rows)


def to_markdown(results: Mapping) -> str:
  """``report.md``: title, claims, setup, one section per analysis, errors."""
  results = to_json(results)
  out = [f"# {results['title']}", "", "## Claims", ""] + claims_table(results)
  out += ["## Setup", ""] + _setup(results)
  for analysis_id, title in results["sections"].items():
    out += [f"## {title}", ""]
    for model in results["models"].values():
      rows = model["sections"].get(analysis_id)
      figure = model["figures"].get(analysis_id)
      if rows is None and figure is None:
        continue
      out += [f"### {model['label']}", ""]
      if rows:
        out += _summary_table(rows)
      if figure:
        out += [f"![{model['label']}: {analysis_id}]({figure})", ""]
  out += ["## Errors", ""]
  out += [f"- `{e['analysis']}` on {e['model']} ({e['part']}): {e['error']}"
          for e in results["errors"]] or ["- None."]
  out += ["", "## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
  return "\n".join(out)


def demo_snippet(results: Mapping, figures: Mapping[str, str]) -> str:
  """docs/demo.md, the demo's page (the README links it): claims first,
  then accuracy and Table 3.

  Args:
    results: as for :func:`to_markdown`.
    figures: ``{caption: path relative to the snippet}`` to embed.
  """
  results = to_json(results)
  setup = results["setup"]
  data = setup["dataset"]
  wall = setup["wall_time_s"]
  out = ["## The demo: `make demo`", "",
         f"`{results['command']}` trains every model below with SGD and with "
         f"Bort-S on `{data['name']}` ({data['num_train']} training / "
         f"{data['num_test']} test images), explains them and checks the "
         f"paper's claims; it wrote these numbers in "
         f"{_num(wall.get('total', wall['explain']), 0)} s on "
         f"{setup['devices']} (training included).", "",
         "The paper's claims, checked on this run:", ""]
  out += claims_table(results)
  out += ["The recipe is the paper's Table 1, scaled down:", ""]
  out += [f"- {line}" for line in setup.get("recipe", [])] + [""]
  for analysis_id in ("table1", "table3", "table3_logit"):
    for model in results["models"].values():
      rows = model["sections"].get(analysis_id)
      if rows:
        out += [f"{results['sections'][analysis_id]}, {model['label']}:", ""]
        out += _summary_table(rows)
  for caption, path in figures.items():
    out += [f"![{caption}]({path})", "", f"*{caption}*", ""]
  out += ["The full report (every figure of Section 4, Fig. 3a to Fig. 6) is "
          "`runs/quickstart/report.md`.", ""]
  return "\n".join(out)


def write_report(results: Mapping, out_dir: str | os.PathLike) -> tuple[str, str]:
  """Writes ``report.md`` and ``report.json`` into ``out_dir``; returns paths.

  Figure paths inside ``results`` must be relative to ``out_dir`` and exist.
  """
  out_dir = os.fspath(out_dir)
  for model in results.get("models", {}).values():
    for key, path in model.get("figures", {}).items():
      if key not in results.get("sections", {}):
        raise ValueError(f"figure {key!r} has no section; sections: "
                         f"{sorted(results.get('sections', {}))}")
      if os.path.isabs(path) or not os.path.isfile(os.path.join(out_dir, path)):
        raise ValueError(f"figure {key!r} path {path!r} must be relative to "
                         f"{out_dir!r} and exist there")
  document = to_json(results)
  markdown = to_markdown(results)
  os.makedirs(out_dir, exist_ok=True)
  md_path = os.path.join(out_dir, "report.md")
  json_path = os.path.join(out_dir, "report.json")
  with open(md_path, "w", encoding="utf-8") as f:
    f.write(markdown)
  with open(json_path, "w", encoding="utf-8") as f:
    json.dump(document, f, indent=2, allow_nan=False)
    f.write("\n")
  return md_path, json_path
