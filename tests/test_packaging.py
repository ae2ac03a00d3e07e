"""The install: base without flax, extras that cover every import.

The slow tests share one wheel, one fresh venv (pip's cache makes the base
install ~40 s) and one dry-run resolution of ``bort_jax[all]`` made meanwhile;
they need PyPI or a mirror, as ``make`` does.
"""

import ast
import importlib.metadata
import json
import os
import pathlib
import pkgutil
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
import venv

import pytest

import bort_jax

REPO = pathlib.Path(__file__).resolve().parents[1]
QUIET = ["-q", "--disable-pip-version-check", "--no-input"]


def _pip_command(python, *args):
  return [str(python), "-m", "pip", *QUIET, *args]


def _pip(python, *args):
  subprocess.run(_pip_command(python, *args), check=True, cwd=REPO,
                 capture_output=True, text=True)


@pytest.fixture(scope="module")
def installs(tmp_path_factory):
  """(python of a fresh venv with `pip install bort_jax`, the resolution of
  `pip install "bort_jax[all]"` against the lock)."""
  root = tmp_path_factory.mktemp("packaging")
  # Built from a copy, so the build leaves nothing in the checkout.
  src = root / "src"
  shutil.copytree(REPO / "bort_jax", src / "bort_jax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(REPO / name, src / name)
  _pip(sys.executable, "wheel", "--no-deps", "-w", str(root / "dist"),
       str(src))
  wheel = next((root / "dist").glob("bort_jax-*.whl"))
  # The [all] resolution (a dry run: nothing installed) runs meanwhile.
  report = root / "all.json"
  resolving = subprocess.Popen(
      _pip_command(sys.executable, "install", "--dry-run", "--ignore-installed",
                   "--report", str(report), "-c", "requirements.txt",
                   f"{wheel}[all]"),
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  venv.create(root / "venv", with_pip=True)
  python = root / "venv" / "bin" / "python"
  _pip(python, "install", "--no-compile", str(wheel))
  log, _ = resolving.communicate()
  assert resolving.returncode == 0, log
  resolved = {_normalized(i["metadata"]["name"])
              for i in json.loads(report.read_text())["install"]}
  return python, resolved


BASE_SCRIPT = textwrap.dedent("""
    import importlib.util, jax, jax.numpy as jnp, numpy as np, optax
    import bort_jax
    for heavy in ("flax", "orbax", "ml_collections", "PIL", "matplotlib"):
      assert importlib.util.find_spec(heavy) is None, heavy
    params = {"dense": {"kernel": jnp.eye(3, 2) * 2.0}}
    grads = {"dense": {"kernel": jnp.zeros((3, 2))}}
    tx = bort_jax.bort_sgd(0.5, lam=1.0)
    updates, _ = tx.update(grads, tx.init(params), params)
    # K = 2·[I; 0]: KKᵀK − K = 8·[I; 0] − 2·[I; 0] = 6·[I; 0]; −lr·6 = −3.
    np.testing.assert_allclose(updates["dense"]["kernel"], -3.0 * jnp.eye(3, 2))
    tx = optax.chain(bort_jax.bort(1.0), optax.sgd(0.5))
    updates2, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates2["dense"]["kernel"],
                               -3.0 * jnp.eye(3, 2))
    try:
      bort_jax.models
    except ModuleNotFoundError as e:
      assert "bort_jax[models]" in str(e), e
    else:
      raise AssertionError("bort_jax.models imported without flax")
    print("ok")
""")


@pytest.mark.slow
def test_base_install_runs_bort_without_flax(installs):
  python, _ = installs
  out = subprocess.run([str(python), "-c", BASE_SCRIPT], cwd="/",
                       capture_output=True, text=True)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def _third_party_imports():
  """Top-level modules outside the standard library imported by bort_jax."""
  modules = set()
  for path in pathlib.Path(bort_jax.__file__).parent.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        modules |= {a.name.split(".")[0] for a in node.names}
      elif isinstance(node, ast.ImportFrom) and node.level == 0:
        modules.add(node.module.split(".")[0])
  return modules - set(sys.stdlib_module_names) - {"bort_jax", "__future__"}


def _normalized(name):
  return name.lower().replace("_", "-")


@pytest.mark.slow
def test_all_extra_covers_every_import(installs):
  _, resolved = installs
  providers = importlib.metadata.packages_distributions()
  for module in sorted(_third_party_imports()):
    dists = {_normalized(d) for d in providers.get(module, [])}
    assert dists, f"{module} is imported by bort_jax but not installed here"
    assert dists & resolved, (
        f"bort_jax imports {module} ({dists}), which bort_jax[all] does not "
        f"install: declare it in an extra of pyproject.toml")


def test_lock_pins_exactly_the_declared_dependencies():
  """requirements.txt pins what pyproject.toml declares, nothing else."""
  project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
  declared = set()
  for req in project["dependencies"] + [
      r for reqs in project["optional-dependencies"].values() for r in reqs]:
    name = re.match(r"[A-Za-z0-9_.-]+", req).group(0)
    if _normalized(name) != "bort-jax":
      declared.add(_normalized(name))
  lock = {_normalized(line.split("==")[0]) for line in
          (REPO / "requirements.txt").read_text().splitlines()
          if "==" in line and not line.startswith("#")}
  assert lock == declared, (f"pinned, not declared: {lock - declared}; "
                            f"declared, not pinned: {declared - lock}")


def test_every_subpackage_imports():
  """In this (make-installed bort_jax[all,test]) environment."""
  names = [m.name for m in pkgutil.walk_packages(
      [str(pathlib.Path(bort_jax.__file__).parent)], "bort_jax.")]
  script = "import importlib\nfor n in %r: importlib.import_module(n)" % names
  out = subprocess.run([sys.executable, "-c", script], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
  assert out.returncode == 0, out.stderr
  assert {"bort_jax.models", "bort_jax.explain", "bort_jax.data",
          "bort_jax.train", "bort_jax.plots"} <= set(names)


def test_the_wheel_holds_only_the_library():
  """experiments/, benchmarks/, studies/ and tests/ stay out of the wheel:
  the packages setuptools finds in the checkout under pyproject's rule."""
  setuptools = pytest.importorskip("setuptools")
  rule = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"][
      "setuptools"]["packages"]["find"]
  found = setuptools.find_packages(str(REPO), include=rule["include"],
                                   exclude=rule.get("exclude", ()))
  assert "bort_jax" in found and "bort_jax.train" in found, found
  assert all(p.split(".")[0] == "bort_jax" for p in found), found
