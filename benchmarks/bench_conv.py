"""One conv layer, forward and both gradients: XLA's convolution vs the
im2col matmul of ``bort_jax.models.gemm_conv``, on this machine.

The shapes are ACNN-Small's (Table 4, MNIST, paper width, batch 64) and a few
of ResNet50's (224×224 input, batch 8). For each, the jitted gradient of
``½‖conv(x, W)‖²`` with respect to ``x`` and ``W`` is timed (best of
``--repeats``) with ``lax.conv_general_dilated`` and with ``gemm_conv``, and
both are checked equal. GFLOP/s count every tap (3 × 2·B·H'·W'·k²·C_in·C_out).

    python -m benchmarks.bench_conv [--repeats 3]
"""

from __future__ import annotations


import jax
import numpy as np
from jax import lax

from benchmarks.timing import gemm_rate, seconds_per_step
from bort_jax.models import gemm_conv
from experiments import _cli

# name: (batch, input size, C_in, C_out, kernel, stride, padding)
LAYERS = {
    "acnn conv3 4x4": (64, 13, 24, 288, 4, 1, 1),
    "acnn conv4 2x2/2": (64, 12, 288, 864, 2, 2, 0),
    "acnn conv5 3x3": (64, 6, 864, 2592, 3, 1, 1),
    "resnet stem 7x7/2": (8, 224, 3, 64, 7, 2, 3),
    "resnet layer1 3x3": (8, 56, 64, 64, 3, 1, 1),
    "resnet layer1 1x1": (8, 56, 64, 256, 1, 1, 0),
    "resnet layer3 3x3": (8, 14, 256, 256, 3, 1, 1),
    "resnet layer4 3x3/2": (8, 14, 512, 512, 3, 2, 1),
}

NHWC = ("NHWC", "HWIO", "NHWC")


def _xla(x, w, stride, pad):
  return lax.conv_general_dilated(x, w, (stride, stride), [(pad, pad)] * 2,
                                  dimension_numbers=NHWC)


def _gemm(x, w, stride, pad):
  return gemm_conv.gemm_conv(x, w, (stride, stride), [(pad, pad)] * 2)


def time_layer(batch, size, c_in, c_out, kernel, stride, pad, repeats):
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (batch, size, size, c_in))
  w = jax.random.normal(kw, (kernel, kernel, c_in, c_out)) / np.sqrt(
      kernel * kernel * c_in)
  out = (size + 2 * pad - kernel) // stride + 1
  flops = 3 * 2 * batch * out * out * kernel * kernel * c_in * c_out
  seconds, grads = {}, {}
  for name, conv in (("xla", _xla), ("gemm", _gemm)):
    grad = jax.jit(jax.grad(
        lambda x, w, conv=conv: 0.5 * (conv(x, w, stride, pad) ** 2).sum(),
        argnums=(0, 1)))
    grads[name] = jax.block_until_ready(grad(x, w))  # compiled here
    last = [None]

    def run_steps(count, grad=grad):
      for _ in range(count):
        last[0] = grad(x, w)

    seconds[name] = min(seconds_per_step(
        run_steps, 1, repeats, lambda: jax.block_until_ready(last[0]),
        warmup=0))
  error = max(float(np.abs(a - b).max() / np.abs(b).max())
              for a, b in zip(grads["gemm"], grads["xla"]))
  return flops, seconds, error


def main(argv=None):
  parser = _cli.ArgumentParser(__doc__)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)
  gemm = gemm_rate()
  print(f"{jax.devices()[0].platform}, jax {jax.__version__}; "
        f"GEMM float32 2048^3: {gemm / 1e9:.1f} GFLOP/s")
  print("| layer | batch | GFLOP | xla ms | gemm ms | xla GFLOP/s | "
        "gemm GFLOP/s | speed-up | max rel. diff |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  for name, shape in LAYERS.items():
    flops, seconds, error = time_layer(*shape, args.repeats)
    print(f"| {name} | {shape[0]} | {flops / 1e9:.2f} | "
          f"{1e3 * seconds['xla']:.1f} | {1e3 * seconds['gemm']:.1f} | "
          f"{flops / seconds['xla'] / 1e9:.1f} | "
          f"{flops / seconds['gemm'] / 1e9:.1f} | "
          f"{seconds['xla'] / seconds['gemm']:.2f}× | {error:.1e} |", flush=True)


if __name__ == "__main__":
  main()
