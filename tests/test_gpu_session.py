"""benchmarks/gpu_session.sh against CLI bitrot, without a GPU or PyTorch.

The script's dry run prints each part (name, time limit, command); every
``python -m benchmarks.X ...`` line is handed to that module's ``main`` and
stopped right after argparse has read it. So a renamed or removed flag, a bad
value for a flag checked while parsing (bench_torch's and bench_optimizer's
model/part/precision/optimizer lists), a missing module or a ``main`` that no
longer takes ``argv`` fails here, in both the real run and the smoke mode.

What it cannot catch: anything after parsing (a failure inside a part, checks
a module makes after ``parse_args``, CUDA-only paths, the device image's other
jax/flax/torch versions) and how long the parts really take: `bash
benchmarks/gpu_session.sh smoke` runs them on the CPU.
"""

import argparse
import importlib
import os
import pathlib
import shlex
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))  # `benchmarks` is a folder, not installed

SCRIPT = REPO / "benchmarks" / "gpu_session.sh"
# The device tool's per-call limit is 600 s; the wheels and the versions line
# take ~20 s, and a minute is left for the call's own overhead.
PARTS_BUDGET_S = 520


def dry_run(mode: str, out: str) -> list[tuple[str, int, list[str]]]:
  env = dict(os.environ, DRY_RUN="1", OUT=out, PYTHON="the-python")
  text = subprocess.run(["bash", str(SCRIPT), mode], cwd=REPO, env=env,
                        check=True, capture_output=True, text=True).stdout
  parts = []
  for line in text.splitlines():
    name, limit, command = line.split("\t")
    parts.append((name, int(limit), shlex.split(command)))
  return parts


def module_and_args(command: list[str]) -> tuple[str, list[str]]:
  """``[env VAR=... ]PYTHON -m MODULE ARGS`` → ``(MODULE, ARGS)``."""
  if command[0] == "env":
    command = [word for word in command[1:] if "=" not in word]
  assert command[:2] == ["the-python", "-m"], command
  return command[2], command[3:]


class _Parsed(Exception):

  def __init__(self, namespace):
    super().__init__(namespace)
    self.namespace = namespace


@pytest.fixture
def parse_only(monkeypatch):
  """``ArgumentParser.parse_args`` parses, then stops the program."""
  original = argparse.ArgumentParser.parse_args

  def parse_then_stop(self, args=None, namespace=None):
    raise _Parsed(original(self, args, namespace))

  monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)


@pytest.mark.parametrize("mode", ["run", "smoke"])
def test_every_part_parses_its_flags_and_writes_json_under_out(
    mode, parse_only, tmp_path, capsys):
  parts = dry_run(mode, str(tmp_path))
  assert len({name for name, _, _ in parts}) == len(parts) >= 5
  for name, _, command in parts:
    module, args = module_and_args(command)
    main = importlib.import_module(module).main
    with pytest.raises(_Parsed) as parsed:
      try:
        main(args)
      except SystemExit:  # argparse's error, printed to stderr
        pytest.fail(f"{mode} part {name}: {module} rejects {args}: "
                    f"{capsys.readouterr().err}")
    assert pathlib.Path(parsed.value.namespace.json).parent == tmp_path, name


def test_the_real_parts_fit_the_device_call_and_smoke_mirrors_them(tmp_path):
  run, smoke = dry_run("run", str(tmp_path)), dry_run("smoke", str(tmp_path))
  assert sum(limit for _, limit, _ in run) <= PARTS_BUDGET_S
  assert ([(name, module_and_args(command)[0]) for name, _, command in run] ==
          [(name, module_and_args(command)[0]) for name, _, command in smoke])
  # The parts measured first: ResNet50 Bort-S bf16 vs PyTorch AMP, then
  # the goodput of the ACNN-Small Table 1 run.
  assert [name for name, _, _ in run[:2]] == ["bench_torch_bort",
                                              "bench_goodput"]


def test_named_parts_run_alone(tmp_path):
  env = dict(os.environ, DRY_RUN="1", OUT=str(tmp_path))
  text = subprocess.run(["bash", str(SCRIPT), "run", "bench_input",
                         "bench_optimizer"], cwd=REPO, env=env, check=True,
                        capture_output=True, text=True).stdout
  assert [line.split("\t")[0] for line in text.splitlines()] == [
      "bench_input", "bench_optimizer"]
  # A part's prefix is not a part.
  unknown = subprocess.run(["bash", str(SCRIPT), "run", "bench_torch"],
                           cwd=REPO, env=env, capture_output=True, text=True)
  assert unknown.returncode == 2
  assert "unknown part 'bench_torch'; the parts: bench_torch_bort" in (
      unknown.stderr)


def test_the_part_list_names_every_part(tmp_path):
  script = SCRIPT.read_text()
  listed = script.split("\nPARTS=(", 1)[1].split(")", 1)[0].split()
  assert listed == [name for name, _, _ in dry_run("run", str(tmp_path))]
