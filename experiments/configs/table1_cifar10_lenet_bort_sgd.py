"""Table 1: LeNet on CIFAR-10 with Bort-S (40 epochs, lr 0.01, batch 256, wd
0.01, λ 0.1; no momentum: the paper gives none).
"""

from bort_jax.train import recipes


def get_config():
  return recipes.table1("cifar10", "lenet", "bort_sgd")
