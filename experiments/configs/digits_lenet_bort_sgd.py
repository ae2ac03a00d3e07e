"""Table 1's recipe with Bort-S for LeNet on the offline scikit-learn digits
(batch 64).
"""

from bort_jax.train import recipes


def get_config():
  return recipes.digits("lenet", "bort_sgd")
