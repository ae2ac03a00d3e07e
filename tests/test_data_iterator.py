"""The iterator: eval coverage with padding, train determinism, process shards, resume."""

import json

import jax
import numpy as np
import pytest

from bort_jax import data
from bort_jax.data import idx


@pytest.fixture
def indexed_dir(tmp_path):
  """An IDX dataset of 40 examples whose label is the example's index (0..39)."""
  n = 40
  images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None], (n, 4, 4)).copy()
  for prefix in ("train", "t10k"):
    idx.write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", images)
    idx.write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8))
  return f"idx:{tmp_path}"


def _valid_labels(batches):
  return np.concatenate([b["label"][b["mask"]] for b in batches])


def test_eval_sees_every_example_once_and_masks_padding(indexed_dir):
  it = data.load(indexed_dir, split="test", batch_size=16, train=False)
  batches = list(it)
  assert it.steps_per_epoch == len(batches) == 3
  assert [b["mask"].tolist().count(True) for b in batches] == [16, 16, 8]
  assert all(b["image"].shape == (16, 4, 4, 1) for b in batches)
  np.testing.assert_array_equal(_valid_labels(batches), np.arange(40))
  # Images belong to their labels: un-normalised pixel value == index, padded rows too.
  index = np.arange(40.0)
  for b in batches:
    pixels = b["image"][:, 0, 0, 0] * index.std() + index.mean()
    np.testing.assert_allclose(pixels, b["label"], atol=1e-4)
  with pytest.raises(StopIteration):
    next(it)


def test_train_drops_ragged_batch_and_is_deterministic_from_seed(indexed_dir):
  def epochs(seed, n_epochs=2):
    it = data.load(indexed_dir, split="train", batch_size=6, train=True, seed=seed)
    assert it.steps_per_epoch == 6  # 40 // 6, the last 4 examples dropped each epoch
    return [[next(it) for _ in range(6)] for _ in range(n_epochs)]

  first, again, other = epochs(0), epochs(0), epochs(1)
  for epoch in first:
    labels = np.concatenate([b["label"] for b in epoch])
    assert len(labels) == 36 and len(np.unique(labels)) == 36
    assert all(b["mask"].all() and b["image"].shape == (6, 4, 4, 1) for b in epoch)
  for a, b in zip(sum(first, []), sum(again, [])):
    np.testing.assert_array_equal(a["label"], b["label"])
    np.testing.assert_array_equal(a["image"], b["image"])
  order = lambda run, e: np.concatenate([b["label"] for b in run[e]])
  assert not np.array_equal(order(first, 0), order(first, 1))  # reshuffled per epoch
  assert not np.array_equal(order(first, 0), order(other, 0))  # seed matters


@pytest.mark.parametrize("train", [True, False])
def test_two_process_shards_are_disjoint_and_cover_the_data(indexed_dir, train):
  split = "train" if train else "test"
  shards = []
  for process in range(2):
    it = data.load(indexed_dir, split=split, batch_size=5, train=train, seed=7,
                   process_index=process, process_count=2)
    assert it.steps_per_epoch == 4 and it.num_examples == 40
    shards.append(_valid_labels([next(it) for _ in range(it.steps_per_epoch)]))
  assert len(np.intersect1d(shards[0], shards[1])) == 0
  np.testing.assert_array_equal(np.sort(np.concatenate(shards)), np.arange(40))


def test_eval_shards_pad_to_the_same_number_of_batches(indexed_dir):
  counts = []
  for process in range(3):
    it = data.load(indexed_dir, split="test", batch_size=4, train=False,
                   process_index=process, process_count=3)
    batches = list(it)
    counts.append((len(batches), int(sum(b["mask"].sum() for b in batches))))
  # 40 = 14 + 13 + 13 examples, but every process runs ceil(14 / 4) = 4 steps.
  assert counts == [(4, 14), (4, 13), (4, 13)]


AUGMENTED = {"random_resized_crop": True, "flip": True, "rand_augment": "rand-m9-mstd0.5",
             "mixup": 0.8, "cutmix": 1.0, "random_erasing": 0.25, "label_smoothing": 0.1}


@pytest.mark.parametrize("augment,finish", [(None, True), (AUGMENTED, True),
                                            (AUGMENTED, False)])
def test_restored_state_yields_identical_next_batches(augment, finish):
  kwargs = dict(split="train", batch_size=256, train=True, seed=5, augment=augment,
                finish=finish)
  original = data.load("digits", **kwargs)
  for _ in range(4):  # 5 steps per epoch: the next batches cross an epoch boundary
    next(original)
  state = json.loads(json.dumps(original.get_state()))
  restored = data.load("digits", **kwargs)
  restored.set_state(state)
  for _ in range(3):
    a, b = next(original), next(restored)
    assert a.keys() == b.keys()
    assert ("augment" in a) == (not finish)  # host batches carry their draws
    jax.tree.map(np.testing.assert_array_equal, a, b)
  assert original.get_state() == restored.get_state() == {**state, "epoch": 1, "step": 2}


def test_one_process_state_restores_every_process_of_the_run(indexed_dir):
  kwargs = dict(split="train", batch_size=5, train=True, seed=3, process_count=2)
  shards = [data.load(indexed_dir, process_index=p, **kwargs) for p in range(2)]
  for _ in range(6):  # 4 steps per epoch: into the second epoch
    for shard in shards:
      next(shard)
  saved = json.loads(json.dumps(shards[0].get_state()))  # what a checkpoint keeps
  resumed = data.load(indexed_dir, process_index=1, **kwargs)
  resumed.set_state(saved)
  for _ in range(3):
    np.testing.assert_array_equal(next(resumed)["label"], next(shards[1])["label"])
  other_count = data.load(indexed_dir, process_index=0, split="train", batch_size=5,
                          train=True, seed=3, process_count=1)
  with pytest.raises(ValueError, match="process_count=2"):
    other_count.set_state(saved)


def test_set_state_rejects_a_state_from_another_setup():
  it = data.load("digits", split="train", batch_size=64, train=True, seed=0)
  state = it.get_state()
  other = data.load("digits", split="train", batch_size=32, train=True, seed=0)
  with pytest.raises(ValueError, match="batch_size=64"):
    other.set_state(state)
  with pytest.raises(ValueError, match="step=99"):
    it.set_state({**state, "step": 99})
  with pytest.raises(ValueError, match="version 1"):
    it.set_state({"epoch": 0, "step": 0})


def test_bad_batch_and_process_arguments_raise():
  with pytest.raises(ValueError, match="batch_size 2000 is larger"):
    data.load("digits", split="train", batch_size=2000, train=True)
  with pytest.raises(ValueError, match="batch_size must be an int"):
    data.load("digits", split="train", batch_size=0, train=True)
  with pytest.raises(ValueError, match="process_index 2"):
    data.load("digits", split="train", batch_size=8, train=True, process_index=2,
              process_count=2)
