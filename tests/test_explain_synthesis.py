"""Decomposition and adversarial synthesis (Section 4.2.4, Appendix A.5)."""

import jax.numpy as jnp
import numpy as np
import pytest

from bort_jax import explain
import explain_fixtures as F


def _onehot_map(z, entries):
  sparse = np.zeros(z.shape, np.float32)
  for position, channel, value in entries:
    sparse[0].reshape(-1, z.shape[-1])[position, channel] = value
  return sparse


def test_decompose_matches_reconstruct_of_binarised_variables():
  model = F.two_layer(seed=10)
  x = F.random_images(2, 8, 2, seed=10)
  k, B = 3, 2.0
  result = explain.decompose(model, x, layer=2, k=k, B=B)
  assert result.components.shape == (2, k, 8, 8, 2)
  assert result.reconstruction.shape == (2, 8, 8, 2)
  z = np.asarray(model.features(x, 2))
  for b in range(2):
    flat = z[b].reshape(-1, 8)
    channels = np.argsort(-flat.max(0), kind="stable")[:k]
    np.testing.assert_array_equal(result.channels[b], channels)
    entries = [(flat[:, c].argmax(), c, B) for c in channels]
    for i, entry in enumerate(entries):
      want = explain.reconstruct(model, x[b:b + 1], layer=2,
                                 features=_onehot_map(z[b:b + 1], [entry]))
      np.testing.assert_allclose(result.components[b, i], want[0], rtol=1e-5,
                                 atol=1e-6)
    want = explain.reconstruct(model, x[b:b + 1], layer=2,
                               features=_onehot_map(z[b:b + 1], entries))
    np.testing.assert_allclose(result.reconstruction[b], want[0], rtol=1e-5,
                               atol=1e-6)


def test_cluster_components():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(2, 4, 4, 1)) * 10
  comps = np.stack([centres[i % 2] + 0.01 * rng.normal(size=(4, 4, 1))
                    for i in range(6)]).reshape(2, 3, 4, 4, 1)
  labels = explain.cluster_components(comps, 2)
  assert labels.shape == (2, 3)
  flat = labels.ravel()
  assert len(set(flat[0::2])) == 1 and len(set(flat[1::2])) == 1
  assert flat[0] != flat[1]
  with pytest.raises(ValueError, match="n_clusters must be in 1..6"):
    explain.cluster_components(comps, 7)


def test_synthesized_sample_carries_the_targets_channels():
  model = F.orthogonal_two_layer(channels=32, seed=11)
  x = F.random_images(6, 8, 2, seed=11)
  source, target = x, x[::-1]
  k = 4
  adv = explain.synthesize_adversarial(model, source, target, layer=2, k=k)
  assert adv.shape == source.shape
  top = lambda images: np.argsort(
      -np.asarray(model.features(images, 2)).max(axis=(1, 2)), axis=1,
      kind="stable")[:, :k]
  overlap = lambda a, b: np.mean([len(set(i) & set(j)) / k
                                  for i, j in zip(top(a), top(b))])
  # The target's channels dominate the synthesized sample, far more than they
  # did the source.
  assert overlap(adv, target) >= 0.6
  assert overlap(adv, target) > overlap(source, target) + 0.25
  rate = explain.adversarial_success_rate(model, adv, target)
  predicted = lambda images: np.asarray(model(images)).argmax(-1)
  assert rate == np.mean(predicted(adv) == predicted(target))


def test_synthesis_is_reconstruct_of_the_constructed_feature_map():
  """Per pair: the target's top-k channels (by max activation y_c), each set to
  y_c·B at the position where the *source*'s same channel peaks, all else
  zero, reconstructed through the source's forward pass."""
  model = F.two_layer(seed=12)
  x = F.random_images(3, 8, 2, seed=12)
  source, target = x, jnp.roll(x, 1, axis=0)
  k, B = 3, 1.5
  adv = explain.synthesize_adversarial(model, source, target, layer=2, k=k,
                                       B=B, batch_size=2)
  feature_shape = model.features(source, 2).shape  # (3, h, w, 8)
  z_source = np.asarray(model.features(source, 2)).reshape(3, -1, 8)
  z_target = np.asarray(model.features(target, 2)).reshape(3, -1, 8)
  for b in range(3):
    peaks = z_target[b].max(0)
    channels = np.argsort(-peaks, kind="stable")[:k]
    entries = [(z_source[b, :, c].argmax(), c, peaks[c] * B)
               for c in channels]
    want = explain.reconstruct(model, source[b:b + 1], layer=2,
                               features=_onehot_map(
                                   np.zeros((1,) + feature_shape[1:]), entries))
    np.testing.assert_allclose(adv[b], want[0], rtol=1e-5, atol=1e-6)


def test_success_rate_leaves_out_pairs_whose_source_has_the_targets_class():
  # Appendix A.5: a sample "fools" the model when it takes the target's class;
  # a pair whose source already had that class cannot show it (Fig. 6c rule).
  model = F.two_layer()
  x = F.random_images(12, 8, 2, seed=1)
  source, target = x, np.roll(x, 1, axis=0)
  adv = explain.synthesize_adversarial(model, source, target, layer=2, k=4)
  predicted = lambda images: np.asarray(model(images)).argmax(-1)
  counted = predicted(source) != predicted(target)
  assert 0 < counted.sum() < len(counted)  # both kinds of pair occur
  hits = predicted(adv) == predicted(target)
  assert explain.adversarial_success_rate(
      model, adv, target, x_source=source) == hits[counted].mean()
  assert explain.adversarial_success_rate(model, adv, target) == hits.mean()
  with pytest.raises(ValueError, match="every one of the 12 sources"):
    explain.adversarial_success_rate(model, adv, target, x_source=target)


def test_synthesis_errors():
  model = F.two_layer()
  x = F.random_images(2, 8, 2)
  with pytest.raises(ValueError, match="same shape"):
    explain.synthesize_adversarial(model, x, x[:1], layer=2)
  with pytest.raises(ValueError, match="same number of images"):
    explain.adversarial_success_rate(model, x, x[:1])
  with pytest.raises(ValueError, match="x_adv and x_source must hold"):
    explain.adversarial_success_rate(model, x, x, x_source=x[:1])
