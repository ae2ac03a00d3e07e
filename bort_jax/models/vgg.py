"""VGG16 (Simonyan & Zisserman, configuration D) with the torchvision/timm
topology the paper trains on ImageNet: thirteen 3x3 convs (padding 1, bias,
ReLU) in five stages, each stage ended by a 2x2 max pool; an adaptive average
pool to 7x7; then dense 4096 -> ReLU -> dropout -> 4096 -> ReLU -> dropout ->
classes. No batch norm. 138.36 M parameters for 1000 classes.

The classifier flattens a 7x7 map, so there is no global-pool head (``head``
and ``head_pool`` are None). Layers are named ``conv1`` ... ``conv13``.
"""

from typing import Optional, Sequence

from flax import nnx

from bort_jax import validate
from bort_jax.models import common

_STAGE_WIDTHS = (64, 128, 256, 512, 512)
_CONVS_PER_STAGE = (2, 2, 3, 3, 3)
_HIDDEN = 4096
_POOLED_HW = (7, 7)

# torchvision's VGG init: He-normal over fan-out for convs, N(0, 0.01) dense.
_CONV_INIT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
DENSE_INIT = nnx.initializers.normal(0.01)


class VGG(common.ConvClassifier):
  """VGG with the convolutional-model interface."""

  def __init__(self, *, num_classes: int, rngs: nnx.Rngs, in_channels: int = 3,
               width_multiplier: float = 1.0, min_channels: int = 1,
               convs_per_stage: Sequence[int] = _CONVS_PER_STAGE,
               dropout_rate: float = 0.5):
    num_classes = validate.check_positive_int("num_classes", num_classes)
    self.in_channels = validate.check_positive_int("in_channels", in_channels)
    scale = common.width_scaler(width_multiplier, min_channels)
    dropout_rate = validate.check_rate("dropout_rate", dropout_rate)
    convs_per_stage = tuple(convs_per_stage)
    if len(convs_per_stage) != len(_STAGE_WIDTHS) or not all(
        isinstance(n, int) and n >= 1 for n in convs_per_stage):
      raise ValueError("convs_per_stage must be 5 positive ints, got "
                       f"{convs_per_stage!r}.")
    count = sum(convs_per_stage)
    self.layer_names = tuple(f"conv{i + 1}" for i in range(count))
    # The index (1-based) of each stage's last conv: a max pool follows it.
    self.pool_after = tuple(sum(convs_per_stage[:s + 1])
                            for s in range(len(convs_per_stage)))
    fan_in = self.in_channels
    widths = [scale(w) for w, n in zip(_STAGE_WIDTHS, convs_per_stage) for _ in range(n)]
    for name, width in zip(self.layer_names, widths):
      setattr(self, name, common.conv_layer(
          fan_in, width, (3, 3), padding=common.symmetric_padding(1),
          kernel_init=_CONV_INIT, rngs=rngs))
      fan_in = width
    hidden = scale(_HIDDEN)
    dense = dict(kernel_init=DENSE_INIT, rngs=rngs)
    self.fc1 = nnx.Linear(fan_in * _POOLED_HW[0] * _POOLED_HW[1], hidden, **dense)
    self.fc2 = nnx.Linear(hidden, hidden, **dense)
    self.fc3 = nnx.Linear(hidden, num_classes, **dense)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.head = None
    self.head_pool = None

  def top_activation(self, layer) -> Optional[str]:
    # relu(conv(·)) of the previous conv, unless a stage's max pool is between.
    index = self.layer_names.index(self.layer_name(layer)) + 1
    return None if index - 1 in self.pool_after else "relu"

  def _trace(self, x, activation, eval_mode) -> common.Trace:
    validate.check_image_shape("x", x.shape, channels=self.in_channels)
    for index, name in enumerate(self.layer_names, start=1):
      conv_input = x
      x = activation(getattr(self, name)(x))
      yield common.LayerOutput(name, conv_input, x)
      if index in self.pool_after:
        x = common.max_pool(x, 2, 2)
    x = common.adaptive_avg_pool(x, _POOLED_HW).reshape(x.shape[0], -1)
    x = common.dropout(self.dropout, activation(self.fc1(x)), eval_mode)
    x = common.dropout(self.dropout, activation(self.fc2(x)), eval_mode)
    return self.fc3(x)


def vgg16(*, num_classes: int = 1000, rngs: nnx.Rngs, in_channels: int = 3,
          width_multiplier: float = 1.0, min_channels: int = 1,
          convs_per_stage: Sequence[int] = _CONVS_PER_STAGE,
          dropout_rate: float = 0.5) -> VGG:
  """VGG16; ``convs_per_stage`` (default 2-2-3-3-3) is the depth override."""
  return VGG(num_classes=num_classes, rngs=rngs, in_channels=in_channels,
             width_multiplier=width_multiplier, min_channels=min_channels,
             convs_per_stage=convs_per_stage,
             dropout_rate=dropout_rate)
