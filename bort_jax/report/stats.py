"""Confidence intervals and the rule that turns them into a verdict.

Every claim of the report is decided by differences ``Bort − baseline`` (or
``Bort − reference`` for a claim about Bort alone), each with a percentile
bootstrap confidence interval:

- resampled units are the test images (or, for weight statistics, the kernel
  entries), drawn with replacement; when both sides were measured on the same
  units (the same test images) the draw is shared (a paired bootstrap);
- when an optimizer has several runs (seeds), the runs are resampled too
  (first the runs, then the units: a two-level bootstrap);
- the interval is the central ``confidence`` mass of the resampled mean
  differences.

A difference *supports* the claim when its whole interval lies on the side the
paper predicts, *contradicts* it when the whole interval lies on the other
side, and is *undecided* when the interval contains 0. A claim ``holds`` when
every difference supports it, ``does not hold`` when at least one contradicts
it, and is ``inconclusive`` otherwise. The rule, the confidence level and the
number of resamples are fixed here, not per claim, and not chosen from results.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
INCONCLUSIVE = "inconclusive"
VERDICTS = (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE)

CONFIDENCE = 0.95
NUM_RESAMPLES = 2000

VERDICT_RULE = (
    f"Each difference (Bort minus baseline, or Bort minus a stated reference) "
    f"has a {CONFIDENCE:.0%} percentile bootstrap interval ({NUM_RESAMPLES} "
    "resamples of the test images, or of the kernel entries for weight "
    "statistics, paired when both sides saw the same images; runs are "
    "resampled too when an optimizer has several seeds). A difference supports "
    "the claim when its whole interval lies on the side the paper predicts and "
    "contradicts it when its whole interval lies on the other side. A claim "
    "holds when every difference supports it, does not hold when any "
    "difference contradicts it, and is inconclusive otherwise (an interval "
    "that contains 0 never counts as support).")


def _as_runs(name: str, values) -> np.ndarray:
  """``values`` as a (runs, units) float64 array: one row per seed."""
  if isinstance(values, np.ndarray) or not isinstance(values, Sequence):
    values = [values]
  rows = [np.asarray(v, np.float64).reshape(-1) for v in values]
  if not rows or any(r.size == 0 for r in rows):
    raise ValueError(f"{name} needs at least one run with at least one value; "
                     f"got sizes {[r.size for r in rows]}")
  if len({r.size for r in rows}) != 1:
    raise ValueError(f"every run of {name} needs the same number of units; "
                     f"got {[r.size for r in rows]}")
  stacked = np.stack(rows)
  if not np.all(np.isfinite(stacked)):
    raise ValueError(f"{name} has {int(np.sum(~np.isfinite(stacked)))} "
                     "non-finite values; a verdict needs finite measurements")
  return stacked


def _resampled_means(runs: np.ndarray, units: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
  """(NUM_RESAMPLES,) means over resampled runs and the given unit draws."""
  picked = rng.integers(0, runs.shape[0], size=(len(units), runs.shape[0]))
  # runs[picked][:, :, units] without materialising (R, S, N) at once.
  return np.stack([runs[p][:, u].mean() for p, u in zip(picked, units)])


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
               unit: str = "test images", seed: int = 0) -> Difference:
  """Bootstrap CI of ``mean(bort) − mean(baseline)``.

  Args:
    name: what is compared (shown in the report).
    bort: values of the Bort runs: one array of per-unit values, or a list of
      them (one per seed).
    baseline: the same for the baseline runs, or a float reference value.
    better: ``"higher"`` or ``"lower"``: the sign the paper predicts.
    paired: whether unit ``i`` of both sides is the same test image (then the
      resampled units are shared).
    unit: name of the resampled units.
    seed: seed of the resampling.
  """
  if better not in ("higher", "lower"):
    raise ValueError(f"better must be 'higher' or 'lower'; got {better!r}")
  rng = np.random.default_rng(seed)
  bort_runs = _as_runs(f"{name} (Bort)", bort)
  n = bort_runs.shape[1]
  draws = rng.integers(0, n, size=(NUM_RESAMPLES, n))
  bort_means = _resampled_means(bort_runs, draws, rng)
  if isinstance(baseline, (int, float)):
    base_mean, base_means = float(baseline), np.full(NUM_RESAMPLES,
                                                     float(baseline))
    units = f"{n} {unit} × {bort_runs.shape[0]} run(s)"
  else:
    base_runs = _as_runs(f"{name} (baseline)", baseline)
    if paired and base_runs.shape[1] != n:
      raise ValueError(f"{name}: a paired comparison needs the same units on "
                       f"both sides; got {n} and {base_runs.shape[1]}")
    base_draws = draws if paired else rng.integers(
        0, base_runs.shape[1], size=(NUM_RESAMPLES, base_runs.shape[1]))
    base_means = _resampled_means(base_runs, base_draws, rng)
    base_mean = float(base_runs.mean())
    units = (f"{n} {unit}{' (paired)' if paired else ''} × "
             f"{bort_runs.shape[0]} vs {base_runs.shape[0]} run(s)")
  tail = (1.0 - CONFIDENCE) / 2.0
  low, high = np.quantile(bort_means - base_means, [tail, 1.0 - tail])
  bort_mean = float(bort_runs.mean())
  return Difference(name=name, better=better, bort=bort_mean,
                    baseline=base_mean, difference=bort_mean - base_mean,
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
