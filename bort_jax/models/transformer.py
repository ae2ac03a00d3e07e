"""Layers DeiT and Swin share: multi-head attention in Flax layout, the MLP,
and stochastic depth.

Attention keeps the ``nnx.MultiHeadAttention`` kernel layout, which Bort's
default dimension numbers read: ``query``/``key``/``value`` kernels
``(in, heads, head_dim)`` (two output axes) and the ``out`` kernel
``(heads, head_dim, out)`` (one output axis over a two-axis fan-in). It is
written here rather than taken from ``nnx.MultiHeadAttention`` because Swin
adds a learned relative-position bias to the attention logits.
"""

from typing import Optional

import jax
from flax import nnx

# timm's ViT/Swin init: truncated normal, std 0.02, for dense kernels.
TRUNC_NORMAL = nnx.initializers.truncated_normal(0.02)


class Attention(nnx.Module):
  """Softmax attention over the token axis of (batch, tokens, dim) inputs."""

  def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs):
    if dim % num_heads:
      raise ValueError(
          f"dim {dim} must be divisible by num_heads {num_heads}.")
    head_dim = dim // num_heads
    project_in = dict(in_features=dim, out_features=(num_heads, head_dim),
                      kernel_init=TRUNC_NORMAL, rngs=rngs)
    self.query = nnx.LinearGeneral(**project_in)
    self.key = nnx.LinearGeneral(**project_in)
    self.value = nnx.LinearGeneral(**project_in)
    self.out = nnx.LinearGeneral((num_heads, head_dim), dim, axis=(-2, -1),
                                 kernel_init=TRUNC_NORMAL, rngs=rngs)

  def __call__(self, x: jax.Array, *, bias: Optional[jax.Array] = None,
               mask: Optional[jax.Array] = None) -> jax.Array:
    """``bias`` is added to the logits and ``mask`` (True = attend) applied;
    both broadcast to (batch, heads, tokens, tokens)."""
    attended = jax.nn.dot_product_attention(
        self.query(x), self.key(x), self.value(x), bias=bias, mask=mask)
    return self.out(attended)


class Mlp(nnx.Module):
  """dense -> exact GELU -> dense."""

  def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(dim, hidden, kernel_init=TRUNC_NORMAL, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, dim, kernel_init=TRUNC_NORMAL, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


def drop_path(rate: float, ndim: int, rngs: nnx.Rngs) -> nnx.Dropout:
  """Stochastic depth: drops a residual branch for whole samples, i.e.
  dropout whose mask is shared by every non-batch axis of an ``ndim`` input.
  Active in ``model.train()`` mode only."""
  return nnx.Dropout(rate, broadcast_dims=tuple(range(1, ndim)), rngs=rngs)


def drop_path_rates(rate: float, depth: int) -> list[float]:
  """Rates rising linearly from 0 to ``rate`` over the blocks (as timm)."""
  if depth == 1:
    return [0.0]
  return [rate * i / (depth - 1) for i in range(depth)]


def layer_norm(dim: int, rngs: nnx.Rngs, epsilon: float = 1e-5) -> nnx.LayerNorm:
  return nnx.LayerNorm(dim, epsilon=epsilon, rngs=rngs)
