"""ACNN-Small and ACNN-Base: the all-convolutional networks of the paper's
Appendix A.6 (Tables 4 and 5), after All-CNN (Springenberg et al., 2015).

Table 4 (ACNN-Small). Output sizes follow ``floor((n + 2p - k) / s) + 1``:

=====  ==========================  ===========================
layer  MNIST, 28x28x1              CIFAR-10, 32x32x3
=====  ==========================  ===========================
conv1  5x5, 8, pad 1 + ReLU -> 26  5x5, 24, pad 0 + ReLU -> 28
conv2  2x2, 24, stride 2    -> 13  2x2, 64, stride 2     -> 14
conv3  4x4, 288, pad 1 + ReLU -> 12  4x4, 512, pad 1 + ReLU -> 13
conv4  2x2, 864, stride 2   -> 6   2x2, 1536, stride 2   -> 6
conv5  3x3, 2592, pad 1 + ReLU -> 6  3x3, 4608, pad 1 + ReLU -> 6
pool   adaptive (global) max pool, then a dense layer to the classes
=====  ==========================  ===========================

Ambiguities of Table 4, resolved as follows:

* Unlisted padding is 0 and unlisted stride is 1 (so CIFAR conv1 has no
  padding). With these, MNIST conv5 is (B, 6, 6, 2592), as the paper's
  Section 4.3 states ("2592 x 6 x 6").
* conv2 and conv4 (the stride-2 convs that replace max pooling) have no ReLU,
  exactly as the table lists.
* "softmax 10-way" is a dense layer to ``num_classes`` logits; the softmax
  belongs to the loss.
* Every conv has a bias (PyTorch's default, which the authors' code keeps).

Table 5 (ACNN-Base, 224x224x3): twelve convs, every one followed by a ReLU
(conv12 included), paddings 4 for conv1 and 0 elsewhere (as in the authors'
released ``AllConv12``), conv12 has ``num_classes`` channels and the adaptive
max pool of its output is the logits; there is no dense head. Spatial sizes:
75, 75, 37, 35, 35, 17, 15, 15, 7, 5, 5, 5. The authors' code also applies
dropout (0.5) before conv10, which Table 5 does not list: ``dropout_rate``
(default 0.0, i.e. Table 5) turns it on.

Narrow variants: ``width_multiplier`` scales every listed width (rounded);
``min_channels`` floors each scaled width at ``min(width, min_channels)``, so
the narrow first layers of a cheap variant keep enough units for a Gram
matrix with off-diagonal entries while the wide ones (which cost the most)
stay scaled. At x0.125, ACNN-Small (MNIST) has 1, 3, 36, 108, 324 channels;
with ``min_channels=8``, 8, 8, 36, 108, 324. The default 1 is no floor.

Kernels use Flax's default LeCun-normal init (variance 1/fan_in), the scale at
which Bort's bounded constraint ``W Wᵀ = I`` holds per output unit.
"""

from typing import NamedTuple, Optional, Sequence

from flax import nnx

from bort_jax import validate
from bort_jax.models import common


class ConvSpec(NamedTuple):
  """One row of Table 4/5. ``features=None`` means ``num_classes``."""
  kernel_size: int
  features: Optional[int]
  strides: int = 1
  padding: int = 0
  relu: bool = True


ACNN_SMALL_MNIST = (
    ConvSpec(5, 8, padding=1),
    ConvSpec(2, 24, strides=2, relu=False),
    ConvSpec(4, 288, padding=1),
    ConvSpec(2, 864, strides=2, relu=False),
    ConvSpec(3, 2592, padding=1),
)

ACNN_SMALL_CIFAR = (
    ConvSpec(5, 24),
    ConvSpec(2, 64, strides=2, relu=False),
    ConvSpec(4, 512, padding=1),
    ConvSpec(2, 1536, strides=2, relu=False),
    ConvSpec(3, 4608, padding=1),
)

ACNN_BASE = (
    ConvSpec(10, 96, strides=3, padding=4),
    ConvSpec(1, 96),
    ConvSpec(3, 96, strides=2),
    ConvSpec(3, 256),
    ConvSpec(1, 256),
    ConvSpec(3, 256, strides=2),
    ConvSpec(3, 384),
    ConvSpec(1, 384),
    ConvSpec(3, 384, strides=2),
    ConvSpec(3, 1024),
    ConvSpec(1, 1024),
    ConvSpec(1, None),
)

# ACNN-Base: the authors' code drops out the input of conv10.
_BASE_DROPOUT_BEFORE = "conv10"


class ACNN(common.ConvClassifier):
  """A plain stack of convs, a global max pool, and an optional dense head.

  With ``dense_head=True`` (ACNN-Small) the pooled last-layer features go
  through ``head``, an ``nnx.Linear`` to ``num_classes``. With
  ``dense_head=False`` (ACNN-Base) the last conv has ``num_classes`` channels
  and its pooled output is the logits (``head`` is None).
  """

  def __init__(self, specs: Sequence[ConvSpec], *, num_classes: int,
               in_channels: int, dense_head: bool, rngs: nnx.Rngs,
               width_multiplier: float = 1.0, min_channels: int = 1,
               dropout_rate: float = 0.0, dropout_before: Optional[str] = None,
               explain_layer: Optional[str] = None):
    num_classes = validate.check_positive_int("num_classes", num_classes)
    self.in_channels = validate.check_positive_int("in_channels", in_channels)
    scale = common.width_scaler(width_multiplier, min_channels)
    dropout_rate = validate.check_rate("dropout_rate", dropout_rate)
    self.layer_names = tuple(f"conv{i + 1}" for i in range(len(specs)))
    self.relu_after = tuple(spec.relu for spec in specs)
    self._explain_layer = self.layer_name(explain_layer or len(specs))
    self.dropout_before = dropout_before
    fan_in = self.in_channels
    for name, spec in zip(self.layer_names, specs):
      out = num_classes if spec.features is None else scale(spec.features)
      setattr(self, name, common.conv_layer(
          fan_in, out, (spec.kernel_size, spec.kernel_size),
          strides=(spec.strides, spec.strides),
          padding=common.symmetric_padding(spec.padding), rngs=rngs))
      fan_in = out
    # Only a model that drops out carries dropout RNG state.
    self.dropout = (nnx.Dropout(dropout_rate, rngs=rngs)
                    if dropout_rate > 0 and dropout_before else None)
    self.head = nnx.Linear(fan_in, num_classes, rngs=rngs) if dense_head else None
    self.head_pool = "max"

  @property
  def explain_layer(self) -> str:
    return self._explain_layer

  def top_activation(self, layer) -> str:
    # A plain stack (dropout is off in eval mode): conv, then ReLU or not.
    relu = self.relu_after[self.layer_names.index(self.layer_name(layer))]
    return "relu" if relu else "linear"

  def _trace(self, x, activation, eval_mode) -> common.Trace:
    validate.check_image_shape("x", x.shape, channels=self.in_channels)
    for name, relu in zip(self.layer_names, self.relu_after):
      if self.dropout is not None and name == self.dropout_before:
        x = common.dropout(self.dropout, x, eval_mode)
      conv_input = x
      x = getattr(self, name)(x)
      if relu:
        x = activation(x)
      yield common.LayerOutput(name, conv_input, x)
    pooled = common.global_pool(x, self.head_pool)
    return pooled if self.head is None else self.head(pooled)


def acnn_small_mnist(*, num_classes: int = 10, rngs: nnx.Rngs,
                     width_multiplier: float = 1.0, min_channels: int = 1,
                     in_channels: int = 1) -> ACNN:
  """ACNN-Small for 28x28 MNIST (Table 4, left column), explained from
  conv5 (Section 4.2)."""
  return ACNN(ACNN_SMALL_MNIST, num_classes=num_classes, in_channels=in_channels,
              dense_head=True, rngs=rngs, width_multiplier=width_multiplier,
              min_channels=min_channels, explain_layer="conv5")


def acnn_small_cifar(*, num_classes: int = 10, rngs: nnx.Rngs,
                     width_multiplier: float = 1.0, min_channels: int = 1,
                     in_channels: int = 3) -> ACNN:
  """ACNN-Small for 32x32 CIFAR-10 (Table 4, right column), explained from
  conv5 (Section 4.2)."""
  return ACNN(ACNN_SMALL_CIFAR, num_classes=num_classes, in_channels=in_channels,
              dense_head=True, rngs=rngs, width_multiplier=width_multiplier,
              min_channels=min_channels, explain_layer="conv5")


def acnn_base(*, num_classes: int = 1000, rngs: nnx.Rngs,
              width_multiplier: float = 1.0, min_channels: int = 1,
              in_channels: int = 3, dropout_rate: float = 0.0) -> ACNN:
  """ACNN-Base for 224x224 ImageNet (Table 5). conv12 keeps ``num_classes``
  channels under ``width_multiplier`` and ``min_channels``: its global max
  pool is the logits. The paper explains it from its 8th layer, conv8
  (Section 4.2)."""
  return ACNN(ACNN_BASE, num_classes=num_classes, in_channels=in_channels,
              dense_head=False, rngs=rngs, width_multiplier=width_multiplier,
              min_channels=min_channels, dropout_rate=dropout_rate,
              dropout_before=_BASE_DROPOUT_BEFORE, explain_layer="conv8")
