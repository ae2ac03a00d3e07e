"""Table 2: Swin-S on ImageNet with Bort-A; hyper-parameters from Tables 6 and
7.
"""

from bort_jax.train import recipes


def get_config():
  return recipes.imagenet("swin_small", "bort_adamw")
