"""How close each kernel is to Bort's constraint: the paper's Fig. 3a in numbers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bort_jax import optim


def kernel_matrix(kernel: jax.Array, n_out_axes: int = 1) -> jax.Array:
  """The paper's ``W`` (out, fan_in) for a Flax kernel with trailing outputs."""
  out = 1
  for d in kernel.shape[kernel.ndim - n_out_axes:]:
    out *= d
  return kernel.reshape(-1, out).T.astype(jnp.promote_types(kernel.dtype,
                                                            jnp.float32))


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


def path_name(path) -> str:
  """'layer1/conv/kernel' style name of a pytree path."""
  parts = []
  for key in path:
    if isinstance(key, jax.tree_util.GetAttrKey) and key.name == "value":
      continue  # the array inside an nnx.Variable
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def orthogonality_stats(params, mask=None, dimension_numbers=None) -> dict:
  """Per selected kernel, scalars measuring Bort's constraint.

  Args:
    params: a params pytree (Linen dict or ``nnx.State``).
    mask: optax-style pytree of bools or callable; default
      :func:`bort_jax.default_mask` (leaves named ``kernel``).
    dimension_numbers: as in :func:`bort_jax.bort`.

  Returns:
    ``{path: {"gram_diag_mean", "gram_diag_std", "gram_offdiag_abs_mean",
    "orth_residual", "sigma_min", "sigma_max"}}`` of scalar arrays; jit-able.
  """
  mask_tree = optim.default_mask(params) if mask is None else (
      mask(params) if callable(mask) else mask)
  dims = optim.default_dimension_numbers(params) if dimension_numbers is None \
      else (dimension_numbers(params) if callable(dimension_numbers)
            else dimension_numbers)
  leaves_with_path, _ = jax.tree_util.tree_flatten_with_path(params)
  flat_mask = optim._aligned("mask", mask_tree, params)
  flat_dims = optim._aligned(
      "dimension_numbers", dims, params,
      is_leaf=lambda x: x is None or isinstance(x, optim.BortDimensionNumbers))
  stats = {}
  for (path, leaf), selected, dim in zip(leaves_with_path, flat_mask,
                                         flat_dims):
    if not selected:
      continue
    dim = optim._as_dimension_numbers(dim) or optim.BortDimensionNumbers(1)
    stats[path_name(path)] = matrix_stats(kernel_matrix(leaf, dim.n_out_axes))
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
