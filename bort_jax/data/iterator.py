"""The deterministic, resumable, per-process-sharded batch iterator.

Everything a batch contains is a pure function of (seed, epoch, step, process): the
epoch's permutation comes from (seed, epoch), each example's augmentation (and the keys
of its erasing noise) from (seed, epoch, example index), the batch mix from (seed, epoch,
step, process). So the state is just (epoch, step), and a restored iterator yields
exactly the next batches. The host batch is uint8 plus the parameters of the float
stages (`finish.py`); `DataIterator.finish` makes the float batch from it.
"""

import concurrent.futures
import os

import numpy as np

from bort_jax.data import augment as augment_lib
from bort_jax.data import finish as finish_lib

# Stream tags keep the seed sequences of the different random draws apart.
_PERMUTATION, _EXAMPLE, _BATCH = 0, 1, 2
STATE_VERSION = 1


def shard_indices(num_examples, *, train, seed, epoch, process_index, process_count):
  """The dataset indices this process reads in `epoch`, in order.

  Train: a permutation of all examples from (seed, epoch), truncated to a multiple of
  `process_count` and dealt out in equal contiguous blocks, so every process has the
  same number of steps. Eval: examples `process_index::process_count`, unshuffled.
  """
  if not train:
    return np.arange(process_index, num_examples, process_count)
  order = np.random.default_rng([seed, _PERMUTATION, epoch]).permutation(num_examples)
  per_process = num_examples // process_count
  return order[process_index * per_process:(process_index + 1) * per_process]


class DataIterator:
  """Batches of numpy arrays; see `load`.

  With `finished` (the default of `load`): {'image' float32, 'label', 'mask'[,
  'targets']}. Without: the host batch {'image' uint8, 'label', 'mask'[, 'augment':
  {erasing and mixing parameters}]} that `finish(batch)` turns into the former, e.g.
  on the accelerators after `shard_batch`.
  """

  def __init__(self, source, transform, *, batch_size, train, seed, process_index,
               process_count, num_threads=None, finished=True):
    self.source = source
    self.transform = transform
    self.batch_size = batch_size
    self.train = train
    self.seed = seed
    self.process_index = process_index
    self.process_count = process_count
    self.num_examples = source.num_examples
    self.num_classes = source.num_classes
    self.image_shape = (*transform.crop_size, source.channels)
    per_process = -(-source.num_examples // process_count)  # eval: ceil
    if train:
      per_process = source.num_examples // process_count
      self.steps_per_epoch = per_process // batch_size
      if self.steps_per_epoch == 0:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {per_process} training examples "
            f"each of {process_count} process(es) gets from {source.name!r} "
            f"({source.num_examples} in all); use a smaller batch")
    else:
      self.steps_per_epoch = max(1, -(-per_process // batch_size))
    # Per-example (PIL) work only when some example needs it; else one vectorised op.
    self._per_example = ((train and transform.plan.per_example)
                         or source.image_shape is None
                         or source.image_shape[:2] != self.image_shape[:2])
    workers = num_threads or min(16, os.cpu_count() or 1)
    self._pool = (concurrent.futures.ThreadPoolExecutor(workers)
                  if self._per_example and workers > 1 else None)
    self._epoch, self._step = 0, 0
    self._shard_epoch, self._shard = None, None
    self.finished = finished
    # A process's batch mixes as one block, also inside a global batch of processes.
    self.finish_spec = finish_lib.FinishSpec(
        mean=tuple(source.mean), std=tuple(source.std), num_classes=source.num_classes,
        label_smoothing=transform.plan.label_smoothing if train else 0.0,
        mix_block=batch_size)

  def finish(self, batch):
    """The float batch of a host batch (numpy, or global arrays from `shard_batch`):
    `finish.finish_batch` with this iterator's statistics and mix blocks, jitted."""
    return finish_lib.finish_batch(batch, self.finish_spec)

  def close(self):
    """Stops the decode threads (they also stop when the iterator is collected)."""
    if self._pool is not None:
      self._pool.shutdown(wait=False)
      self._pool = None

  # ------------------------------------------------------------------------- state

  def get_state(self):
    """JSON-serialisable position: the next batch is step `step` of epoch `epoch`.

    Every process of a run steps in lockstep through equal-sized shards, so the
    position is the same on all of them: one process's state (what a
    checkpoint stores) restores every process of the same `process_count`.
    """
    return {"version": STATE_VERSION, "epoch": self._epoch, "step": self._step,
            "seed": self.seed, "num_examples": self.num_examples,
            "batch_size": self.batch_size, "process_count": self.process_count}

  def set_state(self, state):
    """Restores a `get_state()` dict; raises ValueError if it belongs to another setup."""
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
      raise ValueError(f"iterator state must be a dict from get_state() with version "
                       f"{STATE_VERSION}, got {state!r}")
    for key in ("seed", "num_examples", "batch_size", "process_count"):
      if state.get(key) != getattr(self, key):
        raise ValueError(f"iterator state has {key}={state.get(key)!r} but this iterator "
                         f"has {key}={getattr(self, key)!r}; the state belongs to another "
                         f"dataset/batch/process setup")
    epoch, step = state.get("epoch"), state.get("step")
    if not (isinstance(epoch, int) and isinstance(step, int) and epoch >= 0
            and 0 <= step <= self.steps_per_epoch):
      raise ValueError(f"iterator state epoch={epoch!r} step={step!r}: need ints with "
                       f"epoch >= 0 and 0 <= step <= {self.steps_per_epoch}")
    self._epoch, self._step = epoch, step

  # ----------------------------------------------------------------------- batches

  def __iter__(self):
    return self

  def __next__(self):
    if self._step == self.steps_per_epoch:
      if not self.train:
        raise StopIteration
      self._epoch, self._step = self._epoch + 1, 0
    batch = self._batch(self._epoch, self._step)
    self._step += 1
    return finish_lib.finish_to_numpy(batch, self.finish_spec) if self.finished else batch

  def _indices(self, epoch):
    if self._shard_epoch != epoch:
      self._shard = shard_indices(
          self.num_examples, train=self.train, seed=self.seed, epoch=epoch,
          process_index=self.process_index, process_count=self.process_count)
      self._shard_epoch = epoch
    return self._shard

  def _batch(self, epoch, step):
    shard = self._indices(epoch)
    indices = shard[step * self.batch_size:(step + 1) * self.batch_size]
    mask = np.zeros(self.batch_size, bool)
    mask[:len(indices)] = True
    if len(indices) < self.batch_size:  # eval only: pad with a real example, masked out
      filler = shard[:1] if len(shard) else np.zeros(1, int)
      indices = np.concatenate([indices, np.repeat(filler, self.batch_size - len(indices))])
    images, labels = self.source.read(indices)
    images, augment = self._images(images, indices, epoch)
    batch = {"image": images, "label": labels.astype(np.int32), "mask": mask}
    plan = self.transform.plan
    if self.train and plan.mixes:
      rng = np.random.default_rng(
          [self.seed, _BATCH, epoch, step, self.process_index])
      augment.update(augment_lib.mix_params(rng, plan, *self.image_shape[:2],
                                             self.batch_size))
    if augment:
      batch["augment"] = augment
    return batch

  def _images(self, images, indices, epoch):
    """uint8 images (B, H, W, C) or (S, B, H, W, C), and the per-example erasing
    parameters (example-major, (B, S, ...)) if the plan erases."""
    transform = self.transform
    if not self._per_example:
      return np.asarray(images, np.uint8), {}

    def one(row):
      rng = np.random.default_rng([self.seed, _EXAMPLE, epoch, int(indices[row])])
      return augment_lib.transform_example(images[row], rng, transform)

    rows = range(len(indices))
    examples = list(self._pool.map(one, rows)) if self._pool else [one(r) for r in rows]
    stacked = {key: np.stack([example[key] for example in examples])
               for key in examples[0]}
    views = stacked.pop("image")
    if views.ndim == 5:  # (B, S, H, W, C) -> (S, B, H, W, C): splits lead
      views = np.moveaxis(views, 1, 0)
    return np.ascontiguousarray(views), stacked
