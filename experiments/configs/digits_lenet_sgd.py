"""Table 1's recipe with SGD for LeNet on the offline scikit-learn digits
(batch 64).
"""

from bort_jax.train import recipes


def get_config():
  return recipes.digits("lenet", "sgd")
