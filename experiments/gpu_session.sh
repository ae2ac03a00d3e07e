#!/usr/bin/env bash
# Every GPU measurement of issue 15 in one device call (about 10 minutes on one
# H200), results under $OUT. The device image has Python 3.12, jax 0.11.2,
# flax 0.12.10, numpy 2.5, torch 2.11 (+ torchvision, timm) and lacks
# ml-collections and tensorboardX, which travel as wheels in .whl/.
#
# Here, once, in the repository root (downloads pure-Python wheels):
#   bash experiments/gpu_session.sh prepare
# Then, with the device tool: run(command="bash experiments/gpu_session.sh",
#   carry=[".whl"], timeout_s=600)
#
# Each part has its own time limit and writes its JSON as it goes, so a part
# that runs out of time still leaves the rows it finished.
set -u

if [[ "${1:-}" == "prepare" ]]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || \
    echo /.whl/ >> "$(git rev-parse --git-common-dir)/info/exclude"
  for wheel in ml-collections==1.1.0 tensorboardX==2.6.5; do
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux2014_x86_64 --platform any \
      -d .whl "$wheel" || exit 1
  done
  ls -l .whl
  exit 0
fi

OUT="${OUT:-/tmp/gpu_session_out}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # PyTorch shares the GPU
LOG="$OUT/gpu_session.log"

part() {  # part NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s) $(date -u +%T)" | tee -a "$LOG"
  timeout "$limit" "$@" 2>&1 | grep -v "^WARNING" | tail -40 | tee -a "$LOG"
  echo "=== $name rc=${PIPESTATUS[0]} $(date -u +%T)" | tee -a "$LOG"
}

{ nvidia-smi -L; python3 -c "import jax, flax, torch, numpy; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__)"; } 2>&1 | tee -a "$LOG"

# 1. ResNet50 train step, bf16 bort_jax vs PyTorch AMP (eager and
#    torch.compile), SGD and Bort-S, batch 128 and 256, with MFU.
part bench_torch_amp 300 python3 -m experiments.bench_torch --models resnet50 \
  --parts train --precisions amp --batch_sizes 128,256 --steps 20 --repeats 3 \
  --json "$OUT/bench_torch_amp.json"

# 2. The cost of orthogonality_stats vs one Bort-S update, and the Bort term.
part bench_optimizer 60 python3 -m experiments.bench_optimizer \
  --models acnn_small_mnist,resnet50 --repeats 5 \
  --json "$OUT/bench_optimizer.json"

# 3. Goodput of a whole experiments.train run: the ACNN-Small Table 1 recipe
#    at paper width, 10 of its 40 epochs, on 50k synthetic 28x28 images
#    (MNIST cannot be downloaded there).
part bench_goodput 130 python3 -m experiments.bench_goodput \
  --config table1_mnist_acnn_small_bort_sgd --width 1.0 --epochs 10 \
  --dataset synthetic --json "$OUT/bench_goodput.json"

# 4. The ImageNet train transform on the host's 16 cores: the old float host
#    path vs the uint8 host half, serial and 16 threads, and the device half
#    (finish_batch) per image on the GPU.
part bench_input 60 python3 -m experiments.bench_input --images 256 --repeats 2 \
  --json "$OUT/bench_input.json"
ls -l "$OUT"
