"""What every command-line script of this repository shares: one-line usage
errors, third-party logs off by default, ``--help`` that exits 0.

The entry points with a config (``experiments.train``, ``explain``,
``quickstart``, ``reproduce``) are absl apps, because ml_collections'
``--config.key=value`` overrides are absl flags; they start with :func:`run`.
Benchmarks and studies take a few plain options and use
:class:`ArgumentParser` (argparse: standard library, ``main(argv)`` parses a
list, so tests can check a command line without running it).

Both take ``--verbosity`` with absl's levels: -1 (the default here) shows
warnings and errors only, 0 adds INFO lines (orbax's checkpoint logs, jax's
compilation notes), 1 DEBUG.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

QUIET = -1  # absl's WARNING level
VERBOSITY_HELP = ("log level of absl, jax, orbax: -1 warnings, 0 info, "
                  "1 debug")
_HELP = ("--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")


def set_verbosity(verbosity: int) -> None:
  """Routes Python and absl logging through absl's handler at ``verbosity``
  (absl levels: -1 warning, 0 info, 1 debug)."""
  try:
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  except ImportError:  # a benchmark on a machine without absl (no orbax)
    logging.basicConfig(level=logging.WARNING - 10 * (verbosity + 1))
    return
  absl_logging.use_absl_handler()
  absl_logging.set_verbosity(verbosity)


def _one_line(error: BaseException, argv: Sequence[str] = ()) -> str:
  """The message of ``error`` on one line. ml_collections reports an unknown
  config key as an AttributeError around a KeyError ("'lamm'\nDid you mean
  ..."): that becomes "unknown config key 'lamm' in --config.lamm=0.1: Did
  you mean ...".
  """
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  if isinstance(error, KeyError) and error.args:
    text = str(error.args[0])
    key = text.split("\n", 1)[0].strip("'\"")
    where = [a for a in argv if a.startswith("--") and f".{key}" in a]
    text = (f"unknown config key '{key}'" + (f" in {where[0]}" if where else "")
            + (": " + text.split("\n", 1)[1] if "\n" in text else ""))
  else:
    text = str(error)
  return " ".join(text.split())


def _fail(prog: str, message: str, status: int = 2):
  print(f"{prog}: error: {message}", file=sys.stderr)
  sys.exit(status)


def _prog() -> str:
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  return f"python -m {spec.name}" if spec else sys.argv[0]


def run(main: Callable[[list[str]], int | None],
        parse: Callable[[list[str]], list[str]] | None = None) -> None:
  """``absl.app.run(main)`` with this repository's CLI behaviour.

  Args:
    main: the absl main, called with the arguments left after the flags.
    parse: parses ``argv`` into ``absl.flags.FLAGS`` and returns what
      ``main`` gets (default: ``FLAGS(argv)``).
  """
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  prog = _prog()
  verbosity = flags.FLAGS["verbosity"]
  verbosity.help = VERBOSITY_HELP  # absl's own text promises INFO by default
  flags.FLAGS.register_key_flag_for_module(sys.argv[0], verbosity)  # --help

  def flags_parser(argv):
    argv = ["--help" if a == "-h" else a for a in argv]
    try:
      rest = (parse or flags.FLAGS)(argv)
    except SystemExit as e:  # absl's help flags exit 1 after printing
      sys.exit(0 if e.code == 1 and any(a in _HELP for a in argv) else e.code)
    except Exception as e:  # pylint: disable=broad-except
      # A flag absl or a config override rejects (unknown key, bad value,
      # missing config file): one line, not a traceback.
      _fail(prog, _one_line(e, argv))
    for name in list(flags.FLAGS):
      # ml_collections defers a config file it could not load until the
      # config is read; read it here.
      if type(flags.FLAGS[name].value).__name__ == "_ErrorConfig":
        try:
          flags.FLAGS[name].value["?"]  # raises the load error
        except OSError as e:
          _fail(prog, f"--{name}: {_one_line(e.__cause__ or e)}")
    if flags.FLAGS["verbosity"].using_default_value:
      flags.FLAGS.verbosity = QUIET  # absl would raise it to INFO
    return rest

  def checked_main(argv):
    try:
      return main(argv)
    except app.UsageError as e:
      _fail(prog, _one_line(e))

  app.run(checked_main, flags_parser=flags_parser)


def print_and_write(text: str, out: str | None) -> None:
  """Writes a script's markdown to ``out`` (if given), then prints it."""
  if out:
    with open(out, "w", encoding="utf-8") as f:
      f.write(text)
  print(text)


class ArgumentParser(argparse.ArgumentParser):
  """argparse for benchmarks and studies: the module docstring as help, a
  one-line error (exit 2) for a bad option, and ``--verbosity``.

  Args:
    doc: the script's module docstring (shown by ``--help``).
    **kwargs: passed on to ``argparse.ArgumentParser``.
  """

  def __init__(self, doc: str, **kwargs):
    kwargs.setdefault("prog", _prog())
    super().__init__(description=doc,
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     **kwargs)
    self.add_argument("--verbosity", type=int, default=QUIET,
                      help=VERBOSITY_HELP + " (default: %(default)s)")

  def error(self, message):
    _fail(self.prog, message)

  def parse_args(self, args: Sequence[str] | None = None, namespace=None):
    parsed = super().parse_args(args, namespace)
    set_verbosity(parsed.verbosity)
    return parsed

