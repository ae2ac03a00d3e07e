"""Explainers for conv models (Section 4.2, Appendix A.3-A.5 of the Bort paper).

Every function takes an NNX conv model of the ``bort_jax.models`` interface
and a batch of NHWC images, is jit-compiled (one executable per model graph,
static options and shapes, cached) and batched over images.  ``target=None``
means the class the model predicts on ``x``.
"""

from bort_jax.diagnostics import gram_distribution
from bort_jax.explain.guided_backprop import guided_relu, reconstruct
from bort_jax.explain.reconstruction_ratio import reconstruction_ratios
from bort_jax.explain.attribution import (
    guided_ig,
    integrated_gradients,
    rise,
    xrai,
)
from bort_jax.explain.class_activation import cam
from bort_jax.explain.metrics import (
    DeletionInsertion,
    blur,
    deletion_insertion,
    pixel_ranks,
)
from bort_jax.explain.activation_tracking import DEFAULT_GAMMA, binarize, sat
from bort_jax.explain.synthesis import (
    Decomposition,
    adversarial_success_rate,
    cluster_components,
    decompose,
    synthesize_adversarial,
)

__all__ = [
    "DEFAULT_GAMMA",
    "Decomposition",
    "DeletionInsertion",
    "adversarial_success_rate",
    "binarize",
    "blur",
    "cam",
    "cluster_components",
    "decompose",
    "deletion_insertion",
    "gram_distribution",
    "guided_ig",
    "guided_relu",
    "integrated_gradients",
    "pixel_ranks",
    "reconstruct",
    "reconstruction_ratios",
    "rise",
    "sat",
    "synthesize_adversarial",
    "xrai",
]
