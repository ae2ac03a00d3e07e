"""Bort on any parameter layout, and its refusals.

No flax here: these run in the base install (jax, optax, numpy) too.
"""

import dataclasses
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import bort_jax
from bort_jax import optim
from bort_reference import reference_delta

DN = bort_jax.BortDimensionNumbers


def _random(shape, seed):
  return 0.3 * jax.random.normal(jax.random.key(seed), shape)


# (name, shape, dimension numbers, kernel -> list of W (out, fan_in) written
# the way that layout's own framework reads it, W list -> kernel).
LAYOUTS = [
    ("pytorch_conv", (8, 3, 3, 2), DN(output_axis=0),
     lambda k: [k.reshape(k.shape[0], -1)],  # torch: weight.view(out, -1)
     lambda ws, shape: ws[0].reshape(shape)),
    ("equinox_linear", (5, 7), DN(output_axis=0),
     lambda k: [k], lambda ws, shape: ws[0]),
    ("haiku_conv", (3, 3, 2, 4), DN(),
     lambda k: [k.reshape(-1, k.shape[-1]).T],
     lambda ws, shape: ws[0].T.reshape(shape)),
    ("out_between", (4, 6, 3), DN(reduction_axis=(0, 2), output_axis=1),
     lambda k: [k.transpose(1, 0, 2).reshape(6, 12)],
     lambda ws, shape: ws[0].reshape(6, 4, 3).transpose(1, 0, 2)),
    ("scan_stacked", (3, 6, 4), DN(reduction_axis=1, output_axis=2),
     lambda k: [k[i].T for i in range(k.shape[0])],
     lambda ws, shape: np.stack([w.T for w in ws])),
]
if hasattr(optax.contrib, "MuonDimensionNumbers"):  # optax >= 0.2.5
  LAYOUTS.append(("muon_numbers", (5, 7),
                  optax.contrib.MuonDimensionNumbers(1, 0),
                  lambda k: [k], lambda ws, shape: ws[0]))


def _reference(kernel, to_ws, from_ws, c, mode):
  ws = to_ws(np.asarray(kernel, np.float64))
  return from_ws([reference_delta(w, c, mode) for w in ws], kernel.shape)


@pytest.mark.parametrize("layout", LAYOUTS, ids=[l[0] for l in LAYOUTS])
@pytest.mark.parametrize("mode", bort_jax.MODES)
@pytest.mark.parametrize("c", [1.0, "ada"])
def test_correction_in_any_layout_matches_reference(layout, mode, c):
  _, shape, dims, to_ws, from_ws = layout
  kernel = _random(shape, seed=len(shape))
  got = bort_jax.bort_correction(kernel, amplitude=c, mode=mode,
                                 dimension_numbers=dims)
  np.testing.assert_allclose(got, _reference(kernel, to_ws, from_ws, c, mode),
                             rtol=1e-4, atol=1e-5)


@dataclasses.dataclass
class _EqxLinear:
  """Flattens like an Equinox module: GetAttrKey paths, PyTorch layout."""
  weight: jax.Array
  bias: jax.Array


jax.tree_util.register_dataclass(_EqxLinear, data_fields=["weight", "bias"],
                                 meta_fields=[])


class TransformLayoutTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters("l2-full", "l1-fullrow")
  def test_bort_on_equinox_style_module(self, mode):
    model = _EqxLinear(weight=_random((5, 7), 1), bias=_random((5,), 2))
    grads = _EqxLinear(weight=_random((5, 7), 3), bias=_random((5,), 4))
    # jnp booleans built outside jit are concrete, as optax masks are.
    mask = _EqxLinear(weight=jnp.asarray(True), bias=jnp.asarray(False))
    tx = bort_jax.bort_sgd(0.1, lam=0.5, weight_decay=0.01, mode=mode, mask=mask,
                           dimension_numbers=_EqxLinear(
                               weight=DN(output_axis=0), bias=None))
    updates, _ = self.variant(tx.update)(grads, tx.init(model), model)
    w = np.asarray(model.weight, np.float64)
    expected = _EqxLinear(
        weight=-0.1 * (np.asarray(grads.weight) + 0.5 * reference_delta(
            w, 1.0, mode) + 0.01 * w),
        bias=-0.1 * np.asarray(grads.bias))
    chex.assert_trees_all_close(updates, expected, rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_scan_stacked_kernels_get_one_ada_amplitude_per_layer(self):
    params = {"layers": {"kernel": _random((3, 6, 4), 5)}}
    dims = {"layers": {"kernel": DN(reduction_axis=1, output_axis=2)}}
    tx = bort_jax.bort(1.0, amplitude="ada", dimension_numbers=dims)
    grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = self.variant(tx.update)(grads, tx.init(params), params)
    k = np.asarray(params["layers"]["kernel"], np.float64)
    expected = np.stack([reference_delta(k[i].T, "ada", "l2-full").T
                         for i in range(3)])
    chex.assert_trees_all_close(updates["layers"]["kernel"], expected,
                                rtol=1e-4, atol=1e-6)


def test_orthogonality_stats_read_pytorch_layout_as_the_same_w():
  w = _random((6, 10), 6)  # (out, fan_in), as torch.nn.Linear stores it
  torch_style = bort_jax.orthogonality_stats(
      {"fc": {"weight": w}}, mask={"fc": {"weight": True}},
      dimension_numbers={"fc": {"weight": DN(output_axis=0)}})["fc/weight"]
  flax_style = bort_jax.orthogonality_stats(
      {"fc": {"kernel": w.T}})["fc/kernel"]
  chex.assert_trees_all_close(torch_style, flax_style, rtol=1e-5)
  assert float(torch_style["gram_diag_mean"]) == pytest.approx(
      float(np.mean(np.sum(np.asarray(w) ** 2, axis=1))), rel=1e-5)


def test_default_mask_selecting_nothing_warns_naming_the_leaves():
  haiku = {"linear": {"w": _random((4, 3), 7), "b": jnp.zeros(3)}}
  grads = jax.tree.map(jnp.ones_like, haiku)
  tx = bort_jax.bort(0.1)
  with pytest.warns(UserWarning, match=r"selected no leaf.*\['b', 'w'\].*"
                    r"mask=.*param_labels"):
    updates, _ = tx.update(grads, tx.init(haiku), haiku)
  chex.assert_trees_all_equal(updates, grads)
  with pytest.warns(UserWarning, match=r"\['bias', 'weight'\]"):
    bort_jax.orthogonality_stats(_EqxLinear(_random((4, 3), 8), jnp.zeros(4)))
  mask = {"linear": {"w": True, "b": False}}
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    updates, _ = bort_jax.bort(0.1, mask=mask).update(grads, (), haiku)
  expected = 0.1 * reference_delta(np.asarray(haiku["linear"]["w"]).T, 1.0,
                                   "l2-full").T + 1.0
  np.testing.assert_allclose(updates["linear"]["w"], expected, rtol=1e-5)


def test_mask_leaves_may_be_jnp_booleans_but_not_other_values():
  params = {"a": {"kernel": _random((4, 3), 9)},
            "b": {"kernel": _random((3, 2), 10)}}
  grads = jax.tree.map(jnp.zeros_like, params)
  as_jnp = {"a": {"kernel": jnp.asarray(True)},
            "b": {"kernel": jnp.asarray(False)}}
  as_python = {"a": {"kernel": True}, "b": {"kernel": False}}
  got, _ = bort_jax.bort(1.0, mask=as_jnp).update(grads, (), params)
  want, _ = bort_jax.bort(1.0, mask=as_python).update(grads, (), params)
  chex.assert_trees_all_equal(got, want)
  assert np.abs(np.asarray(got["a"]["kernel"])).max() > 0
  np.testing.assert_array_equal(got["b"]["kernel"], 0.0)
  with pytest.raises(TypeError, match=r"booleans.*got 1 for b/kernel"):
    bort_jax.bort(1.0, mask={"a": {"kernel": True}, "b": {"kernel": 1}}
                  ).update(grads, (), params)


@pytest.mark.parametrize("jit", [False, True])
def test_none_updates_pass_through_like_add_decayed_weights(jit):
  params = {"frozen": {"kernel": _random((4, 3), 11)},
            "head": {"kernel": _random((3, 2), 12)}}
  updates = {"frozen": {"kernel": None}, "head": {"kernel": jnp.ones((3, 2))}}
  tx = bort_jax.add_bort_correction(0.5, weight_decay=0.1)
  update = jax.jit(tx.update) if jit else tx.update
  got, _ = update(updates, tx.init(params), params)
  assert got["frozen"]["kernel"] is None
  head = np.asarray(params["head"]["kernel"], np.float64)
  np.testing.assert_allclose(
      got["head"]["kernel"],
      1.0 + 0.5 * reference_delta(head.T, 1.0, "l2-full").T + 0.1 * head,
      rtol=1e-5)
  decayed, _ = optax.add_decayed_weights(0.1).update(updates, (), params)
  assert jax.tree.structure(got, is_leaf=lambda x: x is None) == (
      jax.tree.structure(decayed, is_leaf=lambda x: x is None))


def test_zero_size_kernel_axis_raises_naming_the_leaf():
  params = {"empty": {"kernel": jnp.zeros((0, 4))}}
  tx = bort_jax.bort(0.1)
  with pytest.raises(ValueError, match=r"empty/kernel.*\(0, 4\).*zero-size"):
    tx.update(params, tx.init(params), params)
  with pytest.raises(ValueError, match=r"empty/kernel.*\(0, 4\).*zero-size"):
    bort_jax.orthogonality_stats(params)
  with pytest.raises(ValueError, match=r"\(3, 0, 2\).*zero-size"):
    bort_jax.bort_correction(jnp.zeros((3, 0, 2)))


@pytest.mark.parametrize("dims,match", [
    (DN(output_axis=2), r"output_axis=2 is out of range .*\(4, 3\)"),
    (DN(reduction_axis=0, output_axis=-2), r"one output and one reduction"),
    (DN(reduction_axis=(), output_axis=1), r"one output and one reduction"),
])
def test_bad_dimension_numbers_raise(dims, match):
  with pytest.raises(ValueError, match=match):
    bort_jax.bort_correction(jnp.ones((4, 3)), dimension_numbers=dims)


@pytest.mark.parametrize("make,value", [
    (lambda v: bort_jax.bort(v), float("nan")),
    (lambda v: bort_jax.bort(v), float("inf")),
    (lambda v: bort_jax.bort(v), -0.5),
    (lambda v: bort_jax.bort(v), jnp.asarray(float("nan"))),
    (lambda v: bort_jax.bort(0.1, amplitude=v), float("inf")),
    (lambda v: bort_jax.bort(0.1, amplitude=v), float("nan")),
    (lambda v: bort_jax.bort(0.1, amplitude=v), -1.0),
    (lambda v: bort_jax.bort_sgd(0.1, lam=0.1, weight_decay=v), float("nan")),
    (lambda v: bort_jax.bort_adamw(0.1, lam=v), float("-inf")),
])
def test_non_finite_or_negative_values_are_refused_eagerly(make, value):
  with pytest.raises(ValueError, match=rf"got {value!r}".replace(
      "(", r"\(").replace(")", r"\)")):
    make(value)


def _nan_steps(tx, params, steps):
  """Per step: (selected kernel all NaN, bias all finite), under jit."""
  grads = jax.tree.map(jnp.ones_like, params)
  update = jax.jit(tx.update)
  state, seen = tx.init(params), []
  for _ in range(steps):
    updates, state = update(grads, state, params)
    seen.append((bool(np.isnan(updates["fc"]["kernel"]).all()),
                 bool(np.isfinite(updates["fc"]["bias"]).all())))
  return seen


PARAMS = {"fc": {"kernel": _random((4, 3), 13), "bias": jnp.zeros(3)}}


def test_schedule_going_negative_makes_that_step_nan_not_wrong():
  # λ_t = 0.1 − 0.1·t: 0.1, 0, −0.1 — the third step has no valid λ.
  lam = lambda count: 0.1 - 0.1 * count
  assert _nan_steps(bort_jax.bort(lam), PARAMS, 3) == [
      (False, True), (False, True), (True, True)]
  decay = lambda count: jnp.where(count < 1, 0.01, jnp.nan)
  assert _nan_steps(bort_jax.bort_sgd(0.1, lam=0.1, weight_decay=decay), PARAMS,
                    2) == [(False, True), (True, True)]


@pytest.mark.parametrize("name,value", [("lam", -0.5), ("lam", jnp.inf),
                                        ("amplitude", -1.0)])
def test_injected_bad_hyperparameter_under_jit_gives_nan(name, value):
  tx = optax.inject_hyperparams(bort_jax.bort)(lam=0.1, amplitude=1.0)
  params = PARAMS
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  good, _ = jax.jit(tx.update)(grads, state, params)
  assert np.isfinite(good["fc"]["kernel"]).all()
  state.hyperparams[name] = jnp.asarray(value)
  bad, _ = jax.jit(tx.update)(grads, state, params)
  assert np.isnan(bad["fc"]["kernel"]).all()
  np.testing.assert_array_equal(bad["fc"]["bias"], 1.0)
  # Outside jit the injected value is concrete and refused eagerly.
  with pytest.raises(ValueError, match=name):
    tx.update(grads, state, params)


@pytest.mark.parametrize("make", [
    lambda schedule: bort_jax.bort(schedule),
    lambda schedule: bort_jax.bort_sgd(0.1, lam=0.1, weight_decay=schedule),
    lambda schedule: bort_jax.bort_adamw(schedule, lam=0.1),
])
def test_schedule_invalid_at_step_0_is_refused_eagerly(make):
  with pytest.raises(ValueError, match=r"must be >= 0 at every step, got "
                     r"-0.25 at step 0 from the schedule"):
    make(optax.linear_schedule(-0.25, 0.1, 10))
  make(optax.linear_schedule(0.0, 0.1, 10))  # valid at step 0: accepted
