"""Mixed precision (``models.create(..., dtype=jnp.bfloat16)``): float32
parameters, bf16 convs and matmuls, float32 norm statistics; logits close to
float32's; a bf16 LeNet trains on digits as well as a float32 one."""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import bort_jax
from bort_jax import models
from bort_jax.data import digits

# Narrow variants (CNN and transformer families) and their input shapes.
CASES = {
    "lenet": (dict(), (2, 28, 28, 1)),
    "resnet50": (dict(width_multiplier=1 / 16, stage_sizes=(1, 1, 1, 1)),
                 (2, 32, 32, 3)),
    "vgg16": (dict(width_multiplier=1 / 16), (2, 32, 32, 3)),
    "deit_small": (dict(width_multiplier=1 / 8, depth=2, image_size=32,
                        patch_size=8), (2, 32, 32, 3)),
    # Two stages (plain and shifted 4x4 windows, one patch merging).
    "swin_small": (dict(width_multiplier=1 / 8, depths=(2, 2), num_heads=(3, 6),
                        image_size=32, window_size=4), (2, 32, 32, 3)),
}
# bf16 keeps 8 mantissa bits (relative rounding 2^-9 ≈ 0.2%) per operand; a
# few layers of accumulated rounding stay within 3% of the logits' range.
LOGIT_TOLERANCE = 0.03


def _make(name, dtype):
  overrides, _ = CASES[name]
  model = models.create(name, num_classes=10, dtype=dtype,
                        rngs=nnx.Rngs(jax.random.key(0, impl="rbg")),
                        **overrides)
  model.eval()
  return model


def _images(shape):
  return jnp.asarray(np.random.default_rng(0).standard_normal(shape),
                     jnp.float32)


def _matmul_operand_dtypes(model, x):
  """Dtypes of every conv/dot operand in the forward pass's jaxpr."""
  graphdef, state = nnx.split(model)
  jaxpr = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x))(state, x)
  found = set()

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
        found.update(str(v.aval.dtype) for v in eqn.invars)
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        visit(sub)

  visit(jaxpr.jaxpr)
  return found


@pytest.mark.parametrize("name", sorted(CASES))
def test_bf16_model_keeps_f32_params_and_matches_f32_logits(name):
  _, shape = CASES[name]
  x = _images(shape)
  f32, bf16 = _make(name, jnp.float32), _make(name, jnp.bfloat16)
  p32, p16 = nnx.state(f32, nnx.Param), nnx.state(bf16, nnx.Param)
  assert {str(v.dtype) for v in jax.tree.leaves(p16)} == {"float32"}
  jax.tree.map(np.testing.assert_array_equal, p16, p32)
  # Every conv and matmul runs on bf16 operands.
  assert _matmul_operand_dtypes(bf16, x) == {"bfloat16"}
  logits32 = nnx.jit(lambda m, x: m(x))(f32, x)
  logits16 = nnx.jit(lambda m, x: m(x))(bf16, x)
  assert logits16.dtype == jnp.bfloat16
  error = float(jnp.max(jnp.abs(logits16.astype(jnp.float32) - logits32)))
  scale = float(jnp.max(jnp.abs(logits32)))
  assert error <= LOGIT_TOLERANCE * scale, (name, error, scale)


# ------------------------------------------------- a short bf16 training run

DIGITS_STEPS = 200
DIGITS_BATCH = 64


@functools.cache
def _digits_arrays():
  def load(split):
    source = digits.digits_source(split)
    images, labels = source.read(np.arange(source.num_examples))
    mean, std = np.array(source.mean), np.array(source.std)
    return (jnp.asarray((images - mean) / std, jnp.float32),
            jnp.asarray(labels))
  return load("train"), load("test")


def _train_digits_lenet(dtype):
  """Bort-S LeNet on digits, DIGITS_STEPS steps in one scan; returns the
  test accuracy, the trained params and the optimizer state."""
  (train_x, train_y), (test_x, test_y) = _digits_arrays()
  model = models.create("lenet", num_classes=10, dtype=dtype,
                        rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
  graphdef, params = nnx.split(model, nnx.Param)
  optimizer = bort_jax.bort_sgd(0.05, lam=0.1, momentum=0.9, weight_decay=1e-4)
  batches = np.random.default_rng(0).integers(
      0, train_x.shape[0], (DIGITS_STEPS, DIGITS_BATCH))

  def loss_fn(params, x, y):
    logits = nnx.merge(graphdef, params)(x).astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def train(params):
    def step(carry, rows):
      params, opt_state = carry
      grads = jax.grad(loss_fn)(params, train_x[rows], train_y[rows])
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None
    (params, opt_state), _ = jax.lax.scan(
        step, (params, optimizer.init(params)), batches)
    logits = nnx.merge(graphdef, params)(test_x)
    return jnp.mean(jnp.argmax(logits, -1) == test_y), params, opt_state

  return train(params)


def test_bf16_lenet_trains_to_f32_accuracy_with_f32_state():
  acc32, _, _ = _train_digits_lenet(jnp.float32)
  acc16, params16, opt_state16 = _train_digits_lenet(jnp.bfloat16)
  assert float(acc32) > 0.9, float(acc32)
  # Same data order and init: within 2 points of float32's test accuracy.
  assert abs(float(acc16) - float(acc32)) <= 0.02, (float(acc16), float(acc32))
  float_leaves = [leaf for leaf in jax.tree.leaves((params16, opt_state16))
                  if jnp.issubdtype(leaf.dtype, jnp.floating)]
  assert float_leaves and {str(l.dtype) for l in float_leaves} == {"float32"}
