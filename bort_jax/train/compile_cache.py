"""Opt-in persistent compilation cache, so a resumed (preempted) run loads
its compiled steps from disk instead of compiling them again.

JAX's own cache (``jax_compilation_cache_dir``), set for the run only. JAX
writes an entry only for computations that took at least
``jax_persistent_cache_min_compile_time_secs`` (default 1 s) to compile and
whose entry has at least ``jax_persistent_cache_min_entry_size_bytes``; for
the run the time threshold is 0, so every computation it compiles (the
steps, evaluation, diagnostics, the state's initialisation) is cached.
"""

from __future__ import annotations

import contextlib

import jax
from jax.experimental.compilation_cache import compilation_cache

_DIR = "jax_compilation_cache_dir"
_MIN_TIME = "jax_persistent_cache_min_compile_time_secs"


@contextlib.contextmanager
def persistent_cache(directory: str):
  """Inside, JAX reads and writes compiled executables under ``directory``;
  ``""`` or ``None`` leaves JAX's settings as they are. The previous
  settings are put back on exit."""
  if not directory:
    yield
    return
  saved = {name: getattr(jax.config, name) for name in (_DIR, _MIN_TIME)}
  jax.config.update(_DIR, str(directory))
  jax.config.update(_MIN_TIME, 0.0)
  # JAX opens its cache once per process, at the first compile: reopen it
  # here (and on exit) so the directory applies from now on.
  compilation_cache.reset_cache()
  try:
    yield
  finally:
    for name, value in saved.items():
      jax.config.update(name, value)
    compilation_cache.reset_cache()
