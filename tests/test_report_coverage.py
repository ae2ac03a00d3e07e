"""Coverage of every interval the report uses, at the sizes it uses them.

Each check simulates thousands of claims at once (vectorised numpy, fixed
seeds) through the same functions the report calls: 5 seed pairs for the
verdicts, 64 test images and the smallest Gram matrices (6 and 8 rows: LeNet's
conv1, ACNN-Small's conv1) for the within-run column, 64 pairs for Fig. 6c.
Coverage must lie in [0.93, 0.97] for normal data and reach 0.92 for skewed
data. ``test_a_broken_copy_fails_its_check`` breaks the library the ways the
checks guard against (unpaired images, seeds not paired, Holm dropped,
margin or minimum effect ignored, one side's variance dropped) and shows
that each check then fails.
"""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bort_jax.report import stats

REPS = 20_000
NORMAL = (0.93, 0.97)
SKEWED = 0.92


def _coverage(low, high, truth):
  return float(np.mean((low <= truth) & (truth <= high)))


# ----------------------------------------------------------------- seeds


def _seed_scenarios(rng, seeds=stats.MIN_SEEDS):
  """``{name: (bort, baseline, true difference, normal?)}``, (REPS, seeds)
  run summaries. Every scenario has a seed effect ``u`` shared by the two
  runs of a pair (same initialisation and data order): pairing removes it."""
  u = 2.0 * rng.normal(size=(REPS, seeds))
  noise = lambda: rng.normal(size=(REPS, seeds))
  exp = lambda: rng.exponential(size=(REPS, seeds))
  lognormal = lambda: rng.lognormal(0.0, 0.5, size=(REPS, seeds))
  return {
      "normal": (u + 0.3 + 0.5 * noise(), u + 0.5 * noise(), 0.3, True),
      # Each optimizer's seed spread skewed, at different scales.
      "exponential": (u + 2.0 * exp(), u + exp(), 1.0, False),
      "lognormal": (u + 1.5 * lognormal(), u + lognormal(),
                    0.5 * np.exp(0.125), False),
  }


def _check_seed_interval():
  rng = np.random.default_rng(0)
  for name, (bort, base, truth, normal) in _seed_scenarios(rng).items():
    d = stats.seed_differences(bort, base)
    coverage = _coverage(*stats.t_interval(*stats.paired_t(d)), truth)
    if normal:
      assert NORMAL[0] <= coverage <= NORMAL[1], (name, coverage)
    else:
      assert coverage >= SKEWED, (name, coverage)


def test_the_seed_interval_covers_at_5_seeds():
  _check_seed_interval()


def test_what_the_seed_interval_does_not_cover():
  """The documented limit (stats module docstring): a paired difference as
  skewed as an exponential covers about 0.88 at 5 seeds."""
  d = np.random.default_rng(1).exponential(size=(REPS, stats.MIN_SEEDS))
  coverage = _coverage(*stats.t_interval(*stats.paired_t(d)), 1.0)
  assert 0.86 <= coverage <= 0.90, coverage


# ---------------------------------------------------------------- images


def _image_scenarios(rng, images=stats.MIN_IMAGES, seeds=1):
  """(REPS, seeds, images) per-image values of both sides. Image ``i`` has
  an effect ``v_i`` (its difficulty) shared by every run: pairing by image
  removes it."""
  shape = (REPS, 1, images)
  v = 2.0 * rng.normal(size=shape)
  noise = lambda: rng.normal(size=(REPS, seeds, images))
  exp = lambda: rng.exponential(size=(REPS, seeds, images))
  lognormal = lambda: rng.lognormal(0.0, 0.5, size=(REPS, seeds, images))
  return {
      "normal": (v + 0.1 + noise(), v + noise(), 0.1, True),
      "exponential": (v + exp(), v + 0.0 * noise(), 1.0, False),
      "lognormal": (v + lognormal(), v + 0.0 * noise(), np.exp(0.125), False),
  }


def _check_image_interval():
  rng = np.random.default_rng(2)
  for seeds in (1, stats.MIN_SEEDS):
    scenarios = _image_scenarios(rng, seeds=seeds)
    for name, (bort, base, truth, normal) in scenarios.items():
      d = stats.paired_image_differences(bort, base)
      coverage = _coverage(*stats.t_interval(*stats.paired_t(d)), truth)
      if normal:
        assert NORMAL[0] <= coverage <= NORMAL[1], (name, seeds, coverage)
      else:
        assert coverage >= SKEWED, (name, seeds, coverage)


def test_the_image_interval_covers_at_64_images():
  _check_image_interval()


def test_the_image_interval_is_refused_below_64_images():
  """At 16 images the t over images covers about 0.90 for exponential
  differences: the report marks it unusable there."""
  d = np.random.default_rng(3).exponential(size=(REPS, 16))
  assert _coverage(*stats.t_interval(*stats.paired_t(d)), 1.0) < SKEWED
  values = np.random.default_rng(4).normal(size=16)
  within = stats.images_within("x", values, values + 1.0)
  assert not within.usable and within.to_json()["ci"] is None
  assert "16 images" in within.why
  assert stats.images_within("x", np.tile(values, 4), np.tile(values, 4)
                             ).usable


# ----------------------------------------------------------- Gram rows


def _networks(rng, count, units, fan_in, *, skewed=False):
  """Gram matrices of ``count`` networks whose rows share a random component:
  row i is ``2 b_i e + noise`` scaled to norm ``1 + 0.2 z_i`` (lognormal
  norms when ``skewed``), so the Gram's entries are far from independent."""
  w = rng.normal(size=(count, units, fan_in)) / np.sqrt(fan_in)
  w[..., 0] += 2.0 * rng.normal(size=(count, units))
  norms = (rng.lognormal(0.0, 0.5, size=(count, units, 1)) if skewed
           else 1 + 0.2 * rng.normal(size=(count, units, 1)))
  w *= norms / np.linalg.norm(w, axis=-1, keepdims=True)
  return w @ np.swapaxes(w, 1, 2)


def _gram_interval(bort, base, kind):
  """The report's within-run Gram interval (:func:`stats.gram_within`),
  vectorised over simulated pairs of one network each."""
  (sb, eb), (sa, ea) = (stats.gram_statistic(g, kind) for g in (bort, base))
  se, df = stats.welch(eb[:, None], ea[:, None], bort.shape[-1])
  return stats.t_interval(sb - sa, se, df)


def _check_gram_interval():
  rng = np.random.default_rng(5)
  reps = 4000
  for units, fan_in in ((6, 25), (8, 9), (32, 48)):
    for skewed in (False, True):
      grams = _networks(rng, 2 * reps, units, fan_in, skewed=skewed)
      for kind in ("diagonal", "offdiagonal"):
        # Both networks from one distribution: the true difference is 0.
        coverage = _coverage(*_gram_interval(grams[:reps], grams[reps:],
                                             kind), 0.0)
        if skewed:
          assert coverage >= SKEWED, (units, kind, coverage)
        else:
          assert NORMAL[0] <= coverage <= NORMAL[1], (units, kind, coverage)


def test_the_gram_row_interval_covers_at_the_smallest_grams():
  _check_gram_interval()


def test_the_gram_row_interval_is_refused_below_its_size():
  gram = np.eye(2)
  within = stats.gram_within("g", [gram], [gram], "offdiagonal")
  assert not within.usable and "2 Gram rows" in within.why


def test_the_jackknife_leaves_out_one_row_and_its_column():
  rng = np.random.default_rng(6)
  w = rng.normal(size=(7, 5))
  gram = w @ w.T
  full, se = stats.gram_statistic(gram, "offdiagonal")
  ratio = lambda g: (np.abs(g[~np.eye(len(g), dtype=bool)]).mean()
                     / np.diag(g).mean())
  left = np.array([ratio(np.delete(np.delete(gram, i, 0), i, 1))
                   for i in range(7)])
  np.testing.assert_allclose(full, ratio(gram), rtol=1e-12)
  np.testing.assert_allclose(se, np.sqrt(6 / 7 * np.sum(
      (left - left.mean()) ** 2)), rtol=1e-10)


# --------------------------------------------------------- 0/1 outcomes


def _paired_exact_coverage(n, q_bort, q_base, interval):
  """Exact coverage of ``q_bort − q_base`` over multinomial counts (only
  Bort right, only baseline right, rest) among n images."""
  b, c = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
  ok = b + c <= n
  b, c = b[ok], c[ok]
  pmf = scipy_stats.multinomial.pmf(np.stack([b, c, n - b - c], 1), n,
                                    [q_bort, q_base, 1 - q_bort - q_base])
  low, high = interval(b, c, n)
  return float(np.sum(pmf * ((low <= q_bort - q_base)
                             & (q_bort - q_base <= high))))


def _two_sample_exact_coverage(n, p_bort, p_base, interval):
  kb, ka = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
  pmf = (scipy_stats.binom.pmf(kb, n, p_bort)
         * scipy_stats.binom.pmf(ka, n, p_base))
  low, high = interval(kb, n, ka, n)
  return float(np.sum(pmf * ((low <= p_bort - p_base)
                             & (p_bort - p_base <= high))))


GRID = ((0.05, 0.0), (0.1, 0.02), (0.2, 0.1), (0.3, 0.3), (0.02, 0.02),
        (0.0, 0.4))


def _check_outcome_intervals(paired=stats.bonett_price,
                             unpaired=stats.agresti_caffo):
  n = stats.MIN_IMAGES
  for q in GRID:
    coverage = _paired_exact_coverage(n, *q, paired)
    assert coverage >= NORMAL[0], ("paired", q, coverage)
  for p in ((0.1, 0.1), (0.5, 0.3), (0.9, 0.6), (0.05, 0.3), (0.5, 0.5)):
    coverage = _two_sample_exact_coverage(n, *p, unpaired)
    assert coverage >= NORMAL[0], ("two samples", p, coverage)
  for p in (0.02, 0.1, 0.5, 0.9):
    k = np.arange(n + 1)
    covered = [low <= p <= high for low, high in
               (stats.clopper_pearson(int(j), n) for j in k)]
    assert np.sum(scipy_stats.binom.pmf(k, n, p) * covered) >= 0.95, p


def test_the_outcome_intervals_cover_at_64_units():
  _check_outcome_intervals()


def _wald_paired(b, c, n):
  """Bonett-Price without its adjustment: plain Wald on the discordant
  proportions (collapses at no discordant pair)."""
  p12, p21 = b / n, c / n
  half = 1.959964 * np.sqrt(np.maximum(p12 + p21 - (p12 - p21) ** 2, 0) / n)
  return p12 - p21 - half, p12 - p21 + half


# ------------------------------------------------------ the verdict rule


def _claims(rng, k, true_differences, sd, seeds=stats.MIN_SEEDS):
  """(REPS, k) one-sided p-values of simulated claims with ``k`` differences
  whose seed differences are normal(true, sd)."""
  d = np.asarray(true_differences) + sd * rng.normal(size=(REPS, k, seeds))
  return stats.paired_t(d)


def _verdict_rates(rng, k, true_differences, sd, *, better="higher",
                   **threshold):
  mean, se, df = _claims(rng, k, true_differences, sd)
  p_support, p_contradict = stats.p_values(
      mean, se, df, stats.threshold(better, **threshold), better)
  codes = stats.verdict_codes(p_support, p_contradict)
  return {v: float(np.mean(codes == i)) for i, v in enumerate(
      (stats.HOLDS, stats.DOES_NOT_HOLD, stats.MIXED, stats.INCONCLUSIVE))}


def _check_holm():
  """14 differences (Fig. 3a on ACNN-Small's 7 layers), every one exactly at
  its minimum effect: a contradiction is a false alarm. Holm keeps the
  chance of any within 0.025; without it, it is 1 − 0.975^14 ≈ 0.30."""
  rates = _verdict_rates(np.random.default_rng(7), 14, 0.05, 0.02,
                         min_effect=0.05)
  assert rates[stats.DOES_NOT_HOLD] + rates[stats.MIXED] <= 0.03, rates


def test_holm_keeps_false_contradictions_at_the_level():
  _check_holm()


def _check_min_effect():
  """A real but small effect (half the minimum effect, measured precisely)
  is not support: the claim holds at most at the test's level."""
  rates = _verdict_rates(np.random.default_rng(8), 2, 0.025, 0.005,
                         min_effect=0.05)
  assert rates[stats.HOLDS] <= 0.03, rates
  # At twice the minimum effect the same precision gives support.
  rates = _verdict_rates(np.random.default_rng(9), 2, 0.10, 0.005,
                         min_effect=0.05)
  assert rates[stats.HOLDS] >= 0.95, rates


def test_an_effect_below_the_minimum_effect_is_no_support():
  _check_min_effect()


def _check_margin():
  """Table 1's non-inferiority: equal accuracies (seed differences of ±0.3
  points) hold; a loss of exactly the margin holds at most at the level."""
  rng = np.random.default_rng(10)
  equal = _verdict_rates(rng, 2, 0.0, 0.003, margin=0.01)
  assert equal[stats.HOLDS] >= 0.9, equal
  at_margin = _verdict_rates(rng, 2, -0.01, 0.003, margin=0.01)
  assert at_margin[stats.HOLDS] <= 0.03, at_margin


def test_equal_accuracy_holds_under_the_non_inferiority_margin():
  _check_margin()


def test_a_claim_with_fewer_than_5_seeds_is_not_read():
  four = stats.compare("x", [1.0, 1.1, 1.2, 1.3], [0.0, 0.1, 0.2, 0.3],
                       better="higher", threshold_value=0.0)
  verdict, readings, _ = stats.judge([four])
  assert verdict == stats.TOO_FEW_RUNS and readings == ["observation"]
  five = stats.compare("x", [1.0, 1.1, 1.2, 1.3, 1.4],
                       [0.0, 0.1, 0.2, 0.3, 0.4], better="higher",
                       threshold_value=0.0)
  assert stats.judge([five])[0] == stats.HOLDS
  assert stats.judge([five, four])[0] == stats.TOO_FEW_RUNS


# ------------------------------------------------------- broken copies


def _unpaired_images(bort, base):
  """Image i of Bort against a random image of the baseline."""
  shuffled = np.random.default_rng(0).permuted(np.asarray(base), axis=-1)
  return (np.asarray(bort) - shuffled).mean(-2)


def _seeds_not_paired(bort, base):
  return np.asarray(bort) - np.random.default_rng(0).permuted(
      np.asarray(base), axis=-1)


BROKEN = {
    "unpaired images": (_check_image_interval, "paired_image_differences",
                        _unpaired_images),
    "seeds not paired": (_check_seed_interval, "seed_differences",
                         _seeds_not_paired),
    "Holm dropped": (_check_holm, "holm", lambda p, axis=-1: np.asarray(p)),
    "minimum effect ignored": (_check_min_effect, "threshold",
                               lambda better, **kw: 0.0),
    "margin ignored": (_check_margin, "threshold", lambda better, **kw: 0.0),
    "baseline network's variance dropped": (
        _check_gram_interval, "welch",
        lambda se_bort, se_base, n: _welch(se_bort, 0.0 * se_base, n)),
}

_welch = stats.welch


@pytest.mark.parametrize("mutation", list(BROKEN))
def test_a_broken_copy_fails_its_check(mutation, monkeypatch):
  check, name, broken = BROKEN[mutation]
  monkeypatch.setattr(stats, name, broken)
  with pytest.raises(AssertionError):
    check()


def test_an_unadjusted_paired_proportion_fails_its_check():
  with pytest.raises(AssertionError):
    _check_outcome_intervals(paired=_wald_paired)
