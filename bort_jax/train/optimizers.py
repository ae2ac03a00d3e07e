"""Config → optax transform: the paper's base optimizers and their Bort variants.

The base optimizers decay exactly the leaves Bort constrains (the default mask:
leaves named ``kernel``), so ``sgd`` vs ``bort_sgd`` differ only by ``λΔ(W)``
(Eq. 10), as in Tables 1, 2 and 6.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import bort_jax

OPTIMIZERS = ("sgd", "bort_sgd", "adamw", "bort_adamw", "lamb", "bort_lamb")
SCHEDULES = ("constant", "cosine")


def learning_rate_schedule(config, steps_per_epoch: int,
                           total_steps: int) -> optax.Schedule:
  """``config.lr_schedule`` with ``config.warmup_epochs`` of linear warm-up.

  ``cosine`` decays from ``learning_rate`` to 0 over the steps after warm-up
  (Table 6: cosine, 5 warm-up epochs). Warm-up longer than the run is cut to
  the run's length.
  """
  if config.lr_schedule not in SCHEDULES:
    raise ValueError(f"lr_schedule={config.lr_schedule!r} is not one of "
                     f"{SCHEDULES}.")
  if config.learning_rate <= 0:
    raise ValueError(f"learning_rate={config.learning_rate!r} must be > 0.")
  if config.warmup_epochs < 0:
    raise ValueError(f"warmup_epochs={config.warmup_epochs!r} must be >= 0.")
  peak = float(config.learning_rate)
  warmup_steps = min(int(round(config.warmup_epochs * steps_per_epoch)),
                     total_steps)
  if config.lr_schedule == "constant":
    after_warmup = optax.constant_schedule(peak)
  else:
    after_warmup = optax.cosine_decay_schedule(
        peak, decay_steps=max(total_steps - warmup_steps, 1))
  if warmup_steps == 0:
    return after_warmup
  warmup = optax.linear_schedule(0.0, peak, transition_steps=warmup_steps)
  return optax.join_schedules([warmup, after_warmup], [warmup_steps])


def check_schedules(schedules: dict, total_steps: int) -> None:
  """Evaluates each named schedule at every step of the run, before training.

  Raises ``ValueError`` naming the schedule, the first step and the value
  where it is NaN, infinite or negative (a learning rate or λ must be a
  finite number >= 0 at every step, Eq. 10).
  """
  steps = jnp.arange(total_steps)
  for name, schedule in schedules.items():
    values = np.asarray(jax.jit(jax.vmap(schedule))(steps))
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
      first = int(np.argmax(bad))
      raise ValueError(f"the {name} schedule is {values[first]} at step "
                       f"{first} (of {total_steps}); it must be finite and "
                       f">= 0 at every step.")


def create_optimizer(config, learning_rate: optax.ScalarOrSchedule
                     ) -> optax.GradientTransformation:
  """The optax transform named by ``config.optimizer``.

  Reads ``lam``, ``bort_mode``, ``bort_amplitude`` (Bort variants only),
  ``weight_decay`` and ``momentum`` (SGD only; AdamW and LAMB use their
  default betas) from ``config``.
  """
  name = config.optimizer
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer={name!r} is not one of {OPTIMIZERS}.")
  is_sgd = name in ("sgd", "bort_sgd")
  if not is_sgd and config.momentum:
    raise ValueError(f"momentum={config.momentum!r} only applies to sgd / "
                     f"bort_sgd, not optimizer={name!r}; set it to 0.")
  if not name.startswith("bort_") and config.lam:
    raise ValueError(f"lam={config.lam!r} is the Bort coefficient; "
                     f"optimizer={name!r} has none (use bort_{name} or lam=0).")
  bort_fields = {"bort_mode": "l2-full", "bort_amplitude": 1.0}
  changed = {f: config[f] for f, default in bort_fields.items()
             if config[f] != default}
  if not name.startswith("bort_") and changed:
    raise ValueError(f"{changed} configure Bort; optimizer={name!r} has none "
                     f"(use bort_{name} or the defaults {bort_fields}).")
  weight_decay, mask = config.weight_decay, bort_jax.default_mask
  bort = dict(mode=config.bort_mode, amplitude=config.bort_amplitude,
              weight_decay=weight_decay, mask=mask)
  if name == "sgd":
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask=mask),
        optax.sgd(learning_rate, momentum=config.momentum))
  if name == "bort_sgd":
    return bort_jax.bort_sgd(learning_rate, lam=config.lam,
                             momentum=config.momentum, **bort)
  if name == "adamw":
    return optax.adamw(learning_rate, weight_decay=weight_decay, mask=mask)
  if name == "bort_adamw":
    return bort_jax.bort_adamw(learning_rate, lam=config.lam, **bort)
  if name == "lamb":
    return optax.lamb(learning_rate, weight_decay=weight_decay, mask=mask)
  return bort_jax.bort_lamb(learning_rate, lam=config.lam, **bort)
