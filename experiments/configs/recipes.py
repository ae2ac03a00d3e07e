"""The paper's training recipes now live in ``bort_jax.train.recipes``; this
module keeps ``from experiments.configs import recipes`` working for config
files written against it."""

from bort_jax.train.recipes import *  # noqa: F401,F403  pylint: disable=wildcard-import,unused-wildcard-import
