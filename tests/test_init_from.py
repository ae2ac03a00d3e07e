"""``config.init_from``: a run that starts from another run's weights."""

import hashlib
import importlib
import json
import logging
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bort_jax import train
from bort_jax.train import init_from
from bort_jax.train import recipes

pytestmark = pytest.mark.usefixtures("compilation_cache")


def _config(optimizer, **changes):
  """LeNet on digits (Table 1's recipe), a few steps of batches of 64."""
  config = recipes.digits("lenet", optimizer)
  config.num_train_steps = 2
  config.eval_batch_size = 120
  config.log_every_steps = 2
  config.progress = False
  for key, value in changes.items():
    config[key] = value
  return config


def _records(workdir):
  return [json.loads(line) for line in
          (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("sgd")
  return workdir, train.train_and_evaluate(_config("sgd"), workdir)


def test_first_eval_equals_the_source_and_training_goes_on_with_bort(
    sgd_run, tmp_path, caplog):
  source, final = sgd_run
  runs = {}
  for optimizer in ("bort_sgd", "sgd"):
    workdir = tmp_path / optimizer
    train.train_and_evaluate(
        _config(optimizer, init_from=str(source), seed=1), workdir)
    runs[optimizer] = _records(workdir)
  first = runs["bort_sgd"][0]
  # Before any step: the source's weights and batch statistics, evaluated on
  # the same split (another seed: only the data order would differ).
  assert first["step"] == 0
  for key in ("top1", "top5", "eval_loss", "eval_examples"):
    assert first[key] == final[key], key
  assert first["orthogonality"] == final["orthogonality"]
  # Then it trains, and with Bort: from the same start and batches, λ > 0
  # leaves every kernel's Gram closer to the identity than λ = 0.
  last = {k: r[-1]["orthogonality"]["per_layer"] for k, r in runs.items()}
  assert runs["bort_sgd"][-1]["step"] == 2
  for layer, stats in last["bort_sgd"].items():
    assert stats["orth_residual"] < last["sgd"][layer]["orth_residual"], layer
  workdir = tmp_path / "bort_sgd"
  recorded = (workdir / init_from.RECORD_NAME).read_text()
  assert json.loads(recorded) == {
      "kind": "workdir", "path": str(source), "step": 2, "model": "lenet",
      "optimizer": "sgd", "lam": 0.0, "seed": 0}
  config = json.loads((workdir / "config.json").read_text())
  assert config["init_from"] == str(source)

  # A resumed run never reads init_from (here one that would fail to load):
  # its own checkpoint wins, and it says so.
  with caplog.at_level(logging.WARNING):
    train.train_and_evaluate(
        _config("bort_sgd", init_from=str(tmp_path / "missing"), seed=1,
                num_train_steps=3), workdir, allow_config_change=True)
  assert "init_from" in caplog.text and "own checkpoint at step 2" in (
      caplog.text)
  assert (workdir / init_from.RECORD_NAME).read_text() == recorded
  assert [r["step"] for r in _records(workdir)] == [0, 2, 3]


def test_bad_sources_are_refused_naming_what_is_wrong(sgd_run, tmp_path):
  source, _ = sgd_run
  with pytest.raises(FileNotFoundError, match="nowhere.*does not exist"):
    init_from.load_source(_config("sgd", init_from=str(tmp_path / "nowhere")))
  with pytest.raises(ValueError, match="without config.json"):
    init_from.load_source(_config("sgd", init_from=str(tmp_path)))
  wider = _config("sgd", init_from=str(source))
  wider.model_overrides = {"in_channels": 1, "width_multiplier": 2.0}
  with pytest.raises(ValueError, match="model_overrides=.*width_multiplier"):
    init_from.load_source(wider)
  other = _config("sgd", init_from=str(source), num_classes=7)
  with pytest.raises(ValueError, match="num_classes=10.*num_classes=7"):
    init_from.load_source(other)


def test_a_missing_or_misshaped_tensor_is_named():
  target = {"conv1": {"kernel": np.zeros((5, 5, 1, 6), np.float32),
                      "bias": np.zeros(6, np.float32)}}
  reshaped = {"conv1": {"kernel": np.zeros((5, 5, 1, 8)),
                        "bias": np.zeros(6)}}
  with pytest.raises(ValueError, match=r"\['conv1'\]\['kernel'\] has shape "
                     r"\(5, 5, 1, 8\), the model expects \(5, 5, 1, 6\)"):
    init_from._replace_leaves(target, reshaped, "parameters", "x.pth")
  renamed = {"conv1": {"weight": np.zeros((5, 5, 1, 6)), "bias": np.zeros(6)}}
  with pytest.raises(ValueError, match=r"\['conv1'\]\['kernel'\]\"\] missing "
                     r"and \[\"\['conv1'\]\['weight'\]\"\] unexpected"):
    init_from._replace_leaves(target, renamed, "parameters", "x.pth")
  loaded = init_from._replace_leaves(
      target, {"conv1": {"kernel": np.ones((5, 5, 1, 6)),
                         "bias": np.ones(6)}}, "parameters", "x.pth")
  assert loaded["conv1"]["kernel"].dtype == np.float32
  np.testing.assert_array_equal(loaded["conv1"]["bias"], 1.0)


@pytest.mark.parametrize("model,optimizer", recipes.FINETUNE_ROWS)
def test_imagenet_finetune_configs_need_init_from(model, optimizer):
  config = importlib.import_module(
      f"experiments.configs.finetune_imagenet_{model}_{optimizer}").get_config()
  row = recipes.imagenet(model, optimizer)
  assert (config.lam, config.weight_decay) == (row.lam, row.weight_decay)
  assert config.lam > 0
  assert config.learning_rate == pytest.approx(row.learning_rate / 10)
  assert config.num_epochs == 30
  with pytest.raises(ValueError, match="pass --config.init_from=PATH"):
    train.check_config(config)
  config.init_from = "/weights/resnet50.safetensors"
  train.check_config(config)


def test_batch_statistics_are_loaded_and_the_optimizer_starts_fresh(
    tmp_path, monkeypatch):
  """A narrow ResNet50 (BatchNorm everywhere) initialised from a source whose
  params and running statistics differ from the config's random init."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from bort_jax import models  # pylint: disable=import-outside-toplevel
  from bort_jax.train import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  from bort_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel
  config = recipes.imagenet("resnet50", "bort_sgd")
  config.model_overrides = {"width_multiplier": 1 / 16,
                            "stage_sizes": (1, 1, 1, 1)}
  config.num_classes, config.init_from = 10, "source.pth"
  source_model = models.create("resnet50", num_classes=10, rngs=nnx.Rngs(7),
                               **config.model_overrides)
  params, stats = init_from._split(source_model)
  stats = jax.tree.map(lambda x: np.asarray(x) + 0.5, stats)  # not the init's
  monkeypatch.setattr(init_from, "load_source", lambda _: init_from.Source(
      params, stats, {"kind": "checkpoint", "path": "source.pth"}))
  optimizer = optax.sgd(0.1, momentum=0.9)
  model_fn = lambda: state_lib.create_model(config)
  state, _, shardings = state_lib.create_train_state(
      model_fn, optimizer, mesh_lib.create_mesh(jax.devices()[:1]))
  state = state._replace(opt_state=jax.tree.map(jnp.ones_like,
                                                state.opt_state))
  loaded = init_from.initialize(config, tmp_path, state, shardings, optimizer,
                                model_fn)
  for want, have in ((params, loaded.params), (stats, loaded.model_state)):
    flat = init_from._by_path(have)
    for name, value in init_from._by_path(want).items():
      np.testing.assert_array_equal(flat[name], value, err_msg=name)
  assert all(np.all(np.asarray(x) == 0)
             for x in jax.tree.leaves(loaded.opt_state))  # fresh momentum
  assert json.loads((tmp_path / init_from.RECORD_NAME).read_text())[
      "kind"] == "checkpoint"


# Opt-in (like test_pretrained's Swin-S row): a full-width ResNet50 is built,
# exported, converted and trained one step; 257 s on the loaded 2-core machine.
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("BORT_SLOW_TESTS"),
                    reason="full-width ResNet50: set BORT_SLOW_TESTS=1")
def test_a_converted_torchvision_checkpoint_is_the_first_eval(tmp_path,
                                                             monkeypatch):
  """``init_from=`` a torchvision-layout ResNet50 file (exported from a
  model of ours with its own weights and running statistics): the run's eval
  before any step equals that checkpoint's accuracy and loss, computed here
  from ``models.load_pretrained``; then it takes a Bort-S step."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  from bort_jax import data, models  # pylint: disable=import-outside-toplevel
  source = models.create("resnet50", num_classes=1000, rngs=nnx.Rngs(3))
  state = models.export_pretrained("resnet50", source)
  rng = np.random.default_rng(0)
  for name in state:  # running statistics that are not the init's 0 / 1
    if name.endswith("running_mean"):
      state[name] = rng.normal(0, 0.1, state[name].shape).astype(np.float32)
    if name.endswith("running_var"):
      state[name] = rng.uniform(0.5, 2.0, state[name].shape).astype(np.float32)
  path = tmp_path / "resnet50.safetensors"
  save_file(state, str(path))

  config = recipes.imagenet_finetune("resnet50", "bort_sgd")
  config.data_dir = str(pathlib.Path(__file__).parent / "data" / "tfds")
  config.augment.crop_size, config.augment.eval_resize = 32, 36
  config.batch_size, config.eval_batch_size, config.num_train_steps = 2, 4, 1
  config.init_from, config.progress = str(path), False
  # One device: the fixture's 6 training images do not fill 8 devices.
  from bort_jax.train import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  one_device = mesh_lib.create_mesh(jax.devices()[:1])
  monkeypatch.setattr(mesh_lib, "create_mesh", lambda *_: one_device)
  train.train_and_evaluate(config, tmp_path / "run")
  first, last = _records(tmp_path / "run")

  model = models.load_pretrained("resnet50", str(path))
  # The eval split as the loop reads it (4 images in the fixture).
  batch = next(iter(data.load(
      config.dataset, split=config.eval_split, batch_size=4, train=False,
      seed=config.seed, data_dir=config.data_dir,
      augment=config.augment.to_dict())))
  keep = np.asarray(batch["mask"]).astype(bool)
  labels = np.asarray(batch["label"])[keep]
  logits = np.asarray(models.logits(model, batch["image"][keep]), np.float64)
  log_probs = logits - logits.max(1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
  assert first["eval_examples"] == len(labels) == 4
  correct = [logits.argmax(1) == labels]
  losses = [-log_probs[np.arange(len(labels)), labels]]
  assert first["step"] == 0 and last["step"] == 1
  assert first["top1"] == np.mean(np.concatenate(correct))
  np.testing.assert_allclose(first["eval_loss"],
                             np.mean(np.concatenate(losses)), rtol=1e-5)
  provenance = json.loads((tmp_path / "run" / init_from.RECORD_NAME)
                          .read_text())
  assert provenance["kind"] == "checkpoint"
  assert provenance["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
