"""How close each kernel is to Bort's constraint: the paper's Fig. 3a in numbers.

One Gram matrix per kernel, everywhere here (:func:`orthogonality_stats`,
:func:`gram_distribution`): the **smaller side** of ``W`` (out, fan_in),

- ``G = W Wᵀ`` (out × out, rows = output units) when ``out <= fan_in``,
- ``G = Wᵀ W`` (fan_in × fan_in, Eq. 6 and Fig. 3a's ``WᵀW``) when
  ``out > fan_in``.

That is the side that can be the identity: Bort's update (Eq. 10, amplitude
1) vanishes when ``W WᵀW = W``, i.e. when every singular value of ``W`` is 1,
which makes the smaller Gram ``I``; the larger one has rank ``min(out,
fan_in)`` and can never be (the paper's footnote 2: Eq. 6 needs a wide
enough layer). Every statistic (diagonal, off-diagonal, residual, σ) is read
from that one ``G``.
(Runs recorded before this convention was applied to ``gram_diag_mean``,
``gram_diag_std`` and ``gram_offdiag_abs_mean`` have those three of ``W Wᵀ``
for kernels with more outputs than fan-in, e.g. ResNet50's expanding 1×1
convs or a ViT's MLP ``fc1``; kernels with ``out <= fan_in``, every kernel of
LeNet and ACNN-Small, read the same either way.)
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
from jax import lax

from bort_jax import kernels


def kernel_matrix(kernel: jax.Array, dimension_numbers=1) -> jax.Array:
  """The paper's ``W`` (out, fan_in) of a kernel, in float32 or wider.

  ``dimension_numbers``: an int number of trailing output axes (Flax) or a
  :class:`bort_jax.BortDimensionNumbers`; with batch axes the result is
  ``(batch, out, fan_in)``.
  """
  kernel = jnp.asarray(kernel)
  matrix, _ = kernels.matrix_view(kernel, dimension_numbers)
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


def smaller_gram(w: jax.Array) -> jax.Array:
  """The smaller-side Gram of ``W`` (out, fan_in) (module docstring): ``W Wᵀ``
  unless ``out > fan_in``, then ``Wᵀ W``; at full float32 precision (no
  TF32/bf16 passes)."""
  out, fan_in = w.shape
  matmul = functools.partial(jnp.matmul, precision=lax.Precision.HIGHEST)
  return matmul(w.T, w) if out > fan_in else matmul(w, w.T)


def matrix_stats(w: jax.Array) -> dict:
  """Scalars describing the smaller-side Gram ``G`` of ``W`` (module
  docstring), ``m × m`` with ``m = min(out, fan_in)``.

  ``gram_diag_mean``/``gram_diag_std``: of ``G_ii``; ``gram_offdiag_abs_mean``:
  the mean of ``|G_ij|``, ``i ≠ j``; ``orth_residual``: ``‖G − I‖_F / √m``.

  ``sigma_min``/``sigma_max`` are the square roots of the extreme eigenvalues
  of ``G`` (``σᵢ² = λᵢ``), from :func:`extreme_eigenvalues`, not from an SVD
  of ``W``. Squaring costs precision at the bottom of the spectrum: a ``σ``
  below about ``√eps · σ_max`` (float32: ``3e-4 · σ_max``) reads as that
  floor or 0. The Gram product runs at full float32 precision (no TF32/bf16
  passes).
  """
  gram = smaller_gram(w)
  m = gram.shape[0]
  diag = jnp.diag(gram)
  off_abs_sum = jnp.sum(jnp.abs(gram)) - jnp.sum(jnp.abs(diag))
  residual = jnp.linalg.norm(gram - jnp.eye(m, dtype=gram.dtype))
  # Tiny negative eigenvalues are rounding.
  lam_min, lam_max = extreme_eigenvalues(gram)
  return {
      "gram_diag_mean": jnp.mean(diag),
      "gram_diag_std": jnp.std(diag),
      "gram_offdiag_abs_mean": off_abs_sum / max(m * (m - 1), 1),
      "orth_residual": residual / jnp.sqrt(m),
      "sigma_min": jnp.sqrt(jnp.maximum(lam_min, 0.0)),
      "sigma_max": jnp.sqrt(jnp.maximum(lam_max, 0.0)),
  }


def orthogonality_stats(params, mask=None, dimension_numbers=None) -> dict:
  """Per selected kernel, scalars measuring Bort's constraint on its
  smaller-side Gram (module docstring).

  Args:
    params: a params pytree (Linen dict, ``nnx.State``, Haiku dict, ...).
    mask, dimension_numbers: as in :func:`bort_jax.bort` (the same
      :func:`bort_jax.kernels.select_kernels` picks the kernels).

  Returns:
    ``{path: {"gram_diag_mean", "gram_diag_std", "gram_offdiag_abs_mean",
    "orth_residual", "sigma_min", "sigma_max"}}`` of scalar arrays (one value
    per slice for kernels with batch axes); jit-able.

  Examples:
    >>> import jax, jax.numpy as jnp, bort_jax
    >>> params = {"conv": {"kernel": 2 * jnp.eye(3)[None, None],  # (1,1,3,3)
    ...                    "bias": jnp.zeros(3)}}
    >>> stats = jax.jit(bort_jax.orthogonality_stats)(params)
    >>> list(stats)  # the kernels Bort acts on, by path
    ['conv/kernel']
    >>> {k: round(float(v), 4) for k, v in stats["conv/kernel"].items()}
    {'gram_diag_mean': 4.0, 'gram_diag_std': 0.0, 'gram_offdiag_abs_mean': 0.0, 'orth_residual': 3.0, 'sigma_max': 2.0, 'sigma_min': 2.0}
  """
  stats = {}
  for kernel in kernels.select_kernels(params, mask, dimension_numbers):
    w = kernel_matrix(kernel.kernel, kernel.dimension_numbers)
    # Batch axes (e.g. scanned layers): one value per slice.
    stats[kernel.name] = (matrix_stats(w) if w.ndim == 2 else
                          jax.vmap(matrix_stats)(w))
  return stats


def _gram_entries(kernel, dimension_numbers=1):
  gram = smaller_gram(kernel_matrix(jnp.asarray(kernel), dimension_numbers))
  off = ~jnp.eye(gram.shape[0], dtype=bool)
  return {"diag": jnp.diag(gram), "offdiag": gram[off]}


def gram_distribution(model_or_params) -> dict:
  """Diagonal and off-diagonal entries of each kernel's Gram (Fig. 3a).

  ``W`` is the (out, fan_in) matrix of a kernel (rows = output units).  The
  Gram is taken on the smaller side, as in :func:`orthogonality_stats`:
  ``W Wᵀ`` (out × out) when ``out <= fan_in``, else ``Wᵀ W`` (fan_in ×
  fan_in), the side that can be the identity.  Bort drives its diagonal to 1
  and the rest to 0.

  Args:
    model_or_params: a conv model of the ``bort_jax.models`` interface (keys
      are its ``layer_names``; for DeiT-S and Swin-S the patch embedding
      only), any other ``nnx.Module`` or a params pytree such as
      ``nnx.state(model, nnx.Param)`` (keys are the paths of the leaves named
      ``kernel``).

  Returns:
    ``{name: {"diag": (m,) array, "offdiag": (m·(m-1),) array}}`` with
    ``m = min(out, fan_in)``.
  """
  if hasattr(model_or_params, "layer_names") and hasattr(
      model_or_params, "conv"):
    model = model_or_params
    return {name: _gram_entries(model.conv(name).kernel[...])
            for name in model.layer_names}
  params = model_or_params
  # An nnx.Module can only exist when flax is imported; the optimizer's base
  # install has no flax.
  nnx = sys.modules.get("flax.nnx")
  if nnx is not None and isinstance(params, nnx.Module):
    params = nnx.state(params, nnx.Param)
  out = {kernel.name: _gram_entries(kernel.kernel, kernel.dimension_numbers)
         for kernel in kernels.select_kernels(params)}
  if not out:
    raise ValueError("no kernel found in params: gram_distribution reads the "
                     "leaves bort_jax.bort selects by default (named "
                     "'kernel')")
  return out
