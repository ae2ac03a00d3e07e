"""The variants studies.audit_explainers measures, against loops of the
public explainers (the authors' AUC, now ``explain.normalized_auc``, is
tested in test_explain_metrics.py)."""

import numpy as np

from bort_jax import explain
from studies import audit_explainers as audit
import explain_fixtures as F


def _sat_loop(model, x, layer, k, binarize, skip_border):
  """Algorithm 1 per image and channel with ``explain.reconstruct``; with
  ``skip_border`` only channels peaking off the map's border compete."""
  z = np.asarray(model.features(x, layer))
  n, h, w, c = z.shape
  out = np.zeros(x.shape[:3], np.float32)
  for b in range(n):
    flat = z[b].reshape(h * w, c)
    y, peak = flat.max(0), flat.argmax(0)
    inside = (peak // w > 0) & (peak // w < h - 1) & (peak % w > 0) & (
        peak % w < w - 1)
    order = [i for i in np.argsort(-y, kind="stable")
             if inside[i] or not skip_border]
    for channel in order[:k]:
      onehot = np.zeros((h * w, c), np.float32)
      onehot[peak[channel], channel] = 1.0
      signal = explain.reconstruct(model, x[b:b + 1], layer=layer,
                                   features=onehot.reshape(1, h, w, c))
      out[b] += y[channel] * np.asarray(binarize(signal)[0])
  return out


def test_sat_variants_equal_loops_of_reconstruct():
  model = F.two_layer(seed=3)
  x = F.random_images(2, 12, 2, seed=3)  # conv2 map 6x6: border and inside
  np.testing.assert_allclose(
      audit.sat_variant(model, x, 2, 3, audit.relative_binarize(0.4)),
      explain.sat(model, x, layer=2, k=3, gamma=0.4), rtol=1e-5, atol=1e-5)
  for skip_border in (False, True):
    want = _sat_loop(model, x, 2, 3, audit.mean_binarize, skip_border)
    np.testing.assert_allclose(
        audit.sat_variant(model, x, 2, 3, audit.mean_binarize, skip_border),
        want, rtol=1e-5, atol=1e-5)
    assert np.count_nonzero(want) > 5
  # Skipping border peaks changes the map on these images.
  assert not np.allclose(_sat_loop(model, x, 2, 3, audit.mean_binarize, True),
                         _sat_loop(model, x, 2, 3, audit.mean_binarize, False))


def test_mean_binarize_thresholds_the_channel_sum_at_three_means():
  signal = np.zeros((1, 4, 4, 2), np.float32)
  signal[0, 0, 0] = [4.0, 0.0]   # Σ|S| = 4
  signal[0, 1, 1] = [1.0, -1.0]  # Σ|S| = 2, but max |S| = 1
  signal[0, 2, 2] = [0.5, 0.5]   # Σ|S| = 1: above 2·mean, below 3·mean
  # mean over the 16 pixels = 7 / 16; threshold 3 · 7/16 = 1.3125
  want = np.zeros((1, 4, 4))
  want[0, 0, 0] = want[0, 1, 1] = 1.0
  np.testing.assert_array_equal(audit.mean_binarize(signal), want)
