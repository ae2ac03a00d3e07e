"""Test setup: 8 fake CPU devices for the multi-device tests (must run before JAX starts)."""

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
