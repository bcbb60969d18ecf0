#!/usr/bin/env bash
# benchmarks/bench_quality.py on a GPU machine, as one command (several recipes share the card).
#
#   here, once:   benchmarks/gpu_wheels.sh          (the wheels the GPU image lacks, into .whl/)
#   on the GPU:   bash benchmarks/gpu_quality.sh    (with .whl carried along)
#
# bench_quality.py synthesizes the bench preset if missing, trains and evaluates the variants of benchmarks/configs/quality.yaml
# (QUALITY_VARIANTS to choose; QUALITY_PARALLEL at a time), and leaves in $OUT (or bench_out/gpu_quality):
# quality.md / quality.json, the variants' logs and metrics (quality_runs.tar.gz), and the best
# checkpoint of QUALITY_KEEP as float16 weights in parts of 15 MB (reassemble with cat, load with
# marsdust.models.load_model).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench_out/gpu_quality}
work=${QUALITY_WORK:-/tmp/gpu_quality}
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv 2>&1 | tee "$out/env.txt"
variants=${QUALITY_VARIANTS:+--variants $QUALITY_VARIANTS}
timeout "${QUALITY_TIMEOUT:-420}" "$python" benchmarks/bench_quality.py --accelerator gpu --parallel "${QUALITY_PARALLEL:-8}" \
    --data "$work/bench" --out "$work/q" $variants
rc=$?
cp "$work/q/quality.md" "$work/q/quality.json" "$out/" 2>/dev/null
(cd "$work/q" && tar czf "$out/quality_runs.tar.gz" --exclude='*.ckpt' --exclude='*.png' .)
keep=${QUALITY_KEEP:-}
if [ -n "$keep" ] && [ -f "$work/q/runs/$keep/checkpoints/best.ckpt" ]; then
    "$python" - "$work/q/runs/$keep/checkpoints/best.ckpt" "$work/keep.ckpt" <<'PY'
import sys, torch
from marsdust.models import load_model, save_checkpoint
model = load_model(sys.argv[1], map_location="cpu")
save_checkpoint(model.half(), sys.argv[2])
PY
    split -b 15m "$work/keep.ckpt" "$out/${keep}_fp16.ckpt.part-"
fi
exit $rc
