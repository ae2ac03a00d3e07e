r"""Runs every explainer of Section 4.2 on trained runs and writes the report.

  python -m experiments.explain --workdir DIR [--out OUT] [--explain.num_images=32]

``DIR`` is one run written by ``experiments.train`` (it holds ``config.json``)
or a folder of such runs (e.g. ``runs/quickstart``). Runs of the same model on
the same dataset are compared: the non-Bort optimizer is the baseline. The
report (``report.md``, ``report.json`` and the PNG figures) goes to ``OUT``
(default ``DIR``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import importlib.metadata
import json
import os
import platform
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from ml_collections import config_flags
from tqdm.auto import tqdm

from experiments.configs import quickstart as quickstart_config

OPTIMIZER_LABELS = {"sgd": "SGD", "bort_sgd": "Bort-S", "adamw": "AdamW",
                    "bort_adamw": "Bort-A", "lamb": "LAMB", "bort_lamb": "Bort-L"}
MODEL_LABELS = {"lenet": "LeNet", "acnn_small_mnist": "ACNN-Small",
                "acnn_small_cifar": "ACNN-Small", "acnn_base": "ACNN-Base",
                "vgg16": "VGG16", "resnet50": "ResNet50"}
STAGES = ("gram", "ratios", "reconstruct", "saliency", "deletion/insertion",
          "decompose", "synthesize")
VERSIONED = ("jax", "jaxlib", "flax", "optax", "numpy", "scikit-learn",
             "saliency", "matplotlib", "bort_jax")


# ----------------------------------------------------------------- the runs


def find_runs(workdir: str) -> list[str]:
  """``workdir`` if it is a run, else its sub-folders that are runs (sorted)."""
  if os.path.isfile(os.path.join(workdir, "config.json")):
    return [workdir]
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"--workdir {workdir!r} does not exist")
  runs = sorted(os.path.join(workdir, d) for d in os.listdir(workdir)
                if os.path.isfile(os.path.join(workdir, d, "config.json")))
  if not runs:
    raise FileNotFoundError(
        f"{workdir!r} holds no run: neither it nor a sub-folder has the "
        "config.json that experiments.train writes")
  return runs


def read_metrics(run_dir: str) -> list[dict]:
  path = os.path.join(run_dir, "metrics.jsonl")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} is missing: has {run_dir!r} finished an "
                            "evaluation?")
  with open(path, encoding="utf-8") as f:
    records = [json.loads(line) for line in f if line.strip()]
  if not records:
    raise ValueError(f"{path} holds no evaluation record")
  return records


def _model_key(config) -> tuple[str, str]:
  overrides = dict(config.get("model_overrides") or {})
  width = overrides.get("width_multiplier", 1.0)
  key = config.model + ("" if width == 1.0 else f"_w{width:g}")
  label = MODEL_LABELS.get(config.model, config.model)
  if width != 1.0:
    label += f" (width ×{width:g})"
  return key, label


def group_runs(run_dirs: Sequence[str]) -> dict:
  """``{model key: {"label", "runs": {optimizer label: (run_dir, model,
  config)}}}``, baseline optimizers before Bort ones."""
  from bort_jax import train  # pylint: disable=import-outside-toplevel

  groups: dict = {}
  for run_dir in run_dirs:
    model, config = train.load_trained(run_dir)
    key, label = _model_key(config)
    if config.dataset != (next(iter(groups.values()))["dataset"]
                          if groups else config.dataset):
      raise ValueError(f"run {run_dir!r} uses dataset {config.dataset!r}; all "
                       "runs of one report must share a dataset")
    group = groups.setdefault(key, {"label": label, "dataset": config.dataset,
                                    "runs": {}})
    opt = OPTIMIZER_LABELS.get(config.optimizer, config.optimizer)
    if opt in group["runs"]:
      opt = f"{opt} ({os.path.basename(os.path.normpath(run_dir))})"
    group["runs"][opt] = (run_dir, model, config)
  for group in groups.values():
    group["runs"] = dict(sorted(group["runs"].items(),
                                key=lambda item: item[1][2].optimizer
                                .startswith("bort_")))
  return groups


def load_test_images(config, num_images: int):
  """The first ``num_images`` test images (the eval order is fixed)."""
  from bort_jax import data  # pylint: disable=import-outside-toplevel

  iterator = data.load(config.dataset, split="test", batch_size=num_images,
                       train=False, data_dir=config.get("data_dir"),
                       image_size=config.get("image_size"))
  batch = next(iter(iterator))
  keep = np.asarray(batch["mask"])
  return (jnp.asarray(batch["image"][keep]), np.asarray(batch["label"][keep]),
          iterator)


def dataset_summary(config, test_iterator) -> dict:
  from bort_jax import data  # pylint: disable=import-outside-toplevel

  train_iterator = data.load(config.dataset, split="train", batch_size=1,
                             train=False, data_dir=config.get("data_dir"),
                             image_size=config.get("image_size"))
  return {"name": config.dataset,
          "num_train": int(train_iterator.num_examples),
          "num_test": int(test_iterator.num_examples),
          "image_shape": [int(d) for d in test_iterator.image_shape],
          "num_classes": int(test_iterator.num_classes)}


def versions() -> dict:
  found = {"python": platform.python_version()}
  for name in VERSIONED:
    try:
      found[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      found[name] = "not installed"
  return found


def devices() -> str:
  device = jax.devices()[0]
  return (f"{jax.device_count()} × {device.device_kind} "
          f"({jax.default_backend()}), {os.cpu_count()} CPU cores visible")


# ------------------------------------------------------------ the analyses


def correlation(a, b) -> np.ndarray:
  """Per-image Pearson correlation of two (N, H, W, C) batches."""
  a = np.asarray(a, np.float64).reshape(len(a), -1)
  b = np.asarray(b, np.float64).reshape(len(b), -1)
  a = a - a.mean(1, keepdims=True)
  b = b - b.mean(1, keepdims=True)
  denominator = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
  return np.divide((a * b).sum(1), denominator, out=np.zeros(len(a)),
                   where=denominator > 0)


def adversarial_pairs(labels: np.ndarray, num_pairs: int):
  """(source, target) indices: each source with the next image of another class."""
  n = len(labels)
  order = (np.arange(n)[:, None] + np.arange(1, n)[None, :]) % n  # next ones
  differs = labels[order] != labels[:, None]
  has_other = differs.any(1)
  sources = np.flatnonzero(has_other)[:num_pairs]
  targets = order[sources, differs[sources].argmax(1)]
  return sources, targets


def saliency_maps(model, x, ecfg, layer: str, k: int) -> dict:
  """``{method: map}`` for Table 3's methods (CAM only with a pooled head)."""
  from bort_jax import explain  # pylint: disable=import-outside-toplevel

  maps = {}
  if model.head_pool is not None:
    maps["CAM"] = explain.cam(model, x)
  maps["IG"] = explain.integrated_gradients(model, x, steps=ecfg.ig_steps)
  maps["RISE"] = explain.rise(model, x, num_masks=ecfg.rise_num_masks,
                              cell_size=ecfg.rise_cell_size, seed=ecfg.seed)
  maps["XRAI"] = explain.xrai(model, x, steps=ecfg.xrai_steps)
  maps["GuidedIG"] = explain.guided_ig(model, x, steps=ecfg.guided_ig_steps)
  maps["SAT"] = explain.sat(model, x, layer=layer, k=k, B=ecfg.B)
  return maps


def analyze_run(model, images, labels, ecfg, layer: str, k: int,
                progress) -> dict:
  """Every measurement of Section 4.2 for one trained model (arrays)."""
  from bort_jax import explain  # pylint: disable=import-outside-toplevel

  shown = images[:ecfg.num_show]
  out = {}
  progress.set_postfix_str("gram")
  out["gram"] = explain.gram_distribution(model)
  progress.update()
  progress.set_postfix_str("reconstruction ratios")
  out["ratios"] = explain.reconstruction_ratios(model, images)
  progress.update()
  progress.set_postfix_str("reconstruct")
  out["reconstruction"] = explain.reconstruct(model, shown, layer=layer)
  progress.update()
  progress.set_postfix_str("saliency")
  out["maps"] = saliency_maps(model, images, ecfg, layer, k)
  progress.update()
  progress.set_postfix_str("deletion/insertion")
  out["deletion_insertion"] = {
      method: explain.deletion_insertion(model, images, saliency,
                                         step=ecfg.deletion_step)
      for method, saliency in out["maps"].items()}
  progress.update()
  progress.set_postfix_str("decompose")
  decomposition = explain.decompose(model, shown, layer=layer, k=k, B=ecfg.B)
  out["decomposition"] = decomposition
  out["clusters"] = explain.cluster_components(
      decomposition.components[0], min(ecfg.n_clusters, k), seed=ecfg.seed)
  progress.update()
  progress.set_postfix_str("synthesize")
  sources, targets = adversarial_pairs(labels, ecfg.adversarial_pairs)
  if not sources.size:
    raise ValueError(f"all {len(labels)} explained images have label "
                     f"{labels[0]}: adversarial synthesis needs two classes; "
                     "raise explain.num_images")
  x_adv = explain.synthesize_adversarial(model, images[sources],
                                         images[targets], layer=layer, k=k,
                                         B=ecfg.B)
  out["adversarial"] = {
      "sources": images[sources], "targets": images[targets], "x_adv": x_adv,
      "success_rate": explain.adversarial_success_rate(model, x_adv,
                                                       images[targets]),
      "predictions": np.asarray(jnp.argmax(model(x_adv), -1)),
      "target_classes": np.asarray(jnp.argmax(model(images[targets]), -1))}
  progress.update()
  return out


def _scalar(x) -> float:
  return float(np.mean(np.asarray(x)))


def summarize_model(key: str, group: dict, analyses: dict, images, layer: str,
                    k: int, ecfg, out_dir: str) -> dict:
  """The report entry of one model: numbers from ``analyses`` and its figures."""
  from bort_jax import plots  # pylint: disable=import-outside-toplevel

  opts = list(group["runs"])
  first_config = group["runs"][opts[0]][2]
  first_model = group["runs"][opts[0]][1]
  entry = {"label": group["label"], "model": first_config.model,
           "model_overrides": dict(first_config.get("model_overrides") or {}),
           "num_params": int(sum(p.size for p in jax.tree.leaves(
               nnx.state(first_model, nnx.Param)))),
           "layer": layer, "runs": {}, "notes": []}
  for opt, (run_dir, _, config) in group["runs"].items():
    last = read_metrics(run_dir)[-1]
    entry["runs"][opt] = {
        "optimizer": config.optimizer, "learning_rate": config.learning_rate,
        "lam": config.lam, "weight_decay": config.weight_decay,
        "momentum": config.momentum, "batch_size": config.batch_size,
        "epochs": round(float(last["epoch"]), 2), "steps": int(last["step"]),
        "top1": last["top1"], "top5": last["top5"],
        "eval_loss": last["eval_loss"], "seed": config.seed,
        "workdir": os.path.relpath(run_dir, out_dir)}

  entry["gram"] = {opt: {layer_name: {
      "diag_mean": _scalar(g["diag"]), "diag_std": float(np.std(g["diag"])),
      "offdiag_abs_mean": (_scalar(np.abs(g["offdiag"])) if np.size(
          g["offdiag"]) else None)}
      for layer_name, g in analyses[opt]["gram"].items()} for opt in opts}
  entry["reconstruction_ratio"] = {
      opt: {name: _scalar(r) for name, r in analyses[opt]["ratios"].items()}
      for opt in opts}
  shown = images[:ecfg.num_show]
  entry["reconstruction_correlation"] = {
      opt: _scalar(correlation(analyses[opt]["reconstruction"], shown))
      for opt in opts}
  methods = list(analyses[opts[0]]["deletion_insertion"])
  entry["table3"] = {method: {opt: {
      "deletion": _scalar(analyses[opt]["deletion_insertion"][method]
                          .deletion_auc),
      "insertion": _scalar(analyses[opt]["deletion_insertion"][method]
                           .insertion_auc)} for opt in opts}
      for method in methods}
  entry["table3_skipped"] = {}
  if "CAM" not in methods:
    entry["table3_skipped"]["CAM"] = (
        f"{group['label']} has no global pooling before its classifier "
        "(head_pool is None: the last feature map is flattened into dense "
        "layers), so CAM's class-weighted sum of channels is not defined")
  entry["decomposition"] = {opt: {
      "k": k, "n_clusters": int(len(np.unique(analyses[opt]["clusters"]))),
      "correlation": _scalar(correlation(
          analyses[opt]["decomposition"].reconstruction, shown))}
      for opt in opts}
  entry["adversarial"] = {opt: {
      "success_rate": float(analyses[opt]["adversarial"]["success_rate"]),
      "pairs": int(len(analyses[opt]["adversarial"]["x_adv"]))}
      for opt in opts}
  if k < ecfg.k:
    entry["notes"].append(f"`{layer}` has {k} channels, so SAT, decomposition "
                          f"and synthesis use k = {k} instead of {ecfg.k}")

  def path(name):
    return f"{key}_{name}.png"

  def draw(name, fn, *args, **kwargs):
    fn(*args, os.path.join(out_dir, path(name)), **kwargs)
    entry.setdefault("figures", {})[name] = path(name)

  label = group["label"]
  draw("curves", plots.plot_training_curves,
       {opt: read_metrics(group["runs"][opt][0]) for opt in opts},
       title=f"{label}: training curves")
  draw("fig3a", plots.plot_gram_histograms,
       {opt: analyses[opt]["gram"] for opt in opts},
       title=f"{label}: Gram matrix entries per layer (Fig. 3a)")
  draw("fig3b", plots.plot_reconstruction_ratios,
       {opt: analyses[opt]["ratios"] for opt in opts},
       title=f"{label}: reconstruction ratio per layer (Fig. 3b)")
  draw("fig4", plots.plot_reconstructions, shown,
       {opt: analyses[opt]["reconstruction"] for opt in opts},
       title=f"{label}: reconstruction from {layer} (Fig. 4)")
  fig5_maps = {f"{method} · {opt}": analyses[opt]["maps"][method][:ecfg.num_show]
               for method in ("CAM", "SAT") if method in methods
               for opt in opts}
  draw("fig5", plots.plot_saliency_maps, shown, fig5_maps,
       title=f"{label}: CAM and SAT (k = {k}) saliency (Fig. 5)")
  draw("deletion_insertion", plots.plot_deletion_insertion,
       {method: {opt: analyses[opt]["deletion_insertion"][method]._asdict()
                 for opt in opts} for method in methods},
       title=f"{label}: deletion / insertion curves (Table 3)")
  draw("fig6a", plots.plot_decomposition, shown,
       {opt: analyses[opt]["decomposition"].reconstruction for opt in opts},
       title=f"{label}: reconstruction from the top-{k} binarised variables "
             "(Fig. 6a)")
  draw("fig6b", plots.plot_component_clusters,
       {opt: analyses[opt]["decomposition"].components[0] for opt in opts},
       {opt: analyses[opt]["clusters"] for opt in opts},
       title=f"{label}: top-{k} components of the first image, K-means "
             "(Fig. 6b)")
  first_adv = analyses[opts[0]]["adversarial"]
  draw("fig6c", plots.plot_adversarial, first_adv["sources"],
       first_adv["targets"],
       {opt: analyses[opt]["adversarial"]["x_adv"] for opt in opts},
       predictions={opt: analyses[opt]["adversarial"]["predictions"]
                    for opt in opts},
       target_classes=first_adv["target_classes"],
       success_rates={opt: analyses[opt]["adversarial"]["success_rate"]
                      for opt in opts},
       title=f"{label}: adversarial synthesis, k = {k} (Fig. 6c)")
  return entry


def explain_runs(run_dirs: Sequence[str], out_dir: str, ecfg, *, title: str,
                 command: str, recipe: Sequence[str] = (),
                 train_seconds: float | None = None,
                 progress: bool = True) -> dict:
  """Analyses ``run_dirs``, writes the report into ``out_dir``; returns it."""
  from bort_jax import report  # pylint: disable=import-outside-toplevel

  start = time.perf_counter()
  groups = group_runs(run_dirs)
  first_config = next(iter(next(iter(groups.values()))["runs"].values()))[2]
  images, labels, test_iterator = load_test_images(first_config,
                                                   ecfg.num_images)
  if ecfg.num_show > len(images):
    raise ValueError(f"explain.num_show={ecfg.num_show} exceeds num_images="
                     f"{len(images)}")
  os.makedirs(out_dir, exist_ok=True)
  total = sum(len(g["runs"]) for g in groups.values()) * len(STAGES)
  bar = tqdm(total=total, desc="explain", unit="stage", disable=not progress)
  models = {}
  with bar:
    for key, group in groups.items():
      some_model = next(iter(group["runs"].values()))[1]
      layer = some_model.layer_names[-1]
      channels = int(some_model.features(images[:1], layer).shape[-1])
      k = min(ecfg.k, channels)
      analyses = {}
      for opt, (_, model, _) in group["runs"].items():
        bar.set_description(f"explain {group['label']} · {opt}")
        analyses[opt] = analyze_run(model, images, labels, ecfg, layer, k, bar)
      models[key] = summarize_model(key, group, analyses, images, layer, k,
                                    ecfg, out_dir)
  explain_seconds = time.perf_counter() - start
  seeds = {"train": int(first_config.seed), "explain": int(ecfg.seed)}
  results = {
      "title": title, "command": command,
      "setup": {
          "dataset": dataset_summary(first_config, test_iterator),
          "recipe": list(recipe), "seeds": seeds,
          "explain": {"images": f"the first {len(images)} test images "
                                f"({ecfg.num_show} shown)", **{
                          k: v for k, v in ecfg.items()
                          if k not in ("num_images", "num_show", "seed")}},
          "wall_time_s": {"train": train_seconds, "explain": explain_seconds,
                          "total": explain_seconds + (train_seconds or 0.0)},
          "versions": versions(), "devices": devices()},
      "models": models,
      "notes": [
          "Every number above was computed by the run that wrote this report.",
          "Deletion/insertion follow the RISE protocol: pixels ranked by "
          "saliency, deleted to 0 in the normalised input space / inserted "
          "into an 11×11 Gaussian (σ = 5) blurred copy.",
      ]}
  if train_seconds is None:
    results["setup"]["wall_time_s"].pop("train")
  report.write_report(results, out_dir)
  return results


# ---------------------------------------------------------------------- CLI


def define_flags():
  """The CLI flags (defined on demand, so importing this module is free)."""
  flags.DEFINE_string("workdir", None, "a run of experiments.train, or a "
                      "folder of runs", required=True)
  flags.DEFINE_string("out", None, "where the report goes (default: --workdir)")
  config_flags.DEFINE_config_dict("explain", quickstart_config.explain_config(),
                                  "explainer settings")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # PAIR's XRAI logs every image
  workdir = flags.FLAGS.workdir
  runs = find_runs(workdir)
  out_dir = flags.FLAGS.out or workdir
  results = explain_runs(
      runs, out_dir, flags.FLAGS.explain,
      title="Bort explainability report: "
            + ", ".join(os.path.basename(os.path.normpath(r)) for r in runs),
      command="python -m experiments.explain " + " ".join(sys.argv[1:]))
  print(f"wrote {os.path.join(out_dir, 'report.md')} "
        f"({len(results['models'])} models)")


if __name__ == "__main__":
  define_flags()
  app.run(main)
