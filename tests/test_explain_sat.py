"""SAT (Algorithm 1)."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bort_jax import explain
from bort_jax.explain import activation_tracking as sat_lib
from bort_jax.explain import onehot_backtrack
import explain_fixtures as F



def test_saliency_lands_on_the_detected_patch():
  model = F.patch_detector()
  x = F.patch_image(top_left=(6, 2))
  y = float(model.features(x, 2)[..., 0].max())
  want = np.zeros((12, 12), np.float32)
  want[6:9, 2:5] = F.PATCH * y  # mask = the detector's X, weighted by y_0
  for k in (1, 4):  # channels 1-3 never fire: y_i = 0 adds nothing
    got = explain.sat(model, x, layer=2, k=k)
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)


def _sat_by_separate_calls(model, x, layer, k, B, gamma):
  """Algorithm 1 as a loop over images and channels of `reconstruct` calls."""
  z = np.asarray(model.features(x, layer))
  n, h, w, c = z.shape
  out = np.zeros(x.shape[:3], np.float32)
  for b in range(n):
    flat = z[b].reshape(h * w, c)
    y = flat.max(axis=0)
    for channel in np.argsort(-y, kind="stable")[:k]:
      sparse = np.zeros((h * w, c), np.float32)
      sparse[flat[:, channel].argmax(), channel] = B
      signal = explain.reconstruct(model, x[b:b + 1], layer=layer,
                                   features=sparse.reshape(1, h, w, c))
      out[b] += y[channel] * np.asarray(explain.binarize(signal[0], gamma))
  return out


class ScaledTop(F.TinyConvNet):
  """The top layer's output is doubled: not relu(conv(·)), so SAT must take
  the general VJP path."""

  def features(self, x, layer, *, activation=None):
    z = super().features(x, layer, activation=activation)
    return 2.0 * z if self._index(layer) == len(self.specs) else z


def test_vmapped_channels_equal_separate_calls():
  x = F.random_images(2, 8, 2, seed=4)
  model = F.two_layer(seed=2)
  graphdef, state = nnx.split(model)
  assert onehot_backtrack.top_conv_kind(model, graphdef, state, x, 2) == "relu"
  got = explain.sat(model, x, layer=2, k=5, B=1.5, gamma=0.3, batch_size=1)
  want = _sat_by_separate_calls(model, x, 2, 5, 1.5, 0.3)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert np.count_nonzero(want) > 10

  scaled = F.tiny(2, [F.ConvSpec(6, (3, 3), 1, "SAME"),
                      F.ConvSpec(8, (2, 2), 2, "VALID")], 4, seed=2,
                  cls=ScaledTop)
  graphdef, state = nnx.split(scaled)
  assert onehot_backtrack.top_conv_kind(scaled, graphdef, state, x, 2) is None
  np.testing.assert_allclose(
      explain.sat(scaled, x, layer=2, k=5, gamma=0.3),
      _sat_by_separate_calls(scaled, x, 2, 5, 1.0, 0.3), rtol=1e-5, atol=1e-5)


def test_fast_top_layer_path_equals_general_vjp():
  x = F.random_images(3, 8, 2, seed=5)
  for model, layer, kind in [(F.two_layer(seed=1), 2, "relu"),
                             (F.single_conv((3, 3), 2, 4, False, 1, 2, "SAME"),
                              1, "relu")]:
    graphdef, state = nnx.split(model)
    assert onehot_backtrack.top_conv_kind(model, graphdef, state, x, layer) == kind
    args = (graphdef, state, x, jnp.float32(1.0), jnp.float32(0.2))
    fast = sat_lib._sat(*args, layer=layer, k=3, top_kind=kind, batch_size=2)
    slow = sat_lib._sat(*args, layer=layer, k=3, top_kind=None, batch_size=2)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6)


def test_binarize():
  signal = jnp.array([[[1.0, -4.0], [0.5, 0.0]], [[-2.5, 1.0], [0.0, 0.0]]])
  # max_c |S_c| = [[4, .5], [2.5, 0]]; threshold 0.5 * 4 = 2
  np.testing.assert_array_equal(explain.binarize(signal, 0.5),
                                [[1.0, 0.0], [1.0, 0.0]])
  np.testing.assert_array_equal(explain.binarize(jnp.zeros((2, 2, 1)), 0.0),
                                jnp.zeros((2, 2)))


def test_sat_errors():
  model = F.two_layer()
  x = F.random_images(1, 8, 2)
  with pytest.raises(ValueError, match="gamma must be in"):
    explain.sat(model, x, layer=2, gamma=1.5)
  with pytest.raises(ValueError, match="k=9 exceeds the layer's 8 channels"):
    explain.sat(model, x, layer=2, k=9)
  with pytest.raises(ValueError, match="k must be a positive int"):
    explain.sat(model, x, layer=2, k=0)


def test_second_call_does_not_recompile():
  model = F.two_layer()
  x = F.random_images(2, 8, 2)
  explain.sat(model, x, layer=2, k=3)
  size = sat_lib._sat._cache_size()
  explain.sat(model, 2.0 * x, layer=2, k=3)
  assert sat_lib._sat._cache_size() == size
  with pytest.raises(ValueError, match="B must be a finite float > 0"):
    explain.sat(model, x, layer=2, B=0.0)
