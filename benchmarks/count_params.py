"""Parameter counts of every model in ``bort_jax.models``, at the paper's input
size and class count, without allocating weights (``nnx.eval_shape``).

Prints a markdown table (all parameters; the kernels Bort's default mask
selects) and, with ``--out``, writes it to that file below its hand-written part.

    python -m benchmarks.count_params [--out docs/models.md]
"""

import os
import sys

import jax
import numpy as np
from flax import nnx

import bort_jax
from bort_jax import models
from experiments import _cli

# name -> (input, classes), as the paper uses each model.
SETTINGS = {
    "lenet": ("28x28x1 (MNIST)", 10, {}),
    "lenet@cifar": ("32x32x3 (CIFAR-10)", 10, {"in_channels": 3}),
    "acnn_small_mnist": ("28x28x1 (MNIST)", 10, {}),
    "acnn_small_cifar": ("32x32x3 (CIFAR-10)", 10, {}),
    "acnn_base": ("224x224x3 (ImageNet)", 1000, {}),
    "vgg16": ("224x224x3 (ImageNet)", 1000, {}),
    "resnet50": ("224x224x3 (ImageNet)", 1000, {}),
    "deit_small": ("224x224x3 (ImageNet)", 1000, {}),
    "swin_small": ("224x224x3 (ImageNet)", 1000, {}),
}


# Published sizes (torchvision / timm), in millions, for the ImageNet models.
REFERENCE_M = {"vgg16": 138.36, "resnet50": 25.56, "deit_small": 22.05,
               "swin_small": 49.61}


def count(name: str, num_classes: int, overrides: dict) -> tuple[int, int, int]:
  """(all parameters, kernels under Bort's default mask, their parameters)."""
  model = nnx.eval_shape(lambda: models.create(
      name, num_classes=num_classes, rngs=nnx.Rngs(0), **overrides))
  params = nnx.state(model, nnx.Param)
  sizes = [int(np.prod(p.shape)) for p in jax.tree.leaves(params)]
  selected = jax.tree.leaves(bort_jax.default_mask(params))
  kernel_sizes = [s for s, chosen in zip(sizes, selected, strict=True) if chosen]
  return sum(sizes), len(kernel_sizes), sum(kernel_sizes)


def table() -> str:
  lines = ["| model | input | classes | parameters | reference | Bort kernels "
           "| kernel parameters |", "|---|---|---:|---:|---:|---:|---:|"]
  for key, (image, num_classes, overrides) in SETTINGS.items():
    name = key.split("@")[0]
    total, kernels, kernel_params = count(name, num_classes, overrides)
    reference = f"{REFERENCE_M[name]:.2f} M" if name in REFERENCE_M else "—"
    lines.append(f"| `{name}` | {image} | {num_classes} | {total:,} "
                 f"({total / 1e6:.2f} M) | {reference} | {kernels} "
                 f"| {kernel_params:,} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> None:
  parser = _cli.ArgumentParser(__doc__)
  parser.add_argument("--out", default=None,
                      help="also write the table here (docs/models.md)")
  args = parser.parse_args(argv)
  text = ("## Model sizes\n\nWritten by `python -m benchmarks.count_params "
          "--out docs/models.md`; "
          "counts from `nnx.eval_shape`, no weights allocated. \"Bort kernels\": "
          "leaves selected by `bort_jax.default_mask` (conv, dense, attention, "
          "patch-embedding kernels).\n\n" + table())
  print(text)
  if args.out:
    # The page's hand-written part, above this section, is kept.
    kept = ""
    if os.path.exists(args.out):
      with open(args.out) as f:
        kept = f.read().partition("## Model sizes")[0]
    with open(args.out, "w") as f:
      f.write(kept + text)


if __name__ == "__main__":
  main(sys.argv[1:])
