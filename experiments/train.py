r"""Train a config of experiments/configs on 1 device, N devices or N hosts.

  python -m experiments.train --config experiments/configs/<name>.py \
      --workdir DIR [--config.key=value ...] [--allow_config_change]

Keys of ``model_overrides`` and ``augment`` may be new to the config:
``--config.model_overrides.width_multiplier=0.5``, ``--config.augment.mixup=0.2``.

Multi-host: start the same command on every host with ``--distributed``
(JAX reads the cluster from SLURM / TPU / ``JAX_COORDINATOR_ADDRESS``), or name
it with ``--coordinator_address``, ``--num_processes`` and ``--process_id``.

Re-running with the same ``--workdir`` resumes from its latest checkpoint;
``--config.compilation_cache_dir=DIR`` lets the resumed run load its compiled
steps from DIR instead of compiling them again.
SIGINT/SIGTERM save a checkpoint at the next step and exit with status 75
(EX_TEMPFAIL: run the command again to resume); a second run on a busy
workdir, a changed config without ``--allow_config_change``, a checkpoint that
could not be written and a diverged run exit with status 1 and a message (a
diverged run's ends with the command that resumes from its best checkpoint:
``--config.restore_step=best`` and a lower learning rate). A bad flag or
config key exits with status 2 and one line. Third-party INFO logs (orbax,
jax) are off unless ``--verbosity=0``.
"""

import ast
import shlex
import sys

from absl import app, flags
from ml_collections import config_flags

from bort_jax.train import schema
from experiments import _cli

# Keys of these sub-dicts are added after parsing (config_flags can only
# override keys the config already has).
_OPEN_PREFIXES = tuple(f"--config.{name}." for name in schema.OPEN_DICTS)


def _literal(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # a bare word: a string


def split_open_overrides(argv):
  """``(overrides, rest)``: ``--config.<open dict>.<key>=<value>`` arguments
  as ``(dict name, key, value)``, and the other arguments for absl."""
  overrides, rest = [], []
  for arg in argv:
    if arg.startswith(_OPEN_PREFIXES) and "=" in arg:
      path, value = arg[len("--config."):].split("=", 1)
      name, key = path.split(".", 1)
      if "." in key:
        raise app.UsageError(f"{arg}: nested keys below config.{name} are not "
                             f"supported; use --config.{name}.KEY=VALUE.")
      overrides.append((name, key, _literal(value)))
    else:
      rest.append(arg)
  return overrides, rest


try:
  _OPEN_OVERRIDES, _ARGV = split_open_overrides(sys.argv)
except app.UsageError:  # reported in one line when the flags are parsed
  _OPEN_OVERRIDES, _ARGV = [], sys.argv
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file with get_config().",
    lock_config=False,  # the schema locks itself, leaving OPEN_DICTS open
    sys_argv=_ARGV)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics.jsonl, "
                               "TensorBoard events and config.json go here.")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume although the config differs from "
    "the workdir's config.json; the change is appended to "
    "config_history.jsonl.")
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

def resume_command(argv, resume: dict) -> str:
  """The command line ``argv`` with ``resume``'s config values (and
  ``--allow_config_change``) in place of its own."""
  names = [f"--config.{key}" for key in resume]
  kept, args = [], iter(argv[1:])
  for arg in args:
    if arg in names:  # "--config.key value": its value goes too
      next(args, None)
    elif not arg.startswith(tuple(f"{n}=" for n in names) + (
        "--allow_config_change", "--noallow_config_change")):
      kept.append(arg)
  return shlex.join([sys.executable, "-m", "experiments.train", *kept] + [
      f"--config.{key}={value}" for key, value in resume.items()] + [
          "--allow_config_change"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # After flag parsing: JAX starts here.
  from bort_jax import train  # pylint: disable=g-import-not-at-top
  from bort_jax.train import optimizers  # pylint: disable=g-import-not-at-top
  from bort_jax.train import preemption  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  for name, key, value in _OPEN_OVERRIDES:
    config[name][key] = value
  if _DISTRIBUTED.value or _COORDINATOR.value:
    train.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                 _PROCESS_ID.value)
  try:  # a bad value is a usage error, not a traceback
    schema.check_config(config)
    optimizers.create_optimizer(config, config.learning_rate)  # names, modes
  except ValueError as e:
    raise app.UsageError(f"--config: {e}") from e
  try:
    final = train.train_and_evaluate(
        config, _WORKDIR.value, allow_config_change=_ALLOW_CHANGE.value)
  except train.TrainingInterrupted as e:
    print(e, file=sys.stderr)
    sys.exit(preemption.EXIT_INTERRUPTED)
  except train.DivergenceError as e:
    resume = (f"\nResume from the best checkpoint with:\n  "
              f"{resume_command(sys.argv, e.resume)}" if e.resume else "")
    sys.exit(f"{type(e).__name__}: {e}{resume}")
  except (train.WorkdirBusyError, train.ConfigChangeError,
          train.CheckpointSaveError) as e:
    sys.exit(f"{type(e).__name__}: {e}")
  summary = {k: v for k, v in final.items() if k != "orthogonality"}
  print(summary)


if __name__ == "__main__":
  _cli.run(main, parse=lambda argv: flags.FLAGS(split_open_overrides(argv)[1]))
