"""Fine-tuning a pretrained vgg16 on ImageNet with Bort-S
(``recipes.imagenet_finetune``: Table 6's λ, a tenth of its lr, 30 epochs).

  python -m experiments.train --config experiments/configs/finetune_imagenet_vgg16_bort_sgd.py \
      --config.init_from=PATH --workdir DIR
"""

from bort_jax.train import recipes


def get_config():
  return recipes.imagenet_finetune("vgg16", "bort_sgd")
