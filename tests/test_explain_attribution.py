"""CAM, IG, RISE, XRAI and GuidedIG."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import saliency.core as saliency_core
from flax import nnx
from scipy import ndimage

from bort_jax import explain
from bort_jax.explain import attribution
import explain_fixtures as F
import pair_numpy


def test_cam_equals_formula():
  x = F.random_images(3, 8, 2, seed=1)
  model = F.two_layer(seed=1)
  z = np.asarray(model.features(x, 2))
  kernel = np.asarray(model.head.kernel[...])
  target = np.array([0, 3, 1])
  maps = np.einsum("nhwc,cn->nhw", z, kernel[:, target])  # Σ_k w_ck Z_k
  want = jax.image.resize(jnp.asarray(maps), (3, 8, 8), "bilinear")
  np.testing.assert_allclose(explain.cam(model, x, target), want, rtol=1e-5,
                             atol=1e-6)
  predicted = np.asarray(model(x)).argmax(-1)
  np.testing.assert_allclose(explain.cam(model, x),
                             explain.cam(model, x, predicted), rtol=1e-6)


def test_cam_without_head_uses_the_class_channel():
  model = F.two_layer(seed=2, head_pool="channel", num_classes=8)
  x = F.random_images(2, 8, 2, seed=2)
  z = model.features(x, 2)
  want = jax.image.resize(z[..., 5], (2, 8, 8), "bilinear")
  np.testing.assert_allclose(explain.cam(model, x, 5), want, rtol=1e-6)


def test_cam_raises_for_flatten_heads():
  model = F.tiny(2, [F.ConvSpec(4)], 3, head_pool=None, image_hw=(8, 8))
  with pytest.raises(ValueError, match="CAM needs a global-pooling head"):
    explain.cam(model, F.random_images(1, 8, 2))


def test_integrated_gradients_completeness():
  # Max pool and ReLU kinks make the integrand piecewise constant; 128 steps
  # keep the Riemann error well under 1% here.
  model = F.two_layer(seed=4)
  x = F.random_images(3, 8, 2, seed=3)
  baseline = 0.1 * F.random_images(1, 8, 2, seed=9)
  attributions = explain.integrated_gradients(model, x, baseline=baseline,
                                              steps=128, batch_size=32,
                                              per_channel=True)
  logits, base_logits = model(x), model(jnp.broadcast_to(baseline, x.shape))
  target = jnp.argmax(logits, -1)
  gap = (logits - base_logits)[jnp.arange(3), target]
  np.testing.assert_allclose(attributions.sum(axis=(1, 2, 3)), gap, rtol=1e-2)


def test_integrated_gradients_is_the_trapezoid_of_jax_grad():
  """(x − x₀) ⊙ Σ_i w_i ∇f(x₀ + (i/S)(x − x₀)), w = ½,1,…,1,½ over S, by hand.

  Steps=10 with batch_size=4: 11 points in 3 chunks, the last one padded.
  """
  model = F.two_layer(seed=4)
  x = F.random_images(2, 8, 2, seed=13)
  baseline = 0.2 * F.random_images(1, 8, 2, seed=14)
  target = jnp.array([1, 3])
  steps = 10
  got = explain.integrated_gradients(model, x, target, baseline=baseline,
                                     steps=steps, batch_size=4,
                                     per_channel=True)
  grad = jax.jit(jax.grad(
      lambda images: model(images)[jnp.arange(2), target].sum()))
  total = np.zeros(x.shape, np.float64)
  for i in range(steps + 1):
    weight = (0.5 if i in (0, steps) else 1.0) / steps
    total += weight * np.asarray(grad(baseline + (i / steps) * (x - baseline)))
  want = total * np.asarray(x - baseline)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # The default map is Σ_c |a_c| of the same attributions.
  np.testing.assert_allclose(
      explain.integrated_gradients(model, x, target, baseline=baseline,
                                   steps=steps, batch_size=4),
      np.abs(want).sum(-1), rtol=1e-5, atol=1e-5)


def test_integrated_gradients_agrees_with_pair():
  model = F.two_layer(seed=4)
  x = F.random_images(2, 8, 2, seed=4)
  ours = explain.integrated_gradients(model, x, target=1, steps=64,
                                      batch_size=13,  # 65 points: 5 chunks
                                      per_channel=True)
  call = attribution.pair_call_model_function(model)
  ig = saliency_core.IntegratedGradients()
  for b in range(2):
    pair = ig.GetMask(np.asarray(x[b]), call, {"target": 1}, x_steps=64,
                      x_baseline=np.zeros((8, 8, 2)), batch_size=64)
    # PAIR averages the gradients at 64 points of [0, 1]; ours is the
    # trapezoid on 65: both approximate the same integral.
    np.testing.assert_allclose(ours[b], pair, atol=0.03 * np.abs(pair).max())


def _reference_rise_mask(key, hw, cell_size, p):
  """RISE's mask from the same random draws, built with scipy, not our code:
  an s_h×s_w grid of Bernoulli(p) cells (s = ceil(side / cell)), upsampled to
  (s + 1)·cell pixels as RISE's ``generate_masks`` does with skimage's
  ``resize(order=1, mode='reflect', anti_aliasing=False)``, which is
  ``ndimage.zoom(order=1, grid_mode=True, mode='mirror')`` (skimage 0.26
  source; equal to 3e-8 there), cropped at the drawn shift (dy, dx)."""
  h, w = hw
  grid_shape = (math.ceil(h / cell_size), math.ceil(w / cell_size))
  key_grid, key_shift = jax.random.split(key)
  grid = np.asarray(jax.random.uniform(key_grid, grid_shape)) < p
  dy, dx = np.asarray(jax.random.randint(key_shift, (2,), 0, cell_size))
  zoom = [(s + 1) * cell_size / s for s in grid_shape]
  up = ndimage.zoom(grid.astype(np.float64), zoom, order=1, grid_mode=True,
                    mode="mirror")
  assert up.shape == tuple((s + 1) * cell_size for s in grid_shape)
  return up[dy:dy + h, dx:dx + w]


# skimage 0.26 ``resize(G, (9, 12), order=1, mode='reflect',
# anti_aliasing=False)`` of G = [[1, 0, 1], [0, 1, 1]], times 144 (exact).
SKIMAGE_REFLECT_9x12 = np.array([
    [76, 84, 84, 76, 68, 60, 67, 89, 111, 133, 133, 111],
    [84, 108, 108, 84, 60, 36, 39, 69, 99, 129, 129, 99],
    [88, 120, 120, 88, 56, 24, 25, 59, 93, 127, 127, 93],
    [80, 96, 96, 80, 64, 48, 53, 79, 105, 131, 131, 105],
    [72, 72, 72, 72, 72, 72, 81, 99, 117, 135, 135, 117],
    [64, 48, 48, 64, 80, 96, 109, 119, 129, 139, 139, 129],
    [56, 24, 24, 56, 88, 120, 137, 139, 141, 143, 143, 141],
    [60, 36, 36, 60, 84, 108, 123, 129, 135, 141, 141, 135],
    [68, 60, 60, 68, 76, 84, 95, 109, 123, 137, 137, 123]]) / 144


def test_rise_upsampling_is_skimages_reflect_resize():
  grid = np.array([[1, 0, 1], [0, 1, 1]], np.float32)
  up = (attribution.mirror_linear_weights(2, 9) @ grid
        @ attribution.mirror_linear_weights(3, 12).T)
  np.testing.assert_allclose(up, SKIMAGE_REFLECT_9x12, atol=1e-6)
  np.testing.assert_allclose(
      up, ndimage.zoom(grid, (9 / 2, 12 / 3), order=1, grid_mode=True,
                       mode="mirror"), atol=1e-6)


@pytest.mark.parametrize("hw,cell_size", [((12, 12), 4), ((8, 11), 3),
                                          ((28, 28), 7), ((5, 9), 6)])
def test_rise_mask_matches_scipy_upsampled_grid(hw, cell_size):
  for i in range(6):
    key = jax.random.key(100 + i)
    np.testing.assert_allclose(attribution.rise_mask(key, hw, cell_size, 0.4),
                               _reference_rise_mask(key, hw, cell_size, 0.4),
                               atol=1e-6)


def test_rise_masks_keep_p_on_average():
  """Over 2000 masks: mean ≈ p, overall and per pixel; values in [0, 1]
  (the shifts are checked against the reference crop above)."""
  cell, p, n = 4, 0.3, 2000
  keys = jax.random.split(jax.random.key(0), n)
  masks = np.asarray(jax.vmap(
      lambda k: attribution.rise_mask(k, (12, 12), cell, p))(keys))
  assert masks.min() >= 0.0 and masks.max() <= 1.0
  assert abs(masks.mean() - p) < 0.015  # ~5 standard errors
  np.testing.assert_allclose(masks.mean(0), p, atol=0.06)


def test_rise_matches_a_direct_sum_over_masks():
  model = F.two_layer(seed=5)
  x = F.random_images(2, 8, 2, seed=5)
  got = explain.rise(model, x, num_masks=37, cell_size=3, p=0.4, seed=11,
                     batch_size=8)  # 37 masks: last chunk padded
  key = jax.random.key(11)
  masks = np.stack([_reference_rise_mask(jax.random.fold_in(key, i), (8, 8),
                                         3, 0.4) for i in range(37)])
  target = jnp.argmax(model(x), -1)
  probs = np.stack([np.asarray(jax.nn.softmax(
      model(x * jnp.asarray(m, jnp.float32)[None, :, :, None])))[
          np.arange(2), target] for m in masks])  # (37, 2)
  want = np.einsum("mn,mhw->nhw", probs, masks) / (37 * 0.4)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  # Same seed, same masks; another seed, other masks.
  np.testing.assert_array_equal(
      got, explain.rise(model, x, num_masks=37, cell_size=3, p=0.4, seed=11,
                        batch_size=8))
  assert not np.allclose(got, explain.rise(model, x, num_masks=37, cell_size=3,
                                           p=0.4, seed=12, batch_size=8))


def _plain_call_model_function(model):
  """PAIR call_model_function written directly with jax.grad, no jit."""

  def call(images, call_model_args=None, expected_keys=None):
    target = call_model_args["target"]
    grads = jax.grad(lambda i: model(i)[:, target].sum())(
        jnp.asarray(images, jnp.float32))
    return {saliency_core.INPUT_OUTPUT_GRADIENTS: np.asarray(grads)}

  return call


# PAIR's GuidedIG calls np.quantile(interpolation=...), which numpy 2.4
# removed; it runs here with that keyword mapped to method=.
@pytest.mark.parametrize("steps,max_dist,fraction,baseline", [
    (16, 0.02, 0.25, None), (10, 0.1, 0.5, 0.3), (8, 0.0, 0.25, None)])
def test_guided_ig_agrees_with_pair(steps, max_dist, fraction, baseline):
  model = F.two_layer(seed=6)
  x = F.random_images(2, 8, 2, seed=6)
  ours = explain.guided_ig(model, x, steps=steps, max_dist=max_dist,
                           fraction=fraction, baseline=baseline,
                           per_channel=True)
  predicted = np.asarray(model(x)).argmax(-1)
  base = None if baseline is None else np.full(x.shape[1:], baseline)
  for b in range(2):
    with pair_numpy.quantile_accepts_interpolation():
      want = saliency_core.GuidedIG().GetMask(
          np.asarray(x[b]), _plain_call_model_function(model),
          {"target": int(predicted[b])}, x_baseline=base, x_steps=steps,
          fraction=fraction, max_dist=max_dist)
    np.testing.assert_allclose(ours[b], want, rtol=1e-4, atol=1e-5)


# numpy deprecates before it removes: XRAI's path must use nothing deprecated.
@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_xrai_agrees_with_pair():
  model = F.two_layer(seed=7)
  x = F.random_images(1, 8, 2, seed=7)
  ours = explain.xrai(model, x, target=2, steps=8, batch_size=8)
  want = saliency_core.XRAI().GetMask(
      np.asarray(x[0]), _plain_call_model_function(model), {"target": 2},
      batch_size=8, extra_parameters=saliency_core.XRAIParameters(steps=8))
  assert ours.shape == (1, 8, 8)
  np.testing.assert_allclose(ours[0], want, rtol=1e-4, atol=1e-6)


def test_attribution_errors():
  model = F.two_layer()
  x = F.random_images(2, 8, 2)
  with pytest.raises(ValueError, match="does not broadcast"):
    explain.integrated_gradients(model, x, baseline=np.zeros((3, 8, 8, 2)))
  with pytest.raises(ValueError, match=r"target must be None, an int or shape \(2,\)"):
    explain.integrated_gradients(model, x, target=[0, 1, 2])
  with pytest.raises(ValueError, match="p must be in"):
    explain.rise(model, x, p=0.0)
