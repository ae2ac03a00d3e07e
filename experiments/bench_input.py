"""Images/s per host core of the ImageNet train transform (Tables 6–7).

Makes JPEGs at ImageNet sizes (500×375 and the like, smooth content plus
noise, quality 90) in memory, then times JPEG decode + ``transform_example``
(random-resized crop 224, flip, RandAugment, colour jitter, random erasing,
the recipe's augmentation splits) + the recipe's per-batch Mixup/CutMix,
three ways in the same run:

* ``serial``: one thread; its rate is the per-core baseline.
* ``threads``: ``ThreadPoolExecutor`` over all host cores (what
  ``bort_jax.data``'s iterator runs). PIL releases the GIL inside decode and
  most ops, numpy inside large array ops; the Python glue between them does not.
* ``processes``: a ``multiprocessing`` pool over all host cores (what
  grain's worker processes would give), results pickled back to the parent.

It prints images/s, per-core images/s and each way's projection to a
16-core host (per-core rate × 16), against the 5,000 img/s target.

    python -m experiments.bench_input [--recipes deit,cnn] [--images 128]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import multiprocessing
import os
import time

import numpy as np
from PIL import Image

from bort_jax.data import augment
from experiments.configs import recipes

# Table 2 rows whose Table 7 augmentation is timed: one split (DeiT) and the
# CNN recipe's three splits (clean + two augmented views, JSD loss).
RECIPES = {"deit": ("deit_small", "adamw"), "cnn": ("resnet50", "sgd")}
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
SIZES = ((500, 375), (375, 500), (500, 333), (640, 480), (500, 400))
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


def train_transform(recipe: str) -> augment.ExampleTransform:
  config = recipes.imagenet(*RECIPES[recipe])
  plan = augment.make_plan(config.augment)
  return augment.ExampleTransform(
      plan=plan, train=True, crop_size=(plan.crop_size, plan.crop_size),
      eval_resize=None, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def decode_and_transform(jpeg: bytes, seed: int,
                         transform: augment.ExampleTransform) -> np.ndarray:
  image = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
  return augment.transform_example(image, np.random.default_rng(seed),
                                   transform)


_WORKER_TRANSFORM = None


def _worker_init(recipe):
  global _WORKER_TRANSFORM
  _WORKER_TRANSFORM = train_transform(recipe)


def _worker(job):
  jpeg, seed = job
  return decode_and_transform(jpeg, seed, _WORKER_TRANSFORM)


def mix(views: list[np.ndarray], transform, rng) -> None:
  """The per-batch stage: stack, then Mixup/CutMix + label smoothing."""
  images = np.stack(views, axis=views[0].ndim - 3)
  labels = rng.integers(0, 1000, images.shape[images.ndim - 4])
  augment.mix_batch(images, labels, 1000, transform.plan, rng)


def time_way(way: str, recipe: str, jpegs, workers: int, batch: int) -> float:
  """Seconds for all ``jpegs`` (transform + per-batch mixing)."""
  transform = train_transform(recipe)
  jobs = [(jpeg, seed) for seed, jpeg in enumerate(jpegs)]
  rng = np.random.default_rng(0)
  if way == "processes":
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, _worker_init, (recipe,)) as pool:
      pool.map(_worker, jobs[:workers])  # start-up and imports, not timed
      start = time.perf_counter()
      for i in range(0, len(jobs), batch):
        mix(pool.map(_worker, jobs[i:i + batch], chunksize=4), transform, rng)
      return time.perf_counter() - start
  one = lambda job: decode_and_transform(job[0], job[1], transform)
  if way == "threads":
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      list(pool.map(one, jobs[:workers]))
      start = time.perf_counter()
      for i in range(0, len(jobs), batch):
        mix(list(pool.map(one, jobs[i:i + batch])), transform, rng)
      return time.perf_counter() - start
  one(jobs[0])
  start = time.perf_counter()
  for i in range(0, len(jobs), batch):
    mix([one(job) for job in jobs[i:i + batch]], transform, rng)
  return time.perf_counter() - start


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--recipes", default=",".join(RECIPES))
  parser.add_argument("--images", type=int, default=128)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  jpegs = make_jpegs(args.images)
  print(f"{args.images} JPEGs, mean {np.mean([len(j) for j in jpegs]) / 1e3:.0f}"
        f" kB; {args.workers} worker(s) on {os.cpu_count()} core(s); "
        f"projection: per-core rate x {HOST_CORES} vs {TARGET_IMAGES_PER_SEC}")
  print(f"{'recipe':<7}{'way':<11}{'img/s':>9}{'per core':>10}"
        f"{f'x{HOST_CORES} cores':>12}{'vs serial':>11}")
  rows = []
  for recipe in args.recipes.split(","):
    serial = None
    for way in ("serial", "threads", "processes"):
      workers = 1 if way == "serial" else args.workers
      seconds = time_way(way, recipe, jpegs, workers, args.batch)
      rate = args.images / seconds
      serial = serial or rate
      row = {"recipe": recipe, "way": way, "workers": workers,
             "images_per_sec": rate, "per_core": rate / workers,
             "projected_16_cores": HOST_CORES * rate / workers,
             "vs_serial": rate / serial}
      rows.append(row)
      print(f"{recipe:<7}{way:<11}{rate:>9.1f}{row['per_core']:>10.1f}"
            f"{row['projected_16_cores']:>12.0f}{row['vs_serial']:>11.2f}",
            flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"cores": os.cpu_count(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
  main()
