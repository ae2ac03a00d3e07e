"""Tiny hand-built conv models with the bort_jax.models conv interface.

Used by tests/test_explain_*.py so the explainers can be checked against
hand-written references without the real model zoo.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class ConvSpec(NamedTuple):
  features: int
  kernel: tuple[int, int] = (3, 3)
  strides: int = 1
  padding: object = "SAME"
  relu: bool = True


class TinyConvNet(nnx.Module):
  """Convs (each optionally followed by ReLU), then a head.

  ``head_pool`` "max"/"avg": global pool + Dense (ACNN-Small style);
  "channel": no head, the last conv's channels are the logits after a global
  max pool (ACNN-Base style); None: flatten + Dense (LeNet style, no CAM).
  """

  def __init__(self, in_channels, specs, num_classes, *, rngs,
               head_pool="max", image_hw=None):
    self.specs = tuple(specs)
    self.layer_names = tuple(f"conv{i + 1}" for i in range(len(self.specs)))
    convs = []
    channels = in_channels
    for spec in self.specs:
      convs.append(nnx.Conv(channels, spec.features, spec.kernel,
                            strides=spec.strides, padding=spec.padding,
                            rngs=rngs))
      channels = spec.features
    self.convs = nnx.List(convs)
    self._head_kind = head_pool
    if head_pool in ("max", "avg"):
      self.head = nnx.Linear(channels, num_classes, rngs=rngs)
      self.head_pool = head_pool
    elif head_pool == "channel":
      self.head = None
      self.head_pool = "max"
    else:
      out_hw = self._out_hw(image_hw)
      self.head = None
      self.head_pool = None
      self.flat_head = nnx.Linear(out_hw[0] * out_hw[1] * channels,
                                  num_classes, rngs=rngs)

  def _out_hw(self, image_hw):
    probe = jnp.zeros((1,) + tuple(image_hw) + (self.convs[0].in_features,))
    return self.features(probe, len(self.specs)).shape[1:3]

  def _index(self, layer):
    return layer if isinstance(layer, int) else self.layer_names.index(layer) + 1

  def conv(self, layer):
    return self.convs[self._index(layer) - 1]

  def top_activation(self, layer):
    return "relu" if self.specs[self._index(layer) - 1].relu else "linear"

  def features(self, x, layer, *, activation=None):
    activation = jax.nn.relu if activation is None else activation
    for spec, conv in zip(self.specs[:self._index(layer)], self.convs):
      x = conv(x)
      if spec.relu:
        x = activation(x)
    return x

  def conv_inputs(self, x):
    inputs = {}
    for name, spec, conv in zip(self.layer_names, self.specs, self.convs):
      inputs[name] = x
      x = conv(x)
      if spec.relu:
        x = jax.nn.relu(x)
    return inputs

  def __call__(self, x, *, activation=None):
    z = self.features(x, len(self.specs), activation=activation)
    if self._head_kind == "max":
      return self.head(z.max(axis=(1, 2)))
    if self._head_kind == "avg":
      return self.head(z.mean(axis=(1, 2)))
    if self._head_kind == "channel":
      return z.max(axis=(1, 2))
    return self.flat_head(z.reshape(z.shape[0], -1))


def numpy_init(factory, seed=0):
  """``factory()`` (an NNX module) with its parameters drawn by NumPy.

  Builds the module abstractly (``nnx.eval_shape``) and fills kernels with
  N(0, 1/fan_in) and biases with N(0, 0.1²): no per-shape initializer
  compilation, which dominates the cost of tiny test models on CPU.
  """
  graphdef, state = nnx.split(nnx.eval_shape(factory))
  rng = np.random.default_rng(seed)

  def fill(leaf):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      return jax.random.key(seed)
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
      return jnp.zeros(leaf.shape, leaf.dtype)
    scale = 1.0 / np.sqrt(np.prod(leaf.shape[:-1])) if len(leaf.shape) >= 2 \
        else 0.1
    return jnp.asarray(scale * rng.normal(size=leaf.shape), leaf.dtype)

  return nnx.merge(graphdef, jax.tree.map(fill, state))


def tiny(in_channels, specs, num_classes, *, seed=0, cls=None, **kwargs):
  """A :class:`TinyConvNet` (or subclass ``cls``) with NumPy-drawn weights."""
  cls = TinyConvNet if cls is None else cls
  return numpy_init(lambda: cls(in_channels, specs, num_classes,
                                rngs=nnx.Rngs(seed), **kwargs), seed)


def set_kernel(conv, kernel, bias=None):
  conv.kernel[...] = jnp.asarray(kernel, jnp.float32)
  if bias is not None:
    conv.bias[...] = jnp.asarray(bias, jnp.float32)


def orthogonal_rows(fan_in, out, seed=0):
  """(fan_in, out) matrix K with K Kᵀ = I (needs out >= fan_in)."""
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(out, fan_in)))
  return q.T.astype(np.float32)


@functools.cache  # shared, never mutated by the tests
def single_conv(kernel_hw=(3, 3), cin=2, cout=18, orthogonal=True, seed=0,
                strides=1, padding="SAME"):
  """One conv layer; ``orthogonal``: flattened kernel with K Kᵀ = I."""
  model = tiny(cin, [ConvSpec(cout, kernel_hw, strides, padding)], 3,
               seed=seed)
  fan_in = kernel_hw[0] * kernel_hw[1] * cin
  if orthogonal:
    flat = orthogonal_rows(fan_in, cout, seed)
  else:
    flat = np.random.default_rng(seed).normal(size=(fan_in, cout)).astype(
        np.float32) / np.sqrt(fan_in)
  set_kernel(model.conv(1), flat.reshape(kernel_hw + (cin, cout)))
  return model


@functools.cache  # shared, never mutated by the tests
def two_layer(seed=0, head_pool="max", num_classes=4):
  """conv1 3×3 SAME + ReLU, conv2 2×2 stride 2 VALID + ReLU, pooled head."""
  return tiny(2, [ConvSpec(6, (3, 3), 1, "SAME"),
                  ConvSpec(8, (2, 2), 2, "VALID")], num_classes, seed=seed,
              head_pool=head_pool)


@functools.cache  # shared, never mutated by the tests
def orthogonal_two_layer(channels=32, seed=11):
  """As :func:`two_layer` (with ``channels`` at conv2) but with zero biases and
  Bort-like kernels: flattened kernels with orthonormal rows or columns."""
  model = tiny(2, [ConvSpec(6, (3, 3), 1, "SAME"),
                   ConvSpec(channels, (2, 2), 2, "VALID")], 4, seed=seed)
  for conv, (fan_in, out) in zip(model.convs, [(18, 6), (24, channels)]):
    flat = orthogonal_rows(fan_in, out, seed) if out >= fan_in else \
        orthogonal_rows(out, fan_in, seed).T
    set_kernel(conv, flat.reshape(conv.kernel.shape), np.zeros(out))
  return model


PATCH = np.array([[1.0, 0.0, 1.0],
                  [0.0, 1.0, 0.0],
                  [1.0, 0.0, 1.0]], np.float32)


@functools.cache  # shared, never mutated by the tests
def patch_detector(seed=0):
  """conv1: 1×1 identity + ReLU; conv2: 3×3 VALID, channel 0 = the X-shaped
  PATCH (matched filter), channels 1-3 negative (never active on images >= 0)."""
  model = tiny(1, [ConvSpec(1, (1, 1), 1, "VALID"),
                   ConvSpec(4, (3, 3), 1, "VALID")], 2, seed=seed)
  set_kernel(model.conv(1), np.ones((1, 1, 1, 1)), np.zeros(1))
  rng = np.random.default_rng(seed)
  kernel = -np.abs(rng.normal(size=(3, 3, 1, 4))).astype(np.float32)
  kernel[..., 0, 0] = PATCH / np.linalg.norm(PATCH)
  set_kernel(model.conv(2), kernel, np.zeros(4))
  return model


def patch_image(size=12, top_left=(6, 2), noise=0.05, seed=0):
  """(1, size, size, 1) image >= 0: faint noise plus PATCH at ``top_left``."""
  rng = np.random.default_rng(seed)
  image = noise * rng.uniform(size=(size, size)).astype(np.float32)
  r, c = top_left
  image[r:r + 3, c:c + 3] += PATCH
  return jnp.asarray(image[None, :, :, None])


def random_images(n=3, hw=8, c=2, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=(n, hw, hw, c)), jnp.float32)


class PixelLinear(nnx.Module):
  """logits = [Σ_pixels v ⊙ x, 0]: a model whose class-0 logit is linear."""

  def __init__(self, weights):
    self.v = nnx.Param(jnp.asarray(weights, jnp.float32))

  def __call__(self, x):
    score = jnp.sum(x * self.v[...], axis=(1, 2, 3))
    return jnp.stack([score, jnp.zeros_like(score)], axis=-1)
