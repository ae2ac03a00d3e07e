"""Train a config of experiments/configs on 1 device, N devices or N hosts.

  python -m experiments.train --config experiments/configs/<name>.py \
      --workdir DIR [--config.key=value ...]

Multi-host: start the same command on every host with ``--distributed``
(JAX reads the cluster from SLURM / TPU / ``JAX_COORDINATOR_ADDRESS``), or name
it with ``--coordinator_address``, ``--num_processes`` and ``--process_id``.
Re-running with the same ``--workdir`` resumes from its latest checkpoint.
"""

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file with get_config().",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics.jsonl, "
                               "TensorBoard events and config.json go here.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (multi-host).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (implies "
    "--distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Number of processes (multi-host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "This process's index (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from bort_jax import train  # after flag parsing: JAX starts here

  if _DISTRIBUTED.value or _COORDINATOR.value:
    train.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                 _PROCESS_ID.value)
  final = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  summary = {k: v for k, v in final.items() if k != "orthogonality"}
  print(summary)


if __name__ == "__main__":
  app.run(main)
