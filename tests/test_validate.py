"""bort_jax.validate: the argument checks models and explainers share, and
models.predict, the one jitted arg-max."""

import re

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bort_jax import models, validate
import explain_fixtures as F


@pytest.mark.parametrize("shape,channels_first", [
    ((2, 3, 32, 32), True), ((2, 1, 28, 28), True), ((2, 4, 8, 5), True),
    ((2, 32, 32, 3), False), ((2, 8, 8, 2), False), ((2, 4, 4, 16), False),
    ((2, 3, 8, 4), False), ((2, 2, 32, 32), False), ((3, 32, 32), False)])
def test_the_channels_first_rule(shape, channels_first):
  assert validate.looks_channels_first(shape) == channels_first


def test_image_shape_against_a_declared_channel_count():
  # Declared: only the last axis decides, whatever the rule would say.
  validate.check_image_shape("x", (2, 3, 8, 8), channels=8)
  with pytest.raises(ValueError, match=re.escape(
      "x must be a batch of NHWC images (B, H, W, C) with 1 channels, got "
      "shape (2, 1, 28, 28); it looks channels-first (B, C, H, W): NHWC would "
      "be (2, 28, 28, 1)")):
    validate.check_image_shape("x", (2, 1, 28, 28), channels=1)
  with pytest.raises(ValueError, match=r"with 3 channels, got shape "
                     r"\(2, 8, 8, 2\)\.$"):
    validate.check_image_shape("x", (2, 8, 8, 2), channels=3)
  with pytest.raises(ValueError, match=r"x must be 32x32 images"):
    validate.check_image_shape("x", (2, 28, 28, 1), channels=1, image_size=32)


@pytest.mark.parametrize("bad", [0, -2, 2.0, True, "3", None])
def test_one_positive_int_check_name_first(bad):
  with pytest.raises(ValueError, match=re.escape(
      f"steps must be a positive int, got {bad!r}.")):
    validate.check_positive_int("steps", bad)
  assert validate.check_positive_int("steps", np.int32(3)) == 3


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf, True, "2.0"])
def test_positive_float(bad):
  with pytest.raises(ValueError, match="B must be a finite float > 0"):
    validate.check_positive_float("B", bad)
  assert validate.check_positive_float("B", jnp.float32(2.0)) == 2.0


def test_one_layer_lookup_for_models_and_explainers():
  names = ("conv1", "conv2")
  assert validate.layer_index(names, "conv2") == 2
  assert validate.layer_index(names, np.int64(1)) == 1
  with pytest.raises(ValueError, match=r"out of range; allowed 1..2"):
    validate.layer_index(names, 0)
  with pytest.raises(ValueError, match=r"unknown layer 'conv9'; allowed"):
    validate.layer_index(names, "conv9")
  with pytest.raises(TypeError, match=r"1-based int index or a name"):
    validate.layer_index(names, True)


def test_predict_is_the_eval_mode_argmax_of_the_logits():
  model = F.two_layer(seed=3)
  x = F.random_images(4, 8, 2, seed=3)
  np.testing.assert_array_equal(models.predict(model, x),
                                np.argmax(model(x), -1))
  assert models.predict(lambda images: model(images), x).dtype == jnp.int32

  class Dropped(nnx.Module):
    """Class 1's logit goes through dropout: in train mode it is almost
    surely dropped and class 0 wins; in eval mode class 1 wins."""

    def __init__(self):
      self.drop = nnx.Dropout(0.999, rngs=nnx.Rngs(0))

    def __call__(self, images):
      ones = jnp.ones(images.shape[:1])
      return jnp.stack([0.5 * ones, self.drop(ones)], axis=-1)

  dropped = Dropped()
  dropped.train()
  images = jnp.ones((2, 4, 4, 1))
  np.testing.assert_array_equal(np.argmax(dropped(images), -1), [0, 0])
  np.testing.assert_array_equal(models.predict(dropped, images), [1, 1])
  assert dropped.drop.deterministic is False  # the caller's module untouched
