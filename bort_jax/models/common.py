"""What the convolutional models share: width scaling, pooling and the
explainer interface (``features``, ``conv_inputs``, ``conv``).

Every convolutional model writes its forward pass once, as a generator
``_trace(x, activation, eval_mode)`` that yields one :class:`LayerOutput` per
conv layer, in ``layer_names`` order, and returns the logits. ``__call__`` runs
it to the end; ``features`` stops at the requested layer, so the layers after
it are never computed; ``conv_inputs`` collects what each conv received.
"""

import functools
from typing import Callable, Generator, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bort_jax import validate
from bort_jax.models import gemm_conv

Activation = Callable[[jax.Array], jax.Array]
LayerRef = Union[int, str]


class LayerOutput(NamedTuple):
  """One conv layer of a forward pass.

  Attributes:
    name: the layer's name in ``layer_names``.
    conv_input: the tensor the conv received.
    output: the conv output after its bias/BN and its activation where the
      architecture has one, before any pooling that follows.
  """
  name: str
  conv_input: jax.Array
  output: jax.Array


Trace = Generator[LayerOutput, None, jax.Array]


def scale_width(width: int, width_multiplier: float,
                min_channels: int = 1) -> int:
  """``width · width_multiplier`` rounded, but at least ``min_channels`` (and
  never raised above ``width`` by that floor): ``max(round(width · m),
  min(width, min_channels))``. The default floor of 1 keeps every layer."""
  return max(int(round(width * width_multiplier)), min(width, min_channels))


def width_scaler(width_multiplier: float = 1.0,
                 min_channels: int = 1) -> Callable[[int], int]:
  """A model's ``width -> channels`` map: :func:`scale_width` with its
  ``width_multiplier`` and ``min_channels`` overrides, both checked."""
  return functools.partial(
      scale_width,
      width_multiplier=validate.check_positive_float("width_multiplier",
                                                     width_multiplier),
      min_channels=validate.check_positive_int("min_channels", min_channels))


def resolve_activation(activation: Optional[Activation]) -> Activation:
  if activation is None:
    return jax.nn.relu
  if not callable(activation):
    raise TypeError(f"activation must be callable or None, got {activation!r}.")
  return activation


def conv_layer(in_features: int, out_features: int, kernel_size, **kwargs
               ) -> nnx.Conv:
  """``nnx.Conv`` lowered by :func:`gemm_conv.conv_general_dilated` (a matmul
  of patches on CPU, XLA's convolution elsewhere); same parameters."""
  kwargs.setdefault("conv_general_dilated", gemm_conv.conv_general_dilated)
  return nnx.Conv(in_features, out_features, kernel_size, **kwargs)


def set_dtypes(module: nnx.Module, dtype, param_dtype) -> None:
  """Mixed precision the Flax way, for a built model: every layer that has
  ``dtype``/``param_dtype`` (conv, dense, attention projections, norms)
  computes in ``dtype`` and stores its parameters in ``param_dtype``.

  Parameters are cast to ``param_dtype``; Flax's norms still compute their
  statistics in at least float32 and keep float32 running averages, and
  ``jax.nn.dot_product_attention`` takes its softmax in float32. Parameters
  that are not a layer's own (class token, position tables) keep
  ``param_dtype`` and promote what they are added to.
  """
  dtype = validate.check_float_dtype("dtype", dtype)
  param_dtype = validate.check_float_dtype("param_dtype", param_dtype)
  for _, node in nnx.iter_graph(module):
    if isinstance(node, nnx.Module) and hasattr(node, "param_dtype"):
      node.dtype = dtype
      node.param_dtype = param_dtype
    elif isinstance(node, nnx.Param):
      node.set_value(node.get_value().astype(param_dtype))


def symmetric_padding(pad: int):
  """PyTorch-style padding: ``pad`` zeros on every side of both spatial axes."""
  return ((pad, pad), (pad, pad))


def max_pool(x: jax.Array, size: int, stride: int, pad: int = 0) -> jax.Array:
  """PyTorch ``MaxPool2d(size, stride, pad)``: pads with -inf, floor mode."""
  return nnx.max_pool(x, (size, size), strides=(stride, stride),
                      padding=symmetric_padding(pad))


def global_pool(x: jax.Array, kind: str) -> jax.Array:
  """Adaptive (global) max or average pool of NHWC features to (B, C)."""
  if kind == "max":
    return jnp.max(x, axis=(1, 2))
  if kind == "avg":
    return jnp.mean(x, axis=(1, 2))
  raise ValueError(f"pool kind must be 'max' or 'avg', got {kind!r}.")


def _adaptive_weights(size: int, out: int) -> np.ndarray:
  # Bin i averages [floor(i·size/out), ceil((i+1)·size/out)), as PyTorch does.
  starts = (np.arange(out) * size) // out
  ends = -((-(np.arange(out) + 1) * size) // out)
  positions = np.arange(size)
  inside = (positions >= starts[:, None]) & (positions < ends[:, None])
  return (inside / inside.sum(axis=1, keepdims=True)).astype(np.float32)


def adaptive_avg_pool(x: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
  """PyTorch ``AdaptiveAvgPool2d(out_hw)`` on NHWC, as two averaging matrices."""
  rows = _adaptive_weights(x.shape[1], out_hw[0])
  cols = _adaptive_weights(x.shape[2], out_hw[1])
  # One (out_h·out_w, h·w) averaging matrix in x's dtype, float32 sums.
  weights = np.einsum("ih,jw->ijhw", rows, cols).astype(x.dtype)
  return jnp.einsum("ijhw,bhwc->bijc", weights, x,
                    preferred_element_type=jnp.float32).astype(x.dtype)


def batch_norm(norm: nnx.BatchNorm, x: jax.Array,
               eval_mode: Optional[bool]) -> jax.Array:
  """BatchNorm in the module's own mode, or with running stats if eval_mode."""
  return norm(x, use_running_average=True if eval_mode else None)


def dropout(drop: nnx.Dropout, x: jax.Array,
            eval_mode: Optional[bool]) -> jax.Array:
  return drop(x, deterministic=True if eval_mode else None)


def run_to_logits(trace: Trace) -> jax.Array:
  """Exhausts a forward trace and returns its logits."""
  while True:
    try:
      next(trace)
    except StopIteration as finished:
      return finished.value


def resolve_path(module: nnx.Module, dotted_name: str):
  """``'layer1.0.conv1'`` -> ``module.layer1[0].conv1``."""
  node = module
  for part in dotted_name.split("."):
    node = node[int(part)] if part.isdigit() else getattr(node, part)
  return node


class ConvClassifier(nnx.Module):
  """The interface the explainers use; subclasses define ``_trace``.

  Subclasses set ``layer_names``, ``head`` (the ``nnx.Linear`` after global
  pooling of the last conv layer's features, or None) and ``head_pool``
  (``'max'``, ``'avg'`` or None), and may override ``explain_layer`` and
  ``top_activation``.
  """

  layer_names: tuple[str, ...] = ()

  @property
  def explain_layer(self) -> str:
    """The layer the paper explains this model from (SAT, reconstruction,
    decomposition); where the paper names none, the last conv layer."""
    return self.layer_names[-1]

  def top_activation(self, layer: LayerRef) -> Optional[str]:
    """How ``features(x, layer)`` follows from the previous layer's features
    (``x`` for the first layer): ``"relu"`` if it is ``relu(conv(·))``,
    ``"linear"`` if ``conv(·)``, None if anything else comes between (pooling,
    BN, a residual). Lets the explainers walk a one-hot signal back through
    the top conv by placing a kernel slice; None means the general VJP."""
    del layer
    return None

  def _trace(self, x: jax.Array, activation: Activation,
             eval_mode: Optional[bool]) -> Trace:
    raise NotImplementedError

  def __call__(self, x: jax.Array, *,
               activation: Optional[Activation] = None) -> jax.Array:
    """Logits (B, num_classes). ``activation`` replaces every ReLU (default
    ``jax.nn.relu``); BN and dropout follow ``model.train()``/``model.eval()``."""
    return run_to_logits(self._trace(x, resolve_activation(activation), None))

  def layer_name(self, layer: LayerRef) -> str:
    """The name of ``layer``: a 1-based index into ``layer_names`` or a name."""
    return self.layer_names[
        validate.layer_index(self.layer_names, layer) - 1]

  def features(self, x: jax.Array, layer: LayerRef, *,
               activation: Optional[Activation] = None) -> jax.Array:
    """Output of ``layer`` in eval mode (BN running stats, no dropout): after
    its bias/BN and its activation where it has one, before any pooling.
    Only the layers up to ``layer`` are computed."""
    name = self.layer_name(layer)
    trace = self._trace(x, resolve_activation(activation), True)
    for step in trace:
      if step.name == name:
        trace.close()
        return step.output
    raise AssertionError(f"forward pass never reached layer {name!r}")

  def conv_inputs(self, x: jax.Array) -> dict[str, jax.Array]:
    """{layer name: the tensor that conv receives}, from an eval-mode pass."""
    return {step.name: step.conv_input
            for step in self._trace(x, jax.nn.relu, True)}

  def conv(self, layer: LayerRef) -> nnx.Conv:
    """The ``nnx.Conv`` of ``layer`` (index or name)."""
    return resolve_path(self, self.layer_name(layer))
