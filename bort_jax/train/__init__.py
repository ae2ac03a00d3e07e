"""Training: the paper's recipes on a device mesh, with checkpoints and metrics.

``train_and_evaluate(config, workdir)`` runs a config of ``experiments/configs``;
``load_trained(workdir)`` gives back its model in eval mode. The pieces
(``TrainState``, ``train_step``, ``create_optimizer``, ``create_mesh``,
``Prefetcher``, …) are
exported for custom loops.
"""

from bort_jax.train.checkpoint import (CheckpointError, Checkpointer,
                                       CheckpointSaveError, DivergenceError)
from bort_jax.train.loop import load_trained, train_and_evaluate
from bort_jax.train.losses import (binary_cross_entropy, cross_entropy,
                                   jsd_cross_entropy)
from bort_jax.train.mesh import create_mesh, initialize_distributed
from bort_jax.train.optimizers import create_optimizer, learning_rate_schedule
from bort_jax.train.prefetch import Prefetcher
from bort_jax.train.preemption import TrainingInterrupted
from bort_jax.train.provenance import ConfigChangeError
from bort_jax.train.schema import check_config, default_config
from bort_jax.train.state import (ModelDefs, TrainState, create_model,
                                  create_train_state)
from bort_jax.train.step import eval_step, make_eval_step, make_train_step, train_step
from bort_jax.train.workdir_lock import WorkdirBusyError

__all__ = [
    "CheckpointError", "CheckpointSaveError", "Checkpointer", "ConfigChangeError", "DivergenceError",
    "ModelDefs", "Prefetcher", "TrainState", "TrainingInterrupted", "WorkdirBusyError",
    "binary_cross_entropy", "check_config", "create_mesh", "create_model",
    "create_optimizer", "create_train_state", "cross_entropy",
    "default_config", "eval_step", "initialize_distributed",
    "jsd_cross_entropy", "learning_rate_schedule", "load_trained",
    "make_eval_step", "make_train_step", "train_and_evaluate", "train_step",
]
