"""load_pretrained / export_pretrained against torchvision's and timm's originals.

The reference logits come from the original torch models filled with random
weights (tests/make_pretrained_fixtures.py, run once where torch is); here the
same state dicts are rebuilt with numpy alone (tests/pretrained_fixtures.py),
so torch is no test dependency.
"""

import functools
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import pretrained_fixtures
from bort_jax import models
from bort_jax.models import pretrained


@functools.cache
def _fixture(name):
  manifest, logits, probe = pretrained_fixtures.load(name)
  state = pretrained_fixtures.state_dict(manifest)
  x = pretrained_fixtures.images(manifest)
  np.testing.assert_array_equal(
      pretrained_fixtures.probe(state, x), probe,
      err_msg="numpy's generator no longer reproduces the fixture's weights")
  return manifest, state, x, logits


@functools.cache
def _loaded(name):
  """The fixture's state dict loaded once per test process, in eval mode."""
  model = models.load_pretrained(name, _fixture(name)[1])
  model.eval()
  return model


def _assert_same(actual: dict, expected: dict) -> None:
  assert sorted(actual) == sorted(expected)
  different = [k for k in expected if not np.array_equal(actual[k], expected[k])]
  assert not different, f"different values: {different[:5]}"


def _params(model):
  return {".".join(map(str, path)): np.asarray(node.get_value())
          for path, node in nnx.iter_graph(model)
          if isinstance(node, (nnx.Param, nnx.BatchStat))}


def _max_relative_error(name) -> float:
  _, _, x, reference = _fixture(name)
  with jax.default_matmul_precision("highest"):
    logits = np.asarray(models.logits(_loaded(name), x.transpose(0, 2, 3, 1)))
  assert logits.shape == reference.shape
  return float(np.abs(logits - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize("name", [
    "resnet50", "vgg16", "deit_small",
    # Swin-S's forward at 224 px: 5.5 s on a quiet 2-core machine.
    pytest.param("swin_small", marks=pytest.mark.slow)])
def test_logits_match_the_original(name):
  # Eval mode, float32: the torch model's logits on the same weights and
  # images, to 1e-4 of the logits' scale (max |ours - torch| / max |torch|;
  # measured 6e-7 to 1.3e-6 on CPU, float32 roundoff).
  error = _max_relative_error(name)
  assert error <= 1e-4, f"{name}: max relative logit error {error:.3g}"


@pytest.mark.parametrize("name", pretrained.NAMES)
def test_export_is_the_torch_state_dict_and_round_trips_exactly(name):
  manifest, state, _, _ = _fixture(name)
  exported = models.export_pretrained(name, _loaded(name))
  # Names, order, shapes and dtypes of the original's state dict ...
  assert [(k, list(v.shape), str(v.dtype)) for k, v in exported.items()] == [
      (t["name"], t["shape"], t["dtype"]) for t in manifest["tensors"]]
  # ... and its values, bit for bit; loaded again, the same model.
  _assert_same(exported, state)
  _assert_same(_params(models.load_pretrained(name, exported)),
               _params(_loaded(name)))
  # Built abstractly, loaded concretely: nothing abstract is left (dropout
  # streams included).
  assert all(isinstance(leaf, jax.Array)
             for leaf in jax.tree.leaves(nnx.state(_loaded(name))))


def test_safetensors_file_loads_like_the_state_dict(tmp_path):
  from safetensors import flax as jax_safetensors
  from safetensors.numpy import save_file
  _, state, _, _ = _fixture("resnet50")
  path = tmp_path / "resnet50.safetensors"
  save_file(state, str(path))
  _assert_same(_params(models.load_pretrained("resnet50", path)),
               _params(_loaded("resnet50")))
  # bfloat16 (which numpy cannot read) arrives as float32.
  rounded = {k: jnp.asarray(v, jnp.bfloat16) if v.dtype == np.float32 else v
             for k, v in state.items()}
  jax_safetensors.save_file(rounded, str(path))
  model = models.load_pretrained("resnet50", path)
  np.testing.assert_array_equal(
      model.layer4[2].conv3.kernel[...],
      np.asarray(rounded["layer4.2.conv3.weight"], np.float32).transpose(2, 3, 1, 0))


def test_renamed_tensor_is_named_as_missing_and_unexpected():
  _, state, _, _ = _fixture("resnet50")
  renamed = dict(state)
  renamed["layer2.1.conv_2.weight"] = renamed.pop("layer2.1.conv2.weight")
  with pytest.raises(ValueError, match=r"missing 1 tensor\(s\): layer2\.1\.conv2"
                     r"\.weight; unexpected 1 tensor\(s\): layer2\.1\.conv_2"):
    models.load_pretrained("resnet50", renamed)


@pytest.mark.parametrize("name,key", [("resnet50", "layer3.0.bn2.running_var"),
                                      ("deit_small", "blocks.3.attn.qkv.weight")])
def test_reshaped_tensor_is_named(name, key):
  _, state, _, _ = _fixture(name)
  reshaped = dict(state)
  reshaped[key] = reshaped[key][..., :-1]
  with pytest.raises(ValueError, match=rf"'{key}' has shape"):
    models.load_pretrained(name, reshaped)


def test_new_head_is_initialised_and_said_so():
  _, state, _, _ = _fixture("resnet50")
  with pytest.warns(UserWarning, match="new 10-class head"):
    model = models.load_pretrained("resnet50", state, num_classes=10,
                                   rngs=nnx.Rngs(3))
  assert model.head.kernel.shape == (2048, 10)
  assert float(np.std(model.head.kernel[...])) > 0
  np.testing.assert_array_equal(model.stem_bn.var[...], state["bn1.running_var"])
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # the checkpoint's own head: no warning
    models.load_pretrained("resnet50", state, num_classes=1000)
  # A headless checkpoint needs num_classes; half a head is an error.
  headless = {k: v for k, v in state.items() if not k.startswith("fc.")}
  with pytest.raises(ValueError, match="missing its head 'fc.weight'"):
    models.load_pretrained("resnet50", headless)
  with pytest.warns(UserWarning, match="new 10-class head"):
    models.load_pretrained("resnet50", headless, num_classes=10)
  with pytest.raises(ValueError, match=r"missing 1 tensor\(s\): fc\.bias\."):
    models.load_pretrained("resnet50", {**headless, "fc.weight": state["fc.weight"]})


def test_pth_without_torch_says_what_to_do(tmp_path, monkeypatch):
  path = tmp_path / "resnet50.pth"
  path.write_bytes(b"not read")
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails
  with pytest.raises(ImportError, match=r"resnet50\.pth.*needs torch.*safetensors"):
    models.load_pretrained("resnet50", path)


def test_unknown_file_type_and_missing_file(tmp_path):
  with pytest.raises(ValueError, match=r"unknown file type '\.npz'"):
    (tmp_path / "w.npz").write_bytes(b"")
    models.load_pretrained("vgg16", tmp_path / "w.npz")
  with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
    models.load_pretrained("vgg16", tmp_path / "nothing.safetensors")


def _swin_original_layout(state):
  """timm's Swin state dict renamed to the original repository's layout."""
  renamed = {}
  for key, value in state.items():
    if ".downsample." in key:
      stage = int(key.split(".")[1])
      key = key.replace(f"layers.{stage}.", f"layers.{stage - 1}.", 1)
    renamed[key.replace("head.fc.", "head.")] = value
  return renamed


def test_swin_original_layout_and_its_buffers():
  _, state, _, _ = _fixture("swin_small")
  # The original layout, with the buffers old checkpoints carry (timm's
  # attn_mask is 0 where tokens may attend, -100 elsewhere).
  original = _swin_original_layout(state)
  block = "layers.0.blocks.1"
  from bort_jax.models import swin
  original[f"{block}.attn.relative_position_index"] = swin.relative_position_index(7)
  original[f"{block}.attn_mask"] = np.where(
      swin.shifted_window_mask(56, 56, 7, 3), 0.0, -100.0).astype(np.float32)
  _assert_same(_params(models.load_pretrained("swin_small", original)),
               _params(_loaded("swin_small")))
  # A buffer made for another window is refused, by name.
  original[f"{block}.attn.relative_position_index"] = swin.relative_position_index(6)
  with pytest.raises(ValueError, match=rf"'{block}\.attn\.relative_position_index'"):
    models.load_pretrained("swin_small", original)
