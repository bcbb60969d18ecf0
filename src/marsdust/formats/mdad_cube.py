"""The MDAD v1.1 cube (netCDF) and its master CSV: reading and writing.

A v1.1 catalog is one cube per Mars year, ``MY{yy}/MDADMY{yy}.nc``, holding per day (time step)
the storm label of every pixel, and a master CSV with one row per storm instance (the v1.0 table's
columns without the Mars year, :data:`marsdust.mdad_format.MASTER_COLUMNS`). The layout, the cube
values and the latitude registration are the rules of :mod:`marsdust.mdad_format`.

Reading
-------
* :func:`open_cube` → :class:`MdadCube`: a cube's axes found (:func:`marsdust.formats.netcdf.find_lon_lat_dims`;
  without coordinate variables the MDAD layout is assumed), its pixels placed on
  :meth:`MapGrid.marci` at its resolution (:func:`marsdust.mdad_format.cube_grid`), its days from
  ``dayList``; :meth:`MdadCube.labels` reads one day. A header declaring more than a cube holds
  (:data:`MAX_CUBE_DAY_VALUES` pixels a day, :data:`MAX_CUBE_TIME_STEPS` days) is refused before
  anything is read.
* :func:`instance_mask` — the pixels of one storm instance; :func:`cube_labels` — one day's raw values.
* :func:`read_master_csv` — a master CSV's rows, validated as a v1.0 table's are
  (:mod:`marsdust.formats.mdad_table`). Joining them to cube days, with outlines and the
  consistency checks, is :func:`marsdust.mdad.read_v11_cube`.

Writing
-------
* :class:`MaskCubeWriter` streams a cube one :class:`MaskStep` (one map) at a time;
  :func:`map_mask_step` builds a step from a map's storm masks; :func:`write_mask_cube` writes a
  whole cube.
* A resumable run writes one chunk per map (:func:`write_mask_chunk`) and merges them at the end
  (:func:`merge_mask_chunks`, on :func:`chunk_grid`), optionally upsampled to MDAD's 0.1° grid
  (:data:`MDAD_RES_DEG`, :func:`upsample_cube_slice`).
* CF layer of the cube: :func:`define_cube_axes` (cell bounds), :func:`define_grid_mapping` (Mars CRS),
  :func:`define_time_variables` (``time`` = Ls coordinate), :data:`LABEL_ATTRIBUTES`.
* :func:`cube_mars_years` — the Mars years a cube's ``marsYear`` variable holds.
* :func:`write_master_csv` writes the master CSV of a detections (or storm) table.
"""

from __future__ import annotations

import contextlib
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from marsdust.fileio import atomic_output, write_table
from marsdust.formats.geotiff import MARS_CRS_CODE, MARS_SPHERE_WKT
from marsdust.formats.mdad_table import (
    REQUIRED_COLUMNS,
    RowErrors,
    finish_rows,
    match_columns,
    normalize_rows,
    read_table_file,
)
from marsdust.formats.netcdf import NETCDF_LOCK, check_declared_size, find_lon_lat_dims, open_netcdf
from marsdust.grid import MARS_RADIUS_KM, MapGrid, normalize_lon
from marsdust.mdad_format import (
    DAY_LIST_VARIABLE,
    LABELS_VARIABLE,
    LAT_DIM,
    LON_DIM,
    MARS_YEAR_VARIABLE,
    MASTER_COLUMNS,
    MAX_STORM_LABEL,
    MISSING_VALUE,
    SOL_OF_YEAR_VARIABLE,
    TIME_DIM,
    TIME_LIST_COLUMNS,
    TIME_LIST_MEDIAN_LS,
    TIME_LIST_MEDIAN_SOL,
    TIME_LIST_START_LS,
    TIME_LIST_VARIABLE,
    TIME_STAT_DIM,
    CatalogError,
    cube_grid,
    cube_to_grid_labels,
    cube_latitudes_deg,
    day_list_entry,
    grid_labels_to_cube,
    member_cube_value,
    parse_member_id,
    sol_of_year_from_ls,
    time_list_row,
)
from marsdust.naming import parse_map_name
from marsdust.outlines import label_image

log = logging.getLogger(__name__)

MAX_CUBE_DAY_VALUES = 7200 * 3601
"""Most pixels one time step of a cube read may declare: a global grid at 0.05° (half MDAD's 0.1°), latitudes
point-registered. A cube is read one day at a time; a header declaring more is refused before any day is read."""
MAX_CUBE_TIME_STEPS = 100 * 669
"""Most time steps (days) a cube read may declare: 100 Mars years of 669 sols (MDAD has one cube per year).
``dayList``, ``timeList`` and ``marsYear`` are read whole, so their declared length is bounded by this."""
MAX_DAY_NAME_CHARS = 64
"""Longest ``dayList`` entry read when stored as characters (``D01_day05`` has 9)."""


# ---------------------------------------------------------------------------------------------
# reading cubes
# ---------------------------------------------------------------------------------------------
@dataclass
class MdadCube:
    """An open v1.1 cube (inside :func:`open_cube`'s block): its label variable, axis order and pixel placement.

    Attributes
    ----------
    path : str
    variable : netCDF4.Variable
        ``MDAD``, read raw.
    lon_axis, lat_axis, time_axis : int
        Positions of the three axes in ``variable``.
    column_order : ndarray of int
        Cube longitude index of each map column (west to east).
    row_index : ndarray of int
        Cube latitude index of each map row (north to south).
    grid : MapGrid
        :meth:`MapGrid.marci` at the cube's resolution.
    days : list of (subphase, sol)
        The map of each time step, from ``dayList``.
    median_ls : ndarray, optional
        ``timeList`` column 7 (median Ls of the day's swaths, degrees); None without ``timeList``.
    """

    path: str
    variable: object
    lon_axis: int
    lat_axis: int
    time_axis: int
    column_order: np.ndarray
    row_index: np.ndarray
    grid: MapGrid
    days: list[tuple[str, int]]
    median_ls: np.ndarray | None = None

    def day_index(self, subphase: str, sol: int) -> int | None:
        """The time step of a map (first if repeated), or None."""
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


def _coordinate(dataset, variables: dict[str, str], dim: str, size: int, label: str) -> np.ndarray | None:
    """The values of a cube axis: its coordinate variable, else a variable named ``label`` of its length."""
    if dim in dataset.variables:
        return np.asarray(dataset.variables[dim][:], dtype=np.float64)
    alias = variables.get(label)
    if alias is not None and dataset.variables[alias].shape == (size,):
        return np.asarray(dataset.variables[alias][:], dtype=np.float64)
    return None


def _cube_dims(variable, path: str) -> tuple[str, str, str]:
    """The longitude, latitude and time dimensions of ``MDAD`` (time: the one that is neither)."""
    dims = dict(zip(variable.dimensions, variable.shape))
    lon_dim, lat_dim = find_lon_lat_dims(dims)
    if lon_dim is None or lat_dim is None:
        raise CatalogError(f"{path}: cannot tell longitude and latitude axes of MDAD{tuple(dims)}")
    return lon_dim, lat_dim, next(d for d in dims if d not in (lon_dim, lat_dim))


def _cube_placement(dataset, variables: dict[str, str], dims: dict[str, int], lon_dim: str, lat_dim: str,
                    path: str) -> tuple[MapGrid, np.ndarray, np.ndarray]:
    """The map grid of a cube's pixels, with the cube index of each map column and row (:func:`cube_grid`)."""
    lon = _coordinate(dataset, variables, lon_dim, dims[lon_dim], "longitude")
    lat = _coordinate(dataset, variables, lat_dim, dims[lat_dim], "latitude")
    if lon is None or lat is None:
        lon, lat = _assumed_cube_axes(path, dims[lon_dim], dims[lat_dim], lon, lat)
    return cube_grid(lon, lat, path)


def _check_cube_sizes(dataset, variables: dict[str, str], variable, dims: tuple[str, str, str], path: str) -> None:
    """Refuse a cube whose header declares more than a cube holds, before any of it is read.

    Parameters
    ----------
    dataset : netCDF4.Dataset
    variables : dict
        The dataset's variable names by lower-case name.
    variable : netCDF4.Variable
        ``MDAD``.
    dims : (lon_dim, lat_dim, time_dim)
    path : str

    Raises
    ------
    CatalogError
        A day of more than :data:`MAX_CUBE_DAY_VALUES` pixels, more than :data:`MAX_CUBE_TIME_STEPS`
        days, or a ``dayList`` / ``timeList`` / ``marsYear`` variable longer than that many days.
    """
    lon_dim, lat_dim, time_dim = dims
    check_declared_size(path, variable, MAX_CUBE_DAY_VALUES, "one day on a global grid no finer than 0.05°",
                        dims=(lon_dim, lat_dim))
    check_declared_size(path, variable, MAX_CUBE_TIME_STEPS, "one time step per day of at most 100 Mars years",
                        dims=(time_dim,))
    per_day = {DAY_LIST_VARIABLE: MAX_DAY_NAME_CHARS, TIME_LIST_VARIABLE: TIME_LIST_COLUMNS, MARS_YEAR_VARIABLE: 1}
    for name, values_per_day in per_day.items():
        if name.lower() in variables:
            check_declared_size(path, dataset.variables[variables[name.lower()]], MAX_CUBE_TIME_STEPS * values_per_day,
                                f"{values_per_day} value(s) per day of at most 100 Mars years")


def _cube_days(dataset, variables: dict[str, str], n_steps: int, path: str) -> list[tuple[str, int]]:
    """The map (subphase, sol) of each time step, from ``dayList``."""
    day_names = _decode_strings(dataset.variables[variables[DAY_LIST_VARIABLE.lower()]][:])
    if len(day_names) != n_steps:
        raise CatalogError(f"{path}: dayList has {len(day_names)} entries but MDAD has {n_steps} time steps")
    days = []
    for i, name in enumerate(day_names):
        try:
            days.append(parse_map_name(name))
        except ValueError as exc:
            raise CatalogError(f"{path}: dayList[{i}]: {exc}") from exc
    return days


@contextmanager
def open_cube(nc_path: str | os.PathLike) -> Iterator[MdadCube]:
    """Open an MDAD v1.1 cube: ``with open_cube(path) as cube: cube.labels(cube.day_index("R18", 40))``.

    The ``MDAD`` variable may have its three axes in any order and any names: longitude and
    latitude are found by :func:`marsdust.formats.netcdf.find_lon_lat_dims`, the third is time.
    Axis values come from the coordinate variables (or variables named ``longitude`` /
    ``latitude``); a cube without them is read in the MDAD v1.1 layout, with a warning.

    Raises
    ------
    FileNotFoundError
        No such file.
    CatalogError
        Not netCDF, no ``MDAD`` (3-D) or ``dayList`` variable, axes that are not a global grid,
        a ``dayList`` entry that names no map, or declared sizes beyond :data:`MAX_CUBE_DAY_VALUES`
        pixels a day or :data:`MAX_CUBE_TIME_STEPS` days.
    """
    path = str(nc_path)
    with open_netcdf(path, "MDAD netCDF cube") as dataset:
        variables = {name.lower(): name for name in dataset.variables}
        if LABELS_VARIABLE.lower() not in variables:
            raise CatalogError(f"{path}: no variable {LABELS_VARIABLE!r} (found {list(dataset.variables)}); "
                               "not an MDAD v1.1 cube")
        variable = dataset.variables[variables[LABELS_VARIABLE.lower()]]
        if variable.ndim != 3:
            raise CatalogError(f"{path}: variable MDAD has {variable.ndim} dimensions; "
                               "expected (time, longitude, latitude)")
        lon_dim, lat_dim, time_dim = _cube_dims(variable, path)
        _check_cube_sizes(dataset, variables, variable, (lon_dim, lat_dim, time_dim), path)
        if DAY_LIST_VARIABLE.lower() not in variables:
            raise CatalogError(f"{path}: no variable {DAY_LIST_VARIABLE!r} (found {list(dataset.variables)})")
        dims = dict(zip(variable.dimensions, variable.shape))
        grid, column_order, row_index = _cube_placement(dataset, variables, dims, lon_dim, lat_dim, path)
        days = _cube_days(dataset, variables, dims[time_dim], path)
        order = list(variable.dimensions)
        yield MdadCube(path, variable, order.index(lon_dim), order.index(lat_dim), order.index(time_dim),
                       column_order, row_index, grid, days, _median_ls(dataset, variables, len(days)))


def cube_labels(nc_path: str | os.PathLike, map_id: str) -> tuple[np.ndarray, MapGrid]:
    """The raw cube values (uint8, 0 / 1–250 / 255) of one day on its map grid (row 0 north).

    Raises
    ------
    CatalogError
        The cube has no time step of ``map_id`` (or is not a readable cube, :func:`open_cube`).
    """
    subphase, sol = parse_map_name(map_id)
    with open_cube(nc_path) as cube:
        index = cube.day_index(subphase, sol)
        if index is None:
            raise CatalogError(f"{nc_path}: no time step for map {map_id} in dayList")
        return cube.labels(index), cube.grid


def cube_mars_years(nc_path: str | os.PathLike) -> list[int]:
    """The distinct Mars years in a cube's ``marsYear`` variable, ascending ([] without one, as in MDAD's own files)."""
    with open_netcdf(nc_path, "MDAD netCDF cube") as dataset:
        variables = {name.lower(): name for name in dataset.variables}
        name = variables.get(MARS_YEAR_VARIABLE.lower())
        if name is None:
            return []
        check_declared_size(nc_path, dataset.variables[name], MAX_CUBE_TIME_STEPS, "one Mars year per day")
        return sorted({int(y) for y in np.asarray(dataset.variables[name][:]).ravel()})


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
        True on the instance's pixels (row 0 north, column 0 at 180°W): those holding its cube
        value (:meth:`marsdust.mdad_format.MemberId.cube_values`, the first member's).
    grid : MapGrid
        The global grid at the cube's resolution.
    """
    subphase, _ = parse_map_name(map_id)
    member = parse_member_id(member_id)
    labels, grid = cube_labels(nc_path, map_id)
    return np.isin(labels, member.cube_values(subphase)), grid


# ---------------------------------------------------------------------------------------------
# master CSV
# ---------------------------------------------------------------------------------------------
def read_master_csv(path: Path, skip_bad: bool = False) -> pd.DataFrame:
    """The rows of an MDAD v1.1 master CSV, validated as a v1.0 table's are.

    Headers and values follow :func:`marsdust.formats.mdad_table.normalize_rows`.

    Returns
    -------
    DataFrame
        Storm-table columns with ``mars_year`` -1 (a master has none: its cube gives it),
        ``polygon_wkt`` None, and ``_row``, the spreadsheet row; bad rows raise
        :class:`CatalogError` or, with ``skip_bad``, are dropped with one warning.
    """
    raw = read_table_file(path).dropna(how="all")
    mapping = match_columns(raw.columns, str(path), REQUIRED_COLUMNS)
    errors = RowErrors(str(path), skip_bad)
    return finish_rows(normalize_rows(raw, mapping, errors, mars_year=-1), errors)


# ---------------------------------------------------------------------------------------------
# writing cubes
# ---------------------------------------------------------------------------------------------
@dataclass
class MaskStep:
    """One time step (one map) of an MDAD v1.1 mask cube.

    Attributes
    ----------
    subphase : str
        Mission subphase as MDAD writes it (``"R18"``).
    sol : int
        Sol number within the subphase.
    mars_year : int
    ls_deg : float
        Solar longitude of the map, degrees.
    labels : ndarray, uint8-compatible, shape ``grid.shape``
        0 no dust, 1–250 storm labels (see :func:`marsdust.outlines.label_image`). Which numbering: the per-map
        detection number (1, 2, … in score order) when tracking did not run, the member number
        within its subphase (``R18_031`` → 31, ``…b`` → +133) when it did.
    valid : ndarray of bool, shape ``grid.shape``, optional
        False where the MDGM pixel is missing (written as 255).
    sol_of_year : float, optional
        Sol of the Mars year; estimated from Ls (:func:`sol_of_year_from_ls`) when not given.
    """

    subphase: str
    sol: int
    mars_year: int
    ls_deg: float
    labels: np.ndarray
    valid: np.ndarray | None = None
    sol_of_year: float | None = None

    @property
    def day_name(self) -> str:
        """MDAD ``dayList`` entry, e.g. ``R18_day40``."""
        return day_list_entry(self.subphase, self.sol)

    @classmethod
    def from_map_id(cls, map_id: str, mars_year: int, ls_deg: float, labels, valid=None, sol_of_year=None):
        """Build a step from a map id such as ``r18_040`` (subphase and sol parsed from it)."""
        subphase, sol = parse_map_name(map_id)
        return cls(subphase, sol, mars_year, ls_deg, labels, valid, sol_of_year)


def map_mask_step(map_id: str, mars_year: int, ls_deg: float, masks: Sequence[np.ndarray],
                  scores: Sequence[float] | None = None, member_ids: Sequence[str] | None = None,
                  valid: np.ndarray | None = None, sol_of_year: float | None = None) -> MaskStep:
    """One map's cube step from its storm masks (the usual way to feed :class:`MaskCubeWriter`).

    Labels: without ``member_ids``, storm ``k`` (0-based, in the order given — the order of this
    map's :func:`marsdust.outlines.detection_records` rows) gets label ``k + 1``; with ``member_ids`` (tracked
    detections) each storm gets its MDAD member number (:func:`member_cube_value`). Where masks
    overlap, the higher ``scores`` wins. An empty ``masks`` gives an all-zero (no dust) step.
    """
    subphase, sol = parse_map_name(map_id)
    if valid is not None:
        shape = np.shape(valid)
    elif len(masks):
        shape = np.shape(masks[0])
    else:
        raise ValueError(f"map {map_id}: no masks and no valid mask, cannot tell the grid shape")
    if len(masks) == 0:
        labels = np.zeros(shape, dtype=np.uint8)
    else:
        values = ([member_cube_value(m) for m in member_ids] if member_ids is not None
                  else list(range(1, len(masks) + 1)))
        order = np.argsort(-np.asarray(scores, dtype=float), kind="stable") if scores is not None else np.arange(len(masks))
        labels = label_image([masks[i] for i in order], [values[i] for i in order])
    return MaskStep(subphase, sol, mars_year, ls_deg, labels, valid, sol_of_year)


GRID_MAPPING_VARIABLE = "crs"
"""The CF grid-mapping variable of a cube written by :class:`MaskCubeWriter` (no data; its attributes are the CRS)."""
BOUNDS_DIM = "nv"
"""The cell-bounds dimension (2) of ``lon_bnds`` / ``lat_bnds``."""

LABEL_ATTRIBUTES = {
    "long_name": "dust storm label",
    "units": "1",
    "missing_value": np.uint8(MISSING_VALUE),
    "valid_range": np.array([0, MAX_STORM_LABEL], dtype=np.uint8),
    "flag_values": np.array([0, MISSING_VALUE], dtype=np.uint8),
    "flag_meanings": "no_dust missing_mdgm_pixel",
    "grid_mapping": GRID_MAPPING_VARIABLE,
    "coordinates": f"{DAY_LIST_VARIABLE} {MARS_YEAR_VARIABLE} {SOL_OF_YEAR_VARIABLE}",
    "comment": (
        "0 no dust; 1-133 storm member number within the day's subphase (or the per-map detection "
        "number when tracking did not run); 134-250 split member 'b' with number value-133; "
        "255 (_FillValue) missing MDGM pixel or outside the map's latitude band. "
        "Plot one time step with .plot(x='longitude', y='latitude'): the axes are stored (longitude, latitude)."
    ),
}
"""Attributes of the ``MDAD`` variable: CF flags for 0, ``_FillValue``/``missing_value`` 255, grid mapping."""


def define_cube_axes(ds, grid: MapGrid) -> None:
    """Longitude (cell centres) and latitude (MDAD's point registration) with their CF cell bounds.

    ``latitude`` keeps MDAD v1.1's ``180/res + 1`` values -90 … 90: the value ``L`` is the
    *northern edge* of the map pixel stored there, so ``lat_bnds`` is ``[L - res, L]`` (the -90°
    point, which carries no pixel and is always 255, gets the empty cell ``[-90, -90]``). The
    values are not cell centres so that tools written for MDAD index the same rows; the centre of
    the cell at ``L`` is ``L - res / 2``.
    """
    res = grid.res_deg
    lat = cube_latitudes_deg(res)
    lon_var = ds.createVariable(LON_DIM, "f8", (LON_DIM,))
    lon_var[:] = grid.lon_centers_deg
    lon_var.setncatts({"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude (cell centre)",
                       "axis": "X", "bounds": "lon_bnds", "comment": "planetocentric, east-positive, Mars"})
    lon_bnds = ds.createVariable("lon_bnds", "f8", (LON_DIM, BOUNDS_DIM))
    lon_bnds[:] = np.stack([grid.lon_centers_deg - res / 2, grid.lon_centers_deg + res / 2], axis=1)
    lat_var = ds.createVariable(LAT_DIM, "f8", (LAT_DIM,))
    lat_var[:] = lat
    lat_var.setncatts({"units": "degrees_north", "standard_name": "latitude",
                       "long_name": "latitude (northern edge of the cell, MDAD v1.1 registration)", "axis": "Y",
                       "bounds": "lat_bnds",
                       "comment": f"value L holds the map pixel [L - {res:g}, L] (centre L - {res / 2:g}); "
                                  "the -90 point holds no pixel (always 255)"})
    lat_bnds = ds.createVariable("lat_bnds", "f8", (LAT_DIM, BOUNDS_DIM))
    lat_bnds[:] = np.stack([np.maximum(lat - res, -90.0), lat], axis=1)


def define_grid_mapping(ds) -> None:
    """The CF grid-mapping variable: the Mars (2015) sphere, :data:`MARS_CRS_CODE`, as ``crs_wkt``."""
    crs = ds.createVariable(GRID_MAPPING_VARIABLE, "i4")
    crs.setncatts({
        "grid_mapping_name": "latitude_longitude",
        "semi_major_axis": MARS_RADIUS_KM * 1000.0,
        "inverse_flattening": 0.0,
        "longitude_of_prime_meridian": 0.0,
        "crs_wkt": MARS_SPHERE_WKT,
        "spatial_ref": MARS_SPHERE_WKT,
        "crs_code": MARS_CRS_CODE,
        "long_name": "Mars (2015) sphere, planetocentric, east-positive",
    })


def define_time_variables(ds) -> None:
    """``time`` (the coordinate: Ls of each step), ``dayList``, ``timeList``, ``soy`` and ``marsYear``."""
    ls = ds.createVariable(TIME_DIM, "f8", (TIME_DIM,))
    ls.setncatts({"long_name": "solar longitude Ls of the map (timeList column 7, the median)", "units": "degree",
                  "comment": "the time coordinate: one Mars year per cube, so Ls orders the steps; "
                             "select with ds.sel(time=ls, method='nearest')"})
    day = ds.createVariable(DAY_LIST_VARIABLE, str, (TIME_DIM,))
    day.long_name = "MDGM of each time step: SUBPHASE_daySOL"
    times = ds.createVariable(TIME_LIST_VARIABLE, "f8", (TIME_DIM, TIME_STAT_DIM), fill_value=np.nan)
    times.long_name = "start, end, mean, median sol-of-year; start, end, mean, median Ls"
    times.units = "1"
    times.comment = "columns 0-3 sol of the Mars year (sols), columns 4-7 solar longitude Ls (degrees)"
    soy = ds.createVariable(SOL_OF_YEAR_VARIABLE, "f8", (TIME_DIM,))
    soy.long_name = "sol of the Mars year of each time step (timeList column 3, the median)"
    soy.units = "sols"
    year = ds.createVariable(MARS_YEAR_VARIABLE, "i2", (TIME_DIM,))
    year.long_name = "Mars year"
    year.units = "1"


class MaskCubeWriter:
    """Stream an MDAD v1.1 mask cube to netCDF one map at a time (memory: one map).

    Use as a context manager; the file appears at ``path`` only when the block ends without
    error (temporary file + :func:`os.replace`), and :data:`marsdust.formats.netcdf.NETCDF_LOCK`
    is held from open to close (``detect`` writes from several threads)::

        with MaskCubeWriter("MY25/MDADMY25.nc", grid) as cube:
            for step in steps:
                cube.append(step)

    Layout (what tools written for MDAD v1.1 expect): dimensions ``time`` (unlimited),
    ``longitude`` (width, cell centres, degrees east), ``latitude`` (180/res + 1 points -90 … 90,
    ascending, MDAD's registration: see :func:`define_cube_axes`); ``MDAD(time, longitude, latitude)``
    uint8 (0 no dust, 1–250 storm labels, 255 missing MDGM pixel or outside the map's band),
    ``dayList(time)`` strings like ``R18_day40``, ``timeList(time, 8)`` (start, end, mean, median
    sol-of-year, then start, end, mean, median Ls; one map per step, so the four values of each
    group are equal), ``soy(time)`` (sol of year, the median). Tools written for the real files read
    ``MDAD``, ``dayList``, ``soy`` and ``timeList`` by these names.

    CF on top (so xarray and GIS tools read it without help): ``time(time)`` is a coordinate
    variable holding each step's median Ls (degrees), with ``dayList``, ``marsYear`` and ``soy`` as
    auxiliary coordinates (``MDAD:coordinates``); ``MDAD`` has ``_FillValue`` = ``missing_value`` =
    255 (xarray masks it; netCDF4 returns a masked array, whose data still holds 255),
    ``flag_values``/``flag_meanings`` for 0 and 255 and ``grid_mapping`` → :data:`GRID_MAPPING_VARIABLE`
    (:func:`define_grid_mapping`: the Mars sphere as ``crs_wkt``); ``lon_bnds``/``lat_bnds`` give
    each cell's edges. Extra: ``marsYear(time)``.

    Parameters
    ----------
    title : str
        The file's ``title`` attribute.
    complevel : int
        zlib level of ``MDAD`` (1 writes fastest; files are a little larger).
    attributes : dict, optional
        Extra global attributes, set after (so overriding) the defaults, e.g.
        ``{"source": "marsdust.synth"}`` for catalogs that are not detector output.
    """

    def __init__(self, path: str | os.PathLike, grid: MapGrid, title: str = "marsdust dust storm masks",
                 complevel: int = 4, attributes: dict | None = None):
        self.path = Path(path)
        self.grid = grid
        self.title = title
        self.complevel = complevel
        self.attributes = dict(attributes or {})
        self._context = None
        self._ds = None
        self._count = 0

    # context management -------------------------------------------------------------------------
    def __enter__(self) -> "MaskCubeWriter":
        import netCDF4

        NETCDF_LOCK.acquire()
        try:
            self._context = atomic_output(self.path)
            tmp = self._context.__enter__()
            try:
                self._ds = netCDF4.Dataset(tmp, "w", format="NETCDF4")
                self._define(self._ds)
            except BaseException as err:
                self._abort(err)
                raise
        except BaseException:
            NETCDF_LOCK.release()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            return self._close(exc)
        finally:
            NETCDF_LOCK.release()

    def _close(self, exc) -> bool:
        ds, self._ds = self._ds, None
        context, self._context = self._context, None
        close_error = None
        try:
            if ds is not None:
                ds.close()
        except BaseException as err:  # a failed close means a broken file: do not publish it
            close_error = err
        if exc is None and close_error is None:
            context.__exit__(None, None, None)  # moves the finished file into place
            return False
        error = exc if exc is not None else close_error
        context.__exit__(type(error), error, error.__traceback__)  # removes the temporary file
        if exc is None:
            raise close_error
        return False

    def _abort(self, err):
        if self._ds is not None:
            with contextlib.suppress(Exception):
                self._ds.close()
            self._ds = None
        with contextlib.suppress(BaseException):
            self._context.__exit__(type(err), err, err.__traceback__)
        self._context = None

    # layout ----------------------------------------------------------------------------------------
    def _define(self, ds) -> None:
        ds.Conventions = "CF-1.8"
        ds.title = self.title
        ds.source = "marsdust (deep-learning detection of dust storms in Mars Daily Global Maps)"
        ds.layout = "MDAD v1.1 (Battalio & Wang 2021): MDAD(time, longitude, latitude), dayList, timeList"
        ds.planet = "Mars"
        ds.crs = MARS_CRS_CODE
        ds.radius_km = MARS_RADIUS_KM
        if self.attributes:
            ds.setncatts(self.attributes)
        n_lat = cube_latitudes_deg(self.grid.res_deg).size
        ds.createDimension(TIME_DIM, None)
        ds.createDimension(LON_DIM, self.grid.width)
        ds.createDimension(LAT_DIM, n_lat)
        ds.createDimension(TIME_STAT_DIM, TIME_LIST_COLUMNS)
        ds.createDimension(BOUNDS_DIM, 2)
        define_cube_axes(ds, self.grid)
        define_grid_mapping(ds)
        mdad = ds.createVariable(
            LABELS_VARIABLE, "u1", (TIME_DIM, LON_DIM, LAT_DIM), zlib=True, complevel=self.complevel, shuffle=True,
            chunksizes=(1, self.grid.width, n_lat), fill_value=MISSING_VALUE,
        )
        mdad.setncatts(LABEL_ATTRIBUTES)
        define_time_variables(ds)

    # writing ---------------------------------------------------------------------------------------
    def append(self, step: MaskStep) -> None:
        """Append one map's labels as the next time step."""
        if step.labels.shape != self.grid.shape:
            raise ValueError(f"{step.day_name}: labels shape {step.labels.shape} does not match the grid's {self.grid.shape}")
        self.append_cube_slice(grid_labels_to_cube(step.labels, self.grid, step.valid), step.day_name,
                               step.mars_year, step.ls_deg, step.sol_of_year)

    def append_cube_slice(self, cube_slice: np.ndarray, day_name: str, mars_year: int, ls_deg: float,
                          sol_of_year: float | None = None, time_row: np.ndarray | None = None) -> None:
        """Append an already-converted ``(longitude, latitude)`` uint8 slice (used by merges)."""
        if self._ds is None:
            raise RuntimeError("MaskCubeWriter.append called outside its `with` block")
        cube_slice = np.asarray(cube_slice, dtype=np.uint8)
        expected = (self.grid.width, cube_latitudes_deg(self.grid.res_deg).size)
        if cube_slice.shape != expected:
            raise ValueError(f"{day_name}: cube slice shape {cube_slice.shape} does not match the cube's {expected} "
                             "(longitude, latitude)")
        t = self._count
        self._ds[LABELS_VARIABLE][t, :, :] = cube_slice
        self._ds[DAY_LIST_VARIABLE][t] = str(day_name)
        if time_row is None:
            sol = float(sol_of_year_from_ls(ls_deg)) if sol_of_year is None else float(sol_of_year)
            time_row = time_list_row(sol, ls_deg)
        self._ds[TIME_LIST_VARIABLE][t, :] = np.asarray(time_row, dtype=np.float64)
        self._ds[SOL_OF_YEAR_VARIABLE][t] = float(time_row[TIME_LIST_MEDIAN_SOL])
        self._ds[TIME_DIM][t] = float(time_row[TIME_LIST_MEDIAN_LS])
        self._ds[MARS_YEAR_VARIABLE][t] = int(mars_year)
        self._count += 1


def write_mask_cube(path: str | os.PathLike, maps: Iterable[MaskStep], grid: MapGrid, progress: bool = False) -> Path:
    """Write an MDAD v1.1-layout mask cube (see :class:`MaskCubeWriter`) from map steps, atomically.

    ``maps`` may be a generator: steps are written one at a time, so years of maps never sit in
    memory together. For a resumable run, write one chunk per map with :func:`write_mask_chunk`
    and combine them with :func:`merge_mask_chunks`.
    """
    steps = maps
    if progress:
        from tqdm import tqdm
        steps = tqdm(maps, desc="mask cube", unit="map")
    with MaskCubeWriter(path, grid) as cube:
        for step in steps:
            cube.append(step)
    return Path(path)


def write_mask_chunk(chunk_dir: str | os.PathLike, step: MaskStep, grid: MapGrid) -> Path:
    """Write one map's step as a one-time-step cube ``chunk_dir/<day_name>.nc`` (for :func:`merge_mask_chunks`)."""
    return write_mask_cube(Path(chunk_dir) / f"{step.day_name}.nc", [step], grid)


def chunk_grid(chunk_path: str | os.PathLike) -> MapGrid | None:
    """A grid to merge mask-cube chunks on: the global grid of the chunk's width, else the MOC band's.

    The writer only needs the width and resolution (a cube's latitudes always run -90 … 90), so
    either band serves; None where the width fits neither (180° or 120° not a whole number of
    columns).
    """
    with open_netcdf(chunk_path, "mask-cube chunk") as ds:
        if LON_DIM not in ds.dimensions:
            raise CatalogError(f"{chunk_path}: not a mask cube (no dimension {LON_DIM!r})")
        width = ds.dimensions[LON_DIM].size
    for north, south in ((90.0, -90.0), (60.0, -60.0)):
        try:
            return MapGrid.from_width(width, north, south)
        except ValueError:
            continue
    return None


MDAD_RES_DEG = 0.1
"""The resolution of MDAD v1.1's cubes, degrees: 3600 longitudes × 1801 latitudes."""


def upsample_cube_slice(cube_slice: np.ndarray, source: MapGrid, target: MapGrid) -> np.ndarray:
    """A ``(longitude, latitude)`` cube slice of ``source`` on the finer (or equal) global ``target`` grid.

    Nearest neighbour: each target pixel takes the value of the source pixel holding its centre
    (labels stay labels; 255 stays 255). Target rows outside ``source``'s band are 255.
    """
    labels = cube_to_grid_labels(np.asarray(cube_slice), source)
    rows = np.floor((source.lat_north_deg - target.lat_centers_deg) / source.res_deg).astype(np.int64)
    columns = np.floor((target.lon_centers_deg + 180.0) / source.res_deg).astype(np.int64) % source.width
    inside = (rows >= 0) & (rows < source.height)
    fine = np.full(target.shape, MISSING_VALUE, dtype=np.uint8)
    fine[inside] = labels[rows[inside]][:, columns]
    valid = fine != MISSING_VALUE
    return grid_labels_to_cube(np.where(valid, fine, 0), target, valid)


def _append_chunk(cube: MaskCubeWriter, chunk: str | os.PathLike, relabel: np.ndarray | None,
                  source_grid: MapGrid) -> None:
    """Append every time step of a chunk file to ``cube``, its values passed through ``relabel`` and, where
    the cube's grid is finer than ``source_grid``, upsampled (:func:`upsample_cube_slice`)."""
    resample = cube.grid != source_grid
    with open_netcdf(chunk, "mask-cube chunk") as ds:
        for name in (LABELS_VARIABLE, DAY_LIST_VARIABLE, TIME_LIST_VARIABLE, MARS_YEAR_VARIABLE):
            if name not in ds.variables:
                raise CatalogError(f"{chunk}: not a mask cube (no variable {name!r})")
        for t in range(ds.variables[LABELS_VARIABLE].shape[0]):
            labels = np.asarray(ds.variables[LABELS_VARIABLE][t])
            if relabel is not None:
                labels = relabel[labels]
            if resample:
                labels = upsample_cube_slice(labels, source_grid, cube.grid)
            time_row = np.asarray(ds.variables[TIME_LIST_VARIABLE][t], dtype=np.float64)
            cube.append_cube_slice(labels, str(ds.variables[DAY_LIST_VARIABLE][t]),
                                   int(ds.variables[MARS_YEAR_VARIABLE][t]), float(time_row[TIME_LIST_START_LS]),
                                   time_row=time_row)


def merge_mask_chunks(chunks: Sequence[tuple[str | os.PathLike, np.ndarray | None]], path: str | os.PathLike,
                      grid: MapGrid, title: str = "marsdust dust storm masks", progress: bool = False,
                      output_grid: MapGrid | None = None) -> Path:
    """Concatenate mask-cube chunks into one cube, in the order given, atomically (memory: one map).

    Parameters
    ----------
    chunks : sequence of (path, relabel)
        The chunk files (:func:`write_mask_chunk`, or any cube of ``grid``'s width), each with a
        256-entry uint8 table applied to its values (``relabel[value]`` is written: e.g. a map's
        detection numbers to its members' cube values) or None to copy them. Every time step of
        a chunk is copied with its ``dayList``, ``timeList`` and ``marsYear``.
    path : path
        The cube to write.
    grid : MapGrid
        The chunks' grid (:func:`chunk_grid`).
    title : str
        The cube's ``title`` attribute.
    progress : bool
        Show a progress bar (from 50 chunks on).
    output_grid : MapGrid, optional
        The grid of the cube written, if finer than ``grid`` (e.g. ``MapGrid.marci(MDAD_RES_DEG)``,
        MDAD's 0.1°): each slice is upsampled by nearest neighbour (:func:`upsample_cube_slice`).

    Raises
    ------
    ValueError
        No chunks, a chunk that is not a mask cube (:class:`CatalogError`) or whose slices do not
        fit ``grid``.
    """
    from tqdm.auto import tqdm

    chunks = list(chunks)
    if not chunks:
        raise ValueError(f"{path}: no chunk files to merge")
    with MaskCubeWriter(path, output_grid or grid, title=title) as cube:
        for chunk, relabel in tqdm(chunks, desc=Path(path).name, unit="map", disable=not progress or len(chunks) < 50):
            _append_chunk(cube, chunk, relabel, grid)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# master CSV: writing
# ---------------------------------------------------------------------------------------------
def confidence_flag_from_score(score, thresholds=(0.5, 0.75)) -> np.ndarray:
    """Map detector scores to MDAD-style confidence flags: < 0.5 → 50, < 0.75 → 75, else 100.

    This is a convention of ours (MDAD's flags rate how distinct the storm edge is, judged by eye);
    pass other ``thresholds`` to change it.
    """
    score = np.asarray(score, dtype=np.float64)
    return np.where(score < thresholds[0], 50, np.where(score < thresholds[1], 75, 100))


def write_master_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the MDAD v1.1 master CSV (:data:`marsdust.mdad_format.MASTER_COLUMNS`: ``subphase, sol, mem_ID,
    seq_ID, confidence_flag, area, swathLs, centroid_lon, centroid_lat``) from a detections table, atomically.

    ``subphase``/``sol`` come from the table or are parsed from ``map_id``; ``mem_ID``/``seq_ID`` from
    ``member_id``/``sequence_id`` (empty when tracking did not run); ``confidence_flag`` from a
    ``confidence`` column or :func:`confidence_flag_from_score`.
    """
    for column in ("map_id", "ls", "lon", "lat", "area_km2"):
        if column not in df.columns:
            raise ValueError(f"{path}: detections table lacks column {column!r}")
    if "subphase" in df.columns and "sol" in df.columns:
        subphase, sol = df["subphase"].astype(str).str.upper(), df["sol"].astype(int)
    else:
        parsed = [parse_map_name(m) for m in df["map_id"]]
        subphase = pd.Series([p[0] for p in parsed], index=df.index)
        sol = pd.Series([p[1] for p in parsed], index=df.index)
    if "confidence" in df.columns:
        confidence = df["confidence"].astype(int)
    elif "score" in df.columns:
        confidence = pd.Series(confidence_flag_from_score(df["score"]), index=df.index)
    else:
        confidence = pd.Series(100, index=df.index)
    empty = pd.Series("", index=df.index)
    master = pd.DataFrame(dict(zip(MASTER_COLUMNS, (
        subphase,
        sol,
        df["member_id"].fillna("") if "member_id" in df.columns else empty,
        df["sequence_id"].fillna("") if "sequence_id" in df.columns else empty,
        confidence,
        df["area_km2"].astype(float),
        df["ls"].astype(float),
        normalize_lon(df["lon"].to_numpy(dtype=float)),
        df["lat"].astype(float),
    ))))
    return write_table(master, path)
