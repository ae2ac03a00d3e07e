"""The explainers' conv-layer interface for a transformer's patch embedding.

DeiT-S and Swin-S have one conv, the patch embedding: a ``p x p`` kernel with
stride ``p`` (non-overlapping patches), i.e. one dense map per patch, and the
only layer the white-box explainers can walk back by a kernel transpose
(Eq. 4). Everything after it (attention, GELU MLPs, a class token or token
pooling) is not a conv layer, so the interface exposes that one layer:
``features(x, "patch_embed")`` is the conv's output map (B, H/p, W/p, D)
itself, ``top_activation`` is ``"linear"`` and CAM is refused
(``head_pool = None``: the head reads transformer tokens, not a global pool
of this map).
"""

from typing import Optional

import jax

from bort_jax import validate

PATCH_EMBED = "patch_embed"


class PatchEmbeddingInterface:
  """Mixin for an ``nnx.Module`` with a ``patch_embed`` conv, ``in_channels``
  and ``image_size``: ``layer_names``, ``features``, ``conv``,
  ``conv_inputs``, ``top_activation``, ``explain_layer`` and ``head_pool``
  of :class:`bort_jax.models.ConvClassifier`'s interface."""

  layer_names = (PATCH_EMBED,)
  explain_layer = PATCH_EMBED
  # The head is dense on transformer tokens (a class token, or the mean of the
  # last stage's tokens after attention), not on a pool of a conv map: CAM
  # is undefined and refuses the model.
  head_pool = None

  def layer_name(self, layer) -> str:
    """The name of ``layer``: a 1-based index into ``layer_names`` or a name."""
    return self.layer_names[validate.layer_index(self.layer_names, layer) - 1]

  def features(self, x: jax.Array, layer, *, activation=None) -> jax.Array:
    """The patch-embedding conv's output (B, H/p, W/p, D), bias included.
    ``activation`` is accepted and unused: no ReLU precedes this conv."""
    del activation
    self.layer_name(layer)
    validate.check_image_shape("x", x.shape, channels=self.in_channels,
                              image_size=self.image_size)
    return self.patch_embed(x)

  def conv(self, layer):
    """The patch-embedding ``nnx.Conv``."""
    self.layer_name(layer)
    return self.patch_embed

  def conv_inputs(self, x: jax.Array) -> dict:
    """``{"patch_embed": x}``: the conv reads the images themselves."""
    return {PATCH_EMBED: x}

  def top_activation(self, layer) -> Optional[str]:
    """``"linear"``: the features are ``conv(x)``, so SAT and ``decompose``
    walk them back by placing kernel slices."""
    self.layer_name(layer)
    return "linear"
