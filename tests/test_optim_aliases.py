"""Bort-S/A/L pass mode, amplitude and dimension_numbers through.

Each alias's step is checked against the authors' formula for Δ written on W
(``bort_reference.reference_delta``) placed where the paper puts it.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import bort_jax
from bort_reference import as_w, reference_delta

LR, LAM, WD = 0.05, 0.3, 0.02


def _params():
  keys = jax.random.split(jax.random.key(11), 4)
  return {
      # A 3-D kernel under a name the default reads with one output axis;
      # dimension_numbers below says it has two.
      "block": {"kernel": 0.4 * jax.random.normal(keys[0], (6, 2, 3)),
                "bias": jax.random.normal(keys[1], (2, 3))},
      "head": {"kernel": 0.4 * jax.random.normal(keys[2], (5, 4))},
  }


DIMS = {"block": {"kernel": 2, "bias": None}, "head": {"kernel": 1}}
N_OUT = {"block": 2, "head": 1}


def _grads(params):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(3), len(leaves))
  return treedef.unflatten([jax.random.normal(k, x.shape)
                            for k, x in zip(keys, leaves)])


def _reference_term(params, mode, amplitude, wd):
  """``lam·Δ(W) + wd·W`` on the kernels, 0 on the bias, in kernel layout."""
  term = {}
  for name, n_out in N_OUT.items():
    k = params[name]["kernel"]
    w = as_w(k, n_out)
    delta = reference_delta(w, amplitude, mode).T.reshape(k.shape)
    term[name] = {"kernel": LAM * delta + wd * np.asarray(k, np.float64)}
  term["block"]["bias"] = np.zeros((2, 3))
  return term


def _expected(alias, params, grads, mode, amplitude):
  if alias == "bort_sgd":  # -lr (g + λΔ + wd W), no momentum
    term = _reference_term(params, mode, amplitude, WD)
    return jax.tree.map(lambda g, t: -LR * (np.asarray(g, np.float64) + t),
                        grads, term)
  adam = optax.scale_by_adam(eps=1e-8 if alias == "bort_adamw" else 1e-6)
  scaled, _ = adam.update(grads, adam.init(params))
  term = _reference_term(params, mode, amplitude, WD)
  summed = jax.tree.map(lambda s, t: np.asarray(s, np.float64) + t, scaled,
                        term)
  if alias == "bort_lamb":  # trust ratio ‖W‖/‖u‖ per leaf
    summed = jax.tree.map(
        lambda u, p: u * (np.linalg.norm(np.asarray(p, np.float64))
                          / np.linalg.norm(u)), summed, params)
  return jax.tree.map(lambda u: -LR * u, summed)


ALIASES = {"bort_sgd": bort_jax.bort_sgd, "bort_adamw": bort_jax.bort_adamw,
           "bort_lamb": bort_jax.bort_lamb}


@pytest.mark.parametrize("alias", sorted(ALIASES))
@pytest.mark.parametrize("mode,amplitude", [("l1-row", "ada"),
                                            ("l2-col", 0.5),
                                            ("l1-fullcol", 2.0)])
def test_alias_step_uses_mode_amplitude_and_dimension_numbers(alias, mode,
                                                              amplitude):
  params = _params()
  grads = _grads(params)
  tx = ALIASES[alias](LR, lam=LAM, weight_decay=WD, mode=mode, amplitude=amplitude,
                      dimension_numbers=DIMS)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  chex.assert_trees_all_close(updates,
                              _expected(alias, params, grads, mode, amplitude),
                              rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_alias_rejects_unknown_mode_and_amplitude(alias):
  with pytest.raises(ValueError, match=r"'l3-full'.*allowed modes"):
    ALIASES[alias](LR, lam=LAM, mode="l3-full")
  with pytest.raises(ValueError, match=r"amplitude .*'adaptive'"):
    ALIASES[alias](LR, lam=LAM, amplitude="adaptive")


def test_bort_sgd_default_keeps_no_momentum_buffer():
  params = _params()
  assert jax.tree.leaves(bort_jax.bort_sgd(LR, lam=LAM).init(params)) == []
  with_momentum = bort_jax.bort_sgd(LR, lam=LAM, momentum=0.9).init(params)
  assert len(jax.tree.leaves(with_momentum)) == len(jax.tree.leaves(params))


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_positional_lam_is_a_type_error_naming_it(alias):
  # optax's habit: momentum / b1 second. Here it must not silently be λ.
  with pytest.raises(TypeError, match=rf"{alias}\(\) takes lam as a keyword "
                     rf"argument only.*{alias}\(0.1, lam=0.9\)"):
    ALIASES[alias](0.1, 0.9)
  with pytest.raises(TypeError, match="lam"):
    ALIASES[alias](0.1)  # lam is required


@pytest.mark.parametrize("alias", sorted(ALIASES))
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"),
                                   jnp.asarray(-0.1)])
def test_bad_learning_rate_is_refused_naming_the_value(alias, value):
  with pytest.raises(ValueError, match=r"learning_rate must be >= 0, got "
                     + repr(value).replace("(", r"\(").replace(")", r"\)")):
    ALIASES[alias](value, lam=LAM)


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_learning_rate_schedule_checked_at_step_0_then_poisoned(alias):
  with pytest.raises(ValueError, match=r"learning_rate .* got -0.5 at step 0"):
    ALIASES[alias](lambda count: -0.5 + 0.0 * count, lam=LAM)
  params = _params()
  grads = _grads(params)
  # 0.1, then -0.1: the second step has no valid learning rate.
  tx = ALIASES[alias](lambda count: 0.1 - 0.2 * count, lam=LAM)
  state = tx.init(params)
  update = jax.jit(tx.update)
  first, state = update(grads, state, params)
  second, _ = update(grads, state, params)
  assert all(np.isfinite(u).all() for u in jax.tree.leaves(first))
  assert all(np.isnan(u).all() for u in jax.tree.leaves(second))


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_injected_learning_rate_and_lam_by_keyword(alias):
  tx = optax.inject_hyperparams(ALIASES[alias])(learning_rate=LR, lam=LAM)
  params = _params()
  grads = _grads(params)
  state = tx.init(params)
  update = jax.jit(tx.update)
  got, _ = update(grads, state, params)
  want, _ = ALIASES[alias](LR, lam=LAM).update(
      grads, ALIASES[alias](LR, lam=LAM).init(params), params)
  # rtol: inject_hyperparams turns b1/b2 into float32 arrays (1 − 0.999).
  chex.assert_trees_all_close(got, want, rtol=1e-4)
  state.hyperparams["learning_rate"] = jnp.asarray(-LR)
  bad, _ = update(grads, state, params)
  assert all(np.isnan(u).all() for u in jax.tree.leaves(bad))
  with pytest.raises(ValueError, match="learning_rate"):  # concrete: eager
    tx.update(grads, state, params)
