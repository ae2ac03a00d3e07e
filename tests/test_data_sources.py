"""Data sources: tfds (mocked, TF-free), IDX files, the digits default, missing datasets."""

import numpy as np
import pytest

from bort_jax import data
from bort_jax.data import augment, idx, sources

TFDS_CASES = [  # name, eval split, expected image shape, classes
    ("mnist", "test", (28, 28, 1), 10),
    ("fashion_mnist", "test", (28, 28, 1), 10),
    ("cifar10", "test", (32, 32, 3), 10),
    ("imagenet2012", "validation", (32, 32, 3), 1000),
]


@pytest.mark.parametrize("name,eval_split,shape,classes", TFDS_CASES)
def test_tfds_names_load_through_data_source_mock(name, eval_split, shape, classes):
  import tensorflow_datasets as tfds  # pinned: a missing package must fail
  image_size = 32 if name == "imagenet2012" else None  # small crop keeps the test fast
  with tfds.testing.mock_data(num_examples=10):
    train = data.load(name, split="train", batch_size=4, train=True, image_size=image_size,
                      augment={"flip": True})
    evaluation = data.load(name, split=eval_split, batch_size=4, train=False,
                           image_size=image_size)
    train_batch = next(train)
    eval_batches = list(evaluation)
  assert train.num_classes == classes and train.image_shape == shape
  assert train.num_examples == 10 and train.steps_per_epoch == 2
  assert train_batch["image"].shape == (4, *shape)
  assert train_batch["image"].dtype == np.float32
  assert train_batch["label"].dtype == np.int32
  assert np.all((train_batch["label"] >= 0) & (train_batch["label"] < classes))
  assert [b["mask"].sum() for b in eval_batches] == [4, 4, 2]
  assert all(b["image"].shape == (4, *shape) for b in eval_batches)


def _by_pattern(images):
  # Fixture image k starts with pixel (k·37) mod 256 (k < 256, 37 odd: unique),
  # which finds each example whatever order tfds shuffled the records into.
  return np.argsort(images[:, 0, 0, 0].astype(int))


@pytest.mark.parametrize("split", ["train", "test"])
def test_real_tfds_array_record_files_decode_to_what_was_written(split):
  """A real prepared tfds mnist (ArrayRecord, PNG-encoded; tests/make_tfds_fixture.py)
  read without TensorFlow: every image and label back, bit for bit."""
  import tensorflow_datasets  # noqa: F401  (pinned: must fail if missing)
  from bort_jax.data import sources
  from make_tfds_fixture import FIXTURE_DIR, fixture_examples
  source = sources.make_source("mnist", split, data_dir=str(FIXTURE_DIR))
  want_images, want_labels = fixture_examples(split)
  assert source.num_examples == len(want_labels) and source.num_classes == 10
  assert source.image_shape == (28, 28, 1)
  images, labels = source.read(np.arange(source.num_examples))
  assert images.dtype == np.uint8 and images.shape == want_images.shape
  order, want_order = _by_pattern(images), _by_pattern(want_images)
  np.testing.assert_array_equal(images[order], want_images[want_order])
  np.testing.assert_array_equal(labels[order], want_labels[want_order])

  # Through data.load: one padded pass, normalised with MNIST's statistics.
  batches = list(data.load("mnist", split=split, batch_size=16, train=False,
                           data_dir=str(FIXTURE_DIR)))
  assert [int(b["mask"].sum()) for b in batches] == (
      [16, 16, 16] if split == "train" else [16, 4])
  loaded = np.concatenate([b["image"][b["mask"]] for b in batches])
  mean, std = np.asarray(source.mean), np.asarray(source.std)
  np.testing.assert_allclose(loaded, (images.astype(np.float32) - mean) / std,
                             rtol=1e-6, atol=1e-6)


def test_real_tfds_imagenet_jpegs_decode_at_their_own_sizes_with_their_labels():
  """A real prepared tfds imagenet2012 (JPEG in ArrayRecord, written by tfds's
  builder from manual-download tars) read without TensorFlow, then through the
  eval (resize + centre crop) and train (crop, flip, RandAugment) pipelines."""
  import tensorflow_datasets  # noqa: F401  (pinned: must fail if missing)
  from bort_jax.data import sources
  from make_tfds_fixture import FIXTURE_DIR, IMAGENET_TRAIN, IMAGENET_VALIDATION
  for split, rows in (("train", IMAGENET_TRAIN), ("validation", IMAGENET_VALIDATION)):
    source = sources.make_source("imagenet2012", split, data_dir=str(FIXTURE_DIR))
    assert source.num_examples == len(rows) and source.num_classes == 1000
    assert source.image_shape is None  # sizes vary
    files, labels = source.read(np.arange(source.num_examples))
    assert all(isinstance(f, bytes) and f[:2] == b"\xff\xd8" for f in files)  # JPEGs
    images = [augment.from_pil(augment.open_image(f)) for f in files]
    by_size = {size: (label, rgb) for _, _, label, size, rgb in rows}
    assert sorted(image.shape[:2] for image in images) == sorted(by_size)
    for image, label in zip(images, labels):
      want_label, rgb = by_size[image.shape[:2]]
      assert image.dtype == np.uint8 and image.shape[2] == 3
      assert label == want_label
      np.testing.assert_allclose(image.reshape(-1, 3).mean(0), rgb, atol=3)

  evaluation = data.load("imagenet2012", split="validation", batch_size=4, train=False,
                         image_size=32, data_dir=str(FIXTURE_DIR))
  (batch,) = list(evaluation)
  assert batch["image"].shape == (4, 32, 32, 3) and batch["mask"].all()
  mean, std = np.asarray(source.mean), np.asarray(source.std)
  colours = {label: rgb for _, _, label, _, rgb in IMAGENET_VALIDATION}
  for image, label in zip(batch["image"], batch["label"]):
    want = (np.asarray(colours[int(label)]) - mean) / std
    np.testing.assert_allclose(image.reshape(-1, 3).mean(0), want, atol=0.05)

  train = data.load("imagenet2012", split="train", batch_size=3, train=True,
                    image_size=32, data_dir=str(FIXTURE_DIR),
                    augment={"random_resized_crop": True, "flip": True,
                             "rand_augment": "rand-m9-mstd0.5"})
  first = next(train)
  assert first["image"].shape == (3, 32, 32, 3) and first["image"].dtype == np.float32
  assert np.isfinite(first["image"]).all()
  assert set(first["label"].tolist()) <= {0, 1}


def test_missing_tfds_dataset_raises_one_clear_error(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as info:
    data.load("mnist", split="train", batch_size=2, train=True, data_dir=str(tmp_path))
  message = str(info.value)
  assert "TFDS_DATA_DIR" in message and "download_and_prepare" in message
  assert "tfds build mnist" in message and str(tmp_path) in message
  # No chained tfds traceback: the error is raised `from None`.
  assert info.value.__cause__ is None and info.value.__suppress_context__
  assert isinstance(info.value, FileNotFoundError)


def test_missing_imagenet_message_names_the_manual_download_dir(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="manual"):
    data.load("imagenet2012", split="validation", batch_size=2, train=False,
              data_dir=str(tmp_path))


def test_missing_idx_dir_and_unknown_names_raise(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="does not exist"):
    data.load(f"idx:{tmp_path}/nope", split="train", batch_size=2, train=True)
  with pytest.raises(data.DatasetNotFoundError, match="train-images-idx3-ubyte"):
    data.load(f"idx:{tmp_path}", split="train", batch_size=2, train=True)
  with pytest.raises(ValueError, match="unknown dataset 'mnist2'.*digits"):
    data.load("mnist2", split="train", batch_size=2, train=True)
  with pytest.raises(ValueError, match="splits"):
    data.load("digits", split="validation", batch_size=2, train=True)


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_idx_round_trip(tmp_path, suffix, dtype):
  array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
  if dtype == "uint8":
    array = np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
  path = tmp_path / f"a.idx{suffix}"
  idx.write_idx(path, array)
  back = idx.read_idx(path)
  assert back.dtype == np.dtype(dtype) and back.shape == array.shape
  np.testing.assert_array_equal(back, array)
  with open(path, "rb") as f:
    assert (f.read(2) == b"\x1f\x8b") == (suffix == ".gz")


def test_idx_bytes_follow_the_mnist_layout(tmp_path):
  images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  idx.write_idx(tmp_path / "x", images)
  raw = (tmp_path / "x").read_bytes()
  # magic 0 0 0x08 (ubyte) 3 (dims), then big-endian uint32 sizes, then the pixels.
  assert raw[:4] == b"\x00\x00\x08\x03"
  assert raw[4:16] == (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + (4).to_bytes(4, "big")
  assert raw[16:] == images.tobytes()
  labels = np.array([1, 300], np.int32)
  idx.write_idx(tmp_path / "y", labels)
  assert (tmp_path / "y").read_bytes() == (b"\x00\x00\x0c\x01" + (2).to_bytes(4, "big")
                                           + labels.astype(">i4").tobytes())


def test_idx_rejects_corrupt_files(tmp_path):
  (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
  with pytest.raises(ValueError, match="not an IDX file"):
    idx.read_idx(tmp_path / "bad")
  idx.write_idx(tmp_path / "short", np.zeros((4, 4), np.uint8))
  (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
  with pytest.raises(ValueError, match="25 bytes"):
    idx.read_idx(tmp_path / "short")
  with pytest.raises(ValueError, match="cannot store dtype"):
    idx.write_idx(tmp_path / "c", np.zeros(2, np.complex64))


def _write_mnist_dir(directory, n_train, n_test, gz):
  rng = np.random.default_rng(0)
  suffix = ".gz" if gz else ""
  arrays = {}
  for prefix, n in (("train", n_train), ("t10k", n_test)):
    images = rng.integers(0, 256, (n, 6, 5), dtype=np.uint8)
    labels = (np.arange(n) % 7).astype(np.uint8)
    idx.write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
    idx.write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    arrays[prefix] = images, labels
  return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_directory_loads_with_train_statistics(tmp_path, gz):
  arrays = _write_mnist_dir(tmp_path, 12, 5, gz)
  test = data.load(f"idx:{tmp_path}", split="test", batch_size=5, train=False)
  batch = next(test)
  train_images = arrays["train"][0].astype(np.float64)
  expected = (arrays["t10k"][0] - train_images.mean()) / train_images.std()
  assert test.num_classes == 7 and test.image_shape == (6, 5, 1)
  np.testing.assert_allclose(batch["image"][..., 0], expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(batch["label"], arrays["t10k"][1])


def test_digits_default_shapes_labels_and_normalisation():
  train = data.load("digits", split="train", batch_size=1437, train=False)
  test = data.load("digits", split="test", batch_size=360, train=False)
  train_batch, test_batch = next(train), next(test)
  assert (train.num_examples, test.num_examples) == (1437, 360)
  assert train.image_shape == (28, 28, 1) and train.num_classes == 10
  assert train_batch["image"].shape == (1437, 28, 28, 1)
  assert train_batch["image"].dtype == np.float32
  # Normalised with the train split's own statistics.
  assert abs(train_batch["image"].mean()) < 1e-4
  assert abs(train_batch["image"].std() - 1.0) < 1e-4
  # MNIST layout: a 4-pixel empty frame around the 20x20 digit.
  background = train_batch["image"].min()
  assert np.all(train_batch["image"][:, :4] == background)
  assert np.all(train_batch["image"][:, :, -4:] == background)
  # Stratified split: every class on both sides, counts as sklearn's digits.
  from sklearn.datasets import load_digits
  all_labels = np.concatenate([train_batch["label"], test_batch["label"]])
  np.testing.assert_array_equal(np.bincount(all_labels), np.bincount(load_digits().target))
  # Labels belong to their images: 1-nearest-neighbour from train classifies test
  # (about 0.99; shuffled labels would give about 0.1).
  from sklearn.neighbors import KNeighborsClassifier
  model = KNeighborsClassifier(1).fit(
      train_batch["image"].reshape(1437, -1), train_batch["label"])
  accuracy = model.score(test_batch["image"].reshape(360, -1), test_batch["label"])
  assert accuracy > 0.95


def test_image_size_resizes_fixed_size_data():
  native = next(data.load("digits", split="test", batch_size=4, train=False))
  resized = data.load("digits", split="test", batch_size=4, train=False, image_size=56)
  batch = next(resized)
  assert resized.image_shape == (56, 56, 1) and batch["image"].shape == (4, 56, 56, 1)
  # A plain 2x upsampling: 2x2 block means match the 28x28 images closely.
  blocks = batch["image"][..., 0].reshape(4, 28, 2, 28, 2).mean(axis=(2, 4))
  assert np.abs(blocks - native["image"][..., 0]).mean() < 0.1
  with pytest.raises(ValueError, match="disagrees with augment crop_size 20"):
    data.load("digits", split="test", batch_size=4, train=False, image_size=56,
              augment={"crop_size": 20})


def test_synthetic_is_a_function_of_seed_and_index():
  first = data.load("synthetic:5", split="train", batch_size=4, train=False,
                    image_size=(8, 6, 3), seed=3)
  again = data.load("synthetic:5", split="train", batch_size=4, train=False,
                    image_size=(8, 6, 3), seed=3)
  other = data.load("synthetic:5", split="train", batch_size=4, train=False,
                    image_size=(8, 6, 3), seed=4)
  a, b, c = next(first), next(again), next(other)
  assert a["image"].shape == (4, 8, 6, 3) and first.num_classes == 5
  np.testing.assert_array_equal(a["image"], b["image"])
  assert not np.array_equal(a["image"], c["image"])
  assert np.all((a["label"] >= 0) & (a["label"] < 5))
  # Uniform pixels, normalised: mean ~0, std ~1.
  assert abs(a["image"].mean()) < 0.2 and abs(a["image"].std() - 1) < 0.1
  with pytest.raises(ValueError, match="synthetic:NUM_CLASSES"):
    data.load("synthetic:ten", split="train", batch_size=2, train=True)


@pytest.mark.parametrize("labels, error", [
    ((3, 12), r"label 12 at index 1 .*integers in \[0, 10\)"),
    ((3, -1), r"label -1 at index 1 .*integers in \[0, 10\)"),
    (([3], [4]), r"labels have shape \(2, 1\); one label per image"),
])
def test_tfds_labels_are_checked_when_read(monkeypatch, labels, error):
  import tensorflow_datasets as tfds  # pinned: a missing package must fail
  image = np.zeros((28, 28, 1), np.uint8)
  records = [{"image": image, "label": label} for label in labels]
  with tfds.testing.mock_data(num_examples=2):
    monkeypatch.setattr(tfds, "data_source", lambda *a, **k: records)
    source = sources.tfds_source("mnist", "train")
    with pytest.raises(ValueError, match=r"tfds 'mnist' split 'train', examples "
                       r"\[0, 1\]: " + error):
      source.read(np.arange(2))
