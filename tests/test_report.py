"""The report package: verdict rule, registry, failures, writability.

One module-scoped pair of 2-step LeNet runs (SGD, Bort-S on digits) feeds the
in-process checks; ``report.build`` runs only the analyses each test keeps in
the registry, so nothing here runs the whole Section 4.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy import stats as scipy_stats

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))  # `experiments` is a folder, not installed

from bort_jax import report  # noqa: E402
from bort_jax.report import registry  # noqa: E402
from bort_jax.report import stats  # noqa: E402
from experiments import explain as explain_cli  # noqa: E402
from experiments import quickstart  # noqa: E402
from experiments.configs import quickstart as quickstart_config  # noqa: E402


# ------------------------------------------------------------ verdict rule


FIVE = (0.0, 0.1, -0.1, 0.05, -0.05)  # seed-to-seed spread of a difference


def _difference(center, spread=FIVE, *, better="higher", threshold=0.0,
                baseline=None):
  """A difference whose seed pairs differ by ``center + spread``."""
  base = np.zeros(len(spread)) if baseline is None else baseline
  return stats.compare("d", np.asarray(spread) + center + base, base,
                       better=better, threshold_value=threshold)


@pytest.mark.parametrize("centers, expected", [
    ((1.0, 1.0), "holds"),
    ((1.0, 0.0), "inconclusive"),
    ((1.0, -1.0), "mixed"),
    ((0.0, -1.0), "does not hold"),
    ((-1.0, -1.0), "does not hold"),
    ((0.0,), "inconclusive"),  # 0 inside the interval is never support
    ((), "inconclusive"),
])
def test_verdict_rule(centers, expected):
  assert stats.verdict([_difference(c) for c in centers]) == expected


def test_the_seed_interval_is_the_paired_t_interval():
  bort = np.array([0.91, 0.95, 0.90, 0.97, 0.93])
  base = bort - np.array([0.02, 0.01, 0.03, 0.00, 0.02])
  d = stats.compare("acc", bort, base, better="higher",
                    threshold_value=stats.threshold("higher", margin=0.01))
  result = scipy_stats.ttest_rel(bort, base)
  ci = result.confidence_interval(0.95)
  np.testing.assert_allclose(d.seed_interval, (ci.low, ci.high), rtol=1e-10)
  assert d.difference == pytest.approx(0.016)
  # Non-inferiority at 1 point: H0 Δ ≤ −0.01.
  p_support = scipy_stats.ttest_rel(bort + 0.01, base,
                                    alternative="greater").pvalue
  assert d.p[0] == pytest.approx(p_support, rel=1e-10)
  assert d.runs == {"baseline": 5, "bort": 5} and d.unit == "seeds"


def test_the_threshold_decides_support_and_contradiction():
  # Lower is better; 0.05 minimum effect: Δ = −0.03 ± a little is a real
  # gain too small to count, so it contradicts the claim's size.
  small = _difference(-0.03, np.array(FIVE) / 100, better="lower",
                      threshold=stats.threshold("lower", min_effect=0.05))
  assert stats.judge([small])[:2] == ("does not hold", ["contradicts"])
  large = _difference(-0.2, np.array(FIVE) / 100, better="lower",
                      threshold=stats.threshold("lower", min_effect=0.05))
  assert stats.judge([large])[:2] == ("holds", ["supports"])
  with pytest.raises(ValueError, match="exactly one of min_effect and margin"):
    stats.threshold("higher")
  with pytest.raises(ValueError, match="≥ 0; got -0.1"):
    stats.threshold("higher", margin=-0.1)
  with pytest.raises(ValueError, match="better must be 'higher' or 'lower'"):
    stats.threshold("up", margin=0.1)


def test_holm_adjusts_contradictions_within_a_claim():
  np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]),
                             [0.03, 0.06, 0.06, 0.02])
  # Alone, this difference contradicts; among 14 it no longer does.
  weak = _difference(-0.12, FIVE, threshold=0.0)
  assert stats.judge([weak])[1] == ["contradicts"]
  neutral = [_difference(0.0)] * 13
  verdict, readings, p_holm = stats.judge([weak] + neutral)
  assert verdict == "inconclusive" and readings[0] == "undecided"
  assert p_holm[0] == pytest.approx(min(1.0, 14 * weak.p[1]))


def test_compare_rejects_unpaired_and_non_finite_runs():
  with pytest.raises(ValueError, match="seed pairs need as many baseline "
                                       "runs as Bort runs"):
    stats.compare("x", [1.0, 2.0], [1.0], better="higher",
                  threshold_value=0.0)
  with pytest.raises(ValueError, match="x: every run needs a finite summary"):
    stats.compare("x", [1.0, np.nan], [1.0, 1.0], better="higher",
                  threshold_value=0.0)
  with pytest.raises(ValueError, match=r"x \(Bort\) has 1 non-finite"):
    stats.images_within("x", [np.array([1.0, np.nan])], [np.zeros(2)])
  with pytest.raises(ValueError, match="paired images need the same runs"):
    stats.images_within("x", np.zeros(3), np.zeros(4))


def test_gram_matrix_is_rebuilt_from_its_distribution():
  from bort_jax.report import analyses  # pylint: disable=import-outside-toplevel
  gram = np.array([[1.0, 2.0, 3.0], [2.0, 5.0, 4.0], [3.0, 4.0, 6.0]])
  np.testing.assert_array_equal(
      analyses.gram_matrix(np.diag(gram), gram[~np.eye(3, dtype=bool)]), gram)


def test_fig3a_compares_each_networks_statistic_over_seed_pairs():
  import types  # pylint: disable=import-outside-toplevel
  from bort_jax.report import analyses  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  grams = []
  for scale in (1.0, 0.3):  # SGD, Bort-S (closer to orthogonal)
    w = np.eye(8)[None] + scale * rng.normal(size=(5, 8, 8)) / 4
    grams.append([x @ x.T for x in w])
  measured = {label: [{"conv": {"diag": np.diag(g), "gram": g}}
                      for g in side]
              for label, side in zip(("SGD", "Bort-S"), grams)}
  ctx = types.SimpleNamespace(label="sim", threshold=lambda *a: -0.05)
  diagonal, offdiagonal = analyses._gram_differences(measured, ctx)
  assert diagonal.runs == {"baseline": 5, "bort": 5}
  assert diagonal.bort == pytest.approx(np.mean(
      [np.abs(np.diag(g) - 1).mean() for g in grams[1]]))
  assert offdiagonal.within.unit == "Gram rows" and offdiagonal.within.n == 8
  assert offdiagonal.within.usable
  assert stats.verdict([diagonal, offdiagonal]) == "holds"


# ------------------------------------------------------------ 0/1 outcomes


def test_outcome_intervals_at_the_edges():
  # Two models that agree on all 360 images: ±1.96 · √2 / 362 (one
  # pseudo-success in each discordant cell), where a bootstrap gives [0, 0].
  same = np.array([1.0] * 350 + [0.0] * 10)
  within = stats.paired_outcomes_within("acc", same, same)
  np.testing.assert_allclose([within.low, within.high],
                             np.array([-1, 1]) * 1.959964 * np.sqrt(2) / 362,
                             rtol=1e-5)
  none = stats.proportion_within("rate", np.zeros(16), 0.5)
  # 0 of 16: [0, 1 − 0.025^(1/16)] = [0, 0.206], minus the reference 1/2.
  assert none.low == pytest.approx(-0.5)
  assert none.high == pytest.approx(1 - 0.025 ** (1 / 16) - 0.5, rel=1e-6)
  with pytest.raises(ValueError, match=r"rate takes 0/1 outcomes; got 1 "
                                       r"other values, e.g. 0.5"):
    stats.proportion_within("rate", [1.0, 0.5, 0.0], 0.5)
  with pytest.raises(ValueError, match="paired outcomes need the same units"):
    stats.paired_outcomes_within("acc", np.ones(3), np.ones(4))


def test_fig6c_counts_a_success_only_when_the_class_changed():
  from bort_jax import explain  # pylint: disable=import-outside-toplevel
  from bort_jax.report import analyses  # pylint: disable=import-outside-toplevel
  # pair:        0  1  2  3  4  5
  source = [3, 1, 7, 2, 5, 0]
  target = [4, 1, 7, 6, 8, 9]
  adversarial = [4, 1, 3, 2, 8, 5]
  success, counted = explain.adversarial_outcomes(source, target, adversarial)
  # Pairs 1 and 2: the source already takes the target's class; excluded
  # whether the sample keeps it (1) or not (2). Pair 5 left the source's
  # class for a third one: no success.
  np.testing.assert_array_equal(counted, [True, False, False, True, True,
                                          True])
  np.testing.assert_array_equal(success, [1.0, 0.0, 1.0, 0.0])
  assert not hasattr(analyses, "adversarial_outcomes")  # one definition
  sgd = {"success": np.array([1.0, 0.0]), "counted": np.array([True, True,
                                                              False]),
         "num_classes": 10}
  bort = {"success": success, "counted": counted, "num_classes": 10}
  measured = {"SGD": [sgd], "Bort-S": [bort]}
  import types  # pylint: disable=import-outside-toplevel
  ctx = types.SimpleNamespace(label="m", threshold=lambda *a: 0.1)
  rows = analyses._fig6c_summary(measured, ctx)
  assert rows["Bort-S"] == {
      "success rate (%)": pytest.approx(50.0), "successes": 2,
      "pairs counted": 4,
      "pairs excluded (source already predicted as the target's class)": 2}
  chance, against_sgd, half = analyses._fig6c_differences(measured, ctx)
  assert chance.baseline == pytest.approx(0.1) and "chance (1/10)" in chance.name
  assert against_sgd.difference == pytest.approx(0.0)
  assert half.baseline == 0.5 and half.within.n == 4
  assert chance.runs == {"baseline": 0, "bort": 1}
  # No pair left: nothing to decide (listed as missing), no rate.
  measured["Bort-S"] = [{"success": np.zeros(0), "counted": np.zeros(4, bool),
                         "num_classes": 10}]
  assert analyses._fig6c_differences(measured, ctx) == (
      "no pair counted: every adversarial pair of a Bort-S run was excluded "
      "(counted per run: [0] of [4]), the model predicts each source as its "
      "target's class")
  assert analyses._fig6c_summary(measured, ctx)["Bort-S"][
      "success rate (%)"] is None


def test_a_claim_that_fails_says_not_reproduced():
  from bort_jax.report.build import claims  # pylint: disable=import-outside-toplevel
  low = stats.compare("rate", [0.1] * 5, 0.5, better="higher",
                      threshold_value=0.1)
  ecfg = quickstart_config.explain_config()
  (fig6c,) = [c for c in claims({"m": {"fig6c": [low]}}, ecfg)
              if c["id"] == "fig6c"]
  assert fig6c["verdict"] == "does not hold"
  assert fig6c["note"] == "not reproduced in this setup"
  assert fig6c["min_effect"] == 0.1 and "by at least 0.1." in fig6c["claim"]
  (evidence,) = fig6c["evidence"]
  assert evidence["unit"] == "seeds" and evidence["runs"] == {
      "baseline": 0, "bort": 5}
  assert evidence["reading"] == "contradicts"
  table1 = claims({"m": {}}, ecfg)[0]
  assert table1["margin"] == 0.01 and "at most 0.01" in table1["claim"]


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
  config = quickstart_config.explain_config()
  config.update(num_images=6, num_show=2, k=8, ig_steps=4, xrai_steps=4,
                guided_ig_steps=4, rise_num_masks=20, deletion_step=196,
                n_clusters=2, adversarial_pairs=2, eval_batch_size=256)
  return config


@pytest.fixture(scope="module")
def lenet_runs(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("lenet_runs")
  config = quickstart_config.get_config()
  config.train.num_train_steps = 2
  config.train.eval_batch_size = 360
  config.train.progress = False
  run_dirs, _ = quickstart.train_runs(
      {f"lenet_{o}": quickstart.run_config(config, "lenet", o)
       for o in ("sgd", "bort_sgd")}, str(workdir))
  return run_dirs


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
          statement="Bort's largest logit is larger by {min_effect:g} (a "
                    "test claim).",
          differences=lambda m, ctx: [report.compare(
              "max logit", [np.mean(r) for r in m["Bort-S"]],
              [np.mean(r) for r in m["SGD"]], better="higher",
              threshold_value=ctx.threshold("max_logit", "higher"))])))
  config = _tiny_explain()
  config.claims.max_logit_min_effect = 0.5
  try:
    results = report.build(lenet_runs, str(tmp_path), config,
                           title="t", command="c", progress=False)
    report.write_report(results, tmp_path)
  finally:
    report.unregister("max_logit")
  document = json.loads((tmp_path / "report.json").read_text())
  markdown = (tmp_path / "report.md").read_text()
  assert list(document)[0] == "claims"
  assert [c["id"] for c in document["claims"]] == ["table1", "max_logit"]
  claim = document["claims"][1]
  # One seed per optimizer: shown as an observation, never read.
  assert claim["verdict"] == "too few runs" and claim["min_effect"] == 0.5
  assert claim["claim"] == "Bort's largest logit is larger by 0.5 (a test claim)."
  (evidence,) = claim["evidence"]
  assert evidence["reading"] == "observation" and evidence["ci"] is None
  assert evidence["unit"] == "seeds"
  assert evidence["runs"] == {"baseline": 1, "bort": 1}
  assert document["sections"] == {"table1": "Table 1: test accuracy",
                                  "max_logit": "Max logit"}
  lenet = document["models"]["lenet"]
  assert set(lenet["sections"]["max_logit"]) == {"SGD", "Bort-S"}
  assert lenet["figures"] == {"max_logit": "lenet_max_logit.png"}
  assert (tmp_path / "lenet_max_logit.png").read_bytes()[:4] == b"\x89PNG"
  assert "\n## Max logit\n" in markdown
  assert "](lenet_max_logit.png)" in markdown
  assert ("| `max_logit` | Bort's largest logit is larger by 0.5 (a test "
          "claim). | min. effect 0.500 | **too few runs** |") in markdown
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
  assert evidence["within_run"]["unit"] == "test images"
  assert evidence["within_run"]["n"] == 360 and evidence["within_run"]["usable"]
  # One seed: the within-run interval is the one shown, as an observation.
  assert evidence["unit"] == "test images"
  assert evidence["ci"] == evidence["within_run"]["ci"]
  assert claim["verdict"] == "too few runs"


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
  assert explain_cli.write(results, str(tmp_path)) == 1
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
    # A --workdir that does not exist: were any work done first, that error
    # would be the one raised.
    argv.append(f"--workdir={tmp_path / 'no_such_runs'}")
  result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)),
                          check=False)
  assert result.returncode != 0
  assert (f"PermissionError: the report directory '{read_only}' is not "
          "writable" in result.stderr), result.stderr[-2000:]
  assert "training" not in result.stdout
  assert list(read_only.iterdir()) == []


def test_runs_are_compared_only_as_seed_pairs():
  import ml_collections  # pylint: disable=import-outside-toplevel
  from bort_jax.report.build import _unpaired_seeds  # pylint: disable=import-outside-toplevel
  runs = lambda *seeds: [("d", None, ml_collections.ConfigDict({"seed": s}))
                         for s in seeds]
  assert _unpaired_seeds({"SGD": runs(0, 1, 2), "Bort-S": runs(0, 1, 2)}) == ""
  assert _unpaired_seeds({"SGD": runs(0, 2, 1), "Bort-S": runs(0, 1, 2)}) == (
      "the runs are not seed pairs: SGD seeds [0, 2, 1], Bort-S seeds "
      "[0, 1, 2] (seed s of the baseline pairs with seed s of Bort)")
  assert _unpaired_seeds({"SGD": runs(0, 1), "Bort-S": runs(0, 1, 2)}) == (
      "2 SGD run(s) and 3 Bort-S run(s); seed pairs need one run of each "
      "optimizer per seed")


def test_explained_images_are_drawn_at_random_with_the_seed():
  from bort_jax.report import runs  # pylint: disable=import-outside-toplevel
  config = quickstart_config.train_config()
  images, labels, _ = runs.test_images(config, 64, seed=0)
  again, _, _ = runs.test_images(config, 64, seed=0)
  other, _, _ = runs.test_images(config, 64, seed=1)
  first = next(iter(runs.test_split(config, 64)))
  assert images.shape[0] == 64 and len(labels) == 64
  np.testing.assert_array_equal(images, again)
  assert not np.array_equal(images, other)
  assert not np.array_equal(images, first["image"])  # not the first ones
  everything, _, _ = runs.test_images(config, 10_000, seed=0)
  assert everything.shape[0] == 360  # the whole split when it is smaller


def test_a_pipe_in_a_claim_does_not_break_the_claims_table():
  results = {"claims": [{"id": "x", "claim": "mean |G_ii − 1| is lower",
                         "verdict": "holds", "evidence": [], "missing": []}],
             "verdict_rule": "r"}
  (row,) = [line for line in report.claims_table(results)
            if line.startswith("| `x`")]
  assert row == ("| `x` | mean \\|G_ii − 1\\| is lower | none | **holds** | "
                 "none |")
