"""bort_jax: Bort, the optimizer with a bounded orthogonal constraint (Zhang et al., ICLR 2023).

Training:  ``optax.chain(bort_jax.bort(lam), optax.adamw(lr))`` or the paper's variants
``bort_sgd`` (Bort-S), ``bort_adamw`` (Bort-A) and ``bort_lamb`` (Bort-L), e.g.
``bort_jax.bort_sgd(0.01, lam=0.1, momentum=0.9)`` (``lam`` is keyword-only).
Kernels:   ``bort_jax.kernels`` (which leaves are kernels, their layouts).
Models:    ``bort_jax.models.create(name, num_classes=..., rngs=...)``.
Analysis:  ``bort_jax.explain`` (reconstruction, SAT, CAM, IG, RISE, XRAI, GuidedIG, ...).
"""

import importlib as _importlib

from bort_jax.kernels import BortDimensionNumbers, default_mask
from bort_jax.optim import (
    BortState,
    MODES,
    add_bort_correction,
    bort,
    bort_adamw,
    bort_correction,
    bort_lamb,
    bort_sgd,
)
from bort_jax.diagnostics import orthogonality_stats

__version__ = "0.1.0"

_SUBMODULES = ("models", "explain", "data", "train", "plots")


def __getattr__(name):
  # Submodules load on first use, so `import bort_jax` needs only jax, optax
  # and numpy (the base install); the rest come with the extras.
  if name in _SUBMODULES:
    try:
      return _importlib.import_module(f"bort_jax.{name}")
    except ModuleNotFoundError as e:
      raise ModuleNotFoundError(
          f"bort_jax.{name} needs {e.name!r}, which is not installed: "
          f'pip install "bort_jax[{name}]" (or "bort_jax[all]").',
          name=e.name) from e
  raise AttributeError(f"module 'bort_jax' has no attribute {name!r}")


__all__ = [
    "BortDimensionNumbers",
    "BortState",
    "MODES",
    "add_bort_correction",
    "bort",
    "bort_adamw",
    "bort_correction",
    "bort_lamb",
    "bort_sgd",
    "default_mask",
    "orthogonality_stats",
    *_SUBMODULES,
]
