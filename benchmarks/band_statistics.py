"""How much a global map's polar latitudes set its per-map statistics (the reason for ``input_norm="per_map_60"``).

For the maps of each camera period of a ``twocam`` archive (MOC: 60°S–60°N; MARCI: global), at the
detectors' working resolution, the mean and standard deviation of each band over the observed pixels of
the whole map and over those between 60°S and 60°N only (medians over the maps), and the ratio of the two
standard deviations: how much dimmer a storm looks to a detector that standardizes a global map by all
its pixels than by the band MOC also images.

Run::

    .venv/bin/python benchmarks/band_statistics.py                       # bench_out/data/twocam, every 4th map
    .venv/bin/python benchmarks/band_statistics.py --data DIR --every 1

Writes ``bench_out/band_statistics.json`` (or ``--out``) with the date, the commit and the command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_shift import git_commit  # noqa: E402

from marsdust.fileio import write_text_atomic

PERIODS = {"MOC (MY24 Ls150 - MY28 Ls121)": lambda year, ls: (year < 28) | ((year == 28) & (ls <= 121.0)),
           "MARCI (MY28 Ls130 on)": lambda year, ls: (year > 28) | ((year == 28) & (ls > 121.0))}
BANDS = ("red", "green", "blue")


def map_statistics(path: str, res_deg: float) -> dict[str, np.ndarray]:
    """Per-band mean and standard deviation of one map's observed pixels: whole map and 60°S–60°N."""
    from marsdust.mdgm import read_map_resampled

    image = read_map_resampled(path, res_deg)
    band = np.abs(image.grid.lat_centers_deg) <= 60.0
    whole = image.rgb[image.valid]
    middle = image.rgb[image.valid & band[:, None]]
    return {"mean_all": whole.mean(0), "std_all": whole.std(0), "mean_60": middle.mean(0), "std_60": middle.std(0)}


def period_statistics(paths: list[str], res_deg: float) -> dict:
    """Medians over the maps of :func:`map_statistics`, per band, and the ratio of the standard deviations."""
    rows = [map_statistics(path, res_deg) for path in paths]
    medians = {key: np.median([row[key] for row in rows], axis=0) for key in rows[0]}
    result = {"n_maps": len(rows)}
    for k, name in enumerate(BANDS):
        result[name] = {key: round(float(value[k]), 4) for key, value in medians.items()}
        result[name]["std_ratio_all_to_60"] = round(float(medians["std_all"][k] / medians["std_60"][k]), 2)
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="bench_out/data/twocam", help="a twocam archive (marsdust synth --preset twocam)")
    parser.add_argument("--res-deg", type=float, default=0.8, help="working resolution, degrees per pixel")
    parser.add_argument("--every", type=int, default=4, help="use every N-th map of each period")
    parser.add_argument("--out", default="bench_out/band_statistics.json")
    args = parser.parse_args(argv)
    from marsdust.mdgm import index_archive

    index = index_archive(Path(args.data) / "archive")
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "commit": git_commit(), "command": " ".join(["benchmarks/band_statistics.py", *(argv or sys.argv[1:])]),
              "data": args.data, "res_deg": args.res_deg, "periods": {}}
    for period, inside in PERIODS.items():
        paths = list(index.loc[inside(index["mars_year"], index["ls"]), "path"])[:: args.every]
        if not paths:
            continue
        stats = period_statistics(paths, args.res_deg)
        report["periods"][period] = stats
        print(f"{period}, {stats['n_maps']} maps (medians): " + "; ".join(
            f"{band} std {stats[band]['std_all']:.3f} whole map, {stats[band]['std_60']:.3f} in 60°S-60°N "
            f"(x{stats[band]['std_ratio_all_to_60']:.2f})" for band in BANDS))
    write_text_atomic(Path(args.out), json.dumps(report, indent=2) + "\n")
    print(f"-> {args.out}")
    return report


if __name__ == "__main__":
    main()
