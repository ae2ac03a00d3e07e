"""The paper's networks in Flax NNX, NHWC float32 inputs.

``create(name, *, num_classes, rngs, **overrides)`` builds one of ``NAMES``.
Every conv/dense/attention weight is an ``nnx.Param`` named ``kernel`` (what
``bort_jax.default_mask`` selects); biases, norm parameters, embeddings and
position tables have other names. Train/eval mode: ``model.train()`` /
``model.eval()``.

The convolutional models (``lenet``, ``acnn_*``, ``vgg16``, ``resnet50``)
also provide the explainer interface of :class:`common.ConvClassifier`:
``model(x, *, activation=None)``, ``layer_names``, ``features(x, layer)``,
``conv_inputs(x)``, ``conv(layer)``, ``head`` and ``head_pool``, plus
``explain_layer`` (the layer the paper explains from) and
``top_activation(layer)`` (how a layer follows from the previous one).
``deit_small`` and ``swin_small`` provide the same members (no ``activation=``
on ``__call__``) for their one conv, the patch embedding
(:mod:`bort_jax.models.patch_embedding`).

``predict(model, x)`` (arg-max class) and ``logits(model, x)`` run any model
or callable ``x -> logits`` jit-compiled in eval mode.

``load_pretrained(name, path)`` / ``export_pretrained(name, model)`` move
torchvision (``resnet50``, ``vgg16``) and timm (``deit_small``,
``swin_small``) checkpoints in and out (:mod:`bort_jax.models.pretrained`).
"""

from typing import Callable

import jax.numpy as jnp
from flax import nnx

from bort_jax.models import acnn, common, lenet, resnet, swin, vgg, vit
from bort_jax.models.common import ConvClassifier, LayerOutput
from bort_jax.models.functional import logits, predict
from bort_jax.models.pretrained import export_pretrained, load_pretrained

_BUILDERS: dict[str, Callable[..., nnx.Module]] = {
    "lenet": lenet.lenet,
    "acnn_small_mnist": acnn.acnn_small_mnist,
    "acnn_small_cifar": acnn.acnn_small_cifar,
    "acnn_base": acnn.acnn_base,
    "vgg16": vgg.vgg16,
    "resnet50": resnet.resnet50,
    "deit_small": vit.deit_small,
    "swin_small": swin.swin_small,
}

NAMES = tuple(_BUILDERS)


def create(name: str, *, num_classes: int, rngs: nnx.Rngs,
           dtype=jnp.float32, param_dtype=jnp.float32,
           **overrides) -> nnx.Module:
  """Builds the model ``name`` (one of ``NAMES``) for ``num_classes`` classes.

  ``dtype`` is the computation dtype of every conv, dense, attention and norm
  layer and ``param_dtype`` that of the parameters (Flax's convention):
  ``dtype=jnp.bfloat16`` keeps float32 parameters and runs the convs and
  matmuls in bfloat16 with float32 accumulation, norm statistics and
  attention softmax in float32 (:func:`common.set_dtypes`). The logits come
  out in ``dtype``; the losses of ``bort_jax.train`` cast them to float32.

  ``overrides`` go to the model's builder: ``width_multiplier`` and
  ``min_channels`` for every model (each width the multiplier scales gets
  ``max(round(width · width_multiplier), min(width, min_channels))``
  channels, :func:`common.scale_width`; the default floor 1 changes nothing),
  ``in_channels``/``image_size`` where the input shape fixes a layer size,
  and depth overrides for the deep models.

  Args:
    name: one of ``NAMES`` (``"lenet"``, ``"acnn_small_mnist"``, ...).
    num_classes: number of logits.
    rngs: ``nnx.Rngs`` for the parameters (and dropout / drop path).
    dtype: computation dtype.
    param_dtype: parameter dtype.
    **overrides: keyword arguments of the model's builder (see above).

  Returns:
    An ``nnx.Module`` mapping (B, H, W, C) images to (B, num_classes) logits.

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from bort_jax import models
    >>> model = models.create("lenet", num_classes=10, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 28, 28, 1))).shape
    (2, 10)
    >>> model.layer_names  # the convs the explainers read
    ('conv1', 'conv2')
  """
  if name not in _BUILDERS:
    raise ValueError(f"unknown model {name!r}; expected one of {NAMES}.")
  model = _BUILDERS[name](num_classes=num_classes, rngs=rngs, **overrides)
  if (jnp.dtype(dtype), jnp.dtype(param_dtype)) != (jnp.float32, jnp.float32):
    common.set_dtypes(model, dtype, param_dtype)
  return model


__all__ = ["NAMES", "ConvClassifier", "LayerOutput", "create",
           "export_pretrained", "load_pretrained", "logits", "predict"]
