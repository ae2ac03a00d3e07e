"""Swin-S (Liu et al., 2021): 4x4 patch embedding (conv + LayerNorm), four
stages of 2, 2, 18, 2 Swin blocks with 3, 6, 12, 24 heads over widths 96,
192, 384, 768, patch merging between stages, a final LayerNorm, global
average pooling and a dense head. 49.61 M parameters for 1000 classes at
224x224. Drop-path 0.3 by default (the paper's Table 6 recipe).

A Swin block attends within non-overlapping 7x7 windows; every second block
shifts the windows by half a window (a cyclic roll of the feature map) and
masks attention between tokens that the roll brought together from different
image regions. Each block adds a learned relative-position bias, one value
per head for each of the (2·7-1)² relative offsets, to the attention logits.
When a stage's resolution is no larger than the window, the window shrinks
to the resolution and the shift is dropped (as in the reference code).

The patch-embedding conv, attention and MLP kernels are named ``kernel``; the
relative-position table (``relative_position_bias_table``) is not. The
explainers' conv-layer interface covers the patch embedding only
(``layer_names = ("patch_embed",)``, :mod:`bort_jax.models.patch_embedding`).
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bort_jax import validate
from bort_jax.models import common
from bort_jax.models import patch_embedding
from bort_jax.models import transformer

_DEPTHS = (2, 2, 18, 2)
_NUM_HEADS = (3, 6, 12, 24)
_HEAD_DIM = 32


def relative_position_index(window: int) -> np.ndarray:
  """(window², window²) index into the (2·window-1)² relative-offset table."""
  coords = np.stack(np.meshgrid(np.arange(window), np.arange(window),
                                indexing="ij")).reshape(2, -1)
  offsets = coords[:, :, None] - coords[:, None, :] + (window - 1)
  return offsets[0] * (2 * window - 1) + offsets[1]


def _partition(x: jax.Array, window: int) -> jax.Array:
  """(B, H, W, C) -> (B·nW, window², C), windows in row-major order."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // window, window, w // window, window, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def _merge(windows: jax.Array, window: int, b: int, h: int, w: int) -> jax.Array:
  """Inverse of :func:`_partition`."""
  x = windows.reshape(b, h // window, w // window, window, window, -1)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


def shifted_window_mask(height: int, width: int, window: int,
                        shift: int) -> np.ndarray:
  """(nW, window², window²) booleans, True where two tokens of a shifted
  window came from the same image region and may attend to each other."""
  bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
  region = np.zeros((height, width), np.int32)
  for i, rows in enumerate(bands):
    for j, cols in enumerate(bands):
      region[rows, cols] = 3 * i + j
  windows = _partition(region[None, :, :, None], window)[..., 0]
  return windows[:, :, None] == windows[:, None, :]


class SwinBlock(nnx.Module):
  """(Shifted-)window attention and an MLP, each pre-norm and residual."""

  def __init__(self, dim: int, num_heads: int, resolution: int, window: int,
               shift: int, mlp_ratio: float, drop_path_rate: float, *,
               rngs: nnx.Rngs):
    if resolution <= window:
      window, shift = resolution, 0
    if resolution % window:
      raise ValueError(f"stage resolution {resolution} must be a multiple of "
                       f"window_size {window}.")
    self.window = window
    self.shift = shift
    self.num_heads = num_heads
    self.norm1 = transformer.layer_norm(dim, rngs)
    self.attn = transformer.Attention(dim, num_heads, rngs=rngs)
    self.relative_position_bias_table = nnx.Param(transformer.TRUNC_NORMAL(
        rngs.params(), ((2 * window - 1) ** 2, num_heads)))
    self.norm2 = transformer.layer_norm(dim, rngs)
    self.mlp = transformer.Mlp(dim, int(dim * mlp_ratio), rngs=rngs)
    self.drop_path = transformer.drop_path(drop_path_rate, 4, rngs)

  def _relative_bias(self) -> jax.Array:
    index = relative_position_index(self.window).reshape(-1)
    bias = self.relative_position_bias_table[...][index]
    tokens = self.window * self.window
    return bias.reshape(tokens, tokens, self.num_heads).transpose(2, 0, 1)[None]

  def _window_attention(self, x: jax.Array) -> jax.Array:
    b, h, w, _ = x.shape
    if self.shift:
      x = jnp.roll(x, (-self.shift, -self.shift), axis=(1, 2))
    windows = _partition(x, self.window)
    mask = None
    if self.shift:
      # The same (nW, T, T) mask for every image -> (B·nW, 1, T, T).
      per_window = shifted_window_mask(h, w, self.window, self.shift)
      mask = jnp.broadcast_to(per_window[None, :, None],
                              (b, per_window.shape[0], 1) + per_window.shape[1:])
      mask = mask.reshape((-1,) + mask.shape[2:])
    attended = self.attn(windows, bias=self._relative_bias(), mask=mask)
    x = _merge(attended, self.window, b, h, w)
    if self.shift:
      x = jnp.roll(x, (self.shift, self.shift), axis=(1, 2))
    return x

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.drop_path(self._window_attention(self.norm1(x)))
    return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nnx.Module):
  """2x2 neighbouring tokens concatenated (4C), LayerNorm, dense to 2C."""

  def __init__(self, dim: int, *, rngs: nnx.Rngs):
    self.norm = transformer.layer_norm(4 * dim, rngs)
    self.reduction = nnx.Linear(4 * dim, 2 * dim, use_bias=False,
                                kernel_init=transformer.TRUNC_NORMAL, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    # Order (row, col) = (0,0), (1,0), (0,1), (1,1), as in the reference code.
    x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2],
                         x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
    return self.reduction(self.norm(x))


class SwinStage(nnx.Module):
  """Swin blocks alternating plain and shifted windows, then (optionally)
  patch merging."""

  def __init__(self, dim: int, depth: int, num_heads: int, resolution: int,
               window: int, mlp_ratio: float, drop_path_rates: Sequence[float],
               merge: bool, *, rngs: nnx.Rngs):
    self.blocks = nnx.List([
        SwinBlock(dim, num_heads, resolution, window,
                  0 if index % 2 == 0 else window // 2, mlp_ratio, rate,
                  rngs=rngs)
        for index, rate in zip(range(depth), drop_path_rates)])
    self.downsample = PatchMerging(dim, rngs=rngs) if merge else None

  def __call__(self, x: jax.Array) -> jax.Array:
    for block in self.blocks:
      x = block(x)
    return x if self.downsample is None else self.downsample(x)


class SwinTransformer(patch_embedding.PatchEmbeddingInterface, nnx.Module):
  """Swin Transformer; ``model(x)`` -> logits (B, num_classes).

  The white-box explainers read its patch embedding
  (:class:`bort_jax.models.patch_embedding.PatchEmbeddingInterface`):
  ``features(x, "patch_embed")`` is the conv's output *before*
  ``patch_norm``. The conv is the linear map Bort constrains, and Eq. 4's
  reconstruction ``Wᵀ(W z)`` and SAT's kernel-slice walk back are exact for
  it; the LayerNorm after it rescales each token by its own statistics (a
  non-linear, channel-mixing step) that neither explainer inverts. The head
  averages the last stage's tokens, not this map, so CAM refuses it.
  """

  def __init__(self, *, num_classes: int, rngs: nnx.Rngs, image_size: int = 224,
               patch_size: int = 4, in_channels: int = 3,
               depths: Sequence[int] = _DEPTHS,
               num_heads: Sequence[int] = _NUM_HEADS, window_size: int = 7,
               mlp_ratio: float = 4.0, width_multiplier: float = 1.0,
               min_channels: int = 1, drop_path_rate: float = 0.3):
    num_classes = validate.check_positive_int("num_classes", num_classes)
    self.in_channels = validate.check_positive_int("in_channels", in_channels)
    self.image_size = validate.check_positive_int("image_size", image_size)
    patch_size = validate.check_positive_int("patch_size", patch_size)
    window_size = validate.check_positive_int("window_size", window_size)
    scale = common.width_scaler(width_multiplier, min_channels)
    drop_path_rate = validate.check_rate("drop_path_rate", drop_path_rate)
    depths = tuple(validate.check_positive_int("depths", d) for d in depths)
    num_heads = tuple(validate.check_positive_int("num_heads", n) for n in num_heads)
    if len(depths) != len(num_heads):
      raise ValueError(f"depths {depths} and num_heads {num_heads} must have "
                       "one entry per stage.")
    if image_size % patch_size:
      raise ValueError(f"image_size {image_size} must be a multiple of "
                       f"patch_size {patch_size}.")
    resolution = image_size // patch_size
    if resolution % 2 ** (len(depths) - 1):
      raise ValueError(
          f"image_size / patch_size = {resolution} must be divisible by "
          f"2**{len(depths) - 1} for {len(depths)} stages of patch merging.")
    dim = num_heads[0] * scale(_HEAD_DIM)
    self.patch_embed = common.conv_layer(
        self.in_channels, dim, (patch_size, patch_size),
        strides=(patch_size, patch_size), padding="VALID", rngs=rngs)
    self.patch_norm = transformer.layer_norm(dim, rngs)
    rates = transformer.drop_path_rates(drop_path_rate, sum(depths))
    stages = []
    for stage, (depth, heads) in enumerate(zip(depths, num_heads)):
      if dim % heads:
        raise ValueError(f"stage {stage} width {dim} must be divisible by "
                         f"its num_heads {heads}.")
      merge = stage < len(depths) - 1
      first = sum(depths[:stage])
      stages.append(SwinStage(dim, depth, heads, resolution, window_size,
                              mlp_ratio, rates[first:first + depth], merge,
                              rngs=rngs))
      if merge:
        dim, resolution = 2 * dim, resolution // 2
    self.stages = nnx.List(stages)
    self.norm = transformer.layer_norm(dim, rngs)
    self.head = nnx.Linear(dim, num_classes, kernel_init=transformer.TRUNC_NORMAL,
                           rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    validate.check_image_shape("x", x.shape, channels=self.in_channels,
                              image_size=self.image_size)
    x = self.patch_norm(self.patch_embed(x))
    for stage in self.stages:
      x = stage(x)
    return self.head(jnp.mean(self.norm(x), axis=(1, 2)))


def swin_small(*, num_classes: int = 1000, rngs: nnx.Rngs, **overrides
               ) -> SwinTransformer:
  """Swin-S. Overrides: ``image_size`` (224), ``patch_size`` (4),
  ``in_channels`` (3), ``depths`` (2, 2, 18, 2), ``num_heads`` (3, 6, 12, 24),
  ``window_size`` (7), ``mlp_ratio`` (4), ``width_multiplier`` (scales the head
  dim 32), ``min_channels`` (floors that scaled head dim at min(32,
  min_channels); 1), ``drop_path_rate`` (0.3)."""
  return SwinTransformer(num_classes=num_classes, rngs=rngs, **overrides)
