"""Training: configs, losses, schedules, end-to-end runs, resume, checkpoints."""

import glob
import hashlib
import importlib
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import bort_jax
from bort_jax import train
from bort_jax.train import losses, optimizers

REPO = pathlib.Path(__file__).resolve().parents[1]
ROW_FILES = sorted(
    pathlib.Path(p).stem for pattern in ("table1_*", "imagenet_*", "digits_*")
    for p in glob.glob(str(REPO / "experiments" / "configs" / f"{pattern}.py")))


# Reuse compiled steps across the runs of a test (same HLO, same binary).
pytestmark = pytest.mark.usefixtures("compilation_cache")


def get_config(row):
  return importlib.import_module(f"experiments.configs.{row}").get_config()


# ----------------------------------------------------------------- configs


def test_there_is_a_config_for_every_row_of_tables_1_and_2():
  table1 = [f"table1_{d}_{m}_{o}" for d in ("mnist", "cifar10")
            for m in ("lenet", "acnn_small") for o in ("sgd", "bort_sgd")]
  table2 = ([f"imagenet_vgg16_{o}" for o in ("sgd", "bort_sgd", "adamw",
                                              "bort_adamw")]
            + [f"imagenet_resnet50_{o}" for o in (
                "sgd", "bort_sgd", "adamw", "bort_adamw", "lamb", "bort_lamb")]
            + [f"imagenet_{m}_{o}" for m in ("deit_small", "swin_small")
               for o in ("adamw", "bort_adamw")])
  digits = [f"digits_{m}_{o}" for m in ("lenet", "acnn_small")
            for o in ("sgd", "bort_sgd")]
  assert sorted(table1 + table2 + digits) == ROW_FILES


@pytest.mark.parametrize("row", ROW_FILES)
def test_config_rows_are_complete_and_follow_the_paper(row):
  config = get_config(row)
  train.check_config(config)
  assert config.model in bort_jax.models.NAMES
  is_bort = config.optimizer.startswith("bort_")
  assert (config.lam > 0) == is_bort
  optimizers.create_optimizer(config, 0.1)  # every row builds its optimizer
  if row.startswith("table1"):  # Sec. 4.1.1
    assert (config.num_epochs, config.learning_rate, config.batch_size,
            config.weight_decay, config.momentum, config.lr_schedule) == (
                40, 0.01, 256, 0.01, 0.0, "constant")
    assert config.lam == (0.1 if is_bort else 0.0)
    assert not config.augment.to_dict()
  if row.startswith("imagenet"):  # Tables 6-7
    assert (config.num_epochs, config.lr_schedule, config.warmup_epochs) == (
        300, "cosine", 5)
    jsd = config.model in ("vgg16", "resnet50") and "lamb" not in row
    assert (config.loss == "jsd") == jsd
    assert (config.augment.aug_splits == 3) == (config.model in ("vgg16",
                                                                 "resnet50"))


# Tables 6 and 7 of the paper, typed here from the appendix (not read from
# recipes.py): row -> (λ_wd, λ, drop path, momentum, batch, lr) and
# (RandAugment, mixup, cutmix, erase, color jitter, aug splits, loss).
_PAPER_T6 = {
    "vgg16_sgd": (5e-5, 0, 0, 0.9, 1024, 0.05),
    "vgg16_bort_sgd": (2e-5, 1e-3, 0, 0.9, 1024, 0.05),
    "vgg16_adamw": (2e-5, 0, 0, 0, 1024, 1e-3),
    "vgg16_bort_adamw": (2e-5, 1e-4, 0, 0, 1024, 1e-3),
    "resnet50_sgd": (2e-5, 0, 0, 0.9, 1024, 0.05),
    "resnet50_bort_sgd": (2e-5, 1e-4, 0, 0.9, 1024, 0.05),
    "resnet50_adamw": (2e-5, 0, 0, 0, 1024, 1e-3),
    "resnet50_bort_adamw": (2e-5, 1e-4, 0, 0, 1024, 1e-3),
    "resnet50_lamb": (0.02, 0, 0, 0, 2048, 5e-3),
    "resnet50_bort_lamb": (2e-3, 2e-5, 0, 0, 2048, 5e-3),
    "deit_small_adamw": (0.05, 0, 0.1, 0, 1024, 5e-4),
    "deit_small_bort_adamw": (5e-3, 0.05, 0.1, 0, 1024, 5e-4),
    "swin_small_adamw": (0.05, 0, 0.3, 0, 1024, 5e-4),
    "swin_small_bort_adamw": (5e-3, 0.05, 0.3, 0, 1024, 5e-4),
}
_CNN_T7 = ("rand-m9-mstd0.5", 0, 0, 0.6, 0, 3, "jsd")
_LAMB_T7 = ("rand-m7-mstd0.5", 0.1, 1, 0, 0, 3, "bce")
_PAPER_T7 = {row: _CNN_T7 for row in _PAPER_T6 if row.startswith(("vgg", "res"))}
_PAPER_T7.update({
    "resnet50_lamb": _LAMB_T7, "resnet50_bort_lamb": _LAMB_T7,
    "deit_small_adamw": ("rand-m9-mstd0.5", 0.8, 1, 0.25, 0.3, 1, "ce"),
    "deit_small_bort_adamw": ("rand-m9-mstd0.5", 0.8, 1, 0.25, 0.3, 1, "ce"),
    "swin_small_adamw": ("rand-m9-mstd0.5", 0.8, 1, 0.25, 0.4, 1, "ce"),
    "swin_small_bort_adamw": ("rand-m9-mstd0.5", 0.8, 1, 0.25, 0.4, 1, "ce"),
})


@pytest.mark.parametrize("row", sorted(_PAPER_T6))
def test_imagenet_configs_carry_the_values_of_tables_6_and_7(row):
  config = get_config(f"imagenet_{row}")
  a = config.augment
  got6 = (config.weight_decay, config.lam, config.drop_path, config.momentum,
          config.batch_size, config.learning_rate)
  got7 = (a.rand_augment, a.mixup, a.cutmix, a.random_erasing, a.color_jitter,
          a.aug_splits, config.loss)
  assert got6 == pytest.approx(_PAPER_T6[row], rel=1e-12), got6
  assert (got7[0], got7[-1]) == (_PAPER_T7[row][0], _PAPER_T7[row][-1])
  assert got7[1:-1] == pytest.approx(_PAPER_T7[row][1:-1], rel=1e-12), got7
  assert (config.num_epochs, config.lr_schedule, config.warmup_epochs) == (
      300, "cosine", 5)


# ------------------------------------------------------------------ losses


def test_jsd_loss_matches_the_augmix_formula():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 4, 5)).astype(np.float32)
  targets = bort_jax.data.augment.smooth_one_hot(np.arange(4) % 5, 5, 0.1)
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  m = p.mean(0)
  kl = (p * (np.log(p) - np.log(m))).sum(-1).mean(0)
  ce = -(targets * np.log(p[0])).sum(-1)
  np.testing.assert_allclose(losses.jsd_cross_entropy(logits, targets),
                             ce + 12.0 * kl, rtol=1e-5)
  # Identical splits: the divergence vanishes, CE is left.
  same = np.repeat(logits[:1], 3, axis=0)
  np.testing.assert_allclose(losses.jsd_cross_entropy(same, targets), ce,
                             rtol=1e-5)


def test_bce_and_split_losses():
  logits = jnp.array([[[2.0, -1.0]], [[0.5, 0.5]]])  # (batch, splits, classes)
  targets = jnp.array([[1.0, 0.0], [0.3, 0.7]])
  x, t = np.asarray(logits[:, 0]), np.asarray(targets)
  manual = np.mean(np.logaddexp(0, x) - t * x, axis=-1)
  np.testing.assert_allclose(
      losses.classification_loss("bce", logits, targets), manual, rtol=1e-6)
  with pytest.raises(ValueError, match="jsd.*splits"):
    losses.classification_loss("jsd", logits, targets)
  with pytest.raises(ValueError, match="'hinge'.*ce"):
    losses.classification_loss("hinge", logits, targets)


# --------------------------------------------------------------- optimizer


def test_cosine_schedule_warms_up_then_decays_to_zero():
  config = get_config("imagenet_resnet50_sgd")
  schedule = optimizers.learning_rate_schedule(config, steps_per_epoch=10,
                                               total_steps=100)
  lr = np.array([schedule(s) for s in (0, 25, 50, 75, 100)])
  np.testing.assert_allclose(lr, [0.0, 0.025, 0.05, 0.025, 0.0], atol=1e-7)


def test_optimizer_errors_name_the_bad_value():
  config = get_config("table1_mnist_lenet_sgd")
  config.optimizer = "rmsprop"
  with pytest.raises(ValueError, match="'rmsprop'"):
    optimizers.create_optimizer(config, 0.1)
  config.optimizer, config.lam = "sgd", 0.5
  with pytest.raises(ValueError, match="lam=0.5"):
    optimizers.create_optimizer(config, 0.1)
  config.optimizer, config.lam, config.momentum = "adamw", 0.0, 0.9
  with pytest.raises(ValueError, match="momentum=0.9"):
    optimizers.create_optimizer(config, 0.1)


# -------------------------------------------------------------- end to end

NARROW = {
    "lenet": {"width_multiplier": 0.5},
    "acnn_small_mnist": {"width_multiplier": 0.05},
    "acnn_small_cifar": {"width_multiplier": 0.05},
    "vgg16": {"width_multiplier": 0.0625, "convs_per_stage": (1, 1, 1, 1, 1)},
    "resnet50": {"width_multiplier": 0.125, "stage_sizes": (1, 1, 1, 1)},
    "deit_small": {"width_multiplier": 0.125, "depth": 1, "image_size": 32,
                   "patch_size": 8},
    "swin_small": {"width_multiplier": 0.125, "depths": (1, 1, 1, 1),
                   "image_size": 32, "window_size": 2},
}


def tiny(row, **changes):
  """``row``'s config (or a config) with a narrow model, 2 steps, batches of
  16 (8 devices)."""
  config = get_config(row) if isinstance(row, str) else row
  config.model_overrides = {**config.model_overrides, **NARROW[config.model]}
  config.batch_size = 16
  config.eval_batch_size = 16
  config.num_train_steps = 2
  config.log_every_steps = 1
  config.progress = False
  if config.dataset == "imagenet2012":
    config.augment.crop_size, config.augment.eval_resize = 32, 36
  for key, value in changes.items():
    config[key] = value
  return config


def read_metrics(workdir):
  return [json.loads(line) for line in
          (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def params_of(workdir):
  model, _ = train.load_trained(workdir)
  from flax import nnx
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


# (row, model swapped in or None). Each family of Tables 1/2 once: Table 1
# (MNIST, CIFAR-10), digits, the CNN recipe (3 splits + JSD), the LAMB recipe
# (3 splits + BCE + Mixup/CutMix; run on a narrow VGG16, ResNet50 is slow to
# compile) and the ViT recipe (Mixup/CutMix + drop path).
E2E_ROWS = [("digits_lenet_bort_sgd", None),
            ("table1_mnist_acnn_small_bort_sgd", None),
            ("table1_cifar10_lenet_sgd", None),
            ("imagenet_vgg16_bort_adamw", None),
            ("imagenet_resnet50_bort_lamb", "vgg16"),
            ("imagenet_deit_small_bort_adamw", None)]
# Minutes each on 2 shared cores: run with BORT_SLOW_TESTS=1.
SLOW_E2E_ROWS = [("imagenet_resnet50_bort_sgd", None),
                 ("imagenet_resnet50_bort_lamb", None),
                 ("imagenet_swin_small_adamw", None)]


@pytest.mark.parametrize("row,model", E2E_ROWS + [
    pytest.param(*row, marks=[pytest.mark.slow, pytest.mark.skipif(
        not os.environ.get("BORT_SLOW_TESTS"),
        reason="ResNet50/Swin-S rows take minutes: set BORT_SLOW_TESTS=1")])
    for row in SLOW_E2E_ROWS])
def test_each_config_family_trains_two_steps_and_evaluates(row, model,
                                                           tmp_path):
  config = get_config(row)
  if model is not None:
    config.model, config.momentum = model, 0.0
  config = tiny(config)
  import tensorflow_datasets as tfds  # pinned: a missing package must fail
  with tfds.testing.mock_data(num_examples=32):
    final = train.train_and_evaluate(config, tmp_path)
  records = read_metrics(tmp_path)
  assert records[-1] == final and final["step"] == 2
  assert final["eval_examples"] == (360 if config.dataset == "digits" else 32)
  for key in ("train_loss", "eval_loss", "top1", "top5", "images_per_sec"):
    assert np.isfinite(final[key]), key
  assert 0 <= final["top1"] <= final["top5"] <= 1
  from flax import nnx
  from bort_jax.train import state as state_lib
  abstract = nnx.eval_shape(lambda: state_lib.create_model(config))
  kernels = jax.tree.leaves(bort_jax.default_mask(
      nnx.to_pure_dict(nnx.state(abstract, nnx.Param))))
  assert len(final["orthogonality"]["per_layer"]) == sum(kernels) > 0
  assert (tmp_path / "checkpoints" / "2").is_dir()
  assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


# ------------------------------------------------------------ evaluation


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
  """5 steps of LeNet on digits, a checkpoint every step, eval batches of 48
  (360 test images: 7 full batches and one padded with 24 masked rows)."""
  workdir = tmp_path_factory.mktemp("digits_run")
  config = tiny("digits_lenet_bort_sgd", num_train_steps=5,
                checkpoint_every_steps=1, eval_batch_size=48)
  return workdir, train.train_and_evaluate(config, workdir)


def test_evaluation_matches_numpy_metrics_of_the_loaded_model(digits_run):
  workdir, final = digits_run
  model, config = train.load_trained(workdir)
  images, labels = [], []
  for batch in bort_jax.data.load("digits", split=config.eval_split,
                                  batch_size=100, train=False):
    images.append(batch["image"][batch["mask"]])
    labels.append(batch["label"][batch["mask"]])
  images, labels = np.concatenate(images), np.concatenate(labels)
  logits = np.asarray(model(jnp.asarray(images)), np.float64)
  log_probs = logits - logits.max(1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
  rows = np.arange(len(labels))
  top5 = np.argsort(-logits, axis=1)[:, :5]
  assert final["eval_examples"] == len(labels) == 360
  np.testing.assert_allclose(final["eval_loss"],
                             -log_probs[rows, labels].mean(), rtol=1e-5)
  assert final["top1"] == pytest.approx(
      np.mean(logits.argmax(1) == labels), abs=1e-9)
  assert final["top5"] == pytest.approx(
      np.mean((top5 == labels[:, None]).any(1)), abs=1e-9)
  assert final["top1"] < final["top5"] < 1  # both informative after 5 steps


def test_only_the_three_newest_checkpoints_are_kept(digits_run):
  workdir, _ = digits_run
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                 if p.name.isdigit())
  assert steps == [3, 4, 5]


# ------------------------------------------------------- resume/checkpoints


def resume_config(num_train_steps):
  # Momentum and a dropout layer: optimizer state and the model's RNG stream
  # must both come back from the checkpoint for the runs to agree.
  config = tiny("table1_mnist_acnn_small_bort_sgd",
                num_train_steps=num_train_steps, momentum=0.9,
                checkpoint_every_steps=2)
  config.model = "acnn_base"
  config.model_overrides = {"width_multiplier": 0.05, "in_channels": 1,
                            "dropout_rate": 0.5}
  config.image_size = 128  # ACNN-Base needs >= 128 pixels for its 12 convs
  return config


def test_resume_gives_bitwise_the_same_parameters(tmp_path):
  import tensorflow_datasets as tfds  # pinned: a missing package must fail
  straight, halves = tmp_path / "straight", tmp_path / "halves"
  with tfds.testing.mock_data(num_examples=32):  # 2 steps per epoch
    train.train_and_evaluate(resume_config(4), straight)
    train.train_and_evaluate(resume_config(3), halves)  # "interrupted" at 3
    assert sorted(p.name for p in (halves / "checkpoints").iterdir()
                  if p.name.isdigit()) == ["2", "3"]
    final = train.train_and_evaluate(resume_config(4), halves,
                                     allow_config_change=True)
    # A finished run resumed again trains nothing and reports its last record.
    assert train.train_and_evaluate(resume_config(4), halves) == final
  assert final["step"] == 4
  assert [r["step"] for r in read_metrics(halves)] == [2, 3, 4]
  jax.tree.map(np.testing.assert_array_equal, params_of(straight),
               params_of(halves))
  # load_trained gives the model in eval mode: dropout 0.5 is off, so two
  # calls agree, and they differ once the model is put in train mode.
  model, config = train.load_trained(straight)
  x = jax.random.normal(jax.random.key(0), (2, 128, 128, 1))
  np.testing.assert_array_equal(model(x), model(x))
  model.train()
  assert not np.allclose(model(x), model(x))
  assert read_metrics(straight)[-1]["eval_loss"] == final["eval_loss"]


def _tree_digest(directory):
  return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()
                                                        ).hexdigest()
          for p in sorted(directory.rglob("*")) if p.is_file()}


def test_bad_checkpoints_raise_naming_the_file_and_stay_untouched(tmp_path):
  import tensorflow_datasets as tfds  # pinned: a missing package must fail
  with tfds.testing.mock_data(num_examples=32):
    check_bad_checkpoints(tmp_path)


def check_bad_checkpoints(tmp_path):
  train.train_and_evaluate(resume_config(2), tmp_path)
  checkpoints = tmp_path / "checkpoints"
  # Another model in the same workdir: refused before anything is written.
  wider = resume_config(4)
  wider.model_overrides = {**wider.model_overrides, "width_multiplier": 0.1}
  before = _tree_digest(checkpoints)
  with pytest.raises(train.CheckpointError, match="config.json.*model_overrides"):
    train.train_and_evaluate(wider, tmp_path)
  # Without config.json to compare against (allowed, the gap recorded),
  # the array shapes give it away.
  (tmp_path / "config.json").unlink()
  with pytest.raises(train.CheckpointError,
                     match=f"{checkpoints / '2'}.*shape"):
    train.train_and_evaluate(wider, tmp_path, allow_config_change=True)
  assert _tree_digest(checkpoints) == before
  # Corrupt array data: the error names the step directory.
  for path in (checkpoints / "2" / "state").rglob("*"):
    if path.is_file() and path.stat().st_size > 0 and "metadata" not in path.name:
      path.write_bytes(b"\0garbage" * 4)
  corrupt = _tree_digest(checkpoints)
  with pytest.raises(train.CheckpointError, match=str(checkpoints / "2")):
    train.train_and_evaluate(resume_config(4), tmp_path,
                             allow_config_change=True)
  assert _tree_digest(checkpoints) == corrupt


# ------------------------------------------------------------ multi-device


def test_eight_devices_data_parallel_and_fsdp_match_one_device():
  from bort_jax.train import mesh as mesh_lib
  from bort_jax.train import state as state_lib
  from bort_jax.train import step as step_lib
  config = tiny("digits_acnn_small_bort_sgd", momentum=0.9)
  config.model_overrides = {"width_multiplier": 0.04}  # conv5: 104 channels
  optimizer = optimizers.create_optimizer(config, 0.01)
  rng = np.random.default_rng(0)
  batches = [{"image": rng.normal(size=(16, 28, 28, 1)).astype(np.float32),
              "label": rng.integers(0, 10, 16).astype(np.int32),
              "mask": np.ones(16, bool)} for _ in range(3)]

  def run(devices, fsdp):
    mesh = mesh_lib.create_mesh(devices)
    state, defs, shardings = state_lib.create_train_state(
        lambda: state_lib.create_model(config), optimizer, mesh, fsdp)
    step = step_lib.make_train_step(
        graphdef=defs.train, optimizer=optimizer, loss_name="ce",
        num_classes=10, state_shardings=shardings,
        replicated=mesh_lib.replicated(mesh))
    for batch in batches:
      state, _ = step(state, bort_jax.data.shard_batch(batch, mesh))
    return state

  one = jax.device_get(run(jax.devices()[:1], fsdp=False).params)
  for fsdp in (False, True):
    eight = run(jax.devices(), fsdp)
    kernel = eight.params["conv5"]["kernel"]
    momentum = eight.opt_state[1][0].trace["conv5"]["kernel"]
    if fsdp:  # each device holds 13 of the 104 output channels
      assert kernel.addressable_shards[0].data.shape == (3, 3, 35, 13)
      assert momentum.sharding == kernel.sharding
    else:
      assert kernel.sharding.is_fully_replicated
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5,
                                                         atol=2e-6),
                 one, jax.device_get(eight.params))
