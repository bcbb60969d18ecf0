"""How well ``marsdust.track`` rebuilds the catalog's members and sequences, and where it fails.

For each synthetic preset (``bench``, ``full`` by default) the catalog is drawn without writing
any map (:func:`marsdust.synth.build.draw_catalog`; at the preset's own resolution it is the
catalog ``marsdust synth`` writes, see ``tests/test_synth.py``), its member and sequence ids are
removed, the tracker links its instances again, and :func:`marsdust.evaluate.tracking.tracking_scores`
holds the result against the catalog's ids. The failures are then sorted:

* **merges** (a tracked member holding instances of several catalogued members): between members
  of one catalogued sequence, or of unrelated members;
* **splits** (a catalogued member cut into several tracked members), by what lies at the cut:
  a *gap* (the two instances' maps do not follow each other within ``max_gap_sols``), the *180°*
  seam (the instances on either side of it), or neither (another storm took the link);
* both counted again inside the MY25 global dust event (Ls 180°–270° of MY25).

With ``--detections DIR --catalog PATH``, a ``marsdust detect`` output (``detections.csv``, with
the tracker's ids, and ``maps.csv``) is scored against the catalog on its maps instead.

Run from the repository root::

    .venv/bin/python benchmarks/bench_track.py                 # bench at 0.4°, full calendar at 0.4°
    .venv/bin/python benchmarks/bench_track.py --presets bench --max-gap-sols 2

Writes ``bench_out/track.json`` and ``bench_out/track.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from marsdust.evaluate.tracking import catalog_for, format_scores, tracking_scores
from marsdust.fileio import write_text_atomic
from marsdust.synth import get_preset
from marsdust.synth.build import draw_catalog
from marsdust.track import read_instances, track

GLOBAL_EVENT = (25, 180.0, 270.0)
"""Mars year and Ls window of the synthetic MY25 global dust event (onset at Ls 185°)."""


def in_global_event(mars_year, ls) -> np.ndarray:
    year, start, end = GLOBAL_EVENT
    return (np.asarray(mars_year) == year) & (np.asarray(ls) >= start) & (np.asarray(ls) < end)


def classify_failures(truth: pd.DataFrame, tracked: pd.DataFrame, max_gap_sols: int) -> dict:
    """Merges and splits of the tracked members against the catalog's, sorted by cause (module docstring)."""
    df = truth.assign(tracked_member=tracked["member_id"].to_numpy())
    df["gde"] = in_global_event(df["mars_year"], df["ls"])
    merges = {"same_catalogued_sequence": 0, "unrelated": 0, "in_global_event": 0}
    for _, rows in df.groupby("tracked_member"):
        if rows["member_id"].nunique() < 2:
            continue
        sequences = set(rows["sequence_id"])
        merges["same_catalogued_sequence" if len(sequences) == 1 and "" not in sequences else "unrelated"] += 1
        merges["in_global_event"] += int(rows["gde"].any())
    splits = {"gap": 0, "seam_180": 0, "other": 0, "in_global_event": 0}
    for _, rows in df.sort_values(["mars_year", "ls"]).groupby("member_id"):
        cuts = np.flatnonzero(rows["tracked_member"].to_numpy()[1:] != rows["tracked_member"].to_numpy()[:-1])
        for k in cuts:
            before, after = rows.iloc[k], rows.iloc[k + 1]
            same_subphase = before["subphase"] == after["subphase"]
            gap = (after["sol"] - before["sol"] > max_gap_sols) if same_subphase else (
                (after["mars_year"] - before["mars_year"]) * 360 + after["ls"] - before["ls"] > 1.0 * max_gap_sols)
            seam = abs(after["lon"] - before["lon"]) > 180.0
            splits["gap" if gap else "seam_180" if seam else "other"] += 1
            splits["in_global_event"] += int(bool(before["gde"] or after["gde"]))
    return {"merges": merges, "splits": splits}


def measure_preset(name: str, res_deg: float | None, seed: int, track_kwargs: dict) -> dict:
    t0 = time.perf_counter()
    config = get_preset(name)
    res = res_deg or config.res_deg
    maps, truth = draw_catalog(config, seed=seed, res_deg=res, progress=True)
    draw_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    tracked = track(truth.drop(columns=["member_id", "sequence_id"]), **track_kwargs)
    track_s = time.perf_counter() - t1
    scores = tracking_scores(tracked, truth)
    scores["failures"] = classify_failures(truth, tracked, track_kwargs.get("max_gap_sols", 1))
    gde = in_global_event(truth["mars_year"], truth["ls"])
    scores["global_event_only"] = tracking_scores(tracked[gde], truth[gde]) if gde.any() else None
    scores["run"] = {"preset": name, "seed": seed, "res_deg": res, "preset_res_deg": config.res_deg, "maps": len(maps),
                     "instances": len(truth), "draw_seconds": round(draw_s, 1), "track_seconds": round(track_s, 2),
                     "track_parameters": track_kwargs}
    return scores


def measure_detections(detections_dir: Path, catalog: Path) -> dict:
    detections = read_instances(detections_dir / "detections.csv")
    maps_csv = detections_dir / "maps.csv"
    map_ids = pd.read_csv(maps_csv)["map_id"].astype(str) if maps_csv.is_file() else None
    truth = catalog_for(detections, read_instances(catalog), map_ids)
    scores = tracking_scores(detections, truth)
    scores["run"] = {"detections": str(detections_dir), "catalog": str(catalog), "maps": None if map_ids is None
                     else len(map_ids)}
    return scores


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def markdown(results: dict, header: dict) -> str:
    lines = [f"# marsdust.track against the catalog ({header['date']}, commit {header['commit']}, "
             f"load average {header['load_average']})", "",
             "| run | instances | link P | link R | link F1 | seq-level link F1 | purity | completeness | IDF1 "
             "| seq P | seq R (scored / unobservable) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in results.items():
        seq = s["sequences"]
        lines.append(
            f"| {name} | {s['instances']['n_truth']} | {_pct(s['links']['precision'])} | {_pct(s['links']['recall'])} "
            f"| {_pct(s['links']['f1'])} | {_pct(s['sequence_links']['f1'])} | {_pct(s['members']['purity'])} "
            f"| {_pct(s['members']['completeness'])} | {_pct(s['identity']['idf1'])} | {_pct(seq['precision'])} "
            f"| {_pct(seq['recall'])} ({seq['n_truth']} / {seq['n_truth_unobservable']}) |")
    lines.append("")
    for name, s in results.items():
        if "failures" in s:
            lines.append(f"- {name}: merges {s['failures']['merges']}, splits {s['failures']['splits']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="bench,full", help="comma-separated synth presets")
    parser.add_argument("--res-deg", type=float, default=0.4,
                        help="resolution the catalogs are drawn at (0 = each preset's own; full's is 0.1°, slow)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-gap-sols", type=int, default=1)
    parser.add_argument("--min-link-km", type=float, default=300.0)
    parser.add_argument("--size-factor", type=float, default=1.5)
    parser.add_argument("--detections", type=Path, help="a `marsdust detect` output folder to score as well")
    parser.add_argument("--catalog", type=Path, help="the catalog for --detections (storms.csv or MDAD)")
    parser.add_argument("--out", type=Path, default=Path("bench_out/track.json"))
    args = parser.parse_args()
    track_kwargs = {"max_gap_sols": args.max_gap_sols, "min_link_km": args.min_link_km, "size_factor": args.size_factor}
    results = {}
    for name in [p for p in args.presets.split(",") if p]:
        results[name] = measure_preset(name, args.res_deg or None, args.seed, track_kwargs)
        print(f"== {name} ({results[name]['run']['instances']} instances)\n{format_scores(results[name])}", flush=True)
    if args.detections is not None:
        results["detections"] = measure_detections(args.detections, args.catalog)
        print(f"== detections\n{format_scores(results['detections'])}", flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    header = {"date": time.strftime("%Y-%m-%d"), "commit": commit, "load_average": round(os.getloadavg()[0], 2)}
    write_text_atomic(args.out, json.dumps({"header": header, "results": results}, indent=2, default=str) + "\n")
    write_text_atomic(args.out.with_suffix(".md"), markdown(results, header))
    print(f"-> {args.out}, {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
