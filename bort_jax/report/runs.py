"""Trained runs on disk: discovery, grouping by model, test images, provenance."""

from __future__ import annotations

from collections.abc import Sequence
import importlib.metadata
import json
import os
import platform
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

OPTIMIZER_LABELS = {"sgd": "SGD", "bort_sgd": "Bort-S", "adamw": "AdamW",
                    "bort_adamw": "Bort-A", "lamb": "LAMB", "bort_lamb": "Bort-L"}
MODEL_LABELS = {"lenet": "LeNet", "acnn_small_mnist": "ACNN-Small",
                "acnn_small_cifar": "ACNN-Small", "acnn_base": "ACNN-Base",
                "vgg16": "VGG16", "resnet50": "ResNet50"}
VERSIONED = ("jax", "jaxlib", "flax", "optax", "numpy", "scikit-learn",
             "saliency", "matplotlib", "bort_jax")


def check_writable(out_dir: str) -> str:
  """Creates ``out_dir`` and checks a file can be written there; returns it.

  Called before any training or explaining, so a bad ``--out`` fails first.
  """
  try:
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write_check_"):
      pass
  except OSError as error:
    raise PermissionError(
        f"the report directory {out_dir!r} is not writable ({error.strerror}); "
        "pass a writable --out") from error
  if not os.access(out_dir, os.W_OK):
    raise PermissionError(f"the report directory {out_dir!r} is not writable; "
                          "pass a writable --out")
  return out_dir


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
  """The evaluation records of ``run_dir/metrics.jsonl`` (those with top-1)."""
  path = os.path.join(run_dir, "metrics.jsonl")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} is missing: has {run_dir!r} finished an "
                            "evaluation?")
  with open(path, encoding="utf-8") as f:
    records = [json.loads(line) for line in f if line.strip()]
  records = [r for r in records if "top1" in r]
  if not records:
    raise ValueError(f"{path} holds no evaluation record")
  return records


def model_key(config) -> tuple[str, str]:
  """(key, label) of a run's model, e.g. ("acnn_small_mnist_w0.5",
  "ACNN-Small (width ×0.5)")."""
  overrides = dict(config.get("model_overrides") or {})
  width = overrides.get("width_multiplier", 1.0)
  key = config.model + ("" if width == 1.0 else f"_w{width:g}")
  label = MODEL_LABELS.get(config.model, config.model)
  if width != 1.0:
    label += f" (width ×{width:g})"
  return key, label


def group_runs(run_dirs: Sequence[str]) -> dict:
  """``{model key: {"label", "dataset", "runs": {optimizer label: [(run_dir,
  model, config), ...]}}}``: runs of one optimizer (several seeds) are listed
  together, baseline optimizers before Bort ones."""
  from bort_jax import train  # pylint: disable=import-outside-toplevel

  groups: dict = {}
  for run_dir in run_dirs:
    model, config = train.load_trained(run_dir)
    key, label = model_key(config)
    if groups and config.dataset != next(iter(groups.values()))["dataset"]:
      raise ValueError(f"run {run_dir!r} uses dataset {config.dataset!r}; all "
                       "runs of one report must share a dataset")
    group = groups.setdefault(key, {"label": label, "dataset": config.dataset,
                                    "runs": {}})
    opt = OPTIMIZER_LABELS.get(config.optimizer, config.optimizer)
    group["runs"].setdefault(opt, []).append((run_dir, model, config))
  for group in groups.values():
    group["runs"] = dict(sorted(group["runs"].items(),
                                key=lambda item: item[1][0][2].optimizer
                                .startswith("bort_")))
  return groups


def test_split(config, batch_size: int):
  """A fresh iterator over the whole test split (fixed order, padded)."""
  from bort_jax import data  # pylint: disable=import-outside-toplevel
  return data.load(config.dataset, split="test", batch_size=batch_size,
                   train=False, data_dir=config.get("data_dir"),
                   image_size=config.get("image_size"))


def gather_test_images(iterator, indices) -> tuple[np.ndarray, np.ndarray]:
  """The test images and labels at ``indices`` (positions in the split's
  fixed order), in the order given, from one pass over a fresh
  ``iterator``."""
  indices = np.asarray(indices, int)
  found, start = {}, 0
  wanted = set(indices.tolist())
  for batch in iterator:
    keep = np.asarray(batch["mask"]).astype(bool)
    images, labels = np.asarray(batch["image"])[keep], np.asarray(
        batch["label"])[keep]
    for i in wanted.intersection(range(start, start + len(images))):
      found[i] = images[i - start], labels[i - start]
    start += len(images)
    if len(found) == len(wanted):
      break
  if len(found) != len(wanted):
    raise ValueError(f"test indices {sorted(wanted - set(found))[:5]} are "
                     f"beyond the {start} test images")
  return (np.stack([found[i][0] for i in indices.tolist()]),
          np.array([found[i][1] for i in indices.tolist()]))


def test_images(config, num_images: int, seed: int = 0):
  """``num_images`` test images drawn at random without replacement (fixed
  ``seed``) from the whole test split (all of it when the split is
  smaller), their labels, and an iterator over the split."""
  iterator = test_split(config, 256)
  total = int(iterator.num_examples)
  if num_images < 1:
    raise ValueError(f"num_images must be ≥ 1; got {num_images}")
  indices = np.sort(np.random.default_rng([seed, 4]).choice(
      total, min(num_images, total), replace=False))
  images, labels = gather_test_images(iterator, indices)
  return jnp.asarray(images), labels, test_split(config, 256)


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


def paper_layer(model) -> str:
  """The layer the paper explains this model from (Fig. 4-6, SAT).

  Models that declare ``explain_layer`` (ACNN-Base: its 8th conv; see the
  white-box interface in :mod:`bort_jax.explain`) use it; others use their
  last conv layer.
  """
  layer = getattr(model, "explain_layer", None)
  return layer if layer else model.layer_names[-1]


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
