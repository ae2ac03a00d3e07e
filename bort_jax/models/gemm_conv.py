"""Convolution lowered to one matrix product (im2col), for XLA:CPU.

XLA:CPU runs ``lax.conv_general_dilated`` and, above all, its two backward
convolutions well below its matmul rate for most shapes of these models.
Written as patches times kernel, the forward pass and both gradients are plain
matrix products:

    patches[b, p, (i, j, c)] = x_padded[b, s·p + d·(i, j), c]
    y = patches @ W.reshape(kh·kw·c_in, c_out)

``python -m benchmarks.bench_conv`` times both per layer (BENCHMARKS.md): on
2 cores, ACNN-Small's conv5 (3×3, 864 → 2592 channels on a 6×6 map) trains at
96 GFLOP/s as a convolution and 129 as a matmul (the GEMM rate being 126);
ResNet50's convs gain 1.3–3.5×, except the 3×3 at 56×56×64 (0.9×). The
patches take ``kh·kw`` times the input's memory.

The price is compile time: the k² slices and, in the backward pass, their
transposes make XLA compile each such conv 0.3–0.7 s longer (2 cores), which
only pays when the conv is large. A conv of F forward FLOPs saves roughly
F·2e-11 s per training step here, so below ``MIN_FLOPS`` = 1e8 (about 2 ms
saved per step, 250 steps to win back the compile) XLA's convolution is kept.

``conv_general_dilated`` has the signature of ``lax.conv_general_dilated`` and
is what every conv of ``bort_jax.models`` passes to ``nnx.Conv``: on the CPU
backend it takes this path for the calls it covers (channels-last layouts,
no input dilation, one feature group, at least ``min_flops``), and everywhere
else, on GPU and TPU included, it is ``lax.conv_general_dilated`` itself.
Parameters, their names and shapes are the same either way.
"""

import functools
import itertools
from typing import Optional, Sequence, Union

import jax
import numpy as np
from flax import nnx
from jax import lax

Padding = Union[str, Sequence[tuple[int, int]]]

MIN_FLOPS = 1e8
"""Forward FLOPs of one conv call below which XLA's convolution is used."""


def _channels_last_numbers(ndim: int) -> lax.ConvDimensionNumbers:
  # N, spatial..., C for inputs/outputs; spatial..., I, O for kernels.
  spatial = tuple(range(1, ndim - 1))
  return lax.ConvDimensionNumbers(
      lhs_spec=(0, ndim - 1) + spatial,
      rhs_spec=(ndim - 1, ndim - 2) + tuple(range(ndim - 2)),
      out_spec=(0, ndim - 1) + spatial)


def _is_channels_last(dimension_numbers, lhs_shape, rhs_shape) -> bool:
  ndim = len(lhs_shape)
  try:
    given = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
  except (TypeError, ValueError):
    return False
  return given == _channels_last_numbers(ndim)


def _all_ones(values) -> bool:
  return values is None or all(v == 1 for v in values)


def gemm_conv(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
              padding: Padding, rhs_dilation: Optional[Sequence[int]] = None,
              precision=None, preferred_element_type=None) -> jax.Array:
  """Channels-last convolution (N, *spatial, C_in) ⊛ (*window, C_in, C_out)
  as one ``dot_general`` of the input's patches with the reshaped kernel.

  ``padding`` is ``'VALID'``, ``'SAME'``, ``'SAME_LOWER'`` or one
  ``(low, high)`` pair per spatial axis; ``rhs_dilation`` spaces the taps.
  Equal to ``lax.conv_general_dilated`` with NHWC/HWIO/NHWC numbers up to
  float rounding (tested with values and gradients).
  """
  spatial = lhs.ndim - 2
  window = rhs.shape[:spatial]
  if rhs.ndim != lhs.ndim or rhs.shape[-2] != lhs.shape[-1]:
    raise ValueError(
        f"gemm_conv expects (N, *spatial, C_in) inputs and (*window, C_in, "
        f"C_out) kernels; got {lhs.shape} and {rhs.shape}.")
  strides = tuple(int(s) for s in window_strides)
  dilation = (tuple(int(d) for d in rhs_dilation) if rhs_dilation is not None
              else (1,) * spatial)
  if isinstance(padding, str):
    dilated_window = tuple((k - 1) * d + 1 for k, d in zip(window, dilation))
    padding = lax.padtype_to_pads(lhs.shape[1:-1], dilated_window, strides,
                                  padding)
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  if any(lo < 0 or hi < 0 for lo, hi in pads):
    return lax.conv_general_dilated(
        lhs, rhs, strides, pads, rhs_dilation=dilation,
        dimension_numbers=_channels_last_numbers(lhs.ndim),
        precision=precision, preferred_element_type=preferred_element_type)
  padded_size = tuple(n + lo + hi for n, (lo, hi) in zip(lhs.shape[1:-1], pads))
  if any((n - (k - 1) * d - 1) < 0 for n, k, d in
         zip(padded_size, window, dilation)):
    raise ValueError(
        f"window {window} (dilation {dilation}) does not fit the padded "
        f"input {padded_size}.")
  return _patches_matmul(lhs, rhs, strides, pads, dilation, precision,
                         preferred_element_type)


# Jitted so that an eager call runs as one computation rather than one
# dispatch per tap; inside an outer jit it is inlined.
@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _patches_matmul(lhs, rhs, strides, pads, dilation, precision,
                    preferred_element_type):
  window = rhs.shape[:lhs.ndim - 2]
  padded = jax.numpy.pad(lhs, ((0, 0),) + pads + ((0, 0),))
  out_size = tuple((n - (k - 1) * d - 1) // s + 1 for n, k, d, s in
                   zip(padded.shape[1:-1], window, dilation, strides))

  def tap(offsets):
    start = (0,) + tuple(o * d for o, d in zip(offsets, dilation)) + (0,)
    limit = ((padded.shape[0],) +
             tuple(st + (n - 1) * s + 1
                   for st, n, s in zip(start[1:-1], out_size, strides)) +
             (padded.shape[-1],))
    return lax.slice(padded, start, limit, (1,) + strides + (1,))

  # Tap order (i, j, ...) then channel: the row order of the reshaped kernel.
  taps = [tap(offsets) for offsets in itertools.product(*map(range, window))]
  patches = taps[0] if len(taps) == 1 else lax.concatenate(taps, lhs.ndim - 1)
  matrix = rhs.reshape(int(np.prod(rhs.shape[:-1])), rhs.shape[-1])
  # Low-precision (bf16/f16) operands: accumulate the kh·kw·c_in products in
  # float32 and round once, as XLA's convolution does, whatever the backend's
  # dot would pick for its own accumulator.
  narrow = jax.numpy.finfo(lhs.dtype).bits < 32
  accumulate = (preferred_element_type if preferred_element_type is not None
                else (jax.numpy.float32 if narrow else None))
  out = lax.dot_general(
      patches, matrix, (((lhs.ndim - 1,), (0,)), ((), ())),
      precision=precision, preferred_element_type=accumulate)
  return out if preferred_element_type is not None else out.astype(
      jax.numpy.result_type(lhs, rhs))


def _forward_flops(lhs_shape, rhs_shape, window_strides) -> float:
  # Estimate: 2 · N · (output positions, padding ignored) · window · C_in · C_out.
  positions = np.prod([max(1, n // s) for n, s in
                       zip(lhs_shape[1:-1], window_strides)])
  return 2.0 * lhs_shape[0] * positions * np.prod(rhs_shape)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None,
                         out_sharding=None, *, min_flops: float = MIN_FLOPS):
  """``lax.conv_general_dilated``, taking the :func:`gemm_conv` path on the
  CPU backend where that covers the call and the call has at least
  ``min_flops`` forward FLOPs (see the module docstring)."""
  covered = (jax.default_backend() == "cpu"
             and _is_channels_last(dimension_numbers, lhs.shape, rhs.shape)
             and _all_ones(lhs_dilation) and feature_group_count == 1
             and batch_group_count == 1 and out_sharding is None
             and _forward_flops(lhs.shape, rhs.shape, window_strides)
             >= min_flops)
  if covered:
    return gemm_conv(lhs, rhs, window_strides, padding, rhs_dilation,
                     precision, preferred_element_type)
  return lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type, out_sharding=out_sharding)


def set_lowering(module, lowering=conv_general_dilated) -> None:
  """Sets the function every ``nnx.Conv`` inside ``module`` convolves with,
  e.g. ``lax.conv_general_dilated`` to run XLA's convolution on CPU too."""
  for _, node in nnx.iter_graph(module):
    if isinstance(node, nnx.Conv):
      node.conv_general_dilated = lowering
