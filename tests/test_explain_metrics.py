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
  # ceil(4 / 3) = 2 steps: 0, 3, 4 pixels removed; RISE's x = 0, 1/2, 1.
  np.testing.assert_allclose(result.deletion, [[10, 1, 0]])
  np.testing.assert_allclose(result.deletion_auc, [(10 + 2 * 1 + 0) / 4])
  np.testing.assert_array_equal(result.tied_fraction, [0.0])


def _rise_blur(image):
  """RISE's substrate, built here: each channel correlated (zero padding) with
  an 11×11 Dirac smoothed by scipy's gaussian_filter (σ = 5)."""
  dirac = np.zeros((11, 11))
  dirac[5, 5] = 1.0
  kernel = ndimage.gaussian_filter(dirac, 5.0)
  return np.stack([ndimage.correlate(image[..., ch], kernel, mode="constant")
                   for ch in range(image.shape[-1])], -1)


def _causal_metric(predict, image, explanation, mode, step):
  """NumPy re-implementation of RISE's ``CausalMetric.single_run`` + ``auc``
  (eclique/RISE evaluation.py) for one (H, W, C) image."""
  h, w, c = image.shape
  hw = h * w
  n_steps = (hw + step - 1) // step
  substrate = np.zeros_like(image) if mode == "del" else _rise_blur(image)
  start, finish = (image, substrate) if mode == "del" else (substrate, image)
  start = start.reshape(hw, c).copy()
  finish = finish.reshape(hw, c)
  label = predict(image[None])[0].argmax()
  order = np.flip(np.argsort(explanation.reshape(hw)))
  scores = np.empty(n_steps + 1)
  for i in range(n_steps + 1):
    scores[i] = predict(start.reshape(1, h, w, c))[0, label]
    coords = order[step * i:step * (i + 1)]
    start[coords] = finish[coords]
  return scores, (scores.sum() - scores[0] / 2 - scores[-1] / 2) / n_steps


@pytest.mark.parametrize("step", [8, 7, 50])  # H·W = 64: divides, does not
def test_matches_rises_causal_metric(step):
  model = F.two_layer(seed=5)
  x = F.random_images(2, 8, 2, seed=5)
  saliency = np.asarray(F.random_images(2, 8, 1, seed=6))[..., 0]  # untied
  result = explain.deletion_insertion(model, x, saliency, step=step)
  predict = lambda images: np.asarray(jax.nn.softmax(model(jnp.asarray(
      images, jnp.float32))))
  for i in range(2):
    for mode, curve, auc in [("del", result.deletion, result.deletion_auc),
                             ("ins", result.insertion, result.insertion_auc)]:
      want_curve, want_auc = _causal_metric(
          predict, np.asarray(x[i]), saliency[i], mode, step)
      np.testing.assert_allclose(curve[i], want_curve, rtol=2e-5, atol=1e-6)
      np.testing.assert_allclose(auc[i], want_auc, rtol=2e-5, atol=1e-6)


def test_tied_fraction_and_random_tie_ranks():
  maps = jnp.array([[[0.0, 0.0, 1.0], [2.0, 3.0, 3.0]]])
  np.testing.assert_allclose(metrics.tied_fraction(maps), [4 / 6])
  np.testing.assert_array_equal(metrics.pixel_ranks(maps), [[4, 5, 3, 2, 0, 1]])
  seen = set()
  for seed in range(12):
    ranks = np.asarray(metrics.pixel_ranks(maps, jax.random.key(seed)))[0]
    assert ranks[3] == 2 and ranks[2] == 3  # untied pixels keep their rank
    assert set(ranks[[4, 5]]) == {0, 1} and set(ranks[[0, 1]]) == {4, 5}
    seen.add((ranks[4], ranks[0]))
  assert len(seen) == 4  # every tie order occurs


def _top_heavy(x):
  """A callable model whose class-0 logit depends nonlinearly on the top rows:
  deleting tied pixels in raster order (top first) would bias the curve."""
  rows = jnp.linspace(3.0, 0.0, x.shape[1])[None, :, None, None]
  score = 6.0 * (jnp.mean(x * rows, axis=(1, 2, 3)) - 0.6)
  return jnp.stack([score, -score], axis=-1)  # prob = sigmoid(2·score)


def test_aucs_are_the_mean_over_random_tie_breaks():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(0.5, 1.0, size=(2, 16, 16, 1)), jnp.float32)
  levels = rng.choice([0.0, 1.0, 2.0], p=[0.7, 0.2, 0.1], size=(2, 16, 16))
  result = explain.deletion_insertion(_top_heavy, x, levels, step=16)
  np.testing.assert_allclose(result.tied_fraction, [1.0, 1.0])
  # Reference: the same map with its ties broken at random (a jitter far
  # below the gap between levels), each an untied map, averaged.
  broken = []
  for seed in range(16):
    jitter = np.random.default_rng(100 + seed).permutation(256).reshape(
        1, 16, 16) * 1e-5
    broken.append(explain.deletion_insertion(
        _top_heavy, x, np.concatenate([levels[:1] + jitter,
                                       levels[1:] + jitter]), step=16))
  for field in ("deletion_auc", "insertion_auc"):
    want = np.mean([getattr(b, field) for b in broken], axis=0)
    np.testing.assert_allclose(getattr(result, field), want, atol=0.03)
  # Ties broken in raster order are far from that mean: the check can fail.
  raster = explain.deletion_insertion(
      _top_heavy, x, levels + np.arange(256)[::-1].reshape(1, 16, 16) * 1e-5,
      step=16)
  assert np.min(np.abs(raster.deletion_auc - np.mean(
      [b.deletion_auc for b in broken], axis=0))) > 0.06


def test_endpoints_are_the_model_scores_and_channels_move_together():
  model = F.two_layer(seed=8)
  x = F.random_images(3, 8, 2, seed=8)
  saliency = F.random_images(3, 8, 2, seed=9)  # (N, H, W, C): Σ|·| over C
  result = explain.deletion_insertion(model, x,
                                      explain.reduce_channels(saliency),
                                      step=5)
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
  with pytest.raises(ValueError, match=r"saliency must hold one \(H, W\) map "
                     r"per image, shape \(1, 2, 2\) for images of shape "
                     r"\(1, 2, 2, 1\); got \(1, 3, 2\)"):
    explain.deletion_insertion(model, IMAGE, np.zeros((1, 3, 2)), step=1)
  for bad in (np.nan, np.inf):
    with pytest.raises(ValueError,
                       match=r"saliency must hold finite values only; got "
                       rf"{bad} at index \(0, 1, 0\)"):
      explain.deletion_insertion(model, IMAGE, np.array([[[0, 1], [bad, 2]]]),
                                 step=1)
  with pytest.raises(ValueError, match="step must be a positive int"):
    explain.deletion_insertion(model, IMAGE, np.zeros((1, 2, 2)), step=0)


def _explainattr_auc(scores, mtype):
  """The Bort authors' AUC (zbr17/ExplainAttr, src/benchmark/metric.py,
  ``auc``), restated in NumPy: each row over its column 0 ("del") or its
  last column ("ins"), summed and divided by the number of columns."""
  column = 0 if mtype == "del" else scores.shape[1] - 1
  peak = scores[:, column][:, None]
  return (scores / peak).sum(axis=-1) / scores.shape[-1]


def test_the_logit_curves_come_with_the_probability_curves():
  model = F.PixelLinear(np.ones((2, 2, 1)))  # logits [Σ pixels, 0]
  saliency = np.array([[[4.0, 3.0], [2.0, 1.0]]])
  prob = explain.deletion_insertion(model, IMAGE, saliency, step=1)
  logit = explain.deletion_insertion(model, IMAGE, saliency, step=1,
                                     score="logit")
  np.testing.assert_allclose(prob.deletion_logit, [[10, 9, 7, 4, 0]])
  np.testing.assert_allclose(prob.deletion, jax.nn.sigmoid(
      np.array([[10.0, 9, 7, 4, 0]])), rtol=1e-6)  # softmax of [s, 0]
  for got in (prob, logit):
    np.testing.assert_allclose(got.deletion_logit, logit.deletion, rtol=1e-6)
    np.testing.assert_allclose(got.insertion_logit, logit.insertion,
                               rtol=1e-6)


def test_normalized_auc_is_the_authors_auc():
  rng = np.random.default_rng(0)
  # Logit curves that cross 0 (negative AUCs, as in the paper's Table 3),
  # a negative reference and end points far from the rest.
  curves = rng.normal(1.0, 2.0, size=(6, 9))
  curves[:, 0] += 3.0
  curves[2, 0] = -1.5
  curves[4, -1] = 0.25
  for mode, mtype in (("deletion", "del"), ("insertion", "ins")):
    np.testing.assert_allclose(metrics.normalized_auc(curves, mode),
                               _explainattr_auc(curves, mtype), rtol=1e-12)
  deletion = np.array([[4.0, 2.0, -1.0, -5.0]])
  np.testing.assert_allclose(metrics.normalized_auc(deletion, "deletion"),
                             [(1 + .5 - .25 - 1.25) / 4])
  np.testing.assert_allclose(metrics.normalized_auc(deletion[:, ::-1],
                                                    "insertion"),
                             [(-1.25 - .25 + .5 + 1) / 4])


def test_normalized_auc_rejects_a_zero_reference_and_bad_modes():
  with pytest.raises(ValueError, match=r"deletion curves \[\[1\]\] \(1 in "
                                       r"all\) are 0 on the unperturbed"):
    metrics.normalized_auc(np.array([[1.0, 2.0], [0.0, 1.0]]), "deletion")
  with pytest.raises(ValueError, match="mode must be 'deletion' or "
                                       "'insertion'; got 'del'"):
    metrics.normalized_auc(np.ones((1, 3)), "del")
  with pytest.raises(ValueError, match="curve must hold finite values only"):
    metrics.normalized_auc(np.array([[1.0, np.nan]]), "deletion")
