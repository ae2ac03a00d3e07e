"""The explainers on narrow versions of the four ImageNet models that
``bort_jax.models.load_pretrained`` converts (ResNet50, VGG16, DeiT-S, Swin-S).

ResNet50 keeps its bottleneck blocks (projection shortcut, BN, residual sum)
with one block per stage; VGG16 keeps its 13 convs. The transformers expose
their one conv, the patch embedding (a p x p kernel K with stride p, i.e. a
dense map of each patch), to the white-box explainers: every result is
checked against that patch-wise formula, in float64 NumPy.
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


def _to_patches(x, p):
  """(B, H, W, C) -> (B, H/p, W/p, p·p·C), features in K's (row, col, in)
  order, so that a patch vector times K.reshape(-1, D) is the conv."""
  b, h, w, c = x.shape
  x = np.asarray(x, np.float64).reshape(b, h // p, p, w // p, p, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // p, w // p, p * p * c)


def _from_patches(v, p, c):
  """Inverse of :func:`_to_patches`."""
  b, hp, wp, _ = v.shape
  v = v.reshape(b, hp, wp, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return v.reshape(b, hp * p, wp * p, c)


def _walked_back(sparse, kernel):
  """Σ_d z_d K[..., d] placed in each patch: the patch embedding's transpose
  (Eq. 4) applied to a (B, H/p, W/p, D) map; exact since no ReLU lies below."""
  p, _, c, d = kernel.shape
  return _from_patches(sparse @ kernel.reshape(-1, d).T, p, c)


def _onehots(shape, positions, channels, values):
  """(B, h, w, D) zeros holding values[b, j] at (positions[b, j] in raster
  order, channels[b, j])."""
  b, h, w, d = shape
  sparse = np.zeros((b, h * w, d))
  rows = np.arange(b)[:, None]
  sparse[rows, positions, channels] = values
  return sparse.reshape(shape)


@pytest.mark.parametrize("name", ["deit_small", "swin_small"])
def test_white_box_explainers_read_the_transformers_patch_embedding(name,
                                                                    images):
  """features = the conv (for Swin before its LayerNorm); ratios, Gram,
  reconstruction, decomposition, SAT and synthesis equal the patch-wise
  formula of that conv; CAM refuses (the head reads transformer tokens)."""
  model, x, k, B = _model(name), images, 4, 2.0
  assert model.layer_names == ("patch_embed",)
  assert model.explain_layer == "patch_embed"
  kernel = np.asarray(model.conv("patch_embed").kernel, np.float64)
  p, _, channels_in, dim = kernel.shape
  K = kernel.reshape(-1, dim)  # (fan_in, D)
  patches = _to_patches(x, p)  # (B, h, w, fan_in)
  z = model.features(x, "patch_embed")
  bias = np.asarray(model.patch_embed.bias, np.float64)
  np.testing.assert_allclose(z, patches @ K + bias, rtol=1e-4, atol=1e-5)

  ratios = explain.reconstruction_ratios(model, x)["patch_embed"]
  flat = patches.reshape(len(x), -1, K.shape[0])
  expected = (np.linalg.norm(flat - flat @ K @ K.T, axis=(1, 2))
              / np.linalg.norm(flat, axis=(1, 2)))
  np.testing.assert_allclose(ratios, expected, rtol=1e-4)

  grams = explain.gram_distribution(model)  # keyed by layer_names
  assert list(grams) == ["patch_embed"]
  gram = K.T @ K  # D ≤ fan_in here: the smaller side
  assert dim <= K.shape[0]
  np.testing.assert_allclose(grams["patch_embed"]["diag"], np.diag(gram),
                             rtol=1e-4)
  np.testing.assert_allclose(grams["patch_embed"]["offdiag"],
                             gram[~np.eye(dim, dtype=bool)], rtol=1e-4,
                             atol=1e-6)

  # Guided reconstruction of a selected map: the 2 largest activations of
  # every position kept, the rest zeroed.
  z = np.asarray(z, np.float64)
  keep = z >= np.sort(z, axis=-1)[..., -2:-1]
  selected = np.where(keep, z, 0.0)
  np.testing.assert_allclose(
      explain.reconstruct(model, x, layer="patch_embed", features=selected),
      _walked_back(selected, kernel), rtol=1e-4, atol=1e-5)

  # Decomposition: the k channels with the largest max, each set to B at its
  # arg-max patch and walked back alone, then all k together.
  parts = explain.decompose(model, x, layer=1, k=k, B=B)
  flat_z = z.reshape(len(x), -1, dim)
  y = flat_z.max(axis=1)
  chosen = np.argsort(-y, axis=1, kind="stable")[:, :k]
  np.testing.assert_array_equal(parts.channels, chosen)
  positions = np.take_along_axis(flat_z.argmax(axis=1), chosen, axis=1)
  for j in range(k):
    onehot = _onehots(z.shape, positions[:, j:j + 1], chosen[:, j:j + 1], B)
    np.testing.assert_allclose(parts.components[:, j],
                               _walked_back(onehot, kernel), rtol=1e-4,
                               atol=1e-5)
  np.testing.assert_allclose(
      parts.reconstruction,
      _walked_back(_onehots(z.shape, positions, chosen, B), kernel),
      rtol=1e-4, atol=1e-5)

  # SAT (Algorithm 1) = Σ_i y_i · binarised component i (B does not change
  # the masks).
  masks = explain.binarize(np.asarray(parts.components), explain.DEFAULT_GAMMA)
  y_top = np.take_along_axis(y, chosen, axis=1)
  np.testing.assert_allclose(
      explain.sat(model, x, layer="patch_embed", k=k),
      np.einsum("nk,nkhw->nhw", y_top, masks), rtol=1e-4, atol=1e-5)

  # Synthesis (A.5): the target's k most salient values B·y placed at the
  # source's arg-max of each of those channels, walked back.
  source, target = x, x[::-1]
  y_target, chosen_target = y[::-1], chosen[::-1]
  at_source = np.take_along_axis(flat_z.argmax(axis=1), chosen_target, axis=1)
  sparse = _onehots(z.shape, at_source, chosen_target,
                    B * np.take_along_axis(y_target, chosen_target, axis=1))
  np.testing.assert_allclose(
      explain.synthesize_adversarial(model, source, target, layer=1, k=k, B=B),
      _walked_back(sparse, kernel), rtol=1e-4, atol=1e-5)

  with pytest.raises(ValueError, match="CAM needs a global-pooling head on "
                     "the last conv layer 'patch_embed'.*head_pool=None"):
    explain.cam(model, x)


@pytest.mark.parametrize("name", ["deit_small", "swin_small"])
def test_transformers_kernel_grams_by_path_and_black_box_explainers(name,
                                                                    images):
  """Their params give Gram entries of every kernel (attention included); a
  black-box explainer runs (RISE on DeiT only: Swin's forward pass is the
  slowest compile here, and RISE treats every model the same way)."""
  model, x = _model(name), images
  grams = explain.gram_distribution(nnx.state(model, nnx.Param))
  assert "patch_embed/kernel" in grams and "head/kernel" in grams
  assert any("attn/query" in path for path in grams)
  if name == "deit_small":
    rise = explain.rise(model, x, num_masks=8, batch_size=8)
    assert rise.shape == (2, 32, 32) and np.all(np.isfinite(rise))
