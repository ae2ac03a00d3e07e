"""Table 2: ResNet50 on ImageNet with LAMB; hyper-parameters from Tables 6 and
7.
"""

from bort_jax.train import recipes


def get_config():
  return recipes.imagenet("resnet50", "lamb")
