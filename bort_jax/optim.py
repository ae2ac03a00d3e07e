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

Which leaves are kernels and how each reads as ``(fan_in, out)`` lives in
:mod:`bort_jax.kernels` (shared with :mod:`bort_jax.diagnostics`); its public
names are re-exported here.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bort_jax.kernels import (  # re-exported: users and tests import them here
    BortDimensionNumbers,
    MaskOrFn,
    SelectedKernel,
    as_dimension_numbers,
    default_dimension_numbers,
    default_mask,
    matrix_view,
    select_kernels,
)

ScalarOrSchedule = Union[float, jax.Array, optax.Schedule]

MODES = ("l2-full", "l2-row", "l2-col", "l1-fullrow", "l1-fullcol", "l1-row",
         "l1-col")


class BortState(NamedTuple):
  """Step count, kept only when ``lam`` or ``weight_decay`` is a schedule."""
  count: jax.Array


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
  """Refuses a negative, NaN or infinite ``lam`` / ``weight_decay`` /
  ``learning_rate`` eagerly: a number, a concrete array, or a schedule's value
  at step 0 (later steps of a schedule are checked under jit: _poisoned)."""
  if callable(value):
    first = value(jnp.zeros([], jnp.int32))
    if isinstance(first, jax.core.Tracer) or np.ndim(first) != 0:
      return  # traced, or not a scalar schedule: left to the update
    if not math.isfinite(float(first)) or float(first) < 0:
      raise ValueError(f"{name} must be >= 0 at every step, got "
                       f"{float(first)!r} at step 0 from the schedule "
                       f"{value!r}.")
    return
  if isinstance(value, jax.core.Tracer):
    return  # traced values: see _poisoned
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


def _checked_learning_rate(learning_rate):
  """``learning_rate`` as the aliases pass it to optax: refused eagerly when it
  is a number (or a schedule at step 0) that is negative or not finite; a
  schedule's later steps and a traced value (``inject_hyperparams`` under
  jit) are poisoned like λ, so such a step makes every update NaN."""
  _check_nonnegative("learning_rate", learning_rate)
  nonnegative = lambda v: v >= 0
  if callable(learning_rate):
    return lambda count: _poisoned(learning_rate(count), nonnegative)
  if isinstance(learning_rate, jax.core.Tracer):
    return _poisoned(learning_rate, nonnegative)
  return learning_rate


def _correction_2d(k: jax.Array, amplitude, mode: str) -> jax.Array:
  """Δ on the (fan_in, out) matrix ``k = Wᵀ`` (see :func:`bort_correction`)."""
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

  With ``W`` the paper's (out, fan_in) matrix (rows = output units) and ``c``
  the amplitude, the modes of the authors' code are: ``l2-full``
  ``W Wᵀ W − cW`` (Eq. 10, the gradient of ``¼‖WᵀW − cI‖²_F``), ``l2-row``
  ``((WWᵀ)⊙I)W − cW``, ``l2-col`` ``W((WᵀW)⊙I) − cW``, ``l1-fullrow``
  ``sign(WWᵀ − cI)W``, ``l1-fullcol`` ``W sign(WᵀW − cI)``, and ``l1-row`` /
  ``l1-col`` the diagonal-only versions of the last two. ``Δ`` is returned in
  the kernel's layout (``Wᵀ`` for a Flax kernel).

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

  Examples:
    >>> import jax.numpy as jnp, bort_jax
    >>> q = jnp.array([[0.6, -0.8], [0.8, 0.6], [0.0, 0.0]])  # WᵀW = I
    >>> float(jnp.abs(bort_jax.bort_correction(q)).max()) < 1e-6
    True
    >>> bort_jax.bort_correction(2 * jnp.eye(2)).tolist()  # 8I − 2I
    [[6.0, 0.0], [0.0, 6.0]]
    >>> # A PyTorch Linear weight (out, in): outputs on axis 0.
    >>> dims = bort_jax.BortDimensionNumbers(output_axis=0)
    >>> bort_jax.bort_correction(q.T, dimension_numbers=dims).shape
    (2, 3)
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
                     as_dimension_numbers(dimension_numbers), "kernel")


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

  Examples:
    Decoupled Bort with AdamW-style decay on the kernels, as :func:`bort_adamw`
    builds it:

    >>> import jax.numpy as jnp, optax, bort_jax
    >>> tx = optax.chain(
    ...     optax.scale_by_adam(),
    ...     bort_jax.add_bort_correction(0.1, weight_decay=1e-4),
    ...     optax.scale_by_learning_rate(1e-3))
    >>> params = {"kernel": 2 * jnp.eye(2)}
    >>> updates, _ = tx.update({"kernel": jnp.zeros((2, 2))}, tx.init(params),
    ...                        params)
    >>> # −lr·(λ·(8 − 2) + wd·2) on the diagonal; Adam's step is 0 for g = 0
    >>> [round(float(u), 7) for u in updates["kernel"].diagonal()]
    [-0.0006002, -0.0006002]
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
  before the optimizer, so Adam rescales it together with the gradient (the
  coupled variant: λ's effective strength then depends on the gradient's
  scale). The paper's Bort-A / Bort-L add it after Adam's scaling instead:
  use :func:`bort_adamw` / :func:`bort_lamb` for those.

  Args:
    lam: the constraint coefficient λ >= 0, a float or an optax schedule.
    amplitude: ``c`` in ``W Wᵀ W − c W``: a finite float > 0 or ``'ada'``.
    mode: one of :data:`MODES`.
    mask: optax-style pytree of booleans, or a callable ``params -> mask``;
      default :func:`default_mask` (Flax leaves named ``kernel``).
    dimension_numbers: per-leaf :class:`BortDimensionNumbers` (or callable);
      default :func:`default_dimension_numbers`.

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

  Examples:
    >>> import jax.numpy as jnp, optax, bort_jax
    >>> params = {"dense": {"kernel": jnp.ones((4, 2)), "bias": jnp.zeros(2)}}
    >>> tx = optax.chain(bort_jax.bort(0.1), optax.adamw(1e-3))
    >>> state = tx.init(params)
    >>> grads = {"dense": {"kernel": jnp.zeros((4, 2)), "bias": jnp.zeros(2)}}
    >>> updates, state = tx.update(grads, state, params)
    >>> bool((updates["dense"]["kernel"] != 0).all())  # the Bort term
    True
    >>> bool((updates["dense"]["bias"] == 0).all())  # biases are left alone
    True
  """
  return add_bort_correction(lam, amplitude=amplitude, mode=mode, mask=mask,
                             dimension_numbers=dimension_numbers)


def _lam_keyword_only(alias):
  """Makes a positional ``lam`` a TypeError that says how to call ``alias``.

  optax's habit puts momentum / b1 second (``optax.sgd(lr, 0.9)``); here the
  second argument would silently be λ, so ``lam`` is keyword-only and a
  second positional argument gets a message naming it.
  """
  @functools.wraps(alias)
  def wrapper(*args, **kwargs):
    if len(args) > 1:
      raise TypeError(
          f"{alias.__name__}() takes lam as a keyword argument only, got "
          f"{len(args)} positional arguments {args!r}: call e.g. "
          f"{alias.__name__}({args[0]!r}, lam={args[1]!r}) "
          f"(optax's habit of passing momentum or b1 second does not "
          f"apply: name them, e.g. bort_sgd(0.01, lam=0.1, momentum=0.9)).")
    return alias(*args, **kwargs)
  return wrapper


@_lam_keyword_only
def bort_sgd(
    learning_rate: ScalarOrSchedule,
    *,
    lam: ScalarOrSchedule,
    momentum: Optional[float] = None,
    nesterov: bool = False,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: MaskOrFn = None,
    amplitude: Union[float, str] = 1.0,
    mode: str = "l2-full",
    dimension_numbers: MaskOrFn = None,
) -> optax.GradientTransformation:
  """Bort-S: ``g + lam·Δ(W) + wd·W``, then torch-style momentum, then ``−lr``.

  The paper's Bort-S (the authors' ``BortS``): the term is added to the
  gradient before momentum. With ``lam=0`` this is exactly
  ``optax.chain(optax.add_decayed_weights(wd, mask), optax.sgd(lr, momentum,
  nesterov))``. ``lam`` is keyword-only (``bort_sgd(0.01, 0.9)`` raises a
  TypeError rather than meaning λ = 0.9).

  ``weight_decay`` acts only on the leaves Bort acts on (``mask``, default
  Flax kernels), as the authors' optimizers decay only conv/linear weights.
  To decay every leaf as ``optax.add_decayed_weights(wd)`` does, pass
  ``weight_decay=0.0`` and chain that before:
  ``optax.chain(optax.add_decayed_weights(wd), bort_sgd(lr, lam=lam))``.

  Args:
    learning_rate: a finite float >= 0 or an optax schedule.
    lam: the constraint coefficient λ >= 0 (float or schedule); keyword-only.
    momentum: SGD momentum; ``None`` (default, as in ``optax.sgd``) keeps no
      momentum buffer.
    nesterov: Nesterov momentum.
    weight_decay: L2 weight decay >= 0 on the masked leaves (float or
      schedule), added to the gradient like the Bort term.
    mask, amplitude, mode, dimension_numbers: as in :func:`bort`.

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

  Raises:
    TypeError: ``lam`` passed positionally.
    ValueError: a negative or non-finite ``learning_rate``, ``lam`` or
      ``weight_decay`` (a schedule: at step 0; later steps give NaN updates).

  Examples:
    >>> import jax.numpy as jnp, optax, bort_jax
    >>> params = {"conv": {"kernel": 2 * jnp.eye(3)[None, None]}}  # (1,1,3,3)
    >>> tx = bort_jax.bort_sgd(0.01, lam=0.1, momentum=0.9)
    >>> state = tx.init(params)
    >>> grads = {"conv": {"kernel": jnp.zeros((1, 1, 3, 3))}}
    >>> updates, state = tx.update(grads, state, params)
    >>> # −lr·λ·(K Kᵀ K − K) = −0.01 · 0.1 · (8 − 2) on the diagonal (Eq. 10)
    >>> [round(float(u), 6) for u in updates["conv"]["kernel"][0, 0].diagonal()]
    [-0.006, -0.006, -0.006]
    >>> bort_jax.bort_sgd(0.01, 0.9)
    Traceback (most recent call last):
    ...
    TypeError: bort_sgd() takes lam as a keyword argument only, ...
  """
  return optax.chain(
      add_bort_correction(lam, weight_decay=weight_decay, amplitude=amplitude,
                          mode=mode, mask=mask,
                          dimension_numbers=dimension_numbers),
      optax.sgd(_checked_learning_rate(learning_rate), momentum=momentum,
                nesterov=nesterov),
  )


@_lam_keyword_only
def bort_adamw(
    learning_rate: ScalarOrSchedule,
    *,
    lam: ScalarOrSchedule,
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

  The paper's Bort-A (the authors' ``BortA``): the term sits next to AdamW's
  decoupled weight decay, after Adam's scaling, so λ stays an absolute rate
  (unlike the coupled ``optax.chain(bort(lam), optax.adamw(lr))``). With
  ``lam=0`` this is exactly ``optax.adamw(lr, b1, b2, eps, weight_decay=wd,
  mask=default_mask)``. ``lam`` is keyword-only.

  ``weight_decay`` acts only on the leaves Bort acts on (``mask``, default
  Flax kernels), as the authors' optimizers decay only conv/linear weights.
  So ``bort_adamw(lr, lam=0.0)`` is not ``optax.adamw(lr)``, which decays
  biases and norm scales too. Bort-A with optax's decay on every leaf is
  ``optax.chain(optax.scale_by_adam(), bort(lam), optax.add_decayed_weights(
  wd), optax.scale_by_learning_rate(lr))`` (see Examples).

  Args:
    learning_rate: a finite float >= 0 or an optax schedule.
    lam: the constraint coefficient λ >= 0 (float or schedule); keyword-only.
    b1, b2, eps: Adam's, as in ``optax.adamw``.
    weight_decay: decoupled weight decay >= 0 on the masked leaves (float or
      schedule); default 1e-4 as ``optax.adamw``.
    mask, amplitude, mode, dimension_numbers: as in :func:`bort`.

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

  Raises:
    TypeError: ``lam`` passed positionally.
    ValueError: a negative or non-finite ``learning_rate``, ``lam`` or
      ``weight_decay`` (a schedule: at step 0; later steps give NaN updates).

  Examples:
    >>> import jax, jax.numpy as jnp, optax, bort_jax
    >>> params = {"dense": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)}}
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> def step(tx):
    ...   return tx.update(grads, tx.init(params), params)[0]
    >>> bias = step(bort_jax.bort_adamw(1e-3, lam=0.0, weight_decay=0.1))[
    ...     "dense"]["bias"]  # −lr·adam(g): no decay on it, unlike optax.adamw
    >>> [round(float(b), 5) for b in bias]
    [-0.001, -0.001]
    >>> ours = optax.chain(optax.scale_by_adam(), bort_jax.bort(0.0),
    ...                    optax.add_decayed_weights(0.1),
    ...                    optax.scale_by_learning_rate(1e-3))
    >>> jax.tree.map(lambda a, b: bool((a == b).all()), step(ours),
    ...              step(optax.adamw(1e-3, weight_decay=0.1)))
    {'dense': {'bias': True, 'kernel': True}}
  """
  return optax.chain(
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
      add_bort_correction(lam, weight_decay=weight_decay, amplitude=amplitude,
                          mode=mode, mask=mask,
                          dimension_numbers=dimension_numbers),
      optax.scale_by_learning_rate(_checked_learning_rate(learning_rate)),
  )


@_lam_keyword_only
def bort_lamb(
    learning_rate: ScalarOrSchedule,
    *,
    lam: ScalarOrSchedule,
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

  The paper's Bort-L. With ``lam=0`` this is exactly ``optax.lamb(lr, b1, b2,
  eps, weight_decay=wd, mask=default_mask)``. ``lam`` is keyword-only.

  ``weight_decay`` acts only on the leaves Bort acts on (``mask``, default
  Flax kernels), so ``bort_lamb(lr, lam=0.0)`` is not ``optax.lamb(lr)``.
  With optax's decay on every leaf: ``optax.chain(optax.scale_by_adam(eps=
  1e-6), bort(lam), optax.add_decayed_weights(wd),
  optax.scale_by_trust_ratio(), optax.scale_by_learning_rate(lr))``.

  Args:
    learning_rate: a finite float >= 0 or an optax schedule.
    lam: the constraint coefficient λ >= 0 (float or schedule); keyword-only.
    b1, b2, eps: Adam's, as in ``optax.lamb``.
    weight_decay: weight decay >= 0 on the masked leaves (float or schedule),
      before the trust ratio as in ``optax.lamb``.
    mask, amplitude, mode, dimension_numbers: as in :func:`bort`.

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

  Raises:
    TypeError: ``lam`` passed positionally.
    ValueError: a negative or non-finite ``learning_rate``, ``lam`` or
      ``weight_decay`` (a schedule: at step 0; later steps give NaN updates).

  Examples:
    >>> import optax, bort_jax
    >>> tx = bort_jax.bort_lamb(optax.cosine_decay_schedule(5e-3, 1000),
    ...                         lam=2e-5, weight_decay=2e-3)
    >>> bort_jax.bort_lamb(float("nan"), lam=2e-5)
    Traceback (most recent call last):
    ...
    ValueError: learning_rate must be >= 0, got nan ...
  """
  return optax.chain(
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
      add_bort_correction(lam, weight_decay=weight_decay, amplitude=amplitude,
                          mode=mode, mask=mask,
                          dimension_numbers=dimension_numbers),
      optax.scale_by_trust_ratio(),
      optax.scale_by_learning_rate(_checked_learning_rate(learning_rate)),
  )
