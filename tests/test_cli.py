"""How every script behaves on the command line (experiments/_cli.py): --help
says what the script is for and exits 0, a bad flag or config key is one line
on stderr and status 2, third-party INFO logs only with --verbosity=0."""

import importlib
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = REPO / "experiments" / "configs" / "digits_lenet_bort_sgd.py"
ENTRY_POINTS = ["experiments.train", "experiments.explain",
                "experiments.quickstart", "experiments.reproduce"]
# Benchmarks and studies are argparse mains(argv): parsed in this process.
ARGPARSE_MAINS = sorted(
    f"{folder}.{path.stem}" for folder in ("benchmarks", "studies")
    for path in (REPO / folder).glob("*.py")
    if "def main(" in path.read_text())
# An INFO line: absl's prefix (severity, date, time, thread, file:line]) or
# Python logging's default format.
INFO_LINE = re.compile(r"^(I\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]|INFO:)",
                       re.M)


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def _purpose(module: str) -> str:
  """The first line of a module's docstring, read without importing it."""
  source = (REPO / (module.replace(".", "/") + ".py")).read_text()
  doc = source.split('"""', 2)[1]
  return doc.strip().splitlines()[0].strip()


def test_the_entry_points_help_exits_0_and_says_what_the_script_is_for():
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  processes = {m: subprocess.Popen([sys.executable, "-m", m, "--help"],
                                   cwd=REPO, env=env, text=True,
                                   stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
               for m in ENTRY_POINTS}
  for module, process in processes.items():
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, (module, err[-2000:])
    assert _purpose(module) in out, (module, out[:500])
    assert "--verbosity: log level of absl, jax, orbax" in out, module


@pytest.mark.parametrize("module", ARGPARSE_MAINS)
def test_benchmark_and_study_help_exits_0_and_says_what_it_is_for(
    module, capsys):
  with pytest.raises(SystemExit) as exited:
    importlib.import_module(module).main(["--help"])
  assert exited.value.code == 0
  out = capsys.readouterr().out
  assert " ".join(_purpose(module).split()) in " ".join(out.split()), module
  assert "--verbosity" in out


def test_a_bad_benchmark_flag_is_one_line_and_status_2(capsys):
  with pytest.raises(SystemExit) as exited:
    importlib.import_module("benchmarks.bench_train").main(["--stepz=3"])
  assert exited.value.code == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "unrecognized arguments: --stepz=3" in err


def test_a_config_typo_and_bad_values_are_one_line_and_status_2(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  # A key config_flags rejects while parsing (as are unknown flags and
  # unparsable values), a value the training schema rejects afterwards, and
  # one only the optimizer checks.
  cases = {"--config.lamm=0.1": "unknown config key 'lamm' in "
                                "--config.lamm=0.1: Did you mean \"lam\"",
           "--config.lam=-1": "--config: lam=-1.0 must be >= 0.",
           "--config.bort_mode=l3": "--config: Unknown Bort mode 'l3'"}
  processes = {bad: subprocess.Popen(
      [sys.executable, "-m", "experiments.train", f"--config={CONFIG}",
       f"--workdir={tmp_path}", bad], cwd=REPO, env=env, text=True,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE) for bad in cases}
  for bad, process in processes.items():
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2, err[-2000:]
    assert err.count("\n") == 1, err[-2000:]
    assert err.startswith("python -m experiments.train: error: ")
    assert cases[bad] in err, err
  assert not any(tmp_path.iterdir())  # nothing ran


def test_a_one_epoch_train_run_prints_no_info_line_unless_asked(tmp_path):
  tiny = [f"--config={CONFIG}", f"--workdir={tmp_path / 'run'}",
          "--config.num_epochs=1", "--config.progress=False",
          "--config.model_overrides.width_multiplier=0.25"]
  quiet = _run("experiments.train", *tiny)
  assert quiet.returncode == 0, quiet.stderr[-2000:]
  assert not INFO_LINE.search(quiet.stdout + quiet.stderr), quiet.stderr[:2000]
  assert "'top1'" in quiet.stdout  # the summary is still printed
  # Resuming the finished run: orbax restores (and logs it) at verbosity 0.
  loud = _run("experiments.train", *tiny, "--verbosity=0")
  assert loud.returncode == 0, loud.stderr[-2000:]
  assert INFO_LINE.search(loud.stderr), loud.stderr[:2000]
