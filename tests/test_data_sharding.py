"""shard_batch: per-process numpy batches -> global arrays on the mesh's data axis."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bort_jax import data


def _mesh(shape=(8,), names=("data",)):
  assert jax.device_count() == 8, "tests/conftest.py sets 8 fake CPU devices"
  return Mesh(np.asarray(jax.devices()).reshape(shape), names)


def test_shard_batch_gives_global_arrays_sharded_on_the_data_axis():
  mesh = _mesh()
  batch = next(data.load("digits", split="test", batch_size=16, train=False))
  sharded = data.shard_batch(batch, mesh)
  for key, value in batch.items():
    array = sharded[key]
    assert isinstance(array, jax.Array)
    assert array.shape == value.shape and array.dtype == value.dtype
    assert array.sharding.is_equivalent_to(NamedSharding(mesh, PartitionSpec("data")),
                                           value.ndim)
    for shard in array.addressable_shards:  # each device holds its 2 rows
      assert shard.data.shape[0] == 2
      np.testing.assert_array_equal(np.asarray(shard.data), value[shard.index])
    np.testing.assert_array_equal(np.asarray(array), value)


def test_aug_split_images_are_sharded_on_their_batch_axis():
  mesh = _mesh((4, 2), ("data", "model"))
  images = np.arange(3 * 8 * 2 * 2 * 1, dtype=np.float32).reshape(3, 8, 2, 2, 1)
  batch = {"image": images, "label": np.arange(8, dtype=np.int32)}
  sharded = data.shard_batch(batch, mesh)
  assert sharded["image"].sharding.spec == PartitionSpec(None, "data")
  assert sharded["label"].sharding.spec == PartitionSpec("data")
  # Replicated over "model": each of the 8 devices holds a quarter of the batch.
  assert {s.data.shape for s in sharded["image"].addressable_shards} == {(3, 2, 2, 2, 1)}
  np.testing.assert_array_equal(np.asarray(sharded["image"]), images)
  # Example-major (B, S, H, W, C) stacks are sharded on axis 0.
  swapped = data.shard_batch({**batch, "image": images.swapaxes(0, 1)}, mesh)
  assert swapped["image"].sharding.spec == PartitionSpec("data")
  np.testing.assert_array_equal(np.asarray(swapped["image"]), images.swapaxes(0, 1))
  with pytest.raises(ValueError, match=r"shape \(5,\) has no axis of the batch's 8"):
    data.shard_batch({**batch, "extra": np.zeros(5)}, mesh)


def test_shard_batch_over_two_axes_and_bad_axis():
  mesh = _mesh((4, 2), ("data", "fsdp"))
  batch = {"label": np.arange(8, dtype=np.int32)}
  sharded = data.shard_batch(batch, mesh, data_axis=("data", "fsdp"))
  assert {s.data.shape for s in sharded["label"].addressable_shards} == {(1,)}
  with pytest.raises(ValueError, match=r"axes \['batch'\] are not in the mesh"):
    data.shard_batch(batch, mesh, data_axis="batch")
