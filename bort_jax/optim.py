"""Bort: the bounded orthogonal constraint as optax gradient transformations.

The paper (Zhang et al., ICLR 2023, Sec. 3.3) adds the gradient of
``λ‖WᵀW − I‖²_F`` to every weight matrix ``W`` (rows = output units), which
after dropping the constant 4 is Eq. (10):

    W ← W − α ∇L_t − α λ (W Wᵀ W − W).

A Flax kernel ``K`` stores output axes last, so ``K = Wᵀ`` once its fan-in axes
are flattened, and the correction is ``Δ(K) = K Kᵀ K − c K`` on the
``(fan_in, out)`` matrix — the gradient of ``¼‖KᵀK − cI‖²_F``.

Public pieces:

* :func:`bort_correction` — ``Δ`` for one kernel, all seven modes of the
  authors' code.
* :func:`add_bort_correction` — the transform ``u ← u + λΔ(p) + wd·p`` on the
  selected kernels; :func:`bort` is it with ``wd = 0`` (chain it before any
  optimizer: the coupled variant).
* :func:`bort_sgd`, :func:`bort_adamw`, :func:`bort_lamb` — Bort-S / Bort-A /
  Bort-L with the authors' placement of the term.
* :class:`BortDimensionNumbers` and :func:`select_kernels` — which leaves are
  kernels and how each is read as ``(fan_in, out)`` in any layout (Flax,
  Haiku, PyTorch/Equinox, stacked layers); :mod:`bort_jax.diagnostics` reads
  kernels through the same helper.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

MODES = ("l2-full", "l2-row", "l2-col", "l1-fullrow", "l1-fullcol", "l1-row",
         "l1-col")

# Parent-module names whose 3-D kernel is (in, heads, head_dim): two output axes.
_TWO_OUTPUT_AXES_PARENTS = ("query", "key", "value", "q", "k", "v", "qkv")

ScalarOrSchedule = Union[float, jax.Array, optax.Schedule]
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
  """
  reduction_axis: Optional[Axes] = None
  output_axis: Axes = -1

  @property
  def n_out_axes(self) -> int:
    """How many trailing axes are outputs, for the Flax-style layouts only."""
    out = _as_tuple(self.output_axis)
    if self.reduction_axis is not None or out != tuple(range(-len(out), 0)):
      raise AttributeError(f"{self} does not describe n trailing output axes.")
    return len(out)


class BortState(NamedTuple):
  """Step count, kept only when ``lam`` or ``weight_decay`` is a schedule."""
  count: jax.Array


# ------------------------------------------------------------ kernel selection
# One helper for everything that picks kernels and reads them as matrices:
# the transforms below and bort_jax.diagnostics.


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


_path_names = path_names  # the name tests have used


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


def _as_dimension_numbers(value) -> BortDimensionNumbers:
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
  dims = _as_dimension_numbers(dimension_numbers)
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
      dim = _as_dimension_numbers(dim)
      kernel_axes(jnp.shape(leaf), dim, name)  # validate eagerly
      selected.append(SelectedKernel(path, name, leaf, dim))
  if mask is None and not selected and leaves_with_path:
    _warn_nothing_selected(leaves_with_path)
  return selected


# ------------------------------------------------------------ hyperparameters


def _check_amplitude(amplitude):
  allowed = "a positive float or 'ada'"
  if isinstance(amplitude, str):
    if amplitude != "ada":
      raise ValueError(f"amplitude must be {allowed}, got {amplitude!r}.")
    return
  if isinstance(amplitude, jax.core.Tracer):
    return  # checked in the computation: see _poisoned
  if isinstance(amplitude, (numbers.Number, jax.Array, np.ndarray)) and not (
      isinstance(amplitude, bool)) and np.ndim(amplitude) == 0:
    if not (math.isfinite(float(amplitude)) and float(amplitude) > 0):
      raise ValueError(f"amplitude must be {allowed}, got {amplitude!r} "
                       "(finite and > 0).")
    return
  raise TypeError(f"amplitude must be {allowed}, got "
                  f"{type(amplitude).__name__} {amplitude!r}.")


def _check_mode(mode):
  if mode not in MODES:
    raise ValueError(f"Unknown Bort mode {mode!r}; allowed modes: {MODES}.")


def _check_nonnegative(name, value):
  """Refuses negative, NaN and infinite ``lam`` / ``weight_decay`` eagerly."""
  if callable(value) or isinstance(value, jax.core.Tracer):
    return  # schedules and traced values: see _poisoned
  if isinstance(value, (numbers.Number, jax.Array, np.ndarray)) and not (
      isinstance(value, bool)) and np.ndim(value) == 0:
    if not (math.isfinite(float(value)) and float(value) >= 0):
      raise ValueError(f"{name} must be >= 0, got {value!r} (a finite "
                       "number >= 0 or an optax schedule).")
    return
  raise TypeError(f"{name} must be a float or an optax schedule, got "
                  f"{type(value).__name__} {value!r}.")


def _poisoned(value, valid):
  """``value`` where ``valid``, else NaN.

  A λ, weight decay or amplitude known only under jit (a schedule, or
  ``optax.inject_hyperparams``) cannot raise; a negative or non-finite one
  makes that step's updates of the selected kernels NaN instead, so a
  finiteness check on the parameters stops the run at that step rather than
  training on with a wrong sign. Python numbers are refused eagerly instead.
  """
  value = jnp.asarray(value, jnp.float32)
  return jnp.where(valid(value) & jnp.isfinite(value), value, jnp.nan)


def _correction_2d(k: jax.Array, amplitude, mode: str) -> jax.Array:
  """Δ on the (fan_in, out) matrix ``k = Wᵀ``; formulas in DESIGN.md."""
  n, m = k.shape  # fan_in, out
  col_sq = jnp.sum(k * k, axis=0)  # ‖w_j‖² per output unit j (rows of W)
  if isinstance(amplitude, str):  # 'ada': (mean_j ‖w_j‖)², constant this step
    amplitude = jax.lax.stop_gradient(jnp.mean(jnp.sqrt(col_sq)) ** 2)
  elif not isinstance(amplitude, numbers.Number):
    amplitude = _poisoned(amplitude, lambda c: c > 0)
  c = jnp.asarray(amplitude, k.dtype)
  if mode == "l2-full":
    # K Kᵀ K: build the Gram on the smaller side, 2·2·min(m,n)·m·n FLOPs.
    if m <= n:
      return k @ (k.T @ k) - c * k
    return (k @ k.T) @ k - c * k
  if mode == "l2-row":  # ((WWᵀ)⊙I)W − cW
    return k * col_sq[None, :] - c * k
  if mode == "l2-col":  # W((WᵀW)⊙I) − cW
    return jnp.sum(k * k, axis=1, keepdims=True) * k - c * k
  if mode == "l1-fullrow":  # sign(WWᵀ − cI) W
    return k @ jnp.sign(k.T @ k - c * jnp.eye(m, dtype=k.dtype))
  if mode == "l1-fullcol":  # W sign(WᵀW − cI)
    return jnp.sign(k @ k.T - c * jnp.eye(n, dtype=k.dtype)) @ k
  if mode == "l1-row":  # (sign(WWᵀ − cI) ⊙ I) W
    return k * jnp.sign(col_sq - c)[None, :]
  if mode == "l1-col":  # W (sign(WᵀW − cI) ⊙ I)
    return jnp.sign(jnp.sum(k * k, axis=1, keepdims=True) - c) * k
  raise ValueError(f"Unknown Bort mode {mode!r}; allowed modes: {MODES}.")


def _correction(kernel: jax.Array, amplitude, mode: str,
                dims: BortDimensionNumbers, name: str) -> jax.Array:
  compute_dtype = jnp.promote_types(kernel.dtype, jnp.float32)
  matrix, unview = matrix_view(kernel.astype(compute_dtype), dims, name)
  if matrix.ndim == 2:
    delta = _correction_2d(matrix, amplitude, mode)
  else:  # batch axes: one correction (and one 'ada' amplitude) per slice
    delta = jax.vmap(lambda k: _correction_2d(k, amplitude, mode))(matrix)
  return unview(delta).astype(kernel.dtype)


def bort_correction(kernel: jax.Array, *, amplitude: Union[float, str] = 1.0,
                    mode: str = "l2-full", n_out_axes: int = 1,
                    dimension_numbers=None) -> jax.Array:
  """The Bort correction ``Δ`` of Eq. (10) for one kernel.

  Args:
    kernel: a kernel; by default its last ``n_out_axes`` axes are outputs.
    amplitude: ``c`` in ``W Wᵀ W − c W``, a finite float > 0, or ``'ada'``
      for ``(mean_j ‖w_j‖)²`` over the output units.
    mode: one of :data:`MODES`.
    n_out_axes: number of trailing output axes (Flax layouts).
    dimension_numbers: a :class:`BortDimensionNumbers` for any other layout;
      overrides ``n_out_axes``.

  Returns:
    ``Δ`` with the kernel's shape and dtype; computed in float32 for
    lower-precision kernels.
  """
  _check_mode(mode)
  _check_amplitude(amplitude)
  kernel = jnp.asarray(kernel)
  if dimension_numbers is None:
    if not 1 <= n_out_axes <= kernel.ndim:
      raise ValueError(f"n_out_axes must be in [1, {kernel.ndim}] for a "
                       f"kernel of shape {kernel.shape}, got {n_out_axes}.")
    dimension_numbers = n_out_axes
  return _correction(kernel, amplitude, mode,
                     _as_dimension_numbers(dimension_numbers), "kernel")


def _value_at(value_or_schedule, count, valid):
  value = value_or_schedule(count) if callable(value_or_schedule) else (
      value_or_schedule)
  if isinstance(value, numbers.Number):
    return value  # checked eagerly
  return _poisoned(value, valid)


def _is_zero(value) -> bool:
  return isinstance(value, numbers.Number) and value == 0


def add_bort_correction(
    lam: ScalarOrSchedule,
    *,
    weight_decay: ScalarOrSchedule = 0.0,
    amplitude: Union[float, str] = 1.0,
    mode: str = "l2-full",
    mask: MaskOrFn = None,
    dimension_numbers: MaskOrFn = None,
) -> optax.GradientTransformation:
  """Adds ``lam·Δ(p) + weight_decay·p`` to the updates of the selected kernels.

  This is the building block of all Bort variants: where it sits in a chain
  decides whether the term is coupled (before the optimizer's scaling, Bort-S
  and plain :func:`bort`) or decoupled (after Adam's scaling, Bort-A / Bort-L).

  Negative, NaN or infinite ``lam``, ``weight_decay`` or ``amplitude`` given
  as numbers raise ``ValueError`` here. Values known only at update time (an
  optax schedule, ``optax.inject_hyperparams`` under jit) cannot raise: a
  step where one is negative or not finite gets NaN updates on the selected
  kernels, so the run's finiteness check stops it at that step (it is never
  clipped to a valid value).

  Args:
    lam: the constraint coefficient λ >= 0, a float or an optax schedule.
    weight_decay: L2 weight decay >= 0 on the same leaves, float or schedule.
    amplitude: ``c`` in ``W Wᵀ W − c W``: a finite float > 0 or ``'ada'``.
    mode: one of :data:`MODES`.
    mask: optax-style pytree of booleans (or a callable ``params -> mask``)
      choosing the leaves; default :func:`default_mask`. See
      :func:`select_kernels`.
    dimension_numbers: pytree (or callable ``params -> pytree``) with a
      :class:`BortDimensionNumbers`, an int number of trailing output axes,
      or ``None`` per leaf; default :func:`default_dimension_numbers`.

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` needs ``params``.
    ``None`` leaves in the updates pass through.
  """
  _check_mode(mode)
  _check_amplitude(amplitude)
  _check_nonnegative("lam", lam)
  _check_nonnegative("weight_decay", weight_decay)
  has_schedule = callable(lam) or callable(weight_decay)
  skip_bort = _is_zero(lam)
  skip_decay = _is_zero(weight_decay)
  nonnegative = lambda v: v >= 0

  def init_fn(params):
    del params
    if has_schedule:
      return BortState(count=jnp.zeros([], jnp.int32))
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(
          "Bort needs the current parameters: call "
          "`tx.update(grads, opt_state, params)` (nnx.Optimizer does this).")
    count = state.count if has_schedule else None
    lam_t = _value_at(lam, count, nonnegative)
    wd_t = _value_at(weight_decay, count, nonnegative)
    new_state = (BortState(count=optax.safe_increment(state.count))
                 if has_schedule else state)

    is_none = lambda x: x is None
    flat_updates, treedef = jax.tree_util.tree_flatten_with_path(
        updates, is_leaf=is_none)
    try:
      treedef.flatten_up_to(params)
    except (ValueError, TypeError) as e:
      raise ValueError(
          "Bort updates do not match the params structure.\nupdates: "
          f"{treedef}\nparams: {jax.tree_util.tree_structure(params)}") from e
    selected = {k.path: k for k in select_kernels(params, mask,
                                                  dimension_numbers)}
    new_updates = []
    for path, u in flat_updates:
      kernel = selected.get(path)
      if kernel is None or u is None:  # None updates pass through (optax)
        new_updates.append(u)
        continue
      p = kernel.kernel
      if not skip_bort:
        delta = _correction(p, amplitude, mode, kernel.dimension_numbers,
                            kernel.name)
        u = u + (lam_t * delta).astype(u.dtype)
      if not skip_decay:
        u = u + (wd_t * p if isinstance(wd_t, numbers.Number)
                 else (wd_t * p).astype(u.dtype))
      new_updates.append(u)
    return treedef.unflatten(new_updates), new_state

  return optax.GradientTransformation(init_fn, update_fn)


def bort(
    lam: ScalarOrSchedule,
    *,
    amplitude: Union[float, str] = 1.0,
    mode: str = "l2-full",
    mask: MaskOrFn = None,
    dimension_numbers: MaskOrFn = None,
) -> optax.GradientTransformation:
  """Bort's correction ``lam·Δ(W)`` (Eq. 10) as a chainable transform.

  ``optax.chain(bort(lam), optax.adamw(lr))`` adds the term to the gradient
  before the optimizer, so Adam rescales it (the coupled variant). The paper's
  Bort-A / Bort-L add it after the scaling instead: use :func:`bort_adamw` /
  :func:`bort_lamb` for those.
  """
  return add_bort_correction(lam, amplitude=amplitude, mode=mode, mask=mask,
                             dimension_numbers=dimension_numbers)


def bort_sgd(
    learning_rate: ScalarOrSchedule,
    lam: ScalarOrSchedule,
    *,
    momentum: Optional[float] = None,
    nesterov: bool = False,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: MaskOrFn = None,
    amplitude: Union[float, str] = 1.0,
    mode: str = "l2-full",
    dimension_numbers: MaskOrFn = None,
) -> optax.GradientTransformation:
  """Bort-S: ``g + lam·Δ(W) + wd·W``, then torch-style momentum, then ``−lr``.

  With ``lam=0`` this is exactly ``optax.chain(optax.add_decayed_weights(wd,
  mask), optax.sgd(lr, momentum, nesterov))``. ``momentum=None`` (the
  default, as in ``optax.sgd``) keeps no momentum buffer. ``amplitude``,
  ``mode`` and ``dimension_numbers`` are those of :func:`add_bort_correction`.
  """
  return optax.chain(
      add_bort_correction(lam, weight_decay=weight_decay, amplitude=amplitude,
                          mode=mode, mask=mask,
                          dimension_numbers=dimension_numbers),
      optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov),
  )


def bort_adamw(
    learning_rate: ScalarOrSchedule,
    lam: ScalarOrSchedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: MaskOrFn = None,
    amplitude: Union[float, str] = 1.0,
    mode: str = "l2-full",
    dimension_numbers: MaskOrFn = None,
) -> optax.GradientTransformation:
  """Bort-A: Adam's scaled update ``+ wd·W + lam·Δ(W)`` (decoupled), then ``−lr``.

  With ``lam=0`` this is exactly ``optax.adamw(lr, b1, b2, eps,
  weight_decay=wd, mask=default_mask)``.

  ``amplitude``, ``mode`` and ``dimension_numbers`` are those of
  :func:`add_bort_correction`.
  """
  return optax.chain(
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
      add_bort_correction(lam, weight_decay=weight_decay, amplitude=amplitude,
                          mode=mode, mask=mask,
                          dimension_numbers=dimension_numbers),
      optax.scale_by_learning_rate(learning_rate),
  )


def bort_lamb(
    learning_rate: ScalarOrSchedule,
    lam: ScalarOrSchedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: MaskOrFn = None,
    amplitude: Union[float, str] = 1.0,
    mode: str = "l2-full",
    dimension_numbers: MaskOrFn = None,
) -> optax.GradientTransformation:
  """Bort-L: ``lam·Δ(W)`` next to LAMB's weight decay, before the trust ratio.

  With ``lam=0`` this is exactly ``optax.lamb(lr, b1, b2, eps,
  weight_decay=wd, mask=default_mask)``.

  ``amplitude``, ``mode`` and ``dimension_numbers`` are those of
  :func:`add_bort_correction`.
  """
  return optax.chain(
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
      add_bort_correction(lam, weight_decay=weight_decay, amplitude=amplitude,
                          mode=mode, mask=mask,
                          dimension_numbers=dimension_numbers),
      optax.scale_by_trust_ratio(),
      optax.scale_by_learning_rate(learning_rate),
  )
