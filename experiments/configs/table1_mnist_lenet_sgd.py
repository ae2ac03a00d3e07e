"""Table 1: LeNet on MNIST with SGD (40 epochs, lr 0.01, batch 256, wd 0.01; no
momentum: the paper gives none).
"""

from bort_jax.train import recipes


def get_config():
  return recipes.table1("mnist", "lenet", "sgd")
