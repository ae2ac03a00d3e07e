"""Tests of the Bort transforms against autodiff, the authors' formulas and optax."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import bort_jax
from bort_jax import kernels
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
  tx = bort_jax.bort_sgd(0.1, lam=1.0)

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
  selected = {kernels.path_names(p) for p, m in
              jax.tree_util.tree_flatten_with_path(mask)[0] if m}
  assert selected == {("conv", "kernel"), ("attn", "query", "kernel"),
                      ("head", "kernel")}


ALIASES = {
    "bort+adamw": lambda lam: optax.chain(bort_jax.bort(lam),
                                          optax.adamw(1e-2)),
    "bort_sgd": lambda lam: bort_jax.bort_sgd(1e-2, lam=lam, momentum=0.9,
                                              weight_decay=1e-3),
    "bort_adamw": lambda lam: bort_jax.bort_adamw(1e-2, lam=lam),
    "bort_lamb": lambda lam: bort_jax.bort_lamb(1e-2, lam=lam, weight_decay=1e-3),
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


def _bf16_ulp(x):
  """Spacing of bfloat16 numbers at |x| (8 significant bits)."""
  x = np.abs(np.asarray(x, np.float64))
  return 2.0 ** (np.floor(np.log2(np.maximum(x, 1e-30))) - 7)


@pytest.mark.parametrize("name", ALIASES)
def test_bf16_update_matches_float32_update_of_the_bf16_inputs(name):
  """A bf16 step (jitted) is the float32 step on the same bf16 values, rounded.

  The reference runs the identical chain in float32 on the bf16-cast params and
  grads; the bf16 step may differ only by a few bf16 roundings.
  """
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _mixed_params())
  grads = _grads_like(params, 11)
  tx = ALIASES[name](0.1)
  low, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  as_f32 = lambda t: jax.tree.map(lambda x: x.astype(jnp.float32), t)
  ref, _ = jax.jit(tx.update)(as_f32(grads), tx.init(as_f32(params)),
                               as_f32(params))
  for lo, r, p in zip(jax.tree.leaves(low), jax.tree.leaves(ref),
                      jax.tree.leaves(params)):
    assert lo.dtype == p.dtype == jnp.bfloat16
    lo, r = np.asarray(lo, np.float64), np.asarray(r, np.float64)
    # Terms of mixed sign are each rounded to bf16 before they are summed, so
    # the error scales with the leaf's largest entry: measured <= 1.9 ulps.
    ulps = np.abs(lo - r).max() / _bf16_ulp(np.abs(r).max())
    assert ulps <= 3, f"{ulps:.1f} bf16 ulps from the float32 update"


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
  assert dims["query"]["kernel"].output_axis == (-2, -1)
  assert dims["value"]["kernel"].output_axis == (-2, -1)
  assert dims["out"]["kernel"].output_axis == -1


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False),
                                               (0.9, True)])
def test_bort_sgd_with_zero_lam_equals_optax_sgd_bitwise(momentum, nesterov):
  params = _mixed_params()
  ours = _run(bort_jax.bort_sgd(0.05, lam=0.0, momentum=momentum,
                                nesterov=nesterov, weight_decay=0.01), params)
  ref = _run(optax.chain(
      optax.add_decayed_weights(0.01, bort_jax.default_mask),
      optax.sgd(0.05, momentum=momentum, nesterov=nesterov)), params)
  jax.tree.map(np.testing.assert_array_equal, ours, ref)


@pytest.mark.parametrize("ours,ref", [
    (lambda: bort_jax.bort_adamw(1e-3, lam=0.0, weight_decay=0.05),
     lambda: optax.adamw(1e-3, weight_decay=0.05, mask=bort_jax.default_mask)),
    (lambda: bort_jax.bort_lamb(5e-3, lam=0.0, weight_decay=0.02),
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
  tx = bort_jax.bort_sgd(lr, lam=lam, momentum=mom, weight_decay=wd)
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
  tx = bort_jax.bort_adamw(lr, lam=lam, weight_decay=wd)
  updates, _ = tx.update(grads, tx.init(params), params)
  adam_only, _ = optax.scale_by_adam().update(
      grads, optax.scale_by_adam().init(params))
  k = params["kernel"]
  expected = -lr * (adam_only["kernel"] + lam * bort_jax.bort_correction(k)
                    + wd * k)
  np.testing.assert_allclose(updates["kernel"], expected, rtol=1e-5,
                             atol=1e-8)


def _np_adam(grads, b1=0.9, b2=0.999, eps=1e-8):
  """Bias-corrected Adam directions for a sequence of gradients, in numpy."""
  m = v = 0.0
  out = []
  for t, g in enumerate(grads, start=1):
    g = np.asarray(g, np.float64)
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    out.append((m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps))
  return out


def _np_delta(kernel, c=1.0, mode="l2-full", n_out=1):
  """Δ in Flax layout from the independent W-layout reference formulas."""
  k = np.asarray(kernel, np.float64)
  return _reference_delta(_as_w(k, n_out), c, mode).T.reshape(k.shape)


def test_bort_lamb_puts_lam_delta_before_the_trust_ratio():
  """Bort-L step by hand: −lr·(‖W‖/‖u‖)·u with u = adam + wd·W + λΔ(W).

  The bias has no wd or λ term but still gets its own trust ratio.
  """
  params = {"dense": {"kernel": _random((6, 4), seed=40),
                      "bias": _random((4,), seed=41)}}
  grads = [_grads_like(params, 42), _grads_like(params, 43)]
  lr, lam, wd, eps = 5e-2, 0.4, 0.02, 1e-6
  tx = bort_jax.bort_lamb(lr, lam=lam, weight_decay=wd, eps=eps)
  state, p = tx.init(params), params
  for g in grads:
    updates, state = tx.update(g, state, p)
    p = optax.apply_updates(p, updates)

  expected = {}
  for name in ("kernel", "bias"):
    w = np.asarray(params["dense"][name], np.float64)
    adam = _np_adam([g["dense"][name] for g in grads], eps=eps)
    for a in adam:
      u = a + (wd * w + lam * _np_delta(w) if name == "kernel" else 0.0)
      w = w - lr * np.linalg.norm(w) / np.linalg.norm(u) * u
    expected[name] = w
  np.testing.assert_allclose(p["dense"]["kernel"], expected["kernel"],
                             rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(p["dense"]["bias"], expected["bias"], rtol=2e-5,
                             atol=1e-6)


def test_coupled_chain_feeds_lam_delta_through_adam():
  """``chain(bort(λ), adamw(lr, wd))``: Adam normalises g + λΔ(W); wd on all leaves."""
  params = {"dense": {"kernel": _random((5, 7), seed=44),
                      "bias": _random((7,), seed=45)}}
  grads = [_grads_like(params, 46), _grads_like(params, 47)]
  lr, lam, wd = 1e-2, 0.8, 0.03
  tx = optax.chain(bort_jax.bort(lam), optax.adamw(lr, weight_decay=wd))
  state, p = tx.init(params), params
  for g in grads:
    updates, state = tx.update(g, state, p)
    p = optax.apply_updates(p, updates)

  for name in ("kernel", "bias"):
    w = np.asarray(params["dense"][name], np.float64)
    m = v = 0.0
    for t, g in enumerate(grads, start=1):
      g = np.asarray(g["dense"][name], np.float64)
      if name == "kernel":
        g = g + lam * _np_delta(w)
      m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
      adam = (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
      w = w - lr * (adam + wd * w)
    np.testing.assert_allclose(p["dense"][name], w, rtol=2e-5, atol=1e-6)


# q/k/v kernel with two output axes, attention-out, conv and a non-kernel leaf.
_MODE_PARAMS = {
    "attn": {"query": {"kernel": _random((6, 2, 3), seed=48)},
             "out": {"kernel": _random((2, 3, 5), seed=49)}},
    "conv": {"kernel": _random((3, 3, 2, 4), seed=50),
             "bias": _random((4,), seed=51)},
}
_MODE_N_OUT = {("attn", "query"): 2, ("attn", "out"): 1, ("conv",): 1}


@pytest.mark.parametrize("mode", bort_jax.MODES)
@pytest.mark.parametrize("c", [0.5, "ada"])
def test_every_mode_through_the_transforms(mode, c):
  """bort / add_bort_correction add λΔ_mode (+ wd·W) per kernel, jitted."""
  lam, wd = 0.3, 0.05
  grads = _grads_like(_MODE_PARAMS, 52)
  for tx, decay in [(bort_jax.bort(lam, amplitude=c, mode=mode), 0.0),
                    (optim.add_bort_correction(lam, weight_decay=wd,
                                               amplitude=c, mode=mode), wd)]:
    updates, _ = jax.jit(tx.update)(grads, tx.init(_MODE_PARAMS), _MODE_PARAMS)
    for path, n_out in _MODE_N_OUT.items():
      get = lambda t: functools.reduce(lambda d, k: d[k], path, t)["kernel"]
      w = np.asarray(get(_MODE_PARAMS), np.float64)
      expected = (np.asarray(get(grads)) + lam * _np_delta(w, c, mode, n_out)
                  + decay * w)
      np.testing.assert_allclose(get(updates), expected, rtol=1e-4,
                                 atol=1e-5, err_msg=str(path))
    np.testing.assert_array_equal(updates["conv"]["bias"],
                                  grads["conv"]["bias"])


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


@pytest.mark.parametrize("inject", [False, True], ids=["schedule", "inject"])
def test_learning_rate_and_weight_decay_schedules_step_by_step(inject):
  """Bort-S with lr and wd schedules, passed directly or via inject_hyperparams.

  No momentum, so step t is exactly −lr_t·(g_t + λΔ(W_t) + wd_t·W_t).
  """
  params = {"kernel": _random((6, 4), seed=17), "bias": _random((4,), seed=18)}
  lr_fn = optax.linear_schedule(0.2, 0.05, transition_steps=3)
  wd_fn = optax.linear_schedule(0.1, 0.0, transition_steps=2)
  lam = 0.5
  make = optax.inject_hyperparams(bort_jax.bort_sgd) if inject else (
      bort_jax.bort_sgd)
  tx = make(learning_rate=lr_fn, lam=lam, weight_decay=wd_fn)
  state, p = tx.init(params), params
  w = {k: np.asarray(v, np.float64) for k, v in params.items()}
  update = jax.jit(tx.update)
  for t in range(4):
    grads = _grads_like(params, 60 + t)
    updates, state = update(grads, state, p)
    p = optax.apply_updates(p, updates)
    lr_t, wd_t = float(lr_fn(t)), float(wd_fn(t))
    w = {"kernel": w["kernel"] - lr_t * (np.asarray(grads["kernel"])
                                         + lam * _np_delta(w["kernel"])
                                         + wd_t * w["kernel"]),
         "bias": w["bias"] - lr_t * np.asarray(grads["bias"])}
    for k in w:
      np.testing.assert_allclose(p[k], w[k], rtol=1e-5, atol=1e-6,
                                 err_msg=f"step {t} {k}")
    if inject:
      np.testing.assert_allclose(state.hyperparams["learning_rate"], lr_t)
      np.testing.assert_allclose(state.hyperparams["weight_decay"], wd_t)


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
  tx = bort_jax.bort_sgd(0.1, lam=0.5, momentum=0.9, weight_decay=1e-3)

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


def test_fsdp_sharded_kernels_stay_sharded_and_equal_single_device():
  """Kernels sharded on their output axis: the update computed inside the jit
  (not forced by ``out_shardings``) keeps that sharding, and five carried steps
  equal the single-device run."""
  mesh = Mesh(np.array(jax.devices()).reshape(8), ("fsdp",))
  params = {"conv": {"kernel": _random((3, 3, 4, 16), seed=22)},
            "dense": {"kernel": _random((32, 24), seed=23),
                      "bias": jnp.zeros((24,))}}
  spec = {"conv": {"kernel": P(None, None, None, "fsdp")},
          "dense": {"kernel": P(None, "fsdp"), "bias": P()}}
  shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), spec,
                           is_leaf=lambda x: isinstance(x, P))
  tx = bort_jax.bort_adamw(1e-2, lam=0.5, weight_decay=1e-2)
  seen = {}

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    for name in ("conv", "dense"):
      jax.debug.inspect_array_sharding(
          updates[name]["kernel"],
          callback=lambda s, name=name: seen.__setitem__(name, s))
    return optax.apply_updates(params, updates), state

  sharded_step, single_step = jax.jit(step), jax.jit(step)
  p_sharded = jax.device_put(params, shardings)
  s_sharded = tx.init(p_sharded)
  p_single, s_single = params, tx.init(params)
  for t in range(5):
    grads = _grads_like(params, 24 + t)
    p_sharded, s_sharded = sharded_step(p_sharded, s_sharded,
                                        jax.device_put(grads, shardings))
    p_single, s_single = single_step(p_single, s_single, grads)
  for name in ("conv", "dense"):
    assert seen[name].spec == spec[name]["kernel"], (name, seen[name])
    assert p_sharded[name]["kernel"].sharding.spec == spec[name]["kernel"]
  # The Adam moments inherit the kernels' sharding too.
  mu = s_sharded[0].mu["dense"]["kernel"]
  assert mu.sharding.spec == P(None, "fsdp")
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6),
               p_sharded, p_single)


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
