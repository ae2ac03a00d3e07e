"""Writes tests/data/tfds: a real tfds ``mnist`` (3.0.1) prepared as ArrayRecord.

The files come from tfds's own MNIST builder, fed IDX files of known images
instead of the download, so they are what ``tfds build mnist
--file_format=array_record`` writes (PNG-encoded images, the builder's
dataset_info.json and features.json), only with 48 train and 20 test images.
``test_data_sources.py`` reads them back through ``bort_jax.data.load``
without TensorFlow. Writing needs TensorFlow (tfds encodes images with it):

    pip install tensorflow-cpu tensorflow-datasets==4.9.10 array-record
    python tests/make_tfds_fixture.py
"""

import os
import pathlib
import tempfile
from unittest import mock

import numpy as np

FIXTURE_DIR = pathlib.Path(__file__).resolve().parent / "data" / "tfds"
NUM_EXAMPLES = {"train": 48, "test": 20}


def fixture_examples(split: str) -> tuple[np.ndarray, np.ndarray]:
  """The (images uint8 (n, 28, 28, 1), labels int64 (n,)) written for ``split``."""
  n = NUM_EXAMPLES[split]
  offset = 0 if split == "train" else 1000
  index = np.arange(n)[:, None, None] + offset
  rows, cols = np.arange(28)[:, None], np.arange(28)[None, :]
  images = ((index * 37 + rows * 5 + cols * 3) % 256).astype(np.uint8)[..., None]
  return images, (index[:, 0, 0] * 7 % 10).astype(np.int64)


def _write_idx(directory: pathlib.Path, split: str) -> dict:
  images, labels = fixture_examples(split)
  paths = {}
  for kind, array, magic in (("data", images[..., 0], 2051), ("labels", labels, 2049)):
    path = directory / f"{split}_{kind}"
    header = np.array([magic, len(array), *array.shape[1:]], ">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())
    paths[f"{split}_{kind}"] = os.fspath(path)
  return paths


def main():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.image_classification import mnist  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    files = {**_write_idx(tmp, "train"), **_write_idx(tmp, "test")}
    with mock.patch.object(mnist, "_TRAIN_EXAMPLES", NUM_EXAMPLES["train"]), \
         mock.patch.object(mnist, "_TEST_EXAMPLES", NUM_EXAMPLES["test"]), \
         mock.patch.object(tfds.download.DownloadManager, "download_and_extract",
                           lambda self, urls: files):
      builder = tfds.builder("mnist", data_dir=os.fspath(FIXTURE_DIR),
                             file_format="array_record")
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  for path in sorted(FIXTURE_DIR.rglob("*")):
    if path.is_file():
      print(path.relative_to(FIXTURE_DIR), path.stat().st_size)


if __name__ == "__main__":
  main()
