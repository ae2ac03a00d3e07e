"""Tests for bort_jax.models.gemm_conv: the im2col lowering equals XLA's
convolution in value and both gradients, covers what it claims and hands the
rest to lax, and the models use it on CPU without changing their outputs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from bort_jax import models
from bort_jax.models import gemm_conv

# (input shape NH..C, window, C_out, strides, padding, kernel dilation)
CASES = {
    "acnn_conv5_3x3_pad1": ((2, 6, 6, 5), (3, 3), 7, (1, 1), ((1, 1), (1, 1)), (1, 1)),
    "stride2_2x2_valid": ((2, 13, 12, 3), (2, 2), 4, (2, 2), "VALID", (1, 1)),
    "same_stride2_odd": ((1, 9, 11, 2), (3, 3), 3, (2, 2), "SAME", (1, 1)),
    "asymmetric_pads": ((2, 7, 8, 3), (4, 3), 5, (1, 2), ((2, 0), (1, 3)), (1, 1)),
    "rect_window_dilated": ((1, 10, 9, 2), (3, 2), 4, (1, 1), ((1, 1), (0, 2)), (2, 3)),
    "one_by_one": ((3, 5, 5, 6), (1, 1), 4, (1, 1), "VALID", (1, 1)),
    "patch_embed": ((1, 8, 8, 3), (4, 4), 6, (4, 4), "VALID", (1, 1)),
    "conv1d": ((2, 11, 3), (3,), 4, (2,), ((1, 1),), (1,)),
    "conv3d": ((1, 5, 4, 6, 2), (2, 3, 2), 3, (1, 1, 2), "SAME", (1, 1, 1)),
}


def _numbers(ndim):
  spatial = "DHW"[-(ndim - 2):]
  return ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")


def _loss(conv, x, w, strides, padding, dilation):
  y = conv(x, w, strides, padding, rhs_dilation=dilation)
  # A fixed non-uniform cotangent, so every output position matters.
  return jnp.sum(jnp.sin(jnp.arange(y.size, dtype=y.dtype)).reshape(y.shape) * y)


@pytest.mark.parametrize("case", sorted(CASES))
def test_gemm_conv_equals_lax_value_and_gradients(case):
  shape, window, c_out, strides, padding, dilation = CASES[case]
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, shape)
  w = jax.random.normal(kw, window + (shape[-1], c_out))
  numbers = _numbers(len(shape))

  def xla(lhs, rhs, s, p, rhs_dilation):
    return lax.conv_general_dilated(lhs, rhs, s, p, rhs_dilation=rhs_dilation,
                                    dimension_numbers=numbers,
                                    precision=lax.Precision.HIGHEST)

  def gemm(lhs, rhs, s, p, rhs_dilation):
    return gemm_conv.gemm_conv(lhs, rhs, s, p, rhs_dilation,
                               precision=lax.Precision.HIGHEST)

  want = xla(x, w, strides, padding, dilation)
  got = gemm(x, w, strides, padding, dilation)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  grads = [jax.jit(jax.grad(_loss, argnums=(1, 2)), static_argnums=(0, 3, 4, 5))(
      f, x, w, strides, padding, dilation) for f in (gemm, xla)]
  for got_grad, want_grad in zip(*grads):
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, atol=1e-4)


def _primitives(fn, *args):
  """Names of the primitives ``fn`` traces to, nested jaxprs included."""
  text = str(jax.make_jaxpr(fn)(*args))
  return {name for name in ("conv_general_dilated", "dot_general")
          if name + "[" in text}


def test_dispatch_takes_gemm_path_on_cpu_and_falls_back_otherwise():
  on_cpu = jax.default_backend() == "cpu"
  x = jnp.ones((1, 6, 6, 4))
  w = jnp.ones((3, 3, 4, 4))
  nhwc = ("NHWC", "HWIO", "NHWC")
  covered = _primitives(lambda a, b: gemm_conv.conv_general_dilated(
      a, b, (1, 1), "SAME", dimension_numbers=nhwc, min_flops=0), x, w)
  # Only the CPU backend takes the matmul path; GPU/TPU keep XLA's conv.
  assert ("conv_general_dilated" not in covered) == on_cpu
  assert ("dot_general" in covered) == on_cpu
  grouped = dict(dimension_numbers=nhwc, feature_group_count=2)
  fallbacks = {
      "grouped": (x, jnp.ones((3, 3, 2, 4)), grouped),
      "input dilation": (x, w, dict(dimension_numbers=nhwc, lhs_dilation=(2, 2))),
      "NCHW": (jnp.ones((1, 4, 6, 6)), jnp.ones((4, 4, 3, 3)), {}),
  }
  for name, (lhs, rhs, kwargs) in fallbacks.items():
    fn = lambda a, b, kw=kwargs: gemm_conv.conv_general_dilated(
        a, b, (1, 1), ((1, 1), (1, 1)), min_flops=0, **kw)
    assert "conv_general_dilated" in _primitives(fn, lhs, rhs), name
    np.testing.assert_array_equal(
        fn(lhs, rhs),
        lax.conv_general_dilated(lhs, rhs, (1, 1), ((1, 1), (1, 1)), **kwargs))


def test_small_convs_keep_xla_convolution_below_min_flops():
  nhwc = ("NHWC", "HWIO", "NHWC")
  conv = lambda a, b: gemm_conv.conv_general_dilated(
      a, b, (1, 1), "SAME", dimension_numbers=nhwc)
  kernel = jax.ShapeDtypeStruct((3, 3, 64, 64), jnp.float32)
  # 2·1·32²·3·3·64·64 = 75 MFLOP < MIN_FLOPS; 2·1·64²·… = 302 MFLOP above it.
  small = _primitives(conv, jax.ShapeDtypeStruct((1, 32, 32, 64), jnp.float32),
                      kernel)
  large = _primitives(conv, jax.ShapeDtypeStruct((1, 64, 64, 64), jnp.float32),
                      kernel)
  assert gemm_conv.MIN_FLOPS == 1e8
  assert "conv_general_dilated" in small
  assert ("conv_general_dilated" not in large) == (jax.default_backend() == "cpu")


def test_gemm_conv_errors_name_the_shapes():
  with pytest.raises(ValueError, match=r"\(2, 5, 5, 3\) and \(3, 3, 4, 2\)"):
    gemm_conv.gemm_conv(jnp.ones((2, 5, 5, 3)), jnp.ones((3, 3, 4, 2)),
                        (1, 1), "VALID")
  with pytest.raises(ValueError, match="does not fit"):
    gemm_conv.gemm_conv(jnp.ones((1, 2, 2, 1)), jnp.ones((3, 3, 1, 1)),
                        (1, 1), "VALID")


@pytest.mark.parametrize("name,width,shape", [
    ("acnn_small_mnist", 0.05, (2, 28, 28, 1)),
    ("lenet", 1.0, (2, 28, 28, 1)),
])
def test_models_give_the_same_outputs_and_gradients_with_either_lowering(
    name, width, shape):
  overrides = {} if name == "lenet" else dict(width_multiplier=width)
  model = models.create(name, num_classes=10, **overrides,
                        rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
  x = jax.random.normal(jax.random.key(1), shape)

  @nnx.jit
  def loss_and_grads(m):
    return nnx.value_and_grad(lambda m: jnp.sum(m(x) ** 2))(m)

  # These narrow models are below MIN_FLOPS: XLA's convolution by default.
  assert "conv_general_dilated" in _primitives(lambda inputs: model(inputs), x)
  gemm_conv.set_lowering(model, functools.partial(
      gemm_conv.conv_general_dilated, min_flops=0))
  primitives = _primitives(lambda inputs: model(inputs), x)
  assert ("conv_general_dilated" not in primitives) == (
      jax.default_backend() == "cpu")
  gemm_loss, gemm_grads = loss_and_grads(model)
  gemm_conv.set_lowering(model, lax.conv_general_dilated)
  xla_loss, xla_grads = loss_and_grads(model)
  np.testing.assert_allclose(gemm_loss, xla_loss, rtol=1e-5)
  for got, want in zip(jax.tree.leaves(gemm_grads), jax.tree.leaves(xla_grads)):
    np.testing.assert_allclose(got, want, rtol=1e-4,
                               atol=1e-5 * float(jnp.abs(want).max()))
