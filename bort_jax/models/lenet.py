"""LeNet-5 (LeCun et al.): two 5x5 convs, each followed by ReLU and 2x2 max
pooling, then three dense layers (120, 84, classes).

As in the authors' code, the convs have no padding, so a 28x28 input gives
4x4x16 = 256 flattened features and a 32x32 input 5x5x16 = 400; the logits
are not passed through a ReLU (the authors' code adds one; a classifier's
logits should be signed). Flattening discards the spatial layout, so there
is no global-pool head: ``head`` and ``head_pool`` are None.
"""

from typing import Optional

from flax import nnx

from bort_jax import validate
from bort_jax.models import common

_CONV_WIDTHS = (6, 16)
_DENSE_WIDTHS = (120, 84)
_KERNEL = 5


def _flat_size(image_size: int) -> int:
  after_conv1 = image_size - _KERNEL + 1
  after_conv2 = after_conv1 // 2 - _KERNEL + 1
  return after_conv2 // 2


class LeNet(common.ConvClassifier):
  """LeNet-5 with the convolutional-model interface."""

  layer_names = ("conv1", "conv2")

  def __init__(self, *, num_classes: int, rngs: nnx.Rngs, in_channels: int,
               image_size: int, width_multiplier: float = 1.0,
               min_channels: int = 1):
    num_classes = validate.check_positive_int("num_classes", num_classes)
    self.in_channels = validate.check_positive_int("in_channels", in_channels)
    self.image_size = validate.check_positive_int("image_size", image_size)
    if _flat_size(self.image_size) < 1:
      raise ValueError(f"image_size must be at least 16 for LeNet, got {image_size}.")
    scale = common.width_scaler(width_multiplier, min_channels)
    conv1_out, conv2_out = map(scale, _CONV_WIDTHS)
    fc1_out, fc2_out = map(scale, _DENSE_WIDTHS)
    conv = dict(kernel_size=(_KERNEL, _KERNEL),
                padding=common.symmetric_padding(0), rngs=rngs)
    self.conv1 = common.conv_layer(self.in_channels, conv1_out, **conv)
    self.conv2 = common.conv_layer(conv1_out, conv2_out, **conv)
    self.fc1 = nnx.Linear(_flat_size(self.image_size) ** 2 * conv2_out, fc1_out,
                          rngs=rngs)
    self.fc2 = nnx.Linear(fc1_out, fc2_out, rngs=rngs)
    self.fc3 = nnx.Linear(fc2_out, num_classes, rngs=rngs)
    self.head = None
    self.head_pool = None

  def top_activation(self, layer) -> Optional[str]:
    # conv1 is relu(conv1(x)); conv2 follows a max pool.
    return "relu" if self.layer_name(layer) == "conv1" else None

  def _trace(self, x, activation, eval_mode) -> common.Trace:
    del eval_mode  # LeNet has neither BN nor dropout.
    validate.check_image_shape("x", x.shape, channels=self.in_channels,
                              image_size=self.image_size)
    conv1 = activation(self.conv1(x))
    yield common.LayerOutput("conv1", x, conv1)
    pooled1 = common.max_pool(conv1, 2, 2)
    conv2 = activation(self.conv2(pooled1))
    yield common.LayerOutput("conv2", pooled1, conv2)
    flat = common.max_pool(conv2, 2, 2).reshape(x.shape[0], -1)
    hidden = activation(self.fc1(flat))
    hidden = activation(self.fc2(hidden))
    return self.fc3(hidden)


def lenet(*, num_classes: int = 10, rngs: nnx.Rngs, in_channels: int = 1,
          image_size: Optional[int] = None, width_multiplier: float = 1.0,
          min_channels: int = 1) -> LeNet:
  """LeNet-5 for 28x28 grey (``in_channels=1``, default) or 32x32 RGB
  (``in_channels=3``) images; ``image_size`` defaults to 28 or 32 to match."""
  if image_size is None:
    image_size = 28 if in_channels == 1 else 32
  return LeNet(num_classes=num_classes, rngs=rngs, in_channels=in_channels,
               image_size=image_size, width_multiplier=width_multiplier,
               min_channels=min_channels)
