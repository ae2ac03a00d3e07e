"""ResNet50 (He et al.) with the torchvision/timm topology: bottleneck blocks
v1.5 (the stride of a downsampling block sits on its 3x3 conv), batch norm
after every conv, convs without bias. Stem: 7x7/64 stride 2 padding 3, BN,
ReLU, 3x3 max pool stride 2 padding 1. Stages of 3, 4, 6, 3 blocks of widths
64, 128, 256, 512 (x4 at the block output). Global average pool, then ``head``
(dense to the classes). 25.56 M parameters for 1000 classes.

Layer names, in forward order: ``stem``, then per block
``layer{s}.{b}.conv1``, ``.conv2``, for the first block of a stage
``.downsample`` (the 1x1 projection of the shortcut), and ``.conv3``; so a
block's last layer is always ``conv3``, whose output is the block output. Outputs, as
``features`` returns them: ``stem`` after BN and ReLU (before the max pool);
conv1/conv2 after BN and ReLU; ``downsample`` after its BN; ``conv3`` is the
block output ``relu(bn3(conv3) + shortcut)``, since its ReLU comes after the
residual sum. So the last layer's features are what the head pools.

BN uses PyTorch's running-average momentum 0.1 (Flax momentum 0.9) and eps
1e-5. Convs use He-normal over fan-out, as torchvision does.
"""

from typing import Optional, Sequence

from flax import nnx

from bort_jax import validate
from bort_jax.models import common

_STAGE_SIZES = (3, 4, 6, 3)
_STAGE_WIDTHS = (64, 128, 256, 512)
_EXPANSION = 4
_STEM_WIDTH = 64

_CONV_INIT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(fan_in, out, kernel, rngs, strides=1, pad=0):
  return common.conv_layer(fan_in, out, (kernel, kernel),
                           strides=(strides, strides),
                           padding=common.symmetric_padding(pad), use_bias=False,
                           kernel_init=_CONV_INIT, rngs=rngs)


def _norm(features, rngs):
  return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=rngs)


class Bottleneck(nnx.Module):
  """1x1 -> 3x3 (stride here, v1.5) -> 1x1 (x4), plus a shortcut."""

  def __init__(self, fan_in: int, width: int, strides: int, rngs: nnx.Rngs):
    out = width * _EXPANSION
    self.conv1 = _conv(fan_in, width, 1, rngs)
    self.bn1 = _norm(width, rngs)
    self.conv2 = _conv(width, width, 3, rngs, strides=strides, pad=1)
    self.bn2 = _norm(width, rngs)
    self.conv3 = _conv(width, out, 1, rngs)
    self.bn3 = _norm(out, rngs)
    if strides != 1 or fan_in != out:
      self.downsample = _conv(fan_in, out, 1, rngs, strides=strides)
      self.downsample_bn = _norm(out, rngs)
    else:
      self.downsample = None
      self.downsample_bn = None

  @property
  def conv_names(self) -> tuple[str, ...]:
    return ("conv1", "conv2") + (
        ("downsample",) if self.downsample is not None else ()) + ("conv3",)

  def trace(self, x, activation, eval_mode, prefix: str) -> common.Trace:
    """Yields conv1, conv2, [downsample], conv3; returns the block output."""
    h1 = activation(common.batch_norm(self.bn1, self.conv1(x), eval_mode))
    yield common.LayerOutput(f"{prefix}.conv1", x, h1)
    h2 = activation(common.batch_norm(self.bn2, self.conv2(h1), eval_mode))
    yield common.LayerOutput(f"{prefix}.conv2", h1, h2)
    if self.downsample is None:
      shortcut = x
    else:
      shortcut = common.batch_norm(self.downsample_bn, self.downsample(x),
                                   eval_mode)
      yield common.LayerOutput(f"{prefix}.downsample", x, shortcut)
    out = activation(
        common.batch_norm(self.bn3, self.conv3(h2), eval_mode) + shortcut)
    yield common.LayerOutput(f"{prefix}.conv3", h2, out)
    return out


class ResNet(common.ConvClassifier):
  """ResNet with bottleneck v1.5 blocks and the convolutional-model interface."""

  def __init__(self, *, num_classes: int, rngs: nnx.Rngs, in_channels: int = 3,
               width_multiplier: float = 1.0, min_channels: int = 1,
               stage_sizes: Sequence[int] = _STAGE_SIZES):
    num_classes = validate.check_positive_int("num_classes", num_classes)
    self.in_channels = validate.check_positive_int("in_channels", in_channels)
    scale = common.width_scaler(width_multiplier, min_channels)
    stage_sizes = tuple(stage_sizes)
    if len(stage_sizes) != len(_STAGE_WIDTHS) or not all(
        isinstance(n, int) and n >= 1 for n in stage_sizes):
      raise ValueError(
          f"stage_sizes must be 4 positive ints, got {stage_sizes!r}.")
    stem_width = scale(_STEM_WIDTH)
    self.stem = _conv(self.in_channels, stem_width, 7, rngs, strides=2, pad=3)
    self.stem_bn = _norm(stem_width, rngs)
    names = ["stem"]
    fan_in = stem_width
    for stage, (size, base_width) in enumerate(zip(stage_sizes, _STAGE_WIDTHS)):
      width = scale(base_width)
      blocks = []
      for index in range(size):
        strides = 2 if stage > 0 and index == 0 else 1
        block = Bottleneck(fan_in, width, strides, rngs)
        names += [f"layer{stage + 1}.{index}.{n}" for n in block.conv_names]
        blocks.append(block)
        fan_in = width * _EXPANSION
      setattr(self, f"layer{stage + 1}", nnx.List(blocks))
    self.stage_names = tuple(f"layer{s + 1}" for s in range(len(stage_sizes)))
    self.layer_names = tuple(names)
    self.head = nnx.Linear(fan_in, num_classes, rngs=rngs)
    self.head_pool = "avg"

  def _trace(self, x, activation, eval_mode: Optional[bool]) -> common.Trace:
    validate.check_image_shape("x", x.shape, channels=self.in_channels)
    stem = activation(common.batch_norm(self.stem_bn, self.stem(x), eval_mode))
    yield common.LayerOutput("stem", x, stem)
    x = common.max_pool(stem, 3, 2, pad=1)
    for stage_name in self.stage_names:
      for index, block in enumerate(getattr(self, stage_name)):
        x = yield from block.trace(x, activation, eval_mode,
                                   f"{stage_name}.{index}")
    return self.head(common.global_pool(x, self.head_pool))


def resnet50(*, num_classes: int = 1000, rngs: nnx.Rngs, in_channels: int = 3,
             width_multiplier: float = 1.0, min_channels: int = 1,
             stage_sizes: Sequence[int] = _STAGE_SIZES) -> ResNet:
  """ResNet50; ``stage_sizes`` (default 3-4-6-3) is the depth override."""
  return ResNet(num_classes=num_classes, rngs=rngs, in_channels=in_channels,
                width_multiplier=width_multiplier, min_channels=min_channels,
                stage_sizes=stage_sizes)
