"""Benchmark of the synthetic Mars: time to draw one native-resolution (0.1°, 1200 × 3600) map.

Prints the figures and writes them to ``bench_out/synth.json`` (or the path given as argv[1]).
Target: ≤ 1 s per map for drawing (planet precomputed once); PNG encoding is reported apart.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np


def main(out_path: str = "bench_out/synth.json") -> dict:
    from marsdust.grid import MapGrid
    from marsdust.synth.build import catalog_sol, assign_ids
    from marsdust.synth.calendar import CalendarConfig, build_calendar
    from marsdust.synth.imaging import CloudConfig, ImagingConfig, Instruments, render_sol
    from marsdust.synth.planet import build_planet
    from marsdust.synth.storms import StormClimatology, background_tau, draw_storm_members
    from marsdust.synth.writer import write_png

    grid = MapGrid.moc(0.1)
    clim = StormClimatology()
    calendar = build_calendar(CalendarConfig())
    members = draw_storm_members(calendar, clim, seed=0)
    ids = assign_ids(members, calendar)
    by_day = {}
    for m in members:
        for s in m.states:
            by_day.setdefault(s.day, []).append((s, m))
    start = time.perf_counter()
    planet = build_planet(grid, seed=0)
    instruments = Instruments.draw(grid, 0)
    precompute_s = time.perf_counter() - start
    stormy_days = sorted(by_day, key=lambda d: -len(by_day[d]))[:5] + sorted(by_day)[:5]
    render_s, catalog_s, png_s, n_storms = [], [], [], []
    tmp = Path(out_path).parent / "synth_bench_map.png"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    for day in stormy_days:
        row = calendar.iloc[day].to_dict()
        row["map_id"] = "bench"
        states = [s for s, _ in by_day[day]]
        t0 = time.perf_counter()
        view = render_sol(planet, instruments, states, day, row["ls"],
                          background_tau(clim, row["mars_year"], row["ls"]), ImagingConfig(), CloudConfig(), 0)
        t1 = time.perf_counter()
        catalog_sol(view, grid, [m.key for _, m in by_day[day]], [m.source for _, m in by_day[day]], ids, row)
        t2 = time.perf_counter()
        write_png(view.rgb, tmp)
        t3 = time.perf_counter()
        render_s.append(t1 - t0), catalog_s.append(t2 - t1), png_s.append(t3 - t2), n_storms.append(len(states))
    tmp.unlink(missing_ok=True)
    figures = {
        "grid": "0.1 deg, 1200 x 3600",
        "planet_precompute_s": round(precompute_s, 3),
        "render_map_s_median": round(float(np.median(render_s)), 3),
        "render_map_s_max": round(float(np.max(render_s)), 3),
        "catalog_map_s_median": round(float(np.median(catalog_s)), 3),
        "render_plus_catalog_s_median": round(float(np.median(np.add(render_s, catalog_s))), 3),
        "png_write_s_median": round(float(np.median(png_s)), 3),
        "storms_per_map": n_storms,
        "maps_timed": len(render_s),
    }
    print(json.dumps(figures, indent=2))
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main(*sys.argv[1:2])
