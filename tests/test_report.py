"""The report package: verdict rule, registry, failures, writability.

One module-scoped pair of 2-step LeNet runs (SGD, Bort-S on digits) feeds the
in-process checks; ``report.build`` runs only the analyses each test keeps in
the registry, so nothing here runs the whole Section 4.
"""

import json
import math
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))  # `experiments` is a folder, not installed

from bort_jax import report  # noqa: E402
from bort_jax.report import registry  # noqa: E402
from bort_jax.report import stats  # noqa: E402
from bort_jax.report import pipeline  # noqa: E402


# ------------------------------------------------------------ verdict rule


def _normal_interval(diffs):
  half = 1.959964 * diffs.std(ddof=1) / math.sqrt(len(diffs))
  return diffs.mean() - half, diffs.mean() + half


def test_paired_interval_matches_the_normal_interval_of_the_differences():
  rng = np.random.default_rng(1)
  base = rng.normal(size=600)  # large image-to-image spread, shared by both
  bort = base + 0.1 + 0.2 * rng.normal(size=600)
  d = stats.difference("x", bort, base, better="higher", paired=True)
  low, high = _normal_interval(bort - base)
  assert d.difference == pytest.approx(np.mean(bort - base))
  assert d.low == pytest.approx(low, abs=0.15 * (high - low))
  assert d.high == pytest.approx(high, abs=0.15 * (high - low))
  assert d.reading == "supports"
  # Unpaired, the image spread enters the interval: about 7x wider here.
  unpaired = stats.difference("x", bort, base, better="higher", paired=False)
  assert unpaired.high - unpaired.low > 5 * (d.high - d.low)
  assert unpaired.reading == "undecided"


def test_seeds_are_resampled_too():
  rng = np.random.default_rng(2)
  images = rng.normal(size=200)
  one_seed = stats.difference("x", images + 0.05, images, better="higher",
                              paired=True)
  # Two Bort seeds that disagree by ±0.5: the interval must cover both.
  two_seeds = stats.difference("x", [images + 0.55, images - 0.45], [images],
                               better="higher", paired=True)
  assert one_seed.reading == "supports"
  assert two_seeds.low < -0.3 and two_seeds.high > 0.4
  assert two_seeds.reading == "undecided"
  assert "2 vs 1 run(s)" in two_seeds.units


def test_a_reference_value_and_the_direction():
  fooled = np.array([1.0] * 30 + [0.0] * 2)
  d = stats.difference("rate", fooled, 0.5, better="higher", paired=False)
  assert d.baseline == 0.5 and d.low > 0 and d.reading == "supports"
  lower = stats.difference("rate", fooled, 0.5, better="lower", paired=False)
  assert lower.reading == "contradicts"


@pytest.mark.parametrize("intervals, expected", [
    ([(0.1, 0.2), (0.01, 0.3)], "holds"),
    ([(0.1, 0.2), (-0.1, 0.3)], "inconclusive"),
    ([(0.1, 0.2), (-0.3, -0.1)], "does not hold"),
    ([(-0.1, 0.1), (-0.3, -0.1)], "does not hold"),
    ([(0.0, 0.2)], "inconclusive"),  # 0 inside the interval is never support
    ([], "inconclusive"),
])
def test_verdict_rule(intervals, expected):
  differences = [stats.Difference("d", "higher", 0.0, 0.0, 0.0, low, high, "")
                 for low, high in intervals]
  assert stats.verdict(differences) == expected


def test_difference_rejects_non_finite_and_mismatched_values():
  with pytest.raises(ValueError, match=r"x \(Bort\) has 1 non-finite"):
    stats.difference("x", [np.array([1.0, np.nan])], [np.zeros(2)],
                     better="higher", paired=True)
  with pytest.raises(ValueError, match="paired comparison needs the same units"):
    stats.difference("x", np.zeros(3), np.zeros(4), better="higher",
                     paired=True)
  with pytest.raises(ValueError, match="better must be 'higher' or 'lower'"):
    stats.difference("x", np.zeros(3), np.zeros(3), better="up", paired=True)
  with pytest.raises(ValueError, match=r"x: the statistic of the measurements "
                                       r"is not finite \(Bort, baseline: "
                                       r"\[nan, "):
    stats.difference("x", np.zeros((3, 3)), np.eye(3), better="lower",
                     paired=False, units_per_run=True,
                     statistic=stats.gram_offdiagonal_ratio)
  with pytest.raises(ValueError, match="units of different networks cannot "
                                       "be paired"):
    stats.difference("x", np.zeros(3), np.zeros(3), better="lower",
                     paired=True, units_per_run=True)


def test_gram_matrix_is_rebuilt_from_its_distribution():
  from bort_jax.report import analyses  # pylint: disable=import-outside-toplevel
  gram = np.array([[1.0, 2.0, 3.0], [2.0, 5.0, 4.0], [3.0, 4.0, 6.0]])
  np.testing.assert_array_equal(
      analyses.gram_matrix(np.diag(gram), gram[~np.eye(3, dtype=bool)]), gram)


def test_gram_offdiagonal_ratio_of_resampled_units_matches_the_expanded_gram():
  rng = np.random.default_rng(3)
  w = rng.normal(size=(7, 5))
  gram = w @ w.T
  draws = rng.integers(0, 7, size=(50, 7))
  counts = np.stack([np.bincount(d, minlength=7) for d in draws]).astype(float)
  got = stats.gram_offdiagonal_ratio(gram, counts)
  for d, value in zip(draws, got):
    resampled = gram[np.ix_(d, d)]  # the Gram of the drawn units, copies too
    distinct = d[:, None] != d[None, :]  # copies of one unit are no pair
    np.testing.assert_allclose(
        value, np.abs(resampled[distinct]).mean() / np.diag(resampled).mean(),
        rtol=1e-12)
  # Every unit once: the plain statistic of the Gram.
  off = np.abs(gram[~np.eye(7, dtype=bool)]).mean() / np.diag(gram).mean()
  np.testing.assert_allclose(
      stats.gram_offdiagonal_ratio(gram, np.ones((1, 7))), [off], rtol=1e-12)


def test_each_network_gets_its_own_draw_of_units():
  """Eight seeds holding the same Gram: drawn independently, their units
  average out. With the runs resampled too, the mean of 8 drawn runs has
  variance (2·8 − 1)/8² of one run's: the interval is 0.48 times as wide as
  one seed's. One draw shared by the eight would give one seed's width."""
  w = np.random.default_rng(5).normal(size=(30, 40))
  gram = w @ w.T
  one, eight = (stats.difference("g", runs, 0.0, better="lower",
                                 paired=False, units_per_run=True,
                                 unit="Gram rows",
                                 statistic=stats.gram_offdiagonal_ratio)
                for runs in ([gram], [gram] * 8))
  ratio = (eight.high - eight.low) / (one.high - one.low)
  assert 0.38 < ratio < 0.6, ratio
  assert eight.units == "30 Gram rows × 8 run(s)"


def _networks(rng, count, units, fan_in):
  """Gram matrices of ``count`` networks whose rows share a random component:
  row i is ``2 b_i e + noise`` scaled to norm ``1 + 0.2 z_i``, so every entry
  of row i carries ``b_i`` and the Gram's entries are far from independent."""
  w = rng.normal(size=(count, units, fan_in)) / np.sqrt(fan_in)
  w[..., 0] += 2.0 * rng.normal(size=(count, units))
  w *= (1 + 0.2 * rng.normal(size=(count, units, 1))) / np.linalg.norm(
      w, axis=-1, keepdims=True)
  return w @ np.swapaxes(w, 1, 2)


def test_fig3a_intervals_resample_units_and_cover_at_their_level():
  """Fig. 3a's intervals on two networks drawn from one distribution (true
  difference 0): the unit bootstrap covers 0 about 95 % of the time; the
  bootstrap over Gram entries, which treats 190 correlated entries as
  independent, covers it less than half the time."""
  import types  # pylint: disable=import-outside-toplevel
  from bort_jax.report import analyses  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  count, units = 160, 20
  grams = _networks(rng, 2 * count, units, 48)
  ctx = types.SimpleNamespace(label="sim", explain=types.SimpleNamespace(seed=0))
  upper = np.triu_indices(units, 1)
  covered = {"diagonal": 0, "off-diagonal": 0, "entries": 0}
  for sgd, bort in zip(grams[:count], grams[count:]):
    measured = {name: [{"conv": {"diag": np.diag(g), "gram": g}}]
                for name, g in (("SGD", sgd), ("Bort-S", bort))}
    diagonal, off_diagonal = analyses._gram_differences(measured, ctx)
    assert off_diagonal.units == "20 Gram rows × 1 vs 1 run(s)"
    entries = stats.difference(
        "entries", np.abs(bort[upper]) / np.diag(bort).mean(),
        np.abs(sgd[upper]) / np.diag(sgd).mean(), better="lower",
        paired=False)
    for name, d in (("diagonal", diagonal), ("off-diagonal", off_diagonal),
                    ("entries", entries)):
      covered[name] += d.low <= 0.0 <= d.high
  coverage = {name: c / count for name, c in covered.items()}
  # ±0.017 is one binomial s.d. at 160 networks and 95 % coverage.
  assert coverage["diagonal"] >= 0.88, coverage
  assert coverage["off-diagonal"] >= 0.88, coverage
  assert coverage["entries"] <= 0.60, coverage


# ------------------------------------------------------------ 0/1 outcomes


def _exact_coverage(n, p, interval_of):
  """P(interval covers p) over k ~ Binomial(n, p), summed exactly."""
  from scipy import stats as scipy_stats  # pylint: disable=import-outside-toplevel
  total = 0.0
  for k in range(n + 1):
    low, high = interval_of(np.array([1.0] * k + [0.0] * (n - k)))
    total += scipy_stats.binom.pmf(k, n, p) * (low <= p <= high)
  return total


def test_a_proportion_interval_covers_at_small_n_where_the_bootstrap_fails():
  """16 pairs, as in the demo's Fig. 6c: Clopper-Pearson covers the true
  rate at least 95 % of the time for every rate on the grid; the percentile
  bootstrap collapses to a point at 0 (or 16) successes and covers 0.05
  less than 60 % of the time."""
  def interval(outcomes, method=stats.proportion):
    d = method("rate", outcomes, 0.5, better="higher")
    return d.low + 0.5, d.high + 0.5
  bootstrap = lambda o: interval(o, lambda *a, **kw: stats.difference(
      *a, paired=False, **kw))
  for p in (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.97):
    assert _exact_coverage(16, p, interval) >= 0.95, p
  assert _exact_coverage(16, 0.05, bootstrap) < 0.6
  none = stats.proportion("rate", np.zeros(16), 0.5, better="higher")
  # 0 of 16: [0, 1 − 0.025^(1/16)] = [0, 0.206], minus the reference 1/2.
  assert none.low == pytest.approx(-0.5)
  assert none.high == pytest.approx(1 - 0.025 ** (1 / 16) - 0.5, rel=1e-6)
  assert none.reading == "contradicts" and "0 successes" in none.units


def _paired_coverage(n, q_bort, q_base, interval_of):
  """Exact coverage of ``q_bort − q_base`` over multinomial counts of
  (only Bort right, only baseline right, same outcome) among n images."""
  from scipy import stats as scipy_stats  # pylint: disable=import-outside-toplevel
  total = 0.0
  for b in range(n + 1):
    for c in range(n + 1 - b):
      bort = np.array([1.0] * b + [0.0] * c + [1.0] * (n - b - c))
      base = np.array([0.0] * b + [1.0] * c + [1.0] * (n - b - c))
      low, high = interval_of(bort, base)
      total += scipy_stats.multinomial.pmf([b, c, n - b - c], n,
                                           [q_bort, q_base,
                                            1 - q_bort - q_base]) * (
          low <= q_bort - q_base <= high)
  return total


def test_a_paired_proportion_interval_covers_where_the_bootstrap_fails():
  """20 paired images: Bonett-Price covers the accuracy difference at least
  94 % of the time on the grid (95.7-100 % measured); the paired percentile
  bootstrap covers a 10-point difference 88 % of the time and 5 points 64 %
  (it collapses at 0 discordant images)."""
  def interval(bort, base, method=stats.paired_proportions):
    d = method("acc", bort, base, better="higher")
    return d.low, d.high
  bootstrap = lambda a, b: interval(a, b, lambda *x, **kw: stats.difference(
      *x, paired=True, **kw))
  for q_bort, q_base in ((0.05, 0.0), (0.1, 0.0), (0.1, 0.05), (0.2, 0.1),
                         (0.3, 0.3), (0.02, 0.02), (0.0, 0.4)):
    assert _paired_coverage(20, q_bort, q_base, interval) >= 0.94, (
        q_bort, q_base)
  assert _paired_coverage(20, 0.05, 0.0, bootstrap) < 0.7
  # Two models that agree on all 360 images: ±1.96 · √2 / 362 (one
  # pseudo-success in each discordant cell), where the bootstrap gives [0, 0].
  same = np.array([1.0] * 350 + [0.0] * 10)
  d = stats.paired_proportions("acc", same, same, better="higher")
  assert d.difference == 0.0 and d.reading == "undecided"
  np.testing.assert_allclose([d.low, d.high],
                             np.array([-1, 1]) * 1.959964 * np.sqrt(2) / 362,
                             rtol=1e-5)
  assert d.units.startswith("360 test images (paired) × 1 vs 1 run(s)")


def test_several_seeds_widen_a_proportion_interval():
  rng = np.random.default_rng(4)
  agree = rng.random(200) < 0.7
  one = stats.proportion("r", agree.astype(float), 0.5, better="higher")
  # Two seeds, 95 % and 45 % successes: the bootstrap over seeds reaches
  # both, far beyond Clopper-Pearson of the 400 pooled outcomes.
  seeds = [(rng.random(200) < 0.95).astype(float),
           (rng.random(150) < 0.45).astype(float)]
  two = stats.proportion("r", seeds, 0.5, better="higher")
  assert one.reading == "supports" and two.reading == "undecided"
  assert two.low < -0.02 and two.high > 0.4
  assert "150/200 pairs × 2 run(s), " in two.units
  base = [(rng.random(100) < 0.5).astype(float)]
  # Paired: one Bort seed right on every image, one wrong on every image.
  paired = stats.paired_proportions("a", [np.ones(100), np.zeros(100)], base,
                                    better="higher")
  assert paired.low < -0.4 and paired.high > 0.4, paired


def test_proportions_reject_values_that_are_not_outcomes():
  with pytest.raises(ValueError, match=r"rate \(Bort\) takes 0/1 outcomes; "
                                       r"got 1 other values, e.g. 0.5"):
    stats.proportion("rate", [1.0, 0.5, 0.0], 0.5, better="higher")
  with pytest.raises(ValueError, match="needs at least one run with at "
                                       "least one outcome"):
    stats.proportion("rate", [np.zeros(3), np.zeros(0)], 0.5,
                     better="higher")
  with pytest.raises(ValueError, match=r"acc: paired outcomes need the same "
                                       r"units in every run; got sizes \[3, 4\]"):
    stats.paired_proportions("acc", np.ones(3), np.ones(4), better="higher")


def test_fig6c_counts_a_success_only_when_the_class_changed():
  from bort_jax.report import analyses  # pylint: disable=import-outside-toplevel
  # pair:        0  1  2  3  4  5
  source = [3, 1, 7, 2, 5, 0]
  target = [4, 1, 7, 6, 8, 9]
  adversarial = [4, 1, 3, 2, 8, 5]
  success, counted = analyses.adversarial_outcomes(source, target,
                                                   adversarial)
  # Pairs 1 and 2: the source already takes the target's class; excluded
  # whether the sample keeps it (1) or not (2). Pair 5 left the source's
  # class for a third one: no success.
  np.testing.assert_array_equal(counted, [True, False, False, True, True,
                                          True])
  np.testing.assert_array_equal(success, [1.0, 0.0, 1.0, 0.0])
  measured = {label: [{"success": s, "counted": c}] for label, (s, c) in (
      ("SGD", (np.ones(2), np.array([True, True, False]))),
      ("Bort-S", (success, counted)))}
  import types  # pylint: disable=import-outside-toplevel
  ctx = types.SimpleNamespace(label="m", explain=types.SimpleNamespace(seed=0))
  rows = analyses._fig6c_summary(measured, ctx)
  assert rows["Bort-S"] == {
      "success rate (%)": pytest.approx(50.0), "successes": 2,
      "pairs counted": 4,
      "pairs excluded (source already predicted as the target's class)": 2}
  (d,) = analyses._fig6c_differences(measured, ctx)
  assert d.bort == pytest.approx(0.5) and "4 source/target pairs" in d.units
  # No pair left: nothing to decide (listed as missing), no rate.
  measured["Bort-S"] = [{"success": np.zeros(0), "counted": np.zeros(4, bool)}]
  assert analyses._fig6c_differences(measured, ctx) == (
      "no pair counted: every adversarial pair of a Bort-S run was excluded "
      "(counted per run: [0] of [4]), the model predicts each source as its "
      "target's class")
  assert analyses._fig6c_summary(measured, ctx)["Bort-S"][
      "success rate (%)"] is None


def test_table3_logit_reads_the_authors_auc_from_table3s_curves():
  import types  # pylint: disable=import-outside-toplevel
  from bort_jax import explain  # pylint: disable=import-outside-toplevel
  from bort_jax.report import analyses  # pylint: disable=import-outside-toplevel
  deletion = np.array([[4.0, 2.0, -2.0], [-2.0, -1.0, -4.0]])
  insertion = np.array([[1.0, 3.0, 4.0], [-3.0, -1.0, -2.0]])
  run = types.SimpleNamespace(errors=[], measured={"table3": {
      "SAT": {"deletion_logit": deletion, "insertion_logit": insertion},
      "IG": {"deletion_logit": np.zeros((2, 3)), "insertion_logit": insertion}}})
  out = analyses._normalized_aucs(run, None)
  np.testing.assert_allclose(out["SAT"]["deletion_auc"],
                             [(1 + .5 - .5) / 3, (1 + .5 + 2) / 3])
  np.testing.assert_allclose(out["SAT"]["insertion_auc"],
                             [(.25 + .75 + 1) / 3, (1.5 + .5 + 1) / 3])
  np.testing.assert_array_equal(out["SAT"]["negative_reference"],
                                [False, True])
  # A zero logit on x is an error of that method, not a NaN in the report.
  assert "IG" not in out and run.errors[0][0] == "normalised AUC of IG"
  assert [c.id for c in report.REGISTRY.values() if c.claim][4:6] == [
      "table3", "table3_logit"]


# --------------------------------------------------------- trained runs


def _tiny_explain():
  config = pipeline.explain_config()
  config.update(num_images=6, num_show=2, k=8, ig_steps=4, xrai_steps=4,
                guided_ig_steps=4, rise_num_masks=20, deletion_step=196,
                n_clusters=2, adversarial_pairs=2, eval_batch_size=256)
  return config


@pytest.fixture(scope="module")
def lenet_runs(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("lenet_runs")
  run_dirs, _ = pipeline.train_runs(
      {f"lenet_{o}": _digits_lenet(o, steps=2) for o in ("sgd", "bort_sgd")},
      str(workdir))
  return run_dirs


def _digits_lenet(optimizer, *, steps, seed=0):
  from bort_jax import train
  config = train.default_config()
  config.update(dataset="digits", model="lenet", optimizer=optimizer,
                lam=0.1 if optimizer.startswith("bort_") else 0.0,
                weight_decay=0.01, batch_size=32, eval_batch_size=360,
                num_train_steps=steps, seed=seed, progress=False)
  config.model_overrides = {"in_channels": 1}
  return config


@pytest.fixture
def only():
  """Keeps only the given analyses in the registry for one test, then puts
  the registry back as it was (same order)."""
  saved = dict(registry.REGISTRY)

  def keep(*ids):
    for analysis_id in list(registry.REGISTRY):
      if analysis_id not in ids:
        del registry.REGISTRY[analysis_id]
  yield keep
  registry.REGISTRY.clear()
  registry.REGISTRY.update(saved)


def _max_logit(run, ctx):
  return np.asarray(run.model(ctx.images)).max(-1)


def _plot_max_logit(measured, ctx):
  fig = Figure()
  ax = fig.subplots()
  for label, runs in measured.items():
    ax.hist(runs[0], label=label)
  return fig


def test_a_new_figure_is_one_declaration_plus_its_plot(lenet_runs, only,
                                                       tmp_path):
  only("table1")
  report.register(report.Analysis(
      id="max_logit", title="Max logit", description="largest logit",
      measure=_max_logit,
      summarize=lambda m, ctx: {label: {"mean": float(np.mean(runs[0]))}
                                for label, runs in m.items()},
      plot=_plot_max_logit,
      claim=report.Claim(
          statement="Bort's largest logit is larger (a test claim).",
          differences=lambda m, ctx: [report.difference(
              "max logit", m["Bort-S"], m["SGD"], better="higher",
              paired=True)])))
  try:
    results = report.build(lenet_runs, str(tmp_path), _tiny_explain(),
                           title="t", command="c", progress=False)
    report.write_report(results, tmp_path)
  finally:
    report.unregister("max_logit")
  document = json.loads((tmp_path / "report.json").read_text())
  markdown = (tmp_path / "report.md").read_text()
  assert list(document)[0] == "claims"
  assert [c["id"] for c in document["claims"]] == ["table1", "max_logit"]
  claim = document["claims"][1]
  assert claim["verdict"] in report.VERDICTS
  (evidence,) = claim["evidence"]
  assert evidence["ci"][0] <= evidence["difference"] <= evidence["ci"][1]
  assert document["sections"] == {"table1": "Table 1: test accuracy",
                                  "max_logit": "Max logit"}
  lenet = document["models"]["lenet"]
  assert set(lenet["sections"]["max_logit"]) == {"SGD", "Bort-S"}
  assert lenet["figures"] == {"max_logit": "lenet_max_logit.png"}
  assert (tmp_path / "lenet_max_logit.png").read_bytes()[:4] == b"\x89PNG"
  assert "\n## Max logit\n" in markdown
  assert "](lenet_max_logit.png)" in markdown
  assert "| `max_logit` | Bort's largest logit is larger" in markdown
  assert markdown.index("## Claims") < markdown.index("## Setup")
  assert document["errors"] == []


def test_table1_evidence_is_the_accuracy_over_the_whole_test_split(
    lenet_runs, only, tmp_path):
  only("table1")
  results = report.build(lenet_runs, str(tmp_path), _tiny_explain(),
                         title="t", command="c", progress=False)
  (claim,) = results["claims"]
  (evidence,) = claim["evidence"]
  top1 = {}
  for run_dir in lenet_runs:
    last = report.read_metrics(run_dir)[-1]
    top1[os.path.basename(run_dir)] = last["top1"]
  # The per-image pass reproduces what training measured on the 360 images.
  assert evidence["bort"] == pytest.approx(top1["lenet_bort_sgd"], abs=1e-6)
  assert evidence["baseline"] == pytest.approx(top1["lenet_sgd"], abs=1e-6)
  assert evidence["units"].startswith("360 test images (paired)")


def test_a_failing_explainer_is_recorded_and_the_rest_is_written(
    lenet_runs, only, monkeypatch, tmp_path):
  from bort_jax import explain  # pylint: disable=import-outside-toplevel
  only("fig5", "table3")

  def broken_rise(*args, **kwargs):
    raise ValueError("rise broke")
  monkeypatch.setattr(explain, "rise", broken_rise)
  config = _tiny_explain()
  results = report.build(lenet_runs, str(tmp_path), config, title="t",
                         command="c", progress=False)
  assert pipeline.write_results(results, str(tmp_path)) == 1
  assert results["errors"] == [
      {"analysis": "fig5", "model": "LeNet", "part": f"RISE on the {opt} run",
       "error": "ValueError: rise broke"} for opt in ("SGD", "Bort-S")]
  rows = results["models"]["lenet"]["sections"]["table3"]
  assert sorted(rows) == sorted(f"{m} · {o}" for m in ("IG", "XRAI",
                                                       "GuidedIG", "SAT")
                                for o in ("SGD", "Bort-S"))
  (claim,) = results["claims"]
  assert claim["id"] == "table3" and len(claim["evidence"]) == 2
  markdown = (tmp_path / "report.md").read_text()
  assert ("- `fig5` on LeNet (RISE on the SGD run): ValueError: rise broke"
          in markdown)


def _without_write_permission():
  """argv prefix that runs a command unable to bypass file permissions."""
  if os.geteuid() != 0:
    return []
  if shutil.which("setpriv") is None:
    pytest.skip("running as root without setpriv: cannot make a directory "
                "read-only for the command")
  return ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
          "--inh-caps=-dac_override,-dac_read_search", "--"]


@pytest.mark.parametrize("module, flag", [("experiments.explain", "--out"),
                                          ("experiments.quickstart",
                                           "--workdir")])
def test_a_read_only_report_directory_fails_before_any_work(module, flag,
                                                            tmp_path):
  read_only = tmp_path / "read_only"
  read_only.mkdir()
  read_only.chmod(0o555)
  argv = [*_without_write_permission(), sys.executable, "-m", module,
          f"{flag}={read_only}"]
  if module == "experiments.explain":
    # A run folder whose config.json is not even a config: were any work
    # done before the check of --out, that error would be the one raised.
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("not json")
    argv.append(f"--workdir={tmp_path / 'run'}")
  result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)),
                          check=False)
  assert result.returncode != 0
  assert (f"PermissionError: the report directory '{read_only}' is not "
          "writable" in result.stderr), result.stderr[-2000:]
  assert "training" not in result.stdout
  assert list(read_only.iterdir()) == []
