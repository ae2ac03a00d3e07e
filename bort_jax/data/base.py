"""What every data source provides, and the one error a missing dataset raises."""

from typing import Callable, NamedTuple, Optional

import numpy as np


class DatasetNotFoundError(FileNotFoundError):
  """A dataset that is not on disk (or not prepared in a format we can read)."""


class Source(NamedTuple):
  """A random-access split: `read(indices)` returns its uint8 images and int labels.

  `read` returns `(images, labels)`: images as a uint8 array (n, H, W, C) when every
  image has `image_shape`, or, when sizes vary (ImageNet; then `image_shape` is None),
  a list of uint8 (h, w, C) arrays or of encoded image files (bytes), which the
  per-example transform decodes at the size its crop needs. `mean`/`std` are per-channel statistics on
  the 0..255 scale used to normalise the float images.
  """
  name: str
  num_examples: int
  num_classes: int
  image_shape: Optional[tuple]
  channels: int
  mean: tuple
  std: tuple
  read: Callable[[np.ndarray], tuple]


def check_labels(name, labels, num_classes, num_images=None):
  """`labels` as int32 after checking them: one per image (shape (N,)), whole
  numbers in [0, num_classes). Errors name the first bad label and its index."""
  labels = np.asarray(labels)
  if labels.ndim != 1 or (num_images is not None and len(labels) != num_images):
    raise ValueError(f"{name}: labels have shape {labels.shape}; one label per image "
                     f"is allowed, shape ({num_images if num_images is not None else 'N'},)")
  if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
    raise ValueError(f"{name}: labels have dtype {labels.dtype}; integer class indices "
                     f"are allowed")
  bad = np.flatnonzero((labels != np.round(labels)) | (labels < 0) | (labels >= num_classes))
  if len(bad):
    i = int(bad[0])
    raise ValueError(f"{name}: label {labels[i].item()!r} at index {i} ({len(bad)} bad in all); "
                     f"labels must be integers in [0, {num_classes})")
  return labels.astype(np.int32)


def array_source(name, images, labels, num_classes, mean=None, std=None):
  """A `Source` over in-memory uint8 images (N, H, W, C) and integer labels (N,)
  in [0, num_classes)."""
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(f"{name}: images must be uint8 (N, H, W, C), got {images.dtype} "
                     f"{images.shape}")
  labels = check_labels(name, labels, num_classes, len(images))
  if mean is None:
    mean, std = channel_stats(images)

  def read(indices):
    return images[indices], labels[indices]

  return Source(name=name, num_examples=len(images), num_classes=int(num_classes),
                image_shape=tuple(images.shape[1:]), channels=images.shape[-1],
                mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
                read=read)


def channel_stats(images):
  """Per-channel mean and std (0..255 scale) of uint8 images (N, H, W, C)."""
  pixels = images.reshape(-1, images.shape[-1]).astype(np.float64)
  std = pixels.std(axis=0)
  return pixels.mean(axis=0), np.where(std > 0, std, 1.0)
