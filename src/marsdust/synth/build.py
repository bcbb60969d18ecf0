"""Run the synthetic Mars over a calendar and write its archive, MDAD and truth tables.

One weather and one planet run over the whole calendar; each sol that gets a map is imaged by the
camera whose epoch covers it (``SynthConfig.cameras``), on that camera's grid, in its format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from marsdust.grid import MapGrid
from marsdust.mdad_format import MAX_MEMBER_NUMBER, format_member_id, master_csv_path
from marsdust.naming import make_map_id
from marsdust.synth.calendar import build_calendar, first_day_at
from marsdust.synth.cameras import Camera
from marsdust.synth.imaging import Instruments, SolView, render_sol
from marsdust.synth.looks import LOOK_STREAM, draw_sol_look, finish_rgb
from marsdust.synth.planet import Planet, PlanetConfig, build_planet
from marsdust.synth.presets import SynthConfig
from marsdust.synth.storms import Member, background_tau, draw_storm_members

MIN_CATALOG_AREA_KM2 = 2.0e4
"""Visible storm pieces smaller than this (e.g. mostly covered by a bigger storm) are not catalogued."""
CONFIDENCE_CONTRAST = ((35.0, 100), (18.0, 75))
"""Red-band contrast (0–255 units) of a storm against a ring around it → confidence."""
CUBE_TITLE = "marsdust synthetic Mars: MDAD v1.1 storm masks (the simulator's truth)"
CUBE_SOURCE = "marsdust.synth (synthetic Mars; the labels are the storms it drew, not detector output)"


def epoch_of_day(config: SynthConfig, calendar: pd.DataFrame) -> np.ndarray:
    """Index into ``config.cameras`` of the epoch imaging each calendar day, -1 where none does.

    Epoch ``k`` runs from its start to its end (or the next epoch's start, whichever comes first).
    """
    epochs = config.cameras
    starts = [first_day_at(calendar, epoch.start) for epoch in epochs]
    stops = starts[1:] + [len(calendar)]
    index = np.full(len(calendar), -1)
    for k, (epoch, first, stop) in enumerate(zip(epochs, starts, stops)):
        last = stop if epoch.end is None else min(stop, first_day_at(calendar, epoch.end))
        index[first:last] = k
    return index


def selected_days(config: SynthConfig, calendar: pd.DataFrame, seed: int) -> np.ndarray:
    """Days (calendar rows) that get a map: the preset's stride, less missing sols, on sols some camera images."""
    days = calendar["day"].to_numpy()
    chosen = days[(days % config.sol_stride) < config.sols_per_run]
    if config.missing_sol_fraction > 0:
        rng = np.random.default_rng([seed, 51])
        chosen = chosen[rng.random(chosen.size) >= config.missing_sol_fraction]
    return chosen[epoch_of_day(config, calendar)[chosen] >= 0]


@dataclass
class MemberIds:
    member_id: dict[int, str]
    number: dict[int, int]
    sequence_id: dict[int, str]


def assign_ids(members: list[Member], calendar: pd.DataFrame) -> MemberIds:
    """MDAD-style IDs: ``<SUBPHASE>_<nnn>`` numbered within the start subphase without clashing
    with members carried over from earlier subphases; sequences ``MY<yy>-<nn>`` per Mars year.
    Members beyond 133 in a subphase are left without an ID (not drawn)."""
    subphase_of = calendar["subphase"].to_numpy()
    year_of = calendar["mars_year"].to_numpy()
    last_day = len(calendar) - 1
    used: dict[str, set[int]] = {}
    ids = MemberIds({}, {}, {})
    seq_names: dict[int, str] = {}
    seq_count: dict[int, int] = {}
    for member in sorted(members, key=lambda m: (m.start_day, m.key)):
        if member.start_day > last_day:
            continue
        start_sub = subphase_of[member.start_day]
        taken = used.setdefault(start_sub, set())
        number = next((n for n in range(1, MAX_MEMBER_NUMBER + 1) if n not in taken), None)
        if number is None:
            continue
        spans = {subphase_of[min(s.day, last_day)] for s in member.states}
        for sub in spans:
            used.setdefault(sub, set()).add(number)
        ids.member_id[member.key] = format_member_id(start_sub, number)
        ids.number[member.key] = number
        if member.sequence_key is not None:
            if member.sequence_key not in seq_names:
                year = int(year_of[member.start_day])
                seq_count[year] = seq_count.get(year, 0) + 1
                seq_names[member.sequence_key] = f"MY{year}-{seq_count[year]:02d}"
            ids.sequence_id[member.key] = seq_names[member.sequence_key]
    return ids


def _polygon_wkt(mask: np.ndarray, grid: MapGrid, row0: int) -> str:
    """WKT (Multi)Polygon in lon/lat of a mask strip starting at ``row0`` (split at 180° by the map edge)."""
    return grid.outline_of(mask, row0).wkt


def _confidence(red: np.ndarray, storm: np.ndarray, any_storm: np.ndarray, valid: np.ndarray, ring_px: int) -> int:
    from scipy.ndimage import uniform_filter

    near = uniform_filter(storm.astype(np.float32), size=2 * ring_px + 1, mode="constant") > 1e-6
    ring = near & ~any_storm & valid
    if ring.sum() < 5:
        return 50
    contrast = float(red[storm].mean() - red[ring].mean())
    for threshold, level in CONFIDENCE_CONTRAST:
        if contrast >= threshold:
            return level
    return 50


def catalog_sol(view: SolView, grid: MapGrid, member_keys: list[int], sources: list[str], ids: MemberIds, row: dict,
                min_visible_fraction: float = 0.5) -> tuple[list[dict], np.ndarray]:
    """Catalog rows of one sol (visible storms) and its MDAD label image (uint8 (H, W)).

    A storm whose outline is mostly hidden (visible fraction < ``min_visible_fraction``) is not
    catalogued; a partly hidden one is catalogued with its visible part.
    """
    labels = np.zeros(grid.shape, np.uint8)
    rows_out = []
    row_area = grid.row_pixel_area_km2()
    for index, (state, f) in enumerate(zip(view.states, view.fields)):
        key = member_keys[index]
        if f is None or key not in ids.number:
            continue
        rows = slice(f.row0, f.row1)
        owner_box = view.owner[rows][:, f.cols]
        valid_box = view.valid[rows][:, f.cols]
        drawn = owner_box == index
        visible = drawn & valid_box
        n_drawn, n_visible = int(f.inside.sum()), int(visible.sum())
        if n_drawn == 0 or n_visible < 4 or n_visible < min_visible_fraction * n_drawn:
            continue
        strip = np.zeros((f.row1 - f.row0, grid.width), bool)  # the storm's rows of the map
        strip[:, f.cols] = visible
        area_km2 = float(visible.sum(axis=1) @ row_area[rows])
        if area_km2 < MIN_CATALOG_AREA_KM2:
            continue
        weights = visible * row_area[rows, None]
        lat = float((weights * grid.lat_centers_deg[rows, None]).sum() / weights.sum())
        lon_rad = np.radians(grid.lon_centers_deg[f.cols])[None, :]
        lon = float(np.degrees(np.arctan2((weights * np.sin(lon_rad)).sum(), (weights * np.cos(lon_rad)).sum())))
        lon = float((lon + 180.0) % 360.0 - 180.0)
        red_box = view.rgb[rows][:, f.cols, 0].astype(np.float32)
        radius_px = max(2, int(0.3 * state.semi_major_km / (grid.res_deg * 59.27)))
        confidence = _confidence(red_box, visible, owner_box >= 0, valid_box, min(radius_px, 40))
        labels[rows, f.cols] = np.where(visible, np.uint8(ids.number[key]), labels[rows][:, f.cols])
        rows_out.append({
            "map_id": row["map_id"], "subphase": row["subphase"], "sol": int(row["sol"]),
            "mars_year": int(row["mars_year"]), "ls": float(row["ls"]), "lon": round(lon, 3), "lat": round(lat, 3),
            "area_km2": round(area_km2, 1), "confidence": confidence, "member_id": ids.member_id[key],
            "sequence_id": ids.sequence_id.get(key, ""),
            "polygon_wkt": _polygon_wkt(strip, grid, f.row0), "source": sources[index], "member_key": key,
            "tau": round(state.tau, 3),
        })
    labels[~view.valid] = 255
    return rows_out, labels


@dataclass
class SolResult:
    """One drawn sol: its map row, imaging, catalog rows and MDAD label image."""

    row: dict
    view: SolView
    storms: list[dict]
    labels: np.ndarray


@dataclass
class Imager:
    """What one camera needs every sol, drawn once: its grid, the planet's ground on it, its instruments."""

    camera: Camera
    grid: MapGrid
    planet: Planet
    instruments: Instruments

    @classmethod
    def build(cls, camera: Camera, res_deg: float, planet: PlanetConfig, seed: int) -> "Imager":
        """The camera's grid at ``res_deg`` with planet ``seed``'s ground and noise on it."""
        grid = camera.grid(res_deg)
        return cls(camera, grid, build_planet(grid, planet, seed), Instruments.draw(grid, seed))


class Simulation:
    """The synthetic Mars of one configuration and seed: calendar, weather, planet, cameras.

    ``maps`` lists the sols that get a map (``selected_days``), with the ``camera`` that images
    each, its file ``path`` and ``file_stem``, and whether it goes into the v1.1 cubes
    (``cubes``); :meth:`draw` draws one of them. ``imagers`` holds each camera's grid, ground and
    instruments by camera name. ``res_deg`` overrides the configuration's resolution (e.g. a
    coarse grid to draw the catalog of a native-resolution preset quickly: same weather, same sols).
    """

    def __init__(self, config: SynthConfig, seed: int = 0, res_deg: float | None = None, out_dir=None):
        self.config, self.seed = config, seed
        self.calendar = build_calendar(config.calendar, seed,
                                       tuple((epoch.start, epoch.camera.subphase_plan) for epoch in config.cameras))
        self.members = draw_storm_members(self.calendar, config.storms, seed)
        self.ids = assign_ids(self.members, self.calendar)
        self.by_day: dict[int, list] = {}
        for member in self.members:
            for state in member.states:
                self.by_day.setdefault(state.day, []).append((state, member))
        self.imagers = {epoch.camera.name: Imager.build(epoch.camera, res_deg or config.res_deg, config.planet, seed)
                        for epoch in config.cameras}
        self.maps = self._map_table(Path(out_dir) if out_dir is not None else Path("."))

    def _map_table(self, out: Path) -> pd.DataFrame:
        config = self.config
        days = selected_days(config, self.calendar, self.seed)
        maps = self.calendar.iloc[days].copy()
        epochs = [config.cameras[k] for k in epoch_of_day(config, self.calendar)[days]]
        maps["map_id"] = [make_map_id(s, n) for s, n in zip(maps["subphase"], maps["sol"])]
        names = [e.camera.map_file_name(s, n) for e, s, n in zip(epochs, maps["subphase"], maps["sol"])]
        maps["path"] = [str(out / "archive" / s / name) for s, name in zip(maps["subphase"], names)]
        maps["haze_tau"] = [round(background_tau(config.storms, y, ls), 4)
                            for y, ls in zip(maps["mars_year"], maps["ls"])]
        maps["camera"] = [e.camera.name for e in epochs]
        maps["file_stem"] = [Path(name).stem for name in names]
        maps["cubes"] = [config.write_cubes and e.write_cubes for e in epochs]
        return maps

    def draw(self, row: dict) -> SolResult:
        """Render and catalogue the sol of one ``maps`` row (a dict) with its camera."""
        imager = self.imagers[row["camera"]]
        alive = self.by_day.get(row["day"], [])
        imaging, look = imager.camera.imaging, None
        if self.config.look is not None:
            look = draw_sol_look(imaging, self.config.look, np.random.default_rng([self.seed, LOOK_STREAM, row["day"]]))
            imaging = imaging if look is None else look.imaging
        view = render_sol(imager.planet, imager.instruments, [s for s, _ in alive], row["day"], row["ls"],
                          row["haze_tau"], imaging, self.config.clouds, self.seed)
        if look is not None:
            view.rgb = finish_rgb(view.rgb, view.valid, look)
        storms, labels = catalog_sol(view, imager.grid, [m.key for _, m in alive], [m.source for _, m in alive],
                                     self.ids, row)
        return SolResult(row, view, storms, labels)

    def grid_of(self, row: dict) -> MapGrid:
        """The grid of the map of one ``maps`` row."""
        return self.imagers[row["camera"]].grid


def write_sol_cloud_mask(result: SolResult, grid: MapGrid, out: Path) -> Path:
    """Write the cloud mask of one drawn sol under ``out/cloudmask`` (:mod:`marsdust.cloudmask`).

    Cloudy where the drawn opacity exceeds :data:`~marsdust.cloudmask.CLOUD_OPACITY_THRESHOLD`, at
    :data:`~marsdust.cloudmask.CLOUD_MASK_RES_DEG` (or the map's resolution where that is coarser).
    """
    from marsdust.cloudmask import (CLOUD_MASK_DIR, CLOUD_MASK_RES_DEG, CLOUD_OPACITY_THRESHOLD, cloud_mask_path,
                                    cloud_mask_values)
    from marsdust.formats.cloud_mask import write_cloud_mask

    factor = max(1, int(round(CLOUD_MASK_RES_DEG / grid.res_deg)))
    values = cloud_mask_values(result.view.cloud, result.view.valid, factor)
    return write_cloud_mask(cloud_mask_path(out / CLOUD_MASK_DIR, result.row["subphase"], result.row["map_id"]),
                            values, grid.rescaled(factor),
                            {"source": "marsdust.synth (the water-ice cloud opacity the simulator drew)",
                             "opacity_threshold": CLOUD_OPACITY_THRESHOLD})


def draw_catalog(config: SynthConfig, seed: int = 0, res_deg: float = 0.8, every: int = 1,
                 progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The maps and storm catalog a configuration would write, drawn on a coarse grid, nothing written.

    Same weather and sols as :func:`synthesize_config`; outlines, areas and visibility are
    measured at ``res_deg`` (0.8° draws a map in ~10 ms), so counts are close to, not identical
    with, the native-resolution ones (storms near the visibility and area limits may differ).

    Parameters
    ----------
    every : int
        Draw every ``every``-th map only (a sample of the calendar).

    Returns
    -------
    maps, storms : DataFrame
        The sampled maps (with ``n_storms``) and their catalog rows (``STORM_COLUMNS``).
    """
    from tqdm.auto import tqdm

    simulation = Simulation(config, seed, res_deg=res_deg)
    maps = simulation.maps.iloc[::every].copy()
    rows: list[dict] = []
    counts = []
    for row in tqdm(maps.to_dict("records"), desc=f"catalog {config.name}", unit="map", disable=not progress):
        result = simulation.draw(row)
        rows += result.storms
        counts.append(len(result.storms))
    maps["n_storms"] = counts
    return maps.drop(columns=["path", "file_stem"]).reset_index(drop=True), pd.DataFrame(rows, columns=STORM_COLUMNS)


def synthesize_config(config: SynthConfig, out_dir, seed: int = 0, progress: bool = True,
                      overwrite: bool = False) -> dict:
    """Write ``out_dir/archive``, ``out_dir/mdad``, ``out_dir/truth`` and ``out_dir/cloudmask`` for one configuration.

    A folder that already holds any of them is refused
    (:class:`marsdust.synth.writer.SynthOutputExistsError`) unless ``overwrite``, which removes
    those four subfolders first and nothing else (:func:`marsdust.synth.writer.prepare_output_dir`).
    The v1.1 cubes are written with :class:`marsdust.formats.mdad_cube.MaskCubeWriter`, one per Mars year
    that has maps of an epoch with cubes (:func:`write_year`).

    Returns
    -------
    dict
        ``maps`` (the written maps: map_id, subphase, sol, mars_year, ls, path, haze_tau, day,
        sol_of_year, and ``camera`` when a camera other than MOC is configured) and ``storms``
        (the truth storm table, with ``polygon_wkt``) as DataFrames.
    """
    from tqdm.auto import tqdm

    from marsdust.fileio import write_csv_atomic
    from marsdust.formats.mdad_table import write_v10_table
    from marsdust.synth.writer import prepare_output_dir, write_list_ls

    simulation = Simulation(config, seed, out_dir=out_dir)
    grids = cube_grids(simulation)  # checked before anything is written
    out = prepare_output_dir(out_dir, overwrite)
    maps = simulation.maps

    storms_rows: list[dict] = []
    bar = tqdm(total=len(maps), desc=f"synth {config.name}", unit="map", disable=not progress)
    # maps are in time order, so each Mars year is one contiguous run: one cube per year
    for year, year_maps in maps.groupby("mars_year", sort=False):
        storms_rows += write_year(simulation, year_maps, out, grids.get(year), bar.update)
    bar.close()

    for subphase, rows in maps.groupby("subphase", sort=False):
        write_list_ls(rows, out / "archive" / subphase / "list_ls.txt", name_column="file_stem")
    storms = pd.DataFrame(storms_rows, columns=STORM_COLUMNS)
    write_v10_table(storms, out / "mdad" / "MDAD.csv")
    write_csv_atomic(storms, out / "truth" / "storms.csv")
    map_table = maps[map_columns(config)]
    # paths relative to the output folder, so a synthesized dataset can be moved or copied
    relative = map_table.assign(path=[Path(p).relative_to(out).as_posix() for p in map_table["path"]])
    write_csv_atomic(relative, out / "truth" / "maps.csv")
    return {"maps": map_table.reset_index(drop=True), "storms": storms}


def map_columns(config: SynthConfig) -> list[str]:
    """Columns of ``truth/maps.csv``: ``camera`` is added when a camera other than MOC is configured."""
    columns = ["map_id", "subphase", "sol", "mars_year", "ls", "path", "haze_tau", "day", "sol_of_year"]
    return columns + ["camera"] if {epoch.camera.name for epoch in config.cameras} != {"moc"} else columns


def cube_grids(simulation: Simulation) -> dict[int, MapGrid]:
    """The grid of each Mars year's v1.1 cube: the grid of the year's maps whose ``cubes`` flag is on.

    Years without such maps get no cube (no key). Raises ValueError for a year whose cube maps
    come from cameras on different grids (one cube has one grid).
    """
    grids: dict[int, MapGrid] = {}
    maps = simulation.maps
    for year, cameras in maps[maps["cubes"]].groupby("mars_year")["camera"]:
        year_grids = {simulation.imagers[camera].grid for camera in cameras.unique()}
        if len(year_grids) > 1:
            raise ValueError(f"MY{year}: maps of cameras on different grids ({', '.join(sorted(cameras.unique()))}) "
                             "cannot share one MDAD v1.1 cube; turn write_cubes off for one camera's epoch")
        grids[int(year)] = year_grids.pop()
    return grids


def write_year(simulation: Simulation, year_maps: pd.DataFrame, out: Path, cube_grid: MapGrid | None,
               done=lambda: None) -> list[dict]:
    """Draw and write the maps (and cloud masks) of one Mars year, its v1.1 cube and master CSV.

    The cube (on ``cube_grid``; None: no cube) and the master CSV hold the year's maps whose
    ``cubes`` flag is on. ``done()`` is called after each map. Returns the year's catalog rows.
    """
    from contextlib import nullcontext

    from marsdust.formats.mdad_cube import MaskCubeWriter, MaskStep, write_master_csv
    from marsdust.mdad_format import cube_path

    year = int(year_maps["mars_year"].iloc[0])
    cube = (MaskCubeWriter(cube_path(out / "mdad", year), cube_grid, title=CUBE_TITLE, complevel=1,
                           attributes={"source": CUBE_SOURCE}) if cube_grid is not None else nullcontext())
    year_rows: list[dict] = []
    cube_rows: list[dict] = []
    with cube:
        for row in year_maps.to_dict("records"):
            result = simulation.draw(row)
            simulation.imagers[row["camera"]].camera.map_format.write(result.view.rgb, Path(row["path"]))
            if simulation.config.write_cloud_masks:
                write_sol_cloud_mask(result, simulation.grid_of(row), out)
            year_rows += result.storms
            if row["cubes"]:
                cube_rows += result.storms
                valid = result.view.valid
                cube.append(MaskStep(row["subphase"], row["sol"], row["mars_year"], row["ls"],
                                     np.where(valid, result.labels, 0), valid, row["sol_of_year"]))
            done()
    if cube_grid is not None:
        write_master_csv(pd.DataFrame(cube_rows, columns=STORM_COLUMNS), master_csv_path(out / "mdad", year))
    return year_rows


STORM_COLUMNS = ["map_id", "subphase", "sol", "mars_year", "ls", "lon", "lat", "area_km2", "confidence", "member_id",
                 "sequence_id", "polygon_wkt", "source", "member_key", "tau"]
