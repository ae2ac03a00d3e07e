"""Fine-tuning a pretrained deit_small on ImageNet with Bort-A
(``recipes.imagenet_finetune``: Table 6's λ, a tenth of its lr, 30 epochs).

  python -m experiments.train --config experiments/configs/finetune_imagenet_deit_small_bort_adamw.py \
      --config.init_from=PATH --workdir DIR
"""

from bort_jax.train import recipes


def get_config():
  return recipes.imagenet_finetune("deit_small", "bort_adamw")
