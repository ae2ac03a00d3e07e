"""IDX files (the MNIST format, LeCun et al.), plain or gzip, and a source over a directory.

An IDX file is a 4-byte magic `0 0 <dtype code> <ndim>`, then `ndim` big-endian uint32
dimensions, then the array in big-endian C order.
"""

import gzip
import os
import zlib

import numpy as np

from bort_jax.data.base import DatasetNotFoundError, array_source, channel_stats, check_labels

# IDX type code -> big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"

# Split name -> file prefix, as in the MNIST / Fashion-MNIST / KMNIST downloads.
IDX_PREFIXES = {"train": "train", "test": "t10k"}


def _open(path, mode):
  if "r" in mode:
    with open(path, "rb") as f:
      is_gzip = f.read(2) == _GZIP_MAGIC
  else:
    is_gzip = str(path).endswith(".gz")
  return gzip.open(path, mode) if is_gzip else open(path, mode)


def read_idx(path):
  """Reads an IDX file (gzip detected from its content) into a native-endian array."""
  try:
    with _open(path, "rb") as f:
      data = f.read()
  except (EOFError, gzip.BadGzipFile, zlib.error) as error:
    raise ValueError(f"{path} is a truncated or corrupt gzip file ({type(error).__name__}: "
                     f"{error}); download it again") from error
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
    raise ValueError(f"{path} is not an IDX file: magic bytes {data[:4]!r}, expected "
                     f"0x00 0x00 <type in {sorted(IDX_DTYPES)}> <ndim>")
  dtype, ndim = IDX_DTYPES[data[2]], data[3]
  header = 4 + 4 * ndim
  shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
  expected = header + int(np.prod(shape)) * dtype.itemsize
  if len(data) != expected:
    raise ValueError(f"{path}: header says shape {shape} of {dtype} ({expected} bytes) "
                     f"but the file has {len(data)} bytes")
  return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(
      dtype.newbyteorder("="))


def write_idx(path, array):
  """Writes `array` as IDX; gzip-compressed when `path` ends in `.gz`."""
  array = np.asarray(array)
  native = array.dtype.newbyteorder("=")
  if native not in _CODES:
    raise ValueError(f"IDX cannot store dtype {array.dtype}; allowed: "
                     f"{sorted(str(d) for d in _CODES)}")
  if array.ndim > 255:
    raise ValueError(f"IDX stores at most 255 dimensions, got {array.ndim}")
  header = bytes([0, 0, _CODES[native], array.ndim])
  header += np.asarray(array.shape, ">u4").tobytes()
  with _open(path, "wb") as f:
    f.write(header + array.astype(IDX_DTYPES[_CODES[native]]).tobytes())


def find_idx_file(directory, prefix, kind):
  """Path of `<prefix>-<kind>-idx?-ubyte[.gz]` (also `<prefix>-<kind>.idx?-ubyte`)."""
  ndim = 3 if kind == "images" else 1
  for sep in ("-", "."):
    for suffix in ("", ".gz"):
      path = os.path.join(directory, f"{prefix}-{kind}{sep}idx{ndim}-ubyte{suffix}")
      if os.path.exists(path):
        return path
  raise DatasetNotFoundError(
      f"no {prefix}-{kind}-idx{ndim}-ubyte[.gz] in {directory!r}. An 'idx:DIR' dataset "
      f"needs MNIST-format files there: train-images-idx3-ubyte, train-labels-idx1-ubyte, "
      f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each optionally .gz).")


def _read_split(directory, split):
  images = read_idx(find_idx_file(directory, IDX_PREFIXES[split], "images"))
  labels = read_idx(find_idx_file(directory, IDX_PREFIXES[split], "labels"))
  if images.ndim == 3:
    images = images[..., None]
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(f"{directory}: {split} images must be uint8 (N, H, W[, C]), got "
                     f"{images.dtype} {images.shape}")
  return images, labels


def idx_source(directory, split):
  """A `Source` over MNIST-format IDX files in `directory`, split 'train' or 'test'.

  Normalisation statistics come from the train images when present, so train and test
  are normalised alike; classes are `max(train label) + 1`. Labels must be whole numbers
  in [0, classes), one per image (a ValueError names the file and the first bad one).
  """
  if split not in IDX_PREFIXES:
    raise ValueError(f"idx datasets have splits {sorted(IDX_PREFIXES)}, got {split!r}")
  if not os.path.isdir(directory):
    raise DatasetNotFoundError(f"idx dataset directory {directory!r} does not exist")
  images, labels = _read_split(directory, split)
  reference_images, reference_labels = images, labels
  if split != "train":
    try:
      reference_images, reference_labels = _read_split(directory, "train")
    except DatasetNotFoundError:
      pass
  # Classes from the train labels (the model's outputs); checked first so a bad train
  # label is named as such, then this split's labels against them.
  num_classes = int(np.max(reference_labels, initial=0)) + 1
  reference_file = find_idx_file(directory, IDX_PREFIXES["train"], "labels") if (
      reference_labels is not labels) else None
  if reference_file is not None:
    check_labels(reference_file, reference_labels, num_classes)
  labels = check_labels(find_idx_file(directory, IDX_PREFIXES[split], "labels"), labels,
                        num_classes, len(images))
  return array_source(f"idx:{directory}", images, labels, num_classes,
                      *channel_stats(reference_images))
