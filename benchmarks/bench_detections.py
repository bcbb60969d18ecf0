"""How the time to detect one native map grows with the number of storms the detector reports.

A random-init detector finds a handful of boxes per map; a trained one on a dusty sol may report
dozens, and every detection costs mask-head inference, mask pasting, outline tracing and area
measurement. This benchmark forces the default ``dustrcnn`` to report exactly N detections
(score threshold 0, ``detections_per_img = N``) on the same native 1200 × 3600 maps as
``bench_detect.py`` and times :func:`marsdust.detect.detect_map` (prepare, infer, decode; no file
reading or writing) for each N. The reference is N = 1 in the same run: the report gives each
count's time as a ratio to it and the least-squares cost of one more detection.

Run::

    .venv/bin/python benchmarks/bench_detections.py                     # counts 1,10,30,60 on 3 maps
    .venv/bin/python benchmarks/bench_detections.py --counts 1,25,100 --maps 5 --threads 2

Prints a table and writes ``bench_out/detections_scaling.json`` and ``.md``.
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

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_detect import machine, map_paths, native_maps  # noqa: E402  (the same maps and machine record)


def time_counts(counts: list[int], paths: list[str], repeats: int) -> list[dict]:
    """Median seconds per map of ``detect_map`` with the detector forced to report each count."""
    import torch

    from marsdust.detect import DetectSettings, detect_map
    from marsdust.mdgm import read_map
    from marsdust.models import build_model

    torch.manual_seed(0)
    model = build_model("dustrcnn", backbone_weights=None).eval()
    images = [read_map(path) for path in paths]
    detect_map(model, images[0], settings=DetectSettings(0.0))  # warm-up: ONNX export and session start
    rows = []
    for count in counts:
        model.roi_heads.detections_per_img = int(count)
        seconds, found = [], []
        for image in images:
            for _ in range(repeats):
                start = time.perf_counter()
                result = detect_map(model, image, settings=DetectSettings(0.0))
                seconds.append(time.perf_counter() - start)
            found.append(len(result.records))
        rows.append({"max_detections": int(count), "detections_per_map": float(np.mean(found)),
                     "median_s_per_map": statistics.median(seconds), "min_s_per_map": min(seconds),
                     "max_s_per_map": max(seconds)})
        print(f"  {count:4d} asked, {np.mean(found):6.1f} found: median {rows[-1]['median_s_per_map']:.3f} s per map",
              flush=True)
    return rows


def summarize(rows: list[dict]) -> dict:
    """Ratios to the first count and the least-squares seconds per extra detection."""
    reference = rows[0]["median_s_per_map"]
    for row in rows:
        row["ratio_to_reference"] = row["median_s_per_map"] / reference
    found = np.array([row["detections_per_map"] for row in rows])
    seconds = np.array([row["median_s_per_map"] for row in rows])
    slope, intercept = np.polyfit(found, seconds, 1) if len(rows) > 1 else (float("nan"), seconds[0])
    return {"s_per_extra_detection": float(slope), "s_per_map_without_detections": float(intercept)}


def markdown(report: dict) -> str:
    info = report["machine"]
    lines = [
        f"# detect_map time vs detections per map, {report['date']}", "",
        f"Machine: {info['cpu_model']}, {info['cpu_count']} cores, {info['torch_threads']} torch threads, "
        f"torch {info['torch']}, onnxruntime {info['onnxruntime']}, commit {info['git_commit']}. "
        f"Maps: {report['n_maps']} native 1200 x 3600 (full preset, MY25 from Ls 185), {report['repeats']} timing(s) "
        f"each. Model: default dustrcnn, random init (seed 0), forced to report N detections. "
        f"Load average before -> after: {report['load_before']} -> {report['load_after']}. "
        f"Command: `{report['command']}`", "",
        "| detections asked | found per map | median s / map | ratio to the first row |",
        "|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(f"| {row['max_detections']} | {row['detections_per_map']:.1f} | {row['median_s_per_map']:.3f} "
                     f"| {row['ratio_to_reference']:.2f} |")
    fit = report["fit"]
    lines += ["", f"Least squares: {1000 * fit['s_per_extra_detection']:.1f} ms per extra detection on top of "
                  f"{fit['s_per_map_without_detections']:.3f} s per map."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1,10,30,60", help="Detections to force, comma-separated.")
    parser.add_argument("--maps", type=int, default=3, help="Native maps (the first of bench_detect's).")
    parser.add_argument("--repeats", type=int, default=1, help="Timings per map and count.")
    parser.add_argument("--threads", type=int, default=2, help="Torch CPU threads.")
    parser.add_argument("--out", type=Path, default=Path("bench_out"), help="Output folder.")
    args = parser.parse_args(argv)
    counts = sorted({int(c) for c in args.counts.split(",") if c.strip()})
    if not counts or counts[0] < 1:
        parser.error("--counts needs whole numbers >= 1")
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    paths = map_paths(native_maps(args.out / "detect_maps", max(args.maps, 12)))[: args.maps]
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows = time_counts(counts, paths, args.repeats)
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": "python benchmarks/bench_detections.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine(args.threads), "n_maps": len(paths), "repeats": args.repeats,
              "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()], "rows": rows}
    report["fit"] = summarize(rows)
    from marsdust.fileio import write_text_atomic

    write_text_atomic(args.out / "detections_scaling.json", json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    write_text_atomic(args.out / "detections_scaling.md", text)
    print(text)
    return report


if __name__ == "__main__":
    main()
