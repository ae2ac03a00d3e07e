"""The float half of the input pipeline: jitted batch functions for the accelerator.

The host pipeline stays uint8 and draws every random parameter (`augment.py`,
`iterator.py`); `finish_batch` turns its batch into the float batch a train or eval
step reads: normalise, timm 'pixel' Random Erasing (the boxes and per-view noise keys
drawn on the host), Mixup/CutMix with the block-reversed batch and label smoothing
(lam, box and which of the two, drawn on the host). So a batch stays a pure function
of (seed, epoch, step, process), and a quarter of the bytes cross to the device.
"""

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

# The PRNG whose raw key data (2 uint32) the host draws per erased view.
NOISE_PRNG = "threefry2x32"


class FinishSpec(NamedTuple):
  """What `finish_batch` needs besides the batch; hashable, a static jit argument.

  mean, std: per-channel statistics on the 0..255 scale.
  num_classes, label_smoothing: for soft `targets` (made when the batch mixes or
    `label_smoothing` > 0).
  mix_block: rows that mix together (Mixup/CutMix partner = the block reversed):
    the per-process batch size, so a global batch of several processes' blocks mixes
    each block as that process's batch alone; None: the whole batch is one block.
  """
  mean: tuple
  std: tuple
  num_classes: int
  label_smoothing: float = 0.0
  mix_block: Optional[int] = None


def reverse_blocks(x, axis, block):
  """`x` with each run of `block` rows along `axis` reversed (the mix partner)."""
  n = x.shape[axis]
  block = n if block is None else block
  if n % block:
    raise ValueError(f"batch of {n} rows is not a whole number of mix blocks of "
                     f"{block} rows (mix_block = the per-process batch size)")
  blocked = x.reshape(x.shape[:axis] + (n // block, block) + x.shape[axis + 1:])
  return jnp.flip(blocked, axis + 1).reshape(x.shape)


def _box_mask(height, width, top, left, box_height, box_width):
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  return ((rows >= top) & (rows < top + box_height)
          & (cols >= left) & (cols < left + box_width))


def _erase_view(image, box, key_data):
  """timm 'pixel' erasing of one (H, W, C) view: N(0, 1) noise inside `box`
  (top, left, height, width); an empty box leaves the view unchanged."""
  height, width, _ = image.shape
  noise = jax.random.normal(jax.random.wrap_key_data(key_data, impl=NOISE_PRNG),
                            image.shape, image.dtype)
  inside = _box_mask(height, width, *box)
  return jnp.where(inside[..., None], noise, image)


def _erase(images, boxes, keys):
  """Erases every view: images (B, H, W, C) or (S, B, H, W, C); boxes (B, S, 4)
  and keys (B, S, 2), example-major like every other per-example entry."""
  per_view = jax.vmap(_erase_view)  # over the S views of one example
  if images.ndim == 4:
    return jax.vmap(lambda x, b, k: per_view(x[None], b, k)[0])(images, boxes, keys)
  return jax.vmap(per_view, in_axes=(1, 0, 0), out_axes=1)(images, boxes, keys)


def _mix(images, augment, block):
  """Mixup (lam·x + (1 − lam)·partner) or CutMix (partner pasted into the box
  (top, bottom, left, right)) per example; the same mix for every split."""
  batch_axis = images.ndim - 4
  partner = reverse_blocks(images, batch_axis, block)
  height, width = images.shape[-3:-1]
  top, bottom, left, right = jnp.moveaxis(augment["mix_box"], -1, 0)
  cut = augment["mix_cutmix"]
  pasted = jax.vmap(_box_mask, in_axes=(None, None, 0, 0, 0, 0))(
      height, width, top, left, bottom - top, right - left) & cut[:, None, None]
  lam = jnp.where(cut, 1.0, augment["mix_lam"]).astype(images.dtype)[:, None, None, None]
  blended = lam * images + (1.0 - lam) * partner
  return jnp.where(pasted[..., None], partner, blended)


def _targets(label, spec, lam):
  smooth = (jax.nn.one_hot(label, spec.num_classes, dtype=jnp.float32)
            * (1.0 - spec.label_smoothing) + spec.label_smoothing / spec.num_classes)
  if lam is None:
    return smooth
  lam = lam.astype(jnp.float32)[:, None]
  return lam * smooth + (1.0 - lam) * reverse_blocks(smooth, 0, spec.mix_block)


@functools.partial(jax.jit, static_argnames="spec")
def _normalize_and_erase(images, augment, spec):
  mean = jnp.asarray(spec.mean, jnp.float32)
  scale = 1.0 / jnp.asarray(spec.std, jnp.float32)
  images = (images.astype(jnp.float32) - mean) * scale
  if "erase_box" in augment:
    images = _erase(images, augment["erase_box"], augment["erase_key"])
  return images


@functools.partial(jax.jit, static_argnames="spec")
def _mix_and_target(images, label, augment, spec):
  lam = None
  if "mix_lam" in augment:
    images = _mix(images, augment, spec.mix_block)
    lam = augment["mix_lam"]
  targets = (_targets(label, spec, lam) if lam is not None or spec.label_smoothing > 0
             else None)
  return images, targets


def finish_batch(batch, spec):
  """A host batch (uint8 `image`, `label`, `mask`[, `augment`]) -> the float batch.

  Returns {'image': float32 normalised (B, H, W, C) or (S, B, H, W, C), 'label',
  'mask'[, 'targets' float32 (B, num_classes)]}: erased where `augment` has
  `erase_box`/`erase_key`, mixed where it has `mix_lam`/`mix_box`/`mix_cutmix`, soft
  targets when mixed or `spec.label_smoothing` > 0. Works on numpy batches and on
  global arrays sharded on the example axis (the result keeps that sharding), and
  inside `jax.jit` (`spec` static).

  It runs as two jitted stages: in one, XLA's CPU fusion draws the erasing noise
  again for each use by the mix (5x slower on CPU; on a GPU either is cheap).
  """
  images = batch["image"]
  if images.dtype != jnp.uint8 or images.ndim not in (4, 5):
    raise ValueError(f"finish_batch needs batch['image'] uint8 (B, H, W, C) or "
                     f"(S, B, H, W, C), got {images.dtype} {images.shape}")
  if len(spec.mean) != images.shape[-1] or len(spec.std) != images.shape[-1]:
    raise ValueError(f"spec has {len(spec.mean)} mean / {len(spec.std)} std values for "
                     f"images with {images.shape[-1]} channels")
  augment = batch.get("augment", {})
  images = _normalize_and_erase(images, augment, spec)
  images, targets = _mix_and_target(images, batch["label"], augment, spec)
  out = {key: value for key, value in batch.items() if key not in ("image", "augment")}
  out["image"] = images
  if targets is not None:
    out["targets"] = targets
  return out


def finish_to_numpy(batch, spec):
  """`finish_batch` on a numpy batch (on the default device), returned as numpy."""
  return jax.device_get(finish_batch(batch, spec))


def batch_nbytes(batch):
  """Bytes of every array in a (nested) batch: what crosses to the device."""
  return sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(batch))
