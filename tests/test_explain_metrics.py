"""Deletion / insertion (RISE protocol, Table 3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from bort_jax import explain
from bort_jax.explain import metrics
import explain_fixtures as F

IMAGE = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)[None, :, :, None]


def _rise_kernel():
  """RISE's insertion blur, written here: a centred Dirac on 11×11 smoothed by
  scipy's gaussian_filter with σ = 5."""
  dirac = np.zeros((11, 11))
  dirac[5, 5] = 1.0
  return ndimage.gaussian_filter(dirac, sigma=5)


def test_hand_computed_logit_curves_and_aucs():
  model = F.PixelLinear(np.ones((2, 2, 1)))  # logit_0 = Σ pixels
  saliency = np.array([[[4.0, 3.0], [2.0, 1.0]]])  # raster order
  result = explain.deletion_insertion(model, IMAGE, saliency, step=1,
                                      score="logit")
  np.testing.assert_allclose(result.deletion, [[10, 9, 7, 4, 0]])
  # Trapezoid on x = 0, .25, .5, .75, 1.
  np.testing.assert_allclose(result.deletion_auc, [0.25 * (9.5 + 8 + 5.5 + 2)])
  blurred = ndimage.correlate(IMAGE[0, :, :, 0], _rise_kernel(),
                              mode="constant")
  b = blurred.ravel()
  want_ins = [b.sum(), 1 + b[1:].sum(), 3 + b[2:].sum(), 6 + b[3], 10]
  np.testing.assert_allclose(result.insertion, [want_ins], rtol=1e-5)
  np.testing.assert_allclose(
      result.insertion_auc, [np.trapezoid(want_ins, [0, .25, .5, .75, 1])],
      rtol=1e-5)


def test_last_step_may_be_partial():
  model = F.PixelLinear(np.ones((2, 2, 1)))
  saliency = np.array([[[1.0, 3.0], [4.0, 2.0]]])  # order: 4, 3, 2, 1 (values)
  result = explain.deletion_insertion(model, IMAGE, saliency, step=3,
                                      score="logit")
  # ceil(4 / 3) = 2 steps: 0, 3, 4 pixels removed; x = 0, 0.75, 1.
  np.testing.assert_allclose(result.deletion, [[10, 1, 0]])
  np.testing.assert_allclose(result.deletion_auc,
                             [0.75 * 5.5 + 0.25 * 0.5])


def test_ties_are_broken_by_raster_order():
  np.testing.assert_array_equal(
      metrics.pixel_ranks(jnp.array([[[0.5, 1.0, 0.5], [1.0, 0.5, 0.5]]])),
      [[2, 0, 3, 1, 4, 5]])
  model = F.PixelLinear(np.ones((2, 2, 1)))
  result = explain.deletion_insertion(model, IMAGE, np.zeros((1, 2, 2)),
                                      step=1, score="logit")
  np.testing.assert_allclose(result.deletion, [[10, 9, 7, 4, 0]])


def test_endpoints_are_the_model_scores_and_channels_move_together():
  model = F.two_layer(seed=8)
  x = F.random_images(3, 8, 2, seed=8)
  saliency = F.random_images(3, 8, 2, seed=9)  # (N, H, W, C): Σ|·| over C
  result = explain.deletion_insertion(model, x, saliency, step=5)
  assert result.deletion.shape == (3, 14) and result.insertion_auc.shape == (3,)
  probs = lambda images: np.asarray(jax.nn.softmax(model(images)))
  target = probs(x).argmax(-1)
  rows = np.arange(3)
  np.testing.assert_allclose(result.deletion[:, 0], probs(x)[rows, target],
                             rtol=1e-5)
  np.testing.assert_allclose(result.deletion[:, -1],
                             probs(jnp.zeros_like(x))[rows, target], rtol=1e-5)
  np.testing.assert_allclose(result.insertion[:, 0],
                             probs(explain.blur(x))[rows, target], rtol=1e-5)
  np.testing.assert_allclose(result.insertion[:, -1], probs(x)[rows, target],
                             rtol=1e-5)
  # After one step exactly the 5 top pixels (both channels) are zero.
  reduced = np.abs(np.asarray(saliency)).sum(-1).reshape(3, -1)
  top5 = np.argsort(-reduced, kind="stable", axis=1)[:, :5]
  after = np.asarray(x).reshape(3, 64, 2).copy()
  after[rows[:, None], top5] = 0.0
  np.testing.assert_allclose(
      result.deletion[:, 1],
      probs(jnp.asarray(after.reshape(x.shape)))[rows, target], rtol=1e-5)


def test_blur_is_rises_gaussian_per_channel_with_zero_padding():
  x = np.random.default_rng(0).normal(size=(2, 9, 13, 3)).astype(np.float32)
  want = np.stack([np.stack([ndimage.correlate(x[n, :, :, c], _rise_kernel(),
                                               mode="constant")
                             for c in range(3)], -1) for n in range(2)])
  np.testing.assert_allclose(explain.blur(jnp.asarray(x)), want, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(metrics.rise_blur_kernel(), _rise_kernel(),
                             rtol=1e-6)


def test_errors():
  model = F.PixelLinear(np.ones((2, 2, 1)))
  with pytest.raises(ValueError, match="score must be one of"):
    explain.deletion_insertion(model, IMAGE, np.zeros((1, 2, 2)), step=1,
                               score="softmax")
  with pytest.raises(ValueError, match="saliency must have shape"):
    explain.deletion_insertion(model, IMAGE, np.zeros((1, 3, 2)), step=1)
  with pytest.raises(ValueError, match="NaN"):
    explain.deletion_insertion(model, IMAGE, np.full((1, 2, 2), np.nan),
                               step=1)
  with pytest.raises(ValueError, match="step must be a positive int"):
    explain.deletion_insertion(model, IMAGE, np.zeros((1, 2, 2)), step=0)
