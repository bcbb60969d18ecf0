"""What the MDAD v1.1 cube costs ``marsdust detect``: merging N working-grid mask chunks into one cube at MDAD's
native 0.1° (3600 × 1801, the default product) against the same chunks kept on the working grid (``--mask-grid
working``), in the same run: seconds, seconds per map, file size, and both extrapolated to one Mars year of daily
maps (668 sols, the size of one ``MY??/MDADMY??.nc``).

Each synthetic map holds a few storms (spherical caps) and a missing swath, at the detector's working resolution
(0.8° by default). Run from the repository root::

    .venv/bin/python benchmarks/bench_mask_cube.py [--maps 20] [--working-res 0.8] [--out bench_out/mask_cube.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from marsdust.formats.mdad_cube import MDAD_RES_DEG, MaskStep, chunk_grid, merge_mask_chunks, write_mask_chunk
from marsdust.grid import MapGrid
from marsdust.outlines import label_image
from marsdust.synth.discs import cap_mask

SOLS_PER_YEAR = 668


def write_chunks(folder: Path, n_maps: int, grid: MapGrid, seed: int = 0) -> list[Path]:
    """One chunk per map: 1–4 storms of 3°–15° radius, a 20° missing swath."""
    rng = np.random.default_rng(seed)
    chunks = []
    for sol in range(1, n_maps + 1):
        masks = [cap_mask(grid, rng.uniform(-180, 180), rng.uniform(-60, 60), rng.uniform(3, 15))
                 for _ in range(rng.integers(1, 5))]
        valid = np.ones(grid.shape, dtype=bool)
        start = int(rng.integers(0, grid.width))
        valid[:, (start + np.arange(int(20 / grid.res_deg))) % grid.width] = False
        step = MaskStep("B05", sol, 30, 10.0 + 0.5 * sol, label_image(masks), valid=valid)
        chunks.append(write_mask_chunk(folder, step, grid))
    return chunks


def timed_merge(chunks: list[Path], path: Path, output_grid: MapGrid | None) -> dict:
    grid = chunk_grid(chunks[0])
    t0 = time.perf_counter()
    merge_mask_chunks([(c, None) for c in chunks], path, grid, output_grid=output_grid)
    seconds = time.perf_counter() - t0
    size = path.stat().st_size
    n = len(chunks)
    return {"seconds": round(seconds, 3), "seconds_per_map": round(seconds / n, 4), "bytes": size,
            "bytes_per_map": size // n, "year_seconds": round(seconds / n * SOLS_PER_YEAR, 1),
            "year_megabytes": round(size / n * SOLS_PER_YEAR / 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=20)
    parser.add_argument("--working-res", type=float, default=0.8)
    parser.add_argument("--out", type=Path, default=Path("bench_out/mask_cube.json"))
    args = parser.parse_args()
    working = MapGrid.marci(args.working_res)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        chunks = write_chunks(tmp / "chunks", args.maps, working)
        result = {
            "maps": args.maps, "working_res_deg": args.working_res, "load_average": os.getloadavg(),
            "mdad_0.1deg": timed_merge(chunks, tmp / "MY30" / "MDADMY30.nc", MapGrid.marci(MDAD_RES_DEG)),
            "working_grid": timed_merge(chunks, tmp / "masks.nc", None),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
