"""The one-hot backtracker shared by SAT and synthesis (Algorithm 1, A.5).

A cotangent holding one value at one (position, channel) of a layer's map is
walked back to the input by guided backprop; ``salient_channels`` picks the
channels and positions Algorithm 1 backtracks.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from bort_jax.explain import _common
from bort_jax.explain import _conv_geometry
from bort_jax.explain import guided_backprop


_TOP_KIND_CACHE: dict = {}


@functools.partial(jax.jit, static_argnames=("graphdef", "layer"))
def _probe_top(graphdef, state, x, *, layer):
  model = _common.merge_eval(graphdef, state)
  conv = model.conv(layer)
  below = x if layer == 1 else model.features(x, layer - 1)
  top = model.features(x, layer)
  pre = conv(below)
  return below, pre, top


def top_conv_kind(model, graphdef, state, x, index):
  """How ``features(x, index)`` follows from ``features(x, index - 1)``.

  "relu" or "linear" if it is exactly ``relu(conv(features(index - 1)))`` or
  ``conv(features(index - 1))`` (checked once numerically on a random input of
  ``x``'s shape, cached per graph, layer and shape), else None.  Lets one-hot
  cotangents skip the top conv's full transpose.
  """
  key = (graphdef, index, x.shape[1:], str(x.dtype))
  if key not in _TOP_KIND_CACHE:
    _TOP_KIND_CACHE[key] = _probe_kind(model, graphdef, state, x, index)
  return _TOP_KIND_CACHE[key]


def _probe_kind(model, graphdef, state, x, index):
  conv = model.conv(index)
  if getattr(conv, "feature_group_count", 1) != 1:
    return None
  probe = jax.random.normal(jax.random.key(0), (1,) + x.shape[1:], x.dtype)
  try:
    below, pre, top = _probe_top(graphdef, state, probe, layer=index)
  except (TypeError, ValueError):
    return None
  if below.ndim != 4 or below.shape[-1] != conv.kernel.shape[2]:
    return None
  if (_conv_geometry.explicit_pads(conv, below.shape[1:3]) is None
      or pre.shape != top.shape):
    return None
  scale = float(jnp.max(jnp.abs(top))) + 1e-12
  close = lambda a, b: bool(jnp.allclose(a, b, rtol=1e-4, atol=1e-5 * scale))
  if close(jax.nn.relu(pre), top):
    return "relu"
  if close(pre, top):
    return "linear"
  return None


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
