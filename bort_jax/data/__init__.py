"""Data: tfds (TF-free), IDX directories, scikit-learn digits, synthetic; augmentation;
deterministic resumable per-process iterators; global batch sharding.

  it = bort_jax.data.load("digits", split="train", batch_size=256, train=True, seed=0)
  batch = next(it)        # {'image': (B, 28, 28, 1) float32, 'label': int32, 'mask': bool}
  batch = bort_jax.data.shard_batch(batch, mesh)   # global jax.Arrays on the data axis

The pipeline has two halves. The host half (`iterator.py`, `augment.py`; decode,
crops, flips, RandAugment, colour jitter in uint8 PIL, in a thread pool) makes the
host batch: {'image': uint8 (B, H, W, C) or (S, B, H, W, C), 'label', 'mask'} plus,
when the recipe erases or mixes, 'augment': the random parameters of the float stages
drawn from the same seeds (per example: 'erase_box' (B, S, 4), 'erase_key' (B, S, 2);
per batch, repeated per example: 'mix_lam', 'mix_box', 'mix_cutmix'). The float half,
`finish_batch(batch, spec)` (jitted; `iterator.finish(batch)` brings the spec),
normalises, erases, mixes and makes the soft 'targets'. `load` yields finished numpy
batches by default; a training loop asks for the host batch (`finish=False`), shards it
and finishes it on the accelerators, so a quarter of the bytes cross:

  it = bort_jax.data.load("imagenet2012", split="train", batch_size=128, train=True,
                          augment=recipe, finish=False)
  batch = it.finish(bort_jax.data.shard_batch(next(it), mesh))   # float, sharded

Both are pure functions of (seed, epoch, step, process), so resuming from
`it.get_state()` gives the same batches either way.
"""

import jax

from bort_jax.data.augment import AUGMENT_DEFAULTS, EVAL_CROP_FRACTION, ExampleTransform
from bort_jax.data.augment import make_plan
from bort_jax.data.base import DatasetNotFoundError, Source
from bort_jax.data.finish import FinishSpec, finish_batch
from bort_jax.data.iterator import DataIterator
from bort_jax.data.sharding import shard_batch
from bort_jax.data.sources import DATASET_NAMES, make_source


def _as_size(image_size):
  """image_size (int, (H, W) or (H, W, C)) -> ((H, W), C or None)."""
  if isinstance(image_size, int):
    return (image_size, image_size), None
  size = tuple(image_size)
  if len(size) not in (2, 3) or not all(isinstance(d, int) and d > 0 for d in size):
    raise ValueError(f"image_size must be an int, (H, W) or (H, W, C) of positive ints, "
                     f"got {image_size!r}")
  return size[:2], (size[2] if len(size) == 3 else None)


def _resolve_transform(source, plan, image_size, train):
  native = source.image_shape[:2] if source.image_shape is not None else None
  out = native
  if plan.crop_size is not None:
    out = (plan.crop_size, plan.crop_size)
  if image_size is not None:
    size, _ = _as_size(image_size)
    if plan.crop_size is not None and size != out:
      raise ValueError(f"image_size {image_size!r} disagrees with augment crop_size "
                       f"{plan.crop_size}; set one of them")
    out = size
  if out is None:  # variable-size images (ImageNet) default to the 224 recipe
    out = (224, 224)
  eval_resize = plan.eval_resize
  if eval_resize is None and native is None:  # ImageNet: resize 256, center crop 224
    eval_resize = round(max(out) / EVAL_CROP_FRACTION)
  elif eval_resize is None and out != native:  # fixed-size data: a plain resize
    eval_resize = max(out)
  return ExampleTransform(plan=plan, train=train, crop_size=tuple(out),
                          eval_resize=eval_resize, mean=source.mean, std=source.std)


def load(name, *, split, batch_size, train, seed=0, data_dir=None, augment=None,
         image_size=None, process_index=None, process_count=None, num_threads=None,
         finish=True):
  """A `DataIterator` over this process's shard of a dataset split.

  Args:
    name: "digits" (offline default), "mnist", "fashion_mnist", "cifar10",
      "imagenet2012" (tfds), "idx:/dir" (MNIST-format IDX files), "synthetic" or
      "synthetic:NUM_CLASSES" (random images of `image_size`, default 28x28x1).
    split: "train" or "test" ("validation" also for imagenet2012; "test" reads it).
    batch_size: examples per batch on this process.
    train: True: shuffled from (seed, epoch), ragged last batch dropped, endless, train
      augmentation. False: one ordered pass, last batch padded with `mask` False rows.
    seed: seeds shuffling and augmentation (and synthetic data).
    data_dir: tfds data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).
    augment: dict / ConfigDict of knobs (`AUGMENT_DEFAULTS`); unknown knobs raise.
    image_size: output size, int or (H, W); default the dataset's own size, 224 for
      ImageNet. For synthetic: the generated size, int (-> H x H x 3) or (H, W, C);
      default (28, 28, 1).
    process_index, process_count: this process's shard (default: jax's).
    num_threads: decode/augment threads (default min(16, cpus)).
    finish: True: batches come finished (float32 images, soft targets), as numpy.
      False: host batches (uint8 images + 'augment' parameters) for
      `iterator.finish` on the devices.

  Raises:
    DatasetNotFoundError: the dataset is not on disk; the message says how to prepare it.
    ValueError: a bad name, split, size or augment knob.
  """
  if not (isinstance(batch_size, int) and batch_size >= 1):
    raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  plan = make_plan(augment)
  synthetic_shape = None
  if isinstance(name, str) and name.split(":")[0] == "synthetic" and image_size is not None:
    # Synthetic images are generated at image_size; crop_size may still crop them.
    (height, width), channels = _as_size(image_size)
    synthetic_shape, image_size = (height, width, channels or 3), None
  source = make_source(name, split, data_dir=data_dir, image_shape=synthetic_shape,
                       seed=seed)
  transform = _resolve_transform(source, plan, image_size, train)
  return DataIterator(source, transform, batch_size=batch_size, train=bool(train),
                      seed=seed, process_index=process_index, process_count=process_count,
                      num_threads=num_threads, finished=bool(finish))


__all__ = ["AUGMENT_DEFAULTS", "DATASET_NAMES", "DataIterator", "DatasetNotFoundError",
           "FinishSpec", "Source", "finish_batch", "load", "make_plan", "shard_batch"]
