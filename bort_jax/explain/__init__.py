"""Explainers for conv models (Section 4.2, Appendix A.3-A.5 of the Bort paper).

Every function takes an NNX conv model of the ``bort_jax.models`` interface
and a batch of NHWC images, is jit-compiled (one executable per model graph,
static options and shapes, cached) and batched over images.  ``target=None``
means the class the model predicts on ``x``.
"""

from bort_jax.explain.backtrack import (
    gram_distribution,
    guided_relu,
    reconstruct,
    reconstruction_ratios,
)
from bort_jax.explain.sat import DEFAULT_GAMMA, binarize, sat

__all__ = [
    "DEFAULT_GAMMA",
    "binarize",
    "gram_distribution",
    "guided_relu",
    "reconstruct",
    "reconstruction_ratios",
    "sat",
]
