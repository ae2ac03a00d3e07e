"""Images/s per host core of the ImageNet train transform (Tables 6–7), old vs new.

Makes JPEGs at ImageNet sizes (500×375 and the like, smooth content plus
noise, quality 90) in memory, then times, interleaved in the same run (best of
``--repeats``), for each recipe (``deit``: 1 split + Mixup/CutMix; ``cnn``: the
CNN recipe's 3 augmentation splits):

* ``old``: the path before the host/device split (``benchmarks/input_baseline.py``):
  full-size decode, float32 on the host (normalise, numpy erasing noise), the
  per-batch Mixup/CutMix in numpy.
* ``new``: ``bort_jax.data``'s iterator over the JPEG bytes (``finish=False``): the
  crop box drawn from the JPEG header, decode at 1/2–1/8 size when the box allows,
  uint8 PIL ops, erasing/mixing parameters drawn on the host. What the host does.
* ``finish``: the device half (``finish_batch``: normalise, erasing noise, mixing,
  targets), jitted on jax's default device (this CPU without an accelerator), per
  image including the copy there; on an accelerator it is not host work.

Each path runs ``serial`` (one thread: the per-core rate) and with ``threads``
(what the iterator runs). Printed: images/s, per core, the 16-core projection
(per-core × 16) against the 5,000 img/s target, new vs old, the bytes per image
that cross to the device, and how far the reduced-size decode moves the output
(mean |Δ| and PSNR of the new uint8 output vs the same draws decoded at full
size), with the load average (timings on a shared machine are noisy).

    python -m benchmarks.bench_input [--recipes deit,cnn] [--images 96] [--repeats 3]
"""

from __future__ import annotations

import concurrent.futures
import io
import os

import jax
import numpy as np
from PIL import Image

from benchmarks import input_baseline
from benchmarks import timing
from benchmarks.results import write_json
from bort_jax.data import augment, base, finish
from bort_jax.data.iterator import DataIterator
from experiments import _cli
from bort_jax.train import recipes

# Table 2 rows whose Table 7 augmentation is timed: one split (DeiT) and the
# CNN recipe's three splits (clean + two augmented views, JSD loss).
RECIPES = {"deit": ("deit_small", "adamw"), "cnn": ("resnet50", "sgd")}
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
SIZES = ((500, 375), (375, 500), (500, 333), (640, 480), (500, 400))
NUM_CLASSES = 1000
TARGET_IMAGES_PER_SEC = 5000
HOST_CORES = 16


def make_jpegs(count: int, seed: int = 0) -> list[bytes]:
  """``count`` JPEG files (bytes) at ImageNet-like sizes."""
  rng = np.random.default_rng(seed)
  files = []
  for i in range(count):
    width, height = SIZES[i % len(SIZES)]
    coarse = rng.integers(0, 256, (height // 25 + 1, width // 25 + 1, 3),
                          dtype=np.uint8)
    smooth = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
    pixels = np.asarray(smooth, np.int16) + rng.integers(-20, 21,
                                                         (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
        buffer, "JPEG", quality=90)
    files.append(buffer.getvalue())
  return files


def train_transform(recipe: str, reduced_decode=True) -> augment.ExampleTransform:
  config = recipes.imagenet(*RECIPES[recipe])
  plan = augment.make_plan(config.augment)
  return augment.ExampleTransform(
      plan=plan, train=True, crop_size=(plan.crop_size, plan.crop_size),
      eval_resize=None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
      reduced_decode=reduced_decode)


def jpeg_iterator(jpegs, transform, batch, threads) -> DataIterator:
  """The library's iterator over the JPEG bytes, yielding host batches."""
  labels = np.arange(len(jpegs), dtype=np.int32) % NUM_CLASSES
  source = base.Source(
      name="jpegs", num_examples=len(jpegs), num_classes=NUM_CLASSES,
      image_shape=None, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
      read=lambda indices: ([jpegs[i] for i in indices], labels[indices]))
  return DataIterator(source, transform, batch_size=batch, train=True, seed=0,
                      process_index=0, process_count=1, num_threads=threads,
                      finished=False)


def old_batch(jobs, transform, rng, pool):
  """One batch the old way: decode + float transform per image, then mixing."""
  one = lambda job: input_baseline.transform_example(
      input_baseline.decode(job[0]), np.random.default_rng(job[1]), transform)
  views = list(pool.map(one, jobs)) if pool else [one(job) for job in jobs]
  images = np.stack(views, axis=views[0].ndim - 3)
  labels = rng.integers(0, NUM_CLASSES, len(jobs))
  return input_baseline.mix_batch(images, labels, NUM_CLASSES, transform.plan, rng)


def time_old(recipe, jpegs, batch, threads) -> float:
  transform = train_transform(recipe)
  jobs = [(jpeg, seed) for seed, jpeg in enumerate(jpegs)]
  rng = np.random.default_rng(0)
  pool = concurrent.futures.ThreadPoolExecutor(threads) if threads > 1 else None
  try:
    old_batch(jobs[:threads], transform, rng, pool)  # warm-up
    return timing.timed(lambda: [
        old_batch(jobs[i:i + batch], transform, rng, pool)
        for i in range(0, len(jobs) - batch + 1, batch)])[0]
  finally:
    if pool:
      pool.shutdown()


def time_new(recipe, jpegs, batch, threads) -> tuple[float, list]:
  """Seconds for the host half over all whole batches, and those batches."""
  iterator = jpeg_iterator(jpegs, train_transform(recipe), batch, threads)
  try:
    iterator._batch(1, 0)  # warm-up (another epoch: the timed batches stay fresh)
    return timing.timed(
        lambda: [next(iterator) for _ in range(iterator.steps_per_epoch)])
  finally:
    iterator.close()


def time_finish(recipe, jpegs, batches, repeats) -> float:
  """Seconds per image of the jitted device half on this host's CPU."""
  iterator = jpeg_iterator(jpegs, train_transform(recipe), len(batches[0]["label"]), 1)
  jax.block_until_ready(iterator.finish(batches[0]))  # compile
  best = timing.best_seconds(
      lambda: [jax.block_until_ready(iterator.finish(b)) for b in batches],
      repeats)
  return best / (len(batches) * len(batches[0]["label"]))


def decode_error(recipe, jpegs) -> dict:
  """The new uint8 output with reduced-size decode vs the same draws at full size."""
  reduced, full = train_transform(recipe), train_transform(recipe, reduced_decode=False)
  diffs, scales = [], []
  for seed, jpeg in enumerate(jpegs):
    a = augment.transform_example(jpeg, np.random.default_rng(seed), reduced)["image"]
    b = augment.transform_example(jpeg, np.random.default_rng(seed), full)["image"]
    diffs.append(np.abs(a.astype(np.int16) - b).astype(np.float64))
    pil = Image.open(io.BytesIO(jpeg))
    _, _, h, w = augment.random_resized_crop_box(np.random.default_rng(seed),
                                                 pil.height, pil.width)
    scales.append(augment.draft_scale((h, w), reduced.crop_size))
  diffs, scales = np.stack(diffs), np.asarray(scales)
  psnr = lambda d: (float(10 * np.log10(255.0 ** 2 / np.mean(d ** 2)))
                    if np.mean(d ** 2) else float("inf"))
  reduced = diffs[scales > 1]
  return {"mean_abs_diff": float(diffs.mean()), "psnr_db": psnr(diffs),
          "reduced_mean_abs_diff": float(reduced.mean()) if len(reduced) else None,
          "reduced_psnr_db": psnr(reduced) if len(reduced) else None,
          "reduced_fraction": float(np.mean(scales > 1)),
          "scales": {int(s): int(np.sum(scales == s)) for s in sorted(set(scales))}}


def bytes_per_image(recipe, jpegs, host_batch) -> tuple[float, float]:
  """Bytes per example crossing to the device: old float batch vs new host batch."""
  transform = train_transform(recipe)
  n = len(host_batch["label"])
  jobs = [(jpeg, seed) for seed, jpeg in enumerate(jpegs[:n])]
  images, targets = old_batch(jobs, transform, np.random.default_rng(0), None)
  old = images.nbytes + targets.nbytes + 2 * 4 * n + n  # + label, mask
  return old / n, finish.batch_nbytes(host_batch) / n


def main(argv=None):
  parser = _cli.ArgumentParser(__doc__)
  parser.add_argument("--recipes", default=",".join(RECIPES))
  parser.add_argument("--images", type=int, default=96)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  if args.images < args.batch:
    parser.error(f"--images {args.images} must be >= --batch {args.batch}")
  jpegs = make_jpegs(args.images)
  timed = args.images - args.images % args.batch
  print(f"{args.images} JPEGs ({timed} timed), mean "
        f"{np.mean([len(j) for j in jpegs]) / 1e3:.0f} kB; {args.threads} thread(s) on "
        f"{os.cpu_count()} core(s); best of {args.repeats}; load average "
        f"{os.getloadavg()[0]:.1f}; projection: per-core rate x {HOST_CORES} vs "
        f"{TARGET_IMAGES_PER_SEC}")
  results = {"cores": os.cpu_count(), "threads": args.threads, "images": timed,
             "batch": args.batch, "load_before": os.getloadavg()[0], "recipes": {}}
  for recipe in args.recipes.split(","):
    best = {}
    batches = None
    for _ in range(args.repeats):  # interleaved: load changes hit both paths alike
      for way, threads in (("serial", 1), ("threads", args.threads)):
        old = time_old(recipe, jpegs, args.batch, threads)
        new, batches = time_new(recipe, jpegs, args.batch, threads)
        for path, seconds in (("old", old), ("new", new)):
          best[path, way] = min(best.get((path, way), float("inf")), seconds)
    finish_s = time_finish(recipe, jpegs, batches, args.repeats)
    error = decode_error(recipe, jpegs)
    old_bytes, new_bytes = bytes_per_image(recipe, jpegs, batches[0])
    rows = []
    reduced = ("" if error["reduced_psnr_db"] is None else
               f" (on the reduced crops alone {error['reduced_mean_abs_diff']:.2f}, "
               f"{error['reduced_psnr_db']:.1f} dB)")
    print(f"\n{recipe}: reduced-size decode for {error['reduced_fraction']:.0%} of the "
          f"crops (scale: count {error['scales']}); vs full decode mean |diff| "
          f"{error['mean_abs_diff']:.2f} / 255, PSNR {error['psnr_db']:.1f} dB{reduced}; "
          f"bytes per "
          f"image to the device {old_bytes / 1e3:.0f} kB -> {new_bytes / 1e3:.0f} kB "
          f"({old_bytes / new_bytes:.2f}x fewer); device half (finish_batch, jitted, "
          f"on {jax.devices()[0].platform}) {finish_s * 1e3:.2f} ms/img")
    print(f"{'path':<6}{'way':<9}{'img/s':>9}{'per core':>10}"
          f"{f'x{HOST_CORES} cores':>12}{'new/old':>9}")
    for way in ("serial", "threads"):
      workers = 1 if way == "serial" else args.threads
      for path in ("old", "new"):
        rate = timed / best[path, way]
        row = {"path": path, "way": way, "workers": workers, "images_per_sec": rate,
               "per_core": rate / workers,
               "projected_16_cores": HOST_CORES * rate / workers,
               "new_vs_old": best["old", way] / best[path, way]}
        rows.append(row)
        print(f"{path:<6}{way:<9}{rate:>9.1f}{row['per_core']:>10.1f}"
              f"{row['projected_16_cores']:>12.0f}{row['new_vs_old']:>9.2f}", flush=True)
    results["recipes"][recipe] = {
        "rows": rows, "finish_ms_per_image": finish_s * 1e3,
        "finish_platform": jax.devices()[0].platform,
        "bytes_per_image_old": old_bytes, "bytes_per_image_new": new_bytes,
        "decode": error}
  results["load_after"] = os.getloadavg()[0]
  print(f"\nload average after: {results['load_after']:.1f}")
  write_json(args.json, results)


if __name__ == "__main__":
  main()
