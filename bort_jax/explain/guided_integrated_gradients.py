"""Guided Integrated Gradients (Kapishnikov et al., 2021), native JAX.

The path from the baseline to the input is built step by step.  At step
``t = 1..steps`` (``α = t / steps``) the gradient ``g`` of the target logit is
taken once at the current point ``x``; then the features with the smallest
``|g|`` (a ``fraction`` of all features) are moved towards the input until the
L1 distance to the input is ``(1 − α)`` of the total, each feature staying
within ``[α − max_dist, α + max_dist]`` of the straight line (features that
fall behind are pulled up to ``α − max_dist``).  The attribution is
``Σ_steps (x_after − x_before) ⊙ g``.  This is the algorithm of PAIR
saliency's ``GuidedIG`` (checked against it in the tests), written as a
``lax.scan`` over steps whose inner selection loop is a ``lax.while_loop``
vmapped over images, so all images share one gradient call per step.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from bort_jax import validate
from bort_jax.explain import _common


def _advance(x, grad, x_input, x_baseline, l1_total, alpha, max_dist, *,
             quantile_index, max_iters):
  """One step of the guided path for one image: the point after step α."""
  alpha_min = jnp.maximum(alpha - max_dist, 0.0)
  alpha_max = jnp.minimum(alpha + max_dist, 1.0)
  diff = x_input - x_baseline
  moving = diff != 0
  x_min = x_baseline + diff * alpha_min
  x_max = x_baseline + diff * alpha_max
  l1_target = l1_total * (1.0 - alpha)
  abs_grad = jnp.abs(grad)

  def keep_going(carry):
    _, go, i = carry
    return go & (i < max_iters)

  def select_and_move(carry):
    x, _, i = carry
    x_alpha = jnp.where(moving, (x - x_baseline) / jnp.where(moving, diff, 1),
                        alpha_max)
    x = jnp.where(x_alpha < alpha_min, x_min, x)  # pull stragglers up
    l1_current = jnp.sum(jnp.abs(x - x_input))
    reached = jnp.abs(l1_current - l1_target) <= 1e-6 * jnp.maximum(
        l1_current, l1_target) + 1e-9
    # Features already at x_max are out of the selection.
    candidates = jnp.where(x == x_max, jnp.inf, abs_grad)
    threshold = jnp.sort(candidates.ravel())[quantile_index]
    selected = (candidates <= threshold) & (candidates < jnp.inf)
    l1_selected = jnp.sum(jnp.where(selected, jnp.abs(x - x_max), 0.0))
    gamma = (l1_current - l1_target) / jnp.where(l1_selected > 0, l1_selected,
                                                 1.0)
    # gamma > 1: the selection cannot close the gap, move it all the way.
    moved = jnp.where(gamma > 1, x_max,
                      x + jnp.clip(gamma, 0.0, 1.0) * (x_max - x))
    x = jnp.where(selected & ~reached, moved, x)
    go = ~reached & (gamma > 1) & (l1_selected > 0)
    return x, go, i + 1

  x, _, _ = jax.lax.while_loop(keep_going, select_and_move,
                               (x, jnp.array(True), jnp.array(0)))
  return x


@functools.partial(jax.jit,
                   static_argnames=("definition", "steps", "fraction"))
def _guided_ig(definition, params, x, baseline, target, max_dist, *, steps,
               fraction):
  model = _common.logits_fn(definition, params)
  grad_fn = jax.grad(_common.target_logit_sum, argnums=1)
  l1_total = jnp.sum(jnp.abs(x - baseline), axis=(1, 2, 3))
  n_features = math.prod(x.shape[1:])
  # numpy's quantile(method="lower"): the floor(q·(n − 1))-th smallest value.
  advance = jax.vmap(functools.partial(
      _advance, quantile_index=math.floor(fraction * (n_features - 1)),
      max_iters=2 * math.ceil(1 / fraction) + 4),
                     in_axes=(0, 0, 0, 0, 0, None, None))

  def step(carry, t):
    path, attribution = carry
    grad = grad_fn(model, path, target)
    new = advance(path, grad, x, baseline, l1_total, (t + 1.0) / steps,
                  max_dist)
    return (new, attribution + (new - path) * grad), None

  (_, attribution), _ = jax.lax.scan(
      step, (baseline, jnp.zeros_like(x)), jnp.arange(steps, dtype=x.dtype))
  return attribution


def guided_ig(model, x, target=None, *, baseline=None, steps: int = 200,
              fraction: float = 0.25, max_dist: float = 0.02,
              per_channel: bool = False) -> jax.Array:
  """Guided Integrated Gradients of the target logit, all images at once.

  Args:
    model: an ``nnx.Module`` or any JAX-traceable callable mapping
      (N, H, W, C) images to (N, num_classes) finite logits.
    x: images (N, H, W, C), NHWC; N ≥ 1.
    target: class per image, None = predicted class.
    baseline: x₀ broadcastable to ``x``; None = zeros.
    steps: path steps (PAIR's ``x_steps``); one gradient call per step.
    fraction: share of the features moved per selection, in (0, 1].
    max_dist: how far (in α) a feature may leave the straight line, in
      [0, 1]; 0 is IG on the straight line (left Riemann sum).
    per_channel: return the signed per-channel attributions instead of the
      saliency map.

  Returns:
    (N, H, W) saliency ``Σ_c |a_c|`` (:func:`reduce_channels`), or the
    (N, H, W, C) attributions ``a`` with ``per_channel=True``; their sum is
    ≈ f(x) − f(x₀).
  """
  x = _common.images(model, x)
  steps = validate.check_positive_int("steps", steps)
  if not 0.0 < float(fraction) <= 1.0:
    raise ValueError(f"fraction must be in (0, 1]; got {fraction!r}")
  if not 0.0 <= float(max_dist) <= 1.0:
    raise ValueError(f"max_dist must be in [0, 1]; got {max_dist!r}")
  baseline = _common.broadcast_baseline(baseline, x)
  definition, params, target = _common.black_box(model, x, target)
  attributions = _common.check_finite_result(
      _guided_ig(definition, params, x, baseline, target,
                 jnp.asarray(max_dist, x.dtype), steps=steps,
                 fraction=float(fraction)), "guided_ig")
  return attributions if per_channel else _common.reduce_channels(
      attributions)
