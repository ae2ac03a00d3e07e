"""Explainers for conv models (Section 4.2, Appendix A.3-A.5 of the Bort paper).

Every function takes a model and a batch of NHWC images ``(N, H, W, C)``,
N ≥ 1, is jit-compiled (one executable per model graph, static options and
shapes, cached) and batched over images.  ``target=None`` means the class the
model predicts on ``x`` (:func:`bort_jax.models.predict`).

Layout: a batch that looks channels-first raises ``ValueError`` naming its
shape and the NHWC shape it would have (the rule of :mod:`bort_jax.validate`:
against the model's ``in_channels``/``image_size`` where it declares them,
otherwise when axis 1 is 1, 3 or 4 and axes 2 and 3 are both > 4, e.g.
``(N, 3, 32, 32)``); transpose with ``x.transpose(0, 2, 3, 1)``.

One rank for saliency: ``sat``, ``cam``, ``rise``, ``xrai``,
``integrated_gradients`` and ``guided_ig`` return (N, H, W) maps, and
``deletion_insertion`` takes (N, H, W) maps of the images' shape.  IG and
GuidedIG reduce their per-channel attributions ``a`` by ``Σ_c |a_c|``
(:func:`reduce_channels`); ``per_channel=True`` returns the signed
(N, H, W, C) attributions (whose sum is ≈ f(x) − f(x₀)).  ``reconstruct``,
``decompose`` and ``synthesize_adversarial`` return images (N, H, W, C), not
saliency.  docs/explainers.md maps the argument names to PAIR saliency's and
captum's.

Black-box explainers (``integrated_gradients``, ``rise``, ``xrai``,
``guided_ig``, ``deletion_insertion``) take an ``nnx.Module`` or any
JAX-traceable callable mapping (B, H, W, C) images to (B, num_classes) logits.

White-box explainers (``reconstruct``, ``sat``, ``decompose``,
``synthesize_adversarial``, ``reconstruction_ratios``, ``cam``,
``gram_distribution``) take an ``nnx.Module`` with this interface, which
:class:`bort_jax.models.ConvClassifier` provides and a user's own model can
implement:

* ``layer_names``: the conv layers' names; ``layer=`` arguments are a name or
  a 1-based index into it;
* ``features(x, layer, *, activation=None)``: that conv layer's output after
  its activation, with every ReLU up to it replaced by ``activation`` when
  given (guided backprop passes :func:`guided_relu`);
* ``conv(layer)``: the layer's ``nnx.Conv`` (reconstruction ratios, Gram
  entries, SAT's kernel-slice path);
* ``conv_inputs(x)``: ``{name: the tensor that conv receives}``
  (``reconstruction_ratios``);
* ``head`` and ``head_pool`` (``cam``): the dense layer after a global
  ``"max"``/``"avg"`` pool of the last conv layer, or ``head=None`` when the
  last conv's channels are the class scores; ``__call__(x)``: the logits;
* optional ``top_activation(layer)``: ``"relu"`` or ``"linear"`` when the
  layer's features are ``relu(conv(·))`` or ``conv(·)`` of the previous
  layer's features (or of ``x``), which lets SAT and ``decompose`` walk the
  top conv back by placing kernel slices; None or absent means the general
  VJP;
* optional ``explain_layer``: the layer the paper explains the model from;
* optional ``in_channels`` and ``image_size`` (ints, any model, black-box
  ones too): the input the model takes, checked before any work.

Invalid input raises ``ValueError`` naming the argument, the value and what
is allowed (an empty batch, non-finite pixels or saliency, a target outside
``[0, num_classes)``, a black-box model whose logits on ``x`` are not finite);
NumPy integer scalars are accepted wherever an int is.  A map that comes out
non-finite from finite input raises ``FloatingPointError`` instead of being
returned.
"""

from bort_jax.diagnostics import gram_distribution
from bort_jax.explain._common import reduce_channels
from bort_jax.explain.guided_backprop import guided_relu, reconstruct
from bort_jax.explain.reconstruction_ratio import reconstruction_ratios
from bort_jax.explain.attribution import integrated_gradients, rise, xrai
from bort_jax.explain.guided_integrated_gradients import guided_ig
from bort_jax.explain.class_activation import cam
from bort_jax.explain.metrics import (
    DeletionInsertion,
    blur,
    deletion_insertion,
    normalized_auc,
    pixel_ranks,
)
from bort_jax.explain.activation_tracking import DEFAULT_GAMMA, binarize, sat
from bort_jax.explain.synthesis import (
    Decomposition,
    adversarial_outcomes,
    adversarial_success_rate,
    cluster_components,
    decompose,
    synthesize_adversarial,
)

__all__ = [
    "DEFAULT_GAMMA",
    "Decomposition",
    "DeletionInsertion",
    "adversarial_outcomes",
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
    "normalized_auc",
    "pixel_ranks",
    "reconstruct",
    "reconstruction_ratios",
    "reduce_channels",
    "rise",
    "sat",
    "synthesize_adversarial",
    "xrai",
]
