"""`python -m experiments.reproduce` end to end on the real tfds mnist fixture
(tests/data/tfds: 48 training, 20 test images) at a narrow width and 2 steps,
and the recipe it trains."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))  # `experiments` is a folder, not installed

from bort_jax import report  # noqa: E402
from experiments import reproduce  # noqa: E402

FIXTURE = REPO / "tests" / "data" / "tfds"


def test_the_runs_are_table1_at_paper_width_and_40_epochs():
  configs = reproduce.run_configs("mnist", str(FIXTURE))
  assert list(configs) == ["lenet_sgd", "lenet_bort_sgd",
                           "acnn_small_mnist_sgd", "acnn_small_mnist_bort_sgd"]
  for name, config in configs.items():
    assert config.dataset == "mnist" and config.data_dir == str(FIXTURE)
    assert (config.num_epochs, config.num_train_steps) == (40.0, -1)
    assert (config.batch_size, config.learning_rate, config.weight_decay,
            config.momentum) == (256, 0.01, 0.01, 0.0)
    assert config.lam == (0.1 if name.endswith("bort_sgd") else 0.0)
    assert "width_multiplier" not in config.model_overrides
  narrow = reproduce.run_configs("mnist", str(FIXTURE), width=0.25,
                                 num_train_steps=3, batch_size=8)
  assert narrow["acnn_small_mnist_sgd"].model_overrides.to_dict() == {
      "width_multiplier": 0.25}
  assert narrow["lenet_sgd"].model_overrides.to_dict() == {"in_channels": 1}
  assert narrow["lenet_sgd"].batch_size == 8
  assert narrow["lenet_sgd"].num_train_steps == 3


@pytest.mark.slow
def test_reproduce_end_to_end_on_the_tfds_fixture(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.reproduce", "--dataset=mnist",
       f"--data_dir={FIXTURE}", f"--workdir={tmp_path}", "--width=0.125",
       "--num_train_steps=2", "--batch_size=16", "--noprogress",
       "--explain.num_images=8", "--explain.num_show=2", "--explain.k=8",
       "--explain.ig_steps=4", "--explain.xrai_steps=4",
       "--explain.guided_ig_steps=4", "--explain.rise_num_masks=20",
       "--explain.deletion_step=196", "--explain.n_clusters=2",
       "--explain.adversarial_pairs=2", "--explain.eval_batch_size=16"],
      cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
      capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr[-4000:]
  document = json.loads((tmp_path / "report.json").read_text())
  assert document["setup"]["dataset"] == {
      "name": "mnist", "num_train": 48, "num_test": 20,
      "image_shape": [28, 28, 1], "num_classes": 10}
  assert list(document["models"]) == ["lenet", "acnn_small_mnist_w0.125"]
  ids = [c["id"] for c in document["claims"]]
  assert ids == ["table1", "fig3a", "fig3b", "fig4", "table3",
                 "table3_logit", "fig6a", "fig6c"]
  assert all(c["verdict"] in report.VERDICTS for c in document["claims"])
  (table1,) = [c for c in document["claims"] if c["id"] == "table1"]
  assert [e["within_run"]["n"] for e in table1["evidence"]] == [20, 20]
  assert document["errors"] == []
  for model in document["models"].values():
    for opt, (run,) in model["runs"].items():
      assert (run["steps"], run["learning_rate"], run["weight_decay"]) == (
          2, 0.01, 0.01)
      assert run["lam"] == (0.1 if opt == "Bort-S" else 0.0)
  assert any("width ×0.125" in line for line in document["setup"]["recipe"])
  assert any("2 steps per run" in line for line in document["setup"]["recipe"])
  assert (tmp_path / "report.md").read_text().startswith(
      "# Bort, Table 1 and Section 4 reproduced on mnist\n\n## Claims")
