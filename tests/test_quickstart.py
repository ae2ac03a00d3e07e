"""`make demo` end to end with tiny settings, its report, and the notebook.

One module-scoped run of ``python -m experiments.quickstart`` (2 training
steps per model, 4 explained images) feeds the report and claims checks and the headless
execution of ``experiments/analysis.ipynb``; the rest are fast unit checks of
the report/plot helpers.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))  # `experiments` is a folder, not installed

from matplotlib.figure import Figure  # noqa: E402

from bort_jax import plots  # noqa: E402
from bort_jax import report  # noqa: E402
from bort_jax.report import analyses  # noqa: E402

TINY_FLAGS = (
    "--config.seeds=1",
    "--config.models=('lenet', 'acnn_small_mnist')",
    "--config.train.num_train_steps=2",
    "--config.train.eval_batch_size=360",
    "--config.train.progress=False",
    "--config.model_overrides.acnn_small_mnist.width_multiplier=0.25",
    "--config.explain.num_images=4",
    "--config.explain.num_show=2",
    "--config.explain.k=8",
    "--config.explain.ig_steps=4",
    "--config.explain.xrai_steps=4",
    "--config.explain.guided_ig_steps=4",
    "--config.explain.rise_num_masks=20",
    "--config.explain.deletion_step=196",
    "--config.explain.n_clusters=2",
    "--config.explain.adversarial_pairs=2",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("quickstart")
  env = dict(os.environ, PYTHONPATH=str(REPO))
  result = subprocess.run(
      [sys.executable, "-m", "experiments.quickstart", f"--workdir={workdir}",
       *TINY_FLAGS], cwd=REPO, env=env, capture_output=True, text=True,
      check=False)
  assert result.returncode == 0, result.stderr[-4000:]
  document = json.loads((workdir / "report.json").read_text())
  return workdir, document, (workdir / "report.md").read_text()


def _numbers(tree, path=""):
  if isinstance(tree, dict):
    for key, value in tree.items():
      yield from _numbers(value, f"{path}.{key}")
  elif isinstance(tree, list):
    for i, value in enumerate(tree):
      yield from _numbers(value, f"{path}[{i}]")
  else:
    yield path, tree


@pytest.mark.slow
def test_report_has_every_claim_section_model_and_method(demo):
  _, document, markdown = demo
  assert list(document)[0] == "claims"
  assert [c["id"] for c in document["claims"]] == [
      "table1", "fig3a", "fig3b", "fig4", "table3", "table3_logit", "fig6a",
      "fig6c"]
  for claim in document["claims"]:
    assert claim["verdict"] in report.VERDICTS, claim
    # A 2-step model may predict every source as its target's class: fig6c
    # then has no pair to count on it, listed as missing (never a pass).
    uncounted = claim["id"] == "fig6c" and claim["missing"] and all(
        "no pair counted" in m for m in claim["missing"])
    assert (claim["evidence"] and not claim["missing"]) or uncounted, claim
    assert not claim["missing"] or claim["verdict"] != "holds", claim
    for evidence in claim["evidence"]:
      if evidence["ci"] is None:  # one seed, within-run interval unusable
        continue
      low, high = evidence["ci"]
      assert low <= evidence["difference"] <= high, evidence
  claims_md = markdown[:markdown.index("\n## Setup\n")]
  assert claims_md.startswith("# Bort quickstart") and "## Claims" in claims_md
  for claim in document["claims"]:
    assert f"| `{claim['id']}` |" in claims_md
    assert f"**{claim['verdict']}**" in claims_md
  assert document["verdict_rule"] in claims_md
  assert list(document["sections"]) == list(report.REGISTRY)
  for title in document["sections"].values():
    assert f"\n## {title}\n" in markdown, title
  assert list(document["models"]) == ["lenet", "acnn_small_mnist_w0.25"]
  for key, model in document["models"].items():
    assert list(model["runs"]) == ["SGD", "Bort-S"], key
    assert set(model["figures"]) == {a.id for a in report.REGISTRY.values()
                                     if a.plot is not None}, key
    assert model["layer"] == "conv5" if key.startswith("acnn") else "conv2"
  # LeNet flattens into dense layers: no CAM row; ACNN-Small pools, so CAM.
  methods = {key: {row.split(" · ")[0] for row in m["sections"]["table3"]}
             for key, m in document["models"].items()}
  assert methods == {"lenet": {"IG", "RISE", "XRAI", "GuidedIG", "SAT"},
                     "acnn_small_mnist_w0.25": {"CAM", "IG", "RISE", "XRAI",
                                                "GuidedIG", "SAT"}}
  assert document["errors"] == []
  setup = document["setup"]
  assert setup["dataset"] == {"name": "digits", "num_train": 1437,
                              "num_test": 360, "image_shape": [28, 28, 1],
                              "num_classes": 10}
  assert setup["seeds"] == {"train": [0], "explain": 0}
  assert setup["explain"]["sat_gamma"] == report_gamma()
  assert set(setup["wall_time_s"]) == {"train", "explain", "total"}
  assert setup["versions"]["jax"] == "0.10.2"
  assert any("num_train_steps" in line for line in setup["recipe"])
  assert any("(`min_channels`)" in line for line in setup["recipe"])


def report_gamma():
  from bort_jax import explain  # pylint: disable=import-outside-toplevel
  return float(explain.DEFAULT_GAMMA)


@pytest.mark.slow
def test_every_number_is_finite(demo):
  _, document, markdown = demo
  values = list(_numbers(document))
  assert len(values) > 100
  for model in document["models"].values():
    for row in model["sections"]["fig6c"].values():
      # No rate, as no pair was counted (see the claims test).
      assert (row["success rate (%)"] is None) == (row["pairs counted"] == 0)
  for path, value in values:
    if path.endswith("success rate (%)") and value is None:
      continue
    if value is None and (".seeds." in path or path.endswith(".ci")):
      continue  # one seed: no interval over seeds; too few images: unusable
    assert value is not None, f"null at {path}"
    if isinstance(value, float):
      assert math.isfinite(value), f"{path} = {value}"
  assert not any("non-finite" in note for note in document["notes"])


@pytest.mark.slow
def test_numbers_come_from_the_runs(demo):
  workdir, document, markdown = demo
  for model in document["models"].values():
    for opt, runs in model["runs"].items():
      (run,) = runs
      records = (workdir / run["workdir"] / "metrics.jsonl").read_text()
      last = json.loads(records.strip().splitlines()[-1])
      assert run["top1"] == last["top1"] and run["steps"] == last["step"] == 2
      assert f"{100 * run['top1']:.2f}" in markdown
      assert model["sections"]["table1"][opt]["top-1 (%)"] == pytest.approx(
          100 * run["top1"], abs=1e-4)
    for scores in model["sections"]["table3"].values():
      assert 0.0 <= scores["deletion AUC"] <= 1.0
      assert 0.0 <= scores["insertion AUC"] <= 1.0
    for row in model["sections"]["fig6c"].values():  # 2 pairs (TINY_FLAGS)
      assert row["pairs counted"] + row[
          "pairs excluded (source already predicted as the target's "
          "class)"] == 2


@pytest.mark.slow
def test_every_figure_is_a_valid_png(demo):
  from PIL import Image  # pylint: disable=import-outside-toplevel

  workdir, document, markdown = demo
  for model in document["models"].values():
    for name, path in model["figures"].items():
      assert f"]({path})" in markdown, name
      data = (workdir / path).read_bytes()
      assert data.startswith(PNG_SIGNATURE), path
      with Image.open(workdir / path) as image:
        image.verify()
      with Image.open(workdir / path) as image:
        assert min(image.size) >= 200, (path, image.size)
        assert np.asarray(image.convert("L")).std() > 0, path  # not blank


@pytest.mark.slow
def test_notebook_runs_headless_on_the_demo_checkpoint(demo, tmp_path):
  import nbclient  # pylint: disable=import-outside-toplevel
  import nbformat  # pylint: disable=import-outside-toplevel

  workdir, _, _ = demo
  notebook = nbformat.read(REPO / "experiments" / "analysis.ipynb", as_version=4)
  os.environ.update(BORT_RUN_DIR=str(workdir / "acnn_small_mnist_bort_sgd_s0"),
                    BORT_NOTEBOOK_TINY="1", BORT_NOTEBOOK_OUT=str(tmp_path))
  try:
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}
                            ).execute()
  finally:
    for name in ("BORT_RUN_DIR", "BORT_NOTEBOOK_TINY", "BORT_NOTEBOOK_OUT"):
      os.environ.pop(name)
  outputs = [o for cell in notebook.cells if cell.cell_type == "code"
             for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) == 5
  text = "".join(o.get("text", "") for o in outputs)
  assert "trained with bort_sgd" in text and "adversarial success rate" in text
  assert "explained from conv5 with k = 8" in text  # model.explain_layer
  assert "loaded resnet50: predicted" in text  # a converted checkpoint


@pytest.mark.slow
def test_report_numbers_recompute_from_the_saved_runs(demo):
  """A Table 3 AUC (IG deletion) and a Fig. 3b ratio, recomputed here from
  the run's checkpoint and the 4 random test images with the TINY_FLAGS
  settings, equal what report.json says."""
  from bort_jax import explain, train  # pylint: disable=import-outside-toplevel

  workdir, document, _ = demo
  entry = document["models"]["acnn_small_mnist_w0.25"]
  (run,) = entry["runs"]["Bort-S"]
  model, config = train.load_trained(workdir / run["workdir"])
  images, _, _ = report.runs.test_images(config, 4, seed=0)  # as the report
  ig = explain.integrated_gradients(model, images, steps=4)
  auc = explain.deletion_insertion(model, images, ig, step=196)
  table3 = entry["sections"]["table3"]["IG · Bort-S"]
  np.testing.assert_allclose(table3["deletion AUC"],
                             float(np.mean(auc.deletion_auc)), rtol=1e-5)
  np.testing.assert_allclose(table3["insertion AUC"],
                             float(np.mean(auc.insertion_auc)), rtol=1e-5)
  # The authors' reading of the same curves (table3_logit).
  logit = entry["sections"]["table3_logit"]["IG · Bort-S"]
  for part in ("deletion", "insertion"):
    np.testing.assert_allclose(
        logit[f"{part} AUC"], float(np.mean(explain.normalized_auc(
            getattr(auc, f"{part}_logit"), part))), rtol=1e-5)
  ratios = explain.reconstruction_ratios(model, images)
  reported = {layer: by_opt["Bort-S"]
              for layer, by_opt in entry["sections"]["fig3b"].items()}
  assert set(reported) == set(ratios)
  for layer, ratio in ratios.items():
    np.testing.assert_allclose(reported[layer], float(np.mean(ratio)),
                               rtol=1e-5, err_msg=layer)


EXPLAIN_FLAGS = tuple(flag.replace("--config.explain.", "--explain.")
                      for flag in TINY_FLAGS if "explain." in flag)


@pytest.mark.slow
def test_explain_cli_discovers_runs_and_groups_them_by_model(demo, tmp_path):
  """A folder holding three of the demo's runs (as links), a folder without
  config.json and a stray file: the runs are found, grouped per model, and
  the baseline optimizer comes before Bort even though its folder sorts
  after."""
  workdir, _, _ = demo
  runs = tmp_path / "runs"
  runs.mkdir()
  for name in ("lenet_bort_sgd_s0", "lenet_sgd_s0",
               "acnn_small_mnist_bort_sgd_s0"):
    (runs / name).symlink_to(workdir / name)
  (runs / "notes").mkdir()
  (runs / "README").write_text("not a run")
  env = dict(os.environ, PYTHONPATH=str(REPO))
  out = tmp_path / "out"
  result = subprocess.run(
      [sys.executable, "-m", "experiments.explain", f"--workdir={runs}",
       f"--out={out}", *EXPLAIN_FLAGS], cwd=REPO, env=env,
      capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr[-4000:]
  document = json.loads((out / "report.json").read_text())
  models = document["models"]
  assert sorted(models) == ["acnn_small_mnist_w0.25", "lenet"]
  assert list(models["lenet"]["runs"]) == ["SGD", "Bort-S"]
  assert list(models["acnn_small_mnist_w0.25"]["runs"]) == ["Bort-S"]
  for key, name in [("lenet", "lenet_sgd_s0"), ("lenet", "lenet_bort_sgd_s0"),
                    ("acnn_small_mnist_w0.25", "acnn_small_mnist_bort_sgd_s0")]:
    found = [run["workdir"] for runs_of_opt in models[key]["runs"].values()
             for run in runs_of_opt]
    assert any(pathlib.Path(w).name == name for w in found), (key, found)

  # A folder with no run in it: a clear error, no report.
  empty = tmp_path / "empty"
  (empty / "notes").mkdir(parents=True)
  result = subprocess.run(
      [sys.executable, "-m", "experiments.explain", f"--workdir={empty}"],
      cwd=REPO, env=env, capture_output=True, text=True, check=False)
  assert result.returncode != 0
  assert "holds no run" in result.stderr and "config.json" in result.stderr
  assert not (empty / "report.json").exists()


# ------------------------------------------------------------ fast unit checks


def _minimal_results(value):
  return {"title": "t", "command": "c", "claims": [], "models": {},
          "notes": [], "errors": [], "sections": {}, "verdict_rule": "r",
          "setup": {"dataset": {"name": "d", "num_train": 1, "num_test": 1,
                                "image_shape": [2, 2, 1], "num_classes": 2},
                    "seeds": {"train": 0}, "wall_time_s": {"total": value},
                    "explain": {}, "versions": {}, "devices": "cpu"}}


def test_report_writes_non_finite_numbers_as_null_and_says_so():
  document = report.to_json(_minimal_results(np.float32("nan")))
  assert document["setup"]["wall_time_s"]["total"] is None
  assert document["notes"] == [
      "non-finite value at results.setup.wall_time_s.total (written as null)"]
  json.dumps(document, allow_nan=False)
  assert report.to_json(_minimal_results(np.float32(2.5)))["setup"][
      "wall_time_s"]["total"] == 2.5


def test_report_rejects_arrays_and_missing_figures(tmp_path):
  with pytest.raises(TypeError, match=r"results.setup.wall_time_s.total has "
                     "type ndarray"):
    report.to_json(_minimal_results(np.zeros(3)))
  results = _minimal_results(1.0)
  results["sections"] = {"fig4": "Fig. 4"}
  results["models"] = {"m": {"figures": {"fig4": "missing.png"}}}
  with pytest.raises(ValueError, match="'missing.png' must be relative"):
    report.write_report(results, tmp_path)
  results["models"] = {"m": {"figures": {"fig9": "x.png"}}}
  with pytest.raises(ValueError, match="figure 'fig9' has no section"):
    report.write_report(results, tmp_path)


def test_plots_return_figures_and_reject_bad_shapes_and_non_finite_values(
    tmp_path):
  images = np.zeros((2, 8, 8, 1))
  with pytest.raises(ValueError, match=r"maps\['SAT'\] must have shape "
                     r"\(2, 8, 8\) to match images; got \(2, 8, 9\)"):
    plots.plot_saliency_maps(images, {"SAT": np.zeros((2, 8, 9))})
  with pytest.raises(ValueError, match=r"rows\['Bort-S'\] contains non-finite"):
    plots.plot_reconstructions(images, {"Bort-S": images * np.nan})
  with pytest.raises(ValueError, match="C = 1 or 3"):
    plots.plot_reconstructions(np.zeros((2, 8, 8, 2)), {"SGD": images})
  figure = plots.plot_reconstruction_ratios({"SGD": {"conv1": [0.5]}})
  assert isinstance(figure, Figure)
  with pytest.raises(ValueError, match="must end in .png"):
    plots.save(figure, tmp_path / "d.jpg")
  assert not list(tmp_path.iterdir())
  plots.save(figure, tmp_path / "d.png")
  assert (tmp_path / "d.png").read_bytes().startswith(PNG_SIGNATURE)


def test_adversarial_pairs_are_disjoint_and_cross_classes():
  labels = np.array([3, 3, 3, 1, 3, 2, 5, 5, 0, 4, 7])
  sources, targets = analyses.adversarial_pairs(labels, 10)
  np.testing.assert_array_equal(sources, [2, 4, 8])
  np.testing.assert_array_equal(targets, [3, 5, 9])
  assert np.all(labels[sources] != labels[targets])
  # Each image in one pair at most: the pairs are independent units.
  assert len(np.union1d(sources, targets)) == 2 * len(sources)
  sources, targets = analyses.adversarial_pairs(labels, 2)
  np.testing.assert_array_equal(sources, [2, 4])
  sources, _ = analyses.adversarial_pairs(np.array([1, 1, 1]), 4)
  assert sources.size == 0  # no other class to target


def test_correlation_is_pearson_per_image():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 4, 4, 1))
  np.testing.assert_allclose(analyses.correlation(x, 2 * x + 1), 1.0)
  np.testing.assert_allclose(analyses.correlation(x, -x), -1.0)
  expected = [np.corrcoef(a.ravel(), b.ravel())[0, 1]
              for a, b in zip(x, x[::-1])]
  np.testing.assert_allclose(analyses.correlation(x, x[::-1]), expected)


def test_demo_models_have_the_documented_channels():
  # The demo trains LeNet at the paper's width, 5 seeds
  # (experiments/configs/quickstart.py); ACNN-Small, when added back, is
  # x0.125 with a floor of 8: conv1 keeps its paper width 8 and conv2 gets 8
  # instead of 3.
  import runpy

  import jax
  from flax import nnx

  from bort_jax import models

  config = runpy.run_path(
      str(REPO / "experiments" / "configs" / "quickstart.py"))["get_config"]()
  assert tuple(config.models) == ("lenet",) and config.seeds == 5
  expected = {"lenet": (6, 16), "acnn_small_mnist": (8, 8, 36, 108, 324)}
  assert sorted(config.model_overrides) == sorted(expected)
  for name, channels in expected.items():
    model = nnx.eval_shape(lambda name=name: models.create(
        name, num_classes=10, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")),
        **config.model_overrides[name]))
    assert tuple(model.conv(layer).kernel.shape[-1]
                 for layer in model.layer_names) == channels
