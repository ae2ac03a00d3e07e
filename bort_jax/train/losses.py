"""Classification losses of the paper's recipes (Sec. 4.1, Table 7).

Every loss takes ``logits`` and a target distribution and returns one value per
example; :func:`masked_mean` averages them over the rows whose ``mask`` is True
(eval batches are padded). Targets are probabilities over classes: one-hot
labels, or the label-smoothed / Mixup / CutMix targets of the data pipeline.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

LOSSES = ("ce", "bce", "jsd")

# timm's JsdCrossEntropy weight on the Jensen-Shannon term (AugMix, alpha=12).
JSD_ALPHA = 12.0


def check_loss_name(name: str) -> str:
  if name not in LOSSES:
    raise ValueError(f"loss={name!r} is not one of {LOSSES}.")
  return name


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Softmax cross-entropy against a target distribution, per example."""
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def binary_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-class sigmoid BCE averaged over classes, per example (timm's BCE)."""
  per_class = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                                 targets)
  return per_class.mean(axis=-1)


def jsd_cross_entropy(split_logits: jax.Array, targets: jax.Array,
                      alpha: float = JSD_ALPHA) -> jax.Array:
  """AugMix loss: CE on the clean split + ``alpha``·JS divergence of all splits.

  Args:
    split_logits: ``(splits, batch, classes)``, split 0 the clean images.
    targets: ``(batch, classes)`` target distribution of the clean split.
    alpha: weight of the Jensen-Shannon term.

  Returns:
    ``(batch,)`` per-example loss. The JS term is the mean over splits of
    ``KL(p_i ‖ m)`` with ``m`` the mean of the split probabilities, clipped to
    ``[1e-7, 1]`` before the log as in timm.
  """
  if split_logits.ndim != 3:
    raise ValueError(f"jsd needs logits of shape (splits, batch, classes), got "
                     f"{split_logits.shape}.")
  log_probs = jax.nn.log_softmax(split_logits.astype(jnp.float32), axis=-1)
  probs = jnp.exp(log_probs)
  log_mixture = jnp.log(jnp.clip(probs.mean(axis=0), 1e-7, 1.0))
  kl_to_mixture = jnp.sum(probs * (log_probs - log_mixture), axis=-1)
  clean_ce = cross_entropy(split_logits[0], targets)
  return clean_ce + alpha * kl_to_mixture.mean(axis=0)


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of ``values`` over rows where ``mask`` is True (0 if none are)."""
  weights = mask.astype(jnp.float32)
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def classification_loss(name: str, logits: jax.Array,
                        targets: jax.Array) -> jax.Array:
  """Per-example loss ``name`` for ``(batch, splits, classes)`` logits.

  ``targets`` is ``(batch, classes)``. ``jsd`` needs ``splits >= 2`` (split 0
  clean); ``ce`` / ``bce`` train every split on the same targets (timm's
  ``aug_splits`` without JSD) and average over the splits.
  """
  check_loss_name(name)
  if logits.ndim != 3:
    raise ValueError(f"logits must be (batch, splits, classes), got shape "
                     f"{logits.shape}.")
  if name == "jsd":
    if logits.shape[1] < 2:
      raise ValueError(f"loss='jsd' needs >= 2 augmentation splits (set "
                       f"augment.aug_splits=3), got {logits.shape[1]}.")
    return jsd_cross_entropy(jnp.swapaxes(logits, 0, 1), targets)
  loss = cross_entropy if name == "ce" else binary_cross_entropy
  return loss(logits, targets[:, None, :]).mean(axis=1)
