"""What the explainers accept: any callable model (black-box ones), a conv
model that is not ours (white-box ones), and clear errors for bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bort_jax import explain
import explain_fixtures as F


class OtherConvNet(nnx.Module):
  """A user's conv model with only the documented explainer interface:
  ``layer_names``, ``features(x, layer, *, activation)``, ``conv(layer)``,
  ``conv_inputs(x)``, ``head``/``head_pool`` and ``__call__``.  It declares
  no ``top_activation`` (SAT takes the general VJP)."""

  def __init__(self, rngs):
    self.first = nnx.Conv(2, 6, (1, 1), use_bias=False, rngs=rngs)
    self.second = nnx.Conv(6, 5, (3, 3), padding="VALID", rngs=rngs)
    self.head = nnx.Linear(5, 3, rngs=rngs)
    self.head_pool = "avg"
    self.layer_names = ("first", "second")

  def conv(self, layer):
    return getattr(self, layer if isinstance(layer, str) else
                   self.layer_names[layer - 1])

  def features(self, x, layer, *, activation=None):
    activation = jax.nn.relu if activation is None else activation
    index = layer if isinstance(layer, int) else \
        self.layer_names.index(layer) + 1
    z = self.first(x)  # linear: no activation after the first conv
    return z if index == 1 else activation(self.second(z))

  def conv_inputs(self, x):
    return {"first": x, "second": self.first(x)}

  def __call__(self, x):
    return self.head(self.features(x, 2).mean(axis=(1, 2)))


class Declared(OtherConvNet):
  def top_activation(self, layer):
    return "linear" if layer == 1 else "relu"


def _other(cls=OtherConvNet):
  model = cls(nnx.Rngs(0))
  # First conv: a 1×1 kernel K (2, 6) with K Kᵀ = I, so Wᵀ W = I.
  model.first.kernel[...] = jnp.asarray(F.orthogonal_rows(2, 6))[None, None]
  return model


def test_white_box_explainers_on_a_conv_model_that_is_not_ours():
  model = _other()
  x = F.random_images(2, 8, 2, seed=3)
  # Eq. 4 through an orthonormal linear layer gives the input back exactly.
  np.testing.assert_allclose(explain.reconstruct(model, x, layer="first"), x,
                             atol=1e-5)
  np.testing.assert_allclose(
      explain.reconstruction_ratios(model, x)["first"], [0.0, 0.0], atol=1e-5)
  grams = explain.gram_distribution(model)
  np.testing.assert_allclose(grams["first"]["diag"], np.ones(2), atol=1e-5)
  # SAT by the general VJP equals SAT by the kernel-slice path of the same
  # weights once the model declares its top activation.
  declared = _other(Declared)
  nnx.update(declared, nnx.state(model))
  general = explain.sat(model, x, layer=2, k=3)
  np.testing.assert_allclose(explain.sat(declared, x, layer=2, k=3), general,
                             rtol=1e-5, atol=1e-6)
  assert np.count_nonzero(general) > 0
  parts = explain.decompose(model, x, layer="second", k=2)
  assert parts.components.shape == (2, 2, 8, 8, 2)
  assert explain.synthesize_adversarial(model, x, x[::-1], layer=2,
                                        k=2).shape == x.shape
  z = model.features(x, 2)
  weights = model.head.kernel[...][:, np.asarray(model(x)).argmax(-1)].T
  want = jax.image.resize(jnp.einsum("nhwc,nc->nhw", z, weights), (2, 8, 8),
                          "bilinear")
  np.testing.assert_allclose(explain.cam(model, x), want, rtol=1e-5,
                             atol=1e-6)


def _logits(x):
  """A plain function x -> logits (no module): 3 classes."""
  v = jnp.linspace(-1.0, 1.0, x.shape[1] * x.shape[2] * x.shape[3])
  s = jnp.tanh(x.reshape(x.shape[0], -1) @ v.reshape(-1, 1))
  return jnp.concatenate([s, -s, 0.5 * s ** 2], axis=-1)


def test_black_box_explainers_take_a_plain_callable():
  module = F.two_layer(seed=2)
  x = F.random_images(2, 8, 2, seed=2)
  as_function = lambda images: module(images)  # the same model, unwrapped
  for name, call in [
      ("integrated_gradients",
       lambda m: explain.integrated_gradients(m, x, steps=4)),
      ("rise", lambda m: explain.rise(m, x, num_masks=8, batch_size=4)),
      ("guided_ig", lambda m: explain.guided_ig(m, x, steps=4)),
      ("deletion_insertion", lambda m: explain.deletion_insertion(
          m, x, np.asarray(x[..., 0]), step=16).deletion_auc),
  ]:
    np.testing.assert_allclose(call(as_function), call(module), rtol=1e-5,
                               atol=1e-6, err_msg=name)
  assert explain.xrai(_logits, x[:1], steps=4, batch_size=4).shape == (1, 8, 8)
  ig = explain.integrated_gradients(_logits, x, target=1, steps=64,
                                    per_channel=True)
  gap = _logits(x)[:, 1] - _logits(jnp.zeros_like(x))[:, 1]
  np.testing.assert_allclose(ig.sum(axis=(1, 2, 3)), gap, rtol=1e-3)


_X = F.random_images(2, 8, 2, seed=1)
_NAN_X = _X.at[0, 1, 2, 0].set(jnp.nan)
_INF_X = _X.at[1, 3, 4, 1].set(jnp.inf)
_MAP = np.asarray(_X[..., 0])


def _explainers_on(model, x, saliency):
  """Every explainer entry point that takes images, on ``model`` and ``x``."""
  return {
      "reconstruct": lambda: explain.reconstruct(model, x, layer=2),
      "reconstruction_ratios": lambda: explain.reconstruction_ratios(model, x),
      "sat": lambda: explain.sat(model, x, layer=2, k=2),
      "decompose": lambda: explain.decompose(model, x, layer=2, k=2),
      "synthesize_adversarial": lambda: explain.synthesize_adversarial(
          model, x, x, layer=2, k=2),
      "adversarial_success_rate": lambda: explain.adversarial_success_rate(
          model, x, x),
      "cam": lambda: explain.cam(model, x),
      "integrated_gradients": lambda: explain.integrated_gradients(
          model, x, steps=2),
      "rise": lambda: explain.rise(model, x, num_masks=4),
      "xrai": lambda: explain.xrai(model, x, steps=2),
      "guided_ig": lambda: explain.guided_ig(model, x, steps=2),
      "deletion_insertion": lambda: explain.deletion_insertion(
          model, x, saliency, step=16),
  }


@pytest.mark.parametrize("name", sorted(_explainers_on(None, _X, _MAP)))
def test_non_finite_pixels_are_rejected(name):
  for x, where, value in [(_NAN_X, r"\(0, 1, 2, 0\)", "nan"),
                          (_INF_X, r"\(1, 3, 4, 1\)", "inf")]:
    with pytest.raises(ValueError, match=rf"must hold finite values only; got "
                       rf"{value} at index {where}"):
      _explainers_on(F.two_layer(seed=1), x, _MAP)[name]()


@pytest.mark.parametrize("name", ["cam", "integrated_gradients", "rise",
                                  "xrai", "guided_ig", "deletion_insertion"])
def test_targets_outside_the_classes_are_rejected(name):
  model = F.two_layer(seed=1)  # 4 classes
  calls = {
      "cam": lambda t: explain.cam(model, _X, target=t),
      "integrated_gradients": lambda t: explain.integrated_gradients(
          model, _X, target=t),
      "rise": lambda t: explain.rise(model, _X, target=t, num_masks=4),
      "xrai": lambda t: explain.xrai(model, _X, target=t),
      "guided_ig": lambda t: explain.guided_ig(model, _X, target=t, steps=2),
      "deletion_insertion": lambda t: explain.deletion_insertion(
          model, _X, _MAP, step=16, target=t),
  }
  for target, shown in [(4, r"\[4, 4\]"), (-1, r"\[-1, -1\]"),
                        (np.array([0, 9]), r"\[9\] \(at \[1\]\)")]:
    with pytest.raises(ValueError, match=r"target must be a class id in "
                       rf"\[0, 4\); got {shown}"):
      calls[name](target)


def test_numpy_integers_are_accepted_where_ints_are():
  model = F.two_layer(seed=1)
  i = np.int64
  np.testing.assert_array_equal(
      explain.sat(model, _X, layer=i(2), k=i(2), batch_size=i(2)),
      explain.sat(model, _X, layer=2, k=2, batch_size=2))
  np.testing.assert_array_equal(
      explain.integrated_gradients(model, _X, target=i(3), steps=i(3)),
      explain.integrated_gradients(model, _X, target=3, steps=3))
  np.testing.assert_array_equal(
      explain.deletion_insertion(model, _X, _MAP, step=i(16),
                                 target=np.int32(1)).deletion_auc,
      explain.deletion_insertion(model, _X, _MAP, step=16,
                                 target=1).deletion_auc)
  np.testing.assert_array_equal(
      explain.rise(model, _X, num_masks=i(4), cell_size=i(3), seed=i(1)),
      explain.rise(model, _X, num_masks=4, cell_size=3, seed=1))


def test_a_non_finite_map_from_finite_inputs_is_caught():
  # sqrt has an infinite slope at 0: IG from the zero baseline is NaN there.
  def sqrt_model(x):
    s = jnp.sqrt(jnp.sum(x ** 2, axis=(1, 2, 3)))
    return jnp.stack([s, -s], axis=-1)

  with pytest.raises(FloatingPointError,
                     match="integrated_gradients produced .* non-finite"):
    explain.integrated_gradients(sqrt_model, _X, steps=2)


# --- layout, one saliency rank, empty batches, non-finite logits


_NHWC = F.random_images(2, 12, 1, seed=5)  # grey images, as patch_detector's
_NCHW = jnp.transpose(_NHWC, (0, 3, 1, 2))  # (2, 1, 12, 12)


@pytest.mark.parametrize("name", sorted(_explainers_on(None, _X, _MAP)))
def test_channels_first_batches_are_refused_naming_both_shapes(name):
  call = _explainers_on(F.patch_detector(), _NCHW, np.ones((2, 12, 12)))[name]
  with pytest.raises(ValueError, match=r"got shape \(2, 1, 12, 12\); it looks "
                     r"channels-first .* NHWC would be \(2, 12, 12, 1\)"):
    call()


class _DeclaresChannels(F.PixelLinear):
  """A black-box model that declares the channel count it takes."""

  def __init__(self, weights):
    super().__init__(weights)
    self.in_channels = weights.shape[-1]


def test_a_declared_channel_count_decides_the_layout():
  # (2, 3, 8, 8) reads as channels-first unless the model says it takes 8
  # channels: then it is 3x8 NHWC images.
  x = F.random_images(2, 8, 8, seed=2)[:, :3]
  assert x.shape == (2, 3, 8, 8)
  eight = _DeclaresChannels(np.ones((3, 8, 8)))
  assert explain.integrated_gradients(eight, x, steps=2).shape == (2, 3, 8)
  with pytest.raises(ValueError, match=r"looks channels-first"):
    explain.integrated_gradients(lambda images: eight(images), x, steps=2)
  three = _DeclaresChannels(np.ones((8, 8, 3)))
  with pytest.raises(ValueError, match=r"with 3 channels, got shape "
                     r"\(2, 3, 8, 8\); it looks channels-first .* NHWC would "
                     r"be \(2, 8, 8, 3\)"):
    explain.rise(three, x, num_masks=2)


@pytest.mark.parametrize("name", sorted(_explainers_on(None, _X, _MAP)))
def test_an_empty_batch_is_one_clear_error(name):
  call = _explainers_on(F.two_layer(seed=1), _X[:0], _MAP[:0])[name]
  with pytest.raises(ValueError, match=r"must hold at least one image, got "
                     r"shape \(0, 8, 8, 2\)"):
    call()


def test_saliency_is_one_rank_with_per_channel_on_request():
  model = F.two_layer(seed=1)
  maps = {
      "sat": explain.sat(model, _X, layer=2, k=2),
      "cam": explain.cam(model, _X),
      "rise": explain.rise(model, _X, num_masks=4),
      "xrai": explain.xrai(model, _X[:1], steps=2),
      "integrated_gradients": explain.integrated_gradients(model, _X, steps=2),
      "guided_ig": explain.guided_ig(model, _X, steps=2),
  }
  for name, saliency in maps.items():
    assert saliency.shape == (saliency.shape[0], 8, 8), name
  for method in (explain.integrated_gradients, explain.guided_ig):
    per_channel = method(model, _X, steps=2, per_channel=True)
    assert per_channel.shape == _X.shape
    np.testing.assert_allclose(explain.reduce_channels(per_channel),
                               method(model, _X, steps=2), rtol=1e-6)
    # deletion/insertion takes the map, and names both shapes for the rest.
    with pytest.raises(ValueError, match=r"shape \(2, 8, 8\) for images of "
                       r"shape \(2, 8, 8, 2\); got \(2, 8, 8, 2\) \(per-channel"
                       r" attributions: reduce them with "
                       r"explain.reduce_channels\)"):
      explain.deletion_insertion(model, _X, per_channel, step=16)


def _nan_for_class_1(x):
  """Class 0's logit depends on x; class 1's is NaN."""
  s = jnp.tanh(jnp.sum(x * jnp.linspace(-1.0, 1.0, x.shape[-1]),
                       axis=(1, 2, 3)))
  return jnp.stack([s, jnp.full_like(s, jnp.nan)], axis=-1)


@pytest.mark.parametrize("name", ["integrated_gradients", "guided_ig", "xrai",
                                  "rise", "deletion_insertion"])
def test_black_box_explainers_refuse_non_finite_logits(name):
  calls = {
      "integrated_gradients": lambda: explain.integrated_gradients(
          _nan_for_class_1, _X, target=0, steps=2),
      "guided_ig": lambda: explain.guided_ig(_nan_for_class_1, _X, target=0,
                                             steps=2),
      "xrai": lambda: explain.xrai(_nan_for_class_1, _X[:1], target=0,
                                   steps=2),
      "rise": lambda: explain.rise(_nan_for_class_1, _X, target=0,
                                   num_masks=4),
      "deletion_insertion": lambda: explain.deletion_insertion(
          _nan_for_class_1, _X, _MAP, step=16, target=0),
  }
  with pytest.raises(ValueError, match=r"the model's logits on x \(image, "
                     r"class\) must hold finite values only; got nan at index "
                     r"\(0, 1\) \([12] non-finite of [24]\)"):
    calls[name]()
