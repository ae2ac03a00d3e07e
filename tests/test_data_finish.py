"""The device half (finish_batch) against numpy formulas, the host batch contract, and
decoding JPEGs at reduced size with the same random draws."""

import io

import jax
import numpy as np
import pytest
from jax.sharding import Mesh
from PIL import Image

from bort_jax import data
from bort_jax.data import augment, finish

MEAN, STD = (120.0, 110.0, 100.0), (60.0, 50.0, 40.0)


def _images(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _mix(batch, lam, box, cutmix):
  n = batch
  return {"mix_lam": np.full(n, lam, np.float32),
          "mix_box": np.tile(np.asarray(box, np.int32), (n, 1)),
          "mix_cutmix": np.full(n, cutmix)}


def _reference(images, labels, num_classes, smoothing, lam, box, cutmix):
  """numpy, float64: normalise; Mixup or CutMix with the reversed batch; targets."""
  x = (images.astype(np.float64) - np.asarray(MEAN)) / np.asarray(STD)
  partner = np.flip(x, axis=x.ndim - 4)
  if cutmix:
    top, bottom, left, right = box
    x = x.copy()
    x[..., top:bottom, left:right, :] = partner[..., top:bottom, left:right, :]
  else:
    x = lam * x + (1 - lam) * partner
  smooth = np.full((len(labels), num_classes), smoothing / num_classes)
  smooth[np.arange(len(labels)), labels] += 1 - smoothing
  return x, lam * smooth + (1 - lam) * smooth[::-1]


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("cutmix,lam,box", [(False, 0.3, (0, 0, 0, 0)),
                                            (True, 1 - 5 * 7 / 80, (2, 7, 1, 8))])
def test_finish_equals_the_numpy_reference(splits, cutmix, lam, box):
  shape = (6, 8, 10, 3) if splits == 1 else (splits, 6, 8, 10, 3)
  images, labels = _images(shape), np.array([3, 1, 4, 1, 5, 9], np.int32)
  spec = finish.FinishSpec(MEAN, STD, num_classes=10, label_smoothing=0.1)
  out = finish.finish_batch({"image": images, "label": labels, "mask": labels > 1,
                             "augment": _mix(6, lam, box, cutmix)}, spec)
  want_x, want_t = _reference(images, labels, 10, 0.1, lam, box, cutmix)
  assert out["image"].dtype == np.float32 and out["image"].shape == images.shape
  np.testing.assert_allclose(out["image"], want_x, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["targets"], want_t, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(out["label"], labels)
  np.testing.assert_array_equal(out["mask"], labels > 1)
  assert "augment" not in out


def test_finish_without_augment_only_normalises():
  images, labels = _images((4, 5, 6, 3)), np.arange(4, dtype=np.int32)
  spec = finish.FinishSpec(MEAN, STD, num_classes=4)
  out = finish.finish_batch({"image": images, "label": labels, "mask": labels >= 0}, spec)
  np.testing.assert_allclose(out["image"], (images - np.asarray(MEAN)) / np.asarray(STD),
                             rtol=1e-5, atol=1e-5)
  assert set(out) == {"image", "label", "mask"}  # no smoothing, no mix: hard labels
  smoothed = finish.finish_batch({"image": images, "label": labels, "mask": labels >= 0},
                                 spec._replace(label_smoothing=0.2))
  np.testing.assert_allclose(smoothed["targets"], np.eye(4) * 0.8 + 0.05, rtol=1e-6)


def test_erasing_noise_fills_exactly_the_box_with_standard_normals():
  images, labels = _images((4, 64, 48, 3)), np.arange(4, dtype=np.int32)
  boxes = np.array([[[8, 4, 40, 30]], [[0, 0, 0, 0]], [[8, 4, 40, 30]], [[1, 2, 3, 4]]],
                   np.int32)
  keys = np.array([[[1, 2]], [[1, 2]], [[3, 4]], [[1, 2]]], np.uint32)
  spec = finish.FinishSpec(MEAN, STD, num_classes=4)
  host = {"image": images, "label": labels, "mask": labels >= 0,
          "augment": {"erase_box": boxes, "erase_key": keys}}
  out = np.asarray(finish.finish_batch(host, spec)["image"])
  clean = (images - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
  for row, (top, left, h, w) in enumerate(boxes[:, 0]):
    inside = np.zeros((64, 48), bool)
    inside[top:top + h, left:left + w] = True
    np.testing.assert_allclose(out[row][~inside], clean[row][~inside], rtol=1e-6,
                               atol=1e-6)
    assert not np.isclose(out[row][inside], clean[row][inside]).any()
  noise = out[0, 8:48, 4:34]  # 40 x 30 x 3 = 3600 values
  assert abs(noise.mean()) < 0.06 and abs(noise.std() - 1) < 0.05
  assert abs(np.corrcoef(noise[..., 0].ravel(), noise[..., 1].ravel())[0, 1]) < 0.06
  assert not np.allclose(out[2, 8:48, 4:34], noise)  # another key, other noise
  # The noise is a function of the key alone, not of the row it lands in.
  moved = jax.tree.map(lambda a: a[[2, 3, 0, 1]], host)
  np.testing.assert_array_equal(finish.finish_batch(moved, spec)["image"][2], out[0])


def test_a_global_batch_mixes_each_process_block_alone():
  block = 4
  images, labels = _images((2 * block, 6, 6, 3)), np.arange(2 * block, dtype=np.int32)
  params = {k: np.concatenate([a, b]) for (k, a), b in zip(
      _mix(block, 0.3, (0, 0, 0, 0), False).items(),
      _mix(block, 0.8, (1, 4, 0, 5), True).values())}
  spec = finish.FinishSpec(MEAN, STD, num_classes=8, label_smoothing=0.1, mix_block=block)
  both = finish.finish_batch({"image": images, "label": labels, "mask": labels >= 0,
                              "augment": params}, spec)
  for part in (slice(0, block), slice(block, 2 * block)):
    alone = finish.finish_batch(
        {"image": images[part], "label": labels[part], "mask": labels[part] >= 0,
         "augment": {k: v[part] for k, v in params.items()}}, spec)
    for key in ("image", "targets"):
      np.testing.assert_allclose(both[key][part], alone[key], rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="not a whole number of mix blocks of 3"):
    finish.finish_batch({"image": images, "label": labels, "mask": labels >= 0,
                         "augment": params}, spec._replace(mix_block=3))


def test_finish_rejects_float_images_and_wrong_channel_counts():
  spec = finish.FinishSpec(MEAN, STD, num_classes=2)
  labels = np.zeros(2, np.int32)
  with pytest.raises(ValueError, match="uint8 .* got float32"):
    finish.finish_batch({"image": np.zeros((2, 4, 4, 3), np.float32), "label": labels},
                        spec)
  with pytest.raises(ValueError, match="3 mean / 3 std values for images with 1"):
    finish.finish_batch({"image": np.zeros((2, 4, 4, 1), np.uint8), "label": labels},
                        spec)


DEIT = {"random_resized_crop": True, "flip": True, "rand_augment": "rand-m9-mstd0.5",
        "mixup": 0.8, "cutmix": 1.0, "random_erasing": 0.5, "color_jitter": 0.3,
        "label_smoothing": 0.1, "crop_size": 16}


@pytest.mark.parametrize("knobs", [DEIT, {**DEIT, "aug_splits": 3, "mixup": 0.0}])
def test_host_batches_are_uint8_and_finish_like_load_does(knobs):
  kwargs = dict(split="train", batch_size=8, train=True, seed=2,
                image_size=(20, 24, 3), augment=knobs)
  host_it = data.load("synthetic:7", finish=False, **kwargs)
  host = next(host_it)
  splits = knobs.get("aug_splits", 1)
  lead = () if splits == 1 else (splits,)
  assert host["image"].dtype == np.uint8 and host["image"].shape == (*lead, 8, 16, 16, 3)
  assert host["augment"]["erase_box"].shape == (8, splits, 4)
  assert host["augment"]["erase_key"].dtype == np.uint32
  assert host["augment"]["mix_lam"].shape == (8,)
  if splits > 1:
    assert not host["augment"]["erase_box"][:, 0].any()  # the clean view
  finished = next(data.load("synthetic:7", **kwargs))
  assert finished["image"].dtype == np.float32 and "augment" not in finished
  jax.tree.map(np.testing.assert_array_equal, finished,
               jax.device_get(host_it.finish(host)))
  # Sharded over 8 devices, the global batch finishes to the same numbers.
  mesh = Mesh(np.asarray(jax.devices()[:8]), ("data",))
  sharded = host_it.finish(data.shard_batch(host, mesh))
  assert sharded["image"].sharding.spec[len(lead)] == "data"
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
               finished, jax.device_get(sharded))


# ---------------------------------------------------------------- reduced decode


def _jpeg(height, width, seed=0):
  coarse = np.random.default_rng(seed).integers(0, 256, (height // 16, width // 16, 3),
                                                dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(coarse).resize((width, height), Image.BICUBIC).save(buffer, "JPEG",
                                                                     quality=92)
  return buffer.getvalue()


def test_reduced_decode_keeps_the_draws_and_stays_close_to_full_decode():
  jpeg = _jpeg(240, 320)
  plan = augment.make_plan({"random_resized_crop": True, "flip": True,
                            "rand_augment": "rand-m9-mstd0.5", "random_erasing": 0.5})
  reduced = augment.ExampleTransform(plan, True, (24, 24), None, MEAN, STD)
  full = reduced._replace(reduced_decode=False)
  scales = []
  for seed in range(12):
    rngs = [np.random.default_rng(seed) for _ in range(3)]
    a = augment.transform_example(jpeg, rngs[0], reduced)
    b = augment.transform_example(jpeg, rngs[1], full)
    # The same box as drawn from the header's size, and the same draws after it.
    _, _, h, w = augment.random_resized_crop_box(rngs[2], 240, 320)
    scales.append(augment.draft_scale((h, w), (24, 24)))
    # Decoded at 1/s only while the box keeps at least the output's pixels.
    assert h / scales[-1] >= 24 and w / scales[-1] >= 24
    assert scales[-1] == 8 or h < 2 * scales[-1] * 24 or w < 2 * scales[-1] * 24
    assert rngs[0].bit_generator.state == rngs[1].bit_generator.state
    for key in ("erase_box", "erase_key"):
      np.testing.assert_array_equal(a[key], b[key])
    assert a["image"].dtype == np.uint8 and a["image"].shape == (24, 24, 3)
    diff = np.abs(a["image"].astype(int) - b["image"])
    assert diff.mean() < 4, (seed, diff.mean())
    if scales[-1] == 1:
      np.testing.assert_array_equal(a["image"], b["image"])
  assert max(scales) >= 4  # the reduced path did run (boxes >= 4 x 24 px)


def test_the_split_pipeline_reproduces_the_float_host_path_draw_for_draw():
  """Same rng: the new uint8 view + device finish equals the old float host path
  (benchmarks/input_baseline.py) everywhere but inside the erased box, whose noise
  now comes from the device."""
  from benchmarks import input_baseline
  jpeg = _jpeg(240, 320, seed=1)
  plan = augment.make_plan({"random_resized_crop": True, "flip": True,
                            "rand_augment": "rand-m9-mstd0.5", "color_jitter": 0.3,
                            "random_erasing": 0.7})
  transform = augment.ExampleTransform(plan, True, (24, 24), None, MEAN, STD,
                                       reduced_decode=False)
  spec = finish.FinishSpec(MEAN, STD, num_classes=2)
  erased = 0
  for seed in range(8):
    old = input_baseline.transform_example(input_baseline.decode(jpeg),
                                           np.random.default_rng(seed), transform)
    new = augment.transform_example(jpeg, np.random.default_rng(seed), transform)
    host = {"image": new["image"][None], "label": np.zeros(1, np.int32),
            "augment": {"erase_box": new["erase_box"][None],
                        "erase_key": new["erase_key"][None]}}
    got = np.asarray(finish.finish_batch(host, spec)["image"][0])
    top, left, h, w = new["erase_box"][0]
    outside = np.ones((24, 24), bool)
    outside[top:top + h, left:left + w] = False
    np.testing.assert_allclose(got[outside], old[outside], rtol=1e-5, atol=1e-5)
    erased += h * w > 0
  assert 0 < erased < 8
