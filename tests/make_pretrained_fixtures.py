"""Writes tests/data/pretrained/: the originals' logits on random weights.

Run once in a venv with torch, torchvision, timm and numpy (not bort_jax's):

    python3 -m venv /work/torchvenv
    /work/torchvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm safetensors numpy
    /work/torchvenv/bin/python tests/make_pretrained_fixtures.py

For torchvision's resnet50/vgg16 and timm's deit_small_patch16_224 /
swin_small_patch4_window7_224 (``pretrained=False``) it fills EVERY tensor of the
state dict, in state-dict order, from one seeded generator
(:func:`pretrained_fixtures.state_dict`), loads it strictly, runs the model in
eval mode in float32 on seeded images and writes ``NAME.json`` (names, shapes,
dtypes, value ranges, seeds, versions) and ``NAME_logits.npz`` (logits and a
probe of the generator stream). No weights are written: the test rebuilds them.

Value ranges keep activations well conditioned: weights uniform with standard
deviation gain/sqrt(fan_in) (gain sqrt 2 in VGG16, which has no batch norm, 1
elsewhere: He's gain in the ResNet's residual stream doubles its variance
every block), norm scales in [0.5, 1.5], biases and running means in
[-0.2, 0.2], running variances in [0.5, 1.5], class token and position
embedding with std 0.5, Swin's relative-position tables with std 1 (so that a
mis-indexed table shows in the logits).
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import timm
import torch
import torchvision

sys.path.insert(0, os.path.dirname(__file__))
import pretrained_fixtures  # noqa: E402

SEED = {"resnet50": 50, "vgg16": 16, "deit_small": 22, "swin_small": 49}


def build(name: str) -> torch.nn.Module:
  if name == "resnet50":
    return torchvision.models.resnet50(weights=None)
  if name == "vgg16":
    return torchvision.models.vgg16(weights=None)
  if name == "deit_small":
    return timm.create_model("deit_small_patch16_224", pretrained=False)
  if name == "swin_small":
    return timm.create_model("swin_small_patch4_window7_224", pretrained=False)
  raise ValueError(name)


def _uniform(std: float, mean: float = 0.0) -> dict:
  half = math.sqrt(3.0) * std
  return {"low": mean - half, "high": mean + half}


def value_range(name: str, tensor: torch.Tensor, model: str) -> dict:
  if not tensor.is_floating_point():
    if not name.endswith("num_batches_tracked"):
      raise ValueError(f"unexpected integer tensor {name}")
    return {"constant": 0}
  leaf = name.rsplit(".", 1)[-1]
  if leaf == "running_var":
    return {"low": 0.5, "high": 1.5}
  if leaf == "running_mean":
    return {"low": -0.2, "high": 0.2}
  if leaf == "relative_position_bias_table":
    return _uniform(1.0)
  if leaf in ("cls_token", "pos_embed"):
    return _uniform(0.5)
  if tensor.ndim == 1 and leaf == "weight":  # a norm's scale
    return {"low": 0.5, "high": 1.5}
  if leaf == "bias":
    return {"low": -0.2, "high": 0.2}
  if tensor.ndim >= 2:
    gain = math.sqrt(2.0) if model == "vgg16" else 1.0
    return _uniform(gain / math.sqrt(math.prod(tensor.shape[1:])))
  raise ValueError(f"no value range for {name} {tuple(tensor.shape)}")


def main(out: str) -> None:
  os.makedirs(out, exist_ok=True)
  torch.set_grad_enabled(False)
  for name, (size, batch) in pretrained_fixtures.INPUTS.items():
    model = build(name).eval()
    manifest = {
        "model": name, "seed": SEED[name], "input_seed": SEED[name] + 1000,
        "input_shape": [batch, 3, size, size],
        "versions": {"torch": torch.__version__,
                     "torchvision": torchvision.__version__,
                     "timm": timm.__version__, "numpy": np.__version__},
        "tensors": [
            {"name": k, "shape": list(v.shape),
             "dtype": str(v.dtype).replace("torch.", ""),
             **value_range(k, v, name)}
            for k, v in model.state_dict().items()],
    }
    state = pretrained_fixtures.state_dict(manifest)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()},
                          strict=True)
    x = pretrained_fixtures.images(manifest)
    logits = model(torch.from_numpy(x)).numpy().astype(np.float32)
    with open(pretrained_fixtures.manifest_path(name).replace(
        pretrained_fixtures.FIXTURES, out), "w") as f:
      json.dump(manifest, f, indent=0)
    np.savez_compressed(
        pretrained_fixtures.logits_path(name).replace(
            pretrained_fixtures.FIXTURES, out),
        logits=logits, probe=np.array(pretrained_fixtures.probe(state, x)))
    print(f"{name}: {len(state)} tensors, "
          f"{sum(v.size for v in state.values()) / 1e6:.2f} M values, "
          f"input {tuple(x.shape)}, logits std {logits.std():.3g}, "
          f"max |logit| {np.abs(logits).max():.3g}, "
          f"spread over classes {logits.std(axis=1).mean():.3g}")


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default=pretrained_fixtures.FIXTURES)
  main(parser.parse_args().out)
