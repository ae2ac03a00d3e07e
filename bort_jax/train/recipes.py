"""The paper's training recipes as ``ml_collections`` configs.

Every file ``experiments/configs/<row>.py`` is one row of Table 1, of Table 2
(hyper-parameters from Tables 6 and 7), or of the offline ``digits`` runs, and
returns one of the functions below from its ``get_config()``. Every config has
exactly the fields of ``bort_jax.train.default_config()``, and no others: its
top level is locked, ``model_overrides`` and ``augment`` are open.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from bort_jax.train import schema


def base() -> ml_collections.ConfigDict:
  """All fields with neutral defaults (the one schema of the training config,
  ``bort_jax.train.schema``); the recipes below override them."""
  return schema.default_config()


_TABLE1_MODELS = {
    ("mnist", "lenet"): ("lenet", {"in_channels": 1}),
    ("cifar10", "lenet"): ("lenet", {"in_channels": 3}),
    ("mnist", "acnn_small"): ("acnn_small_mnist", {}),
    ("cifar10", "acnn_small"): ("acnn_small_cifar", {}),
    ("digits", "lenet"): ("lenet", {"in_channels": 1}),
    ("digits", "acnn_small"): ("acnn_small_mnist", {}),
}


def table1(dataset: str, model: str, optimizer: str) -> ml_collections.ConfigDict:
  """Table 1 (Sec. 4.1.1): 40 epochs, lr 0.01 constant, batch 256, wd 0.01,
  λ 0.1 for Bort-S, no augmentation.

  The paper gives no momentum for these runs, so momentum is 0 (plain SGD).
  """
  if optimizer not in ("sgd", "bort_sgd"):
    raise ValueError(f"Table 1 has optimizer 'sgd' or 'bort_sgd', got "
                     f"{optimizer!r}.")
  config = base()
  config.dataset = dataset
  config.model, overrides = _TABLE1_MODELS[(dataset, model)]
  config.model_overrides = dict(overrides)
  config.num_classes = 10
  config.optimizer = optimizer
  config.learning_rate = 0.01
  config.lr_schedule = "constant"
  config.weight_decay = 0.01
  config.lam = 0.1 if optimizer == "bort_sgd" else 0.0
  config.momentum = 0.0
  config.batch_size = 256
  config.eval_batch_size = 256
  config.num_epochs = 40.0
  config.checkpoint_every_steps = 1000
  return config


def digits(model: str, optimizer: str) -> ml_collections.ConfigDict:
  """Table 1's recipe on the offline scikit-learn digits (1437 train images).

  Same optimizer settings; batch 64 instead of 256 so an epoch has 22 steps
  rather than 5, everything else as Table 1.
  """
  config = table1("digits", model, optimizer)
  config.batch_size = 64
  config.eval_batch_size = 64
  config.log_every_steps = 10
  config.checkpoint_every_steps = 200
  return config


# Table 6: (λ_wd, λ, drop path, momentum, batch size, lr) per (model, optimizer).
_TABLE6 = {
    ("vgg16", "sgd"): (5e-5, 0.0, 0.0, 0.9, 1024, 0.05),
    ("vgg16", "bort_sgd"): (2e-5, 1e-3, 0.0, 0.9, 1024, 0.05),
    ("vgg16", "adamw"): (2e-5, 0.0, 0.0, 0.0, 1024, 1e-3),
    ("vgg16", "bort_adamw"): (2e-5, 1e-4, 0.0, 0.0, 1024, 1e-3),
    ("resnet50", "sgd"): (2e-5, 0.0, 0.0, 0.9, 1024, 0.05),
    ("resnet50", "bort_sgd"): (2e-5, 1e-4, 0.0, 0.9, 1024, 0.05),
    ("resnet50", "adamw"): (2e-5, 0.0, 0.0, 0.0, 1024, 1e-3),
    ("resnet50", "bort_adamw"): (2e-5, 1e-4, 0.0, 0.0, 1024, 1e-3),
    ("resnet50", "lamb"): (0.02, 0.0, 0.0, 0.0, 2048, 5e-3),
    ("resnet50", "bort_lamb"): (2e-3, 2e-5, 0.0, 0.0, 2048, 5e-3),
    ("deit_small", "adamw"): (0.05, 0.0, 0.1, 0.0, 1024, 5e-4),
    ("deit_small", "bort_adamw"): (5e-3, 0.05, 0.1, 0.0, 1024, 5e-4),
    ("swin_small", "adamw"): (0.05, 0.0, 0.3, 0.0, 1024, 5e-4),
    ("swin_small", "bort_adamw"): (5e-3, 0.05, 0.3, 0.0, 1024, 5e-4),
}

# Table 7: (RandAugment, mixup, cutmix, random erasing, color jitter,
# aug splits, loss) per (model, optimizer family).
_TABLE7 = {
    "cnn": ("rand-m9-mstd0.5", 0.0, 0.0, 0.6, 0.0, 3, "jsd"),
    "cnn_lamb": ("rand-m7-mstd0.5", 0.1, 1.0, 0.0, 0.0, 3, "bce"),
    "deit_small": ("rand-m9-mstd0.5", 0.8, 1.0, 0.25, 0.3, 1, "ce"),
    "swin_small": ("rand-m9-mstd0.5", 0.8, 1.0, 0.25, 0.4, 1, "ce"),
}

IMAGENET_ROWS = tuple(_TABLE6)


def imagenet(model: str, optimizer: str) -> ml_collections.ConfigDict:
  """A row of Table 2 with Tables 6–7: 300 epochs, cosine, 5 warm-up epochs.

  Label smoothing 0.1 is not in Table 7; it is the default of timm (the CNN
  recipe) and of DeiT/Swin. Where Sec. 4.1.2's text and Table 6 differ
  (VGG16 SGD/Bort-S weight decay and λ, ResNet50 LAMB weight decay), Table 6
  is used.
  """
  if (model, optimizer) not in _TABLE6:
    raise ValueError(f"Table 2 has no row ({model!r}, {optimizer!r}); rows: "
                     f"{IMAGENET_ROWS}.")
  weight_decay, lam, drop_path, momentum, batch_size, lr = _TABLE6[
      (model, optimizer)]
  if model in ("deit_small", "swin_small"):
    family = model
  else:
    family = "cnn_lamb" if optimizer.endswith("lamb") else "cnn"
  rand_augment, mixup, cutmix, erasing, color, splits, loss = _TABLE7[family]

  config = base()
  config.dataset = "imagenet2012"
  config.eval_split = "validation"
  config.model = model
  config.num_classes = 1000
  config.optimizer = optimizer
  config.learning_rate = lr
  config.lr_schedule = "cosine"
  config.warmup_epochs = 5.0
  config.lam = lam
  config.weight_decay = weight_decay
  config.momentum = momentum
  config.batch_size = batch_size
  config.eval_batch_size = 1024
  config.num_epochs = 300.0
  config.loss = loss
  config.drop_path = drop_path
  config.checkpoint_every_steps = 2000
  config.log_every_steps = 100
  # float32 reproduces the paper's numerics; on GPU/TPU pass
  # --config.compute_dtype=bfloat16 for mixed precision (float32 params and
  # optimizer state, bf16 convs/matmuls: BENCHMARKS.md, "Mixed precision").
  config.compute_dtype = "float32"
  config.augment = ml_collections.ConfigDict(dict(
      random_resized_crop=True, flip=True, rand_augment=rand_augment,
      mixup=mixup, cutmix=cutmix, mixup_switch_prob=0.5,
      random_erasing=erasing, color_jitter=color, label_smoothing=0.1,
      aug_splits=splits, crop_size=224, eval_resize=256))
  return config


# Fine-tuning a pretrained ImageNet network with Bort: (model, optimizer) ->
# the Table 2 row it starts from. Bort-S only for the CNNs (as in Table 6).
FINETUNE_ROWS = (("resnet50", "bort_sgd"), ("resnet50", "bort_adamw"),
                 ("vgg16", "bort_sgd"), ("vgg16", "bort_adamw"),
                 ("deit_small", "bort_adamw"), ("swin_small", "bort_adamw"))


def imagenet_finetune(model: str, optimizer: str) -> ml_collections.ConfigDict:
  """Bort fine-tuning of a pretrained torchvision / timm network on ImageNet.

  Requires ``--config.init_from=PATH`` (a ``.pth`` / ``.safetensors`` file or
  a bort_jax workdir); without it the config is refused, never trained from
  random init. The Table 2 row of ``(model, optimizer)`` with:

  - λ: Table 6's (Bort-S 1e-4 ResNet50, 1e-3 VGG16; Bort-A 1e-4 for the CNNs,
    0.05 for DeiT-S / Swin-S), the value the paper trained these networks
    with, so the constraint is the one the paper's accuracies were obtained
    under.
  - learning rate: one tenth of Table 6's peak (usual for fine-tuning a
    converged network), cosine to 0 after 1 warm-up epoch, weight decay as
    Table 6.
  - 30 epochs: a tenth of the 300-epoch budget. Bort's pull per step is
    ``lr · λ · Δ(W)`` (Bort-S and Bort-A alike), so it is 10x weaker per step
    than in from-scratch training, over 10x fewer steps. How many epochs
    Bort fine-tuning needs to reach from-scratch Bort's orthogonality is
    measured at CPU scale in docs/finetune.md (digits, at the pretraining
    lr); it has not been measured on ImageNet.
  """
  if (model, optimizer) not in FINETUNE_ROWS:
    raise ValueError(f"no fine-tuning row ({model!r}, {optimizer!r}); rows: "
                     f"{FINETUNE_ROWS}.")
  config = imagenet(model, optimizer)
  config.learning_rate = config.learning_rate / 10
  config.warmup_epochs = 1.0
  config.num_epochs = 30.0
  config.init_from = config_dict.placeholder(str)  # required (check_config)
  return config

