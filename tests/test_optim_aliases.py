"""Bort-S/A/L pass mode, amplitude and dimension_numbers through (issue 13 §2).

Each alias's step is checked against the authors' formula for Δ written on W
(``test_optim._reference_delta``) placed where the paper puts it.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import bort_jax
from test_optim import _as_w, _reference_delta

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
    w = _as_w(k, n_out)
    delta = _reference_delta(w, amplitude, mode).T.reshape(k.shape)
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
  tx = ALIASES[alias](LR, LAM, weight_decay=WD, mode=mode, amplitude=amplitude,
                      dimension_numbers=DIMS)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  chex.assert_trees_all_close(updates,
                              _expected(alias, params, grads, mode, amplitude),
                              rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_alias_rejects_unknown_mode_and_amplitude(alias):
  with pytest.raises(ValueError, match=r"'l3-full'.*allowed modes"):
    ALIASES[alias](LR, LAM, mode="l3-full")
  with pytest.raises(ValueError, match=r"amplitude .*'adaptive'"):
    ALIASES[alias](LR, LAM, amplitude="adaptive")


def test_bort_sgd_default_keeps_no_momentum_buffer():
  params = _params()
  assert jax.tree.leaves(bort_jax.bort_sgd(LR, LAM).init(params)) == []
  with_momentum = bort_jax.bort_sgd(LR, LAM, momentum=0.9).init(params)
  assert len(jax.tree.leaves(with_momentum)) == len(jax.tree.leaves(params))
