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
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple, Optional, Union

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


class BortDimensionNumbers(NamedTuple):
  """How a kernel is read as a ``(fan_in, out)`` matrix.

  Attributes:
    n_out_axes: how many trailing axes of the kernel are output axes. Conv
      ``(kh, kw, in, out)`` and Dense ``(in, out)``: 1. Attention q/k/v
      ``(in, heads, head_dim)``: 2. Attention out ``(heads, head_dim, out)``: 1.
  """
  n_out_axes: int = 1


class BortState(NamedTuple):
  """Step count, kept only when ``lam`` or ``weight_decay`` is a schedule."""
  count: jax.Array


def _key_name(key) -> Optional[str]:
  for attr in ("key", "name"):
    value = getattr(key, attr, None)
    if isinstance(value, str):
      return value
  return None


def _path_names(path) -> tuple:
  """Names along a pytree path; an ``nnx.Variable``'s ``.value`` is skipped."""
  return tuple(
      n for k, n in ((k, _key_name(k)) for k in path)
      if n is not None and not (
          isinstance(k, jax.tree_util.GetAttrKey) and n == "value"))


def _leaf_is_kernel(path, leaf) -> bool:
  names = _path_names(path)
  return bool(names) and names[-1] == "kernel" and jnp.ndim(leaf) >= 2


def default_mask(params):
  """True for the leaves Bort acts on by default: Flax leaves named ``kernel``.

  That covers Conv, Dense/Linear, attention q/k/v/out and patch-embedding
  kernels, and leaves out biases (attention biases are 2-D, so the name, not
  the rank, decides), norm scales, embeddings, positional embeddings and class
  tokens.
  """
  return jax.tree_util.tree_map_with_path(_leaf_is_kernel, params)


def default_dimension_numbers(params):
  """Per-leaf :class:`BortDimensionNumbers` inferred from Flax layouts.

  3-D kernels under a module named query/key/value (nnx.MultiHeadAttention's
  LinearGeneral layers) have two output axes; everything else has one.
  """
  def infer(path, leaf):
    names = _path_names(path)
    parent = names[-2] if len(names) >= 2 else ""
    if jnp.ndim(leaf) == 3 and parent in _TWO_OUTPUT_AXES_PARENTS:
      return BortDimensionNumbers(2)
    return BortDimensionNumbers(1)
  return jax.tree_util.tree_map_with_path(infer, params)


def _check_amplitude(amplitude):
  if isinstance(amplitude, str):
    if amplitude != "ada":
      raise ValueError(
          f"amplitude must be a positive float or 'ada', got {amplitude!r}.")
    return
  if isinstance(amplitude, numbers.Number):
    if isinstance(amplitude, bool) or not amplitude > 0:
      raise ValueError(
          f"amplitude must be a positive float or 'ada', got {amplitude!r}.")
    return
  if not isinstance(amplitude, jax.Array):
    raise TypeError("amplitude must be a positive float or 'ada', got "
                    f"{type(amplitude).__name__} {amplitude!r}.")


def _check_mode(mode):
  if mode not in MODES:
    raise ValueError(f"Unknown Bort mode {mode!r}; allowed modes: {MODES}.")


def _check_nonnegative(name, value):
  if callable(value) or isinstance(value, jax.core.Tracer):
    return
  if isinstance(value, numbers.Number) or isinstance(value, jax.Array):
    if float(value) < 0:
      raise ValueError(f"{name} must be >= 0, got {value!r}.")
    return
  raise TypeError(f"{name} must be a float or an optax schedule, got "
                  f"{type(value).__name__} {value!r}.")


def _correction_2d(k: jax.Array, amplitude, mode: str) -> jax.Array:
  """Δ on the (fan_in, out) matrix ``k = Wᵀ``; formulas in DESIGN.md."""
  n, m = k.shape  # fan_in, out
  col_sq = jnp.sum(k * k, axis=0)  # ‖w_j‖² per output unit j (rows of W)
  if isinstance(amplitude, str):  # 'ada': (mean_j ‖w_j‖)², constant this step
    amplitude = jax.lax.stop_gradient(jnp.mean(jnp.sqrt(col_sq)) ** 2)
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


def bort_correction(kernel: jax.Array, *, amplitude: Union[float, str] = 1.0,
                    mode: str = "l2-full", n_out_axes: int = 1) -> jax.Array:
  """The Bort correction ``Δ`` of Eq. (10) for one Flax kernel.

  Args:
    kernel: a kernel with its ``n_out_axes`` output axes last.
    amplitude: ``c`` in ``W Wᵀ W − c W``, a positive float, or ``'ada'`` for
      ``(mean_j ‖w_j‖)²`` over the output units.
    mode: one of :data:`MODES`.
    n_out_axes: number of trailing output axes.

  Returns:
    ``Δ`` with the kernel's shape and dtype; computed in float32 for
    lower-precision kernels.
  """
  _check_mode(mode)
  _check_amplitude(amplitude)
  kernel = jnp.asarray(kernel)
  if not 1 <= n_out_axes <= kernel.ndim:
    raise ValueError(f"n_out_axes must be in [1, {kernel.ndim}] for a kernel "
                     f"of shape {kernel.shape}, got {n_out_axes}.")
  out = 1
  for d in kernel.shape[kernel.ndim - n_out_axes:]:
    out *= d
  compute_dtype = jnp.promote_types(kernel.dtype, jnp.float32)
  k2d = kernel.reshape(-1, out).astype(compute_dtype)
  delta = _correction_2d(k2d, amplitude, mode)
  return delta.reshape(kernel.shape).astype(kernel.dtype)


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


def _as_dimension_numbers(value):
  if value is None or isinstance(value, BortDimensionNumbers):
    return value
  if isinstance(value, int) and not isinstance(value, bool):
    return BortDimensionNumbers(value)
  raise TypeError("dimension_numbers leaves must be BortDimensionNumbers, an "
                  f"int number of output axes, or None; got {value!r}.")


def _value_at(value_or_schedule, count):
  return value_or_schedule(count) if callable(value_or_schedule) else (
      value_or_schedule)


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

  Args:
    lam: the constraint coefficient λ, a float or an optax schedule.
    weight_decay: L2 weight decay on the same leaves, float or schedule.
    amplitude: ``c`` in ``W Wᵀ W − c W``: a positive float or ``'ada'``.
    mode: one of :data:`MODES`.
    mask: optax-style pytree of bools (or a callable ``params -> mask``)
      choosing the leaves; default :func:`default_mask`.
    dimension_numbers: pytree (or callable ``params -> pytree``) with a
      :class:`BortDimensionNumbers`, an int, or ``None`` per leaf, overriding
      how many trailing axes are outputs; default
      :func:`default_dimension_numbers`.

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` needs ``params``.
  """
  _check_mode(mode)
  _check_amplitude(amplitude)
  _check_nonnegative("lam", lam)
  _check_nonnegative("weight_decay", weight_decay)
  has_schedule = callable(lam) or callable(weight_decay)
  skip_bort = _is_zero(lam)
  skip_decay = _is_zero(weight_decay)

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
    if has_schedule:
      lam_t = _value_at(lam, state.count)
      wd_t = _value_at(weight_decay, state.count)
      new_state = BortState(count=optax.safe_increment(state.count))
    else:
      lam_t, wd_t, new_state = lam, weight_decay, state

    treedef = jax.tree_util.tree_structure(params)
    flat_params = treedef.flatten_up_to(params)
    flat_updates = _aligned("updates", updates, params)
    flat_mask = _aligned("mask", _resolve(mask, params)
                         if mask is not None else default_mask(params), params)
    dims = (default_dimension_numbers(params) if dimension_numbers is None else
            _resolve(dimension_numbers, params))
    flat_dims = _aligned(
        "dimension_numbers", dims, params,
        is_leaf=lambda x: x is None or isinstance(x, BortDimensionNumbers))

    new_flat = []
    for u, p, selected, dim in zip(flat_updates, flat_params, flat_mask,
                                   flat_dims):
      if not isinstance(selected, (bool, np.bool_)):
        raise TypeError(f"Bort mask leaves must be Python/numpy booleans, got "
                        f"{selected!r}.")
      if not selected or u is None:
        new_flat.append(u)
        continue
      dim = _as_dimension_numbers(dim) or BortDimensionNumbers(1)
      if not skip_bort:
        delta = bort_correction(p, amplitude=amplitude, mode=mode,
                                n_out_axes=dim.n_out_axes)
        u = u + (lam_t * delta).astype(u.dtype)
      if not skip_decay:
        u = u + wd_t * p
      new_flat.append(u)
    return treedef.unflatten(new_flat), new_state

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
  """
  return optax.chain(
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
      add_bort_correction(lam, weight_decay=weight_decay, amplitude=amplitude,
                          mode=mode, mask=mask,
                          dimension_numbers=dimension_numbers),
      optax.scale_by_trust_ratio(),
      optax.scale_by_learning_rate(learning_rate),
  )
