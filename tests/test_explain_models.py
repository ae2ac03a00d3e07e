"""Every explainer on narrow versions of the real models (bort_jax.models)."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bort_jax import explain
from bort_jax import models
from bort_jax.explain import activation_tracking as sat_lib
from bort_jax.explain import onehot_backtrack
import explain_fixtures as F



@pytest.fixture(scope="module")
def images():
  rng = np.random.default_rng(0)
  return jnp.asarray(rng.normal(size=(2, 28, 28, 1)), jnp.float32)


@pytest.fixture(scope="module")
def acnn():
  return F.numpy_init(lambda: models.create(
      "acnn_small_mnist", num_classes=10, rngs=nnx.Rngs(0),
      width_multiplier=0.05))


@pytest.fixture(scope="module")
def lenet():
  return F.numpy_init(lambda: models.create(
      "lenet", num_classes=10, rngs=nnx.Rngs(0), width_multiplier=0.5))


def _sat_both_paths(model, x, layer, k):
  graphdef, state = nnx.split(model)
  kind = onehot_backtrack.top_conv_kind(model, layer)
  assert kind is not None, "the fast path must differ from the general one"
  args = (graphdef, state, x, jnp.float32(1.0), jnp.float32(0.5))
  fast = sat_lib._sat(*args, layer=layer, k=k, top_kind=kind, batch_size=2)
  general = sat_lib._sat(*args, layer=layer, k=k, top_kind=None, batch_size=2)
  return kind, fast, general


def test_acnn_small(acnn, images):
  x = images
  assert explain.reconstruct(acnn, x, layer=5).shape == x.shape
  ratios = explain.reconstruction_ratios(acnn, x)
  assert tuple(ratios) == acnn.layer_names
  assert all(np.all((r > 0) & np.isfinite(r)) for r in ratios.values())
  grams = explain.gram_distribution(acnn)
  assert grams["conv5"]["diag"].shape == (acnn.conv(5).kernel.shape[-1],)
  # conv5 is relu(conv(conv4 output)): SAT takes the kernel-slice path, which
  # must equal the general VJP.
  kind, fast, general = _sat_both_paths(acnn, x, 5, k=8)
  assert kind == "relu"
  np.testing.assert_allclose(fast, general, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(explain.sat(acnn, x, layer="conv5", k=8,
                                         batch_size=2), fast,
                             rtol=1e-6)
  assert explain.cam(acnn, x).shape == (2, 28, 28)
  assert explain.integrated_gradients(acnn, x, steps=8).shape == (2, 28, 28)
  rise = explain.rise(acnn, x, num_masks=20, batch_size=10)
  assert rise.shape == (2, 28, 28) and np.all(np.isfinite(rise))
  curves = explain.deletion_insertion(acnn, x, fast, step=98)
  assert curves.deletion.shape == (2, 9)
  assert np.all((curves.deletion_auc >= 0) & (curves.deletion_auc <= 1))
  parts = explain.decompose(acnn, x, layer=5, k=4)
  assert parts.components.shape == (2, 4, 28, 28, 1)
  adv = explain.synthesize_adversarial(acnn, x, x[::-1], layer=5, k=4)
  assert adv.shape == x.shape and np.all(np.isfinite(adv))
  assert explain.guided_ig(acnn, x[:1], steps=4).shape == (1, 28, 28)


def test_lenet(lenet, images):
  x = images
  with pytest.raises(ValueError, match="CAM needs a global-pooling head"):
    explain.cam(lenet, x)
  # conv2 follows a max pool: SAT must use the general VJP; conv1 is
  # relu(conv1(x)): the kernel-slice path must equal the general VJP.
  assert onehot_backtrack.top_conv_kind(lenet, 2) is None
  kind, fast, general = _sat_both_paths(lenet, x, 1, k=2)
  assert kind == "relu"
  np.testing.assert_allclose(fast, general, rtol=1e-5, atol=1e-6)
  assert np.count_nonzero(general) > 0
  assert explain.reconstruct(lenet, x, layer=2).shape == x.shape
  assert set(explain.reconstruction_ratios(lenet, x)) == {"conv1", "conv2"}
  attributions = explain.integrated_gradients(lenet, x, steps=8)
  curves = explain.deletion_insertion(lenet, x, attributions, step=196)
  assert curves.insertion.shape == (2, 5)


@pytest.mark.parametrize("name,overrides,hw,paper_layer", [
    ("acnn_small_mnist", dict(width_multiplier=0.05), 28, "conv5"),
    ("acnn_base", dict(width_multiplier=0.05, num_classes=10), 224, "conv8"),
    ("lenet", dict(width_multiplier=0.5), 28, "conv2"),
    ("vgg16", dict(width_multiplier=1 / 16, num_classes=10), 32, "conv13"),
])
def test_declared_top_activation_and_paper_layer(name, overrides, hw,
                                                 paper_layer):
  """Each declared ``top_activation`` is what the forward pass computes."""
  overrides = dict(dict(num_classes=10), **overrides)
  model = F.numpy_init(lambda: models.create(name, rngs=nnx.Rngs(0),
                                             **overrides))
  assert model.explain_layer == paper_layer
  channels = 1 if name in ("acnn_small_mnist", "lenet") else 3
  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, hw, hw, channels)),
                  jnp.float32)
  below = x
  for index, layer in enumerate(model.layer_names, start=1):
    top = model.features(x, layer)
    kind = model.top_activation(layer)
    if kind is not None:
      pre = model.conv(layer)(below)
      want = jax.nn.relu(pre) if kind == "relu" else pre
      np.testing.assert_allclose(top, want, rtol=1e-5, atol=1e-5,
                                 err_msg=f"{name} {layer} declared {kind}")
      if kind == "linear":
        assert np.any(np.asarray(pre) < 0), "a ReLU would pass this check"
    below = top
