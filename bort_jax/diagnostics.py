"""How close each kernel is to Bort's constraint: the paper's Fig. 3a in numbers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

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
