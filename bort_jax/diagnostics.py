"""How close each kernel is to Bort's constraint: the paper's Fig. 3a in numbers."""

from __future__ import annotations

import jax
import jax.numpy as jnp

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


def matrix_stats(w: jax.Array) -> dict:
  """Scalars describing ``W W^T`` (rows = output units) of one matrix.

  ``orth_residual`` is ``‖WWᵀ − I‖_F / √out``; when ``out > fan_in`` the rows
  cannot be orthonormal, so the column Gram ``WᵀW`` (Eq. 6) is used instead,
  normalised by ``√fan_in``.
  """
  out, fan_in = w.shape
  gram = w @ w.T
  diag = jnp.diag(gram)
  off_abs_sum = jnp.sum(jnp.abs(gram)) - jnp.sum(jnp.abs(diag))
  n_off = out * (out - 1)
  side = w.T @ w if out > fan_in else gram
  side_n = side.shape[0]
  residual = jnp.linalg.norm(side - jnp.eye(side_n, dtype=side.dtype))
  sigma = jnp.linalg.svd(w, compute_uv=False)
  return {
      "gram_diag_mean": jnp.mean(diag),
      "gram_diag_std": jnp.std(diag),
      "gram_offdiag_abs_mean": off_abs_sum / max(n_off, 1),
      "orth_residual": residual / jnp.sqrt(side_n),
      "sigma_min": jnp.min(sigma),
      "sigma_max": jnp.max(sigma),
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
