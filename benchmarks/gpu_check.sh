#!/usr/bin/env bash
# The GPU check as one short command, for a session that is lent a GPU machine.
#
#   here, once:    benchmarks/gpu_wheels.sh     (the wheels the GPU image lacks, into .whl/)
#   on the GPU:    bash benchmarks/gpu_check.sh  (with .whl carried along; about 5 minutes)
#   without a GPU: GPU_CHECK_DEVICE=cpu benchmarks/gpu_check.sh   (checks this script's own flow)
#
# 1. the GPU tests (tests/test_gpu.py): detections on the device match the CPU; training steps on
#    the device lower the loss and the checkpoint detects on a CPU;
# 2. benchmarks/bench_detect.py on the device: end to end (read, infer, write) in batches of 8,
#    the model alone at batch 8 and 32, and stock torchvision Mask R-CNN at native resolution.
# Reports go to $OUT (the device tool brings that folder back) or to bench_out/gpu/.
set -uo pipefail
cd "$(dirname "$0")/.."
device=${GPU_CHECK_DEVICE:-cuda}
out=${OUT:-bench_out/gpu}
work=$(mktemp -d)
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ "$device" = cpu ] && python=${PYTHON:-.venv/bin/python}
if [ "$device" != cpu ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
step() { echo "== $1 ($(date -u +%H:%M:%S))"; }

step "environment"
{
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$python" -c "import sys, torch, torchvision; print('python', sys.version.split()[0], 'torch', torch.__version__,
'torchvision', torchvision.__version__, 'cuda available', torch.cuda.is_available())"
} 2>&1 | tee "$out/gpu_env.txt"

step "GPU tests"
MARSDUST_TEST_DEVICE=$device timeout 300 "$python" -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 \
    | tee "$out/gpu_tests.txt"
tests_rc=${PIPESTATUS[0]}

maps=32; stock=3; threads=8
[ "$device" = cpu ] && { maps=3; stock=0; threads=2; }
step "bench_detect on $device, batch 8"
timeout 420 "$python" benchmarks/bench_detect.py --device "$device" --batch-size 8 --maps $maps --stock-maps $stock \
    --also-engines '' --threads $threads --out "$work/b8" && cp "$work/b8/detect.json" "$out/detect_b8.json" \
    && cp "$work/b8/detect.md" "$out/detect_b8.md"
bench_rc=$?
step "model alone on $device, batch 32"
mkdir -p "$work/b32" && ln -s "$work/b8/detect_maps" "$work/b32/detect_maps"
timeout 240 "$python" benchmarks/bench_detect.py --device "$device" --batch-size 32 --maps $maps --stock-maps 0 \
    --also-engines '' --threads $threads --out "$work/b32" && cp "$work/b32/detect.md" "$out/detect_b32.md"
step "done: tests rc $tests_rc, bench rc $bench_rc"
rm -rf "$work"
[ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ]
