"""Per-process numpy batches -> global `jax.Array`s sharded over a mesh's data axis."""

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec


def batch_axis(array, num_examples):
  """The example axis of a batch entry: 0, or 1 for (S, B, H, W, C) aug-split images.

  A 5-D array whose axis 1 has `num_examples` rows is split-major (the layout `load`
  yields); one whose only axis 0 has them is example-major (B, S, H, W, C).
  """
  shape = np.shape(array)
  if len(shape) == 5 and shape[1] == num_examples:
    return 1
  if shape and shape[0] == num_examples:
    return 0
  raise ValueError(f"batch entry of shape {shape} has no axis of the batch's "
                   f"{num_examples} examples (axis 0, or axis 1 for (S, B, H, W, C))")


def shard_batch(batch, mesh, data_axis="data"):
  """Assembles every process's local batch into global arrays sharded on `data_axis`.

  `data_axis` is a mesh axis name or a tuple of names (e.g. ("data", "fsdp")). The global
  batch is the concatenation of the processes' batches in process order along the
  example axis (`batch_axis`; the batch's example count is `len(batch["mask"])`, else
  `len(batch["label"])`), so the local batch must divide evenly over this process's
  devices on those mesh axes. Nested dicts (a host batch's 'augment') are sharded the
  same way, entry by entry.
  """
  names = (data_axis,) if isinstance(data_axis, str) else tuple(data_axis)
  missing = [name for name in names if name not in mesh.axis_names]
  if missing:
    raise ValueError(f"data_axis {data_axis!r}: axes {missing} are not in the mesh axes "
                     f"{mesh.axis_names}")
  reference = batch["mask"] if "mask" in batch else batch["label"]
  num_examples = len(reference)

  def put(array):
    axis = batch_axis(array, num_examples)
    spec = PartitionSpec(*([None] * axis), data_axis)
    return jax.make_array_from_process_local_data(NamedSharding(mesh, spec),
                                                  np.asarray(array))

  return jax.tree.map(put, batch)  # nested too: the host batch's 'augment' dict
