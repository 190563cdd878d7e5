#!/usr/bin/env bash
# Every GPU check of gist-ray in one run, sized to finish in about 4 minutes on one H100/H200 (238 s on an H200):
# the tests marked `gpu` (bf16 autocast, fp16 with its grad scaler, a step loop without host syncs, and DDP over
# NCCL where Ray is installed), then the GPU benchmarks of docs/benchmarks.md with fewer repeats and epochs. Prints every figure; each step's log also goes
# to $OUT (default runs/gpu-checks). Usage: bash bench/gpu_checks.sh   (PYTHON=... to pick the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-checks}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step() {  # step NAME SECONDS CMD...: run CMD under a time limit, log it, say how it ended
  local name=$1 limit=$2
  shift 2
  echo "=== $name: $* ($(date +%T), limit ${limit}s)"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  echo "=== $name: rc=${PIPESTATUS[0]} ($(date +%T))"
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
"$PY" -c "import sys, torch, timm; print('python', sys.version.split()[0], 'torch', torch.__version__,
'timm', timm.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
if "$PY" -c "import ray" 2>/dev/null; then deselect=(); else deselect=(-k "not nccl"); echo "no Ray here: the NCCL test is left out"; fi
step gpu-tests 90 "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider -rA "${deselect[@]}"
step gist-overhead 100 "$PY" bench/gist_overhead.py --device cuda --backbones vit_s,vit_b \
  --methods gist_adapter,lora,vpt_shallow --batch 64 --steps 20 --repeats 3
step throughput 110 "$PY" bench/throughput.py --device cuda --backbones vit_s,vit_b,vit_l \
  --methods gist_adapter,lora,vpt_deep --batch 128 --epochs 3 --steps 10
step vtab-run 80 "$PY" bench/vtab_run.py --device cuda --backbone vit_b --method gist_adapter --workers 8 \
  --epochs 10 --n-test 5000
step throughput-compile 80 "$PY" bench/throughput.py --device cuda --backbones vit_b --methods gist_adapter \
  --batch 128 --epochs 3 --steps 10 --compile
