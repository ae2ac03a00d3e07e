"""Per-process numpy batches -> global `jax.Array`s sharded over a mesh's data axis."""

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec


def batch_partition_spec(array, data_axis="data"):
  """Batch axis 0, except (S, B, H, W, C) aug-split images whose batch axis is 1."""
  if np.ndim(array) == 5:
    return PartitionSpec(None, data_axis)
  return PartitionSpec(data_axis)


def shard_batch(batch, mesh, data_axis="data"):
  """Assembles every process's local batch into global arrays sharded on `data_axis`.

  `data_axis` is a mesh axis name or a tuple of names (e.g. ("data", "fsdp")). The global
  batch is the concatenation of the processes' batches in process order, so the local
  batch size must divide evenly over this process's devices on those axes.
  """
  names = (data_axis,) if isinstance(data_axis, str) else tuple(data_axis)
  missing = [name for name in names if name not in mesh.axis_names]
  if missing:
    raise ValueError(f"data_axis {data_axis!r}: axes {missing} are not in the mesh axes "
                     f"{mesh.axis_names}")

  def put(array):
    sharding = NamedSharding(mesh, batch_partition_spec(array, data_axis))
    return jax.make_array_from_process_local_data(sharding, np.asarray(array))

  return {key: put(value) for key, value in batch.items()}
