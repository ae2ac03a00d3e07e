"""Every ```python block of README.md and docs/*.md runs as written.

The blocks of one file run in order in one fresh namespace (a later block may
use an earlier one's names), with the working directory a temporary folder so
nothing is written into the checkout. A block that needs a trained run reads
its workdir from the environment variable ``BORT_RUN`` with the path the text
tells the reader to train as default, e.g.
``os.environ.get("BORT_RUN", "runs/lenet")``; when a file names ``BORT_RUN``
this test trains a small fixture run (LeNet on the offline digits, Bort-S, a
few steps: ``bort_jax.train.train_and_evaluate``) and sets the variable to it.

Shell commands and output are not ```python blocks. A block that truly cannot
run here (a GPU, a dataset that is not offline) is marked by the line
``<!-- skip: reason -->`` right before its fence; the reason is required.
"""

import os
import pathlib
import re
import traceback

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[^`\s]*)\s*$")
SKIP = re.compile(r"^\s*<!--\s*skip:\s*(?P<reason>.*?)\s*-->\s*$")
# Fences that look like Python but would not be run: use ```python.
NOT_RUN_PYTHON = {"py", "python3", "pycon", "ipython", "Python"}


class Block:
  def __init__(self, path, line, lang, code, skip_reason):
    self.path, self.line, self.lang = path, line, lang
    self.code, self.skip_reason = code, skip_reason

  @property
  def where(self):
    path = (self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT)
            else self.path)
    return f"{path}:{self.line}"


def code_blocks(path):
  """Every fenced block of ``path`` with its first line number (1-based)."""
  lines = path.read_text().splitlines()
  blocks, i = [], 0
  while i < len(lines):
    opening = FENCE.match(lines[i])
    if not opening:
      i += 1
      continue
    skip = SKIP.match(lines[i - 1]) if i else None
    body, j = [], i + 1
    while j < len(lines) and not FENCE.match(lines[j]):
      body.append(lines[j][len(opening["indent"]):])
      j += 1
    if j == len(lines):
      raise ValueError(f"{path}:{i + 1}: code fence is never closed")
    blocks.append(Block(path, i + 1, opening["lang"], "\n".join(body) + "\n",
                        skip["reason"] if skip else None))
    i = j + 1
  return blocks


def python_blocks(path):
  return [b for b in code_blocks(path) if b.lang == "python"]


def run_blocks(blocks, namespace):
  """Runs ``blocks`` in order in ``namespace``; a failure names the block."""
  for block in blocks:
    if block.skip_reason is not None:
      continue
    try:
      code = compile(block.code, block.where, "exec")
      exec(code, namespace)  # pylint: disable=exec-used
    except Exception as e:  # pylint: disable=broad-except
      raise AssertionError(
          f"the ```python block at {block.where} fails:\n"
          f"{''.join(traceback.format_exception(e))}") from None


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory):
  """A LeNet trained with Bort-S for a few steps on digits: ``BORT_RUN``."""
  from bort_jax import train
  config = train.default_config()
  config.update(optimizer="bort_sgd", lam=0.1, batch_size=32,
                eval_batch_size=120, num_train_steps=3, log_every_steps=1,
                progress=False)
  workdir = tmp_path_factory.mktemp("docs") / "lenet"
  train.train_and_evaluate(config, str(workdir))
  return str(workdir)


@pytest.mark.parametrize(
    "path", [p for p in FILES if python_blocks(p)],
    ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(path, request, tmp_path, monkeypatch):
  blocks = python_blocks(path)
  if "BORT_RUN" in "".join(b.code for b in blocks):
    monkeypatch.setenv("BORT_RUN", request.getfixturevalue("fixture_run"))
  monkeypatch.chdir(tmp_path)
  run_blocks(blocks, {"__name__": "__docs__"})


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_python_block_escapes_the_test(path):
  for block in code_blocks(path):
    assert block.lang not in NOT_RUN_PYTHON, (
        f"{block.where}: a ```{block.lang} block is not run by this test; "
        "write ```python (or ```text for output).")
    if block.skip_reason is not None:
      assert block.skip_reason and block.lang == "python", (
          f"{block.where}: a skip marker needs a reason and a ```python "
          "block after it")


def test_readme_has_runnable_blocks():
  assert len(python_blocks(ROOT / "README.md")) >= 2


def test_a_broken_block_fails_naming_its_line(tmp_path):
  doc = tmp_path / "broken.md"
  doc.write_text("text\n\n```python\nx = 1\n```\n\n```python\n"
                 "y = x + undefined_name\n```\n")
  with pytest.raises(AssertionError, match=r"(?s)broken.md:7 fails.*"
                     r"NameError: name 'undefined_name'"):
    run_blocks(python_blocks(doc), {})
