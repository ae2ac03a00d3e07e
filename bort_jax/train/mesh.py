"""One device mesh for 1 device, N devices and N hosts.

Training always runs under ``jax.jit`` on a 1-D :class:`jax.sharding.Mesh` with
a ``data`` axis over every device of every process: batches are split along
it; parameters are replicated, or with FSDP each kernel is split along its
output (last) axis, so a device holds ``out / n_devices`` columns of it.
"""

from __future__ import annotations

from typing import Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import bort_jax

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None,
                           local_device_ids=None) -> None:
  """``jax.distributed.initialize`` for a multi-host launch (no-op if done).

  With no arguments JAX reads the cluster from its environment (SLURM, TPU
  pods, ``JAX_COORDINATOR_ADDRESS`` …). On CPU the cross-process collectives
  use gloo.
  """
  if jax.distributed.is_initialized():
    return
  # Only CPU devices read this; it must be set before the backends start.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes,
                             process_id=process_id,
                             local_device_ids=local_device_ids)


def create_mesh(devices=None) -> Mesh:
  """A 1-D mesh named ``data`` over ``devices`` (default: all global devices)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (example) axis split over the ``data`` axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def _kernel_sharding(leaf, mesh: Mesh) -> NamedSharding:
  n_devices = mesh.shape[DATA_AXIS]
  shape = np.shape(leaf)
  if len(shape) < 2 or shape[-1] % n_devices:
    # Too small to split evenly: such a kernel stays replicated.
    return replicated(mesh)
  spec = (None,) * (len(shape) - 1) + (DATA_AXIS,)
  return NamedSharding(mesh, PartitionSpec(*spec))


def param_shardings(params, mesh: Mesh, fsdp: bool = False):
  """Shardings for ``params``: replicated, or FSDP on the default-mask kernels."""
  if not fsdp:
    return jax.tree.map(lambda _: replicated(mesh), params)
  is_kernel = bort_jax.default_mask(params)
  return jax.tree.map(
      lambda leaf, kernel: _kernel_sharding(leaf, mesh) if kernel
      else replicated(mesh), params, is_kernel)
