"""Benchmark of the synthetic Mars at native resolution (0.1°, 1200 × 3600 maps).

Times, per map, drawing (``render_sol``: ground, storms, clouds, swaths, noise), cataloguing
(``catalog_sol``: outlines, areas, confidence, MDAD labels) and writing the PNG, and the PNG size,
on the ``full`` preset's weather: the sols with the most storms, the sols with the biggest storms
and random sols. As a yardstick measured in the same run (machines here are shared and noisy) it
also times PNG-encoding a plain uniform-noise RGB image of the same size with the same writer:
``*_vs_reference`` figures are ratios to that time and compare across machines.

Prints the figures and writes them to ``bench_out/synth.json`` (or the path given as the one argument).
Targets: draw ≤ 1 s median per map (planet precomputed once per run); PNG size: 4.6 MB per map
today (was 8.1 MB; aim ≲ 3 MB, but the smooth ground alone, without texture, clouds or noise,
already costs ~2.3 MB as PNG).

Run: ``.venv/bin/python benchmarks/bench_synth.py``
"""

import json
import time
from pathlib import Path

import numpy as np


def _timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def main(out_path: str = "bench_out/synth.json", n_random: int = 8) -> dict:
    from marsdust.grid import MapGrid
    from marsdust.synth.build import assign_ids, catalog_sol
    from marsdust.synth.calendar import build_calendar
    from marsdust.synth.imaging import Instruments, render_sol
    from marsdust.synth.planet import build_planet
    from marsdust.synth.presets import full_config
    from marsdust.synth.storms import background_tau, draw_storm_members
    from marsdust.synth.writer import write_png

    config = full_config()
    grid = MapGrid.moc(config.res_deg)
    imaging = config.cameras[0].camera.imaging
    calendar = build_calendar(config.calendar)
    members, catalog_draw_s = _timed(draw_storm_members, calendar, config.storms, 0)
    ids = assign_ids(members, calendar)
    by_day: dict[int, list] = {}
    for member in members:
        for state in member.states:
            by_day.setdefault(state.day, []).append((state, member))
    start = time.perf_counter()
    planet = build_planet(grid, config.planet, seed=0)
    instruments = Instruments.draw(grid, 0)
    precompute_s = time.perf_counter() - start

    stormiest = sorted(by_day, key=lambda d: -len(by_day[d]))[:4]
    biggest = sorted(by_day, key=lambda d: -max(s.area_km2 for s, _ in by_day[d]))[:4]
    random_days = np.random.default_rng(1).choice(len(calendar), n_random, replace=False).tolist()
    days = list(dict.fromkeys(stormiest + biggest + random_days))

    out_dir = Path(out_path).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "synth_bench_map.png"
    noise_rgb = np.random.default_rng(0).integers(0, 256, grid.shape + (3,), dtype=np.uint8)
    _, reference_s = _timed(write_png, noise_rgb, tmp)
    reference_s = min(reference_s, _timed(write_png, noise_rgb, tmp)[1])
    reference_mb = tmp.stat().st_size / 1e6

    render_s, catalog_s, png_s, png_mb, n_storms = [], [], [], [], []
    for day in days:
        row = calendar.iloc[day].to_dict()
        row["map_id"] = "bench"
        alive = by_day.get(day, [])
        states = [s for s, _ in alive]
        haze = background_tau(config.storms, row["mars_year"], row["ls"])
        view, seconds = _timed(render_sol, planet, instruments, states, day, row["ls"], haze, imaging,
                               config.clouds, 0)
        render_s.append(seconds)
        _, seconds = _timed(catalog_sol, view, grid, [m.key for _, m in alive], [m.source for _, m in alive], ids,
                            row)
        catalog_s.append(seconds)
        png_s.append(_timed(write_png, view.rgb, tmp)[1])
        png_mb.append(tmp.stat().st_size / 1e6)
        n_storms.append(len(states))
    tmp.unlink(missing_ok=True)

    def r3(value):
        return round(float(value), 3)

    figures = {
        "grid": f"{config.res_deg} deg, {grid.height} x {grid.width}",
        "maps_timed": len(days),
        "storms_per_map": n_storms,
        "max_storm_area_km2": r3(max(s.area_km2 for d in days for s, _ in by_day.get(d, [])) if n_storms else 0),
        "catalog_draw_full_calendar_s": r3(catalog_draw_s),
        "planet_precompute_s": r3(precompute_s),
        "render_map_s_median": r3(np.median(render_s)),
        "render_map_s_max": r3(np.max(render_s)),
        "catalog_map_s_median": r3(np.median(catalog_s)),
        "catalog_map_s_max": r3(np.max(catalog_s)),
        "png_write_s_median": r3(np.median(png_s)),
        "png_mb_median": r3(np.median(png_mb)),
        "png_mb_max": r3(np.max(png_mb)),
        "reference_png_noise_image_s": r3(reference_s),
        "reference_png_noise_image_mb": r3(reference_mb),
        "render_median_vs_reference": r3(np.median(render_s) / reference_s),
        "render_max_vs_reference": r3(np.max(render_s) / reference_s),
        "png_write_median_vs_reference": r3(np.median(png_s) / reference_s),
        "full_preset_estimate_gb": r3(np.median(png_mb) * 2540 / 1000),
    }
    print(json.dumps(figures, indent=2))
    Path(out_path).write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", default="bench_out/synth.json", help="where the figures go (JSON)")
    main(parser.parse_args().out)
