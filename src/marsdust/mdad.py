"""The catalog front door: any MDAD file or folder → the storm table, with the cube / master consistency checks.

Public API
----------
* :func:`read_catalog` — a v1.0 table (CSV / XLSX), a v1.1 cube (``MDADMY{yy}.nc`` + a master
  CSV), or a folder holding them (the v1.1 head folder ``MY24/MDADMY24.nc`` … with one master CSV
  for all years) → the storm table (:data:`marsdust.mdad_format.STORM_COLUMNS`, one row per storm
  instance, sorted by mars_year, ls, map_id, member_id). Tables are recognised by their columns
  (:func:`table_kind`, :func:`find_catalog_files`); each cube finds its master
  (:func:`find_master_csv`).
* :func:`read_v11_cube` — a cube and its master CSV → storm rows with outlines; cube/master
  disagreements go to one warning or, ``strict``, an error (:class:`ConsistencyReport`).
* :func:`save_catalog` — a storm table → CSV / Parquet.
* :func:`cube_map_ids` — the maps a set of cubes covers (the v1.0 rows of those maps give way to
  the cubes' rows).

The files themselves are read by the format modules: v1.0 tables by
:mod:`marsdust.formats.mdad_table`, cubes and master CSVs by :mod:`marsdust.formats.mdad_cube`
(which also gives one instance's pixels, :func:`~marsdust.formats.mdad_cube.instance_mask`),
following the rules of :mod:`marsdust.mdad_format`. Outlines are the pixel edges of the
instance's pixels on :meth:`MapGrid.marci` at the cube's resolution, split at 180° (pixels never
cross the map edge, so a storm across 180° comes back as a MultiPolygon).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from marsdust.formats.mdad_cube import MdadCube, cube_mars_years, open_cube, read_master_csv
from marsdust.formats.mdad_table import (
    TABLE_SUFFIXES,
    canonical_columns,
    empty_storm_table,
    read_table_header,
    read_v10_table,
    sort_storms,
)
from marsdust.grid import MapGrid
from marsdust.mdad_format import (
    MASTER_COLUMNS,
    MAX_STORM_LABEL,
    STORM_COLUMNS,
    CatalogError,
    mars_year_from_name,
    parse_member_id,
)
from marsdust.naming import make_map_id
from marsdust.outlines import mask_centroid_lonlat

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# catalog files recognised by their columns
# ---------------------------------------------------------------------------------------------
def table_kind(path: str | os.PathLike) -> str | None:
    """What an MDAD table file is, from its header: ``"master"``, ``"table"`` or None.

    ``"master"``: a v1.1 master CSV (member ID and sol columns, no Mars year column);
    ``"table"``: a v1.0 table (the same with a Mars year column); None: neither, or unreadable.
    Header spellings are matched as :func:`marsdust.formats.mdad_table.read_v10_table` matches
    them (:func:`marsdust.formats.mdad_table.canonical_columns`).
    """
    try:
        columns = canonical_columns(read_table_header(Path(path)))
    except Exception:  # noqa: BLE001 - an unreadable file is simply not a catalog table
        return None
    if not {"member_id", "sol"} <= columns:
        return None
    return "table" if "mars_year" in columns else "master"


@dataclass
class CatalogFiles:
    """The MDAD files under a folder: v1.1 cubes, master CSVs and v1.0 tables (found by their columns)."""

    cubes: list[Path]
    masters: list[Path]
    tables: list[Path]


def find_catalog_files(folder: str | os.PathLike) -> CatalogFiles:
    """Every MDAD cube (``**/MDAD*.nc``), master CSV and v1.0 table under ``folder`` (hidden files skipped)."""
    folder = Path(folder)
    cubes, masters, tables = [], [], []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).parts
        if any(part.startswith((".", "~$")) for part in relative) or not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix == ".nc" and re.search(r"MDAD", path.name, re.IGNORECASE):
            cubes.append(path)
        elif suffix in TABLE_SUFFIXES:
            kind = table_kind(path)
            if kind == "master":
                masters.append(path)
            elif kind == "table":
                tables.append(path)
    return CatalogFiles(cubes, masters, tables)


def find_master_csv(nc_path: str | os.PathLike, head: str | os.PathLike | None = None,
                    masters: list[Path] | None = None) -> Path:
    """The master CSV of a cube: beside it, else in a folder above it up to ``head``, else anywhere under ``head``.

    Parameters
    ----------
    nc_path : path
        The cube ``MY{yy}/MDADMY{yy}.nc``.
    head : path, optional
        The MDAD head folder (default: the folder above the cube's, as in ``MDAD/MY24/MDADMY24.nc``).
    masters : list of path, optional
        The master CSVs under ``head`` (default: found by :func:`find_catalog_files`).

    Raises
    ------
    CatalogError
        None found, or several equally near and none named for the cube's Mars year.
    """
    nc_path = Path(nc_path)
    head = Path(head) if head is not None else nc_path.parent.parent
    if masters is None:
        masters = find_catalog_files(head).masters
    folder = nc_path.parent
    levels = []
    while True:
        levels.append([m for m in masters if m.parent == folder])
        if folder == head or folder.parent == folder:
            break
        folder = folder.parent
    levels.append(list(masters))
    for candidates in levels:
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            year = mars_year_from_name(nc_path)
            named = [m for m in candidates if year is not None and mars_year_from_name(m) == year]
            if len(named) == 1:
                return named[0]
            names = ", ".join(str(m) for m in candidates)
            raise CatalogError(f"{nc_path}: several master CSVs could serve it ({names}); name one with --master")
    raise CatalogError(
        f"{nc_path}: no master CSV beside it, in {head} or under it (a CSV with columns "
        f"{', '.join(MASTER_COLUMNS)}); name it with --master"
    )


# ---------------------------------------------------------------------------------------------
# consistency of cubes and master rows
# ---------------------------------------------------------------------------------------------
LS_TOLERANCE_DEG = 0.5
"""Largest accepted difference between a master row's swathLs and its cube day's median Ls, degrees."""

AREA_TOLERANCE = 0.25
"""Largest accepted relative difference between a master row's area and its mask's area on the cube grid
(``|area / mask area - 1|``); a ×10 or ÷10 area is far outside."""

CENTROID_TOLERANCE_DEG = 5.0
"""Largest accepted great-circle distance between a master row's centroid and its mask's area-weighted
centroid on the cube grid, degrees."""


@dataclass
class ConsistencyReport:
    """Disagreements between v1.1 cubes and master rows (each entry a short text naming file and row/step)."""

    rows_without_pixels: list[str]
    ls_mismatches: list[str]
    steps_without_rows: list[str]
    rows_without_step: list[str]
    area_mismatches: list[str]
    centroid_mismatches: list[str]

    @classmethod
    def empty(cls) -> "ConsistencyReport":
        return cls([], [], [], [], [], [])

    def message(self, shown: int = 3) -> str | None:
        """One line with each kind counted and its first ``shown`` entries, or None if consistent."""
        kinds = (
            (self.rows_without_pixels, "row(s) whose mask value has no pixels on their day (polygon_wkt empty)"),
            (self.ls_mismatches, f"row(s) whose swathLs differs from the cube day's median Ls by more than "
                                 f"{LS_TOLERANCE_DEG}°"),
            (self.steps_without_rows, "cube time step(s) with storm pixels but no master row"),
            (self.rows_without_step, "master row(s) matching no cube time step (dropped)"),
            (self.area_mismatches, f"row(s) whose area differs from their mask's area by more than "
                                   f"{AREA_TOLERANCE:.0%}"),
            (self.centroid_mismatches, f"row(s) whose centroid lies more than {CENTROID_TOLERANCE_DEG:g}° from "
                                       "their mask's centroid"),
        )
        parts = []
        for entries, what in kinds:
            if entries:
                more = f", … {len(entries) - shown} more" if len(entries) > shown else ""
                parts.append(f"{len(entries)} {what}: {'; '.join(entries[:shown])}{more}")
        return "MDAD consistency: " + " | ".join(parts) if parts else None

    def emit(self, strict: bool) -> None:
        """Raise :class:`CatalogError` (``strict``) or warn once with :meth:`message`."""
        message = self.message()
        if message is None:
            return
        if strict:
            raise CatalogError(message + " (strict: run without --strict to read the catalog anyway)")
        warnings.warn(message, UserWarning, stacklevel=3)


def _ls_difference_deg(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def _cube_year(nc_path: Path, mars_year: int | None) -> int:
    """The Mars year of a cube: ``mars_year``, else its name's, else its ``marsYear`` variable's.

    A cube whose ``marsYear`` variable holds another year than the one named (or several years)
    is refused: its rows would be labelled with a wrong year.
    """
    named = mars_year if mars_year is not None else mars_year_from_name(nc_path)
    stored = cube_mars_years(nc_path)
    if named is not None and stored and stored != [named]:
        raise CatalogError(f"{nc_path}: named for MY{named} but its marsYear variable holds "
                           f"{', '.join(f'MY{y}' for y in stored)}; rename it MY{{yy}}/MDADMY{{yy}}.nc for its year")
    if named is not None:
        return named
    if len(stored) == 1:
        return stored[0]
    if stored:
        raise CatalogError(f"{nc_path}: holds several Mars years ({', '.join(f'MY{y}' for y in stored)}) in its "
                           "marsYear variable; MDAD keeps one cube per year (MY{yy}/MDADMY{yy}.nc)")
    raise CatalogError(f"{nc_path}: cannot tell the Mars year from the name (expected MY{{yy}}/MDADMY{{yy}}.nc) "
                       "or a marsYear variable; pass mars_year")


def _mask_polygon(mask: np.ndarray, grid: MapGrid):
    """Pixel-edge outline (lon/lat degrees) of the True pixels of a map mask, or None if empty."""
    from shapely.geometry import MultiPolygon

    if not mask.any():
        return None
    geometry = grid.mask_to_polygon(mask)
    return geometry if geometry.geom_type == "Polygon" else MultiPolygon(list(geometry.geoms))


def _outline_rows(cube: MdadCube, out: pd.DataFrame, positions: np.ndarray, times: np.ndarray, master: Path,
                  report: ConsistencyReport) -> list[str | None]:
    """Outlines (WKT) of the rows at ``positions`` from their days ``times``; checks pixels and Ls."""
    import shapely
    from tqdm.auto import tqdm

    polygons: list[str | None] = [None] * len(positions)
    current_t, labels = -1, None
    order = np.argsort(times, kind="stable")
    progress = tqdm(order, desc=f"outlines {Path(cube.path).name}", unit="storm", disable=len(order) < 500 or None)
    for k in progress:
        t, position = int(times[k]), positions[k]
        if t != current_t:
            labels, current_t = cube.labels(t), t
        row = out.iloc[position]
        where = f"{master.name} row {int(row['_row'])} ({row['member_id']} on {row['map_id']})"
        mask = labels == parse_member_id(row["member_id"]).mask_value
        geometry = _mask_polygon(mask, cube.grid)
        if geometry is None:
            report.rows_without_pixels.append(where)
        else:
            polygons[k] = shapely.to_wkt(geometry, rounding_precision=6, trim=True)
            _check_area_and_centroid(row, mask, cube.grid, where, report)
        if cube.median_ls is not None and np.isfinite(cube.median_ls[t]):
            difference = _ls_difference_deg(float(row["ls"]), float(cube.median_ls[t]))
            if difference > LS_TOLERANCE_DEG:
                report.ls_mismatches.append(f"{where}: swathLs {row['ls']:g} vs {cube.median_ls[t]:g}")
    return polygons


def _check_area_and_centroid(row: pd.Series, mask: np.ndarray, grid: MapGrid, where: str,
                             report: ConsistencyReport) -> None:
    """Report a master row whose area or centroid disagrees with its mask's (:data:`AREA_TOLERANCE`,
    :data:`CENTROID_TOLERANCE_DEG`); joined member ids (``A+B``) are left out: their mask value is the
    first member's pixels only."""
    if "+" in str(row["member_id"]):
        return
    mask_area_km2 = grid.mask_area_km2(mask)
    if abs(float(row["area_km2"]) / mask_area_km2 - 1.0) > AREA_TOLERANCE:
        report.area_mismatches.append(f"{where}: area {row['area_km2']:g} vs {mask_area_km2:.4g} km²")
    lon_deg, lat_deg = mask_centroid_lonlat(mask, grid)
    distance_deg = _great_circle_deg(float(row["lon"]), float(row["lat"]), lon_deg, lat_deg)
    if distance_deg > CENTROID_TOLERANCE_DEG:
        report.centroid_mismatches.append(f"{where}: centroid ({row['lon']:g}, {row['lat']:g}) vs "
                                          f"({lon_deg:.1f}, {lat_deg:.1f})")


def _great_circle_deg(lon_a: float, lat_a: float, lon_b: float, lat_b: float) -> float:
    """Angle between two lon/lat points on the sphere, degrees."""
    lon_a, lat_a, lon_b, lat_b = np.radians([lon_a, lat_a, lon_b, lat_b])
    cosine = np.sin(lat_a) * np.sin(lat_b) + np.cos(lat_a) * np.cos(lat_b) * np.cos(lon_a - lon_b)
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def _steps_with_storms_but_no_rows(cube: MdadCube, used: set[int]) -> list[str]:
    names = []
    for t, (subphase, sol) in enumerate(cube.days):
        if t in used:
            continue
        labels = cube.labels(t)
        if ((labels >= 1) & (labels <= MAX_STORM_LABEL)).any():
            names.append(f"{Path(cube.path).name} {make_map_id(subphase, sol)}")
    return names


def _read_cubes_with_master(cubes: list[tuple[Path, int]], master: Path, skip_bad: bool,
                            report: ConsistencyReport) -> pd.DataFrame:
    """Storm rows of one master CSV matched to the days of the cubes it serves (``(path, mars_year)``)."""
    rows = read_master_csv(master, skip_bad)
    keys = list(zip(rows["subphase"], rows["sol"]))
    cube_of_row = np.full(len(rows), -1, dtype=np.int64)
    time_of_row = np.full(len(rows), -1, dtype=np.int64)
    pieces = []
    for k, (nc_path, year) in enumerate(cubes):
        with open_cube(nc_path) as cube:
            day_to_t = {day: t for t, day in reversed(list(enumerate(cube.days)))}
            for i, key in enumerate(keys):
                if cube_of_row[i] < 0 and key in day_to_t:
                    cube_of_row[i], time_of_row[i] = k, day_to_t[key]
            mine = np.nonzero(cube_of_row == k)[0]
            piece = rows.iloc[mine].copy()
            piece["mars_year"] = year
            piece["polygon_wkt"] = _outline_rows(cube, piece, np.arange(len(piece)), time_of_row[mine], master, report)
            report.steps_without_rows += _steps_with_storms_but_no_rows(cube, set(time_of_row[mine].tolist()))
            pieces.append(piece)
    for i in np.nonzero(cube_of_row < 0)[0]:
        row = rows.iloc[i]
        day = f"{row['subphase']} sol {int(row['sol'])}"
        report.rows_without_step.append(f"{master.name} row {int(row['_row'])} ({day})")
    pieces = [p for p in pieces if len(p)]
    return pd.concat(pieces, ignore_index=True) if pieces else empty_storm_table()


def read_v11_cube(
    nc_path: str | os.PathLike, master_csv: str | os.PathLike | None = None, skip_bad: bool = False,
    mars_year: int | None = None, strict: bool = False,
) -> pd.DataFrame:
    """Read an MDAD v1.1 cube and its master CSV into the storm table, with outlines.

    Parameters
    ----------
    nc_path : path
        ``MY{yy}/MDADMY{yy}.nc``.
    master_csv : path, optional
        Default: the master CSV (found by its columns, :func:`table_kind`) beside the cube, else in
        the head folder above ``MY{yy}/``, else anywhere under it (:func:`find_master_csv`). One
        master may serve all years: its rows are matched to the cube's time steps by subphase and
        sol (``dayList`` entries ``B05_day03``); rows of other days are left out.
    skip_bad : bool
        Drop bad master rows (one warning) instead of raising.
    mars_year : int, optional
        Defaults to the number in the file or folder name (``MY25/MDADMY25.nc`` → 25), else the
        cube's ``marsYear`` variable (one year); a cube whose ``marsYear`` disagrees is refused.
    strict : bool
        Raise :class:`CatalogError` on the consistency problems (see Returns) instead of warning.

    Returns
    -------
    DataFrame
        One row per master-CSV row of this cube's days, :data:`~marsdust.mdad_format.STORM_COLUMNS`;
        ``polygon_wkt`` is the outline of the pixels holding the instance's mask value (the first
        member's, see :class:`~marsdust.mdad_format.MemberId`) on its day. Rows without pixels, swathLs more than
        :data:`LS_TOLERANCE_DEG` from the day's median Ls (``timeList[:, 7]``), days with storm
        pixels but no row are counted and listed in one warning (:class:`ConsistencyReport`).
    """
    nc_path = Path(nc_path)
    year = _cube_year(nc_path, mars_year)
    master = Path(master_csv) if master_csv is not None else find_master_csv(nc_path)
    report = ConsistencyReport.empty()
    out = _read_cubes_with_master([(nc_path, year)], master, skip_bad, report)
    report.emit(strict)
    return sort_storms(out)


# ---------------------------------------------------------------------------------------------
# dispatch: file or folder
# ---------------------------------------------------------------------------------------------
def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _years_text(years) -> str:
    years = sorted({int(y) for y in years})
    return ", ".join(f"MY{y}" for y in years) if years else "no rows"


def cube_map_ids(cubes: list[Path]) -> set[str]:
    """The maps (``map_id``, e.g. ``d01_005``) of every time step of the given cubes (their ``dayList``)."""
    maps: set[str] = set()
    for nc_path in cubes:
        with open_cube(nc_path) as cube:
            maps.update(make_map_id(subphase, sol) for subphase, sol in cube.days)
    return maps


def _read_folder(folder: Path, skip_bad: bool, master: Path | None,
                 report: ConsistencyReport) -> tuple[list, list[str]]:
    """Storm-table parts of a folder and the sources report (which file gave which years)."""
    files = find_catalog_files(folder)
    masters = [master] if master is not None else files.masters
    if not files.cubes and not files.tables:
        names = ", ".join(_relative(m, folder) for m in masters)
        found = f" (found master CSV(s) {names}, but no cube)" if masters else ""
        raise CatalogError(f"{folder}: no MDAD table (.csv/.xlsx with a Mars year column) or MY*/MDAD*.nc cube found "
                           f"in the folder{found}")
    if master is not None and not files.cubes:
        raise CatalogError(f"{folder}: holds v1.0 tables only, which have no master CSV; --master {master} "
                           "applies to v1.1 cubes only (leave it out)")
    sources: list[str] = []
    served: dict[Path, list[tuple[Path, int]]] = {}
    for cube in files.cubes:
        chosen = master if master is not None else find_master_csv(cube, folder, masters)
        served.setdefault(chosen, []).append((cube, _cube_year(cube, None)))
    parts = []
    for chosen, cubes in served.items():
        part = _read_cubes_with_master(cubes, chosen, skip_bad, report)
        parts.append(part)
        sources.append(f"v1.1 {', '.join(_relative(c, folder) for c, _ in cubes)} with master "
                       f"{_relative(chosen, folder)}: {len(part)} rows ({_years_text(part['mars_year'])})")
    unused = [m for m in files.masters if m not in served]
    if unused:
        sources.append(f"not read: master CSV(s) {', '.join(_relative(m, folder) for m in unused)} (no cube uses them)")
    cube_maps = cube_map_ids(files.cubes) if files.tables else set()
    for table in files.tables:
        rows = read_v10_table(table, skip_bad=skip_bad)
        covered = rows["map_id"].isin(cube_maps)
        parts.append(rows.loc[~covered])
        note = f"; {int(covered.sum())} rows of {_years_text(rows.loc[covered, 'mars_year'])} left to the cubes " \
               "(their maps are in a cube's dayList)" if covered.any() else ""
        sources.append(f"v1.0 {_relative(table, folder)}: {int((~covered).sum())} rows "
                       f"({_years_text(rows.loc[~covered, 'mars_year'])}){note}")
    return parts, sources


def read_catalog(path: str | os.PathLike, skip_bad: bool = False, master: str | os.PathLike | None = None,
                 strict: bool = False) -> pd.DataFrame:
    """Read MDAD into the storm table.

    Parameters
    ----------
    path : path
        A v1.0 table (``.csv`` / ``.xlsx``), a v1.1 cube (``.nc``), or a folder holding them (the
        MDAD v1.1 head folder ``MY24/MDADMY24.nc`` …). Tables are told apart by their columns
        (:func:`table_kind`), not their names: a v1.1 master CSV has no Mars year column, a
        v1.0 table has one. Each cube takes its master from beside it, else from the head folder,
        else from anywhere under ``path`` (:func:`find_master_csv`); one master may serve all
        years. In a folder the rule is per map: the cubes give the rows, with outlines, of the
        maps in their ``dayList`` (:func:`cube_map_ids`) and the v1.0 tables the rows of every
        other map, so a map is never taken from both, and a Mars year may mix the two (MY28:
        MOC maps in the v1.0 table only, MARCI maps in the cube). Which file gave which years
        is in ``df.attrs["sources"]`` (and logged).
    skip_bad : bool
        Drop rows with bad values, with one warning giving their count and row numbers,
        instead of raising :class:`CatalogError`.
    master : path, optional
        The master CSV to use for every cube (``--master``); refused for a v1.0 table or a folder
        without cubes.
    strict : bool
        Raise :class:`CatalogError` on cube/master disagreements (:class:`ConsistencyReport`: missing
        pixels, days or rows; swathLs, area or centroid out of tolerance) instead of one warning.

    Returns
    -------
    DataFrame
        :data:`~marsdust.mdad_format.STORM_COLUMNS`, sorted by (mars_year, ls, map_id, member_id).
    """
    path = Path(path)
    master = Path(master) if master is not None else None
    if not path.exists():
        raise FileNotFoundError(f"{path}: MDAD path not found")
    if master is not None and not master.is_file():
        raise FileNotFoundError(f"{master}: master CSV not found")
    report = ConsistencyReport.empty()
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".nc":
            return read_v11_cube(path, master_csv=master, skip_bad=skip_bad, strict=strict)
        if suffix not in TABLE_SUFFIXES:
            raise CatalogError(f"{path}: expected an MDAD table (.csv/.xlsx), a netCDF cube (.nc) or a folder")
        if table_kind(path) == "master":
            raise CatalogError(f"{path}: a v1.1 master CSV (no Mars year column); give the MDAD folder or cube, "
                               "with this file as --master")
        if master is not None:
            raise CatalogError(f"{path}: a v1.0 table, which has no master CSV; --master {master} applies to "
                               "v1.1 cubes only (leave it out)")
        return read_v10_table(path, skip_bad=skip_bad)
    parts, sources = _read_folder(path, skip_bad, master, report)
    for line in sources:
        log.debug("%s: %s", path, line)
    report.emit(strict)
    parts = [p for p in parts if len(p)]
    storms = sort_storms(pd.concat(parts, ignore_index=True)) if parts else empty_storm_table()
    storms.attrs["sources"] = sources
    return storms


def save_catalog(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a storm table atomically: Parquet if ``path`` ends in ``.parquet``, else CSV."""
    from marsdust.fileio import write_table_atomic

    table = df[STORM_COLUMNS]
    table.attrs = {}
    write_table_atomic(table, path)
