"""The explainers on narrow versions of the four ImageNet models that
``bort_jax.models.load_pretrained`` converts (ResNet50, VGG16, DeiT-S, Swin-S).

ResNet50 keeps its bottleneck blocks (projection shortcut, BN, residual sum)
with one block per stage; VGG16 keeps its 13 convs. The transformers have no
conv-layer interface: Gram entries cover every kernel, the conv explainers
refuse them naming what is missing (they would need a conv-layer interface
that these models do not have), and the black-box ones run.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bort_jax import explain
from bort_jax import models
import explain_fixtures as F

NARROW = {
    "resnet50": dict(width_multiplier=1 / 16, stage_sizes=(1, 1, 1, 1)),
    "vgg16": dict(width_multiplier=1 / 16),
    "deit_small": dict(width_multiplier=1 / 16, image_size=32, patch_size=8,
                       depth=1),
    "swin_small": dict(width_multiplier=1 / 16, image_size=32,
                       depths=(1, 1, 1, 1), window_size=2),
}


@pytest.fixture(scope="module")
def images():
  rng = np.random.default_rng(0)
  return jnp.asarray(rng.normal(size=(2, 32, 32, 3)), jnp.float32)


def _model(name):
  """NumPy-drawn weights (explain_fixtures.numpy_init); BatchNorm running
  variances made positive (that init draws them around 0)."""
  model = F.numpy_init(lambda: models.create(
      name, num_classes=10, rngs=nnx.Rngs(0), **NARROW[name]))
  graphdef, stats, rest = nnx.split(model, nnx.BatchStat, ...)
  stats = jax.tree_util.tree_map_with_path(
      lambda path, x: 1.0 + jnp.abs(x)
      if "'var'" in jax.tree_util.keystr(path) else x, stats)
  return nnx.merge(graphdef, stats, rest)


@pytest.mark.parametrize("name", ["resnet50", "vgg16"])
def test_every_white_box_explainer_on_the_imagenet_cnns(name, images):
  model, x = _model(name), images
  layer, k = model.explain_layer, 4
  ratios = explain.reconstruction_ratios(model, x)
  assert set(ratios) == set(model.layer_names)
  # 0 only where a layer's input is all zero (documented); never NaN.
  assert all(np.all((r >= 0) & np.isfinite(r)) for r in ratios.values())
  assert any(np.all(r > 0) for r in ratios.values())
  grams = explain.gram_distribution(model)
  kernel = np.asarray(model.conv(layer).kernel, np.float64)
  w = kernel.reshape(-1, kernel.shape[-1])  # (fan_in, out)
  side = w.T @ w if w.shape[1] <= w.shape[0] else w @ w.T
  np.testing.assert_allclose(grams[layer]["diag"], np.diag(side), rtol=1e-4)
  reconstruction = explain.reconstruct(model, x, layer=layer)
  assert reconstruction.shape == x.shape
  assert np.all(np.isfinite(reconstruction)) and np.any(reconstruction != 0)
  sat = explain.sat(model, x, layer=layer, k=k)
  assert sat.shape == (2, 32, 32) and np.any(sat > 0)
  if model.head_pool is None:  # VGG: flatten + dense head, like LeNet
    with pytest.raises(ValueError, match="CAM needs a global-pooling head"):
      explain.cam(model, x)
  else:
    assert explain.cam(model, x).shape == (2, 32, 32)
  parts = explain.decompose(model, x, layer=layer, k=k)
  assert parts.components.shape == (2, k, 32, 32, 3)
  channels = model.features(x, layer).shape[-1]
  for chosen in np.asarray(parts.channels):  # k distinct channels per image
    assert len(set(chosen)) == k and all(0 <= c < channels for c in chosen)
  assert np.all(np.isfinite(parts.reconstruction))
  adversarial = explain.synthesize_adversarial(model, x, x[::-1], layer=layer,
                                               k=k)
  assert adversarial.shape == x.shape and np.all(np.isfinite(adversarial))


@pytest.mark.parametrize("name", ["deit_small", "swin_small"])
def test_transformers_get_gram_entries_and_black_box_explainers(name, images):
  """The conv explainers refuse them; Gram entries cover every kernel; a
  black-box explainer runs (RISE on DeiT only: Swin's forward pass is the
  slowest compile here, and RISE treats every model the same way)."""
  model, x = _model(name), images
  grams = explain.gram_distribution(model)
  assert "patch_embed/kernel" in grams and "head/kernel" in grams
  assert any("attn/query" in path for path in grams)
  with pytest.raises(TypeError, match="needs .layer_names and .features"):
    explain.reconstruction_ratios(model, x)
  if name == "deit_small":
    rise = explain.rise(model, x, num_masks=8, batch_size=8)
    assert rise.shape == (2, 32, 32) and np.all(np.isfinite(rise))
