"""Attribution baselines of Table 3: IG and RISE (native), XRAI (the PAIR
``saliency`` package driven by a jitted gradient function).  GuidedIG is
native too, in :mod:`bort_jax.explain.guided_integrated_gradients`.

All of them are black-box: ``model`` is an ``nnx.Module`` or any JAX-traceable
callable mapping (B, H, W, C) images to (B, num_classes) logits."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from bort_jax import validate
from bort_jax.explain import _common


# -------------------------------------------------------- Integrated Gradients


@functools.partial(jax.jit,
                   static_argnames=("definition", "steps", "batch_size"))
def _integrated_gradients(definition, params, x, baseline, target, *, steps,
                          batch_size):
  model = _common.logits_fn(definition, params)
  grad_fn = jax.grad(_common.target_logit_sum, argnums=1)
  delta = x - baseline

  def weighted_grad(i):
    # Trapezoid rule on alpha = i / steps, i = 0..steps.
    alpha = i / steps
    weight = jnp.where((i == 0) | (i == steps), 0.5, 1.0) / steps
    return weight * grad_fn(model, baseline + alpha * delta, target)

  total = _common.chunked_sum(weighted_grad, steps + 1, batch_size,
                              jnp.zeros_like(x))
  return total * delta


def integrated_gradients(model, x, target=None, *, baseline=None,
                         steps: int = 32, batch_size: int = 8,
                         per_channel: bool = False) -> jax.Array:
  """Integrated gradients (Sundararajan et al., 2017) of the target logit.

  ``(x − x₀) ⊙ ∫₀¹ ∇f(x₀ + α(x − x₀)) dα`` by the trapezoid rule on
  ``steps + 1`` points, so ``Σ attributions ≈ f(x) − f(x₀)`` (over pixels
  and channels of the ``per_channel=True`` attributions).

  Args:
    model: an ``nnx.Module`` or any JAX-traceable callable mapping
      (N, H, W, C) images to (N, num_classes) finite logits.
    x: images (N, H, W, C), NHWC; N ≥ 1.
    target: class per image, None = predicted class.
    baseline: x₀, broadcastable to ``x``; None = zeros.
    steps: number of integration intervals.
    batch_size: path points evaluated together (each on all N images).
    per_channel: return the signed per-channel attributions instead of the
      saliency map.

  Returns:
    (N, H, W) saliency ``Σ_c |a_c|`` (:func:`reduce_channels`), or the
    (N, H, W, C) attributions ``a`` with ``per_channel=True``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from bort_jax import explain
    >>> model = lambda x: jnp.stack([x.sum((1, 2, 3)), -x.sum((1, 2, 3))], -1)
    >>> x = jnp.ones((2, 4, 4, 3))
    >>> explain.integrated_gradients(model, x, steps=4).shape
    (2, 4, 4)
    >>> explain.integrated_gradients(model, x, steps=4, per_channel=True).shape
    (2, 4, 4, 3)
  """
  x = _common.images(model, x)
  steps = validate.check_positive_int("steps", steps)
  batch_size = validate.check_positive_int("batch_size", batch_size)
  baseline = _common.broadcast_baseline(baseline, x)
  definition, params, target = _common.black_box(model, x, target)
  attributions = _common.check_finite_result(
      _integrated_gradients(definition, params, x, baseline, target,
                            steps=steps, batch_size=batch_size),
      "integrated_gradients")
  return attributions if per_channel else _common.reduce_channels(
      attributions)


# ---------------------------------------------------------------------- RISE


def mirror_linear_weights(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) matrix of skimage's ``resize(order=1, mode='reflect',
  anti_aliasing=False)`` along one axis, RISE's mask upsampling.

  skimage calls ``scipy.ndimage.zoom(order=1, grid_mode=True,
  mode='mirror')``: output pixel o reads the input at
  ``(o + ½)·n_in/n_out − ½`` (pixel edges aligned), by linear interpolation,
  and a coordinate outside [0, n_in − 1] is mirrored about the edge sample
  (``c b | a b c``), not clamped to it as ``jax.image.resize`` does.
  """
  if n_in == 1:
    return np.ones((n_out, 1), np.float32)
  src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
  period = 2 * (n_in - 1)
  src = np.abs(src) % period  # mirror about 0, then about n_in - 1
  src = np.where(src > n_in - 1, period - src, src)
  lower = np.minimum(np.floor(src).astype(int), n_in - 2)
  frac = src - lower
  weights = np.zeros((n_out, n_in), np.float64)
  weights[np.arange(n_out), lower] = 1.0 - frac
  weights[np.arange(n_out), lower + 1] += frac
  return weights.astype(np.float32)


def rise_mask(key, hw, cell_size, p):
  """One RISE mask (Petsiuk et al., 2018; ``RISE.generate_masks``): a random
  binary grid with cells of ``cell_size`` pixels (each on with prob. ``p``),
  upsampled to (grid + 1) cells as RISE's reference does (skimage bilinear
  resize, mode 'reflect': :func:`mirror_linear_weights`) and cropped at a
  random shift in [0, cell_size)."""
  h, w = hw
  grid_h, grid_w = math.ceil(h / cell_size), math.ceil(w / cell_size)
  key_grid, key_shift = jax.random.split(key)
  grid = (jax.random.uniform(key_grid, (grid_h, grid_w)) < p).astype(
      jnp.float32)
  dy, dx = jax.random.randint(key_shift, (2,), 0, cell_size)
  # Only the rows/columns of the crop are interpolated: (h, grid) @ grid @ ….
  rows = jax.lax.dynamic_slice_in_dim(jnp.asarray(mirror_linear_weights(
      grid_h, (grid_h + 1) * cell_size)), dy, h)
  cols = jax.lax.dynamic_slice_in_dim(jnp.asarray(mirror_linear_weights(
      grid_w, (grid_w + 1) * cell_size)), dx, w)
  exact = jax.lax.Precision.HIGHEST
  return jnp.dot(jnp.dot(rows, grid, precision=exact), cols.T, precision=exact)


@functools.partial(
    jax.jit,
    static_argnames=("definition", "num_masks", "cell_size", "batch_size"))
def _rise(definition, params, x, target, p, key, *, num_masks, cell_size,
          batch_size):
  model = _common.logits_fn(definition, params)
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
    model: an ``nnx.Module`` or any JAX-traceable callable mapping
      (N, H, W, C) images to (N, num_classes) finite logits (softmax is
      applied here).
    x: images (N, H, W, C), NHWC; N ≥ 1.
    target: class per image, None = predicted class.
    num_masks: number of random masks (shared by all images).
    cell_size: pixels per grid cell; None = ``ceil(max(H, W) / 7)``.
    p: probability that a cell is kept.
    seed: PRNG seed of the masks.
    batch_size: masks evaluated together (each on all N images).

  Returns:
    (N, H, W) saliency.
  """
  x = _common.images(model, x)
  num_masks = validate.check_positive_int("num_masks", num_masks)
  batch_size = validate.check_positive_int("batch_size", batch_size)
  if cell_size is None:
    cell_size = math.ceil(max(x.shape[1:3]) / 7)
  cell_size = validate.check_positive_int("cell_size", cell_size)
  if not 0.0 < float(p) <= 1.0:
    raise ValueError(f"p must be in (0, 1]; got {p!r}")
  definition, params, target = _common.black_box(model, x, target)
  return _common.check_finite_result(
      _rise(definition, params, x, target, jnp.float32(p),
            jax.random.key(int(seed)), num_masks=num_masks,
            cell_size=cell_size, batch_size=batch_size), "rise")


# ---------------------------------------------------------- PAIR saliency (XRAI)


@functools.partial(jax.jit, static_argnames=("definition",))
def input_gradients(definition, params, images, target):
  """Gradient of each image's ``target`` logit with respect to the image."""
  model = _common.logits_fn(definition, params)
  return jax.grad(_common.target_logit_sum, argnums=1)(model, images, target)


def pair_call_model_function(model):
  """A PAIR ``call_model_function`` returning the jitted gradient of the
  target logit (``call_model_args={"target": class_id}``)."""
  import saliency.core as saliency_core  # pylint: disable=import-outside-toplevel

  definition, params = _common.as_function(model)

  def call_model_function(images, call_model_args=None, expected_keys=None):
    del expected_keys
    images = jnp.asarray(images, jnp.float32)
    target = jnp.full((images.shape[0],), call_model_args["target"], jnp.int32)
    grads = input_gradients(definition, params, images, target)
    return {saliency_core.INPUT_OUTPUT_GRADIENTS: np.asarray(grads)}

  return call_model_function


def xrai(model, x, target=None, *, steps: int = 100, batch_size: int = 32,
         algorithm: str = "full") -> jax.Array:
  """XRAI (Kapishnikov et al., 2019) via PAIR ``saliency.core.XRAI``.

  PAIR segments each image (Felzenszwalb, in NumPy) and ranks the regions by
  the density of IG attributions computed with its default black/white
  baselines; the gradients come from one jitted function, ``batch_size`` path
  points per call.  Images are processed one after another (PAIR's API is
  per image).

  Args:
    model: an ``nnx.Module`` or any JAX-traceable callable mapping
      (N, H, W, C) images to (N, num_classes) finite logits.
    x: images (N, H, W, C), NHWC; N ≥ 1.
    target: class per image, None = predicted class.
    steps: IG steps per baseline (PAIR's ``XRAIParameters.steps``).
    batch_size: path points per gradient call.
    algorithm: ``"full"`` or ``"fast"`` (PAIR's ``XRAIParameters``).

  Returns:
    (N, H, W) saliency.
  """
  import saliency.core as saliency_core  # pylint: disable=import-outside-toplevel

  x = _common.images(model, x)
  steps = validate.check_positive_int("steps", steps)
  batch_size = validate.check_positive_int("batch_size", batch_size)
  if algorithm not in ("full", "fast"):
    raise ValueError(f"algorithm must be 'full' or 'fast'; got {algorithm!r}")
  _, _, targets = _common.black_box(model, x, target)
  call = pair_call_model_function(model)
  params = saliency_core.XRAIParameters(steps=steps, algorithm=algorithm)
  explainer = saliency_core.XRAI()
  maps = [
      explainer.GetMask(np.asarray(image), call,
                        call_model_args={"target": int(t)},
                        batch_size=batch_size, extra_parameters=params)
      for image, t in zip(np.asarray(x), np.asarray(targets))
  ]
  return _common.check_finite_result(
      jnp.asarray(np.stack(maps), jnp.float32), "xrai")
