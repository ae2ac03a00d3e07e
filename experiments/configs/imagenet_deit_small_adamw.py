"""Table 2: DeiT-S on ImageNet with AdamW; hyper-parameters from Tables 6 and
7.
"""

from bort_jax.train import recipes


def get_config():
  return recipes.imagenet("deit_small", "adamw")
