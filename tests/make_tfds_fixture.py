"""Writes tests/data/tfds: real tfds ``mnist`` and ``imagenet2012`` datasets
prepared as ArrayRecord.

The files come from tfds's own builders, fed files of known images instead of
the download (MNIST: IDX files; ImageNet: the manual-download tars of JPEGs),
so they are what ``tfds build NAME --file_format=array_record`` writes
(encoded images, the builders' dataset_info.json and features.json), only
tiny: MNIST 48 train and 20 test images, ImageNet 6 train images of two
synsets and 4 validation images, every one a flat colour at its own size.
``test_data_sources.py`` reads them back through ``bort_jax.data`` without
TensorFlow. Writing needs TensorFlow (tfds encodes images with it):

    pip install tensorflow-cpu tensorflow-datasets==4.9.10 array-record
    python tests/make_tfds_fixture.py
"""

import os
import io
import pathlib
import tarfile
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


# ImageNet: (file name, synset, label index in tfds's labels.txt, size HxW, RGB).
# Validation synsets are those tfds's validation_labels.txt gives these names.
IMAGENET_TRAIN = (
    ("n01440764_1.JPEG", "n01440764", 0, (40, 56), (200, 30, 30)),
    ("n01440764_2.JPEG", "n01440764", 0, (64, 48), (30, 200, 30)),
    ("n01440764_3.JPEG", "n01440764", 0, (33, 33), (30, 30, 200)),
    ("n01443537_1.JPEG", "n01443537", 1, (50, 70), (220, 220, 40)),
    ("n01443537_2.JPEG", "n01443537", 1, (72, 36), (40, 220, 220)),
    ("n01443537_3.JPEG", "n01443537", 1, (48, 48), (220, 40, 220)),
)
IMAGENET_VALIDATION = (
    ("ILSVRC2012_val_00000001.JPEG", "n01751748", 65, (45, 60), (120, 60, 10)),
    ("ILSVRC2012_val_00000002.JPEG", "n09193705", 970, (60, 45), (10, 120, 60)),
    ("ILSVRC2012_val_00000003.JPEG", "n02105855", 230, (38, 52), (60, 10, 120)),
    ("ILSVRC2012_val_00000004.JPEG", "n04263257", 809, (56, 40), (250, 250, 250)),
)


def _jpeg(size, rgb) -> bytes:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  Image.new("RGB", (size[1], size[0]), rgb).save(buffer, format="JPEG", quality=95)
  return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(payload)
  tar.addfile(info, io.BytesIO(payload))


def _write_imagenet_tars(manual_dir: pathlib.Path) -> None:
  with tarfile.open(manual_dir / "ILSVRC2012_img_train.tar", "w") as outer:
    for synset in sorted({row[1] for row in IMAGENET_TRAIN}):
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode="w") as tar:
        for name, row_synset, _, size, rgb in IMAGENET_TRAIN:
          if row_synset == synset:
            _add(tar, name, _jpeg(size, rgb))
      _add(outer, f"{synset}.tar", inner.getvalue())
  with tarfile.open(manual_dir / "ILSVRC2012_img_val.tar", "w") as tar:
    for name, _, _, size, rgb in IMAGENET_VALIDATION:
      _add(tar, name, _jpeg(size, rgb))


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
    manual_dir = tmp / "manual"
    manual_dir.mkdir()
    _write_imagenet_tars(manual_dir)
    builder = tfds.builder("imagenet2012", data_dir=os.fspath(FIXTURE_DIR),
                           file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual_dir), try_download_gcs=False))
  for path in sorted(FIXTURE_DIR.rglob("*")):
    if path.is_file():
      print(path.relative_to(FIXTURE_DIR), path.stat().st_size)


if __name__ == "__main__":
  main()
