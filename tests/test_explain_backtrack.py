"""Guided backprop, reconstruction (Eq. 4, Fig. 4), reconstruction ratios
(Fig. 3b) and Gram distribution (Fig. 3a)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bort_jax import explain
from bort_jax.explain import guided_backprop
from bort_jax.explain import reconstruction_ratio
import explain_fixtures as F

DN = ("NHWC", "HWIO", "NHWC")


def test_guided_relu_backward_rule():
  x = jnp.array([-2.0, -1.0, 0.0, 0.5, 3.0, 4.0])
  g = jnp.array([1.0, -1.0, 2.0, -3.0, 5.0, 0.0])
  y, vjp = jax.vjp(explain.guided_relu, x)
  np.testing.assert_array_equal(y, jax.nn.relu(x))
  # g·1[x>0]·1[g>0] (Eq. 16)
  np.testing.assert_array_equal(vjp(g)[0], [0.0, 0.0, 0.0, 0.0, 5.0, 0.0])


@pytest.mark.parametrize("kernel_hw,strides,padding", [
    ((3, 3), 1, "SAME"), ((1, 1), 1, "VALID"), ((2, 2), 2, "VALID")])
def test_orthogonal_kernel_reconstructs(kernel_hw, strides, padding):
  x = F.random_images(2, 8, 2)
  model = F.single_conv(kernel_hw, cin=2, cout=kernel_hw[0] * kernel_hw[1] * 2
                        + 2, strides=strides, padding=padding)
  ratios = explain.reconstruction_ratios(model, x)
  assert ratios["conv1"].shape == (2,)
  assert float(jnp.max(ratios["conv1"])) < 1e-5


def test_random_kernel_ratio_clearly_positive():
  model = F.single_conv((3, 3), cin=2, cout=18, orthogonal=False)
  ratios = explain.reconstruction_ratios(model, F.random_images(2, 8, 2))
  assert float(jnp.min(ratios["conv1"])) > 0.3


def test_ratio_uses_the_conv_matrix():
  # The fan-in vectors times the kernel matrix are the conv output minus bias.
  model = F.two_layer()
  x = F.random_images(2, 8, 2)

  @nnx.jit
  def by_hand(model, x):
    conv = model.conv(2)
    z = model.conv_inputs(x)["conv2"]
    patches, matrix = reconstruction_ratio._patches_and_matrix(conv, z)
    z_hat = (patches @ matrix) @ matrix.T
    ratio = jnp.linalg.norm((patches - z_hat).reshape(2, -1), axis=1) / \
        jnp.linalg.norm(patches.reshape(2, -1), axis=1)
    return patches @ matrix, conv(z) - conv.bias[...], ratio

  linear, conv_out, want = by_hand(model, x)
  np.testing.assert_allclose(linear, conv_out, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(explain.reconstruction_ratios(model, x)["conv2"],
                             want, rtol=1e-5)


def test_zero_input_ratio_is_zero_not_nan():
  model = F.single_conv()
  ratios = explain.reconstruction_ratios(model, jnp.zeros((1, 8, 8, 2)))
  np.testing.assert_array_equal(ratios["conv1"], [0.0])


def _guided(pre, g):
  return jnp.where((pre > 0) & (g > 0), g, 0.0)


def _hand_reconstruct(model, x, features=None):
  c1, c2 = model.conv(1), model.conv(2)
  return _hand_chain(c1.kernel[...], c1.bias[...], c2.kernel[...],
                     c2.bias[...], x, features)


@jax.jit
def _hand_chain(k1, b1, k2, b2, x, features):
  """Guided backprop of the 2-layer net written as explicit transposed convs."""
  pre1 = jax.lax.conv_general_dilated(x, k1, (1, 1), "SAME",
                                      dimension_numbers=DN) + b1
  pre2 = jax.lax.conv_general_dilated(jax.nn.relu(pre1), k2, (2, 2), "VALID",
                                      dimension_numbers=DN) + b2
  s2 = jax.nn.relu(pre2) if features is None else features
  g2 = _guided(pre2, s2)
  s1 = jax.lax.conv_transpose(g2, k2, (2, 2), "VALID", dimension_numbers=DN,
                              transpose_kernel=True)  # W₂ᵀ s (Eq. 4)
  g1 = _guided(pre1, s1)
  return jax.lax.conv_transpose(g1, k1, (1, 1), "SAME", dimension_numbers=DN,
                                transpose_kernel=True)


def test_reconstruct_equals_hand_written_transposed_convs():
  model = F.two_layer(seed=3)
  x = F.random_images(3, 8, 2, seed=1)
  np.testing.assert_allclose(explain.reconstruct(model, x, layer=2),
                             _hand_reconstruct(model, x), rtol=1e-5,
                             atol=1e-5)
  features = F.random_images(3, 4, 8, seed=7)
  np.testing.assert_allclose(
      explain.reconstruct(model, x, layer="conv2", features=features),
      _hand_reconstruct(model, x, features), rtol=1e-5, atol=1e-5)


def test_reconstruct_errors_and_cache():
  model = F.two_layer()
  x = F.random_images(2, 8, 2)
  with pytest.raises(ValueError, match="shape of layer 2's output"):
    explain.reconstruct(model, x, layer=2, features=jnp.zeros((2, 3, 3, 8)))
  with pytest.raises(ValueError, match="unknown layer 'conv9'.*conv1"):
    explain.reconstruct(model, x, layer="conv9")
  with pytest.raises(ValueError, match="out of range; allowed 1..2"):
    explain.reconstruct(model, x, layer=3)
  with pytest.raises(ValueError, match="NHWC"):
    explain.reconstruct(model, x[0], layer=1)
  explain.reconstruct(model, x, layer=1)
  size = guided_backprop._reconstruct._cache_size()
  explain.reconstruct(model, x + 1.0, layer=1)  # same graph and shapes
  assert guided_backprop._reconstruct._cache_size() == size


def test_gram_distribution():
  model = F.two_layer()
  grams = explain.gram_distribution(model)
  assert set(grams) == {"conv1", "conv2"}
  kernel = np.asarray(model.conv(2).kernel[...]).reshape(-1, 8)
  gram = kernel.T @ kernel  # W Wᵀ with W = kernelᵀ (rows = output units)
  np.testing.assert_allclose(grams["conv2"]["diag"], np.diag(gram), rtol=1e-5)
  np.testing.assert_allclose(grams["conv2"]["offdiag"],
                             gram[~np.eye(8, dtype=bool)], rtol=1e-5,
                             atol=1e-6)
  ortho = explain.gram_distribution(F.single_conv((3, 3), 2, 18))["conv1"]
  np.testing.assert_allclose(ortho["diag"], np.ones(18), atol=1e-5)
  assert ortho["offdiag"].shape == (18 * 17,)
  # A params pytree: keyed by path, same numbers.
  by_path = explain.gram_distribution(nnx.state(model, nnx.Param))
  assert "convs/1/kernel" in by_path and "head/kernel" in by_path
  np.testing.assert_allclose(by_path["convs/1/kernel"]["diag"],
                             grams["conv2"]["diag"], rtol=1e-6)
