"""Pure, jitted train and eval steps on a :class:`TrainState`.

The batch is a dict of global ``jax.Array`` sharded on the mesh's ``data``
axis: ``image`` ``(B, H, W, C)`` — or ``(S, B, H, W, C)`` for ``S``
augmentation splits (clean first), sharded on ``B`` —, ``label`` ``(B,)``, ``mask`` ``(B,)`` and
optionally soft ``targets`` ``(B, classes)`` from Mixup/CutMix.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bort_jax.train import losses
from bort_jax.train.state import TrainState, merge_model


def batch_targets(batch, num_classes: int):
  """The batch's soft ``targets`` if present, else one-hot labels.

  Label smoothing and Mixup/CutMix are applied by the data pipeline
  (``bort_jax.data`` augment knobs), which then provides ``targets``.
  """
  if "targets" in batch:
    return batch["targets"].astype(jnp.float32)
  return jax.nn.one_hot(batch["label"], num_classes, dtype=jnp.float32)


def _flatten_splits(images):
  """``(S, B, H, W, C)`` → ``(B·S, H, W, C)`` example-major, with the split
  count. Swapping first keeps every device's rows on that device."""
  if images.ndim == 4:
    return images, 1
  if images.ndim != 5:
    raise ValueError(f"batch['image'] must be (B, H, W, C) or (S, B, H, W, C), "
                     f"got shape {images.shape}.")
  splits = images.shape[0]
  images = jnp.swapaxes(images, 0, 1)
  return images.reshape((-1,) + images.shape[2:]), splits


def train_step(state: TrainState, batch, *, graphdef, optimizer, loss_name: str,
               num_classes: int):
  """One optimizer step; returns ``(new_state, {"loss": mean loss})``."""
  images, splits = _flatten_splits(batch["image"])
  targets = batch_targets(batch, num_classes)
  mask = batch["mask"]

  def loss_fn(params):
    model = merge_model(graphdef, params, state.model_state)
    logits = model(images)
    logits = logits.reshape(mask.shape[0], splits, -1)
    per_example = losses.classification_loss(loss_name, logits, targets)
    new_model_state = nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.Param)))
    return losses.masked_mean(per_example, mask), new_model_state

  (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = TrainState(step=state.step + 1, params=params,
                         model_state=model_state, opt_state=opt_state)
  return new_state, {"loss": loss}


def eval_step(params, model_state, batch, *, graphdef, num_classes: int):
  """Sums over the batch's real rows: CE loss, top-1 and top-5 hits, count."""
  model = merge_model(graphdef, params, model_state)
  logits = model(batch["image"]).astype(jnp.float32)
  labels, weights = batch["label"], batch["mask"].astype(jnp.float32)
  ce = losses.cross_entropy(logits, jax.nn.one_hot(labels, num_classes))
  # Rank of the true class: how many logits beat it (ties count for the label).
  true_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  rank = jnp.sum(logits > true_logit, axis=-1)
  return {"loss_sum": jnp.sum(ce * weights),
          "top1_sum": jnp.sum((rank < 1) * weights),
          "top5_sum": jnp.sum((rank < 5) * weights),
          "count": jnp.sum(weights)}


def make_train_step(*, graphdef, optimizer, loss_name: str, num_classes: int,
                    state_shardings, replicated):
  """``train_step`` jitted with the state donated and its sharding kept."""
  losses.check_loss_name(loss_name)
  step = functools.partial(train_step, graphdef=graphdef, optimizer=optimizer,
                           loss_name=loss_name, num_classes=num_classes)
  return jax.jit(step, donate_argnums=0,
                 out_shardings=(state_shardings, replicated))


def make_eval_step(*, graphdef, num_classes: int, replicated):
  step = functools.partial(eval_step, graphdef=graphdef,
                           num_classes=num_classes)
  return jax.jit(step, out_shardings=replicated)
