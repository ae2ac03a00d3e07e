"""The offline default: scikit-learn's handwritten digits, laid out like MNIST.

The 1,797 8x8 digits (values 0..16) ship inside the scikit-learn wheel, so this dataset
needs no download. Each digit is upsampled bilinearly to 20x20 and centred in a 28x28
frame (MNIST's layout), scaled to 0..255 uint8, and split 80/20 (stratified, seed 0).
"""

import functools

import numpy as np

from bort_jax.data.base import array_source, channel_stats

DIGITS_SPLITS = ("train", "test")


@functools.lru_cache(maxsize=1)
def _digits_arrays():
  from scipy import ndimage
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  digits = load_digits()
  small = digits.images.astype(np.float32) / 16.0  # (N, 8, 8) in [0, 1]
  large = ndimage.zoom(small, (1, 2.5, 2.5), order=1, grid_mode=True, mode="nearest")
  framed = np.pad(large, ((0, 0), (4, 4), (4, 4)))
  images = np.round(np.clip(framed, 0.0, 1.0) * 255).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  train_x, test_x, train_y, test_y = train_test_split(
      images, labels, test_size=0.2, random_state=0, stratify=labels)
  return {"train": (train_x, train_y), "test": (test_x, test_y)}


def digits_source(split):
  """A `Source` of the digits split 'train' (1,437) or 'test' (360); 28x28x1, 10 classes."""
  if split not in DIGITS_SPLITS:
    raise ValueError(f"digits has splits {DIGITS_SPLITS}, got {split!r}")
  arrays = _digits_arrays()
  images, labels = arrays[split]
  return array_source("digits", images, labels, 10, *channel_stats(arrays["train"][0]))
