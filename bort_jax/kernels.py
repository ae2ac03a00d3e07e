"""Which leaves of a params pytree are kernels, and how each reads as a matrix.

One home for the layout machinery that :mod:`bort_jax.optim` (the update) and
:mod:`bort_jax.diagnostics` (the statistics) share, so both see the same
``W``: the default mask (Flax leaves named ``kernel``), per-leaf
:class:`BortDimensionNumbers` (which axes are fan-in, which are outputs; Flax,
Haiku, PyTorch/Equinox or stacked layouts) and :func:`select_kernels`, which
applies both to a pytree and validates every selected kernel eagerly.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

# Parent-module names whose 3-D kernel is (in, heads, head_dim): 2 output axes.
_TWO_OUTPUT_AXES_PARENTS = ("query", "key", "value", "q", "k", "v", "qkv")

MaskOrFn = Optional[Union[Any, Callable[[Any], Any]]]
Axes = Union[int, Sequence[int]]


class BortDimensionNumbers(NamedTuple):
  """Which axes of a kernel are its fan-in and which its outputs.

  The convention of ``optax.contrib.MuonDimensionNumbers``: the kernel acts as
  ``x W = y`` with ``reduction_axis`` contracted against the input and
  ``output_axis`` indexing output units (the rows of the paper's ``W``). Axes
  in neither are batch axes: each slice along them gets its own correction
  (e.g. layers stacked by ``nnx.scan``).

  Attributes:
    reduction_axis: fan-in axis or axes; ``None`` (default) means every axis
      that is not an output axis.
    output_axis: output axis or axes; default ``-1`` (Flax/Haiku: Conv
      ``(kh, kw, in, out)``, Dense ``(in, out)``). Flax attention q/k/v
      ``(in, heads, head_dim)``: ``(-2, -1)``. PyTorch/Equinox Linear
      ``(out, in)`` and Conv ``(out, in, kh, kw)``: ``0``.

  Examples:
    >>> import jax.numpy as jnp, bort_jax
    >>> from bort_jax import BortDimensionNumbers
    >>> from bort_jax.kernels import matrix_view
    >>> torch_conv = jnp.zeros((64, 3, 7, 7))  # (out, in, kh, kw)
    >>> matrix_view(torch_conv, BortDimensionNumbers(output_axis=0))[0].shape
    (147, 64)
    >>> stacked = jnp.zeros((12, 32, 16))  # (layers, in, out): one W per layer
    >>> dims = BortDimensionNumbers(reduction_axis=1, output_axis=2)
    >>> matrix_view(stacked, dims)[0].shape
    (12, 32, 16)
    >>> tx = bort_jax.bort(0.1, dimension_numbers={"blocks": {"kernel": dims}})
  """
  reduction_axis: Optional[Axes] = None
  output_axis: Axes = -1



def path_names(path) -> tuple:
  """Names along a pytree path; an ``nnx.Variable``'s ``.value`` is skipped."""
  names = []
  for key in path:
    if isinstance(key, jax.tree_util.GetAttrKey):
      if key.name != "value":
        names.append(key.name)
    elif isinstance(key, jax.tree_util.SequenceKey):
      names.append(str(key.idx))
    elif isinstance(key, (jax.tree_util.DictKey,
                          jax.tree_util.FlattenedIndexKey)):
      names.append(str(key.key))
    else:
      names.append(str(key))
  return tuple(names)


def path_name(path) -> str:
  """'layer1/conv/kernel' style name of a pytree path."""
  return "/".join(path_names(path))


def _leaf_is_kernel(path, leaf) -> bool:
  names = path_names(path)
  return bool(names) and names[-1] == "kernel" and jnp.ndim(leaf) >= 2


def default_mask(params):
  """True for the leaves Bort acts on by default: Flax leaves named ``kernel``.

  That covers Conv, Dense/Linear, attention q/k/v/out and patch-embedding
  kernels, and leaves out biases (attention biases are 2-D, so the name, not
  the rank, decides), norm scales, embeddings, positional embeddings and class
  tokens. Haiku (``w``) and Equinox (``weight``) params need a ``mask``.
  """
  return jax.tree_util.tree_map_with_path(_leaf_is_kernel, params)


def default_dimension_numbers(params):
  """Per-leaf :class:`BortDimensionNumbers` inferred from Flax layouts.

  3-D kernels under a module named query/key/value (nnx.MultiHeadAttention's
  LinearGeneral layers) have two trailing output axes; everything else has
  its last axis as output.
  """
  def infer(path, leaf):
    names = path_names(path)
    parent = names[-2] if len(names) >= 2 else ""
    if jnp.ndim(leaf) == 3 and parent in _TWO_OUTPUT_AXES_PARENTS:
      return BortDimensionNumbers(output_axis=(-2, -1))
    return BortDimensionNumbers()
  return jax.tree_util.tree_map_with_path(infer, params)


def _as_tuple(axes) -> tuple:
  return (axes,) if isinstance(axes, numbers.Integral) else tuple(axes)


def _is_dimension_numbers(x) -> bool:
  # BortDimensionNumbers or optax's MuonDimensionNumbers (same two fields).
  return isinstance(x, tuple) and hasattr(x, "reduction_axis") and hasattr(
      x, "output_axis")


def as_dimension_numbers(value) -> BortDimensionNumbers:
  """A dimension-numbers leaf: None (default), an int n (n trailing output
  axes), or BortDimensionNumbers / MuonDimensionNumbers."""
  if value is None:
    return BortDimensionNumbers()
  if isinstance(value, BortDimensionNumbers):
    return value
  if _is_dimension_numbers(value):
    return BortDimensionNumbers(value.reduction_axis, value.output_axis)
  if isinstance(value, numbers.Integral) and not isinstance(value, bool):
    if value < 1:
      raise ValueError(f"an int dimension_numbers leaf is the number of "
                       f"trailing output axes, >= 1; got {value}.")
    return BortDimensionNumbers(output_axis=tuple(range(-value, 0)))
  raise TypeError("dimension_numbers leaves must be BortDimensionNumbers, an "
                  "int number of trailing output axes, or None; got "
                  f"{value!r}.")


def kernel_axes(shape, dimension_numbers, name: str = "kernel"):
  """``(batch, reduction, output)`` axis tuples of a kernel, validated."""
  dims = as_dimension_numbers(dimension_numbers)
  shape = tuple(shape)
  ndim = len(shape)

  def normalized(axes, field):
    axes = _as_tuple(axes)
    for a in axes:
      if not isinstance(a, numbers.Integral) or not -ndim <= a < ndim:
        raise ValueError(f"{name}: {field}={getattr(dims, field)!r} is out of "
                         f"range for a kernel of shape {shape}.")
    return tuple(int(a) % ndim for a in axes)

  out = normalized(dims.output_axis, "output_axis")
  red = (tuple(a for a in range(ndim) if a not in out)
         if dims.reduction_axis is None else
         normalized(dims.reduction_axis, "reduction_axis"))
  if not out or not red or len(set(out + red)) != len(out + red):
    raise ValueError(
        f"{name}: {dims} must name at least one output and one reduction "
        f"axis, each once and not both, for a kernel of shape {shape} (a 1-D "
        f"leaf has no (fan_in, out) matrix; leave it out with mask=).")
  if 0 in shape:
    raise ValueError(
        f"{name}: the kernel of shape {shape} has a zero-size axis, so it has "
        f"no (fan_in, out) matrix; leave it out with mask=.")
  batch = tuple(a for a in range(ndim) if a not in out + red)
  return batch, red, out


def matrix_view(kernel: jax.Array, dimension_numbers=None,
                name: str = "kernel"):
  """The kernel as its ``(fan_in, out)`` matrix ``Wᵀ``, and the way back.

  Returns:
    ``(matrix, unview)``: ``matrix`` is ``(fan_in, out)``, or
    ``(batch, fan_in, out)`` when the kernel has batch axes; ``unview`` maps
    an array of that shape back to the kernel's layout.
  """
  batch, red, out = kernel_axes(kernel.shape, dimension_numbers, name)
  perm = batch + red + out
  size = lambda axes: math.prod(kernel.shape[a] for a in axes)
  mat_shape = ((size(batch),) if batch else ()) + (size(red), size(out))
  permuted_shape = tuple(kernel.shape[a] for a in perm)
  identity = perm == tuple(range(kernel.ndim))
  matrix = (kernel if identity else jnp.transpose(kernel, perm)).reshape(
      mat_shape)

  def unview(m):
    m = m.reshape(permuted_shape)
    return m if identity else jnp.transpose(m, np.argsort(perm))
  return matrix, unview


class SelectedKernel(NamedTuple):
  """One leaf Bort acts on."""
  path: tuple                # its pytree key path
  name: str                  # 'layer1/conv/kernel'
  kernel: Any                # the leaf
  dimension_numbers: BortDimensionNumbers


def _resolve(tree_or_fn, params):
  return tree_or_fn(params) if callable(tree_or_fn) else tree_or_fn


def _aligned(name, tree, params, is_leaf=None):
  """Checks that ``tree`` has the structure of ``params`` (leaf per leaf)."""
  tree_struct = jax.tree_util.tree_structure(tree, is_leaf=is_leaf)
  params_struct = jax.tree_util.tree_structure(params)
  if tree_struct != params_struct:
    raise ValueError(
        f"Bort {name} does not match the params structure.\n{name}: "
        f"{tree_struct}\nparams: {params_struct}")
  return tree_struct.flatten_up_to(tree)


def _as_bool(selected, name: str) -> bool:
  if isinstance(selected, (bool, np.bool_)):
    return bool(selected)
  if (isinstance(selected, (np.ndarray, jax.Array)) and selected.shape == ()
      and selected.dtype == bool):
    if isinstance(selected, jax.core.Tracer):
      raise TypeError(f"Bort mask leaf for {name} is traced; build the mask "
                      "outside jit from concrete booleans.")
    return bool(selected)
  raise TypeError(f"Bort mask leaves must be booleans (Python, numpy or jnp "
                  f"scalars); got {selected!r} for {name}.")


def _warn_nothing_selected(leaves_with_path):
  found = sorted({path_names(p)[-1] for p, _ in leaves_with_path
                  if path_names(p)})
  warnings.warn(
      "Bort's default mask selected no leaf: it picks Flax leaves named "
      f"'kernel' with ndim >= 2, and these params have leaves named {found}. "
      "Pass mask= (a pytree of booleans like the params, or a function "
      "params -> such a pytree, e.g. built from an optax param_labels "
      "function: mask=lambda p: jax.tree.map(lambda l: l == 'bort', "
      "param_labels(p))), and dimension_numbers= when outputs are not the "
      "last axis (PyTorch/Equinox (out, in, ...): "
      "BortDimensionNumbers(output_axis=0)).", UserWarning, stacklevel=3)


def select_kernels(params, mask: MaskOrFn = None,
                   dimension_numbers: MaskOrFn = None) -> list:
  """The leaves Bort acts on, as :class:`SelectedKernel` in leaf order.

  Args:
    params: any params pytree (Flax Linen dict, ``nnx.State``, Haiku dict,
      Equinox module).
    mask: optax-style pytree of booleans (Python, numpy or concrete jnp
      scalars), or a callable ``params -> mask``; default
      :func:`default_mask`, which warns when it selects nothing.
    dimension_numbers: pytree (or callable ``params -> pytree``) with a
      :class:`BortDimensionNumbers`, an int number of trailing output axes,
      or ``None`` per leaf; default :func:`default_dimension_numbers`.
  """
  leaves_with_path = jax.tree_util.tree_flatten_with_path(params)[0]
  flat_mask = _aligned("mask", default_mask(params) if mask is None else
                       _resolve(mask, params), params)
  dims = (default_dimension_numbers(params) if dimension_numbers is None else
          _resolve(dimension_numbers, params))
  flat_dims = _aligned(
      "dimension_numbers", dims, params,
      is_leaf=lambda x: x is None or _is_dimension_numbers(x))
  selected = []
  for (path, leaf), chosen, dim in zip(leaves_with_path, flat_mask, flat_dims):
    name = path_name(path)
    if _as_bool(chosen, name):
      dim = as_dimension_numbers(dim)
      kernel_axes(jnp.shape(leaf), dim, name)  # validate eagerly
      selected.append(SelectedKernel(path, name, leaf, dim))
  if mask is None and not selected and leaves_with_path:
    _warn_nothing_selected(leaves_with_path)
  return selected
