#!/bin/bash
# Usage: run.sh SRC OUT - the same short pipeline (synth ci, 6 training steps, detect, evaluate) run with the
# marsdust code in SRC (a src/ folder, e.g. of a git worktree of an older commit). Compare two such outputs
# with compare.py OLD NEW: a restructuring must leave every product identical.
set -e
SRC=$1; OUT=$2; PY=${PYTHON:-python}
export PYTHONPATH=$SRC OMP_NUM_THREADS=1
rm -rf $OUT; mkdir -p $OUT
$PY -m marsdust synth $OUT/data --preset ci --seed 0 --quiet
$PY -m marsdust train --data $OUT/data --model dustrcnn --model-preset small_cpu --map-res-deg 1.6 --max-steps 6 \
   --batch-size 2 --val-every 3 --num-workers 0 --seed 0 -o $OUT/run --quiet > $OUT/train.log 2>&1 || { cat $OUT/train.log; exit 1; }
$PY -m marsdust detect $OUT/run/checkpoints/last.ckpt $OUT/data/archive -o $OUT/det --score-threshold 0.0 > $OUT/detect.log 2>&1 || { cat $OUT/detect.log; exit 1; }
$PY -m marsdust evaluate $OUT/run/checkpoints/last.ckpt --data $OUT/data --split test -o $OUT/eval --figures 0 --quiet > $OUT/eval.log 2>&1 || { cat $OUT/eval.log; exit 1; }
