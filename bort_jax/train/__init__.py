"""Training: the paper's recipes on a device mesh, with checkpoints and metrics.

``train_and_evaluate(config, workdir)`` runs a config of ``experiments/configs``;
``load_trained(workdir)`` gives back its model in eval mode. The pieces
(``TrainState``, ``train_step``, ``create_optimizer``, ``create_mesh``, …) are
exported for custom loops.
"""

from bort_jax.train.checkpoint import CheckpointError, Checkpointer
from bort_jax.train.loop import load_trained, train_and_evaluate
from bort_jax.train.losses import (binary_cross_entropy, cross_entropy,
                                   jsd_cross_entropy, smoothed_one_hot)
from bort_jax.train.mesh import create_mesh, initialize_distributed
from bort_jax.train.optimizers import create_optimizer, learning_rate_schedule
from bort_jax.train.state import (ModelDefs, TrainState, create_model,
                                  create_train_state)
from bort_jax.train.step import eval_step, make_eval_step, make_train_step, train_step

__all__ = [
    "CheckpointError", "Checkpointer", "ModelDefs", "TrainState",
    "binary_cross_entropy", "create_mesh", "create_model", "create_optimizer",
    "create_train_state", "cross_entropy", "eval_step", "initialize_distributed",
    "jsd_cross_entropy", "learning_rate_schedule", "load_trained",
    "make_eval_step", "make_train_step", "smoothed_one_hot",
    "train_and_evaluate", "train_step",
]
