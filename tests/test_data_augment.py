"""Augmentation: Mixup/CutMix label mass, shapes and dtypes, timm parsing, knob errors."""

import math

import numpy as np
from PIL import Image
import pytest

from bort_jax import data
from bort_jax.data import augment, finish


def _plan(**knobs):
  return augment.make_plan(knobs)


def _constant_batch(batch=6, size=8):
  """Example i is a uint8 image filled with the value 10·i, labelled i."""
  values = 10 * np.arange(batch, dtype=np.uint8)
  images = np.broadcast_to(values[:, None, None, None], (batch, size, size, 3)).copy()
  return images, np.arange(batch, dtype=np.int32)


_IDENTITY = ((0.0,) * 3, (1.0,) * 3)  # mean, std that leave pixel values as they are


def _finish(images, labels, num_classes, plan, seed, smoothing=None):
  """The host draws of `plan` for one batch, then the device finish."""
  augment_params = augment.mix_params(np.random.default_rng(seed), plan,
                                      *images.shape[-3:-1], len(labels))
  spec = finish.FinishSpec(*_IDENTITY, num_classes=num_classes,
                           label_smoothing=plan.label_smoothing)
  out = finish.finish_batch({"image": images, "label": labels, "mask": labels >= 0,
                             "augment": augment_params}, spec)
  return np.asarray(out["image"]), np.asarray(out["targets"]), augment_params


@pytest.mark.parametrize("knobs", [
    {"mixup": 0.8}, {"cutmix": 1.0}, {"mixup": 0.8, "cutmix": 1.0},
    {"mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1}])
def test_mixed_targets_rows_sum_to_one(knobs):
  images, labels = _constant_batch()
  for seed in range(5):
    _, targets, _ = _finish(images, labels, 10, _plan(**knobs), seed)
    assert targets.shape == (6, 10) and targets.dtype == np.float32
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(targets >= 0)


def test_mixup_mixes_images_and_labels_with_the_same_lambda():
  images, labels = _constant_batch()
  mixed, targets, params = _finish(images, labels, 6, _plan(mixup=0.8), 0)
  lam = targets[0, 0]
  assert 0 < lam < 1 and not params["mix_cutmix"].any()
  np.testing.assert_allclose(params["mix_lam"], lam)
  # Example i is mixed with the reversed batch's example 5 - i.
  values = 10 * np.arange(6.0)
  np.testing.assert_allclose(mixed[:, 0, 0, 0], lam * values + (1 - lam) * values[::-1],
                             rtol=1e-5)
  np.testing.assert_allclose(targets[np.arange(6), 5 - np.arange(6)], 1 - lam, rtol=1e-6)


def test_cutmix_label_mass_equals_pasted_area():
  images, labels = _constant_batch(size=16)
  for seed in range(8):
    mixed, targets, _ = _finish(images, labels, 6, _plan(cutmix=1.0), seed)
    own = (mixed == images).all(axis=-1).mean(axis=(1, 2))  # fraction of own pixels
    partner = (mixed == images[::-1]).all(axis=-1).mean(axis=(1, 2))
    np.testing.assert_allclose(targets[np.arange(6), labels], own, atol=1e-6)
    np.testing.assert_allclose(targets[np.arange(6), labels[::-1]], partner, atol=1e-6)


def test_mix_applies_the_same_mix_to_every_aug_split():
  images, labels = _constant_batch(size=16)
  splits = np.stack([images, images + 1, images + 2])
  mixed, targets, _ = _finish(splits, labels, 6, _plan(cutmix=1.0), 3)
  assert mixed.shape == splits.shape
  np.testing.assert_array_equal(mixed[1] - 1, mixed[0])
  np.testing.assert_array_equal(mixed[2] - 2, mixed[0])
  assert targets.shape == (6, 6)


def test_erase_params_draw_a_bounded_box_and_a_key():
  for seed in range(10):
    box, key = augment.erase_params(np.random.default_rng(seed), 1.0, 32, 24)
    top, left, h, w = box
    assert box.dtype == np.int32 and key.dtype == np.uint32 and key.shape == (2,)
    assert 0 <= top and top + h <= 32 and 0 <= left and left + w <= 24
    assert 0.02 * 32 * 24 * 0.5 <= h * w <= 32 * 24 / 3 * 1.5  # timm's (0.02, 1/3) scale
  box, key = augment.erase_params(np.random.default_rng(0), 0.0, 32, 24)
  assert not box.any() and not key.any()  # not erased: an empty box


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
  fill = augment.Geometry(128 if channels == 1 else (128, 128, 128), Image.BILINEAR)
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


# ---------------------------------------------- op values at a known magnitude


class _FixedRng:
  """Stands in for the numpy Generator: random() decides the sign of signed ops
  (< 0.5 keeps it positive); uniform() returns its upper bound; permutation()
  keeps the order."""

  def __init__(self, random=0.0):
    self._random = random

  def random(self):
    return self._random

  def uniform(self, low, high):
    return high

  def permutation(self, n):
    return np.arange(n)


_H, _W = 12, 16
_YY, _XX = np.mgrid[0:_H, 0:_W]
_RAMP_X = np.repeat((10 * _XX + 20)[..., None], 3, -1).astype(np.uint8)
_RAMP_Y = np.repeat((10 * _YY + 20)[..., None], 3, -1).astype(np.uint8)
_RGB = np.random.default_rng(5).integers(0, 256, (_H, _W, 3), dtype=np.uint8)


def _op(name, image, level, sign=+1, fill=(0, 0, 0)):
  rng = _FixedRng(0.0 if sign > 0 else 0.9)
  pil = augment.RAND_AUGMENT_OPS[name](augment.to_pil(image), level, rng,
                                       augment.Geometry(fill, Image.BILINEAR))
  return augment.from_pil(pil).astype(np.float64)


def _gray(image):
  """ITU-R 601-2 luma, PIL's "L" conversion (rounded to uint8 levels)."""
  return np.round(image[..., 0] * 0.299 + image[..., 1] * 0.587
                  + image[..., 2] * 0.114)


def _blend(degenerate, x, f):
  """PIL's enhance: degenerate + f·(x − degenerate), truncated into 0..255."""
  return np.clip(np.trunc(degenerate + f * (x - degenerate)), 0, 255)


@pytest.mark.parametrize("sign", [+1, -1])
def test_geometric_ops_move_pixels_by_the_expected_amount(sign):
  """Level 0.5 of timm's ranges: shear 0.15, translate 0.225 of the side.

  A linear ramp is reproduced exactly by bilinear sampling, so the output at
  (x, y) must be ramp(x + 0.15·y) for ShearX (PIL maps output to input)."""
  s, t = sign * 0.15, sign * 0.225
  for name, ramp, coord in [
      ("ShearX", _RAMP_X, _XX + s * _YY), ("ShearY", _RAMP_Y, _YY + s * _XX),
      ("TranslateXRel", _RAMP_X, _XX + t * _W),
      ("TranslateYRel", _RAMP_Y, _YY + t * _H)]:
    out = _op(name, ramp, 0.5, sign)
    side = _W if "X" in name else _H
    # PIL samples at pixel centres and truncates: within 0.15 px of the line.
    inside = (coord >= 1) & (coord <= side - 2)
    np.testing.assert_allclose(out[..., 0][inside], 10 * coord[inside] + 20,
                               atol=1.5, err_msg=name)
    assert np.all(out[..., 0][(coord < -1) | (coord > side)] == 0), name


@pytest.mark.parametrize("sign", [+1, -1])
def test_rotate_turns_by_thirty_degrees_times_level(sign):
  """A bright dot 12 px right of the centre ends at the rotated angle (PIL
  rotates counter-clockwise for a positive angle); exposed corners get fill."""
  image = np.zeros((33, 33, 3), np.uint8)
  image[15:18, 27:30] = 255  # dot centred at (row 16, col 28)
  out = _op("Rotate", image, 0.5, sign, fill=(7, 7, 7))[..., 0]
  weights = np.where(out > 7, out - 7, 0)
  rows, cols = np.mgrid[0:33, 0:33]
  dy = (weights * (rows - 16)).sum() / weights.sum()
  dx = (weights * (cols - 16)).sum() / weights.sum()
  angle = np.degrees(np.arctan2(-dy, dx))  # image rows grow downwards
  np.testing.assert_allclose(angle, sign * 15.0, atol=1.0)
  assert out[0, 0] == 7 and out[-1, -1] == 7


def test_pixel_ops_at_level_half():
  x = _RGB.astype(np.float64)
  np.testing.assert_array_equal(_op("Invert", _RGB, 0.5), 255 - x)
  # Solarize: threshold 256·0.5 = 128, pixels >= 128 inverted.
  np.testing.assert_array_equal(_op("Solarize", _RGB, 0.5),
                                np.where(x >= 128, 255 - x, x))
  # SolarizeAdd: +110·0.5 = 55 below 128, clipped to 255.
  np.testing.assert_array_equal(_op("SolarizeAdd", _RGB, 0.5),
                                np.where(x < 128, np.minimum(x + 55, 255), x))
  # Posterize: 4·0.75 = 3 most significant bits.
  np.testing.assert_array_equal(_op("Posterize", _RGB, 0.75), _RGB & 0b11100000)
  # AutoContrast: each channel stretched linearly onto [0, 255].
  low_contrast = (_RGB // 4 + 60).astype(np.uint8)
  lc = low_contrast.astype(np.float64)
  lo, hi = lc.min((0, 1)), lc.max((0, 1))
  np.testing.assert_allclose(_op("AutoContrast", low_contrast, 0.5),
                             (lc - lo) * 255 / (hi - lo), atol=1.0)


@pytest.mark.parametrize("level", [0.25, 0.75])
def test_enhance_ops_blend_with_their_degenerate_image(level):
  """timm's (non-'inc') factor 0.1 + 1.8·level, 0.55 and 1.45 here: Brightness
  blends with black, Contrast with the mean grey level, Color with the
  greyscale image (clipped to 0..255)."""
  f = 0.1 + 1.8 * level
  x = _RGB.astype(np.float64)
  blend = lambda degenerate: _blend(degenerate, x, f)
  np.testing.assert_allclose(_op("Brightness", _RGB, level), blend(0.0),
                             atol=1.0)
  mean = np.round(_gray(x).mean())  # PIL: int(mean of the "L" image + 0.5)
  np.testing.assert_allclose(_op("Contrast", _RGB, level), blend(mean),
                             atol=1.0)
  np.testing.assert_allclose(_op("Color", _RGB, level),
                             blend(_gray(x)[..., None]), atol=1.0)
  # Sharpness: the degenerate image is PIL's 3x3 SMOOTH (centre 5, others 1,
  # /13) inside, the image itself on the border.
  smooth = x.copy()
  padded = sum(x[1 + dy:_H - 1 + dy, 1 + dx:_W - 1 + dx]
               for dy in (-1, 0, 1) for dx in (-1, 0, 1)) + 4 * x[1:-1, 1:-1]
  smooth[1:-1, 1:-1] = np.round(padded / 13)
  np.testing.assert_allclose(_op("Sharpness", _RGB, level),
                             blend(smooth), atol=1.0)


def test_equalize_flattens_the_histogram():
  """Four grey levels in unequal amounts map to evenly spaced levels set by the
  cumulative histogram (PIL's rule: step = (N − count of the last level)/255)."""
  counts = np.array([512, 256, 160, 96])
  image = np.repeat(np.array([10, 20, 200, 210], np.uint8), counts)
  image = np.repeat(image.reshape(32, 32)[..., None], 3, -1)
  out = _op("Equalize", image, 0.5)
  step = (counts.sum() - counts[-1]) // 255
  cumulative = np.concatenate([[0], np.cumsum(counts)[:-1]])
  want = np.minimum((cumulative + step // 2) // step, 255)
  for level, w in zip([10, 20, 200, 210], want):
    assert np.all(out[image == level] == w), (level, w)


def test_flip_and_color_jitter_at_a_known_magnitude():
  """Flip mirrors the columns; colour jitter 0.4 with every factor at its top
  (1.4): brightness, contrast, then saturation, as numpy blends."""
  plan = _plan(flip=True)
  transform = augment.ExampleTransform(plan, True, (_H, _W), None, (0, 0, 0),
                                       (1, 1, 1))
  flipped = augment.transform_example(_RGB, _FixedRng(0.0), transform)
  np.testing.assert_array_equal(flipped["image"], _RGB[:, ::-1])
  kept = augment.transform_example(_RGB, _FixedRng(0.9), transform)
  np.testing.assert_array_equal(kept["image"], _RGB)

  dim = (_RGB // 2 + 40).astype(np.uint8)  # no clipping at factor 1.4
  out = augment.from_pil(augment.color_jitter(augment.to_pil(dim),
                                              _FixedRng(), 0.4))
  f = 1.4
  x = _blend(0.0, dim.astype(np.float64), f)                    # brightness
  x = _blend(np.round(_gray(x).mean()), x, f)                   # contrast
  x = _blend(_gray(x)[..., None], x, f)                         # saturation
  np.testing.assert_allclose(out, x, atol=2.0)  # three rounded stages
