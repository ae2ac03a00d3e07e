"""Confidence intervals and the rule that turns them into a verdict.

Every claim of the report is decided by differences ``Bort − baseline`` (or
``Bort − reference`` for a claim about Bort alone), each with a percentile
bootstrap confidence interval. The bootstrap resamples what is independent:

- test images (the image-level claims): every run of a model was measured on
  the same images, so one draw of images serves all runs of a side and, when
  both sides saw the same images, both sides (a paired bootstrap);
- the units of a network (weight statistics, Fig. 3a): the rows of a kernel's
  Gram matrix. Its entries are not independent (``G_ij`` shares unit ``i``
  with the whole row ``i``), so the units are drawn and the statistic is
  recomputed from the drawn units' entries, an off-diagonal pair only between
  two distinct original units (a cluster bootstrap over units). Each network
  gets its own draw: unit ``i`` of one network has nothing to do with unit
  ``i`` of another (a permutation of the units is the same network), so
  pairing units across two networks would pair an arbitrary labelling;
- seeds: when an optimizer has several runs, the runs are resampled too
  (first the runs, then the units: a two-level bootstrap).

The interval is the central ``confidence`` mass of the resampled statistic
differences, except for 0/1 outcomes (a test image classified correctly, an
adversarial pair that fooled the model): a percentile bootstrap of a sample
without successes (or without failures, or without discordant pairs) has
width 0, so those get intervals that stay honest there (:func:`proportion`,
:func:`paired_proportions`). A difference *supports* the claim when its whole interval lies
on the side the paper predicts, *contradicts* it when the whole interval lies
on the other side, and is *undecided* when the interval contains 0. A claim
``holds`` when every difference supports it, ``does not hold`` when at least
one contradicts it, and is ``inconclusive`` otherwise. The rule, the
confidence level and the number of resamples are fixed here, not per claim,
and not chosen from results.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as scipy_stats

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
INCONCLUSIVE = "inconclusive"
VERDICTS = (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE)

CONFIDENCE = 0.95
NUM_RESAMPLES = 2000

VERDICT_RULE = (
    f"Each difference (Bort minus baseline, or Bort minus a stated reference) "
    f"of measured values has a {CONFIDENCE:.0%} percentile bootstrap interval ({NUM_RESAMPLES} "
    "resamples of the independent units: test images, paired when both sides "
    "saw the same images; for weight statistics the rows of each network's "
    "Gram matrix, drawn for each network on its own, with off-diagonal "
    "statistics recomputed from the pairs of distinct drawn rows; runs are "
    "resampled too when an optimizer has several seeds). A difference of "
    "0/1 outcomes (a test image classified correctly, an adversarial pair "
    f"that fooled the model) has instead a {CONFIDENCE:.0%} interval that "
    "does not collapse at 0 or n successes: "
    "Clopper-Pearson's exact interval for one proportion against a "
    "reference, Bonett and Price's adjusted Wald interval for the "
    "difference of two proportions on the same test images; with several "
    "seeds, the union of that interval and the bootstrap over seeds and "
    "units. A difference "
    "supports the claim when its whole interval lies on the side the paper "
    "predicts and contradicts it when its whole interval lies on the other "
    "side. A claim holds when every difference supports it, does not hold "
    "when any difference contradicts it, and is inconclusive otherwise (an "
    "interval that contains 0 never counts as support). A claim read under "
    "two protocols (Table 3: RISE's and the authors') is two claims, each "
    "with its own verdict; neither reading is preferred.")

Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``statistic(data, counts)``: one run's ``data`` (units on the leading axis)
and ``counts`` (R, n), how often each of its n units was drawn in each of R
resamples, -> (R,) values of the statistic on the resampled units. With
``counts`` all ones it is the statistic of the run itself."""

_COUNTS_PER_CHUNK = 1 << 21  # resamples are drawn in chunks of ≤ this many counts


def mean(data: np.ndarray, counts: np.ndarray) -> np.ndarray:
  """The mean over units (a unit's own values averaged first)."""
  per_unit = data.reshape(data.shape[0], -1).mean(1)
  return counts @ per_unit / counts.sum(1)


def gram_offdiagonal_ratio(gram: np.ndarray, counts: np.ndarray) -> np.ndarray:
  """``mean |G_ij| (i ≠ j) / mean G_ii`` of a Gram over resampled units.

  A unit drawn ``c_i`` times enters ``c_i`` times; the off-diagonal pairs are
  the ordered pairs of draws of two *distinct* original units (copies of one
  unit are not a pair: ``G_ii`` is its diagonal), so the numerator is
  ``cᵀ |G|₀ c`` over ``(Σc)² − Σc²`` pairs, ``|G|₀`` being ``|G|`` with a zero
  diagonal. A resample that drew a single unit has no pair and gives NaN.
  """
  off = np.abs(gram)
  np.fill_diagonal(off, 0.0)
  pair_sums = np.einsum("ri,ri->r", counts @ off, counts)
  draws = counts.sum(1)
  num_pairs = draws ** 2 - np.einsum("ri,ri->r", counts, counts)
  diag_mean = counts @ np.diagonal(gram) / draws
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(num_pairs > 0, pair_sums / np.maximum(num_pairs, 1),
                    np.nan) / diag_mean


def _as_runs(name: str, values) -> np.ndarray:
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


def _unit_counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
  """(size, n) counts of n draws with replacement from n units."""
  draws = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
  return np.bincount(draws.ravel(), minlength=size * n).reshape(
      size, n).astype(np.float64)


def _resampled(runs: np.ndarray, statistic: Statistic, counts,
               rng: np.random.Generator) -> np.ndarray:
  """(size,) two-level resamples: the runs drawn with replacement, each
  drawn run's statistic on its units, averaged over the drawn runs.

  ``counts`` is one (size, n) array shared by every run (the same test
  images) or a callable giving a fresh one per run (each run's own units).
  """
  per_run = np.stack([statistic(run, counts() if callable(counts) else counts)
                      for run in runs])                      # (runs, size)
  size = per_run.shape[1]
  picked = rng.integers(0, len(runs), size=(size, len(runs)))
  return per_run[picked, np.arange(size)[:, None]].mean(1)


@dataclasses.dataclass(frozen=True)
class Difference:
  """One ``Bort − baseline`` difference with its interval and its reading."""
  name: str            # what is compared, e.g. "LeNet: top-1 accuracy"
  better: str          # "higher" or "lower": the side the paper predicts
  bort: float          # mean over runs and units
  baseline: float      # mean over runs and units (or the reference)
  difference: float    # bort − baseline
  low: float           # CI bounds of the difference
  high: float
  units: str           # what was resampled, e.g. "360 test images × 1 run"

  @property
  def reading(self) -> str:
    if self.low <= 0.0 <= self.high:
      return "undecided"
    supports = self.low > 0.0 if self.better == "higher" else self.high < 0.0
    return "supports" if supports else "contradicts"

  def to_json(self) -> dict:
    return {"name": self.name, "better": self.better, "bort": self.bort,
            "baseline": self.baseline, "difference": self.difference,
            "ci": [self.low, self.high], "confidence": CONFIDENCE,
            "units": self.units, "reading": self.reading}


def difference(name: str, bort, baseline, *, better: str, paired: bool,
               unit: str = "test images", seed: int = 0,
               statistic: Statistic = mean,
               units_per_run: bool = False) -> Difference:
  """Bootstrap CI of ``statistic(bort) − statistic(baseline)``.

  Args:
    name: what is compared (shown in the report).
    bort: values of the Bort runs: one array with the units on its leading
      axis (per-image values; a Gram matrix), or a list of them (one per seed).
    baseline: the same for the baseline runs, or a float reference value.
    better: ``"higher"`` or ``"lower"``: the sign the paper predicts.
    paired: whether unit ``i`` of both sides is the same test image (then the
      resampled units are shared).
    unit: name of the resampled units.
    seed: seed of the resampling.
    statistic: what is computed from a run's resampled units (see
      :data:`Statistic`); the mean by default. The point estimate of a side
      is its statistic on every unit once, averaged over its runs.
    units_per_run: whether each run has units of its own (a network's Gram
      rows), drawn independently for every run, instead of units shared by
      all runs (test images) drawn once per resample. Such units are never
      paired across the sides.
  """
  if better not in ("higher", "lower"):
    raise ValueError(f"better must be 'higher' or 'lower'; got {better!r}")
  if paired and units_per_run:
    raise ValueError(f"{name}: units of different networks cannot be paired "
                     "(paired=True with units_per_run=True)")
  rng = np.random.default_rng(seed)
  sides = [_as_runs(f"{name} (Bort)", bort)]
  if not isinstance(baseline, (int, float)):
    sides.append(_as_runs(f"{name} (baseline)", baseline))
    if paired and sides[1].shape[1] != sides[0].shape[1]:
      raise ValueError(f"{name}: a paired comparison needs the same units on "
                       f"both sides; got {sides[0].shape[1]} and "
                       f"{sides[1].shape[1]}")
  resamples = [np.empty(NUM_RESAMPLES) for _ in sides]
  chunk = max(1, _COUNTS_PER_CHUNK // max(s.shape[1] for s in sides))
  for start in range(0, NUM_RESAMPLES, chunk):
    size = min(chunk, NUM_RESAMPLES - start)
    shared = _unit_counts(rng, sides[0].shape[1], size) if paired else None
    for runs, out in zip(sides, resamples):
      n = runs.shape[1]
      if units_per_run:
        counts = lambda n=n, size=size: _unit_counts(rng, n, size)
      else:
        counts = shared if paired else _unit_counts(rng, n, size)
      out[start:start + size] = _resampled(runs, statistic, counts, rng)
  point = [float(np.mean([statistic(run, np.ones((1, run.shape[0])))[0]
                          for run in runs])) for runs in sides]
  if not np.all(np.isfinite(point)):
    raise ValueError(f"{name}: the statistic of the measurements is not "
                     f"finite (Bort, baseline: {point}); e.g. a Gram ratio "
                     "of a kernel whose diagonal is all 0")
  n = sides[0].shape[1]
  if len(sides) == 1:
    base_mean, base_resamples = float(baseline), float(baseline)
    units = f"{n} {unit} × {sides[0].shape[0]} run(s)"
  else:
    base_mean, base_resamples = point[1], resamples[1]
    units = (f"{n} {unit}{' (paired)' if paired else ''} × "
             f"{sides[0].shape[0]} vs {sides[1].shape[0]} run(s)")
  tail = (1.0 - CONFIDENCE) / 2.0
  # A resample without a value (a Gram statistic whose draws all hit one
  # unit, probability n^(1-n): 1/2 for 2 units, 1/9 for 3, 1/64 for 4) is
  # left out: the interval is conditional on two distinct units drawn.
  low, high = np.nanquantile(resamples[0] - base_resamples,
                             [tail, 1.0 - tail])
  return Difference(name=name, better=better, bort=point[0],
                    baseline=base_mean, difference=point[0] - base_mean,
                    low=float(low), high=float(high), units=units)


def verdict(differences: Sequence[Difference]) -> str:
  """The claim's verdict from its differences (see the module docstring)."""
  if not differences:
    return INCONCLUSIVE
  readings = [d.reading for d in differences]
  if "contradicts" in readings:
    return DOES_NOT_HOLD
  if all(r == "supports" for r in readings):
    return HOLDS
  return INCONCLUSIVE


# ------------------------------------------------------------ 0/1 outcomes


def _as_outcomes(name: str, values) -> list[np.ndarray]:
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


def clopper_pearson(successes: float, trials: int) -> tuple[float, float]:
  """Clopper and Pearson's exact interval of a binomial proportion: covers
  the true proportion with probability ≥ ``CONFIDENCE`` for every value of
  it, also at 0 or ``trials`` successes."""
  k, n = int(round(successes)), int(trials)
  ci = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=CONFIDENCE,
                                                 method="exact")
  return float(ci.low), float(ci.high)


def bonett_price(discordant_bort: float, discordant_baseline: float,
                 n: int) -> tuple[float, float]:
  """Bonett and Price's (2012) adjusted Wald interval of ``p_bort −
  p_baseline`` from ``n`` paired 0/1 outcomes: ``discordant_bort`` units
  where only Bort succeeded, ``discordant_baseline`` where only the baseline
  did. One success is added to each discordant cell and two units to ``n``,
  so no discordant pair still gives an interval of width about
  ``2·1.96·√2 / (n + 2)`` (Agresti and Min's idea for paired data)."""
  z = scipy_stats.norm.ppf(0.5 + CONFIDENCE / 2.0)
  p12 = (discordant_bort + 1.0) / (n + 2.0)
  p21 = (discordant_baseline + 1.0) / (n + 2.0)
  delta = p12 - p21
  half = z * np.sqrt((p12 + p21 - delta ** 2) / (n + 2.0))
  return float(max(-1.0, delta - half)), float(min(1.0, delta + half))


def _bootstrap_rate(runs: list[np.ndarray], rng) -> np.ndarray:
  """(NUM_RESAMPLES,) two-level bootstrap of the mean success rate over
  runs of different sizes: the runs drawn with replacement, then each drawn
  run's units (resampling n 0/1 values is a Binomial(n, k/n) draw)."""
  rates = np.array([r.mean() for r in runs])
  sizes = np.array([r.size for r in runs])
  picked = rng.integers(0, len(runs), size=(NUM_RESAMPLES, len(runs)))
  return (rng.binomial(sizes[picked], rates[picked]) / sizes[picked]).mean(1)


def _union(a, b):
  return float(min(a[0], b[0])), float(max(a[1], b[1]))


def proportion(name: str, outcomes, reference: float, *, better: str,
               unit: str = "pairs", seed: int = 0) -> Difference:
  """``rate − reference`` of 0/1 ``outcomes`` with an honest interval.

  One run: Clopper-Pearson on its successes. Several runs (seeds, each with
  its own number of units): the union of Clopper-Pearson on the pooled
  units and the percentile interval of a two-level bootstrap over runs and
  units (the spread between seeds), so neither a sample without successes
  nor disagreeing seeds give a too-narrow interval. The point estimate is
  the mean of the runs' rates.
  """
  if better not in ("higher", "lower"):
    raise ValueError(f"better must be 'higher' or 'lower'; got {better!r}")
  runs = _as_outcomes(f"{name} (Bort)", outcomes)
  low, high = clopper_pearson(sum(r.sum() for r in runs),
                              sum(r.size for r in runs))
  if len(runs) > 1:
    tail = (1.0 - CONFIDENCE) / 2.0
    resampled = _bootstrap_rate(runs, np.random.default_rng(seed))
    low, high = _union((low, high), tuple(np.quantile(
        resampled, [tail, 1.0 - tail])))
  rate = float(np.mean([r.mean() for r in runs]))
  sizes = sorted({r.size for r in runs})
  return Difference(
      name=name, better=better, bort=rate, baseline=float(reference),
      difference=rate - reference, low=low - reference, high=high - reference,
      units=(f"{'/'.join(map(str, sizes))} {unit} × {len(runs)} run(s), "
             f"{int(sum(r.sum() for r in runs))} successes; Clopper-Pearson"
             + (" ∪ bootstrap over runs" if len(runs) > 1 else "")))


def paired_proportions(name: str, bort, baseline, *, better: str,
                       unit: str = "test images", seed: int = 0) -> Difference:
  """``rate(bort) − rate(baseline)`` of 0/1 outcomes on the same units.

  One run per side: Bonett and Price's adjusted Wald interval
  (:func:`bonett_price`). Several: that interval on the discordant counts
  averaged over all (Bort run, baseline run) pairs, united with the paired
  two-level bootstrap of :func:`difference`.
  """
  if better not in ("higher", "lower"):
    raise ValueError(f"better must be 'higher' or 'lower'; got {better!r}")
  sides = [_as_outcomes(f"{name} (Bort)", bort),
           _as_outcomes(f"{name} (baseline)", baseline)]
  sizes = {r.size for side in sides for r in side}
  if len(sizes) != 1:
    raise ValueError(f"{name}: paired outcomes need the same units in every "
                     f"run; got sizes {sorted(sizes)}")
  (n,) = sizes
  only_bort = np.mean([np.sum(b * (1 - s)) for b in sides[0]
                       for s in sides[1]])
  only_base = np.mean([np.sum((1 - b) * s) for b in sides[0]
                       for s in sides[1]])
  low, high = bonett_price(only_bort, only_base, n)
  method = "Bonett-Price"
  if len(sides[0]) > 1 or len(sides[1]) > 1:
    boot = difference(name, sides[0], sides[1], better=better, paired=True,
                      unit=unit, seed=seed)
    low, high = _union((low, high), (boot.low, boot.high))
    method += " ∪ paired bootstrap over runs"
  rates = [float(np.mean([r.mean() for r in side])) for side in sides]
  return Difference(
      name=name, better=better, bort=rates[0], baseline=rates[1],
      difference=rates[0] - rates[1], low=low, high=high,
      units=(f"{n} {unit} (paired) × {len(sides[0])} vs {len(sides[1])} "
             f"run(s), discordant {only_bort:g} vs {only_base:g}; {method}"))
