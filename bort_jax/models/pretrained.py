"""Pretrained torchvision / timm checkpoints in and out of ``bort_jax.models``.

``load_pretrained(name, path)`` reads a state dict (a ``.safetensors`` file
without torch, a ``.pth`` file where torch is installed, or a mapping already
in memory) and returns the NNX model with every tensor placed by name:

=============  ==============================================================
``resnet50``   torchvision ``resnet50`` (v1.5)
``vgg16``      torchvision ``vgg16`` (no batch norm)
``deit_small`` timm ``deit_small_patch16_224`` (any ``img_size``: read from
               ``pos_embed``)
``swin_small`` timm ``swin_small_patch4_window7_224`` (timm >= 0.9 layout,
               or the original repository's, where patch merging ends a stage
               and the head is ``head.*``)
=============  ==============================================================

Layout changes (torch -> Flax): conv ``OIHW -> HWIO``; dense ``(out, in) ->
(in, out)``; timm's fused ``qkv`` ``(3·heads·hd, in)`` into three ``(in, heads,
hd)`` kernels and its ``proj`` ``(out, heads·hd)`` into ``(heads, hd, out)``;
VGG's first classifier layer reads a ``(C, 7, 7)``-flattened map in torch and
an ``(7, 7, C)``-flattened one here, so its rows are permuted; batch-norm
``weight/bias/running_mean/running_var`` into ``scale/bias/mean/var``.
Buffers that follow from the architecture are checked, not loaded: Swin's
``relative_position_index`` and ``attn_mask`` (older checkpoints carry them)
must equal what our blocks compute; BN's ``num_batches_tracked`` is ignored.

Any missing, unexpected or mis-shaped tensor raises a ``ValueError`` naming it.
``export_pretrained(name, model)`` writes the same state dict back in torch's
layout (a dict of numpy arrays that ``torch``'s ``load_state_dict`` takes
strictly), so import -> export -> import is exact.
"""

import importlib
import os
import warnings
from typing import Callable, Mapping, NamedTuple, Optional, Union

import jax.numpy as jnp
import numpy as np
from flax import nnx

from bort_jax import validate
from bort_jax.models import common, swin, transformer, vgg

StateDict = dict[str, np.ndarray]
PathOrState = Union[str, os.PathLike, Mapping[str, object]]

NAMES = ("resnet50", "vgg16", "deit_small", "swin_small")


class _Tensor(NamedTuple):
  """One checkpoint tensor: its torch name, the variables (dotted paths into
  our model) it becomes, and the layout change each way."""
  name: str
  targets: tuple[str, ...]
  to_ours: Callable[[np.ndarray], tuple[np.ndarray, ...]]
  to_torch: Callable[..., np.ndarray]
  head: bool = False


# --- layout changes -----------------------------------------------------------

def _same(name, target, head=False):
  return _Tensor(name, (target,), lambda a: (a,), lambda k: k, head)


def _conv(name, target):
  # OIHW <-> HWIO.
  return _Tensor(name, (target,), lambda a: (a.transpose(2, 3, 1, 0),),
                 lambda k: k.transpose(3, 2, 0, 1))


def _dense(name, target, head=False):
  return _Tensor(name, (target,), lambda a: (a.T,), lambda k: k.T, head)


def _linear(prefix, target, head=False):
  return [_dense(f"{prefix}.weight", f"{target}.kernel", head),
          _same(f"{prefix}.bias", f"{target}.bias", head)]


def _norm(prefix, target):
  return [_same(f"{prefix}.weight", f"{target}.scale"),
          _same(f"{prefix}.bias", f"{target}.bias")]


def _batch_norm(prefix, target):
  return _norm(prefix, target) + [
      _same(f"{prefix}.running_mean", f"{target}.mean"),
      _same(f"{prefix}.running_var", f"{target}.var")]


def _attention(prefix, target, heads, head_dim):
  """timm's fused qkv and proj <-> our query/key/value/out."""
  qkv = tuple(f"{target}.{part}" for part in ("query", "key", "value"))
  # torch rows are (q|k|v, head, head_dim); columns are the input features.
  def qkv_weight(a):
    return tuple(a.reshape(3, heads, head_dim, -1).transpose(0, 3, 1, 2))

  def qkv_weight_back(q, k, v):
    return np.stack([q, k, v]).transpose(0, 2, 3, 1).reshape(
        3 * heads * head_dim, -1)

  return [
      _Tensor(f"{prefix}.qkv.weight", tuple(f"{t}.kernel" for t in qkv),
              qkv_weight, qkv_weight_back),
      _Tensor(f"{prefix}.qkv.bias", tuple(f"{t}.bias" for t in qkv),
              lambda a: tuple(a.reshape(3, heads, head_dim)),
              lambda q, k, v: np.stack([q, k, v]).reshape(-1)),
      _Tensor(f"{prefix}.proj.weight", (f"{target}.out.kernel",),
              lambda a: (a.T.reshape(heads, head_dim, -1),),
              lambda k: k.reshape(heads * head_dim, -1).T),
      _same(f"{prefix}.proj.bias", f"{target}.out.bias")]


def _mlp(prefix, target):
  return _linear(f"{prefix}.fc1", f"{target}.fc1") + _linear(
      f"{prefix}.fc2", f"{target}.fc2")


# --- the four models ----------------------------------------------------------

def _resnet50_tensors(model, state) -> list[_Tensor]:
  del state
  tensors = [_conv("conv1.weight", "stem.kernel")]
  tensors += _batch_norm("bn1", "stem_bn")
  for stage in model.stage_names:
    for index, block in enumerate(getattr(model, stage)):
      prefix = f"{stage}.{index}"
      for i in (1, 2, 3):
        tensors.append(_conv(f"{prefix}.conv{i}.weight", f"{prefix}.conv{i}.kernel"))
        tensors += _batch_norm(f"{prefix}.bn{i}", f"{prefix}.bn{i}")
      if block.downsample is not None:
        tensors.append(_conv(f"{prefix}.downsample.0.weight",
                             f"{prefix}.downsample.kernel"))
        tensors += _batch_norm(f"{prefix}.downsample.1",
                               f"{prefix}.downsample_bn")
  return tensors + _linear("fc", "head", head=True)


def _vgg16_tensors(model, state) -> list[_Tensor]:
  del state
  tensors, index = [], 0
  for number, name in enumerate(model.layer_names, start=1):
    tensors.append(_conv(f"features.{index}.weight", f"{name}.kernel"))
    tensors.append(_same(f"features.{index}.bias", f"{name}.bias"))
    index += 2 + (number in model.pool_after)  # conv, ReLU[, MaxPool]
  channels = model.conv(model.layer_names[-1]).out_features
  rows, cols = 7, 7  # torchvision's AdaptiveAvgPool2d((7, 7))

  # torch flattens the pooled map as (C, 7, 7), we as (7, 7, C).
  def fc1(a):
    return (a.reshape(-1, channels, rows, cols).transpose(2, 3, 1, 0)
            .reshape(rows * cols * channels, -1),)

  def fc1_back(k):
    return k.reshape(rows, cols, channels, -1).transpose(3, 2, 0, 1).reshape(
        k.shape[-1], -1)

  tensors.append(_Tensor("classifier.0.weight", ("fc1.kernel",), fc1, fc1_back))
  tensors.append(_same("classifier.0.bias", "fc1.bias"))
  tensors += _linear("classifier.3", "fc2")
  return tensors + _linear("classifier.6", "fc3", head=True)


def _transformer_block(prefix, target, block, relative_bias=False
                       ) -> list[_Tensor]:
  _, heads, head_dim = block.attn.query.kernel.shape
  # Swin's table comes first among timm's attention tensors.
  table = [_same(f"{prefix}.attn.relative_position_bias_table",
                 f"{target}.relative_position_bias_table")] if relative_bias else []
  return (_norm(f"{prefix}.norm1", f"{target}.norm1") + table
          + _attention(f"{prefix}.attn", f"{target}.attn", heads, head_dim)
          + _norm(f"{prefix}.norm2", f"{target}.norm2")
          + _mlp(f"{prefix}.mlp", f"{target}.mlp"))


def _deit_small_tensors(model, state) -> list[_Tensor]:
  del state
  tensors = [_same("cls_token", "cls_token"), _same("pos_embed", "pos_embed"),
             _conv("patch_embed.proj.weight", "patch_embed.kernel"),
             _same("patch_embed.proj.bias", "patch_embed.bias")]
  for index, block in enumerate(model.blocks):
    tensors += _transformer_block(f"blocks.{index}", f"blocks.{index}", block)
  return tensors + _norm("norm", "norm") + _linear("head", "head", head=True)


def _swin_original_layout(state) -> bool:
  # The original repository (and timm < 0.9) merges patches at the end of a
  # stage, so its stage 0 has a downsample; timm >= 0.9 at the start of the next.
  return "layers.0.downsample.reduction.weight" in state


def _swin_small_tensors(model, state) -> list[_Tensor]:
  original = _swin_original_layout(state)
  tensors = [_conv("patch_embed.proj.weight", "patch_embed.kernel"),
             _same("patch_embed.proj.bias", "patch_embed.bias")]
  tensors += _norm("patch_embed.norm", "patch_norm")
  for s, stage in enumerate(model.stages):
    for b, block in enumerate(stage.blocks):
      prefix, target = f"layers.{s}.blocks.{b}", f"stages.{s}.blocks.{b}"
      tensors += _transformer_block(prefix, target, block, relative_bias=True)
    if stage.downsample is not None:
      merge = f"layers.{s if original else s + 1}.downsample"
      tensors += _norm(f"{merge}.norm", f"stages.{s}.downsample.norm")
      tensors.append(_dense(f"{merge}.reduction.weight",
                            f"stages.{s}.downsample.reduction.kernel"))
  head = "head" if original else "head.fc"
  return tensors + _norm("norm", "norm") + _linear(head, "head", head=True)


def _swin_buffers(model) -> dict[str, np.ndarray]:
  """Swin's derived buffers, as booleans/ints to compare a checkpoint's with:
  every block's relative-position index, shifted blocks' attention masks
  (True = may attend; timm stores 0 there and -100 elsewhere)."""
  buffers = {}
  for s, stage in enumerate(model.stages):
    for b, block in enumerate(stage.blocks):
      prefix = f"layers.{s}.blocks.{b}"
      buffers[f"{prefix}.attn.relative_position_index"] = (
          swin.relative_position_index(block.window))
      if block.shift:
        size = model.image_size // model.patch_embed.kernel_size[0] // 2 ** s
        buffers[f"{prefix}.attn_mask"] = swin.shifted_window_mask(
            size, size, block.window, block.shift)
  return buffers


def _check_buffer(name: str, value: np.ndarray, ours: np.ndarray) -> None:
  if name.endswith("attn_mask"):
    value = value == 0
  if value.shape != ours.shape or not np.array_equal(value, ours):
    raise ValueError(
        f"checkpoint buffer {name!r} (shape {value.shape}) differs from the one "
        f"this model computes (shape {ours.shape}): the checkpoint was made for "
        "another window size, shift or image size.")


class _Spec(NamedTuple):
  tensors: Callable[[nnx.Module, StateDict], list[_Tensor]]
  head_weight: Callable[[StateDict], str]
  overrides: Callable[[StateDict], dict]
  head_init: Callable  # the model's own head kernel init (biases start at 0)


def _deit_overrides(state) -> dict:
  # pos_embed covers the class token and (image_size / 16)² patches.
  if "pos_embed" not in state or "patch_embed.proj.weight" not in state:
    return {}
  patch = state["patch_embed.proj.weight"].shape[-1]
  side = int(round(np.sqrt(state["pos_embed"].shape[1] - 1)))
  return {"image_size": side * patch, "patch_size": patch}


_SPECS = {
    "resnet50": _Spec(_resnet50_tensors, lambda s: "fc.weight", lambda s: {},
                      nnx.nn.linear.default_kernel_init),
    "vgg16": _Spec(_vgg16_tensors, lambda s: "classifier.6.weight",
                   lambda s: {}, vgg.DENSE_INIT),
    "deit_small": _Spec(_deit_small_tensors, lambda s: "head.weight",
                        _deit_overrides, transformer.TRUNC_NORMAL),
    "swin_small": _Spec(
        _swin_small_tensors,
        lambda s: "head.weight" if _swin_original_layout(s) else "head.fc.weight",
        lambda s: {}, transformer.TRUNC_NORMAL),
}


# --- reading ------------------------------------------------------------------

def _to_numpy(value) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch tensor
    value = value.detach().cpu()
    if value.is_floating_point() and str(value.dtype) not in (
        "torch.float32", "torch.float64", "torch.float16"):
      value = value.float()  # bfloat16 has no numpy dtype
    return value.numpy()
  return np.asarray(value)


def _unwrap(state: Mapping) -> Mapping:
  # Training scripts save {"model": state_dict, ...} or {"state_dict": ...}.
  for key in ("model", "state_dict"):
    if isinstance(state.get(key), Mapping):
      return state[key]
  return state


def read_state_dict(path: PathOrState) -> StateDict:
  """A checkpoint's tensors as ``{name: numpy array}``.

  Args:
    path: a ``.safetensors`` file (read with the ``safetensors`` package, no
      torch needed; bfloat16 tensors become float32), a ``.pth``/``.pt``/``.bin`` file (a torch pickle: needs
      torch), or a mapping of names to arrays or torch tensors. A top-level
      ``"model"`` or ``"state_dict"`` entry holding the tensors is unwrapped.

  Returns:
    A dict of numpy arrays in the checkpoint's own (torch) layout.

  Examples:
    >>> import numpy as np
    >>> from bort_jax.models import pretrained
    >>> pretrained.read_state_dict({"fc.bias": np.zeros(3)})["fc.bias"].shape
    (3,)
  """
  if isinstance(path, Mapping):
    state = path
  else:
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"checkpoint {path!r} does not exist.")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".safetensors":
      try:
        from safetensors.numpy import load_file
      except ImportError as error:
        raise ImportError(
            f"reading {path!r} needs the safetensors package: pip install "
            "safetensors (or bort_jax[pretrained]).") from error
      try:
        state = load_file(path)
      except TypeError as error:  # bfloat16: numpy has no such dtype, JAX has
        if "bfloat16" not in str(error):
          raise
        from safetensors.flax import load_file as load_jax_arrays
        state = {k: np.asarray(v.astype(jnp.float32) if v.dtype == jnp.bfloat16
                               else v) for k, v in load_jax_arrays(path).items()}
    elif suffix in (".pth", ".pt", ".bin"):
      try:  # optional, so not an import statement (tests/test_packaging.py)
        torch = importlib.import_module("torch")
      except ImportError as error:
        raise ImportError(
            f"reading {path!r} (a torch pickle, {suffix}) needs torch, which is "
            "not installed here. Convert it to .safetensors where torch is "
            "(docs/pretrained.md shows the two lines) or pip install torch."
        ) from error
      state = torch.load(path, map_location="cpu", weights_only=True)
    else:
      raise ValueError(f"checkpoint {path!r}: unknown file type {suffix!r}; "
                       "expected .safetensors, .pth, .pt or .bin.")
    if not isinstance(state, Mapping):
      raise ValueError(f"checkpoint {path!r} holds a {type(state).__name__}, "
                       "not a state dict (a mapping of names to tensors).")
  return {str(k): _to_numpy(v) for k, v in _unwrap(state).items()}


# --- import / export ----------------------------------------------------------

def _spec(name: str) -> _Spec:
  if name not in _SPECS:
    raise ValueError(f"no pretrained layout for model {name!r}; expected one "
                     f"of {NAMES}.")
  return _SPECS[name]


def _variable(model: nnx.Module, dotted: str) -> nnx.Variable:
  *parents, leaf = dotted.split(".")
  module = common.resolve_path(model, ".".join(parents)) if parents else model
  return getattr(module, leaf)


def _weights(model: nnx.Module) -> dict[str, nnx.Variable]:
  """Every parameter and batch statistic of ``model`` by dotted path."""
  return {".".join(map(str, path)): node
          for path, node in nnx.iter_graph(model)
          if isinstance(node, (nnx.Param, nnx.BatchStat))}


def _check_names(name: str, state: StateDict, tensors: list[_Tensor],
                 optional: set[str], headless: bool) -> None:
  expected = {t.name for t in tensors}
  missing = [t.name for t in tensors
             if t.name not in state and not (t.head and headless)]
  unexpected = sorted(set(state) - expected - optional)
  if missing or unexpected:
    parts = []
    if missing:
      parts.append(f"missing {len(missing)} tensor(s): {', '.join(missing[:8])}"
                   + (" ..." if len(missing) > 8 else ""))
    if unexpected:
      parts.append(f"unexpected {len(unexpected)} tensor(s): "
                   f"{', '.join(unexpected[:8])}"
                   + (" ..." if len(unexpected) > 8 else ""))
    raise ValueError(f"checkpoint does not fit {name}: " + "; ".join(parts) + ".")


def _fill_rngs(model: nnx.Module, rngs: nnx.Rngs) -> None:
  """Concrete dropout streams for a model built abstractly: each dropout
  gets ``rngs[collection].fork()``, as its constructor would."""
  for _, node in nnx.iter_graph(model):
    if isinstance(node, nnx.Dropout) and node.rngs is not None:
      node.rngs = rngs[node.rng_collection].fork()


def load_pretrained(name: str, path: PathOrState, *,
                    num_classes: Optional[int] = None,
                    rngs: Optional[nnx.Rngs] = None) -> nnx.Module:
  """The model ``name`` with the weights of a torchvision/timm checkpoint.

  Args:
    name: ``'resnet50'`` or ``'vgg16'`` (torchvision's layout),
      ``'deit_small'`` or ``'swin_small'`` (timm's layout).
    path: a ``.safetensors`` or ``.pth`` file, or a state dict already loaded
      (see :func:`read_state_dict`).
    num_classes: the classes of the returned model; None keeps the
      checkpoint's head. Any other number gets a new head initialised as
      ``models.create`` does (a warning says so); the rest is loaded.
    rngs: seeds the new head (if any) and the dropout streams; default
      ``nnx.Rngs(0)``.

  Returns:
    The NNX model in training mode, as ``models.create`` returns it: call
    ``model.eval()`` for inference (batch-norm statistics, no dropout).

  Raises:
    ValueError: a tensor of the model is missing from the checkpoint, the
      checkpoint has a tensor the model does not, or a tensor's shape differs
      (each named).

  Examples:
    >>> from bort_jax.models import pretrained
    >>> pretrained.load_pretrained("resnet18", {})
    Traceback (most recent call last):
    ...
    ValueError: no pretrained layout for model 'resnet18'; expected one of ('resnet50', 'vgg16', 'deit_small', 'swin_small').
  """
  from bort_jax import models  # the registry imports this module

  spec = _spec(name)
  state = read_state_dict(path)
  rngs = nnx.Rngs(0) if rngs is None else rngs
  head_weight = spec.head_weight(state)
  if head_weight in state:
    checkpoint_classes = int(state[head_weight].shape[0])
  elif num_classes is None:
    raise ValueError(f"checkpoint does not fit {name}: missing its head "
                     f"{head_weight!r}; pass num_classes for a new head.")
  else:
    checkpoint_classes = None
  classes = checkpoint_classes if num_classes is None else num_classes
  classes = validate.check_positive_int("num_classes", classes)
  new_head = classes != checkpoint_classes

  # Built abstractly (no random init of what the checkpoint replaces).
  model = nnx.eval_shape(lambda: models.create(
      name, num_classes=classes, rngs=nnx.Rngs(0), **spec.overrides(state)))
  tensors = spec.tensors(model, state)
  buffers = _swin_buffers(model) if name == "swin_small" else {}
  batch_counts = {t.name.rsplit(".", 1)[0] + ".num_batches_tracked"
                  for t in tensors if t.name.endswith(".running_mean")}
  _check_names(name, state, tensors, set(buffers) | batch_counts,
               headless=checkpoint_classes is None)
  for buffer, ours in buffers.items():
    if buffer in state:
      _check_buffer(buffer, state[buffer], ours)

  weights = _weights(model)
  placed = set()
  for tensor in tensors:
    variables = [_variable(model, t) for t in tensor.targets]
    if tensor.head and new_head:
      for target, variable in zip(tensor.targets, variables):
        init = (spec.head_init if target.endswith("kernel")
                else nnx.initializers.zeros_init())
        abstract = variable.get_value()
        variable.set_value(init(rngs.params(), abstract.shape, abstract.dtype))
    else:
      value = state[tensor.name]
      expected = tensor.to_torch(*(np.empty(v.get_value().shape, np.float32)
                                    for v in variables)).shape
      if value.shape != expected:
        raise ValueError(f"checkpoint tensor {tensor.name!r} has shape "
                         f"{value.shape}; {name} expects {expected}.")
      for variable, array in zip(variables, tensor.to_ours(value)):
        variable.set_value(jnp.asarray(array, dtype=variable.get_value().dtype))
    placed.update(tensor.targets)
  left = sorted(set(weights) - placed)
  if left:  # a gap in the tables above, not in the checkpoint
    raise AssertionError(f"{name}: no checkpoint tensor for {left}")
  _fill_rngs(model, rngs)
  if new_head:
    warnings.warn(
        f"load_pretrained({name!r}): new {classes}-class head initialised at "
        "random (the checkpoint's has "
        f"{checkpoint_classes if checkpoint_classes else 'none'}); every other "
        "tensor is loaded.", stacklevel=2)
  return model


def export_pretrained(name: str, model: nnx.Module) -> StateDict:
  """``model``'s weights as a torchvision/timm state dict (numpy arrays).

  The inverse of :func:`load_pretrained`: the result loads into the original
  torch model with ``load_state_dict(..., strict=True)`` (after
  ``torch.from_numpy``) and back into ours exactly. Batch-norm layers get a
  ``num_batches_tracked`` of 0; Swin is written in timm's current layout.

  Args:
    name: the model name ``model`` was built under (one of ``NAMES``).
    model: a model from ``models.create(name, ...)`` or ``load_pretrained``.

  Returns:
    ``{torch name: numpy array}``, writable and C-contiguous (ready for
    ``torch.from_numpy`` and ``safetensors.numpy.save_file``).

  Examples:
    >>> from flax import nnx
    >>> from bort_jax import models
    >>> from bort_jax.models import pretrained
    >>> model = models.create("resnet50", num_classes=10, rngs=nnx.Rngs(0),
    ...                       width_multiplier=0.125, stage_sizes=(1, 1, 1, 1))
    >>> pretrained.export_pretrained("resnet50", model)["fc.weight"].shape
    (10, 256)
  """
  tensors = _spec(name).tensors(model, {})
  state = {}
  for tensor in tensors:
    values = [np.asarray(_variable(model, t).get_value()) for t in tensor.targets]
    state[tensor.name] = np.array(tensor.to_torch(*values), order="C")  # writable
    if tensor.name.endswith(".running_var"):  # torch's order
      state[tensor.name.rsplit(".", 1)[0] + ".num_batches_tracked"] = np.zeros(
          (), np.int64)
  return state
