"""Mars Dust Activity Database (MDAD) readers: v1.0 tables, v1.1 netCDF cubes, MARCI cloud masks.

Public API
----------
* :func:`read_catalog` — a v1.0 table (CSV / XLSX), a v1.1 cube (``MDADMY{yy}.nc`` + a master
  CSV), or a folder holding them (the v1.1 head folder ``MY24/MDADMY24.nc`` … with one master CSV
  for all years) → the storm table (:data:`STORM_COLUMNS`, one row per storm instance, sorted by
  mars_year, ls, map_id, member_id). Tables are recognised by their columns (:func:`table_kind`);
  cube/master disagreements go to one warning or, ``strict``, an error (:class:`ConsistencyReport`).
* :func:`read_v10_table`, :func:`read_v11_cube` — the two layouts directly.
* :func:`parse_member_id` → :class:`MemberId`; :func:`instance_mask` — the pixel mask of one
  instance on demand; :func:`cube_grid` — the map grid a cube's pixels are placed on.
* :func:`read_cloud_mask` — MARCI cloud mask netCDF → xarray Dataset with ``cloudy`` / ``valid``.
* :class:`CatalogError` — a :class:`ValueError` naming the file, row and column.

Row numbers in errors are spreadsheet rows: the header is row 1, the first data row is row 2
(what a user sees in Excel / LibreOffice, and the line number in a CSV without comments).

Cube pixel placement (v1.1) and member ids follow the rules of :mod:`marsdust.mdad_format`, which
the writers (:mod:`marsdust.export`, :mod:`marsdust.synth`) use too. Outlines are the pixel edges
of the instance's pixels on :meth:`MapGrid.marci` at the cube's resolution, split at 180° (pixels
never cross the map edge, so a storm across 180° comes back as a MultiPolygon).
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

from marsdust.grid import MapGrid, normalize_lon
from marsdust.mdad_format import (  # noqa: F401 - MemberId, cube_grid, MASTER_COLUMNS: re-exported public names
    CONFIDENCE_LEVELS,
    DAY_LIST_VARIABLE,
    LABELS_VARIABLE,
    MASTER_COLUMNS,
    MAX_STORM_LABEL,
    MISSING_VALUE,
    SPLIT_OFFSET,
    TIME_LIST_COLUMNS,
    TIME_LIST_MEDIAN_LS,
    TIME_LIST_VARIABLE,
    CatalogError,
    MemberId,
    cube_grid,
    cube_latitudes_deg,
    mars_year_from_name,
    parse_member_id,
)
from marsdust.naming import make_map_id, parse_map_name

log = logging.getLogger(__name__)

STORM_COLUMNS = [
    "map_id", "subphase", "sol", "mars_year", "ls", "lon", "lat", "area_km2",
    "confidence", "member_id", "sequence_id", "polygon_wkt",
]
"""Columns of the storm table, in order (``polygon_wkt`` is missing (None / NaN: test with ``pd.isna``) where no outline is known)."""

# ---------------------------------------------------------------------------------------------
# row validation shared by v1.0 tables and v1.1 master CSVs
# ---------------------------------------------------------------------------------------------
def _normalize_header(name) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_")


_ALIASES: dict[str, tuple[str, ...]] = {
    "mars_year": ("mars_year", "my", "marsyear", "year"),
    "subphase": ("mission_subphase", "subphase", "mission_sub_phase", "sub_phase", "phase"),
    "sol": ("sol", "day"),
    "ls": ("ls", "swathls", "swath_ls", "l_s", "solar_longitude"),
    "lon": ("centroid_longitude", "centroid_lon", "lon", "longitude", "centroid_longitude_e",
            "centroid_longitude_deg_e"),
    "lat": ("centroid_latitude", "centroid_lat", "lat", "latitude", "centroid_latitude_n",
            "centroid_latitude_deg_n"),
    "area_km2": ("area_square_km", "area", "area_km2", "area_km_2", "area_sq_km", "area_km"),
    "confidence": ("confidence_interval", "confidence_flag", "confidence", "confidence_level", "conf"),
    "member_id": ("member_id", "mem_id", "memberid", "member"),
    "sequence_id": ("sequence_id", "seq_id", "sequenceid", "sequence"),
}
_REQUIRED = ("subphase", "sol", "ls", "lon", "lat", "area_km2", "confidence", "member_id")


def _map_columns(columns, source: str, required: tuple[str, ...]) -> dict[str, str]:
    """Canonical column -> the file's header, by normalized alias."""
    normalized: dict[str, str] = {}
    for column in columns:
        normalized.setdefault(_normalize_header(column), column)
    mapping = {}
    for canonical, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in normalized:
                mapping[canonical] = normalized[alias]
                break
    missing = [c for c in required if c not in mapping]
    if missing:
        expected = "; ".join(f"{c} (e.g. {_ALIASES[c][0]!r})" for c in missing)
        raise CatalogError(f"{source}: missing required column(s) {expected}; found columns {list(columns)}")
    return mapping


class _RowErrors:
    """Collects per-row problems: raise on the first, or drop rows with one warning."""

    def __init__(self, source: str, skip_bad: bool):
        self.source = source
        self.skip_bad = skip_bad
        self.bad: dict[int, str] = {}

    def add(self, row_numbers: np.ndarray, column: str, message: str) -> None:
        """Report ``message`` for each spreadsheet row in ``row_numbers`` (column = file header)."""
        rows = [int(r) for r in np.atleast_1d(row_numbers)]
        if not rows:
            return
        text = f"{self.source}: row {rows[0]}, column {column!r}: {message}"
        if not self.skip_bad:
            more = f" (and {len(rows) - 1} more row(s))" if len(rows) > 1 else ""
            raise CatalogError(text + more + "; pass skip_bad=True (--skip-bad) to drop bad rows")
        for row in rows:
            self.bad.setdefault(row, f"row {row}, column {column!r}: {message}")

    def warn_dropped(self) -> None:
        if not self.bad:
            return
        rows = sorted(self.bad)
        shown = ", ".join(map(str, rows[:50])) + (" …" if len(rows) > 50 else "")
        first = self.bad[rows[0]]
        message = f"{self.source}: dropped {len(rows)} bad row(s) (spreadsheet rows {shown}); first: {first}"
        warnings.warn(message, UserWarning, stacklevel=3)  # once: the CLI prints caught warnings, not log lines


def _numeric(series: pd.Series) -> pd.Series:
    if series.dtype == object or pd.api.types.is_string_dtype(series):
        series = series.astype(str).str.strip().str.rstrip("%")
    return pd.to_numeric(series, errors="coerce")


def _clean_sequence(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return "" if text.lower() in ("nan", "none", "") else text


def _normalize_rows(
    raw: pd.DataFrame, mapping: dict[str, str], errors: _RowErrors, mars_year: int | None = None
) -> pd.DataFrame:
    """Validate and convert a table with known column mapping into storm-table rows."""
    rows = pd.Series(np.arange(len(raw)) + 2, index=raw.index)  # spreadsheet rows, header = 1
    out = pd.DataFrame(index=raw.index)

    def check(bad_mask: pd.Series, canonical: str, message: str) -> None:
        bad_mask = bad_mask.fillna(True).astype(bool)
        if bad_mask.any():
            errors.add(rows[bad_mask].to_numpy(), mapping.get(canonical, canonical), message)

    if mars_year is not None:
        out["mars_year"] = mars_year
    else:
        year = _numeric(raw[mapping["mars_year"]])
        check(~(year.notna() & (year == year.round()) & (year >= 0)), "mars_year", "Mars year must be a whole number")
        out["mars_year"] = year

    subphase = raw[mapping["subphase"]].astype(str).str.strip().str.upper()
    check(~subphase.str.fullmatch(r"[A-Z]+\d*"), "subphase", "mission subphase must look like 'R18' or 'D01'")
    out["subphase"] = subphase

    sol = _numeric(raw[mapping["sol"]])
    check(~(sol.notna() & (sol == sol.round()) & (sol >= 0)), "sol", "sol must be a whole number >= 0")
    out["sol"] = sol

    ls = _numeric(raw[mapping["ls"]])
    check(~(ls.notna() & (ls >= 0) & (ls <= 360)), "ls", "Ls must be a number in [0, 360] degrees")
    out["ls"] = ls % 360.0

    lon = _numeric(raw[mapping["lon"]])
    check(~(lon.notna() & (lon >= -180) & (lon <= 360)), "lon",
          "centroid longitude must be a number in [-180, 360] degrees (east-positive)")
    out["lon"] = normalize_lon(lon.fillna(0.0).to_numpy())

    lat = _numeric(raw[mapping["lat"]])
    check(~(lat.notna() & (lat >= -90) & (lat <= 90)), "lat", "centroid latitude must be a number in [-90, 90] degrees")
    out["lat"] = lat

    area = _numeric(raw[mapping["area_km2"]])
    check(~(area.notna() & (area >= 0)), "area_km2", "area must be a number >= 0 (km²)")
    out["area_km2"] = area

    confidence = _numeric(raw[mapping["confidence"]])
    check(~confidence.isin(CONFIDENCE_LEVELS), "confidence", "confidence must be one of 50, 75, 100")
    out["confidence"] = confidence

    member_text = raw[mapping["member_id"]]
    parsed_ok = []
    cleaned = []
    for value in member_text:
        try:
            member = parse_member_id(value)
            parsed_ok.append(True)
            cleaned.append(member.text)
        except ValueError:
            parsed_ok.append(False)
            cleaned.append("")
    check(~pd.Series(parsed_ok, index=raw.index), "member_id",
          "member ID must look like 'D01_031', 'D16_001b', 'D01_031+032' or 'P08_033+P09_010+011+013'")
    out["member_id"] = cleaned

    if "sequence_id" in mapping:
        out["sequence_id"] = [_clean_sequence(v) for v in raw[mapping["sequence_id"]]]
    else:
        out["sequence_id"] = ""
    out["_row"] = rows
    return out


def _finish(out: pd.DataFrame, errors: _RowErrors) -> pd.DataFrame:
    """Drop bad rows (skip_bad), build map ids, set dtypes and column order."""
    if errors.bad:
        out = out.loc[~out["_row"].isin(list(errors.bad))]
    errors.warn_dropped()
    out = _drop_duplicate_rows(out, errors.source)
    out["sol"] = out["sol"].astype("int64")
    out["mars_year"] = out["mars_year"].astype("int64")
    out["confidence"] = out["confidence"].astype("int64")
    out["map_id"] = [make_map_id(sp, sol) for sp, sol in zip(out["subphase"], out["sol"])]
    if "polygon_wkt" not in out:
        out["polygon_wkt"] = None
    return out


def _drop_duplicate_rows(out: pd.DataFrame, source: str) -> pd.DataFrame:
    """Drop exact repeats of a row (same values in every column), with one warning naming them."""
    duplicated = out.duplicated(subset=[c for c in out.columns if c != "_row"], keep="first")
    if duplicated.any():
        rows = out.loc[duplicated, "_row"].astype(int).tolist()
        shown = ", ".join(map(str, rows[:20])) + (" …" if len(rows) > 20 else "")
        warnings.warn(f"{source}: dropped {len(rows)} exact duplicate row(s) (spreadsheet rows {shown}): "
                      "each repeats an earlier row in every column", UserWarning, stacklevel=4)
    return out.loc[~duplicated].copy()


def _sort_storms(df: pd.DataFrame) -> pd.DataFrame:
    df = df.sort_values(["mars_year", "ls", "map_id", "member_id"], kind="stable").reset_index(drop=True)
    return df[STORM_COLUMNS]


def empty_storm_table() -> pd.DataFrame:
    """A storm table with no rows and the right columns."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(STORM_COLUMNS, [
        str, str, "int64", "int64", float, float, float, float, "int64", str, str, object])})


# ---------------------------------------------------------------------------------------------
# v1.0 tables
# ---------------------------------------------------------------------------------------------
def _read_table_file(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in (".xlsx", ".xlsm", ".xls"):
            return pd.read_excel(path, dtype=object)
        return pd.read_csv(path, dtype=str, skipinitialspace=True, keep_default_na=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # pandas / openpyxl raise many kinds
        raise CatalogError(f"{path}: cannot read table ({type(exc).__name__}: {exc})") from exc


def read_v10_table(path: str | os.PathLike, skip_bad: bool = False) -> pd.DataFrame:
    """Read an MDAD v1.0 table (CSV or XLSX) into the storm table.

    Headers are matched case- and space-insensitively against the real catalogue's names
    (``Mars Year``, ``Mission subphase``, ``Sol``, ``Ls``, ``Centroid longitude``, ``Centroid
    latitude``, ``Area (square km)``, ``Confidence interval``, ``Member ID``, ``Sequence ID``)
    and aliases (``MY``, ``swathLs``, ``centroid_lon``, ``mem_ID``, …). Longitudes in
    [0, 360) are accepted and normalized to [-180, 180). ``polygon_wkt`` is None.

    Raises
    ------
    CatalogError
        Missing column, or a bad value (unless ``skip_bad``: those rows are dropped with one warning).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MDAD table not found")
    raw = _read_table_file(path)
    raw = raw.dropna(how="all")
    mapping = _map_columns(raw.columns, str(path), ("mars_year",) + _REQUIRED)
    errors = _RowErrors(str(path), skip_bad)
    out = _finish(_normalize_rows(raw, mapping, errors), errors)
    return _sort_storms(out)


# ---------------------------------------------------------------------------------------------
# v1.1 cubes
# ---------------------------------------------------------------------------------------------
def _find_axis(names_sizes: dict[str, int], keys: tuple[str, ...]) -> str | None:
    for name in names_sizes:
        lower = name.lower()
        if any(lower == k or lower.startswith(k) for k in keys):
            return name
    return None


@dataclass
class _Cube:
    """An open v1.1 cube: the netCDF handle, axis order and pixel placement."""

    path: str
    dataset: object  # netCDF4.Dataset
    variable: object
    lon_axis: int
    lat_axis: int
    time_axis: int
    column_order: np.ndarray  # cube longitude index for each map column (west to east)
    row_index: np.ndarray  # cube latitude index for each map row (north to south)
    grid: MapGrid
    days: list[tuple[str, int]]
    median_ls: np.ndarray | None = None  # timeList column 7 (median Ls of the day's swaths, degrees)

    def close(self) -> None:
        self.dataset.close()

    def day_index(self, subphase: str, sol: int) -> int | None:
        try:
            return self.days.index((subphase.upper(), int(sol)))
        except ValueError:
            return None

    def labels(self, time_index: int) -> np.ndarray:
        """The cube slice of one time step as a uint8 map ``(H, W)`` (row 0 north, column 0 at 180°W)."""
        index = [slice(None)] * 3
        index[self.time_axis] = time_index
        data = np.asarray(self.variable[tuple(index)])
        if np.ma.isMaskedArray(data):
            data = data.filled(MISSING_VALUE)
        # remaining axes keep their relative order
        axes = [a for a in range(3) if a != self.time_axis]
        data = np.asarray(data, dtype=np.uint8)
        if axes.index(self.lat_axis) != 0:
            data = data.T  # -> (lat, lon)
        return data[np.ix_(self.row_index, self.column_order)]


def _decode_strings(values) -> list[str]:
    array = np.asarray(values)
    if array.dtype.kind == "S" and array.ndim == 2:
        return [b"".join(row).decode("utf-8", "replace").strip("\x00 ").strip() for row in array]
    if array.dtype.kind in "SO":
        return [v.decode("utf-8", "replace").strip() if isinstance(v, bytes) else str(v).strip() for v in array]
    return [str(v).strip() for v in array]


def _assumed_cube_axes(path: str, n_lon: int, n_lat: int, lon: np.ndarray | None,
                       lat: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Axes of a cube without coordinate variables, as MDAD v1.1 lays them out.

    Longitudes -180 … 180 - res (every ``360 / n_lon`` degrees from -180); latitudes -90 … 90
    point-registered (``n_lat = n_lon / 2 + 1``) or, with ``n_lat = n_lon / 2``, cell centres from
    the south. Logged, since the layout is assumed rather than read.
    """
    res = 360.0 / n_lon
    if lon is None:
        lon = -180.0 + res * np.arange(n_lon)
    if lat is None:
        if n_lat == n_lon // 2 + 1:
            lat = cube_latitudes_deg(res)
        elif n_lat == n_lon // 2:
            lat = -90.0 + res * (np.arange(n_lat) + 0.5)
        else:
            raise CatalogError(f"{path}: no latitude coordinate, and {n_lat} latitudes fit neither -90 … 90 "
                               f"point-registered ({n_lon // 2 + 1}) nor cell centres ({n_lon // 2}) at {res}°")
    log.warning("%s: no longitude/latitude coordinate variables; assuming the MDAD v1.1 layout "
                "(longitude -180 … %g, latitude -90 … 90 at %g°)", path, 180.0 - res, res)
    return lon, lat


def _median_ls(dataset, variables: dict[str, str], n_steps: int) -> np.ndarray | None:
    """Median Ls per time step (``timeList[:, 7]``, degrees), or None if the cube has no such column."""
    name = variables.get(TIME_LIST_VARIABLE.lower())
    if name is None:
        return None
    values = np.asarray(dataset.variables[name][:], dtype=np.float64)
    if values.ndim != 2 or values.shape != (n_steps, TIME_LIST_COLUMNS):
        return None
    return values[:, TIME_LIST_MEDIAN_LS]


def _open_cube(nc_path: str | os.PathLike) -> _Cube:
    import netCDF4

    path = str(nc_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: MDAD netCDF cube not found")
    try:
        dataset = netCDF4.Dataset(path, "r")
    except OSError as exc:
        raise CatalogError(f"{path}: not a readable netCDF file ({exc})") from exc
    try:
        dataset.set_auto_mask(False)
        variables = {name.lower(): name for name in dataset.variables}
        if LABELS_VARIABLE.lower() not in variables:
            raise CatalogError(f"{path}: no variable {LABELS_VARIABLE!r} (found {list(dataset.variables)}); "
                               "not an MDAD v1.1 cube")
        variable = dataset.variables[variables[LABELS_VARIABLE.lower()]]
        if variable.ndim != 3:
            raise CatalogError(f"{path}: variable MDAD has {variable.ndim} dimensions; expected (time, longitude, latitude)")
        dims = dict(zip(variable.dimensions, variable.shape))
        lon_dim = _find_axis(dims, ("lon", "x"))
        lat_dim = _find_axis(dims, ("lat", "y"))
        time_dim = _find_axis(dims, ("time", "t", "day"))
        if lon_dim is None or lat_dim is None or len({lon_dim, lat_dim}) < 2:
            # by size: longitude is the axis with 2 x (latitude - 1) or 2 x latitude values
            sizes = list(dims.items())
            for a_name, a_size in sizes:
                for b_name, b_size in sizes:
                    if a_name != b_name and a_size in (2 * (b_size - 1), 2 * b_size):
                        lon_dim, lat_dim = a_name, b_name
            if lon_dim is None or lat_dim is None:
                raise CatalogError(f"{path}: cannot tell longitude and latitude axes of MDAD{tuple(dims)}")
        if time_dim is None or time_dim in (lon_dim, lat_dim):
            time_dim = next(d for d in dims if d not in (lon_dim, lat_dim))
        if DAY_LIST_VARIABLE.lower() not in variables:
            raise CatalogError(f"{path}: no variable {DAY_LIST_VARIABLE!r} (found {list(dataset.variables)})")

        def coordinate(dim: str, label: str) -> np.ndarray | None:
            if dim in dataset.variables:
                return np.asarray(dataset.variables[dim][:], dtype=np.float64)
            alias = variables.get(label)
            if alias is not None and dataset.variables[alias].shape == (dims[dim],):
                return np.asarray(dataset.variables[alias][:], dtype=np.float64)
            return None

        lon = coordinate(lon_dim, "longitude")
        lat = coordinate(lat_dim, "latitude")
        if lon is None or lat is None:
            lon, lat = _assumed_cube_axes(path, dims[lon_dim], dims[lat_dim], lon, lat)
        grid, column_order, row_index = cube_grid(lon, lat, path)
        day_names = _decode_strings(dataset.variables[variables[DAY_LIST_VARIABLE.lower()]][:])
        if len(day_names) != dims[time_dim]:
            raise CatalogError(f"{path}: dayList has {len(day_names)} entries but MDAD has {dims[time_dim]} time steps")
        days = []
        for i, name in enumerate(day_names):
            try:
                days.append(parse_map_name(name))
            except ValueError as exc:
                raise CatalogError(f"{path}: dayList[{i}]: {exc}") from exc
        order = list(variable.dimensions)
        return _Cube(path, dataset, variable, order.index(lon_dim), order.index(lat_dim), order.index(time_dim),
                     column_order, row_index, grid, days, _median_ls(dataset, variables, len(days)))
    except BaseException:
        dataset.close()
        raise


def _mask_polygon(mask: np.ndarray, grid: MapGrid):
    """Pixel-edge outline (lon/lat degrees) of the True pixels of a map mask, or None if empty."""
    from shapely.geometry import MultiPolygon

    if not mask.any():
        return None
    geometry = grid.mask_to_polygon(mask)
    return geometry if geometry.geom_type == "Polygon" else MultiPolygon(list(geometry.geoms))


# ---------------------------------------------------------------------------------------------
# catalog files recognised by their columns
# ---------------------------------------------------------------------------------------------
_TABLE_SUFFIXES = (".csv", ".xlsx", ".xlsm", ".xls")


def table_kind(path: str | os.PathLike) -> str | None:
    """What an MDAD table file is, from its header: ``"master"``, ``"table"`` or None.

    ``"master"``: a v1.1 master CSV (member ID and sol columns, no Mars year column);
    ``"table"``: a v1.0 table (the same with a Mars year column); None: neither, or unreadable.
    Header spellings are matched as :func:`read_v10_table` matches them.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".xlsx", ".xlsm", ".xls"):
            header = pd.read_excel(path, nrows=0).columns
        else:
            header = pd.read_csv(path, nrows=0, dtype=str).columns
    except Exception:  # noqa: BLE001 - an unreadable file is simply not a catalog table
        return None
    normalized = {_normalize_header(c) for c in header}

    def has(canonical: str) -> bool:
        return any(alias in normalized for alias in _ALIASES[canonical])

    if not (has("member_id") and has("sol")):
        return None
    return "table" if has("mars_year") else "master"


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
        elif suffix in _TABLE_SUFFIXES:
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


@dataclass
class ConsistencyReport:
    """Disagreements between v1.1 cubes and master rows (each entry a short text naming file and row/step)."""

    rows_without_pixels: list[str]
    ls_mismatches: list[str]
    steps_without_rows: list[str]
    rows_without_step: list[str]

    @classmethod
    def empty(cls) -> "ConsistencyReport":
        return cls([], [], [], [])

    def message(self, shown: int = 3) -> str | None:
        """One line with each kind counted and its first ``shown`` entries, or None if consistent."""
        kinds = (
            (self.rows_without_pixels, "row(s) whose mask value has no pixels on their day (polygon_wkt empty)"),
            (self.ls_mismatches, f"row(s) whose swathLs differs from the cube day's median Ls by more than "
                                 f"{LS_TOLERANCE_DEG}°"),
            (self.steps_without_rows, "cube time step(s) with storm pixels but no master row"),
            (self.rows_without_step, "master row(s) matching no cube time step (dropped)"),
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
    year = mars_year if mars_year is not None else mars_year_from_name(nc_path)
    if year is None:
        raise CatalogError(f"{nc_path}: cannot tell the Mars year from the name (expected MY{{yy}}/MDADMY{{yy}}.nc); "
                           "pass mars_year")
    return year


def _outline_rows(cube: _Cube, out: pd.DataFrame, positions: np.ndarray, times: np.ndarray, master: Path,
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
        geometry = _mask_polygon(labels == parse_member_id(row["member_id"]).mask_value, cube.grid)
        if geometry is None:
            report.rows_without_pixels.append(where)
        else:
            polygons[k] = shapely.to_wkt(geometry, rounding_precision=6, trim=True)
        if cube.median_ls is not None and np.isfinite(cube.median_ls[t]):
            difference = _ls_difference_deg(float(row["ls"]), float(cube.median_ls[t]))
            if difference > LS_TOLERANCE_DEG:
                report.ls_mismatches.append(f"{where}: swathLs {row['ls']:g} vs {cube.median_ls[t]:g}")
    return polygons


def _steps_with_storms_but_no_rows(cube: _Cube, used: set[int]) -> list[str]:
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
    raw = _read_table_file(master).dropna(how="all")
    mapping = _map_columns(raw.columns, str(master), _REQUIRED)
    errors = _RowErrors(str(master), skip_bad)
    rows = _finish(_normalize_rows(raw, mapping, errors, mars_year=-1), errors)
    keys = list(zip(rows["subphase"], rows["sol"]))
    cube_of_row = np.full(len(rows), -1, dtype=np.int64)
    time_of_row = np.full(len(rows), -1, dtype=np.int64)
    pieces = []
    for k, (nc_path, year) in enumerate(cubes):
        cube = _open_cube(nc_path)
        try:
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
        finally:
            cube.close()
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
        Defaults to the number in the file or folder name (``MY25/MDADMY25.nc`` → 25).
    strict : bool
        Raise :class:`CatalogError` on the consistency problems (see Returns) instead of warning.

    Returns
    -------
    DataFrame
        One row per master-CSV row of this cube's days, :data:`STORM_COLUMNS`; ``polygon_wkt`` is
        the outline of the pixels holding the instance's mask value (the first member's, see
        :class:`MemberId`) on its day. Rows without pixels, swathLs more than
        :data:`LS_TOLERANCE_DEG` from the day's median Ls (``timeList[:, 7]``), days with storm
        pixels but no row are counted and listed in one warning (:class:`ConsistencyReport`).
    """
    nc_path = Path(nc_path)
    year = _cube_year(nc_path, mars_year)
    master = Path(master_csv) if master_csv is not None else find_master_csv(nc_path)
    report = ConsistencyReport.empty()
    out = _read_cubes_with_master([(nc_path, year)], master, skip_bad, report)
    report.emit(strict)
    return _sort_storms(out)


def instance_mask(nc_path: str | os.PathLike, map_id: str, member_id: str) -> tuple[np.ndarray, MapGrid]:
    """Pixel mask of one storm instance from a v1.1 cube.

    Parameters
    ----------
    nc_path : path
        The cube ``MDADMY{yy}.nc``.
    map_id : str
        The map (day), e.g. ``"d01_005"`` (any form :func:`marsdust.naming.parse_map_name` takes).
    member_id : str
        MDAD member ID (``D01_031``, ``D16_001b``, ``D01_031+032``, …).

    Returns
    -------
    mask : ndarray of bool, shape grid.shape
        True on the instance's pixels (row 0 north, column 0 at 180°W).
    grid : MapGrid
        The global grid at the cube's resolution.
    """
    subphase, sol = parse_map_name(map_id)
    member = parse_member_id(member_id)
    cube = _open_cube(nc_path)
    try:
        index = cube.day_index(subphase, sol)
        if index is None:
            raise CatalogError(f"{nc_path}: no time step for map {map_id} in dayList")
        labels = cube.labels(index)
        return np.isin(labels, member.cube_values(subphase)), cube.grid
    finally:
        cube.close()


def cube_labels(nc_path: str | os.PathLike, map_id: str) -> tuple[np.ndarray, MapGrid]:
    """The raw cube values (uint8, 0 / 1–250 / 255) of one day on its map grid (row 0 north)."""
    subphase, sol = parse_map_name(map_id)
    cube = _open_cube(nc_path)
    try:
        index = cube.day_index(subphase, sol)
        if index is None:
            raise CatalogError(f"{nc_path}: no time step for map {map_id} in dayList")
        return cube.labels(index), cube.grid
    finally:
        cube.close()


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
    cube_years = {year for cubes in served.values() for _, year in cubes}
    for table in files.tables:
        rows = read_v10_table(table, skip_bad=skip_bad)
        covered = rows["mars_year"].isin(cube_years)
        parts.append(rows.loc[~covered])
        note = f"; {int(covered.sum())} rows of {_years_text(rows.loc[covered, 'mars_year'])} left to the cubes" \
            if covered.any() else ""
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
        years. In a folder the cubes give the rows, with outlines, of the Mars years they cover
        and the v1.0 tables the rows of the other years: a year is never taken from both. Which
        file gave which years is in ``df.attrs["sources"]`` (and logged).
    skip_bad : bool
        Drop rows with bad values, with one warning giving their count and row numbers,
        instead of raising :class:`CatalogError`.
    master : path, optional
        The master CSV to use for every cube (``--master``).
    strict : bool
        Raise :class:`CatalogError` on cube/master disagreements (:class:`ConsistencyReport`)
        instead of one warning.

    Returns
    -------
    DataFrame
        :data:`STORM_COLUMNS`, sorted by (mars_year, ls, map_id, member_id).
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
        if suffix not in _TABLE_SUFFIXES:
            raise CatalogError(f"{path}: expected an MDAD table (.csv/.xlsx), a netCDF cube (.nc) or a folder")
        if table_kind(path) == "master":
            raise CatalogError(f"{path}: a v1.1 master CSV (no Mars year column); give the MDAD folder or cube, "
                               "with this file as --master")
        return read_v10_table(path, skip_bad=skip_bad)
    parts, sources = _read_folder(path, skip_bad, master, report)
    for line in sources:
        log.debug("%s: %s", path, line)
    report.emit(strict)
    parts = [p for p in parts if len(p)]
    storms = _sort_storms(pd.concat(parts, ignore_index=True)) if parts else empty_storm_table()
    storms.attrs["sources"] = sources
    return storms


def save_catalog(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a storm table atomically: Parquet if ``path`` ends in ``.parquet``, else CSV."""
    from marsdust.fileio import write_table_atomic

    table = df[STORM_COLUMNS]
    table.attrs = {}
    write_table_atomic(table, path)


# ---------------------------------------------------------------------------------------------
# MARCI cloud masks
# ---------------------------------------------------------------------------------------------
def read_cloud_mask(path: str | os.PathLike):
    """Read a MARCI cloud mask (Wang & Gonzalez Abad) netCDF.

    Returns
    -------
    xarray.Dataset
        ``cloudmask`` as stored (-999 invalid, 0 clear, > 0 cloudy) plus boolean ``valid``
        (not -999 / fill / NaN) and ``cloudy`` (valid and > 0), with dims renamed to
        ``latitude`` / ``longitude``, longitudes east-positive in [-180, 180) ascending and
        latitudes descending (north first, like a map). Other dims (e.g. time) are kept first.

    Raises
    ------
    CatalogError
        Not readable, or no ``cloudmask`` / longitude / latitude.
    """
    import xarray as xr

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: cloud mask file not found")
    try:
        ds = xr.open_dataset(path, mask_and_scale=False)
    except Exception as exc:
        raise CatalogError(f"{path}: not a readable netCDF file ({exc})") from exc
    with ds:
        names = {str(n).lower(): n for n in list(ds.variables)}
        if "cloudmask" not in names:
            raise CatalogError(f"{path}: no variable 'cloudmask' (found {sorted(map(str, ds.variables))})")
        lon_name = next((names[k] for k in ("longitude", "lon") if k in names), None)
        lat_name = next((names[k] for k in ("latitude", "lat") if k in names), None)
        if lon_name is None or lat_name is None:
            raise CatalogError(f"{path}: needs 'longitude' and 'latitude' variables (found {sorted(map(str, ds.variables))})")
        mask = ds[names["cloudmask"]].load()
        lon = np.asarray(ds[lon_name].values, dtype=np.float64)
        lat = np.asarray(ds[lat_name].values, dtype=np.float64)
    if lon.ndim != 1 or lat.ndim != 1:
        raise CatalogError(f"{path}: longitude and latitude must be 1-D")
    dim_lon = next((d for d in mask.dims if mask.sizes[d] == lon.size and "lon" in str(d).lower()), None) \
        or next((d for d in mask.dims if mask.sizes[d] == lon.size), None)
    dim_lat = next((d for d in mask.dims if mask.sizes[d] == lat.size and "lat" in str(d).lower() and d != dim_lon), None) \
        or next((d for d in mask.dims if mask.sizes[d] == lat.size and d != dim_lon), None)
    if dim_lon is None or dim_lat is None:
        raise CatalogError(f"{path}: cloudmask dims {mask.dims} do not match longitude ({lon.size}) and latitude ({lat.size})")
    mask = mask.rename({dim_lon: "longitude", dim_lat: "latitude"})
    other = [d for d in mask.dims if d not in ("latitude", "longitude")]
    mask = mask.transpose(*other, "latitude", "longitude")
    mask = mask.assign_coords(longitude=normalize_lon(lon), latitude=lat)
    mask = mask.sortby("longitude").sortby("latitude", ascending=False)
    values = mask.values.astype(np.float64)
    fill = mask.attrs.get("_FillValue", mask.encoding.get("_FillValue"))
    valid = np.isfinite(values) & (values != -999)
    if fill is not None:
        valid &= values != float(fill)
    out = xr.Dataset(
        {
            "cloudmask": mask,
            "valid": (mask.dims, valid),
            "cloudy": (mask.dims, valid & (values > 0)),
        }
    )
    out["valid"].attrs["description"] = "True where the cloud mask has data (not -999 / fill)"
    out["cloudy"].attrs["description"] = "True where valid and cloudmask > 0"
    out.attrs["source"] = str(path)
    return out
