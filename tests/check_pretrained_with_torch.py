"""One-off check against torch itself, where torch and bort_jax both import.

Not part of `make test` (torch is no test dependency). For each of the four
models: the original with torch's own random init, saved as a `.pth` the way
users have it, loaded with `load_pretrained` (the `.pth` path), logits compared
in eval mode; then `export_pretrained` loaded into a fresh original with
`load_state_dict(strict=True)` must give the original's logits exactly.

    PYTHONPATH=$PWD python tests/check_pretrained_with_torch.py \
        --torch-site /work/torchvenv/lib/python3.11/site-packages

(`--torch-site` appends a venv's site-packages holding torch, torchvision and
timm, built for the same Python and numpy.)
"""

import argparse
import os
import sys
import tempfile

import numpy as np


def main(size_cnn: int = 64) -> None:
  import jax
  import jax.numpy as jnp
  import timm
  import torch
  import torchvision
  from flax import nnx

  from bort_jax import models

  torch.manual_seed(0)
  torch.set_grad_enabled(False)
  builders = {
      "resnet50": (torchvision.models.resnet50, size_cnn),
      "vgg16": (torchvision.models.vgg16, size_cnn),
      "deit_small": (lambda: timm.create_model("deit_small_patch16_224"), 224),
      "swin_small": (
          lambda: timm.create_model("swin_small_patch4_window7_224"), 224)}
  for name, (build, size) in builders.items():
    original = build().eval()
    path = os.path.join(tempfile.mkdtemp(), f"{name}.pth")
    torch.save(original.state_dict(), path)
    ours = models.load_pretrained(name, path)
    ours.eval()
    x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(
        np.float32)
    reference = original(torch.from_numpy(x)).numpy()
    with jax.default_matmul_precision("highest"):
      logits = np.asarray(nnx.jit(lambda m, x: m(x))(
          ours, jnp.asarray(x.transpose(0, 2, 3, 1))))
    fresh = build().eval()
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in
                           models.export_pretrained(name, ours).items()},
                          strict=True)
    back = fresh(torch.from_numpy(x)).numpy()
    error = np.abs(logits - reference).max() / np.abs(reference).max()
    print(f"{name}: .pth with torch's init, max relative logit error "
          f"{error:.2e}; exported and loaded strictly into torch, same logits: "
          f"{np.array_equal(back, reference)}")
    assert error <= 1e-4 and np.array_equal(back, reference), name


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--torch-site", default=None)
  args = parser.parse_args()
  if args.torch_site:
    sys.path.append(args.torch_site)
  main()
