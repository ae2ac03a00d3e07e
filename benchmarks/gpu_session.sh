#!/usr/bin/env bash
# Every GPU measurement (mixed precision, goodput, input pipeline) in one
# device call, results under $OUT.
#
#   bash benchmarks/gpu_session.sh prepare            # here, once: the wheels
#   bash benchmarks/gpu_session.sh [run] [PART...]    # on the GPU (all parts,
#                                                      # or only those named)
#   PYTHON=/tmp/torchenv/bin/python bash benchmarks/gpu_session.sh smoke
#   DRY_RUN=1 bash benchmarks/gpu_session.sh [smoke]  # print the parts only
#
# With the device tool: run(command="bash benchmarks/gpu_session.sh",
#   carry=[".whl"], timeout_s=600). The device image has Python 3.12, jax
# 0.11.2, flax 0.12.10, numpy 2.5, torch 2.11 (+ torchvision, timm) and lacks
# ml-collections and tensorboardX (they travel as wheels in .whl/, made by
# `prepare`), tensorflow-datasets and saliency (no part needs them).
#
# The parts, most important first, with what they do on one H200 and the
# minutes expected (limit in brackets; the limits add up to 8.7 minutes, plus
# ~0.3 for the wheels and the versions line, under the 10-minute call):
#
# 1. bench_torch_bort [4.5]: ResNet50 Bort-S train step (Table 6 row), batch
#    128 and 256: PyTorch AMP eager (bf16 autocast, channels_last,
#    cudnn.benchmark; 2 warm-up + 3x20 steps) and bort_jax
#    compute_dtype=bfloat16 (one XLA compile, ~0.5 min each, + 61 steps) for
#    both batches (~1.7 min), then torch.compile'd PyTorch for both (inductor,
#    ~1-1.5 min each); images/s, speed-up over the best PyTorch, MFU against
#    the bf16 4096³ matmul rate measured first. ~4 min. Rows are written to
#    the JSON as they fill, so a cut loses torch.compile columns first.
# 2. bench_goodput [1.3]: a whole experiments.train run of the ACNN-Small
#    Table 1 recipe at paper width, 10 of its 40 epochs of 50k synthetic
#    28x28 images (1,950 steps of 256; MNIST cannot be downloaded there),
#    wall clock split into compile, steps, evaluation, diagnostics,
#    checkpointing, input wait. ~1 min (a 40-epoch run took 135 s).
# 3. bench_input [0.8]: the ImageNet train transform on the host's 16 cores,
#    256 JPEGs, old float path vs the uint8 host half, serial and 16
#    threads, best of 2, deit and cnn recipes; finish_batch per image on the
#    GPU. ~0.6 min.
# 4. bench_torch_sgd [1.3]: the ResNet50 row with SGD at batch 128, PyTorch
#    AMP eager vs bort_jax bf16 (no torch.compile: part 1 has it), the setup
#    of the PyTorch comparison table. ~1 min (one XLA compile); batch 256 would need
#    another ~0.8 min.
# 5. bench_optimizer [0.8]: one Bort-S update vs SGD's, and
#    orthogonality_stats vs one Bort-S update, ACNN-Small and ResNet50 at
#    paper width, best of 5. ~0.5 min.
#
# smoke runs the same parts and code paths on this CPU at toy sizes (batch
# 2-4, one step, one repeat, narrow models; torch.compile on ACNN-Small, since
# ResNet50's takes minutes on 2 cores, and ResNet50 at 32 px without it) in
# about 3 minutes on 2 cores; PYTHON must have torch and torchvision (see
# BENCHMARKS.md). What only a GPU has degrades there and says so in the
# JSON: no cudnn.benchmark ("no GPU: not set"), AMP is CPU bf16 autocast.
# tensorflow_datasets and saliency are made unimportable, as on the device.
set -u

MODE=run
if [[ "${1:-}" == "prepare" || "${1:-}" == "smoke" || "${1:-}" == "run" ]]; then
  MODE=$1
  shift
fi
ONLY=("$@")
PARTS=(bench_torch_bort bench_goodput bench_input bench_torch_sgd bench_optimizer)
for name in "${ONLY[@]}"; do
  [[ " ${PARTS[*]} " == *" $name "* ]] || {
    echo "unknown part '$name'; the parts: ${PARTS[*]}" >&2; exit 2; }
done
PYTHON="${PYTHON:-python3}"
DRY_RUN="${DRY_RUN:-}"

if [[ "$MODE" == "prepare" ]]; then
  grep -qx '/.whl/' "$(git rev-parse --git-common-dir)/info/exclude" 2>/dev/null || \
    echo /.whl/ >> "$(git rev-parse --git-common-dir)/info/exclude"
  for wheel in ml-collections==1.1.0 tensorboardX==2.6.5; do
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux2014_x86_64 --platform any \
      -d .whl "$wheel" || exit 1
  done
  ls -l .whl
  exit 0
fi

if [[ "$MODE" == "smoke" ]]; then
  OUT="${OUT:-/tmp/gpu_session_smoke}"
else
  OUT="${OUT:-/tmp/gpu_session_out}"
fi
LOG="$OUT/gpu_session.log"
# XLA compiles of the bench_torch parts survive for a rerun on a warm machine
# (not for bench_goodput, which measures its compile time).
JAX_CACHE="/tmp/gpu_session_jax_cache_$MODE"

part() {  # part NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  if (( ${#ONLY[@]} )) && [[ ! " ${ONLY[*]} " == *" $name "* ]]; then
    return 0
  fi
  if [[ -n "$DRY_RUN" ]]; then
    printf '%s\t%s\t' "$name" "$limit"
    printf '%q ' "$@"
    printf '\n'
    return 0
  fi
  echo "=== $name (limit ${limit}s) $(date -u +%T)" | tee -a "$LOG"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | grep --line-buffered -v "^WARNING" \
    | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "=== $name rc=$rc $(date -u +%T)" | tee -a "$LOG"
  (( rc == 0 )) || FAILED+=("$name (rc $rc)")
}
FAILED=()

if [[ -z "$DRY_RUN" ]]; then
  mkdir -p "$OUT"
  export PYTHONPATH="$PWD"
  if compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "/tmp/gpu_session_site_$MODE" .whl/*.whl || exit 1
    PYTHONPATH="/tmp/gpu_session_site_$MODE:$PYTHONPATH"
  fi
  if [[ "$MODE" == "smoke" ]]; then
    # Packages the device image lacks fail to import here too.
    blocked="/tmp/gpu_session_blocked"
    for package in tensorflow_datasets saliency; do
      mkdir -p "$blocked/$package"
      echo "raise ModuleNotFoundError('$package is not in the GPU device image')" \
        > "$blocked/$package/__init__.py"
    done
    PYTHONPATH="$blocked:$PYTHONPATH"
    "$PYTHON" -c "import torch, torchvision" || {
      echo "smoke needs PYTHON=<a python with torch and torchvision>" >&2; exit 1; }
  fi
  export PYTHONUNBUFFERED=1
  export XLA_PYTHON_CLIENT_PREALLOCATE=false  # PyTorch shares the GPU
  { if command -v nvidia-smi > /dev/null; then nvidia-smi -L; else echo "no GPU (no nvidia-smi)"; fi
    "$PYTHON" -c "import jax, flax, torch, numpy; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__)"
  } 2>&1 | grep -v "^WARNING" | tee -a "$LOG"
fi

bench_torch=(env "JAX_COMPILATION_CACHE_DIR=$JAX_CACHE" "$PYTHON" -m benchmarks.bench_torch)
if [[ "$MODE" == "smoke" ]]; then
  # torch.compile of ResNet50 takes minutes on 2 CPU cores: part 1 compiles
  # ACNN-Small (28 px), part 4 runs ResNet50 (32 px) without it.
  toy=(--batch_sizes 2 --steps 1 --repeats 1 --gemm_size 256)
  part bench_torch_bort 240 "${bench_torch[@]}" --models acnn_small_mnist \
    --parts train --precisions amp --optimizers bort_sgd "${toy[@]}" \
    --json "$OUT/bench_torch_bort.json"
  part bench_goodput 120 "$PYTHON" -m benchmarks.bench_goodput \
    --config table1_mnist_acnn_small_bort_sgd --width 0.05 --epochs 0.003 \
    --dataset synthetic --json "$OUT/bench_goodput.json"
  part bench_input 120 "$PYTHON" -m benchmarks.bench_input --images 8 --batch 4 \
    --repeats 1 --json "$OUT/bench_input.json"
  part bench_torch_sgd 180 "${bench_torch[@]}" --models resnet50 --parts train \
    --precisions amp --optimizers sgd --no_compile "${toy[@]}" --image_size 32 \
    --json "$OUT/bench_torch_sgd.json"
  part bench_optimizer 120 "$PYTHON" -m benchmarks.bench_optimizer \
    --models acnn_small_mnist --width 0.125 --repeats 1 \
    --json "$OUT/bench_optimizer.json"
else
  part bench_torch_bort 270 "${bench_torch[@]}" --models resnet50 --parts train \
    --precisions amp --optimizers bort_sgd --batch_sizes 128,256 --steps 20 \
    --repeats 3 --json "$OUT/bench_torch_bort.json"
  part bench_goodput 80 "$PYTHON" -m benchmarks.bench_goodput \
    --config table1_mnist_acnn_small_bort_sgd --width 1.0 --epochs 10 \
    --dataset synthetic --json "$OUT/bench_goodput.json"
  part bench_input 50 "$PYTHON" -m benchmarks.bench_input --images 256 \
    --repeats 2 --json "$OUT/bench_input.json"
  part bench_torch_sgd 75 "${bench_torch[@]}" --models resnet50 --parts train \
    --precisions amp --optimizers sgd --no_compile --batch_sizes 128 \
    --steps 20 --repeats 3 --json "$OUT/bench_torch_sgd.json"
  part bench_optimizer 45 "$PYTHON" -m benchmarks.bench_optimizer \
    --models acnn_small_mnist,resnet50 --repeats 5 \
    --json "$OUT/bench_optimizer.json"
fi
[[ -n "$DRY_RUN" ]] && exit 0
ls -l "$OUT"
# Every JSON, and any error recorded inside one (a torch.compile that failed
# is caught and written, not raised): the run fails if a part did.
"$PYTHON" - "$OUT" <<'EOF' 2>&1 | tee -a "$LOG"
import json, pathlib, sys
def errors(node, path=""):
  if isinstance(node, dict):
    for key, value in node.items():
      if "error" in key:
        yield f"{path}/{key}: {value}"
      yield from errors(value, f"{path}/{key}")
  elif isinstance(node, list):
    for i, value in enumerate(node):
      yield from errors(value, f"{path}[{i}]")
found = [f"{p.name}{e}" for p in sorted(pathlib.Path(sys.argv[1]).glob("*.json"))
         for e in errors(json.loads(p.read_text()))]
print("\n".join(["errors in the JSON:"] + found) if found else "no errors in the JSON")
sys.exit(1 if found else 0)
EOF
(( PIPESTATUS[0] == 0 )) || FAILED+=("errors in the JSON")
if (( ${#FAILED[@]} )); then
  echo "FAILED: ${FAILED[*]}" | tee -a "$LOG"
  exit 1
fi
