"""The ``Examples:`` of every docstring in bort_jax run as doctests.

Every module of the package is imported and its docstrings' examples run
(``doctest.DocTestFinder`` on the module, as ``pytest --doctest-modules``
would), so an example that drifts from the code fails here.
"""

import doctest
import importlib
import io
import pkgutil

import pytest

import bort_jax

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(bort_jax.__path__, "bort_jax."))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _examples(module):
  return [t for t in doctest.DocTestFinder().find(module) if t.examples]


@pytest.mark.parametrize("name", ["bort_jax", *MODULES])
def test_docstring_examples_run(name):
  module = importlib.import_module(name)
  out = io.StringIO()
  runner = doctest.DocTestRunner(optionflags=FLAGS)
  for test in _examples(module):
    runner.run(test, out=out.write)
  assert runner.failures == 0, out.getvalue()


@pytest.mark.parametrize("name", [
    "bort", "add_bort_correction", "bort_sgd", "bort_adamw", "bort_lamb",
    "bort_correction", "orthogonality_stats", "BortDimensionNumbers"])
def test_public_api_docstrings_have_args_returns_examples(name):
  doc = getattr(bort_jax, name).__doc__
  sections = ("Examples:",) if name == "BortDimensionNumbers" else (
      "Args:", "Returns:", "Examples:")
  for section in sections:
    assert section in doc, f"bort_jax.{name}'s docstring has no {section}"
  assert ">>> " in doc


def test_models_create_docstring_has_examples():
  from bort_jax import models
  assert "Examples:" in models.create.__doc__ and _examples(models)
