"""Geometry of an ``nnx.Conv``: its padding as explicit pairs, strides as pairs."""

from __future__ import annotations

import jax


def pair(value):
  """``(v, v)`` for an int, ``(1, 1)`` for None, else the tuple itself."""
  if value is None:
    return (1, 1)
  if isinstance(value, int):
    return (value, value)
  return tuple(value)


def explicit_pads(conv, in_hw):
  """((top, bottom), (left, right)) padding of an ``nnx.Conv``, or None."""
  kernel_hw = conv.kernel.shape[:2]
  dilation = pair(conv.kernel_dilation)
  strides = pair(conv.strides)
  padding = conv.padding
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      return None
    dilated = tuple((k - 1) * d + 1 for k, d in zip(kernel_hw, dilation))
    return tuple(jax.lax.padtype_to_pads(in_hw, dilated, strides,
                                         padding.upper()))
  if isinstance(padding, int):
    return ((padding, padding),) * 2
  pads = tuple(padding)
  if len(pads) != 2:
    return None
  return tuple((p, p) if isinstance(p, int) else tuple(p) for p in pads)
