"""Catalog exports: detection records from masks, CSV / Parquet / GeoJSON tables, MDAD v1.1 mask cubes
(netCDF), GeoTIFF probability rasters and quick-look PNGs.

Everything here starts from what full-map inference produces per map (boolean storm masks on a
:class:`marsdust.grid.MapGrid`, scores, the map's id, Mars year and Ls) and ends with files on disk.
Every writer is atomic: it writes a temporary file in the destination folder and moves it into place
with :func:`os.replace`, so a writer that raises leaves no partial file behind.

Conventions (shared with the rest of marsdust)
----------------------------------------------
* Longitudes east-positive in [-180, 180), latitudes degrees north. Box bounds are pixel *edges*:
  ``lon_max < lon_min`` means the storm crosses 180°; a storm ending exactly at the map's eastern
  edge has ``lon_max = 180.0`` (the edge itself, so ``lon_max > lon_min`` still holds).
* Areas are on the 3396.19 km sphere (``grid.MARS_RADIUS_KM``).
* Outlines are shapely (Multi)Polygons in lon/lat degrees, split at 180° (a storm across the
  antimeridian is a MultiPolygon with one part on each side), exterior rings counter-clockwise
  (RFC 7946), stored as WKT in ``polygon_wkt``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from marsdust import mdad_format
from marsdust.fileio import atomic_output, write_table_atomic
from marsdust.grid import MARS_RADIUS_KM, MapGrid, normalize_lon, occupied_column_span  # noqa: F401 - re-exported
from marsdust.mdad_format import (  # noqa: F401 - some are re-exported: callers and tests import them from here
    DAY_LIST_VARIABLE,
    LABELS_VARIABLE,
    LAT_DIM,
    LON_DIM,
    MARS_YEAR_VARIABLE,
    MASTER_COLUMNS,
    MAX_STORM_LABEL,
    SOL_OF_YEAR_VARIABLE,
    TIME_DIM,
    TIME_LIST_COLUMNS,
    TIME_LIST_MEDIAN_SOL,
    TIME_LIST_START_LS,
    TIME_LIST_VARIABLE,
    TIME_STAT_DIM,
    cube_latitudes_deg,
    cube_to_grid_labels,
    grid_labels_to_cube,
    sol_of_year_from_ls,
    time_list_row,
)
from marsdust.mdad_format import MISSING_VALUE as MISSING_LABEL
from marsdust.mdad_format import SPLIT_OFFSET as SPLIT_LABEL_OFFSET  # noqa: F401 - re-exported
from marsdust.mdad_format import cube_path as mask_cube_path  # noqa: F401 - re-exported
from marsdust.mdad_format import member_cube_value as member_label_value
from marsdust.naming import parse_map_name

DETECTION_COLUMNS = [
    "map_id", "mars_year", "ls", "lon", "lat", "lon_min", "lon_max", "lat_min", "lat_max",
    "area_km2", "score", "polygon_wkt", "x0", "y0", "x1", "y1", "class",
]
"""Columns of the detections table (``detections.csv`` of the command-line contract in README.md, plus pixel boxes);
``class`` is ``dust`` or ``cloud`` (a one-class detector writes ``dust`` everywhere)."""

MARS_CRS_CODE = "IAU_2015:49900"
"""PROJ code of the Mars (2015) sphere, planetocentric, east-positive longitudes (R = 3396.19 km)."""

MARS_SPHERE_WKT = (
    'GEOGCRS["Mars (2015) - Sphere / Ocentric",'
    'DATUM["Mars (2015) - Sphere",ELLIPSOID["Mars (2015) - Sphere",3396190,0,LENGTHUNIT["metre",1]]],'
    'PRIMEM["Reference Meridian",0,ANGLEUNIT["degree",0.0174532925199433]],'
    'CS[ellipsoidal,2],AXIS["geodetic latitude (Lat)",north,ORDER[1],ANGLEUNIT["degree",0.0174532925199433]],'
    'AXIS["geodetic longitude (Lon)",east,ORDER[2],ANGLEUNIT["degree",0.0174532925199433]]]'
)
"""Explicit WKT2 of the same sphere, used when the installed PROJ database lacks the IAU codes."""

# ------------------------------------------------------------------------------------------------
# detection records from masks
# ------------------------------------------------------------------------------------------------
def _check_masks(masks, grid: MapGrid) -> list[np.ndarray]:
    masks_list = [np.asarray(m, dtype=bool) for m in masks]
    for k, mask in enumerate(masks_list):
        if mask.shape != grid.shape:
            raise ValueError(f"mask {k} has shape {mask.shape}, expected the grid's {grid.shape} (rows, columns)")
    return masks_list


def mask_centroid_lonlat(mask: np.ndarray, grid: MapGrid) -> tuple[float, float]:
    """Area-weighted centroid of a mask on the sphere, in degrees.

    Latitude is the mean of pixel-centre latitudes weighted by pixel area; longitude is the
    area-weighted *circular* mean (mean of unit vectors), so a storm across 180° gets a centroid
    near ±180 and not near 0.

    Returns
    -------
    (lon_deg, lat_deg) : east-positive longitude in [-180, 180), latitude in degrees north.
    """
    pixel_area_km2 = grid.row_pixel_area_km2()
    row_weight = mask.sum(axis=1) * pixel_area_km2
    total = row_weight.sum()
    if total <= 0:
        raise ValueError("empty mask: no storm pixels")
    lat_deg = float(row_weight @ grid.lat_centers_deg / total)
    col_weight = pixel_area_km2 @ mask
    lon_rad = np.radians(grid.lon_centers_deg)
    lon_deg = math.degrees(math.atan2(col_weight @ np.sin(lon_rad), col_weight @ np.cos(lon_rad)))
    return float(normalize_lon(lon_deg)), lat_deg


def mask_outline(mask: np.ndarray, grid: MapGrid, simplify_px: float = 0.5):
    """Outline of a mask as a shapely (Multi)Polygon in lon/lat degrees, split at 180°.

    Pixel outlines come from :meth:`MapGrid.mask_to_polygon` (one polygon per connected region,
    holes kept, merged), are simplified by ``simplify_px`` pixels
    (Douglas-Peucker, topology preserved; 0 disables it) and oriented counter-clockwise (RFC 7946).
    Because the mask lives on a [-180°, 180°) grid, a storm across 180° naturally comes out as
    parts on both sides of the antimeridian, each ending exactly at ±180°.
    """
    import shapely

    outline = grid.mask_to_polygon(mask)
    if simplify_px > 0:
        outline = outline.simplify(simplify_px * grid.res_deg, preserve_topology=True)
    outline = shapely.orient_polygons(outline, exterior_cw=False)
    if outline.geom_type == "GeometryCollection":  # only if simplification produced stray pieces
        polys = [g for g in outline.geoms if g.geom_type in ("Polygon", "MultiPolygon")]
        outline = shapely.unary_union(polys)
    return outline


def detection_records(
    map_id: str,
    mars_year: int,
    ls: float,
    grid: MapGrid,
    masks: Sequence[np.ndarray] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    boxes_px: np.ndarray | None = None,
    simplify_px: float = 0.5,
    classes: Sequence[str] | None = None,
) -> list[dict]:
    """Detection table rows (one per storm instance) from per-instance boolean masks.

    Parameters
    ----------
    map_id : str
        The map's id (``naming.make_map_id``), e.g. ``"r18_040"``.
    mars_year : int
        Mars year of the map.
    ls : float
        Solar longitude of the map, degrees in [0, 360).
    grid : MapGrid
        Grid the masks are on: the map's native grid, or the detector's working grid.
    masks : sequence of ndarray of bool, each ``grid.shape``
        One mask per detected storm. A mask touching both the western and eastern map edges is
        one storm across 180°.
    scores : sequence of float
        Detector confidence per mask, in [0, 1].
    boxes_px : ndarray (n, 4), optional
        Pixel boxes ``x0, y0, x1, y1`` on ``grid`` to report (e.g. the detector's boxes); by
        default the masks' own bounding boxes (``x1`` past the width for storms across 180°).
    simplify_px : float
        Outline simplification tolerance in pixels (default half a pixel).
    classes : sequence of str, optional
        Class name per mask (``dust`` / ``cloud``); default ``dust`` for every mask.

    Returns
    -------
    list of dict
        Keys :data:`DETECTION_COLUMNS`: centroid ``lon``/``lat`` (degrees, area-weighted on the
        sphere, circular mean in longitude), bounds ``lon_min, lon_max, lat_min, lat_max``
        (pixel edges, degrees; ``lon_max < lon_min`` across 180°), ``area_km2`` (the mask's
        pixels on the sphere, km²), ``score``, ``polygon_wkt`` (outline, lon/lat degrees, split
        at 180°), pixel boxes and ``class``.
    """
    masks_list = _check_masks(masks, grid)
    scores_arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores_arr.size != len(masks_list):
        raise ValueError(f"map {map_id}: {len(masks_list)} masks but {scores_arr.size} scores")
    if boxes_px is not None:
        boxes_px = np.asarray(boxes_px, dtype=np.float64).reshape(-1, 4)
        if len(boxes_px) != len(masks_list):
            raise ValueError(f"map {map_id}: {len(masks_list)} masks but {len(boxes_px)} boxes")
    records = []
    for k, mask in enumerate(masks_list):
        if not mask.any():
            continue  # an empty mask (e.g. lost when resampling) is not a storm
        x0, y0, x1, y1 = grid.wrap_aware_bbox(mask)
        lon_deg, lat_deg = mask_centroid_lonlat(mask, grid)
        lon_min = -180.0 + x0 * grid.res_deg
        lon_max = -180.0 + x1 * grid.res_deg
        if lon_max > 180.0 + 1e-9:
            lon_max -= 360.0
        outline = mask_outline(mask, grid, simplify_px)
        box = boxes_px[k] if boxes_px is not None else (x0, y0, x1, y1)
        records.append({
            "map_id": str(map_id),
            "mars_year": int(mars_year),
            "ls": float(ls),
            "lon": lon_deg,
            "lat": lat_deg,
            "lon_min": float(lon_min),
            "lon_max": float(lon_max),
            "lat_min": float(grid.lat_north_deg - y1 * grid.res_deg),
            "lat_max": float(grid.lat_north_deg - y0 * grid.res_deg),
            "area_km2": grid.mask_area_km2(mask),
            "score": float(scores_arr[k]),
            "polygon_wkt": outline.wkt if hasattr(outline, "wkt") else str(outline),
            "x0": float(box[0]), "y0": float(box[1]), "x1": float(box[2]), "y1": float(box[3]),
            "class": "dust" if classes is None else str(classes[k]),
        })
    return records


def detections_frame(records: Iterable[dict]) -> pd.DataFrame:
    """A detections DataFrame with the :data:`DETECTION_COLUMNS` first (also when empty)."""
    df = pd.DataFrame(list(records))
    for column in DETECTION_COLUMNS:
        if column not in df.columns:
            df[column] = pd.Series(dtype="float64" if column not in ("map_id", "polygon_wkt", "class") else "object")
    extra = [c for c in df.columns if c not in DETECTION_COLUMNS]
    return df[DETECTION_COLUMNS + extra]


# ------------------------------------------------------------------------------------------------
# tables and GeoJSON
# ------------------------------------------------------------------------------------------------
def write_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a table as CSV (``.csv``) or Parquet (``.parquet``/``.pq``), chosen by extension, atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise ValueError(f"{path}: unknown table format {suffix!r}; use .csv, .parquet or .pq")
    return write_table_atomic(df, path)


def _json_value(value):
    if value is None:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is pd.NA or value is pd.NaT:
        return None
    return value if isinstance(value, (int, str)) else str(value)


def write_geojson(df: pd.DataFrame, path: str | os.PathLike, geometry_column: str = "polygon_wkt") -> Path:
    """Write detections (or any table with a WKT outline column) as GeoJSON, atomically.

    Each row becomes a Feature whose geometry is the row's outline (already split at 180° as
    RFC 7946 §3.1.9 asks, so QGIS and geopandas draw storms across the antimeridian correctly;
    a row without an outline gets a null geometry) and whose properties are all other columns
    (NaN → null).

    CRS choice: RFC 7946 GeoJSON has no ``crs`` member and means WGS 84 (Earth). Our coordinates
    are planetocentric degrees on the Mars (2015) sphere, so the file carries the GeoJSON-2008
    style top-level member ``"crs": {"type": "name", "properties": {"name": "IAU_2015:49900"}}``.
    GDAL (hence QGIS, geopandas/pyogrio, ogr2ogr) reads that member and tags the layer with the
    Mars CRS; RFC 7946-only readers ignore unknown members, so the file stays valid for them. We
    prefer this to a sidecar file because it travels with the data and is machine-read.
    """
    import shapely

    if geometry_column not in df.columns:
        raise ValueError(f"{path}: table has no {geometry_column!r} column to take outlines from")
    properties = [c for c in df.columns if c != geometry_column]
    features = []
    for row_number, row in enumerate(df.itertuples(index=False)):
        values = dict(zip(df.columns, row))
        wkt = values[geometry_column]
        geometry = None
        if isinstance(wkt, str) and wkt.strip():
            try:
                geometry = json.loads(shapely.to_geojson(shapely.from_wkt(wkt)))
            except Exception as err:  # shapely raises GEOSException subclasses
                raise ValueError(f"{path}: row {row_number}: {geometry_column} is not valid WKT: {err}") from err
        features.append({
            "type": "Feature",
            "properties": {name: _json_value(values[name]) for name in properties},
            "geometry": geometry,
        })
    collection = {
        "type": "FeatureCollection",
        "name": Path(path).stem,
        "crs": {"type": "name", "properties": {"name": MARS_CRS_CODE}},
        "features": features,
    }
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(collection, allow_nan=False), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------
# MDAD v1.1 mask cubes (netCDF)
# ------------------------------------------------------------------------------------------------
def label_image(masks: Sequence[np.ndarray], values: Sequence[int] | None = None) -> np.ndarray:
    """Combine per-storm boolean masks into one uint8 label image (0 = no dust).

    Parameters
    ----------
    masks : sequence of ndarray of bool, all the same shape
        Masks in priority order: where masks overlap the *earlier* one wins, so pass them sorted
        by descending score.
    values : sequence of int, optional
        Label per mask, 1–250 (by default 1, 2, … — the per-map detection number; use
        :func:`member_label_value` of tracked member ids to write member numbers as MDAD does).
    """
    if len(masks) == 0:
        raise ValueError("label_image needs at least one mask (use np.zeros for an empty map)")
    values = list(range(1, len(masks) + 1)) if values is None else [int(v) for v in values]
    if len(values) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(values)} label values")
    bad = [v for v in values if not 1 <= v <= MAX_STORM_LABEL]
    if bad:
        raise ValueError(f"label values must be in 1..{MAX_STORM_LABEL} (255 means missing), got {bad[:5]}")
    labels = np.zeros(np.shape(masks[0]), dtype=np.uint8)
    for mask, value in zip(reversed(list(masks)), reversed(values)):
        labels[np.asarray(mask, dtype=bool)] = value
    return labels


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
        0 no dust, 1–250 storm labels (see :func:`label_image`). Which numbering: the per-map
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
        return mdad_format.day_list_entry(self.subphase, self.sol)

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
    map's :func:`detection_records` rows) gets label ``k + 1``; with ``member_ids`` (tracked
    detections) each storm gets its MDAD member number (:func:`member_label_value`). Where masks
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
        values = ([member_label_value(m) for m in member_ids] if member_ids is not None
                  else list(range(1, len(masks) + 1)))
        order = np.argsort(-np.asarray(scores, dtype=float), kind="stable") if scores is not None else np.arange(len(masks))
        labels = label_image([masks[i] for i in order], [values[i] for i in order])
    return MaskStep(subphase, sol, mars_year, ls_deg, labels, valid, sol_of_year)


NETCDF_LOCK = threading.RLock()
"""netCDF4 / HDF5 are not thread-safe (``detect`` writes from several threads on a GPU): each
:class:`MaskCubeWriter` holds this lock from open to close."""


class MaskCubeWriter:
    """Stream an MDAD v1.1 mask cube to netCDF one map at a time (memory: one map).

    Use as a context manager; the file appears at ``path`` only when the block ends without
    error (temporary file + :func:`os.replace`)::

        with MaskCubeWriter("MY25/MDADMY25.nc", grid) as cube:
            for step in steps:
                cube.append(step)

    Layout (what tools written for MDAD v1.1 expect): dimensions ``time`` (unlimited),
    ``longitude`` (width, cell centres, degrees east), ``latitude`` (180/res + 1 points -90 … 90,
    ascending); ``MDAD(time, longitude, latitude)`` uint8 (0 no dust, 1–250 storm labels,
    255 missing MDGM pixel or outside the map's band), ``dayList(time)`` strings like ``R18_day40``,
    ``timeList(time, 8)`` (start, end, mean, median sol-of-year, then start, end, mean, median Ls;
    one map per step, so the four values of each group are equal), ``soy(time)`` (sol of year, the
    median). Tools written for the real files read ``MDAD``, ``dayList``, ``soy`` and ``timeList``
    by these names. Extra: ``marsYear(time)``.
    ``MDAD`` has no ``_FillValue`` on purpose: like the real files, 255 must come back as 255
    (xarray would otherwise turn it into NaN and the array into float); the meaning of 0 and 255
    is given by CF ``flag_values``/``flag_meanings``.

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
        grid = self.grid
        lat = cube_latitudes_deg(grid.res_deg)
        ds.Conventions = "CF-1.8"
        ds.title = self.title
        ds.source = "marsdust (deep-learning detection of dust storms in Mars Daily Global Maps)"
        ds.layout = "MDAD v1.1 (Battalio & Wang 2021): MDAD(time, longitude, latitude), dayList, timeList"
        ds.planet = "Mars"
        ds.crs = MARS_CRS_CODE
        ds.radius_km = MARS_RADIUS_KM
        if self.attributes:
            ds.setncatts(self.attributes)
        ds.createDimension(TIME_DIM, None)
        ds.createDimension(LON_DIM, grid.width)
        ds.createDimension(LAT_DIM, lat.size)
        ds.createDimension(TIME_STAT_DIM, TIME_LIST_COLUMNS)
        lon_var = ds.createVariable(LON_DIM, "f8", (LON_DIM,))
        lon_var[:] = grid.lon_centers_deg
        lon_var.setncatts({"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude (cell centre)",
                           "axis": "X", "comment": "planetocentric, east-positive, Mars"})
        lat_var = ds.createVariable(LAT_DIM, "f8", (LAT_DIM,))
        lat_var[:] = lat
        lat_var.setncatts({"units": "degrees_north", "standard_name": "latitude",
                           "long_name": "latitude (point-registered)", "axis": "Y",
                           "comment": "latitude point L holds the map pixel whose northern edge is L"})
        mdad = ds.createVariable(
            LABELS_VARIABLE, "u1", (TIME_DIM, LON_DIM, LAT_DIM), zlib=True, complevel=self.complevel, shuffle=True,
            chunksizes=(1, grid.width, lat.size), fill_value=False,
        )
        mdad.setncatts({
            "long_name": "dust storm label",
            "units": "1",
            "flag_values": np.array([0, MISSING_LABEL], dtype=np.uint8),
            "flag_meanings": "no_dust missing_mdgm_pixel",
            "comment": (
                "0 no dust; 1-133 storm member number within the day's subphase (or the per-map detection "
                "number when tracking did not run); 134-250 split member 'b' with number value-133; "
                "255 missing MDGM pixel or outside the map's latitude band"
            ),
        })
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
        t = self._count
        self._ds[LABELS_VARIABLE][t, :, :] = np.asarray(cube_slice, dtype=np.uint8)
        self._ds[DAY_LIST_VARIABLE][t] = str(day_name)
        if time_row is None:
            sol = float(sol_of_year_from_ls(ls_deg)) if sol_of_year is None else float(sol_of_year)
            time_row = time_list_row(sol, ls_deg)
        self._ds[TIME_LIST_VARIABLE][t, :] = np.asarray(time_row, dtype=np.float64)
        self._ds[SOL_OF_YEAR_VARIABLE][t] = float(time_row[TIME_LIST_MEDIAN_SOL])
        self._ds[MARS_YEAR_VARIABLE][t] = int(mars_year)
        self._count += 1


def write_mask_cube(path: str | os.PathLike, maps: Iterable[MaskStep], grid: MapGrid, progress: bool = False) -> Path:
    """Write an MDAD v1.1-layout mask cube (see :class:`MaskCubeWriter`) from map steps, atomically.

    ``maps`` may be a generator: steps are written one at a time, so years of maps never sit in
    memory together. For a resumable run, write one chunk per map with :func:`write_mask_chunk`
    and combine them with :func:`merge_mask_cube`.
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
    """Write one map's step as a one-time-step cube ``chunk_dir/<day_name>.nc`` (for :func:`merge_mask_cube`)."""
    return write_mask_cube(Path(chunk_dir) / f"{step.day_name}.nc", [step], grid)


def merge_mask_cube(chunk_paths: Iterable[str | os.PathLike], path: str | os.PathLike, progress: bool = False) -> Path:
    """Merge cube files (e.g. per-map chunks) into one cube, time-ordered by (Mars year, Ls).

    Reads one time step at a time, so memory stays at one map. All inputs must share the grid.
    """
    import netCDF4

    chunk_paths = [Path(p) for p in chunk_paths]
    if not chunk_paths:
        raise ValueError(f"{path}: no chunk files to merge")
    index = []  # (mars_year, ls, file, time index)
    grid = None
    for chunk in chunk_paths:
        with netCDF4.Dataset(chunk) as ds:
            for name in (LABELS_VARIABLE, DAY_LIST_VARIABLE, TIME_LIST_VARIABLE, LON_DIM, LAT_DIM):
                if name not in ds.variables:
                    raise ValueError(f"{chunk}: not a mask cube (no variable {name!r})")
            chunk_grid_key = (ds[LON_DIM].size, ds[LAT_DIM].size)
            if grid is None:
                grid_key, grid = chunk_grid_key, MapGrid.from_width(ds[LON_DIM].size)
            elif chunk_grid_key != grid_key:
                raise ValueError(f"{chunk}: grid {chunk_grid_key} differs from the first chunk's {grid_key}")
            times = np.asarray(ds[TIME_LIST_VARIABLE][:], dtype=np.float64)
            years = np.asarray(ds[MARS_YEAR_VARIABLE][:]) if MARS_YEAR_VARIABLE in ds.variables else np.zeros(len(times), int)
            for t in range(len(times)):
                index.append((int(years[t]), float(times[t, TIME_LIST_START_LS]), chunk, t))
    index.sort(key=lambda item: (item[0], item[1]))
    items = index
    if progress:
        from tqdm import tqdm
        items = tqdm(index, desc="merge mask cube", unit="map")
    with MaskCubeWriter(path, grid) as cube:
        for year, ls, chunk, t in items:
            with netCDF4.Dataset(chunk) as ds:
                ds.set_auto_mask(False)
                cube.append_cube_slice(ds[LABELS_VARIABLE][t], str(ds[DAY_LIST_VARIABLE][t]), year, ls,
                                       time_row=np.asarray(ds[TIME_LIST_VARIABLE][t], dtype=np.float64))
    return Path(path)


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


# ------------------------------------------------------------------------------------------------
# GeoTIFF and quick-look PNG
# ------------------------------------------------------------------------------------------------
def mars_rasterio_crs():
    """The Mars CRS for rasterio, and how it was obtained.

    Returns
    -------
    (crs, source) : (rasterio.crs.CRS, str)
        ``source`` is ``"IAU_2015:49900"`` when GDAL/PROJ know the IAU code (PROJ ≥ 8.2 does), else
        ``"explicit WKT (3396.19 km sphere)"`` (:data:`MARS_SPHERE_WKT`).
    """
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        return CRS.from_user_input(MARS_CRS_CODE), MARS_CRS_CODE
    except CRSError:
        return CRS.from_wkt(MARS_SPHERE_WKT), "explicit WKT (3396.19 km sphere)"


def grid_transform(grid: MapGrid):
    """Affine geotransform (degrees) of a map grid: west edge -180°, north edge ``grid.lat_north_deg`` (:attr:`MapGrid.affine`)."""
    return grid.affine


def write_geotiff(path: str | os.PathLike, prob_or_mask: np.ndarray, grid: MapGrid,
                  valid: np.ndarray | None = None) -> str:
    """Write a per-map storm probability (float, [0, 1]) or mask (bool/int) as a GeoTIFF, atomically.

    The raster carries the Mars CRS (see :func:`mars_rasterio_crs`) and the grid's geotransform,
    deflate-compressed. Float rasters get NaN where ``valid`` is False (nodata NaN); integer and
    boolean rasters are written as uint8 with 255 there (nodata 255).

    Returns
    -------
    str
        Which CRS definition was written: ``"IAU_2015:49900"`` or the explicit-WKT fallback.
    """
    import rasterio

    data = np.asarray(prob_or_mask)
    if data.shape != grid.shape:
        raise ValueError(f"{path}: raster shape {data.shape} does not match the grid's {grid.shape}")
    if np.issubdtype(data.dtype, np.floating):
        out, nodata = data.astype(np.float32), float("nan")
        if valid is not None:
            out = np.where(np.asarray(valid, dtype=bool), out, np.float32(np.nan))
    else:
        if data.size and (data.min() < 0 or data.max() > 254):
            raise ValueError(f"{path}: integer raster values must be in 0..254 (255 is nodata)")
        out, nodata = data.astype(np.uint8), 255
        if valid is not None:
            out = np.where(np.asarray(valid, dtype=bool), out, np.uint8(255)).astype(np.uint8)
    crs, crs_source = mars_rasterio_crs()
    with atomic_output(path) as tmp:
        with rasterio.open(
            tmp, "w", driver="GTiff", height=grid.height, width=grid.width, count=1, dtype=out.dtype.name,
            crs=crs, transform=grid_transform(grid), nodata=nodata, compress="deflate",
        ) as dst:
            dst.write(out, 1)
            dst.update_tags(planet="Mars", crs_source=crs_source,
                            content="storm probability" if out.dtype == np.float32 else "storm mask")
    return crs_source


def _outline_rings(geometry):
    geoms = getattr(geometry, "geoms", [geometry])
    for polygon in geoms:
        if polygon.is_empty:
            continue
        yield np.asarray(polygon.exterior.coords)
        for interior in polygon.interiors:
            yield np.asarray(interior.coords)


def write_quicklook_png(path: str | os.PathLike, rgb: np.ndarray, outlines: Iterable, grid: MapGrid | None = None,
                        max_width_px: int = 1200, color: tuple[int, int, int] = (255, 255, 0),
                        line_width_px: int = 2, title: str | None = None) -> Path:
    """A small quick-look PNG of a map with storm outlines drawn on it (PIL; fast), atomically.

    Parameters
    ----------
    rgb : ndarray (H, W, 3)
        The map, float in [0, 1] or uint8.
    outlines : iterable of shapely geometries or WKT strings
        Outlines in lon/lat degrees (e.g. the ``polygon_wkt`` column).
    grid : MapGrid, optional
        The map's grid (default ``MapGrid.from_shape(H, W)``).
    max_width_px : int
        The image is downscaled to at most this width.
    title : str, optional
        Text drawn in the top-left corner (e.g. the map id).
    """
    import shapely
    from PIL import Image, ImageDraw

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{path}: quick-look image must be (H, W, 3), got {rgb.shape}")
    grid = grid or MapGrid.from_shape(rgb.shape[0], rgb.shape[1])
    if rgb.shape[:2] != grid.shape:
        raise ValueError(f"{path}: image shape {rgb.shape[:2]} does not match the grid's {grid.shape}")
    if np.issubdtype(rgb.dtype, np.floating):
        rgb = np.clip(np.nan_to_num(rgb) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    image = Image.fromarray(rgb.astype(np.uint8), "RGB")
    scale = min(1.0, max_width_px / grid.width)
    if scale < 1.0:
        image = image.resize((max(1, round(grid.width * scale)), max(1, round(grid.height * scale))), Image.BILINEAR)
    draw = ImageDraw.Draw(image)
    for outline in outlines:
        if outline is None or (isinstance(outline, float) and np.isnan(outline)):
            continue
        geometry = shapely.from_wkt(outline) if isinstance(outline, str) else outline
        for ring in _outline_rings(geometry):
            # no longitude wrapping here: a vertex at +180 must land on the eastern edge
            x = (ring[:, 0] + 180.0) / grid.res_deg * scale
            y = (grid.lat_north_deg - ring[:, 1]) / grid.res_deg * scale
            draw.line(list(zip(x.tolist(), y.tolist())), fill=tuple(color), width=line_width_px)
    if title:
        draw.text((4, 2), str(title), fill=tuple(color))
    path = Path(path)
    with atomic_output(path) as tmp:
        image.save(tmp, format="PNG")
    return path
