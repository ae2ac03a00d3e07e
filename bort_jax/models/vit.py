"""DeiT-S (Touvron et al.), i.e. ViT-S/16 with a class token: 16x16 patches
embedded by a conv, a learned position embedding over the class token and
the patches, 12 pre-norm blocks of width 384 with 6 heads and an MLP of 4x
width, a final LayerNorm, and a dense head on the class token. 22.05 M
parameters for 1000 classes at 224x224. Drop-path 0.1 by default (the
paper's Table 6 recipe); no attention or projection dropout.

The patch-embedding kernel is named ``kernel`` (Bort acts on it); the class
token (``cls_token``) and position embedding (``pos_embed``) are not. The
explainers' conv-layer interface covers the patch embedding only
(``layer_names = ("patch_embed",)``, :mod:`bort_jax.models.patch_embedding`).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from bort_jax import validate
from bort_jax.models import common
from bort_jax.models import patch_embedding
from bort_jax.models import transformer

_HEAD_DIM = 64
_LN_EPS = 1e-6


class EncoderBlock(nnx.Module):
  """x + drop_path(attn(norm1(x))), then x + drop_path(mlp(norm2(x)))."""

  def __init__(self, dim: int, num_heads: int, mlp_ratio: float,
               drop_path_rate: float, *, rngs: nnx.Rngs):
    self.norm1 = transformer.layer_norm(dim, rngs, _LN_EPS)
    self.attn = transformer.Attention(dim, num_heads, rngs=rngs)
    self.norm2 = transformer.layer_norm(dim, rngs, _LN_EPS)
    self.mlp = transformer.Mlp(dim, int(dim * mlp_ratio), rngs=rngs)
    self.drop_path = transformer.drop_path(drop_path_rate, 3, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.drop_path(self.attn(self.norm1(x)))
    return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(patch_embedding.PatchEmbeddingInterface, nnx.Module):
  """ViT with a class token; ``model(x)`` -> logits (B, num_classes).

  The white-box explainers read its patch embedding
  (:class:`bort_jax.models.patch_embedding.PatchEmbeddingInterface`); the head
  classifies from the class token, so CAM refuses it.
  """

  def __init__(self, *, num_classes: int, rngs: nnx.Rngs, image_size: int = 224,
               patch_size: int = 16, in_channels: int = 3, depth: int = 12,
               num_heads: int = 6, mlp_ratio: float = 4.0,
               width_multiplier: float = 1.0, min_channels: int = 1,
               drop_path_rate: float = 0.1):
    num_classes = validate.check_positive_int("num_classes", num_classes)
    self.in_channels = validate.check_positive_int("in_channels", in_channels)
    self.image_size = validate.check_positive_int("image_size", image_size)
    patch_size = validate.check_positive_int("patch_size", patch_size)
    depth = validate.check_positive_int("depth", depth)
    num_heads = validate.check_positive_int("num_heads", num_heads)
    scale = common.width_scaler(width_multiplier, min_channels)
    drop_path_rate = validate.check_rate("drop_path_rate", drop_path_rate)
    if image_size % patch_size:
      raise ValueError(f"image_size {image_size} must be a multiple of "
                       f"patch_size {patch_size}.")
    dim = num_heads * scale(_HEAD_DIM)
    num_tokens = (image_size // patch_size) ** 2 + 1
    self.patch_embed = common.conv_layer(
        self.in_channels, dim, (patch_size, patch_size),
        strides=(patch_size, patch_size), padding="VALID", rngs=rngs)
    self.cls_token = nnx.Param(
        transformer.TRUNC_NORMAL(rngs.params(), (1, 1, dim)))
    self.pos_embed = nnx.Param(
        transformer.TRUNC_NORMAL(rngs.params(), (1, num_tokens, dim)))
    self.blocks = nnx.List([
        EncoderBlock(dim, num_heads, mlp_ratio, rate, rngs=rngs)
        for rate in transformer.drop_path_rates(drop_path_rate, depth)])
    self.norm = transformer.layer_norm(dim, rngs, _LN_EPS)
    self.head = nnx.Linear(dim, num_classes, kernel_init=transformer.TRUNC_NORMAL,
                           rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    validate.check_image_shape("x", x.shape, channels=self.in_channels,
                              image_size=self.image_size)
    patches = self.patch_embed(x)
    tokens = patches.reshape(x.shape[0], -1, patches.shape[-1])
    cls = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, tokens.shape[-1]))
    tokens = jnp.concatenate([cls, tokens], axis=1) + self.pos_embed[...]
    for block in self.blocks:
      tokens = block(tokens)
    return self.head(self.norm(tokens)[:, 0])


def deit_small(*, num_classes: int = 1000, rngs: nnx.Rngs, **overrides
               ) -> VisionTransformer:
  """DeiT-S. Overrides: ``image_size`` (224), ``patch_size`` (16),
  ``in_channels`` (3), ``depth`` (12), ``num_heads`` (6), ``mlp_ratio`` (4),
  ``width_multiplier`` (scales the head dim 64), ``min_channels`` (floors
  that scaled head dim at min(64, min_channels); 1), ``drop_path_rate``
  (0.1)."""
  return VisionTransformer(num_classes=num_classes, rngs=rngs, **overrides)
