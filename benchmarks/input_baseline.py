"""The input pipeline before the uint8 host / float device split, kept as the baseline
of ``benchmarks/bench_input.py``: a copy of ``bort_jax.data.augment``'s per-example
path at commit 9d5b281 (full-size JPEG decode, float32 on the host: normalise, numpy
Random Erasing noise, per-batch Mixup/CutMix in numpy). The unchanged parts (the crop box,
RandAugment, colour jitter, the erasing and CutMix boxes) are imported from the library.
"""

import io

import numpy as np
from PIL import Image

from bort_jax.data import augment


def decode(jpeg):
  """The old source's decode: the whole JPEG, full size, as an RGB array."""
  return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def normalize(images, mean, std):
  if isinstance(images, Image.Image):
    images = augment.from_pil(images)
  scale = np.float32(1.0) / np.asarray(std, np.float32)
  return (images - np.asarray(mean, np.float32)) * scale


def random_erasing(image, rng, prob):
  box = augment.erase_box(rng, prob, *image.shape[:2])  # the box draws are unchanged
  if box is None:
    return image
  top, left, h, w = box
  erased = image.copy()
  erased[top:top + h, left:left + w] = rng.standard_normal((h, w, image.shape[2]),
                                                           dtype=np.float32)
  return erased


def transform_example(image, rng, transform):
  """One uint8 (h, w, C) image -> float32 (H, W, C), or (S, H, W, C) with S splits."""
  plan = transform.plan
  size = tuple(transform.crop_size)
  pil = augment.to_pil(image)
  interpolation = augment.INTERPOLATIONS[plan.interpolation]
  if transform.train and plan.random_resized_crop:
    top, left, h, w = augment.random_resized_crop_box(rng, pil.height, pil.width)
    pil = pil.resize((size[1], size[0]), interpolation, box=(left, top, left + w, top + h))
  elif transform.eval_resize is not None or image.shape[:2] != size:
    pil = augment.resize_center_crop(pil, transform.eval_resize, size, plan.interpolation)
  if not transform.train:
    return normalize(pil, transform.mean, transform.std)
  if plan.flip and rng.random() < 0.5:
    pil = pil.transpose(Image.FLIP_LEFT_RIGHT)

  def augmented():
    view = pil
    if plan.rand_augment is not None:
      view = augment.rand_augment(view, rng, plan.rand_augment, transform.mean,
                                  plan.interpolation)
    if plan.color_jitter > 0:
      view = augment.color_jitter(view, rng, plan.color_jitter)
    view = normalize(view, transform.mean, transform.std)
    if plan.random_erasing > 0:
      view = random_erasing(view, rng, plan.random_erasing)
    return view

  if plan.aug_splits == 1:
    return augmented()
  clean = normalize(pil, transform.mean, transform.std)
  return np.stack([clean] + [augmented() for _ in range(plan.aug_splits - 1)])


def mix_batch(images, labels, num_classes, plan, rng):
  """Mixup or CutMix with the reversed batch, plus label smoothing (float32 numpy)."""
  targets = augment.smooth_one_hot(labels, num_classes, plan.label_smoothing)
  if not plan.mixes:
    return images, targets
  batch_axis = images.ndim - 4
  partner = np.flip(images, axis=batch_axis)
  use_cutmix = plan.cutmix > 0 and (plan.mixup == 0 or rng.random() < plan.mixup_switch_prob)
  alpha = plan.cutmix if use_cutmix else plan.mixup
  lam = float(rng.beta(alpha, alpha))
  if use_cutmix:
    height, width = images.shape[-3:-1]
    top, bottom, left, right = augment.cutmix_box(rng, height, width, lam)
    images = images.copy()
    images[..., top:bottom, left:right, :] = partner[..., top:bottom, left:right, :]
    lam = 1.0 - (bottom - top) * (right - left) / (height * width)
  else:
    images = (lam * images + (1.0 - lam) * partner).astype(np.float32)
  return images, lam * targets + (1.0 - lam) * targets[::-1]
