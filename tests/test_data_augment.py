"""Augmentation: Mixup/CutMix label mass, shapes and dtypes, timm parsing, knob errors."""

import math

import numpy as np
import pytest

from bort_jax import data
from bort_jax.data import augment


def _plan(**knobs):
  return augment.make_plan(knobs)


def _constant_batch(batch=6, size=8):
  """Example i is an image filled with the value i, labelled i."""
  values = np.arange(batch, dtype=np.float32)
  images = np.broadcast_to(values[:, None, None, None], (batch, size, size, 3)).copy()
  return images, np.arange(batch, dtype=np.int32)


@pytest.mark.parametrize("knobs", [
    {"mixup": 0.8}, {"cutmix": 1.0}, {"mixup": 0.8, "cutmix": 1.0},
    {"mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1}, {"label_smoothing": 0.1}])
def test_mixed_targets_rows_sum_to_one(knobs):
  images, labels = _constant_batch()
  for seed in range(5):
    _, targets = augment.mix_batch(images, labels, 10, _plan(**knobs),
                                   np.random.default_rng(seed))
    assert targets.shape == (6, 10) and targets.dtype == np.float32
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(targets >= 0)


def test_mixup_mixes_images_and_labels_with_the_same_lambda():
  images, labels = _constant_batch()
  mixed, targets = augment.mix_batch(images, labels, 6, _plan(mixup=0.8),
                                     np.random.default_rng(0))
  lam = targets[0, 0]
  assert 0 < lam < 1
  # Example i is mixed with the reversed batch's example 5 - i.
  expected = lam * np.arange(6) + (1 - lam) * np.arange(6)[::-1]
  np.testing.assert_allclose(mixed[:, 0, 0, 0], expected, rtol=1e-5)
  np.testing.assert_allclose(targets[np.arange(6), 5 - np.arange(6)], 1 - lam, rtol=1e-6)


def test_cutmix_label_mass_equals_pasted_area():
  images, labels = _constant_batch(size=16)
  for seed in range(8):
    mixed, targets = augment.mix_batch(images, labels, 6, _plan(cutmix=1.0),
                                       np.random.default_rng(seed))
    own = (mixed == images).all(axis=-1).mean(axis=(1, 2))  # fraction of own pixels
    partner = (mixed == images[::-1]).all(axis=-1).mean(axis=(1, 2))
    np.testing.assert_allclose(targets[np.arange(6), labels], own, atol=1e-6)
    np.testing.assert_allclose(targets[np.arange(6), labels[::-1]], partner, atol=1e-6)


def test_mix_applies_the_same_mix_to_every_aug_split():
  images, labels = _constant_batch(size=16)
  splits = np.stack([images, images + 10, images + 20])
  mixed, targets = augment.mix_batch(splits, labels, 6, _plan(cutmix=1.0),
                                     np.random.default_rng(3))
  assert mixed.shape == splits.shape
  np.testing.assert_array_equal(mixed[1] - 10, mixed[0])
  np.testing.assert_array_equal(mixed[2] - 20, mixed[0])
  assert targets.shape == (6, 6)


def test_random_erasing_keeps_shape_dtype_and_erases_a_bounded_box():
  image = np.zeros((32, 24, 3), np.float32)
  for seed in range(10):
    erased = augment.random_erasing(image, np.random.default_rng(seed), prob=1.0)
    assert erased.shape == image.shape and erased.dtype == np.float32
    changed = (erased != 0).any(axis=-1)
    rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
    area = (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
    assert changed.sum() == area  # one filled rectangle
    assert 0.02 * 32 * 24 * 0.5 <= area <= 32 * 24 / 3 * 1.5  # timm's (0.02, 1/3) scale
  untouched = augment.random_erasing(image, np.random.default_rng(0), prob=0.0)
  assert untouched is image
  assert np.all(image == 0)  # erasing works on a copy


def test_random_resized_crop_keeps_dtype_and_box_obeys_scale_and_ratio():
  image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
  for seed in range(20):
    rng = np.random.default_rng(seed)
    top, left, h, w = augment.random_resized_crop_box(rng, 60, 80)
    assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 80
    assert 0.08 * 4800 * 0.8 <= h * w <= 4800 and 3 / 4 * 0.8 <= w / h <= 4 / 3 * 1.2
    out = augment.from_pil(augment.random_resized_crop(
        augment.to_pil(image), np.random.default_rng(seed), (24, 20)))
    assert out.shape == (24, 20, 3) and out.dtype == np.uint8
  gray = augment.to_pil(image[..., :1])
  out = augment.random_resized_crop(gray, np.random.default_rng(0), (16, 16))
  assert augment.from_pil(out).shape == (16, 16, 1)


def test_eval_resize_and_center_crop():
  image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
  crop = lambda x, *args: augment.from_pil(
      augment.resize_center_crop(augment.to_pil(x), *args))
  out = crop(image, 256, (224, 224))
  assert out.shape == (224, 224, 3) and out.dtype == np.uint8
  # No resize needed: exactly the central window.
  np.testing.assert_array_equal(crop(image, None, (100, 200)), image[100:200, 100:300])
  np.testing.assert_array_equal(crop(image, 300, (100, 200)), image[100:200, 100:300])
  with pytest.raises(ValueError, match="smaller than the crop"):
    crop(image[:50, :50], None, (64, 64))


@pytest.mark.parametrize("channels", [1, 3])
def test_every_rand_augment_op_keeps_shape_and_dtype(channels):
  image = np.random.default_rng(0).integers(0, 256, (20, 18, channels), dtype=np.uint8)
  pil = augment.to_pil(image)
  fill = 128 if channels == 1 else (128, 128, 128)
  for level in (0.0, 0.5, 1.0):  # magnitude 0 and mmax are reachable with mstd > 0
    for name, op in augment.RAND_AUGMENT_OPS.items():
      out = augment.from_pil(op(pil, level, np.random.default_rng(0), fill))
      assert out.shape == image.shape and out.dtype == np.uint8, (name, level)
  # Posterize keeps the 4 * level most significant bits.
  posterize = augment.RAND_AUGMENT_OPS["Posterize"]
  np.testing.assert_array_equal(
      augment.from_pil(posterize(pil, 0.5, None, fill)), image & 0b11000000)
  assert not augment.from_pil(posterize(pil, 0.0, None, fill)).any()
  spec = augment.parse_rand_augment("rand-n3-m9-mstd0.5")
  out = augment.rand_augment(pil, np.random.default_rng(1), spec, (128.0,) * channels)
  assert augment.from_pil(out).shape == image.shape


def test_rand_augment_strings_parse_like_timm():
  assert augment.parse_rand_augment("rand-m9-mstd0.5") == augment.RandAugmentSpec(
      num_ops=2, magnitude=9.0, magnitude_std=0.5, magnitude_max=10.0)
  assert augment.parse_rand_augment("m7-mstd0.5") == augment.RandAugmentSpec(
      2, 7.0, 0.5, 10.0)
  assert augment.parse_rand_augment("rand-n1-m5-mmax20").magnitude_max == 20.0
  with pytest.raises(ValueError, match="unsupported part 'inc1'"):
    augment.parse_rand_augment("rand-m9-mstd0.5-inc1")
  with pytest.raises(ValueError, match="bad value in 'mx'"):
    augment.parse_rand_augment("rand-mx")
  with pytest.raises(ValueError, match="0 <= m <= mmax"):
    augment.parse_rand_augment("rand-m12")


@pytest.mark.parametrize("knobs,match", [
    ({"auto_augment": "v0"}, "unknown augment knob.*auto_augment"),
    ({"mixup_prob": 1.0}, "unknown augment knob.*mixup_prob"),
    ({"random_erasing": 1.5}, "random_erasing must be a probability"),
    ({"mixup": -1.0}, "mixup must be a number >= 0"),
    ({"flip": "yes"}, "flip must be a bool"),
    ({"aug_splits": 0}, "aug_splits must be an int >= 1"),
    ({"aug_splits": 3, "flip": True}, "aug_splits=3 needs"),
    ({"interpolation": "lanczos"}, "interpolation 'lanczos'"),
    ({"rand_augment": "rand-m9-w0"}, "unsupported part 'w0'"),
])
def test_unknown_or_unsupported_knobs_raise(knobs, match):
  with pytest.raises(ValueError, match=match):
    augment.make_plan(knobs)
  with pytest.raises(ValueError, match=match):
    data.load("digits", split="train", batch_size=8, train=True, augment=knobs)


def test_config_dict_knobs_are_accepted():
  import ml_collections  # pinned: a missing package must fail
  plan = augment.make_plan(ml_collections.ConfigDict({"flip": True, "mixup": 0.2}))
  assert plan.flip and plan.mixup == 0.2 and plan.mixes


def test_three_splits_through_load_give_clean_and_augmented_views():
  primary = {"random_resized_crop": True, "flip": True, "crop_size": 20}
  kwargs = dict(split="train", batch_size=8, train=True, seed=1)
  split_batch = next(data.load("digits", augment={**primary, "aug_splits": 3,
                                                  "random_erasing": 1.0}, **kwargs))
  clean_batch = next(data.load("digits", augment=primary, **kwargs))
  assert split_batch["image"].shape == (3, 8, 20, 20, 1)
  assert split_batch["image"].dtype == np.float32
  # The clean view gets primary + normalise only; the others are erased.
  np.testing.assert_array_equal(split_batch["image"][0], clean_batch["image"])
  assert not np.array_equal(split_batch["image"][1], split_batch["image"][0])
  assert not np.array_equal(split_batch["image"][1], split_batch["image"][2])


def test_imagenet_recipe_shapes_on_synthetic_images():
  deit = {"random_resized_crop": True, "flip": True, "rand_augment": "rand-m9-mstd0.5",
          "mixup": 0.8, "cutmix": 1.0, "random_erasing": 0.25, "color_jitter": 0.3,
          "label_smoothing": 0.1, "crop_size": 32}
  batch = next(data.load("synthetic:100", split="train", batch_size=4, train=True,
                         image_size=(40, 48, 3), augment=deit))
  assert batch["image"].shape == (4, 32, 32, 3) and batch["targets"].shape == (4, 100)
  np.testing.assert_allclose(batch["targets"].sum(1), 1.0, rtol=1e-6)
  assert math.isfinite(float(np.abs(batch["image"]).max()))
