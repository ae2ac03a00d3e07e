"""bort_jax against a PyTorch Bort-S on the same accelerator, same models.

The authors released Bort as a PyTorch optimizer that walks the parameters
in Python and updates each weight eagerly. ``TorchBortSGD`` below is that
algorithm written from the paper (Eq. 11, ``Δ = (W Wᵀ − I) W`` for every
conv/linear weight, then SGD with weight decay and momentum), the Gram taken
on the smaller side of ``W`` as bort_jax does. This script times, on one GPU
(or the CPU), for ACNN-Small (Table 4, MNIST, paper width) and ResNet50:

1. ``correction``: the same random conv5 kernel through ``bort_jax`` and the
   PyTorch formula at full float32 precision; prints the largest difference.
2. ``optimizer``: one optimizer step over the model's parameters (random
   gradients): ``bort_jax.bort_sgd`` (jitted, donated) vs ``TorchBortSGD``.
3. ``train``: a whole training step (forward, backward, optimizer; cross
   entropy, random data) with SGD and with Bort-S: the ``bort_jax.train``
   step vs ``torchvision``/an ``nn.Sequential`` ACNN-Small with
   ``torch.optim.SGD`` / ``TorchBortSGD``, channels-last and
   ``cudnn.benchmark``, eager and ``torch.compile``d, at two precisions:
   ``tf32`` (TF32 allowed in both, JAX's default on GPUs) and ``amp``
   (PyTorch bf16 autocast vs bort_jax ``compute_dtype=bfloat16``). Each row
   gives bort_jax's speed-up over the faster PyTorch variant and its MFU:
   XLA's FLOPs of the step per second over the matmul rate of the
   precision's dtype measured in the same run (4096³, JAX).

    python -m benchmarks.bench_torch [--models acnn_small_mnist,resnet50]
        [--steps 20] [--precisions tf32,amp] [--optimizers bort_sgd,sgd]
        [--batch_sizes 128,256] [--no_compile] [--json out.json]

``train`` rows are written to the JSON as they fill: PyTorch eager and
bort_jax for every row first, then the ``torch.compile`` columns, so a time
limit leaves what was measured.
``--image_size 32 --gemm_size 256`` are smoke-test sizes for the CPU
(``bash benchmarks/gpu_session.sh smoke``); without a GPU the JSON's
``env`` says so and ``cudnn.benchmark`` is not set.

Needs ``torch`` (and ``torchvision`` for ResNet50), which ``requirements.txt``
does not install.
"""

from __future__ import annotations

import argparse
import json
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import bench_train
from benchmarks.results import write_json
from benchmarks.timing import gemm_rate, seconds_per_step
import bort_jax
from bort_jax.train import state as state_lib
from experiments import _cli
from bort_jax.train import recipes

PARTS = ("correction", "optimizer", "train")

# model: (bench config, image shape HWC, batch size)
SETUPS = {
    "acnn_small_mnist": (lambda opt: recipes.table1("mnist", "acnn_small", opt),
                         (28, 28, 1), 256),
    "resnet50": (lambda opt: recipes.imagenet("resnet50", opt),
                 (224, 224, 3), 128),
}


def torch_model(name: str):
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  if name == "resnet50":
    import torchvision  # pylint: disable=g-import-not-at-top
    return torchvision.models.resnet50(num_classes=1000)
  if name == "acnn_small_mnist":
    layers, fan_in = [], 1
    for spec in bort_jax.models.acnn.ACNN_SMALL_MNIST:
      layers.append(nn.Conv2d(fan_in, spec.features, spec.kernel_size,
                              spec.strides, spec.padding))
      if spec.relu:
        layers.append(nn.ReLU())
      fan_in = spec.features
    return nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                         nn.Linear(fan_in, 10))
  raise ValueError(f"no PyTorch model for {name!r}; have {sorted(SETUPS)}.")


def torch_bort_sgd_class():
  import torch  # pylint: disable=g-import-not-at-top

  class TorchBortSGD(torch.optim.Optimizer):
    """SGD on ``g + λ·Δ(W) + wd·W`` for weights with ≥ 2 dims (Eq. 11), the
    authors' per-parameter eager loop; ``g + wd·W`` for the others."""

    def __init__(self, params, lr, lam, weight_decay=0.0, momentum=0.0):
      super().__init__(params, dict(lr=lr, lam=lam, weight_decay=weight_decay,
                                    momentum=momentum))

    @staticmethod
    def correction(weight):
      w = weight.reshape(weight.shape[0], -1)
      if w.shape[0] <= w.shape[1]:
        delta = (w @ w.T) @ w - w
      else:
        delta = w @ (w.T @ w) - w
      return delta.reshape(weight.shape)

    @torch.no_grad()
    def step(self):
      for group in self.param_groups:
        for p in group["params"]:
          if p.grad is None:
            continue
          d_p = p.grad.add(p, alpha=group["weight_decay"])
          if p.dim() >= 2 and group["lam"]:
            d_p.add_(self.correction(p), alpha=group["lam"])
          if group["momentum"]:
            state = self.state[p]
            if "momentum_buffer" not in state:
              state["momentum_buffer"] = d_p.clone()
            else:
              state["momentum_buffer"].mul_(group["momentum"]).add_(d_p)
            d_p = state["momentum_buffer"]
          p.add_(d_p, alpha=-group["lr"])

  return TorchBortSGD


def _torch_device():
  import torch  # pylint: disable=g-import-not-at-top
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _torch_sync():
  import torch  # pylint: disable=g-import-not-at-top
  if torch.cuda.is_available():
    torch.cuda.synchronize()


def check_correction() -> dict:
  """bort_jax's Δ of a conv5-shaped kernel vs the PyTorch formula, float32
  at full precision on both sides."""
  import torch  # pylint: disable=g-import-not-at-top
  kernel = np.asarray(jax.random.normal(jax.random.key(0), (3, 3, 864, 2592))
                      / np.sqrt(3 * 3 * 864), np.float32)
  with jax.default_matmul_precision("highest"):
    ours = np.asarray(jax.jit(bort_jax.bort_correction)(jnp.asarray(kernel)))
  torch.backends.cuda.matmul.allow_tf32 = False
  weight = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()).to(
      _torch_device())
  theirs = torch_bort_sgd_class().correction(weight).cpu().numpy()
  theirs = theirs.transpose(2, 3, 1, 0)
  scale = float(np.abs(theirs).max())
  return {"max_abs_diff": float(np.abs(ours - theirs).max()),
          "max_abs_value": scale,
          "relative": float(np.abs(ours - theirs).max()) / scale}


def torch_optimizer_seconds(name: str, steps: int, repeats: int) -> list[float]:
  """Seconds per ``TorchBortSGD.step()`` over ``name``'s parameters."""
  import torch  # pylint: disable=g-import-not-at-top
  config = SETUPS[name][0]("bort_sgd")
  model = torch_model(name).to(_torch_device())
  params = list(model.parameters())
  for p in params:
    p.grad = torch.randn_like(p) * 1e-3
  optimizer = torch_bort_sgd_class()(
      params, lr=config.learning_rate, lam=config.lam,
      weight_decay=config.weight_decay, momentum=config.momentum)

  def run_steps(n):
    for _ in range(n):
      optimizer.step()

  times = seconds_per_step(run_steps, steps, repeats, _torch_sync, warmup=2)
  del model, params, optimizer
  if torch.cuda.is_available():
    torch.cuda.empty_cache()
  return times


def jax_optimizer_seconds(name: str, steps: int, repeats: int) -> list[float]:
  """Seconds per jitted, donated ``bort_jax.bort_sgd`` step over ``name``'s
  parameters."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  config = SETUPS[name][0]("bort_sgd")
  model = state_lib.create_model(config)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
  tx = bort_jax.bort_sgd(config.learning_rate, lam=config.lam,
                         momentum=config.momentum,
                         weight_decay=config.weight_decay)

  def update(params, opt_state, grads):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  update = jax.jit(update, donate_argnums=(0, 1))
  carry = [params, tx.init(params)]

  def run_steps(n):
    for _ in range(n):
      carry[0], carry[1] = update(carry[0], carry[1], grads)

  return seconds_per_step(run_steps, steps, repeats,
                          lambda: jax.block_until_ready(carry), warmup=2)


def bench_optimizer_step(name: str, steps: int, repeats: int) -> dict:
  torch_times = torch_optimizer_seconds(name, steps, repeats)
  jax_times = jax_optimizer_seconds(name, steps, repeats)
  return {"model": name, "torch_ms": 1e3 * min(torch_times),
          "jax_ms": 1e3 * min(jax_times),
          "speedup": min(torch_times) / min(jax_times)}


# Precision setups of the train part: (PyTorch, bort_jax compute_dtype).
#   tf32: float32 with TF32 matmuls/convs on both sides (JAX's GPU default).
#   amp:  what a PyTorch user runs for speed, bf16 autocast + channels_last +
#         cudnn.benchmark; bort_jax with compute_dtype=bfloat16 (float32
#         params and optimizer state on both sides).
PRECISIONS = ("tf32", "amp")
# Bort-S first: the target (BENCHMARKS.md) compares the Bort-S steps.
OPTIMIZERS = ("bort_sgd", "sgd")


def torch_train_seconds(name: str, optimizer: str, batch_size: int,
                        precision: str, compiled: bool, steps: int,
                        repeats: int, image_shape=None) -> list[float]:
  """Seconds per PyTorch training step, eager or ``torch.compile``d model."""
  import torch  # pylint: disable=g-import-not-at-top
  config = SETUPS[name][0](optimizer)
  h, w, c = image_shape or SETUPS[name][1]
  device = _torch_device()
  model = torch_model(name).to(device).to(memory_format=torch.channels_last)
  images = torch.randn(batch_size, c, h, w, device=device).to(
      memory_format=torch.channels_last)
  labels = torch.randint(0, config.num_classes, (batch_size,), device=device)
  if optimizer == "bort_sgd":
    torch_optimizer = torch_bort_sgd_class()(
        model.parameters(), lr=config.learning_rate, lam=config.lam,
        weight_decay=config.weight_decay, momentum=config.momentum)
  else:
    torch_optimizer = torch.optim.SGD(
        model.parameters(), lr=config.learning_rate, momentum=config.momentum,
        weight_decay=config.weight_decay)
  forward = torch.compile(model) if compiled else model
  loss_fn = torch.nn.CrossEntropyLoss()
  amp = precision == "amp"

  def torch_steps(n):
    for _ in range(n):
      torch_optimizer.zero_grad(set_to_none=True)
      with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=amp):
        loss = loss_fn(forward(images), labels)
      loss.backward()
      torch_optimizer.step()

  times = seconds_per_step(torch_steps, steps, repeats, _torch_sync,
                           warmup=3 if compiled else 2)
  del model, forward, torch_optimizer, images, labels
  if torch.cuda.is_available():
    torch.cuda.empty_cache()
  return times


def jax_train(name: str, optimizer: str, batch_size: int, precision: str,
              steps: int, repeats: int, config_overrides=None,
              image_shape=None) -> dict:
  """The ``bort_jax.train`` step's seconds per step (``times``) and XLA's
  FLOPs per step (``flops``) at ``precision``'s compute dtype, on images of
  ``image_shape`` (HWC; default the model's)."""
  image_shape = image_shape or SETUPS[name][1]
  config = SETUPS[name][0](optimizer)
  config.batch_size = batch_size
  config.compute_dtype = "bfloat16" if precision == "amp" else "float32"
  for key, value in (config_overrides or {}).items():
    config[key] = value
  train_step, state, batch = bench_train.build_step(config, "gemm",
                                                    image_shape)
  cost = train_step.lower(state, batch).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  times, _ = bench_train.time_steps(train_step, state, batch, steps, repeats)
  return {"times": times, "flops": float(cost.get("flops", float("nan")))}


def bench_train_step(name: str, optimizer: str, batch_size: int,
                     precision: str, steps: int, repeats: int,
                     peak_flops: float, image_shape=None):
  """One row, yielded as it fills: PyTorch eager, then bort_jax at
  ``precision``. ``mfu`` is bort_jax's XLA FLOPs per second over
  ``peak_flops`` (the measured matmul rate of the precision's dtype)."""
  row = {"model": name, "optimizer": optimizer, "batch_size": batch_size,
         "precision": precision,
         "image_shape": list(image_shape or SETUPS[name][1])}
  torch_times = torch_train_seconds(name, optimizer, batch_size, precision,
                                    False, steps, repeats, image_shape)
  row["torch_eager_images_per_sec"] = batch_size / min(torch_times)
  yield row
  jax_result = jax_train(name, optimizer, batch_size, precision, steps,
                         repeats, image_shape=image_shape)
  jax_time = min(jax_result["times"])
  row.update({
      "jax_images_per_sec": batch_size / jax_time,
      "jax_ms_median": 1e3 * statistics.median(jax_result["times"]),
      "speedup_vs_torch_eager": min(torch_times) / jax_time,
      "speedup_vs_best_torch": min(torch_times) / jax_time,
      "jax_tflops": jax_result["flops"] / jax_time / 1e12,
      "mfu": jax_result["flops"] / jax_time / peak_flops})
  yield row


def torch_compile_columns(row: dict, steps: int, repeats: int) -> dict:
  """``row``'s setup with the ``torch.compile``d PyTorch model: its images/s
  and bort_jax's speed-ups over it and over the faster PyTorch variant, or
  ``torch_compile_error``."""
  image_shape = tuple(row["image_shape"])
  try:
    seconds = min(torch_train_seconds(
        row["model"], row["optimizer"], row["batch_size"], row["precision"],
        True, steps, repeats, image_shape))
  except Exception as error:  # pylint: disable=broad-except
    return {"torch_compile_error": f"{type(error).__name__}: {error}"[:300]}
  compiled = row["batch_size"] / seconds
  columns = {"torch_compile_images_per_sec": compiled}
  if "jax_images_per_sec" in row:
    best = max(compiled, row["torch_eager_images_per_sec"])
    columns.update(speedup_vs_torch_compile=row["jax_images_per_sec"] / compiled,
                   speedup_vs_best_torch=row["jax_images_per_sec"] / best)
  return columns


def parse_args(argv=None) -> argparse.Namespace:
  parser = _cli.ArgumentParser(__doc__)
  comma = bench_train.comma_choices
  parser.add_argument("--models", default="acnn_small_mnist,resnet50",
                      type=comma(SETUPS, "models"))
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--parts", default=",".join(PARTS),
                      type=comma(PARTS, "parts"))
  parser.add_argument("--json", default=None)
  parser.add_argument("--precisions", default=",".join(PRECISIONS),
                      type=comma(PRECISIONS, "precisions"),
                      help="train part: tf32 and/or amp (bf16)")
  parser.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                      type=comma(OPTIMIZERS, "optimizers"),
                      help="train part, in this order")
  parser.add_argument("--batch_sizes", default=None,
                      type=lambda text: [int(b) for b in text.split(",")],
                      help="train part: comma list overriding each model's "
                      "batch size (e.g. 128,256)")
  parser.add_argument("--image_size", type=int, default=None,
                      help="train part: square images of this side instead "
                      "of the model's (224 / 28); a smoke-test size")
  parser.add_argument("--gemm_size", type=int, default=4096,
                      help="n of the n³ matmul whose rate MFU divides by")
  parser.add_argument("--no_compile", action="store_true",
                      help="skip the torch.compile rows")
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ModuleNotFoundError:
    raise SystemExit("bench_torch needs PyTorch, which requirements.txt does "
                     "not install: pip install torch torchvision") from None
  gpu = torch.cuda.is_available()
  env = {"jax": jax.__version__, "jax_devices": [str(d) for d in jax.devices()],
         "torch": torch.__version__,
         "torch_device": torch.cuda.get_device_name() if gpu else "cpu",
         "gpu": gpu,
         # cudnn.benchmark autotunes cuDNN convolutions; without a GPU there is
         # none, and AMP is bf16 autocast on the CPU.
         "cudnn_benchmark": gpu if gpu else "no GPU: not set"}
  print(json.dumps(env), flush=True)
  results = {"env": env}

  def save():  # whole or not at all: a time limit may kill the process
    write_json(args.json, results)

  def record(key, fn, *fn_args, row=None):
    """Appends ``fn``'s row to ``results[key]`` (or adds to ``row``, one
    already there) and writes the JSON each time the row grows (``fn``
    returns a dict or yields it as it fills); returns the row."""
    if row is None:
      row = {}
      results.setdefault(key, []).append(row)
    try:
      out = fn(*fn_args)
      for partial in [out] if isinstance(out, dict) else out:
        row.update(partial)
        save()
    except Exception as error:  # pylint: disable=broad-except
      row["error"] = f"{type(error).__name__}: {error}"[:500]
    save()
    print(key, json.dumps(row), flush=True)
    return row

  if "correction" in args.parts:
    record("correction", check_correction)
  # TF32 in PyTorch's matmuls and convs, as JAX's default precision on GPUs.
  torch.backends.cuda.matmul.allow_tf32 = True
  torch.backends.cudnn.allow_tf32 = True
  if gpu:
    torch.backends.cudnn.benchmark = True
  peaks = {}
  if "train" in args.parts:
    dtypes = {"tf32": jnp.float32, "amp": jnp.bfloat16}
    peaks = {p: gemm_rate(args.gemm_size, dtype=dtypes[p])
             for p in args.precisions}
    results["peak_tflops"] = {k: v / 1e12 for k, v in peaks.items()}
    results["gemm_size"] = args.gemm_size
    print(f"matmul TFLOP/s ({args.gemm_size}³, JAX):",
          json.dumps(results["peak_tflops"]), flush=True)
    save()
  image_shape, rows = None, []
  for name in args.models:
    if "optimizer" in args.parts:
      record("optimizer", bench_optimizer_step, name, args.steps, args.repeats)
    if "train" in args.parts:
      if args.image_size:
        image_shape = (args.image_size, args.image_size, SETUPS[name][1][2])
      for precision in args.precisions:
        for batch_size in args.batch_sizes or [SETUPS[name][2]]:
          for optimizer in args.optimizers:
            rows.append(record("train", bench_train_step, name, optimizer,
                               batch_size, precision, args.steps, args.repeats,
                               peaks[precision], image_shape))
  # torch.compile last (the slowest to build), once every eager and bort_jax
  # number is written: a time limit cuts these columns first.
  for row in [] if args.no_compile else rows:
    if "torch_eager_images_per_sec" in row:
      record("train", torch_compile_columns, row, args.steps, args.repeats,
             row=row)


if __name__ == "__main__":
  main()
