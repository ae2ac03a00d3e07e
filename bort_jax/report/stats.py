"""Intervals over training seeds, within-run intervals, and the verdict rule.

The unit of replication is the training seed: seed ``s`` of the baseline and
seed ``s`` of Bort share initialisation and data order, so they form a pair.
Each measured quantity is first summarised per run (its mean over the test
images, or a Gram matrix statistic over the network's rows), and a claim's
difference is decided over the seed pairs ``d_s = Bort_s − baseline_s`` (or
``Bort_s − reference``) with a **paired t-interval over seeds** (``n − 1``
degrees of freedom). Why t and not BCa: with 5 seeds a bootstrap sees at most
126 distinct resamples and BCa estimates its bias and acceleration from five
values, so its coverage is erratic; the t-interval is exact for normal seed
differences and, a seed's summary being a mean over 64 images or a statistic
of a whole Gram, close to it for the differences met here. Its limit, measured
in ``tests/test_report_coverage.py``: at 5 seeds it covers 0.95 for normal
differences and ≥ 0.93 when each optimizer's seed spread is skewed
(exponential or lognormal, different scales), but only about 0.88 when the
paired *difference* itself is as skewed as an exponential.

What a difference says, at a threshold fixed in advance per claim (its
margin or minimum effect, :func:`threshold`): it **supports** the claim when
the one-sided test that the effect lies beyond the threshold on the side the
paper predicts rejects at level ``ALPHA`` (the 95 % interval lies wholly
there), and **contradicts** it when the opposite one-sided test rejects after
Holm's adjustment over the claim's differences. A claim

- **holds** when every difference supports it (an intersection-union test:
  each at level ``ALPHA``, no adjustment needed);
- **does not hold** when at least one difference contradicts it after Holm's
  adjustment and none supports it;
- is **mixed** when some support it and some contradict it;
- is **inconclusive** otherwise;
- gets **too few runs** when a comparison has fewer than ``MIN_SEEDS`` seed
  pairs: its evidence is then shown as observations, never read.

Within-run intervals stay as a secondary column: they describe the networks
that were trained (resampling test images or Gram rows), not the optimizers,
and never decide a verdict. Each is used only at sizes where its coverage was
checked (``tests/test_report_coverage.py``); below them it is marked unusable:

- test images (paired: both sides see the same images): a t-interval over
  images of the per-image difference averaged over the seed pairs, usable
  from ``MIN_IMAGES`` images;
- Gram rows: a delete-one-row jackknife of each network's statistic (rows of
  one network are its units; row ``i`` of two networks is not the same unit,
  so never paired), Welch's t over the networks, usable from
  ``MIN_GRAM_ROWS`` rows (the off-diagonal ratio of the rows left needs a
  pair). It replaces a percentile bootstrap over rows that covered 0.88 at 8
  rows;
- 0/1 outcomes on the same images (Table 1): Bonett and Price's adjusted
  Wald interval of paired proportions, on the discordant counts averaged over
  the seed pairs; against a reference (Fig. 6c): Clopper and Pearson's exact
  interval of the pooled outcomes; two models' own pairs (Fig. 6c, Bort vs
  SGD): Agresti and Caffo's interval of two independent proportions.

The earlier two-level bootstrap over seeds and units counted within-run
variance twice (seed summaries already carry it); the seed t-interval
replaces it for every verdict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
MIXED = "mixed"
INCONCLUSIVE = "inconclusive"
TOO_FEW_RUNS = "too few runs"
VERDICTS = (HOLDS, DOES_NOT_HOLD, MIXED, INCONCLUSIVE, TOO_FEW_RUNS)

CONFIDENCE = 0.95
ALPHA = (1.0 - CONFIDENCE) / 2.0
"""Level of each one-sided test: a 95 % two-sided interval lies wholly beyond
a threshold exactly when that one-sided test rejects at 0.025."""
MIN_SEEDS = 5
MIN_IMAGES = 64
MIN_GRAM_ROWS = 3
SEEDS = "seeds"

VERDICT_RULE = (
    "A verdict is about the optimizer over training seeds in this setup "
    "(these models, data and recipe), not about one trained network. Each "
    "measured quantity is summarised per run (its mean over the test images, "
    "or a statistic of the network's Gram matrix), and each difference (Bort "
    "minus baseline, or minus a stated reference) is decided over the seed "
    "pairs (seed s of both optimizers shares initialisation and data order) "
    f"with a paired t-interval ({CONFIDENCE:.0%}, n − 1 degrees of freedom). "
    "Each claim states a threshold fixed before any result: a margin for "
    "non-inferiority (Table 1, 'equal or better') or a minimum effect. A "
    "difference supports the claim when its interval lies wholly beyond the "
    "threshold on the side the paper predicts, and contradicts it when the "
    "opposite one-sided test rejects after Holm's adjustment within the "
    "claim. A claim holds when every difference supports it, does not hold "
    "when at least one contradicts it and none supports it, is mixed when "
    "some support and some contradict it, and is inconclusive otherwise; "
    f"with fewer than {MIN_SEEDS} seeds per optimizer it gets 'too few runs' "
    "and its evidence is shown as observations. Within-run intervals (test "
    "images, Gram rows) describe the trained networks only, are shown as a "
    "secondary column, and are marked unusable at sizes where their coverage "
    "was not shown. A claim read under two protocols (Table 3: RISE's and "
    "the authors') is two claims, each with its own verdict.")


# ------------------------------------------------------------- thresholds


def threshold(better: str, *, min_effect: float | None = None,
              margin: float | None = None) -> float:
  """The signed threshold on ``Bort − baseline`` that a difference must pass.

  A minimum effect ``m`` (superiority by at least ``m``) gives ``+m`` when
  higher is better and ``−m`` when lower is; a non-inferiority margin ``M``
  (Bort no worse by more than ``M``) gives ``−M`` and ``+M``.

  Args:
    better: ``"higher"`` or ``"lower"``: the side the paper predicts.
    min_effect: the smallest effect that counts as support (≥ 0).
    margin: the non-inferiority margin (≥ 0). Exactly one of the two.

  Returns:
    The threshold, in the units of the difference.

  Examples:
    >>> threshold("lower", min_effect=0.05)
    -0.05
    >>> threshold("higher", margin=0.01)
    -0.01
  """
  _check_better(better)
  if (min_effect is None) == (margin is None):
    raise ValueError("give exactly one of min_effect and margin; got "
                     f"min_effect={min_effect}, margin={margin}")
  size = min_effect if margin is None else -margin
  value = min_effect if margin is None else margin
  if not np.isfinite(value) or value < 0:
    raise ValueError(f"a margin or minimum effect must be a finite number "
                     f"≥ 0; got {value}")
  return float(size if better == "higher" else -size)


def _check_better(better: str) -> None:
  if better not in ("higher", "lower"):
    raise ValueError(f"better must be 'higher' or 'lower'; got {better!r}")


# ------------------------------------------------------- t-based pieces


def paired_t(differences, axis: int = -1):
  """``(mean, standard error, degrees of freedom)`` of paired differences.

  Vectorised over the other axes (the coverage tests simulate thousands of
  claims at once).
  """
  d = np.asarray(differences, np.float64)
  n = d.shape[axis]
  se = (d.std(axis=axis, ddof=1) / np.sqrt(n) if n > 1
        else np.full(np.delete(d.shape, axis), np.nan))
  return d.mean(axis=axis), se, np.full(np.shape(se), n - 1.0)


def t_interval(estimate, se, df):
  """The ``CONFIDENCE`` two-sided t-interval ``estimate ± t·se``."""
  with np.errstate(invalid="ignore"):
    half = scipy_stats.t.ppf(0.5 + CONFIDENCE / 2.0, df) * se
  return estimate - half, estimate + half


def p_values(estimate, se, df, threshold_value, better: str):
  """One-sided p-values ``(support, contradict)`` at ``threshold_value``.

  Support tests H0 "the effect is not beyond the threshold on the predicted
  side"; contradict tests the opposite H0. A zero standard error (every seed
  pair gives the same difference) decides by the sign alone.
  """
  _check_better(better)
  sign = 1.0 if better == "higher" else -1.0
  gap = sign * (np.asarray(estimate, np.float64) - threshold_value)
  se = np.asarray(se, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    t = np.where(se > 0, gap / np.where(se > 0, se, 1.0),
                 np.sign(gap) * np.inf)
    support = np.where(np.isnan(se), np.nan, scipy_stats.t.sf(t, df))
    contradict = np.where(np.isnan(se), np.nan, scipy_stats.t.cdf(t, df))
  support = np.where((se == 0) & (gap == 0), 1.0, support)
  contradict = np.where((se == 0) & (gap == 0), 1.0, contradict)
  return support, contradict


def holm(p, axis: int = -1) -> np.ndarray:
  """Holm's step-down adjusted p-values along ``axis`` (vectorised)."""
  p = np.moveaxis(np.asarray(p, np.float64), axis, -1)
  k = p.shape[-1]
  order = np.argsort(p, axis=-1, kind="stable")
  ranked = np.take_along_axis(p, order, -1) * (k - np.arange(k))
  ranked = np.minimum(np.maximum.accumulate(ranked, axis=-1), 1.0)
  adjusted = np.empty_like(ranked)
  np.put_along_axis(adjusted, order, ranked, -1)
  return np.moveaxis(adjusted, -1, axis)


_CODES = (HOLDS, DOES_NOT_HOLD, MIXED, INCONCLUSIVE)


def verdict_codes(p_support, p_contradict, axis: int = -1) -> np.ndarray:
  """Index into ``(holds, does not hold, mixed, inconclusive)`` of claims
  whose differences lie along ``axis`` (vectorised: the coverage tests
  decide thousands of simulated claims at once)."""
  supports = np.asarray(p_support) < ALPHA
  contradicts = holm(p_contradict, axis) < ALPHA
  any_s, all_s = supports.any(axis), supports.all(axis)
  any_c = contradicts.any(axis)
  return np.select([all_s, any_c & any_s, any_c], [0, 2, 1], 3)


# -------------------------------------------------------- within-run


@dataclasses.dataclass(frozen=True)
class WithinRun:
  """A within-run interval: what the trained networks show on resampled
  test images or Gram rows (secondary; never decides a verdict)."""
  unit: str              # "test images", "Gram rows", "source/target pairs"
  n: int                 # units per run
  method: str
  low: float = float("nan")
  high: float = float("nan")
  usable: bool = True
  why: str = ""          # why it is unusable

  def to_json(self) -> dict:
    return {"unit": self.unit, "n": self.n, "method": self.method,
            "ci": [self.low, self.high] if self.usable else None,
            "usable": self.usable, **({"why": self.why} if self.why else {})}


def _runs_array(name: str, values) -> np.ndarray:
  """``values`` as a (runs, units, ...) float64 array: one row per seed."""
  if isinstance(values, np.ndarray) or not isinstance(values, Sequence):
    values = [values]
  rows = [np.asarray(v, np.float64) for v in values]
  rows = [r.reshape(1) if r.ndim == 0 else r for r in rows]
  if not rows or any(r.size == 0 for r in rows):
    raise ValueError(f"{name} needs at least one run with at least one value; "
                     f"got sizes {[r.size for r in rows]}")
  if len({r.shape for r in rows}) != 1:
    raise ValueError(f"every run of {name} needs the same units; got shapes "
                     f"{[r.shape for r in rows]}")
  stacked = np.stack(rows)
  if not np.all(np.isfinite(stacked)):
    raise ValueError(f"{name} has {int(np.sum(~np.isfinite(stacked)))} "
                     "non-finite values; a verdict needs finite measurements")
  return stacked


def paired_image_differences(bort, baseline) -> np.ndarray:
  """Per-image ``Bort − baseline`` averaged over the seed pairs: (..., K, N)
  arrays -> (..., N). Seed ``s`` of Bort is matched with seed ``s`` of the
  baseline, and image ``i`` with image ``i``."""
  return (np.asarray(bort, np.float64)
          - np.asarray(baseline, np.float64)).mean(-2)


def images_within(name: str, bort, baseline) -> WithinRun:
  """The within-run interval of a per-image quantity on shared test images.

  Args:
    name: what is compared (errors name it).
    bort: one (N,) array of per-image values per Bort seed (or one array).
    baseline: the same for the baseline, in the same seed order.

  Returns:
    A :class:`WithinRun`: the t-interval over the N images of the per-image
    difference averaged over seed pairs; unusable below ``MIN_IMAGES``.
  """
  sides = [_runs_array(f"{name} (Bort)", bort),
           _runs_array(f"{name} (baseline)", baseline)]
  if sides[0].shape != sides[1].shape:
    raise ValueError(f"{name}: paired images need the same runs and images "
                     f"on both sides; got {sides[0].shape} and "
                     f"{sides[1].shape}")
  n = sides[0].shape[1]
  method = f"t over images of the difference averaged over {len(sides[0])} seed pair(s)"
  if n < MIN_IMAGES:
    return WithinRun("test images", n, method, usable=False,
                     why=f"{n} images: its coverage was shown from "
                         f"{MIN_IMAGES} images")
  d = paired_image_differences(sides[0].reshape(*sides[0].shape[:2], -1).mean(-1),
                               sides[1].reshape(*sides[1].shape[:2], -1).mean(-1))
  low, high = t_interval(*paired_t(d))
  return WithinRun("test images", n, method, float(low), float(high))


# Gram statistics: one network's statistic and its delete-one-row jackknife.

def gram_statistic(gram, kind: str):
  """``(statistic, jackknife standard error)`` of (..., n, n) Gram matrices.

  ``kind``: ``"diagonal"`` (mean ``|G_ii − 1|``) or ``"offdiagonal"``
  (``mean_{i≠j} |G_ij| / mean_i G_ii``). The jackknife leaves out one row
  (unit) and its column; it needs 2 rows for the diagonal and 3 for the
  off-diagonal ratio (NaN standard error below that).
  """
  g = np.asarray(gram, np.float64)
  n = g.shape[-1]
  diag = np.diagonal(g, axis1=-2, axis2=-1)
  if kind == "diagonal":
    values = np.abs(diag - 1.0)
    se = (values.std(-1, ddof=1) / np.sqrt(n) if n > 1
          else np.full(values.shape[:-1], np.nan))
    return values.mean(-1), se
  if kind != "offdiagonal":
    raise ValueError(f"kind must be 'diagonal' or 'offdiagonal'; got {kind!r}")
  if n < 2:
    raise ValueError(f"an off-diagonal ratio needs ≥ 2 Gram rows; got {n}")
  off = np.abs(g) * (1.0 - np.eye(n))
  total, rows, diag_sum = off.sum((-2, -1)), off.sum(-1), diag.sum(-1)
  with np.errstate(divide="ignore", invalid="ignore"):
    full = (total / (n * (n - 1))) / (diag_sum / n)
    if n < 3:
      return full, np.full(np.shape(full), np.nan)
    # Leaving row i out removes its row and column of |G|₀ (2·rowsum_i).
    left = ((total[..., None] - 2.0 * rows) / ((n - 1) * (n - 2))) / (
        (diag_sum[..., None] - diag) / (n - 1))
  se = np.sqrt((n - 1) / n * ((left - left.mean(-1, keepdims=True)) ** 2
                              ).sum(-1))
  return full, se


def welch(se_bort, se_baseline, n_units):
  """``(se, df)`` of ``mean(Bort networks) − mean(baseline networks)`` from
  each network's standard error (…, K) with ``n_units − 1`` degrees of
  freedom each (Welch-Satterthwaite)."""
  parts = [np.asarray(s, np.float64) ** 2 / np.shape(s)[-1] ** 2
           for s in (se_bort, se_baseline)]
  variance = sum(p.sum(-1) for p in parts)
  with np.errstate(divide="ignore", invalid="ignore"):
    df = variance ** 2 / sum((p ** 2).sum(-1) for p in parts) * (n_units - 1)
  return np.sqrt(variance), np.where(variance > 0, df, n_units - 1.0)


def gram_within(name: str, bort_grams, baseline_grams, kind: str) -> WithinRun:
  """The within-run interval of a Gram statistic (Fig. 3a).

  Args:
    name: what is compared.
    bort_grams: one (n, n) Gram per Bort seed of this layer.
    baseline_grams: the same for the baseline.
    kind: see :func:`gram_statistic`.

  Returns:
    A :class:`WithinRun`: each network's jackknife over its own rows, Welch's
    t over the networks; unusable below ``MIN_GRAM_ROWS`` rows.
  """
  sides = [_runs_array(f"{name} (Bort)", bort_grams),
           _runs_array(f"{name} (baseline)", baseline_grams)]
  n = sides[0].shape[-1]
  method = "delete-one-row jackknife per network, Welch t over networks"
  if n < MIN_GRAM_ROWS:
    return WithinRun("Gram rows", n, method, usable=False,
                     why=f"{n} Gram rows: the jackknife needs ≥ "
                         f"{MIN_GRAM_ROWS}")
  (sb, eb), (sa, ea) = (gram_statistic(s, kind) for s in sides)
  se, df = welch(eb, ea, n)
  low, high = t_interval(sb.mean() - sa.mean(), se, df)
  return WithinRun("Gram rows", n, method, float(low), float(high))


# 0/1 outcomes


def _outcome_runs(name: str, values) -> list[np.ndarray]:
  """``values`` (one 0/1 array per run, lengths may differ) as float64."""
  if isinstance(values, np.ndarray) or not isinstance(values, Sequence):
    values = [values]
  runs = [np.asarray(v, np.float64).reshape(-1) for v in values]
  if not runs or any(r.size == 0 for r in runs):
    raise ValueError(f"{name} needs at least one run with at least one "
                     f"outcome; got sizes {[r.size for r in runs]}")
  for r in runs:
    bad = r[(r != 0.0) & (r != 1.0)]
    if bad.size:
      raise ValueError(f"{name} takes 0/1 outcomes; got {bad.size} other "
                       f"values, e.g. {bad[0]}")
  return runs


def clopper_pearson(successes: int, trials: int) -> tuple[float, float]:
  """Clopper and Pearson's exact interval of a binomial proportion: covers
  the true proportion with probability ≥ ``CONFIDENCE`` for every value of
  it, also at 0 or ``trials`` successes."""
  ci = scipy_stats.binomtest(int(round(successes)), int(trials)
                             ).proportion_ci(confidence_level=CONFIDENCE,
                                             method="exact")
  return float(ci.low), float(ci.high)


def bonett_price(discordant_bort, discordant_baseline, n):
  """Bonett and Price's (2012) adjusted Wald interval of ``p_bort −
  p_baseline`` from ``n`` paired 0/1 outcomes: ``discordant_bort`` units
  where only Bort succeeded, ``discordant_baseline`` where only the baseline
  did. One success is added to each discordant cell and two units to ``n``,
  so no discordant pair still gives an interval of width about
  ``2·1.96·√2 / (n + 2)``. Vectorised over the counts."""
  z = scipy_stats.norm.ppf(0.5 + CONFIDENCE / 2.0)
  p12 = (np.asarray(discordant_bort, np.float64) + 1.0) / (n + 2.0)
  p21 = (np.asarray(discordant_baseline, np.float64) + 1.0) / (n + 2.0)
  delta = p12 - p21
  half = z * np.sqrt((p12 + p21 - delta ** 2) / (n + 2.0))
  return np.maximum(-1.0, delta - half), np.minimum(1.0, delta + half)


def agresti_caffo(successes_bort, n_bort, successes_baseline, n_baseline):
  """Agresti and Caffo's (2000) interval of the difference of two
  independent proportions: one success and one failure added to each
  sample, then Wald. Vectorised over the counts."""
  z = scipy_stats.norm.ppf(0.5 + CONFIDENCE / 2.0)
  pb = (np.asarray(successes_bort, np.float64) + 1.0) / (n_bort + 2.0)
  pa = (np.asarray(successes_baseline, np.float64) + 1.0) / (n_baseline + 2.0)
  half = z * np.sqrt(pb * (1 - pb) / (n_bort + 2.0)
                     + pa * (1 - pa) / (n_baseline + 2.0))
  return np.maximum(-1.0, pb - pa - half), np.minimum(1.0, pb - pa + half)


def paired_outcomes_within(name: str, bort, baseline) -> WithinRun:
  """Within-run interval of ``accuracy(Bort) − accuracy(baseline)`` from 0/1
  outcomes on the same test images: Bonett-Price on the discordant counts
  averaged over the seed pairs (exact-enumeration coverage ≥ 0.93 at 64
  images for one pair)."""
  sides = [_outcome_runs(f"{name} (Bort)", bort),
           _outcome_runs(f"{name} (baseline)", baseline)]
  sizes = {r.size for side in sides for r in side}
  if len(sizes) != 1 or len(sides[0]) != len(sides[1]):
    raise ValueError(f"{name}: paired outcomes need the same units in every "
                     f"run and as many runs on both sides; got sizes "
                     f"{sorted(sizes)}, runs {len(sides[0])} and "
                     f"{len(sides[1])}")
  (n,) = sizes
  only_bort = np.mean([np.sum(b * (1 - a)) for b, a in zip(*sides)])
  only_base = np.mean([np.sum((1 - b) * a) for b, a in zip(*sides)])
  low, high = bonett_price(only_bort, only_base, n)
  return WithinRun("test images", n,
                   f"Bonett-Price, discordant {only_bort:g} vs {only_base:g}"
                   f" (mean over {len(sides[0])} seed pair(s))",
                   float(low), float(high))


def proportion_within(name: str, outcomes, reference: float) -> WithinRun:
  """Within-run interval of ``rate − reference`` of 0/1 outcomes (each run
  its own number of units): Clopper-Pearson of the pooled outcomes."""
  runs = _outcome_runs(name, outcomes)
  k, n = int(sum(r.sum() for r in runs)), int(sum(r.size for r in runs))
  low, high = clopper_pearson(k, n)
  return WithinRun("source/target pairs", n,
                   f"Clopper-Pearson, {k} of {n} pooled over "
                   f"{len(runs)} run(s)", low - reference, high - reference)


def two_proportions_within(name: str, bort, baseline) -> WithinRun:
  """Within-run interval of ``rate(Bort) − rate(baseline)`` where each model
  counts its own units (Fig. 6c's pairs): Agresti-Caffo, pooled over runs."""
  sides = [_outcome_runs(f"{name} (Bort)", bort),
           _outcome_runs(f"{name} (baseline)", baseline)]
  (kb, nb), (ka, na) = ((int(sum(r.sum() for r in s)),
                         int(sum(r.size for r in s))) for s in sides)
  low, high = agresti_caffo(kb, nb, ka, na)
  return WithinRun("source/target pairs", min(nb, na),
                   f"Agresti-Caffo, {kb}/{nb} vs {ka}/{na} pooled over runs",
                   float(low), float(high))


# ------------------------------------------------------- one difference


@dataclasses.dataclass(frozen=True)
class Difference:
  """One ``Bort − baseline`` difference over seed pairs, with its reading
  inputs (the reading itself depends on the claim: :func:`judge`)."""
  name: str                  # what is compared, e.g. "LeNet: top-1 accuracy"
  better: str                # "higher" or "lower": the side the paper predicts
  threshold: float           # signed threshold on the difference
  bort: float                # mean over Bort seeds of the run summaries
  baseline: float            # the same for the baseline, or the reference
  seed_differences: tuple    # d_s, one per seed pair
  runs: dict                 # {"baseline": n, "bort": n}
  within: WithinRun | None = None

  @property
  def difference(self) -> float:
    return float(np.mean(self.seed_differences))

  @property
  def pairs(self) -> int:
    return len(self.seed_differences)

  @property
  def enough_runs(self) -> bool:
    """``MIN_SEEDS`` runs on each side (a reference value has no runs)."""
    baseline = self.runs["baseline"]
    return self.runs["bort"] >= MIN_SEEDS and (baseline == 0
                                               or baseline >= MIN_SEEDS)

  def _t(self):
    return paired_t(self.seed_differences)

  @property
  def seed_interval(self) -> tuple[float, float]:
    """The paired t-interval over seeds (NaN with one pair)."""
    low, high = t_interval(*self._t())
    return float(low), float(high)

  @property
  def p(self) -> tuple[float, float]:
    """One-sided ``(support, contradict)`` p-values over seeds."""
    mean, se, df = self._t()
    s, c = p_values(mean, se, df, self.threshold, self.better)
    return float(s), float(c)

  @property
  def unit(self) -> str:
    """``"seeds"`` when the seeds decide; the within-run unit otherwise."""
    if self.enough_runs or self.within is None:
      return SEEDS
    return self.within.unit

  @property
  def ci(self) -> tuple[float, float] | None:
    """The interval in :attr:`unit`."""
    if self.unit == SEEDS:
      return self.seed_interval if self.pairs > 1 else None
    return (self.within.low, self.within.high) if self.within.usable else None

  def to_json(self, reading: str, p_contradict_holm: float) -> dict:
    """The report.json entry; p-values and intervals that do not exist (one
    seed pair; Holm's adjustment of a claim with too few runs) are null."""
    finite = lambda x: x if np.isfinite(x) else None
    p_support, p_contradict = map(finite, self.p)
    p_contradict_holm = finite(p_contradict_holm)
    return {"name": self.name, "better": self.better,
            "threshold": self.threshold, "bort": self.bort,
            "baseline": self.baseline, "difference": self.difference,
            "unit": self.unit, "runs": dict(self.runs),
            "ci": list(self.ci) if self.ci else None,
            "confidence": CONFIDENCE,
            "seeds": {"differences": list(self.seed_differences),
                      "ci": (list(self.seed_interval) if self.pairs > 1
                             else None),
                      "p_support": p_support, "p_contradict": p_contradict,
                      "p_contradict_holm": p_contradict_holm},
            "within_run": self.within.to_json() if self.within else None,
            "reading": reading}


def seed_differences(bort: Sequence[float], baseline) -> np.ndarray:
  """``d_s = Bort_s − baseline_s`` (seed ``s`` with seed ``s``), or ``Bort_s −
  reference`` for a float ``baseline``. Vectorised over leading axes."""
  bort = np.asarray(bort, np.float64)
  if isinstance(baseline, (int, float)):
    return bort - float(baseline)
  baseline = np.asarray(baseline, np.float64)
  if baseline.shape != bort.shape:
    raise ValueError(f"seed pairs need as many baseline runs as Bort runs; "
                     f"got {baseline.shape[-1:]} and {bort.shape[-1:]}")
  return bort - baseline


def compare(name: str, bort: Sequence[float], baseline, *, better: str,
            threshold_value: float, within: WithinRun | None = None
            ) -> Difference:
  """One claim difference from per-run summaries in seed order.

  Args:
    name: what is compared (shown in the report).
    bort: one summary per Bort run (its mean over images, a Gram statistic,
      a rate), in seed order.
    baseline: the same for the baseline runs (seed ``s`` pairs with seed
      ``s``), or a float reference.
    better: ``"higher"`` or ``"lower"``: the side the paper predicts.
    threshold_value: see :func:`threshold`.
    within: the within-run interval (secondary column), if any.

  Returns:
    A :class:`Difference`; :func:`judge` reads it with the claim's others.

  Examples:
    >>> d = compare("acc", [0.91, 0.93, 0.92, 0.94, 0.92],
    ...             [0.90, 0.92, 0.92, 0.93, 0.91], better="higher",
    ...             threshold_value=threshold("higher", margin=0.01))
    >>> judge([d])[0]
    'holds'
  """
  _check_better(better)
  bort_values = np.asarray(bort, np.float64).reshape(-1)
  d = seed_differences(bort_values, baseline if isinstance(
      baseline, (int, float)) else np.asarray(baseline, np.float64).reshape(-1))
  values = np.concatenate([bort_values, [] if isinstance(baseline, (int, float))
                           else np.asarray(baseline, np.float64).reshape(-1)])
  if not d.size or not np.all(np.isfinite(values)):
    raise ValueError(f"{name}: every run needs a finite summary; got Bort "
                     f"{bort_values.tolist()}, baseline {baseline}")
  if isinstance(baseline, (int, float)):
    base_mean, runs = float(baseline), {"baseline": 0, "bort": d.size}
  else:
    base_mean = float(np.mean(baseline))
    runs = {"baseline": d.size, "bort": d.size}
  return Difference(name=name, better=better, threshold=float(threshold_value),
                    bort=float(bort_values.mean()), baseline=base_mean,
                    seed_differences=tuple(float(x) for x in d), runs=runs,
                    within=within)


def judge(differences: Sequence[Difference]):
  """``(verdict, readings, Holm-adjusted contradiction p-values)`` of one
  claim's differences (see the module docstring)."""
  if not differences:
    return INCONCLUSIVE, [], []
  k = len(differences)
  if not all(d.enough_runs for d in differences):
    return TOO_FEW_RUNS, ["observation"] * k, [float("nan")] * k
  p = np.array([d.p for d in differences])
  adjusted = holm(p[:, 1])
  readings = ["supports" if s < ALPHA else "contradicts" if c < ALPHA
              else "undecided" for s, c in zip(p[:, 0], adjusted)]
  verdict_ = _CODES[int(verdict_codes(p[:, 0], p[:, 1]))]
  return verdict_, readings, [float(a) for a in adjusted]


def verdict(differences: Sequence[Difference]) -> str:
  """The claim's verdict from its differences (see the module docstring)."""
  return judge(differences)[0]
