"""Attribution baselines of Table 3: IG and RISE (native), XRAI and GuidedIG
(the PAIR ``saliency`` package driven by a jitted gradient function)."""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from bort_jax.explain import _common


# -------------------------------------------------------- Integrated Gradients


def _target_logit_sum(model, images, target):
  return jnp.sum(_common.pick(model(images), target))


@functools.partial(jax.jit,
                   static_argnames=("graphdef", "steps", "batch_size"))
def _integrated_gradients(graphdef, state, x, baseline, target, *, steps,
                          batch_size):
  model = _common.merge_eval(graphdef, state)
  target = _common.predicted_or(target, model(x))
  grad_fn = jax.grad(_target_logit_sum, argnums=1)
  delta = x - baseline

  def weighted_grad(i):
    # Trapezoid rule on alpha = i / steps, i = 0..steps.
    alpha = i / steps
    weight = jnp.where((i == 0) | (i == steps), 0.5, 1.0) / steps
    return weight * grad_fn(model, baseline + alpha * delta, target)

  total = _common.chunked_sum(weighted_grad, steps + 1, batch_size,
                              jnp.zeros_like(x))
  return total * delta


def _broadcast_baseline(baseline, x):
  if baseline is None:
    return jnp.zeros_like(x)
  baseline = jnp.asarray(baseline, x.dtype)
  try:
    return jnp.broadcast_to(baseline, x.shape)
  except ValueError:
    raise ValueError(
        f"baseline of shape {baseline.shape} does not broadcast to the "
        f"images' shape {x.shape}") from None


def integrated_gradients(model, x, target=None, *, baseline=None,
                         steps: int = 32, batch_size: int = 8) -> jax.Array:
  """Integrated gradients (Sundararajan et al., 2017) of the target logit.

  ``(x − x₀) ⊙ ∫₀¹ ∇f(x₀ + α(x − x₀)) dα`` by the trapezoid rule on
  ``steps + 1`` points, so ``Σ attributions ≈ f(x) − f(x₀)``.

  Args:
    model: a model mapping (N, H, W, C) images to logits.
    x: images (N, H, W, C).
    target: class per image, None = predicted class.
    baseline: x₀, broadcastable to ``x``; None = zeros.
    steps: number of integration intervals.
    batch_size: path points evaluated together (each on all N images).

  Returns:
    (N, H, W, C) attributions.
  """
  x = _common.check_images(x)
  _common.check_positive_int(steps, "steps")
  _common.check_positive_int(batch_size, "batch_size")
  baseline = _broadcast_baseline(baseline, x)
  target = _common.resolve_target(target, x.shape[0])
  graphdef, state = _common.split(model)
  return _integrated_gradients(graphdef, state, x, baseline, target,
                               steps=steps, batch_size=batch_size)


# ---------------------------------------------------------------------- RISE


def rise_mask(key, hw, cell_size, p):
  """One RISE mask (Petsiuk et al., 2018): a random binary grid with cells of
  ``cell_size`` pixels (each on with prob. ``p``), bilinearly upsampled to
  (grid + 1) cells and cropped at a random shift in [0, cell_size)."""
  h, w = hw
  grid_h, grid_w = math.ceil(h / cell_size), math.ceil(w / cell_size)
  key_grid, key_shift = jax.random.split(key)
  grid = (jax.random.uniform(key_grid, (grid_h, grid_w)) < p).astype(
      jnp.float32)
  up = jax.image.resize(grid, ((grid_h + 1) * cell_size,
                               (grid_w + 1) * cell_size), "linear")
  dy, dx = jax.random.randint(key_shift, (2,), 0, cell_size)
  return jax.lax.dynamic_slice(up, (dy, dx), (h, w))


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "num_masks", "cell_size", "batch_size"))
def _rise(graphdef, state, x, target, p, key, *, num_masks, cell_size,
          batch_size):
  model = _common.merge_eval(graphdef, state)
  target = _common.predicted_or(target, model(x))
  hw = x.shape[1:3]

  def weighted_mask(i):
    mask = rise_mask(jax.random.fold_in(key, i), hw, cell_size, p)
    probs = jax.nn.softmax(model(x * mask[None, :, :, None].astype(x.dtype)))
    return _common.pick(probs, target)[:, None, None] * mask  # (N, H, W)

  total = _common.chunked_sum(weighted_mask, num_masks, batch_size,
                              jnp.zeros((x.shape[0],) + hw, jnp.float32))
  return total / (num_masks * p)


def rise(model, x, target=None, *, num_masks: int = 2000,
         cell_size: int | None = None, p: float = 0.5, seed: int = 0,
         batch_size: int = 50) -> jax.Array:
  """RISE saliency: ``Σ_m P(c | x ⊙ m) · m / (N · p)`` over random masks.

  Args:
    model: a model mapping images to logits (softmax is applied here).
    x: images (N, H, W, C).
    target: class per image, None = predicted class.
    num_masks: number of random masks (shared by all images).
    cell_size: pixels per grid cell; None = ``ceil(max(H, W) / 7)``.
    p: probability that a cell is kept.
    seed: PRNG seed of the masks.
    batch_size: masks evaluated together (each on all N images).

  Returns:
    (N, H, W) saliency.
  """
  x = _common.check_images(x)
  _common.check_positive_int(num_masks, "num_masks")
  _common.check_positive_int(batch_size, "batch_size")
  if cell_size is None:
    cell_size = math.ceil(max(x.shape[1:3]) / 7)
  _common.check_positive_int(cell_size, "cell_size")
  if not 0.0 < float(p) <= 1.0:
    raise ValueError(f"p must be in (0, 1]; got {p!r}")
  target = _common.resolve_target(target, x.shape[0])
  graphdef, state = _common.split(model)
  return _rise(graphdef, state, x, target, jnp.float32(p),
               jax.random.key(seed), num_masks=num_masks, cell_size=cell_size,
               batch_size=batch_size)


# ---------------------------------------------- PAIR saliency (XRAI, GuidedIG)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _input_gradients(graphdef, state, images, target):
  model = _common.merge_eval(graphdef, state)
  return jax.grad(_target_logit_sum, argnums=1)(model, images, target)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _predict(graphdef, state, x):
  return jnp.argmax(_common.merge_eval(graphdef, state)(x), axis=-1)


def pair_call_model_function(model):
  """A PAIR ``call_model_function`` returning the jitted gradient of the
  target logit (``call_model_args={"target": class_id}``)."""
  import saliency.core as saliency_core  # pylint: disable=import-outside-toplevel

  graphdef, state = _common.split(model)

  def call_model_function(images, call_model_args=None, expected_keys=None):
    del expected_keys
    images = jnp.asarray(images, jnp.float32)
    target = jnp.full((images.shape[0],), call_model_args["target"], jnp.int32)
    grads = _input_gradients(graphdef, state, images, target)
    return {saliency_core.INPUT_OUTPUT_GRADIENTS: np.asarray(grads)}

  return call_model_function


def _pair_targets(model, x, target):
  if target is not None:
    return np.asarray(_common.resolve_target(target, x.shape[0]))
  graphdef, state = _common.split(model)
  return np.asarray(_predict(graphdef, state, x))


def xrai(model, x, target=None, *, steps: int = 100, batch_size: int = 32,
         algorithm: str = "full") -> jax.Array:
  """XRAI (Kapishnikov et al., 2019) via PAIR ``saliency.core.XRAI``.

  PAIR segments each image (Felzenszwalb, in NumPy) and ranks the regions by
  the density of IG attributions computed with its default black/white
  baselines; the gradients come from one jitted function, ``batch_size`` path
  points per call.  Images are processed one after another (PAIR's API is
  per image).

  Returns:
    (N, H, W) saliency.
  """
  import saliency.core as saliency_core  # pylint: disable=import-outside-toplevel

  x = _common.check_images(x)
  if algorithm not in ("full", "fast"):
    raise ValueError(f"algorithm must be 'full' or 'fast'; got {algorithm!r}")
  targets = _pair_targets(model, x, target)
  call = pair_call_model_function(model)
  params = saliency_core.XRAIParameters(steps=steps, algorithm=algorithm)
  explainer = saliency_core.XRAI()
  maps = [
      explainer.GetMask(np.asarray(image), call,
                        call_model_args={"target": int(t)},
                        batch_size=batch_size, extra_parameters=params)
      for image, t in zip(np.asarray(x), targets)
  ]
  return jnp.asarray(np.stack(maps), jnp.float32)


def guided_ig(model, x, target=None, *, baseline=None, steps: int = 200,
              fraction: float = 0.25, max_dist: float = 0.02) -> jax.Array:
  """Guided Integrated Gradients (Kapishnikov et al., 2021) via PAIR
  ``saliency.core.GuidedIG`` with a jitted gradient function.

  Args:
    baseline: x₀ broadcastable to one image; None = zeros.
    steps, fraction, max_dist: PAIR's ``x_steps``, ``fraction``, ``max_dist``.

  Returns:
    (N, H, W, C) attributions.
  """
  import saliency.core as saliency_core  # pylint: disable=import-outside-toplevel

  x = _common.check_images(x)
  _common.check_positive_int(steps, "steps")
  targets = _pair_targets(model, x, target)
  call = pair_call_model_function(model)
  explainer = saliency_core.GuidedIG()
  base = None if baseline is None else np.broadcast_to(
      np.asarray(baseline, np.float32), x.shape[1:])
  with warnings.catch_warnings():
    # PAIR calls np.quantile(interpolation=...), deprecated (removed in 2.4,
    # hence numpy is pinned below 2.4 in requirements.txt).
    warnings.filterwarnings("ignore", message=".*interpolation=.*",
                            category=DeprecationWarning)
    maps = [
        explainer.GetMask(np.asarray(image), call,
                          call_model_args={"target": int(t)},
                          x_baseline=base, x_steps=steps, fraction=fraction,
                          max_dist=max_dist)
        for image, t in zip(np.asarray(x), targets)
    ]
  return jnp.asarray(np.stack(maps), jnp.float32)
