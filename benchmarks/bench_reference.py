"""Benchmark: what reference channels cost ``marsdust detect`` per map.

``marsdust detect`` over the first ``--maps`` maps of the synthetic ``bench`` archive (in time
order) with two detectors of the same architecture (``small_cpu`` at 0.8°, random weights, one
seed): one without reference bands, one with ``prior-median`` backgrounds of the previous
``--sols`` sols (six input bands). Runs alternate (plain, reference, plain, ...) ``--repeats``
times each, so a change of load hits both; the report gives the median seconds per map of each,
their ratio, and the reference's own work per map measured apart: building the background from
the window's maps and adding the map to the history (:class:`marsdust.history.MapHistory`,
maps already in memory at the working resolution).

A random detector's scores are meaningless: every detection below ``--score-threshold`` (0.99 by
default) is dropped so that both runs decode about the same, small number of outlines and the
difference is the input side. The number of detections kept is printed beside the times.

Run::

    .venv/bin/python benchmarks/bench_reference.py            # ~3 min on 2 cores
    .venv/bin/python benchmarks/bench_reference.py --maps 8 --repeats 1   # smoke

Writes ``OUT/reference.json`` and ``OUT/reference.md`` (default ``bench_out/reference``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path


def _detector(reference: str, sols: int):
    import torch

    from marsdust.models import SMALL_CPU, build_model

    torch.manual_seed(0)
    bands = {"reference": reference, "reference_sols": sols, "in_channels": 6} if reference != "none" else {}
    return build_model("dustrcnn", map_res_deg=0.8, **{**SMALL_CPU, **bands}).eval()


def _detect_seconds_per_map(model, index_csv: Path, out: Path, threshold: float, n_maps: int) -> tuple[float, int]:
    import pandas as pd

    from marsdust.detect import DetectExecution, DetectOutputs, DetectSettings, detect_archive

    t0 = time.perf_counter()
    detect_archive(model, str(index_csv), DetectOutputs(out, track=False, overwrite=True),
                   settings=DetectSettings(threshold), execution=DetectExecution(progress=False))
    seconds = time.perf_counter() - t0
    detections = pd.read_csv(out / "detections.csv") if (out / "detections.csv").is_file() else []
    return seconds / n_maps, len(detections)


def _feeder_ms_per_map(index, sols: int) -> float:
    """Median ms of background + add per map, maps preloaded at 0.8°."""
    from marsdust.detect.prepare import working_image
    from marsdust.history import MapHistory
    from marsdust.reference import ReferenceConfig

    images = {path: working_image(path, 0.8)[0] for path in index["path"]}
    history = MapHistory(ReferenceConfig("prior-median", sols), index,
                         lambda path: (images[path].rgb, images[path].valid))
    times = []
    for map_id in history.map_ids:
        image = images[history.paths[map_id]]
        t0 = time.perf_counter()
        history.background(map_id, image.grid.shape)
        history.add(map_id, image.rgb, image.valid)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="bench_out/data/bench", help="bench preset folder (synthesized if missing)")
    parser.add_argument("--out", default="bench_out/reference")
    parser.add_argument("--maps", type=int, default=40, help="first N maps of the archive in time order")
    parser.add_argument("--sols", type=int, default=20, help="the reference window (--reference-sols)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each detector, alternating")
    parser.add_argument("--score-threshold", type=float, default=0.99)
    args = parser.parse_args(argv)

    from marsdust.mdgm import index_archive

    data, out = Path(args.data), Path(args.out)
    if not (data / "archive").is_dir():
        from marsdust.synth import synthesize

        print(f"synthesizing the bench preset into {data} ...", flush=True)
        synthesize(data, "bench", seed=0)
    out.mkdir(parents=True, exist_ok=True)
    index = index_archive(data / "archive").sort_values(["mars_year", "ls", "map_id"]).head(args.maps)
    index_csv = out / "maps.csv"
    index.to_csv(index_csv, index=False)

    models = {"none": _detector("none", args.sols), "prior-median": _detector("prior-median", args.sols)}
    runs: dict[str, list[float]] = {name: [] for name in models}
    detections: dict[str, int] = {}
    for repeat in range(args.repeats):
        for name, model in models.items():
            seconds, detections[name] = _detect_seconds_per_map(model, index_csv, out / f"detect_{name}",
                                                                args.score_threshold, len(index))
            runs[name].append(seconds)
            print(f"repeat {repeat + 1}/{args.repeats} {name:>12}: {1000 * seconds:7.1f} ms/map "
                  f"({detections[name]} detections)", flush=True)
    feeder_ms = _feeder_ms_per_map(index, args.sols)
    plain_ms, reference_ms = (1000 * statistics.median(runs[n]) for n in ("none", "prior-median"))
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(), "load_average_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "maps": len(index), "sols": args.sols,
        "repeats": args.repeats, "ms_per_map": {"none": plain_ms, "prior-median": reference_ms},
        "runs_ms_per_map": {n: [1000 * s for s in v] for n, v in runs.items()},
        "ratio_reference_to_plain": reference_ms / plain_ms, "feeder_ms_per_map": feeder_ms,
        "detections": detections,
    }
    text = (f"# Reference channels in `marsdust detect`\n\n{result['date']}; {result['cpus']} CPUs, load average at "
            f"the end {result['load_average_end']:.1f}; first {len(index)} `bench` maps, window {args.sols} sols, "
            f"{args.repeats} alternating runs each (median).\n\n"
            "| detector | ms / map (detect end to end) | ratio to plain |\n|---|---|---|\n"
            f"| plain (3 bands) | {plain_ms:.1f} | 1.00 |\n"
            f"| prior-median reference (6 bands) | {reference_ms:.1f} | {reference_ms / plain_ms:.2f} |\n\n"
            f"Background + history update alone: {feeder_ms:.2f} ms per map (maps in memory at 0.8°).\n")
    (out / "reference.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "reference.md").write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
