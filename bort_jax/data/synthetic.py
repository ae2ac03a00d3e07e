"""Random images for throughput runs: every example is a pure function of (seed, index)."""

import numpy as np

from bort_jax.data.base import Source

SYNTHETIC_SIZES = {"train": 50_000, "test": 10_000}
# Uniform uint8 pixels have mean 127.5 and std sqrt((256^2 - 1) / 12).
_UNIFORM_MEAN, _UNIFORM_STD = 127.5, float(np.sqrt((256.0**2 - 1) / 12))


def synthetic_source(split, *, image_shape=(28, 28, 1), num_classes=10, seed=0):
  """A `Source` of uniformly random uint8 images and labels, generated on read."""
  if split not in SYNTHETIC_SIZES:
    raise ValueError(f"synthetic has splits {sorted(SYNTHETIC_SIZES)}, got {split!r}")
  image_shape = tuple(int(d) for d in image_shape)
  if len(image_shape) != 3 or min(image_shape) < 1:
    raise ValueError(f"synthetic image_shape must be (H, W, C) >= 1, got {image_shape}")
  if num_classes < 1:
    raise ValueError(f"synthetic num_classes must be >= 1, got {num_classes}")
  split_tag = 0 if split == "train" else 1

  def read(indices):
    indices = np.asarray(indices)
    images = np.empty((len(indices), *image_shape), np.uint8)
    labels = np.empty(len(indices), np.int32)
    for row, index in enumerate(indices):  # one generator per example, not per pixel
      rng = np.random.default_rng([seed, split_tag, int(index)])
      labels[row] = rng.integers(num_classes)
      images[row] = rng.integers(0, 256, image_shape, dtype=np.uint8)
    return images, labels

  channels = image_shape[-1]
  return Source(name="synthetic", num_examples=SYNTHETIC_SIZES[split],
                num_classes=int(num_classes), image_shape=image_shape, channels=channels,
                mean=(_UNIFORM_MEAN,) * channels, std=(_UNIFORM_STD,) * channels,
                read=read)
