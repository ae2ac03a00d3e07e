"""How close each kernel is to Bort's constraint: the paper's Fig. 3a in numbers."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from bort_jax import optim


def kernel_matrix(kernel: jax.Array, dimension_numbers=1) -> jax.Array:
  """The paper's ``W`` (out, fan_in) of a kernel, in float32 or wider.

  ``dimension_numbers``: an int number of trailing output axes (Flax) or a
  :class:`bort_jax.BortDimensionNumbers`; with batch axes the result is
  ``(batch, out, fan_in)``.
  """
  kernel = jnp.asarray(kernel)
  matrix, _ = optim.matrix_view(kernel, dimension_numbers)
  return jnp.swapaxes(matrix, -1, -2).astype(
      jnp.promote_types(kernel.dtype, jnp.float32))


EXACT_SPECTRUM_MAX = 256
"""Gram matrices up to this size get their full spectrum from ``eigvalsh``."""

LANCZOS_STEPS = 64
"""Lanczos steps for the extreme eigenvalues of a larger Gram matrix."""


def extreme_eigenvalues(gram: jax.Array, steps: int = LANCZOS_STEPS):
  """``(λ_min, λ_max)`` of a symmetric PSD matrix.

  Up to ``EXACT_SPECTRUM_MAX`` rows: ``eigvalsh``. Larger: the extreme Ritz
  values of ``steps`` Lanczos steps with full reorthogonalisation, i.e.
  ``steps`` matrix-vector products instead of an ``n³`` eigendecomposition
  (XLA's ``eigh`` also computes every eigenvector, and on 2 CPU cores takes
  about 10 Gram products at n = 2592). Ritz values lie inside the spectrum
  and converge fastest at its ends: ``λ_max`` is accurate to float32
  rounding, ``λ_min`` is an upper bound, within about 1% of it for spectra
  as crowded at the bottom as a random matrix's (tested). A Krylov space that
  closes early (e.g. ``gram = c·I``) restarts from a fresh direction.
  """
  n = gram.shape[0]
  if n <= max(EXACT_SPECTRUM_MAX, steps):
    eigenvalues = jnp.linalg.eigvalsh(gram)
    return eigenvalues[0], eigenvalues[-1]
  matvec = functools.partial(jnp.matmul, gram, precision=lax.Precision.HIGHEST)
  fresh = jax.random.normal(jax.random.key(0), (steps + 1, n), gram.dtype)
  basis = jnp.zeros((steps + 1, n), gram.dtype).at[0].set(
      fresh[0] / jnp.linalg.norm(fresh[0]))
  tiny = 1e-6 * jnp.sqrt(jnp.maximum(jnp.sum(gram * gram), 1e-30))

  def orthogonalise(basis, v):
    # Twice is enough in floating point ("twice is enough", Parlett).
    for _ in range(2):
      v = v - basis.T @ (basis @ v)
    return v

  def step(j, carry):
    basis, alpha, beta = carry
    v = matvec(basis[j])
    a = basis[j] @ v
    v = orthogonalise(basis, v)
    b = jnp.linalg.norm(v)
    closed = b <= tiny
    restart = orthogonalise(basis, fresh[j + 1])
    nxt = jnp.where(closed, restart / jnp.linalg.norm(restart), v / b)
    return (basis.at[j + 1].set(nxt), alpha.at[j].set(a),
            beta.at[j].set(jnp.where(closed, 0.0, b)))

  _, alpha, beta = lax.fori_loop(
      0, steps, step, (basis, jnp.zeros(steps, gram.dtype),
                       jnp.zeros(steps, gram.dtype)))
  tridiagonal = (jnp.diag(alpha) + jnp.diag(beta[:-1], 1)
                 + jnp.diag(beta[:-1], -1))
  ritz = jnp.linalg.eigvalsh(tridiagonal)
  return ritz[0], ritz[-1]


def matrix_stats(w: jax.Array) -> dict:
  """Scalars describing ``W W^T`` (rows = output units) of one matrix.

  ``orth_residual`` is ``‖WWᵀ − I‖_F / √out``; when ``out > fan_in`` the rows
  cannot be orthonormal, so the column Gram ``WᵀW`` (Eq. 6) is used instead,
  normalised by ``√fan_in``.

  ``sigma_min``/``sigma_max`` are the square roots of the extreme eigenvalues
  of that smaller Gram matrix (``σᵢ² = λᵢ``), from
  :func:`extreme_eigenvalues`, not from an SVD of ``W``. Squaring costs
  precision at the bottom of the spectrum: a ``σ`` below about
  ``√eps · σ_max`` (float32: ``3e-4 · σ_max``) reads as that floor or 0.
  Both Gram products run at full float32 precision (no TF32/bf16 passes).
  """
  out, fan_in = w.shape
  matmul = functools.partial(jnp.matmul, precision=lax.Precision.HIGHEST)
  gram = matmul(w, w.T)
  diag = jnp.diag(gram)
  off_abs_sum = jnp.sum(jnp.abs(gram)) - jnp.sum(jnp.abs(diag))
  n_off = out * (out - 1)
  side = matmul(w.T, w) if out > fan_in else gram
  side_n = side.shape[0]
  residual = jnp.linalg.norm(side - jnp.eye(side_n, dtype=side.dtype))
  # Tiny negative eigenvalues are rounding.
  lam_min, lam_max = extreme_eigenvalues(side)
  return {
      "gram_diag_mean": jnp.mean(diag),
      "gram_diag_std": jnp.std(diag),
      "gram_offdiag_abs_mean": off_abs_sum / max(n_off, 1),
      "orth_residual": residual / jnp.sqrt(side_n),
      "sigma_min": jnp.sqrt(jnp.maximum(lam_min, 0.0)),
      "sigma_max": jnp.sqrt(jnp.maximum(lam_max, 0.0)),
  }


path_name = optim.path_name  # 'layer1/conv/kernel' style name of a path


def orthogonality_stats(params, mask=None, dimension_numbers=None) -> dict:
  """Per selected kernel, scalars measuring Bort's constraint.

  Args:
    params: a params pytree (Linen dict, ``nnx.State``, Haiku dict, ...).
    mask, dimension_numbers: as in :func:`bort_jax.bort` (the same
      :func:`bort_jax.optim.select_kernels` picks the kernels).

  Returns:
    ``{path: {"gram_diag_mean", "gram_diag_std", "gram_offdiag_abs_mean",
    "orth_residual", "sigma_min", "sigma_max"}}`` of scalar arrays (one value
    per slice for kernels with batch axes); jit-able.
  """
  stats = {}
  for kernel in optim.select_kernels(params, mask, dimension_numbers):
    w = kernel_matrix(kernel.kernel, kernel.dimension_numbers)
    # Batch axes (e.g. scanned layers): one value per slice.
    stats[kernel.name] = (matrix_stats(w) if w.ndim == 2 else
                          jax.vmap(matrix_stats)(w))
  return stats


def _gram_entries(kernel, n_out_axes=1):
  w = kernel_matrix(jnp.asarray(kernel), n_out_axes)
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
      out[path_name(path)] = _gram_entries(leaf)
  if not out:
    raise ValueError("no leaf named 'kernel' with ndim >= 2 found in params")
  return out
