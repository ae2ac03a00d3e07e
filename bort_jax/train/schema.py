"""The training config: every field ``train_and_evaluate`` reads, with defaults.

``default_config()`` is the one list of fields; the recipes of
``experiments/configs`` start from it and ``check_config`` refuses a config
with a field missing or unknown, so the loop reads every field directly.
"""

from __future__ import annotations

import math

import ml_collections
from ml_collections import config_dict

# Sub-dicts whose keys depend on the model / augmentation: left unlocked so a
# recipe or the CLI can add keys (``--config.model_overrides.width_multiplier``).
OPEN_DICTS = ("model_overrides", "augment")

COMPUTE_DTYPES = ("float32", "bfloat16")

# Fields that change the parameter tree: a checkpoint written under other
# values cannot be resumed, even with ``allow_config_change``.
MODEL_FIELDS = ("model", "model_overrides", "num_classes", "drop_path",
                "optimizer")

# Fields that do not change what is trained: free to differ on resume.
OPERATIONAL_FIELDS = ("data_dir", "eval_batch_size", "checkpoint_every_steps",
                      "log_every_steps", "progress", "diagnostics_every_epochs",
                      "prefetch_batches", "compilation_cache_dir",
                      "restore_step",
                      # read only by a fresh workdir (train/init_from.py)
                      "init_from")


def default_config() -> ml_collections.ConfigDict:
  """All fields with neutral defaults, locked except ``OPEN_DICTS``."""
  config = ml_collections.ConfigDict()
  config.dataset = "digits"           # a bort_jax.data.load name
  config.data_dir = config_dict.placeholder(str)  # None: TFDS_DATA_DIR
  config.eval_split = "test"
  config.image_size = config_dict.placeholder(int)  # dataset="synthetic"
  config.model = "lenet"              # a bort_jax.models.create name
  config.model_overrides = ml_collections.ConfigDict()
  config.num_classes = 10
  config.optimizer = "sgd"
  config.learning_rate = 0.01
  config.lr_schedule = "constant"
  config.warmup_epochs = 0.0
  config.lam = 0.0                    # Bort's λ (Eq. 10); 0 for base optimizers
  config.bort_mode = "l2-full"        # bort_jax.bort's mode
  # A number or "ada" (the squared mean row norm, held for the step).
  config.bort_amplitude = config_dict.FieldReference(1.0, field_type=object)
  config.weight_decay = 0.0
  config.momentum = 0.0               # SGD only
  config.batch_size = 256             # global, over all devices and hosts
  config.eval_batch_size = 256
  config.num_epochs = 1.0
  config.num_train_steps = -1         # -1: num_epochs · steps_per_epoch
  config.seed = 0
  # Start from trained weights: a bort_jax workdir or a torchvision/timm
  # checkpoint file ("" = random init; bort_jax/train/init_from.py).
  config.init_from = ""
  config.augment = ml_collections.ConfigDict()  # bort_jax.data augment knobs
  config.loss = "ce"
  config.drop_path = 0.0
  # Computation dtype of the model's convs/matmuls/norms ("float32" or
  # "bfloat16"); parameters, optimizer state, norm statistics, softmax and
  # loss stay float32 (bort_jax.models.create's dtype).
  config.compute_dtype = "float32"
  config.checkpoint_every_steps = 1000
  config.log_every_steps = 50
  # orthogonality_stats in the epoch record every this many epochs (and at
  # the last step); the other records have no "orthogonality".
  config.diagnostics_every_epochs = 1
  config.fsdp = False
  # Batches a background thread puts on the devices ahead of the step (train
  # and eval); 0 loads each batch inline when the step needs it; -1 (auto):
  # 2 on GPUs/TPUs, 0 when the devices are the host's CPU cores, which the
  # thread would take from the step (see prefetch.depth_for).
  config.prefetch_batches = -1
  # JAX's persistent compilation cache for the run ("" = off): a resumed run
  # loads its compiled steps from here instead of compiling them again.
  config.compilation_cache_dir = ""
  config.progress = True
  # The checkpoint a resumed run starts from: "latest", "best" (the lowest
  # loss on the first eval batch, kept beside the 3 newest) or a kept step.
  # The checkpoints newer than it are deleted at the run's first checkpoint.
  config.restore_step = config_dict.FieldReference("latest", field_type=object)
  return lock(config)


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Locks ``config`` (no new top-level fields) but not its ``OPEN_DICTS``."""
  config.lock()
  for name in OPEN_DICTS:
    config[name].unlock()
  return config


def from_json(values: dict) -> ml_collections.ConfigDict:
  """A ``config.json`` → config; fields it predates get their defaults."""
  config = default_config()
  unknown = sorted(set(values) - set(config))
  if unknown:
    raise ValueError(f"config.json has fields {unknown} that the training "
                     f"config does not have ({sorted(config)}).")
  config.unlock()
  config.update(values)
  return lock(config)


def _number(config, name) -> float:
  value = config[name]
  if isinstance(value, bool) or not isinstance(value, (int, float)) or (
      not math.isfinite(value)):
    raise ValueError(f"{name}={value!r} must be a finite number.")
  return float(value)


def check_config(config) -> None:
  """Raises ``ValueError`` naming the first missing, unknown or bad field."""
  fields = set(default_config())
  missing, unknown = sorted(fields - set(config)), sorted(set(config) - fields)
  if missing or unknown:
    raise ValueError(f"config lacks the fields {missing} and has unknown "
                     f"fields {unknown}; a training config has exactly "
                     f"{sorted(fields)} (bort_jax.train.default_config()).")
  for name in ("batch_size", "eval_batch_size", "log_every_steps",
               "checkpoint_every_steps", "diagnostics_every_epochs"):
    if int(config[name]) < 1:
      raise ValueError(f"{name}={config[name]!r} must be >= 1.")
  if isinstance(config.prefetch_batches, bool) or not isinstance(
      config.prefetch_batches, int) or config.prefetch_batches < -1:
    raise ValueError(f"prefetch_batches={config.prefetch_batches!r} must be "
                     f"an int >= -1 (0: no prefetch, -1: auto).")
  for name in ("learning_rate", "lam", "weight_decay", "momentum",
               "warmup_epochs", "num_epochs", "drop_path"):
    _number(config, name)
  for name in ("lam", "weight_decay", "momentum"):
    if config[name] < 0:
      raise ValueError(f"{name}={config[name]!r} must be >= 0.")
  amplitude = config.bort_amplitude
  if amplitude != "ada":
    if isinstance(amplitude, str):
      raise ValueError(f"bort_amplitude={amplitude!r} must be a number > 0 "
                       f"or 'ada'.")
    if _number(config, "bort_amplitude") <= 0:
      raise ValueError(f"bort_amplitude={amplitude!r} must be > 0 or 'ada'.")
  if config.init_from is None:
    raise ValueError("init_from=None: this config fine-tunes a trained network;"
                     " pass --config.init_from=PATH (a bort_jax workdir or a "
                     ".pth / .safetensors checkpoint file).")
  if config.compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f"compute_dtype={config.compute_dtype!r} must be one of "
                     f"{COMPUTE_DTYPES}.")
  steps = config.num_train_steps
  if isinstance(steps, bool) or not isinstance(steps, int) or not (
      steps == -1 or steps > 0):
    raise ValueError(f"num_train_steps={steps!r} must be -1 (num_epochs "
                     f"epochs) or an int > 0.")
  restore = config.restore_step
  if isinstance(restore, str) and restore.isdigit():
    restore = int(restore)
  if restore not in ("latest", "best") and (
      isinstance(restore, bool) or not isinstance(restore, int)
      or restore < 0):
    raise ValueError(f"restore_step={restore!r} must be 'latest', 'best' or "
                     f"the step (an int >= 0) of a kept checkpoint.")
  if config.num_train_steps < 1 and config.num_epochs <= 0:
    raise ValueError(f"num_epochs={config.num_epochs!r} must be > 0 when "
                     f"num_train_steps={config.num_train_steps!r} is -1.")
