"""orthogonality_stats' singular values (from the smaller Gram's eigenvalues)
against numpy's SVD, for tall, wide and multi-output-axis kernels."""

import jax
import jax.numpy as jnp
import numpy as np

import bort_jax


def test_sigma_matches_numpy_svd_on_both_sides_of_the_gram():
  rng = np.random.default_rng(0)
  # Singular values spread over 0.1..3, well above float32's √eps floor.
  def with_spectrum(m, n, sigmas):
    u, _ = np.linalg.qr(rng.normal(size=(m, len(sigmas))))
    v, _ = np.linalg.qr(rng.normal(size=(n, len(sigmas))))
    return (u * sigmas) @ v.T
  kernels = {
      "tall": with_spectrum(48, 12, np.linspace(0.1, 3.0, 12)),   # fan_in > out
      "wide": with_spectrum(7, 30, np.linspace(0.2, 2.0, 7)),     # out > fan_in
      "conv": with_spectrum(3 * 3 * 4, 16, np.linspace(0.5, 1.5, 16)
                            ).reshape(3, 3, 4, 16),
      "attn": with_spectrum(12, 8, np.linspace(0.3, 1.1, 8)).reshape(12, 2, 4),
  }
  params = {k: {"kernel": jnp.asarray(v, jnp.float32)}
            for k, v in kernels.items()}
  dims = {"tall": {"kernel": None}, "wide": {"kernel": None},
          "conv": {"kernel": None},
          "attn": {"kernel": bort_jax.BortDimensionNumbers(output_axis=(-2, -1))}}
  stats = jax.jit(lambda p: bort_jax.orthogonality_stats(
      p, dimension_numbers=dims))(params)
  for name, kernel in kernels.items():
    n_out = 2 if name == "attn" else 1
    w = kernel.reshape(-1, int(np.prod(kernel.shape[-n_out:])))
    sigma = np.linalg.svd(w, compute_uv=False)
    s = stats[f"{name}/kernel"]
    np.testing.assert_allclose([s["sigma_min"], s["sigma_max"]],
                               [sigma.min(), sigma.max()], rtol=2e-4,
                               err_msg=name)


def _marchenko_pastur_gram(n, ratio, seed):
  # W (n, n·ratio) Gaussian: eigenvalues of W Wᵀ crowd at both spectrum ends.
  w = np.random.default_rng(seed).normal(size=(n, int(n * ratio))) / np.sqrt(n)
  return (w @ w.T).astype(np.float32)


def test_lanczos_extremes_match_eigvalsh_on_a_crowded_spectrum():
  from bort_jax import diagnostics
  n = 2 * diagnostics.EXACT_SPECTRUM_MAX + 88  # takes the Lanczos path
  gram = _marchenko_pastur_gram(n, 3.0, 0)
  exact = np.linalg.eigvalsh(gram.astype(np.float64))
  lo, hi = jax.jit(diagnostics.extreme_eigenvalues)(jnp.asarray(gram))
  np.testing.assert_allclose(float(hi), exact[-1], rtol=1e-4)
  # Ritz values lie inside the spectrum: λ_min is approached from above.
  assert exact[0] * (1 - 1e-4) <= float(lo) <= exact[0] * 1.01, (lo, exact[0])


def test_lanczos_survives_a_krylov_space_that_closes():
  from bort_jax import diagnostics
  n = diagnostics.EXACT_SPECTRUM_MAX + 40
  # Two eigenvalues only: the Krylov space closes after two steps.
  q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(n, n)))
  values = np.where(np.arange(n) < n // 2, 0.5, 2.0)
  gram = jnp.asarray((q * values) @ q.T, jnp.float32)
  lo, hi = jax.jit(diagnostics.extreme_eigenvalues)(gram)
  np.testing.assert_allclose([float(lo), float(hi)], [0.5, 2.0], rtol=1e-4)
  identity = jax.jit(diagnostics.extreme_eigenvalues)(jnp.eye(n) * 3.0)
  np.testing.assert_allclose([float(v) for v in identity], [3.0, 3.0],
                             rtol=1e-5)


def _reference_stats(w):
  """The statistics of the module docstring, in float64 numpy: the Gram on
  the smaller side of W (out, fan_in)."""
  gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
  m = len(gram)
  eigenvalues = np.linalg.eigvalsh(gram)
  return {"gram_diag_mean": np.diag(gram).mean(),
          "gram_diag_std": np.diag(gram).std(),
          "gram_offdiag_abs_mean": np.abs(gram[~np.eye(m, dtype=bool)]).mean(),
          "orth_residual": np.linalg.norm(gram - np.eye(m)) / np.sqrt(m),
          "sigma_min": np.sqrt(eigenvalues[0]),
          "sigma_max": np.sqrt(eigenvalues[-1])}


def test_every_statistic_reads_one_gram_the_smaller_side():
  rng = np.random.default_rng(4)
  # Rows of unequal norms sharing a direction: W Wᵀ and Wᵀ W differ in every
  # statistic, so reading the wrong side anywhere shows.
  def matrix(out, fan_in):
    w = rng.normal(size=(out, fan_in)) + 0.8 * rng.normal(size=(1, fan_in))
    return w * rng.uniform(0.3, 1.5, size=(out, 1)) / np.sqrt(fan_in)
  ws = {"more_outputs": matrix(12, 5), "more_fan_in": matrix(5, 12)}
  # Flax kernels are (fan_in, out) = Wᵀ.
  params = {name: {"kernel": jnp.asarray(w.T, jnp.float32)}
            for name, w in ws.items()}
  stats = jax.jit(bort_jax.orthogonality_stats)(params)
  for name, w in ws.items():
    expected = _reference_stats(w)
    got = {k: float(v) for k, v in stats[f"{name}/kernel"].items()}
    assert set(got) == set(expected)
    for key in expected:
      np.testing.assert_allclose(got[key], expected[key], rtol=2e-5,
                                 err_msg=f"{name}: {key}")
  # Fig. 3a's entries are the same Gram.
  from bort_jax import diagnostics
  entries = diagnostics.gram_distribution(params)["more_outputs/kernel"]
  gram = ws["more_outputs"].T @ ws["more_outputs"]
  np.testing.assert_allclose(entries["diag"], np.diag(gram), rtol=1e-5)
  np.testing.assert_allclose(entries["offdiag"], gram[~np.eye(5, dtype=bool)],
                             rtol=1e-4, atol=1e-6)
