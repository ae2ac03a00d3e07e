"""Backtracking a feature map to the input: guided backprop and Eq. 4.

``reconstruct`` is the VJP of ``model.features(x, layer, activation=guided_relu)``:
every conv is walked back by its transpose, ``ẑ = Wᵀ s`` (Eq. 4), every ReLU by
the guided rule of Appendix A.4 (Eq. 16).  ``reconstruction_ratios`` and
``gram_distribution`` are the two diagnostics of Section 4.2.1 (Fig. 3).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bort_jax import diagnostics
from bort_jax import optim
from bort_jax.explain import _common


# --------------------------------------------------------------------- guided ReLU


@jax.custom_vjp
def guided_relu(x):
  """ReLU whose backward pass is guided backprop (Appendix A.4, Eq. 15-16).

  Forward ``max(x, 0)``; backward ``g · 1[x > 0] · 1[g > 0]``: only positive
  signals flow back, and only through units that were active.
  """
  return jax.nn.relu(x)


def _guided_relu_fwd(x):
  return jax.nn.relu(x), x


def _guided_relu_bwd(x, g):
  return (jnp.where((x > 0) & (g > 0), g, jnp.zeros_like(g)),)


guided_relu.defvjp(_guided_relu_fwd, _guided_relu_bwd)


def guided_features(model, x, layer):
  """``model.features`` with every ReLU replaced by :func:`guided_relu`."""
  return model.features(x, layer, activation=guided_relu)


# ------------------------------------------------------------------- reconstruct


@functools.partial(jax.jit, static_argnames=("graphdef", "layer"))
def _reconstruct(graphdef, state, x, features, *, layer):
  model = _common.merge_eval(graphdef, state)
  z, vjp = jax.vjp(lambda inputs: guided_features(model, inputs, layer), x)
  if features is None:
    features = z
  elif features.shape != z.shape:
    raise ValueError(
        f"features must have the shape of layer {layer}'s output {z.shape}; "
        f"got {features.shape}")
  return vjp(features.astype(z.dtype))[0]


def reconstruct(model, x, *, layer, features=None) -> jax.Array:
  """Input-space reconstruction of a feature map by guided backprop (Fig. 4).

  Args:
    model: a conv model of the ``bort_jax.models`` interface.
    x: images (B, H, W, C); they fix the forward pass whose active ReLUs gate
      the backward signal.
    layer: 1-based index into ``model.layer_names`` or a layer name.
    features: the map to backtrack, shape of ``model.features(x, layer)``
      (e.g. a sparsified copy); ``None`` backtracks the features themselves.

  Returns:
    (B, H, W, C) reconstruction.
  """
  x = _common.check_images(x)
  index = _common.layer_index(model, layer)
  graphdef, state = _common.split(model)
  if features is not None:
    features = jnp.asarray(features)
  return _reconstruct(graphdef, state, x, features, layer=index)


# ------------------------------------------- one-hot backtracking (SAT, A.5)


def _explicit_pads(conv, in_hw):
  """((top, bottom), (left, right)) padding of an ``nnx.Conv``, or None."""
  kernel_hw = conv.kernel.shape[:2]
  dilation = _pair(conv.kernel_dilation)
  strides = _pair(conv.strides)
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


def _pair(value):
  if value is None:
    return (1, 1)
  if isinstance(value, int):
    return (value, value)
  return tuple(value)


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
  if _explicit_pads(conv, below.shape[1:3]) is None or pre.shape != top.shape:
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
    z, vjp = jax.vjp(lambda inputs: guided_features(model, inputs, index), x)
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
        lambda inputs: guided_features(model, inputs, index - 1), x)
  conv = model.conv(index)
  kernel = conv.kernel[...]
  pre = conv(below)
  z = jax.nn.relu(pre) if top_kind == "relu" else pre
  n, h, w, c = z.shape
  (pt, pb), (pl, pr) = _explicit_pads(conv, below.shape[1:3])
  sy, sx = _pair(conv.strides)
  dy, dx = _pair(conv.kernel_dilation)
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


# --------------------------------------------------------- reconstruction ratio


def _patches_and_matrix(conv, z):
  """Fan-in vectors of every output position of ``conv`` on ``z`` and the
  kernel as a (fan_in, out) matrix in the same feature order."""
  kernel = conv.kernel[...]
  kh, kw, cin, cout = kernel.shape
  pads = _explicit_pads(conv, z.shape[1:3])
  if pads is None or getattr(conv, "feature_group_count", 1) != 1:
    raise ValueError(
        f"reconstruction_ratios supports ungrouped convs with SAME/VALID/"
        f"explicit padding; got padding={conv.padding!r}")
  patches = jax.lax.conv_general_dilated_patches(
      z, (kh, kw), _pair(conv.strides), pads,
      rhs_dilation=_pair(conv.kernel_dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  # conv_general_dilated_patches orders features (in, kh, kw).
  matrix = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(cin * kh * kw, cout)
  return patches, matrix


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _reconstruction_ratios(graphdef, state, x):
  model = _common.merge_eval(graphdef, state)
  inputs = model.conv_inputs(x)
  ratios = {}
  for name in model.layer_names:  # a handful of layers, unrolled at trace time
    conv = model.conv(name)
    z = inputs[name]
    patches, matrix = _patches_and_matrix(conv, z.astype(jnp.float32))
    s = patches @ matrix.astype(jnp.float32)  # W z, no bias
    z_hat = s @ matrix.T.astype(jnp.float32)  # Wᵀ s (Eq. 4)
    err = jnp.sqrt(jnp.sum((patches - z_hat) ** 2, axis=(1, 2, 3)))
    norm = jnp.sqrt(jnp.sum(patches ** 2, axis=(1, 2, 3)))
    ratios[name] = jnp.where(norm > 0, err / jnp.where(norm > 0, norm, 1.0),
                             0.0)
  return ratios


def reconstruction_ratios(model, x) -> dict:
  """Per conv layer and image, ``‖z − Wᵀ(W z)‖ / ‖z‖`` (Section 4.2.1, Fig. 3b).

  ``z`` is each fan-in vector the conv sees (the unfolded receptive field of
  every output position of ``model.conv_inputs(x)[name]``, the row vector of
  Eq. 5) and ``W`` the (out, fan_in) kernel matrix; the norms are taken over
  all positions of an image.  The bias is not part of ``g`` (linear part
  only).  An all-zero input gives ratio 0.

  Returns:
    ``{layer_name: (B,) float32}``.
  """
  x = _common.check_images(x)
  _common.conv_layer_names(model)
  graphdef, state = _common.split(model)
  return _reconstruction_ratios(graphdef, state, x)


# ------------------------------------------------------------ Gram distribution


def _gram_entries(kernel, n_out_axes=1):
  w = diagnostics.kernel_matrix(jnp.asarray(kernel), n_out_axes)
  gram = np.asarray(w @ w.T)  # rows of W = output units (Eq. 6's Gram)
  off = ~np.eye(gram.shape[0], dtype=bool)
  return {"diag": jnp.asarray(np.diag(gram)), "offdiag": jnp.asarray(gram[off])}


def gram_distribution(model_or_params) -> dict:
  """Diagonal and off-diagonal entries of each kernel's Gram ``W Wᵀ`` (Fig. 3a).

  ``W`` is the (out, fan_in) matrix of a kernel (rows = output units), so the
  Gram is out × out; Bort drives its diagonal to 1 and the rest to 0.

  Args:
    model_or_params: a conv model of the ``bort_jax.models`` interface (keys
      are its ``layer_names``), any other ``nnx.Module`` or a params pytree
      (keys are the paths of the leaves named ``kernel``).

  Returns:
    ``{name: {"diag": (out,) array, "offdiag": (out·(out-1),) array}}``.
  """
  if isinstance(model_or_params, nnx.Module) and hasattr(
      model_or_params, "layer_names") and hasattr(model_or_params, "conv"):
    model = model_or_params
    return {name: _gram_entries(model.conv(name).kernel[...])
            for name in model.layer_names}
  params = model_or_params
  if isinstance(params, nnx.Module):
    params = nnx.state(params, nnx.Param)
  mask = optim.default_mask(params)
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  flat_mask = jax.tree_util.tree_leaves(mask)
  if len(flat_mask) != len(leaves):
    raise ValueError("could not align the kernel mask with the params pytree")
  out = {}
  for (path, leaf), selected in zip(leaves, flat_mask):
    if selected and jnp.ndim(leaf) >= 2:
      out[diagnostics.path_name(path)] = _gram_entries(leaf)
  if not out:
    raise ValueError("no leaf named 'kernel' with ndim >= 2 found in params")
  return out
