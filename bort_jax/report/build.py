"""Runs the registered analyses on trained runs and assembles the results.

Nothing here knows a figure by name: every section, figure and claim comes
from :data:`bort_jax.report.registry.REGISTRY`. A part that fails (one
explainer on one model, one summary, one plot) is recorded under
``results["errors"]`` with what failed, on which model and run, and the
message; everything else is still computed and written.
"""

from __future__ import annotations

from collections.abc import Sequence
import os
import time

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from bort_jax import plots
from bort_jax.report import runs as runs_lib
from bort_jax.report import stats
from bort_jax.report.registry import REGISTRY, Context, Run, claim_threshold


def _message(error: BaseException) -> str:
  return f"{type(error).__name__}: {error}"


class _Errors(list):
  def add(self, analysis: str, model: str, what: str, error) -> None:
    self.append({"analysis": analysis, "model": model, "part": what,
                 "error": error if isinstance(error, str) else _message(error)})


def _context(key: str, group: dict, images, labels, ecfg, first_config):
  some_model = group["runs"][next(iter(group["runs"]))][0][1]
  layer = runs_lib.paper_layer(some_model)
  channels = int(some_model.features(images[:1], layer).shape[-1])
  return Context(key=key, label=group["label"], images=images, labels=labels,
                 layer=layer, k=min(ecfg.k, channels), explain=ecfg,
                 test_split=lambda: runs_lib.test_split(
                     first_config, ecfg.get("eval_batch_size", 256)))


def _run_info(run_dir, config, out_dir) -> dict:
  last = runs_lib.read_metrics(run_dir)[-1]
  return {"optimizer": config.optimizer, "learning_rate": config.learning_rate,
          "lam": config.lam, "weight_decay": config.weight_decay,
          "momentum": config.momentum, "batch_size": config.batch_size,
          "epochs": round(float(last["epoch"]), 2), "steps": int(last["step"]),
          "top1": last["top1"], "eval_loss": last["eval_loss"],
          "seed": config.seed, "workdir": os.path.relpath(run_dir, out_dir)}


def analyze_model(key: str, group: dict, ctx: Context, out_dir: str,
                  errors: _Errors, bar) -> tuple[dict, dict]:
  """One model's report entry and ``{claim id: [Difference] or error}``."""
  first_model = group["runs"][next(iter(group["runs"]))][0][1]
  first_config = group["runs"][next(iter(group["runs"]))][0][2]
  entry = {"label": group["label"], "model": first_config.model,
           "model_overrides": dict(first_config.get("model_overrides") or {}),
           "num_params": int(sum(p.size for p in jax.tree.leaves(
               nnx.state(first_model, nnx.Param)))),
           "layer": ctx.layer, "k": ctx.k,
           "runs": {opt: [_run_info(d, c, out_dir) for d, _, c in runs]
                    for opt, runs in group["runs"].items()},
           "sections": {}, "figures": {}}
  runs = {opt: [Run(run_dir=d, model=m, config=c,
                    metrics=runs_lib.read_metrics(d), measured={})
                for d, m, c in items] for opt, items in group["runs"].items()}
  differences = {}
  for analysis in REGISTRY.values():
    measured, failed = {}, None
    for opt, opt_runs in runs.items():
      bar.set_postfix_str(f"{analysis.id} · {opt}")
      values = []
      for run in opt_runs:
        missing = [n for n in analysis.needs if n not in run.measured]
        if missing:
          failed = f"needs {missing}, which failed"
          errors.add(analysis.id, group["label"], f"{opt} run", failed)
          break
        run.errors.clear()
        try:
          value = analysis.measure(run, ctx)
        except Exception as error:  # pylint: disable=broad-except
          failed = error
          errors.add(analysis.id, group["label"], f"{opt} run", error)
          break
        finally:
          for what, error in run.errors:
            errors.add(analysis.id, group["label"], f"{what} on the {opt} run",
                       error)
        run.measured[analysis.id] = value
        values.append(value)
      bar.update()
      if failed is not None:
        break
      measured[opt] = values
    if failed is not None:
      if analysis.claim is not None:
        differences[analysis.id] = f"not measured: {failed}"
      continue
    for part, fn in (("summary", analysis.summarize), ("figure", analysis.plot),
                     ("claim", analysis.claim and analysis.claim.differences)):
      if fn is None:
        continue
      if part == "claim" and len(measured) < 2:
        # Not an error: a folder may hold one optimizer's runs of a model.
        differences[analysis.id] = (f"not compared: only {list(measured)} "
                                    f"was trained")
        continue
      if part == "claim" and (unpaired := _unpaired_seeds(group["runs"])):
        differences[analysis.id] = f"not compared: {unpaired}"
        continue
      try:
        value = fn(measured, ctx)
        if part == "summary":
          entry["sections"][analysis.id] = value
        elif part == "figure":
          name = f"{key}_{analysis.id}.png"
          plots.save(value, os.path.join(out_dir, name))
          entry["figures"][analysis.id] = name
        else:
          differences[analysis.id] = value
      except Exception as error:  # pylint: disable=broad-except
        errors.add(analysis.id, group["label"], part, error)
        if part == "claim":
          differences[analysis.id] = f"not computed: {_message(error)}"
  return entry, differences


def _unpaired_seeds(runs: dict) -> str:
  """Why the first and last optimizer's runs are not seed pairs ('' if they
  are): seed s of the baseline pairs with seed s of Bort, in list order."""
  labels = list(runs)
  seeds = {label: [c.get("seed") for _, _, c in runs[label]]
           for label in (labels[0], labels[-1])}
  (base, a), (bort, b) = seeds.items()
  if len(a) != len(b):
    return (f"{len(a)} {base} run(s) and {len(b)} {bort} run(s); seed pairs "
            "need one run of each optimizer per seed")
  if None not in a + b and a != b:
    return (f"the runs are not seed pairs: {base} seeds {a}, {bort} seeds {b} "
            "(seed s of the baseline pairs with seed s of Bort)")
  return ""


def claims(per_model: dict, ecfg=None) -> list[dict]:
  """The claims list: one entry per registered claim, over all models.

  Each claim carries its threshold (``margin`` or ``min_effect``, from
  ``ecfg.claims``), its verdict (:func:`stats.judge`, Holm's adjustment over
  every difference of the claim on every model) and its evidence.
  """
  out = []
  for analysis in REGISTRY.values():
    if analysis.claim is None:
      continue
    found, missing = [], []
    for label, differences in per_model.items():
      value = differences.get(analysis.id, "not measured")
      if isinstance(value, str):
        missing.append(f"{label}: {value}")
      else:
        found.extend(value)
    verdict, readings, p_holm = stats.judge(found)
    if missing and verdict == stats.HOLDS:
      verdict = stats.INCONCLUSIVE  # a model it was not checked on
    entry = {"id": analysis.id, "claim": analysis.claim.statement,
             "verdict": verdict}
    try:
      kind, value = claim_threshold(ecfg, analysis.id)
      entry[kind] = value
      entry["claim"] = analysis.claim.statement.format(**{kind: value})
    except (ValueError, KeyError, IndexError) as error:
      entry["threshold_error"] = str(error)
    if (analysis.claim.if_not_reproduced
        and verdict in (stats.DOES_NOT_HOLD, stats.MIXED)):
      entry["note"] = analysis.claim.if_not_reproduced
    entry["evidence"] = [d.to_json(r, p) for d, r, p in
                         zip(found, readings, p_holm)]
    entry["missing"] = missing
    out.append(entry)
  return out


def build(run_dirs: Sequence[str], out_dir: str, ecfg, *, title: str,
          command: str, recipe: Sequence[str] = (),
          train_seconds: float | None = None, progress: bool = True) -> dict:
  """Analyses ``run_dirs`` with every registered analysis; returns the
  results dict (:func:`bort_jax.report.write_report` writes it)."""
  start = time.perf_counter()
  runs_lib.check_writable(out_dir)
  groups = runs_lib.group_runs(run_dirs)
  first_config = next(iter(next(iter(groups.values()))["runs"].values()))[0][2]
  images, labels, test_iterator = runs_lib.test_images(
      first_config, ecfg.num_images, ecfg.seed)
  if ecfg.num_show > len(images):
    raise ValueError(f"explain.num_show={ecfg.num_show} exceeds num_images="
                     f"{len(images)}")
  errors = _Errors()
  models, per_model = {}, {}
  total = len(REGISTRY) * sum(len(g["runs"]) for g in groups.values())
  with tqdm(total=total, desc="explain", unit="stage",
            disable=not progress) as bar:
    for key, group in groups.items():
      bar.set_description(f"explain {group['label']}")
      ctx = _context(key, group, images, labels, ecfg, first_config)
      models[key], per_model[group["label"]] = analyze_model(
          key, group, ctx, out_dir, errors, bar)
  explain_seconds = time.perf_counter() - start
  wall = {"explain": explain_seconds}
  if train_seconds is not None:
    wall = {"train": train_seconds, **wall,
            "total": explain_seconds + train_seconds}
  return {
      "title": title, "command": command,
      "claims": claims(per_model, ecfg),
      "verdict_rule": stats.VERDICT_RULE,
      "setup": {
          "dataset": runs_lib.dataset_summary(first_config, test_iterator),
          "recipe": list(recipe),
          "seeds": {"train": sorted({int(c.seed) for g in groups.values()
                                     for rs in g["runs"].values()
                                     for _, _, c in rs}),
                    "explain": int(ecfg.seed)},
          "explain": {"images": f"{len(images)} test images drawn at random "
                                f"(seed {int(ecfg.seed)}) of "
                                f"{int(test_iterator.num_examples)}, "
                                f"{ecfg.num_show} shown",
                      **{k: v for k, v in ecfg.items()
                         if k not in ("num_images", "num_show", "seed",
                                      "claims")}},
          "claims": dict(ecfg.get("claims") or {}),
          "wall_time_s": wall, "versions": runs_lib.versions(),
          "devices": runs_lib.devices()},
      "sections": {a.id: a.title for a in REGISTRY.values()},
      "models": models, "errors": list(errors),
      "notes": ["Every number in this report was computed by the run that "
                "wrote it."]}
