"""Benchmark: seconds to read a full-size (1200 x 3600, native 0.1°) MDGM PNG, alone and resampled to 0.4°.

Writes a patterned RGB PNG of the native size into a temporary folder, reads it once to warm up
imports, then takes the best of ``--repeats`` runs of ``marsdust.mdgm.read_map`` and of
``read_map_resampled(path, 0.4)``. Target: both under 0.4 s per map on one core (``marsdust detect``
reads every map of an archive). Reports the load average beside the figures: on a shared machine
absolute seconds are only comparable at similar load.

Run::

    .venv/bin/python benchmarks/bench_read_map.py [--repeats 3] [--out bench_out/read_map.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from marsdust.mdgm import read_map, read_map_resampled

TARGET_S = 0.4


def best_seconds(function, *args, repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``function(*args)``, seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench_out") / "read_map.json")
    args = parser.parse_args(argv)
    y, x = np.mgrid[0:1200, 0:3600]
    rgb = np.stack([(x // 7 + y // 5) % 256, (x // 3) % 256, (y // 2) % 256], -1).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.png"
        Image.fromarray(rgb).save(path)
        read_map(path)  # warm up imports
        figures = {"read_map_s": best_seconds(read_map, path, repeats=args.repeats),
                   "read_map_resampled_0.4_s": best_seconds(read_map_resampled, path, 0.4, repeats=args.repeats)}
    figures.update(target_s=TARGET_S, load_average_1min=os.getloadavg()[0])
    for name, value in figures.items():
        print(f"{name}: {value:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
