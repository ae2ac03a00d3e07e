"""Tests of the Bort transforms against autodiff, the authors' formulas and optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import bort_jax
from bort_jax import optim
from bort_reference import as_w as _as_w
from bort_reference import reference_delta as _reference_delta

KERNEL_SHAPES = [
    # (shape, n_out_axes): conv tall, conv wide, dense both ways, attention.
    ((3, 3, 4, 8), 1),
    ((1, 1, 2, 16), 1),
    ((12, 5), 1),
    ((3, 9), 1),
    ((6, 2, 4), 2),  # attention q/k/v (in, heads, head_dim)
    ((2, 4, 6), 1),  # attention out (heads, head_dim, out)
]


def _random(shape, seed=0, dtype=jnp.float32):
  return jax.random.normal(jax.random.key(seed), shape, dtype) * 0.3


@pytest.mark.parametrize("shape,n_out", KERNEL_SHAPES)
@pytest.mark.parametrize("c", [1.0, 0.5])
def test_l2_full_is_gradient_of_quarter_frobenius_penalty(shape, n_out, c):
  kernel = _random(shape)

  def penalty(k):
    out = int(np.prod(k.shape[k.ndim - n_out:]))
    k2 = k.reshape(-1, out)
    return 0.25 * jnp.sum((k2.T @ k2 - c * jnp.eye(out)) ** 2)

  expected = jax.grad(penalty)(kernel)
  got = bort_jax.bort_correction(kernel, amplitude=c, n_out_axes=n_out)
  assert got.shape == kernel.shape
  np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("shape,n_out", KERNEL_SHAPES)
@pytest.mark.parametrize("mode", bort_jax.MODES)
@pytest.mark.parametrize("c", [1.0, "ada"])
def test_every_mode_matches_reference_formula(shape, n_out, mode, c):
  kernel = _random(shape, seed=1)
  got = bort_jax.bort_correction(kernel, amplitude=c, mode=mode,
                                 n_out_axes=n_out)
  expected_w = _reference_delta(_as_w(kernel, n_out), c, mode)
  np.testing.assert_allclose(_as_w(got, n_out), expected_w, rtol=1e-4,
                             atol=1e-5)


@pytest.mark.parametrize("fan_in,out", [(16, 4), (4, 16)])
def test_orthogonal_kernel_gets_zero_correction(fan_in, out):
  q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(max(fan_in, out),
                                                             min(fan_in, out))))
  kernel = jnp.asarray(q if fan_in >= out else q.T, jnp.float32)
  delta = bort_jax.bort_correction(kernel)
  np.testing.assert_allclose(delta, 0.0, atol=1e-5)
  # A scaled copy is not orthogonal and must be corrected.
  assert float(jnp.abs(bort_jax.bort_correction(2 * kernel)).max()) > 1.0


def test_authors_linear_layer_converges_to_orthonormal_rows():
  """The authors' own test: nn.Linear(6, 2), zero loss, lr 0.1, λ 1, 10k steps."""
  params = {"kernel": _random((6, 2), seed=3) * 2}
  tx = bort_jax.bort_sgd(0.1, 1.0)

  @jax.jit
  def run(params):
    def step(carry, _):
      params, state = carry
      grads = jax.tree.map(jnp.zeros_like, params)
      updates, state = tx.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), None
    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None,
                                  length=10_000)
    return params

  k = run(params)["kernel"]
  np.testing.assert_allclose(k.T @ k, np.eye(2), atol=1e-3)


def _mixed_params():
  """A Linen-style param dict with leaves Bort must and must not touch."""
  keys = jax.random.split(jax.random.key(7), 8)
  return {
      "conv": {"kernel": jax.random.normal(keys[0], (3, 3, 2, 4)),
               "bias": jax.random.normal(keys[1], (4,))},
      "attn": {"query": {"kernel": jax.random.normal(keys[2], (8, 2, 4)),
                         "bias": jax.random.normal(keys[3], (2, 4))}},
      "norm": {"scale": jax.random.normal(keys[4], (8,))},
      "embed": {"embedding": jax.random.normal(keys[5], (10, 8))},
      "pos_embedding": jax.random.normal(keys[6], (1, 5, 8)),
      "head": {"kernel": jax.random.normal(keys[7], (8, 3))},
  }


def _grads_like(params, seed):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return treedef.unflatten(
      [jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)])


def _run(tx, params, steps=3, seed=0):
  state = tx.init(params)
  for i in range(steps):
    updates, state = tx.update(_grads_like(params, seed + i), state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_default_mask_selects_kernels_only():
  mask = bort_jax.default_mask(_mixed_params())
  selected = {optim._path_names(p) for p, m in
              jax.tree_util.tree_flatten_with_path(mask)[0] if m}
  assert selected == {("conv", "kernel"), ("attn", "query", "kernel"),
                      ("head", "kernel")}


ALIASES = {
    "bort+adamw": lambda lam: optax.chain(bort_jax.bort(lam),
                                          optax.adamw(1e-2)),
    "bort_sgd": lambda lam: bort_jax.bort_sgd(1e-2, lam, momentum=0.9,
                                              weight_decay=1e-3),
    "bort_adamw": lambda lam: bort_jax.bort_adamw(1e-2, lam),
    "bort_lamb": lambda lam: bort_jax.bort_lamb(1e-2, lam, weight_decay=1e-3),
}


@pytest.mark.parametrize("name", ALIASES)
def test_non_kernel_leaves_bit_identical_to_base_optimizer(name):
  params = _mixed_params()
  with_bort = _run(ALIASES[name](0.5), params)
  without = _run(ALIASES[name](0.0), params)
  mask = bort_jax.default_mask(params)
  for m, a, b in zip(jax.tree.leaves(mask), jax.tree.leaves(with_bort),
                     jax.tree.leaves(without)):
    if m:
      assert not np.allclose(a, b)
    else:
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ALIASES)
def test_jit_matches_eager_and_keeps_bf16(name):
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _mixed_params())
  tx = ALIASES[name](0.1)
  state = tx.init(params)
  grads = _grads_like(params, 11)
  eager, _ = tx.update(grads, state, params)
  jitted, _ = jax.jit(tx.update)(grads, state, params)
  for e, j, p in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted),
                     jax.tree.leaves(params)):
    assert j.dtype == p.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(e, np.float32),
                               np.asarray(j, np.float32), rtol=2e-2,
                               atol=1e-3)


def test_bf16_correction_is_computed_in_float32():
  kernel = _random((64, 32), seed=4).astype(jnp.bfloat16)
  low = bort_jax.bort_correction(kernel)
  assert low.dtype == jnp.bfloat16
  # The products accumulate in float32 and are rounded to bf16 once, at the end.
  via_f32 = bort_jax.bort_correction(kernel.astype(jnp.float32))
  np.testing.assert_array_equal(np.asarray(low, np.float32),
                                np.asarray(via_f32.astype(jnp.bfloat16),
                                           np.float32))


def test_custom_mask_and_dimension_numbers():
  params = {"a": {"kernel": _random((6, 2, 3), seed=5)},
            "b": {"kernel": _random((4, 5), seed=6)}}
  grads = jax.tree.map(jnp.zeros_like, params)
  mask = {"a": {"kernel": True}, "b": {"kernel": False}}
  dims = {"a": {"kernel": bort_jax.BortDimensionNumbers(output_axis=(1, 2))},
          "b": {"kernel": None}}
  tx = bort_jax.bort(1.0, mask=mask, dimension_numbers=dims)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(
      updates["a"]["kernel"],
      bort_jax.bort_correction(params["a"]["kernel"], n_out_axes=2), rtol=1e-6)
  np.testing.assert_array_equal(updates["b"]["kernel"], 0.0)
  # One output axis reads the same leaf differently.
  by_default = bort_jax.bort(1.0, mask=lambda p: mask)
  updates1, _ = by_default.update(grads, by_default.init(params), params)
  assert not np.allclose(updates1["a"]["kernel"], updates["a"]["kernel"])


def test_nnx_attention_kernels_get_two_output_axes():
  attn = nnx.MultiHeadAttention(num_heads=2, in_features=8, qkv_features=8,
                                decode=False, rngs=nnx.Rngs(0))
  params = nnx.as_pure(nnx.state(attn, nnx.Param))
  dims = optim.default_dimension_numbers(params)
  assert dims["query"]["kernel"].n_out_axes == 2
  assert dims["value"]["kernel"].n_out_axes == 2
  assert dims["out"]["kernel"].n_out_axes == 1


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False),
                                               (0.9, True)])
def test_bort_sgd_with_zero_lam_equals_optax_sgd_bitwise(momentum, nesterov):
  params = _mixed_params()
  ours = _run(bort_jax.bort_sgd(0.05, 0.0, momentum=momentum,
                                nesterov=nesterov, weight_decay=0.01), params)
  ref = _run(optax.chain(
      optax.add_decayed_weights(0.01, bort_jax.default_mask),
      optax.sgd(0.05, momentum=momentum, nesterov=nesterov)), params)
  jax.tree.map(np.testing.assert_array_equal, ours, ref)


@pytest.mark.parametrize("ours,ref", [
    (lambda: bort_jax.bort_adamw(1e-3, 0.0, weight_decay=0.05),
     lambda: optax.adamw(1e-3, weight_decay=0.05, mask=bort_jax.default_mask)),
    (lambda: bort_jax.bort_lamb(5e-3, 0.0, weight_decay=0.02),
     lambda: optax.lamb(5e-3, weight_decay=0.02, mask=bort_jax.default_mask)),
], ids=["bort_adamw-vs-adamw", "bort_lamb-vs-lamb"])
def test_decoupled_variants_with_zero_lam_equal_optax_bitwise(ours, ref):
  params = _mixed_params()
  jax.tree.map(np.testing.assert_array_equal, _run(ours(), params),
               _run(ref(), params))


def test_bort_sgd_step_is_the_authors_update():
  """One BortS step with momentum, written out as the authors' loop does it."""
  params = {"kernel": _random((5, 3), seed=8)}
  g1, g2 = _random((5, 3), seed=9), _random((5, 3), seed=10)
  lr, lam, wd, mom = 0.1, 0.3, 0.01, 0.9
  tx = bort_jax.bort_sgd(lr, lam, momentum=mom, weight_decay=wd)
  state = tx.init(params)
  p, buf = params["kernel"], None
  for g in (g1, g2):
    d = g + lam * bort_jax.bort_correction(p) + wd * p
    buf = d if buf is None else mom * buf + d
    p = p - lr * buf
    updates, state = tx.update({"kernel": g}, state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_allclose(params["kernel"], p, rtol=1e-6, atol=1e-7)


def test_bort_adamw_is_decoupled():
  """Bort-A adds lam·Δ after Adam's scaling: the term is not normalised."""
  params = {"kernel": _random((5, 3), seed=12)}
  grads = {"kernel": _random((5, 3), seed=13)}
  lr, lam, wd = 1e-2, 0.7, 0.05
  tx = bort_jax.bort_adamw(lr, lam, weight_decay=wd)
  updates, _ = tx.update(grads, tx.init(params), params)
  adam_only, _ = optax.scale_by_adam().update(
      grads, optax.scale_by_adam().init(params))
  k = params["kernel"]
  expected = -lr * (adam_only["kernel"] + lam * bort_jax.bort_correction(k)
                    + wd * k)
  np.testing.assert_allclose(updates["kernel"], expected, rtol=1e-5,
                             atol=1e-8)


def test_inject_hyperparams_changes_lam_between_steps():
  params = {"kernel": _random((6, 4), seed=14)}
  grads = {"kernel": jnp.zeros((6, 4))}
  tx = optax.inject_hyperparams(bort_jax.bort)(lam=0.0)
  state = tx.init(params)
  update = jax.jit(tx.update)
  u0, state = update(grads, state, params)
  np.testing.assert_array_equal(u0["kernel"], 0.0)
  state.hyperparams["lam"] = jnp.asarray(2.0)
  u1, state = update(grads, state, params)
  np.testing.assert_allclose(u1["kernel"],
                             2.0 * bort_jax.bort_correction(params["kernel"]),
                             rtol=1e-6)
  # The variants' learning rate and lam are injectable too.
  tx = optax.inject_hyperparams(bort_jax.bort_sgd)(learning_rate=0.1, lam=0.5)
  state = tx.init(params)
  state.hyperparams["lam"] = jnp.asarray(0.0)
  u, _ = tx.update(grads, state, params)
  np.testing.assert_array_equal(u["kernel"], 0.0)


def test_lam_schedule_is_followed_step_by_step():
  params = {"kernel": _random((6, 4), seed=15)}
  grads = {"kernel": jnp.zeros((6, 4))}
  schedule = optax.linear_schedule(0.0, 3.0, transition_steps=3)
  tx = bort_jax.bort(schedule)
  state = tx.init(params)
  delta = bort_jax.bort_correction(params["kernel"])
  for step in range(4):
    updates, state = jax.jit(tx.update)(grads, state, params)
    np.testing.assert_allclose(updates["kernel"], float(step) * delta,
                               rtol=1e-6, atol=1e-7)


def test_nonfinite_kernel_is_not_repaired():
  params = {"kernel": _random((4, 3), seed=16).at[0, 0].set(jnp.nan)}
  tx = bort_jax.bort(0.1)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params),
                         tx.init(params), params)
  assert np.isnan(np.asarray(updates["kernel"])).any()


@pytest.mark.parametrize("kwargs,match", [
    ({"lam": -0.1}, "lam must be >= 0, got -0.1"),
    ({"lam": 0.1, "mode": "l3"}, r"Unknown Bort mode 'l3'.*l2-full.*l1-col"),
    ({"lam": 0.1, "amplitude": "auto"}, "positive float or 'ada', got 'auto'"),
    ({"lam": 0.1, "amplitude": 0.0}, "positive float or 'ada', got 0.0"),
    ({"lam": 0.1, "amplitude": -2}, "positive float or 'ada', got -2"),
])
def test_bad_arguments_raise_naming_the_value(kwargs, match):
  with pytest.raises(ValueError, match=match):
    bort_jax.bort(**kwargs)


def test_bad_lam_type_raises():
  with pytest.raises(TypeError, match="lam must be a float or an optax"):
    bort_jax.bort("0.1")


def test_update_without_params_says_how_to_pass_them():
  tx = bort_jax.bort(0.1)
  params = {"kernel": jnp.ones((2, 2))}
  with pytest.raises(ValueError, match=r"tx.update\(grads, opt_state, params\)"):
    tx.update(params, tx.init(params))


def test_mask_with_wrong_structure_raises():
  params = {"a": {"kernel": jnp.ones((2, 2))}, "b": {"kernel": jnp.ones((2, 2))}}
  tx = bort_jax.bort(0.1, mask={"a": {"kernel": True}})
  with pytest.raises(ValueError, match="mask does not match the params"):
    tx.update(params, tx.init(params), params)


def test_bad_n_out_axes_raises():
  with pytest.raises(ValueError, match=r"n_out_axes must be in \[1, 2\]"):
    bort_jax.bort_correction(jnp.ones((3, 4)), n_out_axes=3)


# --- Multi-device: the update is the same computation on 1 or 8 devices. ---


def test_pmap_update_equals_single_device():
  n = jax.local_device_count()
  assert n == 8, "conftest sets 8 CPU devices"
  params = {"dense": {"kernel": _random((16, 8), seed=20),
                      "bias": jnp.zeros((8,))}}
  per_device_grads = jax.tree.map(
      lambda x: jax.random.normal(jax.random.key(21), (n,) + x.shape), params)
  tx = bort_jax.bort_sgd(0.1, 0.5, momentum=0.9, weight_decay=1e-3)

  def step(params, state, grads):
    grads = jax.lax.pmean(grads, "devices")
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  replicate = lambda t: jax.tree.map(lambda x: jnp.stack([x] * n), t)
  p_params, _ = jax.pmap(step, axis_name="devices")(
      replicate(params), replicate(tx.init(params)), per_device_grads)
  mean_grads = jax.tree.map(lambda g: g.mean(0), per_device_grads)
  updates, _ = jax.jit(tx.update)(mean_grads, tx.init(params), params)
  s_params = optax.apply_updates(params, updates)
  for i in range(n):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5,
                                                         atol=1e-6),
                 p_params, s_params)


def test_fsdp_sharded_kernels_equal_single_device():
  mesh = Mesh(np.array(jax.devices()).reshape(8), ("fsdp",))
  params = {"conv": {"kernel": _random((3, 3, 4, 16), seed=22)},
            "dense": {"kernel": _random((32, 24), seed=23),
                      "bias": jnp.zeros((24,))}}
  grads = _grads_like(params, 24)
  # Kernels sharded along their output axis, biases replicated.
  spec = {"conv": {"kernel": P(None, None, None, "fsdp")},
          "dense": {"kernel": P(None, "fsdp"), "bias": P()}}
  shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), spec,
                           is_leaf=lambda x: isinstance(x, P))
  tx = bort_jax.bort_adamw(1e-2, 0.5, weight_decay=1e-2)

  def step(params, grads):
    state = tx.init(params)
    updates, _ = tx.update(grads, state, params)
    return optax.apply_updates(params, updates)

  sharded = jax.jit(step, out_shardings=shardings)(
      jax.device_put(params, shardings), jax.device_put(grads, shardings))
  single = jax.jit(step)(params, grads)
  assert sharded["dense"]["kernel"].sharding.spec == P(None, "fsdp")
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6),
               sharded, single)


# --- Training with real Flax models: loss falls, the constraint tightens. ---


def _regression_batch():
  x = jax.random.normal(jax.random.key(30), (64, 8))
  y = jnp.sin(x @ jax.random.normal(jax.random.key(31), (8, 2)))
  return x, y


def _mean_residual(params):
  stats = bort_jax.orthogonality_stats(params)
  return float(np.mean([s["orth_residual"] for s in stats.values()]))


class _NnxMlp(nnx.Module):

  def __init__(self, rngs):
    self.hidden = nnx.Linear(8, 16, rngs=rngs)
    self.out = nnx.Linear(16, 2, rngs=rngs)

  def __call__(self, x):
    return self.out(jax.nn.relu(self.hidden(x)))


def test_nnx_model_trains_and_moves_toward_the_constraint():
  model = _NnxMlp(nnx.Rngs(0))
  optimizer = nnx.Optimizer(
      model, optax.chain(bort_jax.bort(0.5), optax.adamw(1e-2)),
      wrt=nnx.Param)
  x, y = _regression_batch()

  @nnx.jit
  def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(
        lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)
    return loss

  residual0 = _mean_residual(nnx.as_pure(nnx.state(model, nnx.Param)))
  losses = [float(train_step(model, optimizer)) for _ in range(60)]
  residual1 = _mean_residual(nnx.as_pure(nnx.state(model, nnx.Param)))
  assert losses[-1] < 0.5 * losses[0]
  assert residual1 < 0.5 * residual0


class _LinenMlp(linen.Module):

  @linen.compact
  def __call__(self, x):
    return linen.Dense(2)(jax.nn.relu(linen.Dense(16)(x)))


def test_linen_model_trains_and_moves_toward_the_constraint():
  model = _LinenMlp()
  x, y = _regression_batch()
  params = model.init(jax.random.key(0), x)["params"]
  tx = optax.chain(bort_jax.bort(0.5), optax.adamw(1e-2))
  state = tx.init(params)

  @jax.jit
  def train_step(params, state):
    loss, grads = jax.value_and_grad(
        lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2))(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  residual0 = _mean_residual(params)
  losses = []
  for _ in range(60):
    params, state, loss = train_step(params, state)
    losses.append(float(loss))
  assert losses[-1] < 0.5 * losses[0]
  assert _mean_residual(params) < 0.5 * residual0


def test_orthogonality_stats_reference_values():
  q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(10, 4)))
  params = {"ortho": {"kernel": jnp.asarray(q, jnp.float32)},
            "scaled": {"kernel": jnp.asarray(2 * q, jnp.float32)},
            "wide": {"kernel": jnp.asarray(q.T, jnp.float32)},
            "bias": jnp.ones((4,))}
  stats = jax.jit(bort_jax.orthogonality_stats)(params)
  assert set(stats) == {"ortho/kernel", "scaled/kernel", "wide/kernel"}
  s = stats["ortho/kernel"]
  np.testing.assert_allclose([s["gram_diag_mean"], s["gram_diag_std"],
                              s["gram_offdiag_abs_mean"], s["orth_residual"],
                              s["sigma_min"], s["sigma_max"]],
                             [1, 0, 0, 0, 1, 1], atol=1e-5)
  s = stats["scaled/kernel"]
  # W Wᵀ = 4I: residual ‖3I‖_F/√4 = 3, singular values 2.
  np.testing.assert_allclose([s["gram_diag_mean"], s["orth_residual"],
                              s["sigma_max"]], [4, 3, 2], rtol=1e-5)
  # 10 outputs over a 4-dim fan-in: the column Gram WᵀW = I is what can hold.
  np.testing.assert_allclose(stats["wide/kernel"]["orth_residual"], 0,
                             atol=1e-5)
