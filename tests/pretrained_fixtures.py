"""Random torchvision/timm state dicts rebuilt from a small manifest, numpy only.

``tests/make_pretrained_fixtures.py`` (run once, in a venv with torch, torchvision
and timm) fills every tensor of the original model with :func:`state_dict` from
a manifest of names, shapes, dtypes and value ranges, runs it in eval mode on
:func:`images` and stores the logits. ``tests/test_pretrained.py`` rebuilds the
identical state dict and images here, without torch, and compares our
converted model's logits with the stored ones.
"""

import json
import os

import numpy as np

FIXTURES = os.path.join(os.path.dirname(__file__), "data", "pretrained")

# (image size, batch) the originals run at: the smallest each supports with
# the checkpoint layout of its 224-pixel version (DeiT's position embedding
# and Swin's windows fix 224).
INPUTS = {"resnet50": (64, 2), "vgg16": (64, 2), "deit_small": (224, 2),
          "swin_small": (224, 2)}


def state_dict(manifest: dict) -> dict[str, np.ndarray]:
  """The manifest's tensors, in its order, from one seeded generator: each
  entry is ``uniform(low, high)`` (float32 draws) or a ``constant``."""
  rng = np.random.default_rng(manifest["seed"])
  state = {}
  for entry in manifest["tensors"]:
    shape, dtype = tuple(entry["shape"]), np.dtype(entry["dtype"])
    if "constant" in entry:
      state[entry["name"]] = np.full(shape, entry["constant"], dtype)
    else:
      low, high = np.float32(entry["low"]), np.float32(entry["high"])
      draw = rng.random(shape, dtype=np.float32)
      state[entry["name"]] = (draw * (high - low) + low).astype(dtype)
  return state


def images(manifest: dict) -> np.ndarray:
  """The manifest's NCHW float32 input batch, uniform in [-2, 2)."""
  rng = np.random.default_rng(manifest["input_seed"])
  return rng.random(tuple(manifest["input_shape"]), dtype=np.float32) * 4 - 2


def probe(state: dict[str, np.ndarray], x: np.ndarray) -> list[float]:
  """A few numbers that change if numpy's generator stream ever does."""
  first = next(iter(state.values())).ravel()
  return [float(v) for v in first[:4]] + [float(v) for v in x.ravel()[:4]]


def manifest_path(name: str) -> str:
  return os.path.join(FIXTURES, f"{name}.json")


def logits_path(name: str) -> str:
  return os.path.join(FIXTURES, f"{name}_logits.npz")


def load(name: str) -> tuple[dict, np.ndarray, np.ndarray]:
  """(manifest, reference logits, probe) of one model's fixture."""
  with open(manifest_path(name)) as f:
    manifest = json.load(f)
  with np.load(logits_path(name)) as stored:
    return manifest, stored["logits"], stored["probe"]
