"""Table 2: VGG16 on ImageNet with Bort-S; hyper-parameters from Tables 6 and
7.
"""

from bort_jax.train import recipes


def get_config():
  return recipes.imagenet("vgg16", "bort_sgd")
