"""The ImageNet training recipes of Tables 6-7 (timm's, Wightman 2019): the host half.

Everything here runs per example on uint8 PIL images, or draws the random parameters
of the float stages that `finish.finish_batch` applies to the whole batch on the
accelerator. Per example (in the loader, from a per-example numpy Generator):
  primary:   random-resized crop (scale 0.08-1, ratio 3/4-4/3) or eval resize + center
             crop, then horizontal flip. An encoded JPEG is decoded at 1/2, 1/4 or 1/8
             size (libjpeg's DCT scaling) when the crop box keeps at least the output
             size in pixels: the box is drawn from the header's size first;
  secondary: RandAugment (timm's "rand-m9-mstd0.5": 2 ops per image, each applied with
             probability 0.5, magnitude ~ N(m, mstd) clipped to [0, mmax]), color jitter;
  final:     Random Erasing (timm's 'pixel' mode): the box and a noise key drawn here,
             the noise and the normalisation made on the device.
With `aug_splits=S > 1` an example becomes S views [clean, aug_1, ...]: the clean view
gets only the primary stage, the others get secondary and erasing too (timm's
AugMixDataset split, used with the JSD loss).
Per batch: Mixup / CutMix (one lam per batch, partner = the batch reversed, CutMix chosen
with `mixup_switch_prob` when both are on) drawn here, applied on the device with label
smoothing, giving soft `targets`.
"""

import io
import math
from typing import NamedTuple, Optional

import numpy as np
from PIL import Image, ImageEnhance, ImageFile, ImageOps

INTERPOLATIONS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                  "nearest": Image.NEAREST}
# Knob -> default. `crop_size=None`: the dataset's own size (224 for ImageNet);
# `eval_resize=None`: crop_size / 0.875 (256 for 224) for ImageNet, and for fixed-size
# datasets crop_size itself when it differs from the stored size (a plain resize).
AUGMENT_DEFAULTS = {
    "random_resized_crop": False,
    "flip": False,
    "rand_augment": None,
    "mixup": 0.0,
    "cutmix": 0.0,
    "mixup_switch_prob": 0.5,
    "random_erasing": 0.0,
    "color_jitter": 0.0,
    "label_smoothing": 0.0,
    "aug_splits": 1,
    "crop_size": None,
    "eval_resize": None,
    "interpolation": "bicubic",
}
EVAL_CROP_FRACTION = 0.875


class RandAugmentSpec(NamedTuple):
  num_ops: int = 2
  magnitude: float = 9.0
  magnitude_std: float = 0.0
  magnitude_max: float = 10.0


class AugmentPlan(NamedTuple):
  """Validated recipe knobs (see `AUGMENT_DEFAULTS`); sizes not yet resolved."""
  random_resized_crop: bool
  flip: bool
  rand_augment: Optional[RandAugmentSpec]
  mixup: float
  cutmix: float
  mixup_switch_prob: float
  random_erasing: float
  color_jitter: float
  label_smoothing: float
  aug_splits: int
  crop_size: Optional[int]
  eval_resize: Optional[int]
  interpolation: str

  @property
  def mixes(self):
    return self.mixup > 0 or self.cutmix > 0

  @property
  def soft_targets(self):
    return self.mixes or self.label_smoothing > 0

  @property
  def has_secondary(self):
    return self.rand_augment is not None or self.color_jitter > 0

  @property
  def per_example(self):
    return (self.random_resized_crop or self.flip or self.has_secondary
            or self.random_erasing > 0 or self.aug_splits > 1)


def parse_rand_augment(spec):
  """timm-style "rand-m9-mstd0.5" (or "m9-mstd0.5", "rand-n2-m7-mstd0.5-mmax10")."""
  if not isinstance(spec, str) or not spec:
    raise ValueError(f"rand_augment must be a string like 'rand-m9-mstd0.5', got {spec!r}")
  tokens = spec.split("-")
  if tokens[0] == "rand":
    tokens = tokens[1:]
  fields = {}
  # Longest prefixes first: "mstd" and "mmax" also start with "m".
  prefixes = (("mstd", "magnitude_std", float), ("mmax", "magnitude_max", float),
              ("m", "magnitude", float), ("n", "num_ops", int))
  for token in tokens:
    for prefix, field, cast in prefixes:
      if token.startswith(prefix):
        try:
          fields[field] = cast(token[len(prefix):])
        except ValueError:
          raise ValueError(f"rand_augment {spec!r}: bad value in {token!r}") from None
        break
    else:
      raise ValueError(f"rand_augment {spec!r}: unsupported part {token!r}; supported: "
                       f"m<magnitude>, n<ops>, mstd<std>, mmax<max> (timm's inc/w/p are "
                       f"not implemented)")
  ra = RandAugmentSpec(**fields)
  if ra.num_ops < 1 or not 0 <= ra.magnitude <= ra.magnitude_max or ra.magnitude_std < 0:
    raise ValueError(f"rand_augment {spec!r}: need n >= 1, 0 <= m <= mmax, mstd >= 0")
  return ra


def make_plan(augment):
  """Validates a dict / ConfigDict of knobs into an `AugmentPlan`; None means no knobs."""
  if augment is None:
    augment = {}
  if hasattr(augment, "to_dict"):
    augment = augment.to_dict()
  if not isinstance(augment, dict):
    raise TypeError(f"augment must be a dict or ConfigDict, got {type(augment).__name__}")
  unknown = sorted(set(augment) - set(AUGMENT_DEFAULTS))
  if unknown:
    raise ValueError(f"unknown augment knob(s) {unknown}; implemented: "
                     f"{sorted(AUGMENT_DEFAULTS)}")
  knobs = {**AUGMENT_DEFAULTS, **augment}
  for key in ("random_resized_crop", "flip"):
    if not isinstance(knobs[key], (bool, np.bool_)):
      raise ValueError(f"augment {key} must be a bool, got {knobs[key]!r}")
  for key in ("mixup", "cutmix", "color_jitter"):
    if not (isinstance(knobs[key], (int, float)) and knobs[key] >= 0):
      raise ValueError(f"augment {key} must be a number >= 0, got {knobs[key]!r}")
  for key in ("mixup_switch_prob", "random_erasing", "label_smoothing"):
    if not (isinstance(knobs[key], (int, float)) and 0 <= knobs[key] <= 1):
      raise ValueError(f"augment {key} must be a probability in [0, 1], got {knobs[key]!r}")
  if knobs["color_jitter"] >= 1:
    raise ValueError(f"augment color_jitter must be < 1 (factors 1 +- cj), got "
                     f"{knobs['color_jitter']!r}")
  if not (isinstance(knobs["aug_splits"], int) and knobs["aug_splits"] >= 1):
    raise ValueError(f"augment aug_splits must be an int >= 1, got {knobs['aug_splits']!r}")
  for key in ("crop_size", "eval_resize"):
    if knobs[key] is not None and not (isinstance(knobs[key], int) and knobs[key] >= 1):
      raise ValueError(f"augment {key} must be None or an int >= 1, got {knobs[key]!r}")
  if knobs["interpolation"] not in INTERPOLATIONS:
    raise ValueError(f"augment interpolation {knobs['interpolation']!r}; allowed: "
                     f"{sorted(INTERPOLATIONS)}")
  ra = knobs["rand_augment"]
  knobs["rand_augment"] = None if ra is None else parse_rand_augment(ra)
  plan = AugmentPlan(**{k: (float(v) if isinstance(AUGMENT_DEFAULTS[k], float) else v)
                        for k, v in knobs.items()})
  if plan.aug_splits > 1 and not (plan.has_secondary or plan.random_erasing > 0):
    raise ValueError(f"aug_splits={plan.aug_splits} needs rand_augment, color_jitter or "
                     f"random_erasing, otherwise every split equals the clean view")
  return plan


# ---------------------------------------------------------------------------- primary


def random_resized_crop_box(rng, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                            attempts=10):
  """(top, left, h, w) of a random crop with area in `scale` and aspect in `ratio`.

  Draws all `attempts` candidates at once and keeps the first that fits; if none fits,
  the largest center crop whose aspect lies in `ratio` (torchvision's rule).
  """
  area = height * width
  target = area * rng.uniform(*scale, size=attempts)
  aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), size=attempts))
  ws = np.round(np.sqrt(target * aspect)).astype(int)
  hs = np.round(np.sqrt(target / aspect)).astype(int)
  fits = np.flatnonzero((ws > 0) & (ws <= width) & (hs > 0) & (hs <= height))
  if fits.size:
    h, w = int(hs[fits[0]]), int(ws[fits[0]])
    return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    h, w = height, int(round(height * ratio[1]))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def to_pil(image):
  """uint8 (H, W, 1) or (H, W, 3) array -> PIL image ("L" or "RGB")."""
  return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def from_pil(pil):
  """PIL image -> uint8 (H, W, C) array."""
  array = np.asarray(pil, np.uint8)
  return array[..., None] if array.ndim == 2 else array


ENCODED = (bytes, bytearray, memoryview)
DRAFT_SCALES = (8, 4, 2)  # the DCT scalings libjpeg decodes at (1/8, 1/4, 1/2)
_MODES = {1: "L", 3: "RGB"}


def open_image(image):
  """A uint8 (h, w, C) array -> PIL image; an encoded image file (bytes) -> a lazily
  opened PIL image: its size is read from the header, its pixels are decoded by the
  first resize/crop (`crop_resize` decodes a JPEG at reduced size when it can)."""
  if isinstance(image, ENCODED):
    return Image.open(io.BytesIO(image))
  return to_pil(np.asarray(image))


def in_mode(pil, channels):
  """`pil` with `channels` (1: "L", 3: "RGB"); decoded files may be grey or CMYK."""
  mode = _MODES[channels]
  return pil if pil.mode == mode else pil.convert(mode)


def draft_scale(box_size, size):
  """The largest DCT scaling s (8, 4, 2, else 1) at which a crop box of
  `box_size` = (h, w) source pixels still has at least `size` = (h, w) pixels."""
  for scale in DRAFT_SCALES:
    if box_size[0] >= scale * size[0] and box_size[1] >= scale * size[1]:
      return scale
  return 1


def crop_resize(pil, box, size, interpolation="bicubic", reduced_decode=True):
  """The region `box` = (left, top, right, bottom) of `pil` (full-size source
  coordinates) resized to `size` = (h, w), in one resample.

  A JPEG not yet decoded is decoded at 1/`draft_scale` of its size when
  `reduced_decode`; the box is scaled with it (DCT scaling by s maps the source pixel
  edge x to x / s exactly).
  """
  scale = 1
  if reduced_decode and isinstance(pil, ImageFile.ImageFile) and pil.tile:  # not loaded
    wanted = draft_scale((box[3] - box[1], box[2] - box[0]), size)
    full_width = pil.width
    drafted = pil.draft(pil.mode, (pil.width // wanted, pil.height // wanted)) \
        if wanted > 1 else None
    if drafted is not None:  # None: not a JPEG, no DCT scaling
      scale = round(full_width / drafted[1][2])
  return pil.resize((size[1], size[0]), INTERPOLATIONS[interpolation],
                    box=tuple(c / scale for c in box))


def random_resized_crop(pil, rng, size, interpolation="bicubic", reduced_decode=True):
  """Random-resized crop of a PIL image to `size` = (height, width)."""
  top, left, h, w = random_resized_crop_box(rng, pil.height, pil.width)
  return crop_resize(pil, (left, top, left + w, top + h), size, interpolation,
                     reduced_decode)


def resize_center_crop(pil, resize, size, interpolation="bicubic", reduced_decode=True):
  """Resize the shorter side to `resize` (aspect kept), then center-crop `size` (h, w)."""
  if resize is not None and min(pil.size) != resize:
    scale = resize / min(pil.size)
    new_h = max(size[0], round(pil.height * scale))
    new_w = max(size[1], round(pil.width * scale))
    pil = crop_resize(pil, (0, 0, pil.width, pil.height), (new_h, new_w), interpolation,
                      reduced_decode)
  if pil.height < size[0] or pil.width < size[1]:
    raise ValueError(f"image {pil.height}x{pil.width} is smaller than the crop {size}; "
                     f"set eval_resize >= crop_size")
  top, left = (pil.height - size[0]) // 2, (pil.width - size[1]) // 2
  return pil.crop((left, top, left + size[1], top + size[0]))


# -------------------------------------------------------------------------- secondary


def _signed(rng, value):
  return value if rng.random() < 0.5 else -value


class Geometry(NamedTuple):
  """timm's AugmentOp kwargs for the geometric ops: the colour of the exposed area
  (`img_mean` rounded to 0..255) and the resampling filter (the recipe's
  interpolation, as timm's transform factory passes it for any but 'random')."""
  fill: object
  resample: int


def _affine(pil, matrix, geometry):
  return pil.transform(pil.size, Image.AFFINE, matrix, resample=geometry.resample,
                       fillcolor=geometry.fill)


def _posterize(pil, bits):
  """Keep the `bits` most significant bits (0..8; PIL's posterize refuses 0)."""
  array = np.asarray(pil, np.uint8)
  return Image.fromarray(array & np.uint8((0xFF << (8 - bits)) & 0xFF))


def _solarize_add(pil, add):
  array = np.asarray(pil, np.int16)
  return Image.fromarray(np.where(array < 128, np.minimum(array + add, 255), array)
                         .astype(np.uint8))


class LevelRule(NamedTuple):
  """timm's magnitude-to-argument rule of one op (``_*_level_to_arg``):
  ``scale · level`` (``int`` if ``integer``) ``+ offset``, negated with
  probability 1/2 if ``signed``; ``level`` is magnitude / ``LEVEL_DENOM``."""
  scale: float
  offset: float = 0.0
  signed: bool = False
  integer: bool = False


LEVEL_DENOM = 10.0  # timm's _LEVEL_DENOM: magnitude 10 is level 1

# timm's RandAugment op set (_RAND_TRANSFORMS, the default, non-"inc" variants)
# and its rules (LEVEL_TO_ARG); None: the op takes no argument.
_ENHANCE = LevelRule(1.8, offset=0.1)  # factor in [0.1, 1.9], never negated
RAND_AUGMENT_LEVELS = {
    "AutoContrast": None,
    "Equalize": None,
    "Invert": None,
    "Rotate": LevelRule(30.0, signed=True),
    "Posterize": LevelRule(4.0, integer=True),
    "Solarize": LevelRule(256.0, integer=True),
    "SolarizeAdd": LevelRule(110.0, integer=True),
    "Color": _ENHANCE,
    "Contrast": _ENHANCE,
    "Brightness": _ENHANCE,
    "Sharpness": _ENHANCE,
    "ShearX": LevelRule(0.3, signed=True),
    "ShearY": LevelRule(0.3, signed=True),
    "TranslateXRel": LevelRule(0.45, signed=True),
    "TranslateYRel": LevelRule(0.45, signed=True),
}


def level_argument(name, level, rng):
  """The argument op ``name`` gets at ``level`` (``rng`` draws the sign)."""
  rule = RAND_AUGMENT_LEVELS[name]
  value = rule.scale * level
  value = int(value) + int(rule.offset) if rule.integer else value + rule.offset
  return _signed(rng, value) if rule.signed else value


def _enhance(name):
  kind = getattr(ImageEnhance, name)
  return lambda pil, level, rng, geometry: kind(pil).enhance(
      level_argument(name, level, rng))


RAND_AUGMENT_OPS = {
    "AutoContrast": lambda pil, level, rng, geometry: ImageOps.autocontrast(pil),
    "Equalize": lambda pil, level, rng, geometry: ImageOps.equalize(pil),
    "Invert": lambda pil, level, rng, geometry: ImageOps.invert(pil),
    "Rotate": lambda pil, level, rng, geometry: pil.rotate(
        level_argument("Rotate", level, rng), resample=geometry.resample,
        fillcolor=geometry.fill),
    "Posterize": lambda pil, level, rng, geometry: _posterize(
        pil, level_argument("Posterize", level, rng)),
    "Solarize": lambda pil, level, rng, geometry: ImageOps.solarize(
        pil, level_argument("Solarize", level, rng)),
    "SolarizeAdd": lambda pil, level, rng, geometry: _solarize_add(
        pil, level_argument("SolarizeAdd", level, rng)),
    "Color": _enhance("Color"),
    "Contrast": _enhance("Contrast"),
    "Brightness": _enhance("Brightness"),
    "Sharpness": _enhance("Sharpness"),
    "ShearX": lambda pil, level, rng, geometry: _affine(
        pil, (1, level_argument("ShearX", level, rng), 0, 0, 1, 0), geometry),
    "ShearY": lambda pil, level, rng, geometry: _affine(
        pil, (1, 0, 0, level_argument("ShearY", level, rng), 1, 0), geometry),
    "TranslateXRel": lambda pil, level, rng, geometry: _affine(
        pil, (1, 0, level_argument("TranslateXRel", level, rng) * pil.size[0],
              0, 1, 0), geometry),
    "TranslateYRel": lambda pil, level, rng, geometry: _affine(
        pil, (1, 0, 0, 0, 1,
              level_argument("TranslateYRel", level, rng) * pil.size[1]), geometry),
}
_OP_NAMES = tuple(RAND_AUGMENT_OPS)
RAND_AUGMENT_PROB = 0.5


def rand_augment(pil, rng, spec, fill, interpolation="bilinear"):
  """timm RandAugment on a PIL image: `num_ops` ops drawn with replacement.

  `fill` (per-channel, 0..255, rounded as timm's `img_mean`) colours the area that
  rotations/shears/translations expose; they resample with `interpolation`.
  """
  fill = round(fill[0]) if pil.mode == "L" else tuple(round(f) for f in fill)
  geometry = Geometry(fill, INTERPOLATIONS[interpolation])
  for op in rng.integers(len(_OP_NAMES), size=spec.num_ops):
    if rng.random() >= RAND_AUGMENT_PROB:
      continue
    magnitude = spec.magnitude
    if spec.magnitude_std == math.inf:
      magnitude = rng.uniform(0.0, magnitude)
    elif spec.magnitude_std > 0:
      magnitude = rng.normal(magnitude, spec.magnitude_std)
    # timm clips to [0, mmax] but always divides by 10 (_LEVEL_DENOM).
    level = float(np.clip(magnitude, 0.0, spec.magnitude_max)) / LEVEL_DENOM
    pil = RAND_AUGMENT_OPS[_OP_NAMES[op]](pil, level, rng, geometry)
  return pil


def color_jitter(pil, rng, strength):
  """Brightness, contrast and saturation factors ~ U[1 - s, 1 + s], in random order."""
  enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
  for which in rng.permutation(len(enhancers)):
    pil = enhancers[which](pil).enhance(rng.uniform(1 - strength, 1 + strength))
  return pil


# ------------------------------------------------------------------------------ final


def erase_box(rng, prob, height, width, scale=(0.02, 1 / 3), ratio=(0.3, 3.3),
              attempts=10):
  """timm Random Erasing's box draws for one (height, width) view: (top, left, h, w),
  or None when the view is not erased."""
  if rng.random() >= prob:
    return None
  area = height * width
  target = area * rng.uniform(*scale, size=attempts)
  aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), size=attempts))
  hs = np.round(np.sqrt(target * aspect)).astype(int)
  ws = np.round(np.sqrt(target / aspect)).astype(int)
  fits = np.flatnonzero((hs > 0) & (ws > 0) & (hs < height) & (ws < width))
  if not fits.size:
    return None
  h, w = int(hs[fits[0]]), int(ws[fits[0]])
  return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w


def erase_params(rng, prob, height, width):
  """`erase_box` as int32 (top, left, h, w), all 0 when not erased, and the uint32 (2,)
  raw `finish.NOISE_PRNG` key of the view's N(0, 1) 'pixel' noise."""
  box = erase_box(rng, prob, height, width)
  if box is None:
    return np.zeros(4, np.int32), np.zeros(2, np.uint32)
  # The noise is drawn on the device; its key is the view's last draw, where the
  # float host path drew the noise itself.
  return np.asarray(box, np.int32), rng.integers(0, 2**32, size=2, dtype=np.uint32)


# ------------------------------------------------------------------------- per example


class ExampleTransform(NamedTuple):
  """A plan with its sizes resolved for one dataset and split."""
  plan: AugmentPlan
  train: bool
  crop_size: tuple  # (height, width) of the output
  eval_resize: Optional[int]
  mean: tuple
  std: tuple
  reduced_decode: bool = True  # decode JPEGs at 1/2-1/8 size when the crop allows


def transform_example(image, rng, transform):
  """One image -> its uint8 views and the parameters of their float stages.

  `image`: uint8 (h, w, C) array or an encoded image file (bytes). Returns
  {'image': uint8 (H, W, C), or (S, H, W, C) with S aug splits} plus, when the plan
  erases (train), 'erase_box' int32 (S, 4) and 'erase_key' uint32 (S, 2) (see
  `erase_params`; the clean split is never erased).
  """
  plan = transform.plan
  size = tuple(transform.crop_size)
  channels = len(transform.mean)
  pil = open_image(image)
  if transform.train and plan.random_resized_crop:
    pil = random_resized_crop(pil, rng, size, plan.interpolation, transform.reduced_decode)
  elif transform.eval_resize is not None or (pil.height, pil.width) != size:
    pil = resize_center_crop(pil, transform.eval_resize, size, plan.interpolation,
                             transform.reduced_decode)
  pil = in_mode(pil, channels)
  if not transform.train:
    return {"image": from_pil(pil)}
  if plan.flip and rng.random() < 0.5:
    pil = pil.transpose(Image.FLIP_LEFT_RIGHT)
  erases = plan.random_erasing > 0
  views, boxes, keys = [], [], []

  def add(view, erase):
    views.append(from_pil(view))
    box, key = (erase_params(rng, plan.random_erasing, *size) if erase
                else (np.zeros(4, np.int32), np.zeros(2, np.uint32)))
    boxes.append(box)
    keys.append(key)

  if plan.aug_splits > 1:
    add(pil, erase=False)
  for _ in range(plan.aug_splits - 1 if plan.aug_splits > 1 else 1):
    view = pil
    if plan.rand_augment is not None:
      view = rand_augment(view, rng, plan.rand_augment, transform.mean,
                          plan.interpolation)
    if plan.color_jitter > 0:
      view = color_jitter(view, rng, plan.color_jitter)
    add(view, erase=erases)
  out = {"image": views[0] if plan.aug_splits == 1 else np.stack(views)}
  if erases:
    out["erase_box"], out["erase_key"] = np.stack(boxes), np.stack(keys)
  return out


# --------------------------------------------------------------------------- per batch


def smooth_one_hot(labels, num_classes, smoothing):
  """One-hot rows with `smoothing` spread evenly over all classes (rows sum to 1)."""
  off = smoothing / num_classes
  targets = np.full((len(labels), num_classes), off, np.float32)
  targets[np.arange(len(labels)), labels] += 1.0 - smoothing
  return targets


def cutmix_box(rng, height, width, lam):
  """(top, bottom, left, right) of a box covering about 1 - lam of the image, clipped."""
  cut = math.sqrt(1.0 - lam)
  cut_h, cut_w = int(height * cut), int(width * cut)
  center_y, center_x = int(rng.integers(height)), int(rng.integers(width))
  top, bottom = np.clip([center_y - cut_h // 2, center_y + cut_h // 2], 0, height)
  left, right = np.clip([center_x - cut_w // 2, center_x + cut_w // 2], 0, width)
  return int(top), int(bottom), int(left), int(right)


def mix_params(rng, plan, height, width, batch_size):
  """One batch's Mixup/CutMix draws, repeated per example (so they shard with it).

  Returns {'mix_lam' float32 (B,): the weight of an example's own image (Mixup) and
  label; 'mix_box' int32 (B, 4): CutMix's (top, bottom, left, right), pasted from the
  partner; 'mix_cutmix' bool (B,)}. For CutMix, lam is the box's true area fraction.
  """
  use_cutmix = plan.cutmix > 0 and (plan.mixup == 0 or rng.random() < plan.mixup_switch_prob)
  alpha = plan.cutmix if use_cutmix else plan.mixup
  lam = float(rng.beta(alpha, alpha))
  box = (0, 0, 0, 0)
  if use_cutmix:
    box = cutmix_box(rng, height, width, lam)
    top, bottom, left, right = box
    lam = 1.0 - (bottom - top) * (right - left) / (height * width)
  return {"mix_lam": np.full(batch_size, lam, np.float32),
          "mix_box": np.tile(np.asarray(box, np.int32), (batch_size, 1)),
          "mix_cutmix": np.full(batch_size, use_cutmix)}
