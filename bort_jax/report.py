"""The demo's report: ``report.md`` and ``report.json`` from one results dict.

The results dict is what ``experiments/explain.py`` measures; this module only
formats it. Nothing here computes or invents a number: every value in the
markdown comes from ``results`` and the JSON is ``results`` itself (with
non-finite numbers replaced by ``null`` and listed under the notes).

Shape of ``results`` (``opt`` is an optimizer label such as ``"SGD"`` or
``"Bort-S"``; the first label of each model is its baseline)::

  {"title": str, "command": str,
   "setup": {"dataset": {"name", "num_train", "num_test", "image_shape",
                         "num_classes"},
             "recipe": [str, ...],          # how the paper's recipe was scaled
             "seeds": {name: int}, "explain": {setting: value},
             "wall_time_s": {"train": float | None, "explain": float,
                             "total": float},
             "versions": {package: version}, "devices": str},
   "models": {key: {
       "label": str, "model": str, "model_overrides": dict, "num_params": int,
       "layer": str,                        # layer used by Fig. 4/5/6, SAT
       "runs": {opt: {"optimizer", "learning_rate", "lam", "weight_decay",
                      "momentum", "batch_size", "epochs", "steps", "top1",
                      "top5", "eval_loss", "workdir"}},
       "gram": {opt: {layer: {"diag_mean", "diag_std", "offdiag_abs_mean"}}},
       "reconstruction_ratio": {opt: {layer: float}},
       "reconstruction_correlation": {opt: float},
       "table3": {method: {opt: {"deletion": float, "insertion": float}}},
       "table3_skipped": {method: reason},
       "decomposition": {opt: {"k": int, "correlation": float,
                               "n_clusters": int}},
       "adversarial": {opt: {"success_rate": float, "pairs": int}},
       "figures": {figure key: path relative to the report},
       "notes": [str]}},
   "notes": [str]}
"""

from __future__ import annotations

from collections.abc import Mapping
import copy
import json
import math
import os

SECTIONS = (
    "Setup",
    "Table 1: test accuracy",
    "Training curves",
    "Fig. 3a: Gram matrix entries",
    "Fig. 3b: reconstruction ratio",
    "Fig. 4: reconstruction",
    "Fig. 5: saliency maps",
    "Table 3: deletion / insertion",
    "Fig. 6: decomposition and adversarial synthesis",
    "Notes",
)
"""The ``##`` headings of ``report.md``, in order."""

FIGURES = {
    "curves": "Training curves",
    "fig3a": "Fig. 3a: Gram matrix entries",
    "fig3b": "Fig. 3b: reconstruction ratio",
    "fig4": "Fig. 4: reconstruction",
    "fig5": "Fig. 5: saliency maps",
    "deletion_insertion": "Table 3: deletion / insertion",
    "fig6a": "Fig. 6: decomposition and adversarial synthesis",
    "fig6b": "Fig. 6: decomposition and adversarial synthesis",
    "fig6c": "Fig. 6: decomposition and adversarial synthesis",
}
"""Figure keys of ``results["models"][key]["figures"]`` and their section."""

TABLE3_METHODS = ("CAM", "IG", "RISE", "XRAI", "GuidedIG", "SAT")


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
  if not isinstance(results, Mapping) or "models" not in results:
    raise ValueError("results must be a dict with a 'models' entry; got "
                     f"{type(results).__name__} with keys "
                     f"{list(results) if isinstance(results, Mapping) else '-'}")
  bad: list[str] = []
  clean = _finite_copy(results, "", bad)
  clean["sections"] = list(SECTIONS)
  if bad:
    clean["notes"] = list(clean.get("notes", [])) + [
        f"non-finite value at results{p} (written as null)" for p in bad]
  return clean


def _num(value, digits: int = 2, scale: float = 1.0) -> str:
  if value is None:
    return "n/a"
  return f"{value * scale:.{digits}f}"


def _delta(value, base, digits: int = 2, scale: float = 1.0) -> str:
  if value is None or base is None:
    return ""
  return f" ({(value - base) * scale:+.{digits}f})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return lines + [""]


def _figure(model: Mapping, key: str) -> list[str]:
  path = model.get("figures", {}).get(key)
  if path is None:
    return []
  return [f"![{model['label']}: {key}]({path})", ""]


def _setup(results: Mapping) -> list[str]:
  setup = results["setup"]
  data = setup["dataset"]
  wall = setup["wall_time_s"]
  lines = [f"Command: `{results['command']}`", "",
           f"- Dataset: `{data['name']}`: {data['num_train']} training and "
           f"{data['num_test']} test images of shape {tuple(data['image_shape'])}, "
           f"{data['num_classes']} classes.",
           "- Seeds: " + ", ".join(f"{k} = {v}" for k, v in setup["seeds"].items())
           + ".",
           "- Wall time: " + ", ".join(
               f"{k} {_num(v, 1)} s" for k, v in wall.items()) + ".",
           f"- Devices: {setup['devices']}.",
           "- Versions: " + ", ".join(
               f"{k} {v}" for k, v in setup["versions"].items()) + ".",
           ""]
  if setup.get("recipe"):
    lines += ["Recipe (the paper's Table 1 recipe, and how it was scaled to "
              "fit this run):", ""]
    lines += [f"- {line}" for line in setup["recipe"]] + [""]
  if setup.get("explain"):
    lines += ["Explainer settings: " + ", ".join(
        f"{k} = {v}" for k, v in setup["explain"].items()) + ".", ""]
  return lines


def _table1(models: Mapping) -> list[str]:
  rows = []
  for model in models.values():
    runs = model["runs"]
    base = runs[next(iter(runs))]
    for opt, run in runs.items():
      rows.append([model["label"], opt, str(run["epochs"]), str(run["steps"]),
                   str(run["batch_size"]), _num(run["learning_rate"], 4),
                   _num(run["weight_decay"], 4),
                   _num(run["lam"], 4) if run["lam"] else "–",
                   _num(run["top1"], 2, 100)
                   + (_delta(run["top1"], base["top1"], 2, 100)
                      if run is not base else ""),
                   _num(run.get("top5"), 2, 100)])
  return _table(["Model", "Optimizer", "Epochs", "Steps", "Batch", "Lr",
                 "λ_wd", "λ", "Top-1 (%)", "Top-5 (%)"], rows)


def _per_layer(model: Mapping, key: str, fields: list[tuple[str, str]]) -> list[str]:
  table = model[key]
  opts = list(table)
  layers = list(table[opts[0]])
  header = ["Layer"] + [f"{name} ({opt})" for _, name in fields for opt in opts]
  rows = []
  for layer in layers:
    row = [layer]
    for field, _ in fields:
      for opt in opts:
        value = table[opt][layer]
        row.append(_num(value[field] if field else value, 3))
    rows.append(row)
  return _table(header, rows)


def _table3(model: Mapping) -> list[str]:
  rows = []
  for method, reason in model.get("table3_skipped", {}).items():
    rows.append([method, "–", "n/a", "n/a"])
  for method, by_opt in model["table3"].items():
    opts = list(by_opt)
    base = by_opt[opts[0]]
    for opt in opts:
      scores = by_opt[opt]
      first = opt == opts[0]
      rows.append([method, opt,
                   _num(scores["deletion"]) + ("" if first else _delta(
                       scores["deletion"], base["deletion"])),
                   _num(scores["insertion"]) + ("" if first else _delta(
                       scores["insertion"], base["insertion"]))])
  lines = _table(["Method", "Optimizer", "Deletion ↓", "Insertion ↑"], rows)
  for method, reason in model.get("table3_skipped", {}).items():
    lines += [f"{method} not computed for {model['label']}: {reason}", ""]
  return lines


def to_markdown(results: Mapping) -> str:
  """``report.md`` for ``results`` (see the module docstring for its shape)."""
  results = to_json(results)
  models = results["models"]
  out = [f"# {results['title']}", ""]

  out += [f"## {SECTIONS[0]}", ""] + _setup(results)

  out += [f"## {SECTIONS[1]}", ""]
  out += ["Top-1 accuracy on the test split, measured at the end of training; "
          "Bort rows show the change against the first (baseline) row of the "
          "same model.", ""]
  out += _table1(models)

  out += [f"## {SECTIONS[2]}", ""]
  for model in models.values():
    out += _figure(model, "curves")

  out += [f"## {SECTIONS[3]}", ""]
  out += ["Entries of each conv kernel's Gram matrix (Section 4.2.1): Bort "
          "drives the diagonal toward 1 and the off-diagonal toward 0.", ""]
  for model in models.values():
    if "gram" in model:
      out += [f"### {model['label']}", ""]
      out += _per_layer(model, "gram", [("diag_mean", "diag mean"),
                                        ("offdiag_abs_mean", "mean abs off-diag")])
      out += _figure(model, "fig3a")

  out += [f"## {SECTIONS[4]}", ""]
  out += ["‖z − Wᵀ(Wz)‖ / ‖z‖ per conv layer, mean over the explained test "
          "images (Eq. 4; lower is more invertible).", ""]
  for model in models.values():
    if "reconstruction_ratio" in model:
      out += [f"### {model['label']}", ""]
      out += _per_layer(model, "reconstruction_ratio", [(None, "ratio")])
      out += _figure(model, "fig3b")

  out += [f"## {SECTIONS[5]}", ""]
  out += ["Guided-backprop reconstruction of the input from the layer named "
          "below (Appendix A.4). The number is the Pearson correlation between "
          "reconstruction and input, mean over the shown images (scale-free; "
          "higher is better).", ""]
  for model in models.values():
    if "reconstruction_correlation" in model:
      out += [f"### {model['label']} (from `{model['layer']}`)", ""]
      out += _table(["Optimizer", "Correlation with input"],
                    [[opt, _num(v, 3)] for opt, v in
                     model["reconstruction_correlation"].items()])
      out += _figure(model, "fig4")

  out += [f"## {SECTIONS[6]}", ""]
  for model in models.values():
    if "fig5" in model.get("figures", {}):
      out += [f"### {model['label']}", ""]
      if "CAM" in model.get("table3_skipped", {}):
        out += [f"CAM is not shown: {model['table3_skipped']['CAM']}", ""]
      out += _figure(model, "fig5")

  out += [f"## {SECTIONS[7]}", ""]
  out += ["Deletion / insertion AUCs (Petsiuk et al., 2018) of the softmax "
          "probability of the class predicted on the original image, mean over "
          "the explained test images; Bort rows show the change against the "
          "baseline.", ""]
  for model in models.values():
    if "table3" in model:
      out += [f"### {model['label']}", ""] + _table3(model)
      out += _figure(model, "deletion_insertion")

  out += [f"## {SECTIONS[8]}", ""]
  for model in models.values():
    if "decomposition" not in model and "adversarial" not in model:
      continue
    out += [f"### {model['label']} (layer `{model['layer']}`)", ""]
    rows = []
    for opt in model["runs"]:
      decomposition = model.get("decomposition", {}).get(opt, {})
      adversarial = model.get("adversarial", {}).get(opt, {})
      rows.append([opt, str(decomposition.get("k", "n/a")),
                   _num(decomposition.get("correlation"), 3),
                   str(decomposition.get("n_clusters", "n/a")),
                   _num(adversarial.get("success_rate"), 1, 100)
                   + f" ({adversarial.get('pairs', 'n/a')} pairs)"])
    out += _table(["Optimizer", "k", "Top-k reconstruction vs input (corr.)",
                   "K-means clusters", "Adversarial success (%)"], rows)
    for key in ("fig6a", "fig6b", "fig6c"):
      out += _figure(model, key)

  out += [f"## {SECTIONS[9]}", ""]
  notes = list(results.get("notes", []))
  for model in models.values():
    notes += [f"{model['label']}: {note}" for note in model.get("notes", [])]
  out += [f"- {note}" for note in notes] or ["- None."]
  out.append("")
  return "\n".join(out)


def demo_snippet(results: Mapping, figures: Mapping[str, str]) -> str:
  """The README's demo section: the command, Table 1, Table 3 and ``figures``.

  Args:
    results: as for :func:`to_markdown`.
    figures: ``{caption: path relative to the snippet}`` of the figures to embed.
  """
  results = to_json(results)
  models = results["models"]
  setup = results["setup"]
  data = setup["dataset"]
  wall = setup["wall_time_s"]
  out = ["## The demo: `make demo`", "",
         f"`{results['command']}` trains every model below with SGD and "
         f"with Bort-S on `{data['name']}` ({data['num_train']} training / "
         f"{data['num_test']} test images) and explains them; it wrote these "
         f"numbers in {_num(wall['total'], 0)} s on {setup['devices']} "
         "(all of it, training included). The recipe is the paper's Table 1, "
         "scaled down:", ""]
  out += [f"- {line}" for line in setup.get("recipe", [])] + [""]
  out += ["Test accuracy (Table 1 shape):", ""] + _table1(models)
  for model in models.values():
    if "table3" in model:
      out += [f"Deletion / insertion AUCs, {model['label']} (Table 3 shape):",
              ""] + _table3(model)
  for caption, path in figures.items():
    out += [f"![{caption}]({path})", "", f"*{caption}*", ""]
  out += ["The full report (every figure of Section 4, Fig. 3a to Fig. 6) is "
          "`runs/quickstart/report.md`.", ""]
  return "\n".join(out)


def write_report(results: Mapping, out_dir: str | os.PathLike) -> tuple[str, str]:
  """Writes ``report.md`` and ``report.json`` into ``out_dir``; returns their paths.

  Figure paths inside ``results`` must be relative to ``out_dir`` and exist.
  """
  out_dir = os.fspath(out_dir)
  for model in results.get("models", {}).values():
    for key, path in model.get("figures", {}).items():
      if key not in FIGURES:
        raise ValueError(f"unknown figure key {key!r}; allowed: {sorted(FIGURES)}")
      if os.path.isabs(path) or not os.path.isfile(os.path.join(out_dir, path)):
        raise ValueError(f"figure {key!r} path {path!r} must be relative to "
                         f"{out_dir!r} and exist there")
  document = copy.deepcopy(to_json(results))
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
