"""The one-hot backtracker shared by SAT and synthesis (Algorithm 1, A.5).

A cotangent holding one value at one (position, channel) of a layer's map is
walked back to the input by guided backprop; ``salient_channels`` picks the
channels and positions Algorithm 1 backtracks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bort_jax.explain import _conv_geometry
from bort_jax.explain import guided_backprop


TOP_KINDS = ("relu", "linear", None)


def top_conv_kind(model, index):
  """How ``features(x, index)`` follows from ``features(x, index - 1)``, as
  the model declares it (``model.top_activation(index)``, see
  :class:`bort_jax.models.ConvClassifier`): "relu", "linear" or None (the
  general VJP; also for models that declare nothing).  Only an ungrouped
  conv with SAME/VALID/explicit padding can take the kernel-slice path.
  """
  declare = getattr(model, "top_activation", None)
  kind = declare(index) if callable(declare) else None
  if kind not in TOP_KINDS:
    raise ValueError(
        f"{type(model).__name__}.top_activation({index}) must be one of "
        f"{TOP_KINDS}; got {kind!r}")
  if kind is None:
    return None
  conv = model.conv(index)
  if (getattr(conv, "feature_group_count", 1) != 1
      or _conv_geometry.explicit_pads(conv, (1, 1)) is None):
    return None
  return kind


def onehot_backtracker(model, x, index, top_kind):
  """Forward pass and a backtracker for one-hot cotangents at ``layer``.

  Returns ``(z, back)``: ``z`` = ``features(x, layer)`` (n, h, w, c) and
  ``back(channel, position, value)`` (each (n,), position a flat h·w index)
  = guided VJP of ``features`` at the cotangent holding ``value`` at
  (position, channel) and 0 elsewhere, shape (n, H, W, C).

  With ``top_kind`` "relu"/"linear" the top conv is walked back by placing the
  chosen kernel slice ``W[:, :, :, channel]`` in its receptive window (its
  transpose applied to a one-hot, Eq. 4) instead of a full transposed conv.
  """
  if top_kind is None:
    z, vjp = jax.vjp(
        lambda inputs: guided_backprop.guided_features(model, inputs, index), x)
    n, h, w, c = z.shape

    def back(channel, position, value):
      flat = jnp.zeros((n, h * w * c), z.dtype)
      flat = flat.at[jnp.arange(n), position * c + channel].set(value)
      return vjp(flat.reshape(z.shape))[0]

    return z, back

  if index == 1:
    below, vjp_below = x, lambda g: (g,)
  else:
    below, vjp_below = jax.vjp(
        lambda inputs: guided_backprop.guided_features(model, inputs,
                                                       index - 1), x)
  conv = model.conv(index)
  kernel = conv.kernel[...]
  pre = conv(below)
  z = jax.nn.relu(pre) if top_kind == "relu" else pre
  n, h, w, c = z.shape
  (pt, pb), (pl, pr) = _conv_geometry.explicit_pads(conv, below.shape[1:3])
  sy, sx = _conv_geometry.pair(conv.strides)
  dy, dx = _conv_geometry.pair(conv.kernel_dilation)
  kh, kw = kernel.shape[:2]
  if (dy, dx) != (1, 1):
    dilated = jnp.zeros(((kh - 1) * dy + 1, (kw - 1) * dx + 1) +
                        kernel.shape[2:], kernel.dtype)
    kernel = dilated.at[::dy, ::dx].set(kernel)
  padded_shape = (below.shape[1] + pt + pb, below.shape[2] + pl + pr,
                  below.shape[3])

  def place(window, oy, ox):
    canvas = jnp.zeros(padded_shape, window.dtype)
    return jax.lax.dynamic_update_slice(canvas, window, (oy * sy, ox * sx, 0))

  def back(channel, position, value):
    oy, ox = position // w, position % w
    if top_kind == "relu":  # guided rule (Eq. 16) at the top activation
      active = pre[jnp.arange(n), oy, ox, channel] > 0
      value = jnp.where(active & (value > 0), value, 0)
    windows = jnp.moveaxis(kernel[..., channel], -1, 0) * value[:, None, None,
                                                                 None]
    canvas = jax.vmap(place)(windows.astype(below.dtype), oy, ox)
    grad_below = canvas[:, pt:pt + below.shape[1], pl:pl + below.shape[2]]
    return vjp_below(grad_below)[0]

  return z, back


def salient_channels(z, k):
  """Algorithm 1, lines 2-3 and 7: per image the k channels with the largest
  max-pooled value ``y``, their values and the flat position of each max.

  The position is an explicit arg-max (the first maximum in raster order), not
  the gradient of a tied max.
  """
  n, h, w, c = z.shape
  if k > c:
    raise ValueError(f"k={k} exceeds the layer's {c} channels")
  flat = z.reshape(n, h * w, c)
  y = flat.max(axis=1)
  y_top, channels = jax.lax.top_k(y, k)
  positions = jnp.take_along_axis(jnp.argmax(flat, axis=1), channels, axis=1)
  return channels, positions, y_top
