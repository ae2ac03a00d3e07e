"""Tests for bort_jax.models: shapes (Tables 4/5), parameter counts, the Bort
mask, the explainer interface, swappable activations, train/eval modes, and
that the small models train under bort_sgd."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import bort_jax
from bort_jax import models

# Narrow variants with the full topology, at each model's paper resolution.
NARROW = {
    "lenet": (dict(), (2, 28, 28, 1)),
    "acnn_small_mnist": (dict(width_multiplier=0.05), (2, 28, 28, 1)),
    "acnn_small_cifar": (dict(width_multiplier=0.05), (2, 32, 32, 3)),
    "acnn_base": (dict(width_multiplier=0.05), (1, 224, 224, 3)),
}
CONV_MODELS = tuple(NARROW)


def _make(name, num_classes=10, seed=0, **overrides):
  # 'rbg' keys: the default threefry initializers take seconds each to compile
  # on a busy CPU, and these tests only need some random init.
  rngs = nnx.Rngs(jax.random.key(seed, impl="rbg"))
  return models.create(name, num_classes=num_classes, rngs=rngs, **overrides)


@functools.cache
def _shared(name, num_classes=10):
  """A narrow model shared by the tests that only read it (never mutate)."""
  overrides, _ = NARROW[name]
  return _make(name, num_classes, **overrides)


# One jitted forward for all tests, so equal (model, shape, mode) reuse a compile.
_forward = nnx.jit(lambda model, x: model(x))


def _abstract(name, num_classes=1000, **overrides):
  """The model's structure and shapes, no weights (cached: read-only)."""
  return _abstract_cached(name, num_classes, tuple(sorted(overrides.items())))


@functools.cache
def _abstract_cached(name, num_classes, overrides):
  return nnx.eval_shape(lambda: _make(name, num_classes, **dict(overrides)))


def _feature_shape(name, shape, layer, num_classes=10, **overrides):
  """Shape of features(x, layer) of a freshly built model, without computing."""
  return jax.eval_shape(
      lambda: _make(name, num_classes, **overrides).features(
          jnp.zeros(shape), layer)).shape


def _param_count(model) -> int:
  return sum(int(np.prod(p.shape))
             for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _images(shape, seed=1):
  # NumPy, not jax.random: each new shape would compile a threefry kernel.
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape),
                     jnp.float32)


def _names(path) -> tuple:
  """A pytree/graph path as plain names, an nnx.Variable's ``.value`` dropped
  (but not a module named 'value')."""
  names = []
  for key in path:
    if isinstance(key, jax.tree_util.GetAttrKey) and key.name == "value":
      continue
    names.append(str(getattr(key, "key", getattr(key, "name",
                                                 getattr(key, "idx", key)))))
  return tuple(names)


# --- registry ---------------------------------------------------------------


def test_create_rejects_unknown_name_listing_names():
  with pytest.raises(ValueError, match="unknown model 'resnet18'.*acnn_base"):
    _make("resnet18")


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "wide", True])
def test_width_multiplier_must_be_positive(bad):
  with pytest.raises(ValueError, match="width_multiplier"):
    _make("acnn_small_mnist", width_multiplier=bad)


def test_unknown_override_is_named():
  with pytest.raises(TypeError, match="stage_sizes"):
    _abstract("acnn_small_mnist", 10, stage_sizes=(1, 1, 1, 1))


def test_input_channels_are_checked():
  model = _shared("acnn_small_mnist")
  with pytest.raises(ValueError, match="1 channels, got shape"):
    model(jnp.zeros((1, 28, 28, 3)))


# --- shapes -----------------------------------------------------------------


@pytest.mark.parametrize("name", CONV_MODELS)
def test_conv_model_logits_shape(name):
  _, shape = NARROW[name]
  logits = _forward(_shared(name), _images(shape))
  assert logits.shape == (shape[0], 10)
  assert bool(jnp.all(jnp.isfinite(logits)))


def test_lenet_rgb_32():
  model = _make("lenet", in_channels=3)
  assert model(_images((2, 32, 32, 3))).shape == (2, 10)
  assert model.fc1.kernel.shape == (5 * 5 * 16, 120)
  assert _abstract("lenet", 10).fc1.kernel.shape == (4 * 4 * 16, 120)


# Table 4: (kernel, out channels, stride, padding, output spatial size).
TABLE4_MNIST = ((5, 8, 1, 1, 26), (2, 24, 2, 0, 13), (4, 288, 1, 1, 12),
                (2, 864, 2, 0, 6), (3, 2592, 1, 1, 6))
TABLE4_CIFAR = ((5, 24, 1, 0, 28), (2, 64, 2, 0, 14), (4, 512, 1, 1, 13),
                (2, 1536, 2, 0, 6), (3, 4608, 1, 1, 6))


@pytest.mark.parametrize("name,table,shape", [
    ("acnn_small_mnist", TABLE4_MNIST, (3, 28, 28, 1)),
    ("acnn_small_cifar", TABLE4_CIFAR, (3, 32, 32, 3)),
])
def test_acnn_small_matches_table4(name, table, shape):
  model = _abstract(name, num_classes=10)
  assert model.layer_names == ("conv1", "conv2", "conv3", "conv4", "conv5")
  for index, (k, out, stride, pad, size) in enumerate(table, start=1):
    conv = model.conv(index)
    assert conv.kernel.shape[:2] == (k, k) and conv.kernel.shape[-1] == out
    assert tuple(conv.strides) == (stride, stride)
    assert tuple(map(tuple, conv.padding)) == ((pad, pad), (pad, pad))
    assert _feature_shape(name, shape, index) == (shape[0], size, size, out)
  assert model.head.kernel.shape == (table[-1][1], 10)
  assert model.head_pool == "max"


def test_acnn_small_mnist_conv5_is_6x6x2592():
  assert _feature_shape("acnn_small_mnist", (4, 28, 28, 1), 5) == (4, 6, 6, 2592)


def test_acnn_base_matches_table5():
  model = _abstract("acnn_base", num_classes=1000)
  assert model.layer_names == tuple(f"conv{i}" for i in range(1, 13))
  kernels = [model.conv(i).kernel.shape for i in range(1, 13)]
  assert [k[0] for k in kernels] == [10, 1, 3, 3, 1, 3, 3, 1, 3, 3, 1, 1]
  assert [k[-1] for k in kernels] == [96, 96, 96, 256, 256, 256, 384, 384,
                                      384, 1024, 1024, 1000]
  assert [model.conv(i).strides[0] for i in range(1, 13)] == [
      3, 1, 2, 1, 1, 2, 1, 1, 2, 1, 1, 1]
  sizes = [_feature_shape("acnn_base", (1, 224, 224, 3), i, 1000)[1]
           for i in (1, 3, 6, 9, 12)]
  assert sizes == [75, 37, 17, 7, 5]
  assert model.head is None and model.head_pool == "max"


def test_acnn_base_last_conv_keeps_num_classes_when_narrow():
  model = _abstract("acnn_base", num_classes=17, width_multiplier=0.05)
  assert model.conv(12).kernel.shape[-1] == 17
  assert model.conv(11).kernel.shape[-1] == round(1024 * 0.05)


# --- width floor (min_channels) ---------------------------------------------


def _out_channels(model) -> tuple:
  return tuple(model.conv(name).kernel.shape[-1] for name in model.layer_names)


@pytest.mark.parametrize("name,width,floor,channels", [
    # x0.125 of Table 4: conv1 rounds to 1 channel without a floor.
    ("acnn_small_mnist", 0.125, 1, (1, 3, 36, 108, 324)),
    ("acnn_small_mnist", 0.125, 8, (8, 8, 36, 108, 324)),
    # conv1 stays at its paper width 8; the floor never widens a layer past it.
    ("acnn_small_mnist", 0.125, 16, (8, 16, 36, 108, 324)),
    ("acnn_small_cifar", 0.125, 1, (3, 8, 64, 192, 576)),
    ("acnn_small_cifar", 0.125, 16, (16, 16, 64, 192, 576)),
    # Paper width: no floor changes anything.
    ("acnn_small_mnist", 1.0, 4096, (8, 24, 288, 864, 2592)),
])
def test_min_channels_floors_acnn_small(name, width, floor, channels):
  model = _abstract(name, 10, width_multiplier=width, min_channels=floor)
  assert _out_channels(model) == channels
  assert model.head.kernel.shape == (channels[-1], 10)


def test_min_channels_floors_acnn_base_but_not_its_class_conv():
  # x0.05 of Table 5: 96 -> 5, 256 -> 13, 384 -> 19, 1024 -> 51; conv12 keeps
  # num_classes = 17 even under a floor of 32.
  model = _abstract("acnn_base", 17, width_multiplier=0.05, min_channels=32)
  assert _out_channels(model) == (32, 32, 32, 32, 32, 32, 32, 32, 32, 51, 51,
                                  17)
  assert _out_channels(_abstract("acnn_base", 17, width_multiplier=0.05)) == (
      5, 5, 5, 13, 13, 13, 19, 19, 19, 51, 51, 17)


# (layer path, out width without a floor, with min_channels=8), at the narrow
# widths below: the floor applies to every width the multiplier scales (the
# head dim for the transformers), and never above the paper's width.
FLOORED = {
    "lenet": (dict(width_multiplier=0.125),
              (("conv1", 1, 6), ("conv2", 2, 8), ("fc1", 15, 15),
               ("fc2", 10, 10))),
    "vgg16": (dict(width_multiplier=1 / 16),
              (("conv1", 4, 8), ("conv3", 8, 8), ("conv13", 32, 32),
               ("fc1", 256, 256))),
    "resnet50": (dict(width_multiplier=1 / 16, stage_sizes=(1, 1, 1, 1)),
                 (("stem", 4, 8), ("layer1.0.conv1", 4, 8),
                  ("layer1.0.conv3", 16, 32), ("layer4.0.conv1", 32, 32))),
    "deit_small": (dict(width_multiplier=1 / 16, depth=1, image_size=32),
                   (("patch_embed", 6 * 4, 6 * 8),)),
    "swin_small": (dict(width_multiplier=1 / 8, depths=(2, 2), num_heads=(3, 6),
                        image_size=56),
                   (("patch_embed", 3 * 4, 3 * 8),)),
}


@pytest.mark.parametrize("name", sorted(FLOORED))
def test_min_channels_floors_every_other_model_the_same_way(name):
  from bort_jax.models.common import resolve_path
  overrides, layers = FLOORED[name]
  plain = _abstract(name, 10, **overrides)
  floored = _abstract(name, 10, min_channels=8, **overrides)
  for path, width, floored_width in layers:
    assert resolve_path(plain, path).kernel.shape[-1] == width, path
    assert resolve_path(floored, path).kernel.shape[-1] == floored_width, path


# Parameters at the paper's width (docs/models.md, benchmarks.count_params).
PAPER_PARAMS = {"lenet": (10, 44_426), "acnn_small_mnist": (10, 21_291_986),
                "acnn_small_cifar": (10, 67_431_786),
                "acnn_base": (1000, 8_973_576), "vgg16": (1000, 138_357_544),
                "resnet50": (1000, 25_557_032), "deit_small": (1000, 22_050_664),
                "swin_small": (1000, 49_606_258)}


# Fewer blocks of the same widths, to keep the floored copies cheap to trace.
SHALLOW = {"resnet50": dict(stage_sizes=(1, 1, 1, 1)), "deit_small": dict(depth=1),
           "swin_small": dict(depths=(2, 2, 2, 2))}


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_min_channels_leaves_paper_width_parameter_counts(name):
  num_classes, count = PAPER_PARAMS[name]
  assert _param_count(_abstract(name, num_classes)) == count
  shallow = SHALLOW.get(name, {})
  assert (_param_count(_abstract(name, num_classes, min_channels=10**6,
                                 **shallow))
          == _param_count(_abstract(name, num_classes, **shallow)))


@pytest.mark.parametrize("bad", [0, -8, 2.5, True, "8", None])
def test_min_channels_must_be_a_positive_int(bad):
  with pytest.raises(ValueError, match=f"min_channels must be a positive int, "
                     f"got {re.escape(repr(bad))}"):
    _make("acnn_small_mnist", width_multiplier=0.05, min_channels=bad)


# --- the Bort mask ----------------------------------------------------------

# Number of leaves default_mask must select: every conv/dense/attention kernel.
KERNEL_COUNTS = {
    "lenet": 5, "acnn_small_mnist": 6, "acnn_small_cifar": 6, "acnn_base": 12,
    "vgg16": 13 + 3,
    "resnet50": 1 + 16 * 3 + 4 + 1,  # stem, blocks, projections, fc
    "deit_small": 1 + 12 * 6 + 1,  # patch conv, (q, k, v, out, fc1, fc2), head
    "swin_small": 1 + 24 * 6 + 3 + 1,  # ... and 3 patch-merging dense layers
}


WEIGHT_MODULES = (nnx.Conv, nnx.Linear, nnx.LinearGeneral)


@pytest.mark.parametrize("name", sorted(KERNEL_COUNTS))
def test_default_mask_selects_exactly_the_kernels(name):
  model = _abstract(name)
  params = nnx.state(model, nnx.Param)
  mask = bort_jax.default_mask(params)
  selected = {_names(path) for path, chosen
              in jax.tree_util.tree_leaves_with_path(mask) if chosen}
  weights = {_names(path) + ("kernel",) for path, module
             in nnx.iter_graph(model) if isinstance(module, WEIGHT_MODULES)}
  assert selected == weights
  assert len(selected) == KERNEL_COUNTS[name]


# --- explainer interface ----------------------------------------------------


# Which conv layers are followed by a ReLU (Tables 4 and 5, LeNet).
HAS_RELU = {
    "lenet": (True, True),
    "acnn_small_mnist": (True, False, True, False, True),
    "acnn_small_cifar": (True, False, True, False, True),
    "acnn_base": (True,) * 12,
}


@pytest.mark.parametrize("name", sorted(HAS_RELU))
def test_conv_of_conv_input_gives_features(name):
  """features(layer) = relu?(conv(layer)(conv_inputs[layer])); the keys of
  conv_inputs come in layer_names order, the first being the images."""
  _, shape = NARROW[name]
  model = _shared(name)
  x = _images(shape)
  inputs = model.conv_inputs(x)
  assert tuple(inputs) == model.layer_names
  np.testing.assert_array_equal(inputs[model.layer_names[0]], x)
  for layer, has_relu in zip(model.layer_names, HAS_RELU[name], strict=True):
    pre = model.conv(layer)(inputs[layer])
    expected = jax.nn.relu(pre) if has_relu else pre
    np.testing.assert_allclose(model.features(x, layer), expected,
                               rtol=1e-5, atol=1e-5)


def test_acnn_small_relu_placement_follows_table4():
  model = _shared("acnn_small_mnist")
  x = _images((2, 28, 28, 1))
  for layer, has_relu in zip(model.layer_names, (True, False, True, False, True)):
    out = model.features(x, layer)
    assert bool(jnp.all(out >= 0)) == has_relu, layer


@pytest.mark.parametrize("name", ["acnn_small_mnist", "acnn_base"])
def test_logits_are_pooled_last_features_through_head(name):
  """What CAM relies on: logits = head(head_pool(features(x, last)))."""
  _, shape = NARROW[name]
  model = _shared(name)
  x = _images(shape)
  last = model.features(x, len(model.layer_names))
  pooled = jnp.max(last, axis=(1, 2))
  expected = pooled if model.head is None else model.head(pooled)
  np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-5)


def test_features_computes_only_up_to_the_layer():
  calls = []

  def counting_relu(x):
    calls.append(x.shape)
    return jax.nn.relu(x)

  model = _shared("acnn_base")
  model.features(_images((1, 224, 224, 3)), 2, activation=counting_relu)
  assert len(calls) == 2


@pytest.mark.parametrize("bad,error", [(0, ValueError), (6, ValueError),
                                       ("conv9", ValueError), (1.0, TypeError)])
def test_features_rejects_bad_layer(bad, error):
  model = _shared("acnn_small_mnist")
  with pytest.raises(error, match="layer"):
    model.features(jnp.zeros((1, 28, 28, 1)), bad)


@jax.custom_vjp
def _relu_passing_positive_grads(x):
  return jax.nn.relu(x)


def _fwd(x):
  return jax.nn.relu(x), x


def _bwd(x, g):
  # Guided-backprop rule (paper Eq. 16): pass g where x > 0 and g > 0.
  return (jnp.where((x > 0) & (g > 0), g, 0.0),)


_relu_passing_positive_grads.defvjp(_fwd, _bwd)


@pytest.mark.parametrize("name", ["lenet", "acnn_small_cifar"])
def test_swapped_activation_changes_vjp_not_forward(name):
  _, shape = NARROW[name]
  model = _shared(name)
  x = _images(shape)

  def class_score(images, activation):
    return model(images, activation=activation)[:, 3].sum()

  plain, plain_grad = jax.value_and_grad(class_score)(x, None)
  guided, guided_grad = jax.value_and_grad(class_score)(
      x, _relu_passing_positive_grads)
  np.testing.assert_allclose(guided, plain, rtol=1e-6)
  assert not np.allclose(guided_grad, plain_grad, atol=1e-6)
  # Same weights: the swap must not have copied or changed parameters.
  np.testing.assert_allclose(model(x), model(x, activation=jax.nn.relu))


def test_activation_must_be_callable():
  model = _shared("lenet")
  with pytest.raises(TypeError, match="activation must be callable"):
    model(jnp.zeros((1, 28, 28, 1)), activation="relu")


def test_acnn_base_dropout_only_in_train_mode():
  model = _make("acnn_base", 1000, width_multiplier=0.05, dropout_rate=0.5)
  x = _images((1, 224, 224, 3))
  model.eval()
  np.testing.assert_array_equal(model(x), model(x))
  model.train()
  assert not np.allclose(model(x), model(x))
  # features/conv_inputs are always eval mode.
  np.testing.assert_array_equal(model.features(x, 12), model.features(x, 12))


# --- training together with Bort --------------------------------------------


def _final_over_initial_loss(model, images, labels, steps):
  graphdef, params, others = nnx.split(model, nnx.Param, ...)
  tx = bort_jax.bort_sgd(0.05, lam=0.01, momentum=0.9)

  def loss_fn(p):
    logits = nnx.merge(graphdef, p, others)(images)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  def step(carry, _):
    p, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, opt_state = tx.update(grads, opt_state, p)
    return (optax.apply_updates(p, updates), opt_state), loss

  @jax.jit
  def fit(p):
    (p, _), losses = jax.lax.scan(step, (p, tx.init(p)), None, length=steps)
    return losses[0], loss_fn(p)

  initial, final = fit(params)
  return float(final / initial)


@pytest.mark.parametrize("name,overrides,shape", [
    ("lenet", dict(width_multiplier=0.5), (16, 28, 28, 1)),
    ("acnn_small_mnist", dict(width_multiplier=0.05), (16, 28, 28, 1)),
])
def test_small_models_fit_a_fixed_batch_under_bort_sgd(name, overrides, shape):
  model = _make(name, **overrides)
  images = _images(shape)
  labels = jnp.asarray(np.random.default_rng(2).integers(0, 10, shape[0]))
  assert _final_over_initial_loss(model, images, labels, steps=150) < 0.1


# --- VGG16, ResNet50, DeiT-S, Swin-S ----------------------------------------

# Reference parameter counts (1000 classes, 224x224): torchvision/timm.
REFERENCE_PARAMS = {"resnet50": 25.56e6, "vgg16": 138.36e6,
                    "deit_small": 22.05e6, "swin_small": 49.61e6}


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_count_matches_reference(name):
  count = _param_count(_abstract(name, 1000))
  assert abs(count / REFERENCE_PARAMS[name] - 1) < 0.005, count


def test_default_mask_leaves_out_tokens_embeddings_and_tables():
  for name, unselected in [("deit_small", ("cls_token", "pos_embed")),
                           ("swin_small", ("relative_position_bias_table",))]:
    params = nnx.state(_abstract(name, 10, depth=1) if name == "deit_small"
                       else _abstract(name, 10, depths=(2, 2, 2, 2)), nnx.Param)
    mask = bort_jax.default_mask(params)
    for path, chosen in jax.tree_util.tree_leaves_with_path(mask):
      if _names(path)[-1] in unselected:
        assert not chosen, path


def test_attention_kernels_have_flax_multihead_layout():
  from bort_jax.optim import default_dimension_numbers
  model = _abstract("deit_small", 10, depth=1)
  attn = model.blocks[0].attn
  assert attn.query.kernel.shape == (384, 6, 64)
  assert attn.out.kernel.shape == (6, 64, 384)
  dims = default_dimension_numbers(nnx.state(attn, nnx.Param))
  out_axes = {_names(path)[0]: d.output_axis for path, d in
              jax.tree_util.tree_leaves_with_path(
                  dims, is_leaf=lambda d: hasattr(d, "output_axis"))
              if _names(path)[-1] == "kernel"}
  assert out_axes == {"query": (-2, -1), "key": (-2, -1), "value": (-2, -1),
                      "out": -1}


# Narrow, shallow versions of the big models. The transformers get a smaller
# image_size (DeiT: 4x4 patches of 16; Swin: 14x14 patches of 4, so windows of
# 7 and one patch merging); the CNNs keep the paper's 224x224.
BIG_NARROW = {
    "vgg16": dict(width_multiplier=1 / 16),
    "resnet50": dict(width_multiplier=1 / 16, stage_sizes=(1, 1, 1, 1)),
    "deit_small": dict(width_multiplier=1 / 16, depth=2, drop_path_rate=0.9,
                       image_size=64),
    # Two stages: plain and shifted windows, and one patch merging.
    "swin_small": dict(width_multiplier=1 / 8, depths=(2, 2), num_heads=(3, 6),
                       drop_path_rate=0.9, image_size=56),
}


def _big_input(name):
  size = BIG_NARROW[name].get("image_size", 224)
  return (2, size, size, 3)


@functools.cache
def _big(name):
  """Shared by the tests below; each leaves it in eval mode."""
  model = _make(name, 5, **BIG_NARROW[name])
  model.eval()
  return model


@pytest.mark.parametrize("name", sorted(BIG_NARROW))
def test_big_model_logits_shape(name):
  logits = _forward(_big(name), _images(_big_input(name)))
  assert logits.shape == (2, 5) and bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("name", ["vgg16", "deit_small", "swin_small"])
def test_dropout_and_drop_path_act_only_in_train_mode(name):
  model = _big(name)
  x = _images(_big_input(name))
  evaluated = _forward(model, x)
  np.testing.assert_array_equal(_forward(model, x), evaluated)
  model.train()
  trained = _forward(model, x)
  model.eval()
  assert not np.allclose(trained, evaluated)


def test_drop_path_drops_whole_samples():
  from bort_jax.models.transformer import drop_path
  rate = 0.5
  layer = drop_path(rate, 3, nnx.Rngs(jax.random.key(0, impl="rbg")))
  kept = layer(jnp.ones((64, 5, 4)))
  per_sample = kept.reshape(64, -1)
  # Each sample's branch is dropped or kept (rescaled) as a whole.
  assert bool(jnp.all(per_sample == per_sample[:, :1]))
  assert set(np.unique(per_sample).tolist()) == {0.0, 1 / (1 - rate)}
  layer.eval()
  np.testing.assert_array_equal(layer(jnp.ones((64, 5, 4))), 1.0)


def test_resnet_batch_norm_train_vs_eval():
  model = _big("resnet50")
  x = _images(_big_input("resnet50"))
  # Eval: running statistics, so a sample's logits ignore the rest of the batch.
  np.testing.assert_allclose(_forward(model, x)[:1], _forward(model, x[:1]),
                             rtol=1e-5, atol=1e-5)
  before = np.array(model.stem_bn.mean[...])
  model.train()
  train_logits = _forward(model, x)
  single = _forward(model, x[:1])
  after = np.array(model.stem_bn.mean[...])
  model.eval()
  assert not np.allclose(train_logits[:1], single, atol=1e-4)
  assert not np.allclose(after, before)


def test_resnet_layers_and_cam_invariant():
  model = _big("resnet50")
  names = model.layer_names
  assert names[:5] == ("stem", "layer1.0.conv1", "layer1.0.conv2",
                       "layer1.0.downsample", "layer1.0.conv3")
  assert len(names) == 1 + 4 * 4
  # v1.5: the stride sits on the 3x3 conv of a downsampling block.
  assert tuple(model.conv("layer2.0.conv1").strides) == (1, 1)
  assert tuple(model.conv("layer2.0.conv2").strides) == (2, 2)
  assert tuple(model.conv("layer2.0.downsample").strides) == (2, 2)
  x = _images((2, 64, 64, 3))
  inputs = model.conv_inputs(x)
  assert tuple(inputs) == names
  last = model.features(x, names[-1])
  assert last.shape == (2, 2, 2, round(512 / 16) * 4)
  np.testing.assert_allclose(model(x), model.head(jnp.mean(last, axis=(1, 2))),
                             rtol=1e-5, atol=1e-5)
  # conv1 of layer2 receives layer1's block output (the conv3 feature).
  np.testing.assert_allclose(inputs["layer2.0.conv1"],
                             model.features(x, "layer1.0.conv3"), atol=1e-6)
  stem = model.features(x, "stem")
  assert stem.shape == (2, 32, 32, 4) and bool(jnp.all(stem >= 0))


def test_vgg_layers_pool_between_stages():
  model = _make("vgg16", 5, width_multiplier=1 / 16)
  assert model.layer_names == tuple(f"conv{i}" for i in range(1, 14))
  x = _images((1, 32, 32, 3))
  inputs = model.conv_inputs(x)
  conv2 = model.features(x, 2)
  np.testing.assert_allclose(inputs["conv3"], nnx.max_pool(conv2, (2, 2), (2, 2)),
                             atol=1e-6)
  np.testing.assert_allclose(inputs["conv2"], model.features(x, 1), atol=1e-6)
  assert model.features(x, 13).shape == (1, 2, 2, 32)
  assert model.head is None and model.head_pool is None


# --- Swin: relative position bias and the shifted-window mask ---------------


def test_relative_position_index():
  from bort_jax.models.swin import relative_position_index
  window = 3
  index = relative_position_index(window)
  rows, cols = np.divmod(np.arange(window * window), window)
  expected = ((rows[:, None] - rows[None, :] + window - 1) * (2 * window - 1)
              + cols[:, None] - cols[None, :] + window - 1)
  np.testing.assert_array_equal(index, expected)
  assert index.min() == 0 and index.max() == (2 * window - 1) ** 2 - 1


def test_shifted_window_attention_matches_masked_global_attention():
  """A shifted-window block attends exactly between tokens that share a
  window of the rolled map and were neighbours in the image (neither or both
  wrapped around by the roll), with the relative-position bias; checked
  against attention over all tokens with that rule as a dense mask."""
  from bort_jax.models.swin import SwinBlock
  size, window, shift, heads, dim = 4, 2, 1, 2, 8
  block = SwinBlock(dim, heads, size, window, shift, 2.0, 0.0,
                    rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
  x = _images((2, size, size, dim))
  rolled = jnp.roll(x, (-shift, -shift), axis=(1, 2)).reshape(2, size * size, dim)
  r, c = np.divmod(np.arange(size * size), size)
  same_window = ((r[:, None] // window == r[None] // window)
                 & (c[:, None] // window == c[None] // window))
  wrapped_r, wrapped_c = r >= size - shift, c >= size - shift
  allowed = (same_window & (wrapped_r[:, None] == wrapped_r[None])
             & (wrapped_c[:, None] == wrapped_c[None]))
  offset = ((r[:, None] - r[None] + window - 1) * (2 * window - 1)
            + c[:, None] - c[None] + window - 1)
  table = block.relative_position_bias_table[...]
  bias = jnp.where(same_window[..., None], table[np.where(same_window, offset, 0)],
                   0.0).transpose(2, 0, 1)
  dense = block.attn(rolled, bias=bias[None], mask=allowed[None, None])
  expected = jnp.roll(dense.reshape(2, size, size, dim), (shift, shift),
                      axis=(1, 2))
  windowed = nnx.jit(lambda block, x: block._window_attention(x))(block, x)
  np.testing.assert_allclose(windowed, expected, rtol=1e-5, atol=1e-5)
  assert not allowed.all(axis=1).any()  # the mask does cut some pairs


def test_swin_window_shrinks_to_small_stage():
  model = _abstract("swin_small", 10, depths=(2, 2, 2, 2))
  last = model.stages[3].blocks[1]
  assert (last.window, last.shift) == (7, 0)  # 7x7 stage: one window, no shift
  assert (model.stages[0].blocks[1].window, model.stages[0].blocks[1].shift) == (7, 3)


def test_transformer_overrides_are_checked():
  with pytest.raises(ValueError, match="multiple of patch_size"):
    _abstract("deit_small", 10, image_size=100)
  with pytest.raises(ValueError, match="one entry per stage"):
    _abstract("swin_small", 10, depths=(2, 2), num_heads=(3, 6, 12))


def test_adaptive_avg_pool_matches_pytorch_bins():
  from bort_jax.models.common import adaptive_avg_pool
  x = _images((2, 5, 4, 3))
  pooled = np.asarray(adaptive_avg_pool(x, (3, 7)))
  x = np.asarray(x)
  # PyTorch's rule: bin i covers [floor(i·n/out), ceil((i+1)·n/out)).
  for i in range(3):
    for j in range(7):
      rows = slice(i * 5 // 3, -(-(i + 1) * 5 // 3))
      cols = slice(j * 4 // 7, -(-(j + 1) * 4 // 7))
      np.testing.assert_allclose(pooled[:, i, j], x[:, rows, cols].mean(axis=(1, 2)),
                                 rtol=1e-5, atol=1e-6)
