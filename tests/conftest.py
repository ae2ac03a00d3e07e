"""Test setup: 8 fake CPU devices for the multi-device tests (must run before JAX starts)."""

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
  """Reuse compiled steps across the runs of a test (same HLO, same binary)."""
  names = ("jax_compilation_cache_dir",
           "jax_persistent_cache_min_compile_time_secs",
           "jax_persistent_cache_min_entry_size_bytes")
  saved = {name: getattr(jax.config, name) for name in names}
  jax.config.update(names[0], str(tmp_path_factory.mktemp("jax_cache")))
  jax.config.update(names[1], 0.0)
  jax.config.update(names[2], -1)
  yield
  for name, value in saved.items():
    jax.config.update(name, value)
