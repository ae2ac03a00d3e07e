"""Our RandAugment / Mixup / CutMix against timm's definitions, as tables.

timm is not a dependency; its constants are written out below from
huggingface/pytorch-image-models, timm/data/auto_augment.py (``_LEVEL_DENOM``,
``_RAND_TRANSFORMS``, ``LEVEL_TO_ARG`` and the ``_*_level_to_arg`` rules,
``rand_augment_ops``' prob, ``rand_augment_transform``'s defaults,
``AugmentOp.__call__``'s magnitude clip) and timm/data/mixup.py (``Mixup``'s
defaults, ``rand_bbox``, ``cutmix_bbox_and_lam``, ``mixup_target``), read at
commit 066e490605ba1d3666861096163246c885603469. The paper's Table 7 recipes
are timm's ``rand-m9-mstd0.5`` / ``rand-m7-mstd0.5`` (non-"inc" ops).
"""

import math

import numpy as np
import pytest

from bort_jax.data import augment

TIMM_LEVEL_DENOM = 10.0
TIMM_RAND_TRANSFORMS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
    "SolarizeAdd", "Color", "Contrast", "Brightness", "Sharpness", "ShearX",
    "ShearY", "TranslateXRel", "TranslateYRel")
# name: argument at level = magnitude / 10, before the random sign;
# (rule, signed). None: the op takes no argument.
TIMM_LEVEL_TO_ARG = {
    "AutoContrast": None, "Equalize": None, "Invert": None,
    "Rotate": (lambda level: level * 30.0, True),                # [-30, 30]
    "Posterize": (lambda level: int(level * 4), False),          # [0, 4] bits
    "Solarize": (lambda level: int(level * 256), False),         # [0, 256]
    "SolarizeAdd": (lambda level: int(level * 110), False),      # [0, 110]
    "Color": (lambda level: level * 1.8 + 0.1, False),           # [0.1, 1.9]
    "Contrast": (lambda level: level * 1.8 + 0.1, False),
    "Brightness": (lambda level: level * 1.8 + 0.1, False),
    "Sharpness": (lambda level: level * 1.8 + 0.1, False),
    "ShearX": (lambda level: level * 0.3, True),                 # [-0.3, 0.3]
    "ShearY": (lambda level: level * 0.3, True),
    "TranslateXRel": (lambda level: level * 0.45, True),         # translate_pct
    "TranslateYRel": (lambda level: level * 0.45, True),
}
TIMM_OP_PROB = 0.5          # rand_augment_ops: AugmentOp(prob=0.5)
TIMM_NUM_LAYERS = 2         # rand_augment_transform's default 'n'
TIMM_MIXUP_SWITCH_PROB = 0.5  # Mixup(switch_prob=0.5), mode 'batch', prob 1


class _Sign:
  """An rng whose random() always says 'keep' (0.0) or 'negate' (0.9)."""

  def __init__(self, value):
    self.value = value

  def random(self):
    return self.value


def test_rand_augment_op_set_and_probabilities_are_timms():
  assert tuple(augment.RAND_AUGMENT_OPS) == TIMM_RAND_TRANSFORMS
  assert tuple(augment.RAND_AUGMENT_LEVELS) == TIMM_RAND_TRANSFORMS
  assert augment.RAND_AUGMENT_PROB == TIMM_OP_PROB
  assert augment.LEVEL_DENOM == TIMM_LEVEL_DENOM
  spec = augment.parse_rand_augment("rand-m9-mstd0.5")
  assert spec.num_ops == TIMM_NUM_LAYERS and spec.magnitude_max == 10.0


@pytest.mark.parametrize("name", TIMM_RAND_TRANSFORMS)
def test_rand_augment_magnitude_to_argument_is_timms(name):
  timm = TIMM_LEVEL_TO_ARG[name]
  if timm is None:
    assert augment.RAND_AUGMENT_LEVELS[name] is None
    return
  rule, signed = timm
  for magnitude in (0.0, 3.3, 5.0, 7.0, 9.0, 10.0, 13.0):
    level = magnitude / TIMM_LEVEL_DENOM
    kept = augment.level_argument(name, level, _Sign(0.0))
    flipped = augment.level_argument(name, level, _Sign(0.9))
    np.testing.assert_allclose(kept, rule(level), rtol=1e-12,
                               err_msg=f"{name} m={magnitude}")
    np.testing.assert_allclose(flipped, -rule(level) if signed else rule(level),
                               rtol=1e-12, err_msg=f"{name} m={magnitude}")


def test_rand_augment_level_divides_by_10_even_with_mmax(monkeypatch):
  # timm clips the magnitude to [0, mmax] and divides by _LEVEL_DENOM = 10.
  seen = []
  monkeypatch.setitem(augment.RAND_AUGMENT_OPS, "Rotate",
                      lambda pil, level, rng, fill: seen.append(level) or pil)
  monkeypatch.setattr(augment, "RAND_AUGMENT_PROB", 1.0)
  monkeypatch.setattr(augment, "_OP_NAMES", ("Rotate",))
  pil = augment.to_pil(np.zeros((4, 4, 3), np.uint8))
  for text, expected in (("rand-n1-m15-mmax20", 1.5), ("rand-n1-m9-mmax20", 0.9),
                         ("rand-n1-m9", 0.9)):
    seen.clear()
    augment.rand_augment(pil, np.random.default_rng(0),
                         augment.parse_rand_augment(text), (0, 0, 0))
    assert seen == [pytest.approx(expected)], text


def test_mixup_cutmix_switch_and_box_are_timms():
  assert augment.AUGMENT_DEFAULTS["mixup_switch_prob"] == TIMM_MIXUP_SWITCH_PROB

  class Centre:
    def integers(self, n):
      return n // 3

  # timm rand_bbox: cut = int(size·√(1−λ)), centre uniform, clipped.
  for lam in (0.1, 0.37, 0.8):
    h, w = 40, 30
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = h // 3, w // 3
    expected = (int(np.clip(cy - cut_h // 2, 0, h)),
                int(np.clip(cy + cut_h // 2, 0, h)),
                int(np.clip(cx - cut_w // 2, 0, w)),
                int(np.clip(cx + cut_w // 2, 0, w)))
    assert augment.cutmix_box(Centre(), h, w, lam) == expected


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_rand_augment_geometry_uses_recipe_interpolation_and_timm_fill(interpolation):
  # timm's transform factory passes aa_params = {img_mean: round(255·mean),
  # interpolation: the recipe's (unless 'random')}; AugmentOp hands them to
  # rotate/transform as fillcolor and resample.
  from PIL import Image
  mean = (123.675, 116.28, 103.53)  # 255 × timm's IMAGENET_DEFAULT_MEAN
  timm_fill = tuple(min(255, round(255 * m)) for m in (0.485, 0.456, 0.406))
  resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[interpolation]
  rng = np.random.default_rng(0)
  pil = augment.to_pil(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
  spec = augment.parse_rand_augment("rand-n1-m9")
  for name in ("Rotate", "ShearX", "TranslateYRel"):
    ours = augment.rand_augment(
        pil, _OneOp(name), spec, mean, interpolation)
    argument = augment.level_argument(name, 0.9, _Sign(0.0))
    if name == "Rotate":
      expected = pil.rotate(argument, resample=resample, fillcolor=timm_fill)
    else:
      matrix = ((1, argument, 0, 0, 1, 0) if name == "ShearX" else
                (1, 0, 0, 0, 1, argument * pil.size[1]))
      expected = pil.transform(pil.size, Image.AFFINE, matrix,
                               resample=resample, fillcolor=timm_fill)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(expected),
                                  err_msg=name)


class _OneOp:
  """An rng that picks op `name`, applies it (prob draw 0) with its sign kept."""

  def __init__(self, name):
    self.index = tuple(augment.RAND_AUGMENT_OPS).index(name)

  def integers(self, high, size):
    return np.full(size, self.index)

  def random(self):
    return 0.0

  def normal(self, loc, scale):
    return loc


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_train_transform_passes_its_interpolation_to_rand_augment(
    interpolation, monkeypatch):
  seen = []
  real = augment.rand_augment
  monkeypatch.setattr(augment, "rand_augment",
                      lambda *args: seen.append(args[4]) or real(*args))
  plan = augment.make_plan({"rand_augment": "rand-m9-mstd0.5",
                            "interpolation": interpolation})
  transform = augment.ExampleTransform(plan, True, (16, 16), None,
                                       (124.0, 116.0, 104.0), (58.0, 57.0, 57.0))
  augment.transform_example(np.zeros((20, 20, 3), np.uint8),
                            np.random.default_rng(0), transform)
  assert seen == [interpolation]
