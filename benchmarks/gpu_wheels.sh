#!/usr/bin/env bash
# Download, on this (networked) machine, the wheels that the GPU machine's image lacks, into .whl/
# (ignored by git; carried to the GPU machine by benchmarks/gpu_check.sh's caller, see its header).
#
# The GPU image has Python 3.12 with torch, torchvision, Lightning, numpy, pandas, xarray, scipy,
# scikit-image, pillow, matplotlib, onnxruntime, typer, rich and tqdm, but not these. pyproj,
# openpyxl and geopandas are left out: detect, train and the GPU tests do not import them, and
# the carried tree must stay under 64 MiB (rasterio alone is ~39 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    shapely netCDF4 cftime rasterio affine pycocotools faster-coco-eval
du -sh .whl
ls .whl
