"""Argument checks shared by the models and the explainers.

Every check takes the argument's name first and its value second, returns the
value in its canonical type, and raises naming the argument, the bad value and
what is allowed.  NumPy integer scalars are accepted wherever an int is.

Image layout
------------
Models and explainers take NHWC batches ``(B, H, W, C)``.  A 4-D shape is
refused as channels-first (a ``(B, C, H, W)`` batch given by mistake) when

* the expected channel count is known (a model's ``in_channels``): the last
  axis differs from it; the message says "channels-first" when axis 1 equals
  it;
* it is not known (any callable model): axis 1 is a usual channel count
  (``CHANNEL_COUNTS``: 1 grey, 3 RGB, 4 RGBA) while axes 2 and 3 are both
  larger than 4, i.e. the last axis cannot be a usual channel count and the
  two after axis 1 are image-sized.  ``(N, 3, 32, 32)`` and
  ``(N, 1, 28, 28)`` are refused; ``(N, 32, 32, 3)``, ``(N, 8, 8, 2)`` and
  ``(N, 4, 4, 16)`` are not.  An NHWC batch of images at most 4 pixels high
  with more than 4 channels and width would be refused too; give such a
  model an ``in_channels`` attribute.

Examples:
  >>> import numpy as np
  >>> from bort_jax import validate
  >>> validate.check_positive_int("steps", np.int64(8))
  8
  >>> validate.looks_channels_first((2, 3, 32, 32))
  True
  >>> validate.looks_channels_first((2, 32, 32, 3))
  False
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

# Channel counts of ordinary images: grey, RGB, RGBA.
CHANNEL_COUNTS = (1, 3, 4)


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value) -> bool:
  """An int or float scalar (Python, NumPy or 0-d array), not a bool."""
  if isinstance(value, (bool, np.bool_, str, bytes)):
    return False
  try:
    dtype, ndim = np.asarray(value).dtype, np.ndim(value)
  except (TypeError, ValueError):
    return False
  return ndim == 0 and (np.issubdtype(dtype, np.integer)
                        or np.issubdtype(dtype, np.floating))


def check_positive_int(name: str, value) -> int:
  """``value`` as an int >= 1 (Python or NumPy integer, not bool)."""
  if not _is_int(value) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}.")
  return int(value)


def check_positive_float(name: str, value) -> float:
  """``value`` as a finite float > 0 (int or float, not bool)."""
  if not _is_real(value) or not np.isfinite(value) or value <= 0:
    raise ValueError(f"{name} must be a finite float > 0, got {value!r}.")
  return float(value)


def check_rate(name: str, value) -> float:
  """``value`` as a float in [0, 1) (a dropout or drop-path rate)."""
  if not _is_real(value) or not 0.0 <= value < 1.0:
    raise ValueError(f"{name} must be a float in [0, 1), got {value!r}.")
  return float(value)


def check_float_dtype(name: str, value) -> jnp.dtype:
  """``value`` as a floating ``jnp.dtype`` (float32, bfloat16, ...)."""
  try:
    dtype = jnp.dtype(value)
  except TypeError:
    dtype = None
  if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"{name} must be a floating dtype such as float32 or "
                     f"bfloat16, got {value!r}.")
  return dtype


def check_finite(name: str, values) -> None:
  """Raises ValueError naming the first NaN/inf entry of ``values``."""
  finite = np.asarray(jnp.isfinite(values))
  if not finite.all():
    bad = np.argwhere(~finite)[0]
    raise ValueError(
        f"{name} must hold finite values only; got "
        f"{np.asarray(values)[tuple(bad)]} at index {tuple(int(i) for i in bad)}"
        f" ({int((~finite).sum())} non-finite of {finite.size})")


def looks_channels_first(shape) -> bool:
  """Whether a 4-D ``shape`` reads as (B, C, H, W) rather than NHWC (the
  rule of the module docstring, for an unknown channel count)."""
  return (len(shape) == 4 and shape[1] in CHANNEL_COUNTS and shape[2] > 4
          and shape[3] > 4)


def check_image_shape(name: str, shape, *, channels: int | None = None,
                      image_size: int | None = None) -> None:
  """Raises ValueError unless ``shape`` is an NHWC batch (B, H, W, C), with
  ``channels`` channels and ``image_size`` × ``image_size`` pixels where those
  are given (the layout rule of the module docstring).  Works on traced
  arrays' shapes too."""
  shape = tuple(shape)
  if len(shape) != 4:
    raise ValueError(f"{name} must be a batch of NHWC images (B, H, W, C), "
                     f"got shape {shape}.")
  nhwc = (shape[0], shape[2], shape[3], shape[1])
  hint = (f"; it looks channels-first (B, C, H, W): NHWC would be {nhwc} "
          f"(x.transpose(0, 2, 3, 1))")
  if channels is not None and shape[-1] != channels:
    raise ValueError(
        f"{name} must be a batch of NHWC images (B, H, W, C) with {channels} "
        f"channels, got shape {shape}"
        f"{hint if shape[1] == channels else ''}.")
  if channels is None and looks_channels_first(shape):
    raise ValueError(
        f"{name} must be a batch of NHWC images (B, H, W, C), got shape "
        f"{shape}{hint}.")
  if image_size is not None and tuple(shape[1:3]) != (image_size, image_size):
    raise ValueError(
        f"{name} must be {image_size}x{image_size} images, got shape {shape}.")


def check_images(name: str, x, *, channels: int | None = None,
                 image_size: int | None = None):
  """A concrete batch ``x`` as a finite, non-empty float NHWC array.

  Shape as :func:`check_image_shape`; an empty batch, a non-float dtype or a
  NaN/inf pixel raise too.
  """
  x = jnp.asarray(x)
  check_image_shape(name, x.shape, channels=channels, image_size=image_size)
  if x.shape[0] == 0:
    raise ValueError(
        f"{name} must hold at least one image, got shape {x.shape}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{name} must be a float array, got dtype {x.dtype}.")
  check_finite(name, x)
  return x


def layer_index(layer_names, layer) -> int:
  """1-based index of ``layer`` (a 1-based int index or a name) in
  ``layer_names``."""
  names = tuple(layer_names)
  if _is_int(layer):
    if not 1 <= layer <= len(names):
      raise ValueError(
          f"layer index {layer} is out of range; allowed 1..{len(names)} "
          f"(1-based; layer_names={names})")
    return int(layer)
  if isinstance(layer, str):
    if layer not in names:
      raise ValueError(f"unknown layer {layer!r}; allowed: {names}")
    return names.index(layer) + 1
  raise TypeError(f"layer must be a 1-based int index or a name in {names}, "
                  f"got {layer!r}")
