"""Storm masks as catalog rows: centroid, outline and bounds of a mask on a map grid, detection records,
and per-map label images.

Everything here starts from what full-map inference produces per map (boolean storm masks on a
:class:`marsdust.grid.MapGrid`, scores, the map's id, Mars year and Ls); the files these rows and
images go to are written by :mod:`marsdust.formats`.

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

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from marsdust.grid import MapGrid, normalize_lon
from marsdust.mdad_format import MAX_STORM_LABEL
from marsdust.naming import parse_map_name

DETECTION_COLUMNS = [
    "map_id", "mars_year", "ls", "lon", "lat", "lon_min", "lon_max", "lat_min", "lat_max",
    "area_km2", "score", "polygon_wkt", "x0", "y0", "x1", "y1", "class", "subphase", "sol",
]
"""Columns of the detections table (``detections.csv``, described column by column in docs/formats.md);
``class`` is ``dust`` or ``cloud`` (a one-class detector writes ``dust`` everywhere); ``subphase``/``sol`` are
parsed from ``map_id`` (:func:`map_subphase_sol`)."""

OUTLINE_SEGMENT_DEG = 0.1
"""Longest outline edge written, degrees of longitude or latitude: outlines are densified to it
(:func:`mask_outline`), so that tools taking each edge as a geodesic (pyproj's ``Geod``, GIS
software) measure the area of the pixel outline, whose edges run along parallels and meridians."""


def map_subphase_sol(map_id: str) -> tuple[str, int | None]:
    """The subphase and sol of a map id (``"r18_040"`` → ``("R18", 40)``); ``("", None)`` for an id
    that names none (:func:`marsdust.naming.parse_map_name`)."""
    try:
        subphase, sol = parse_map_name(map_id)
    except ValueError:
        return "", None
    return subphase, int(sol)

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


def mask_outline(mask: np.ndarray, grid: MapGrid, simplify_px: float = 0.5,
                 segment_deg: float = OUTLINE_SEGMENT_DEG):
    """Outline of a mask as a shapely (Multi)Polygon in lon/lat degrees, split at 180°.

    Pixel outlines come from :meth:`MapGrid.mask_to_polygon` (one polygon per connected region,
    holes kept, merged), are simplified by ``simplify_px`` pixels
    (Douglas-Peucker, topology preserved; 0 disables it), oriented counter-clockwise (RFC 7946)
    and densified to edges of at most ``segment_deg`` degrees (:data:`OUTLINE_SEGMENT_DEG`; 0
    disables it).
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
    if segment_deg > 0:
        outline = shapely.segmentize(outline, segment_deg)
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
        at 180°, edges at most :data:`OUTLINE_SEGMENT_DEG`), pixel boxes, ``class``, and the
        map's ``subphase``/``sol`` (:func:`map_subphase_sol`).
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
    subphase, sol = map_subphase_sol(map_id)
    for k, mask in enumerate(masks_list):
        if not mask.any():
            continue  # an empty mask (e.g. lost when resampling) is not a storm
        bounds, bbox_px = _mask_bounds(mask, grid)
        outline = mask_outline(mask, grid, simplify_px)
        box = boxes_px[k] if boxes_px is not None else bbox_px
        records.append({
            "map_id": str(map_id),
            "mars_year": int(mars_year),
            "ls": float(ls),
            **bounds,
            "area_km2": grid.mask_area_km2(mask),
            "score": float(scores_arr[k]),
            "polygon_wkt": outline.wkt if hasattr(outline, "wkt") else str(outline),
            "x0": float(box[0]), "y0": float(box[1]), "x1": float(box[2]), "y1": float(box[3]),
            "class": "dust" if classes is None else str(classes[k]),
            "subphase": subphase, "sol": sol,
        })
    return records


def _mask_bounds(mask: np.ndarray, grid: MapGrid) -> tuple[dict, tuple[int, int, int, int]]:
    """Centroid ``lon``, ``lat`` and bounds ``lon_min, lon_max, lat_min, lat_max`` (pixel edges, degrees;
    ``lon_max < lon_min`` across 180°) of one mask, and its wrap-aware pixel box."""
    x0, y0, x1, y1 = grid.wrap_aware_bbox(mask)
    lon_deg, lat_deg = mask_centroid_lonlat(mask, grid)
    lon_min = -180.0 + x0 * grid.res_deg
    lon_max = -180.0 + x1 * grid.res_deg
    if lon_max > 180.0 + 1e-9:
        lon_max -= 360.0
    bounds = {
        "lon": lon_deg,
        "lat": lat_deg,
        "lon_min": float(lon_min),
        "lon_max": float(lon_max),
        "lat_min": float(grid.lat_north_deg - y1 * grid.res_deg),
        "lat_max": float(grid.lat_north_deg - y0 * grid.res_deg),
    }
    return bounds, (x0, y0, x1, y1)


def detections_frame(records: Iterable[dict]) -> pd.DataFrame:
    """A detections DataFrame with the :data:`DETECTION_COLUMNS` first (also when empty).

    Records without ``subphase``/``sol`` (written before those columns) get them from ``map_id``.
    """
    df = pd.DataFrame(list(records))
    if len(df) and ("subphase" not in df.columns or "sol" not in df.columns):
        df["subphase"], df["sol"] = zip(*(map_subphase_sol(m) for m in df["map_id"]))
    if "sol" in df.columns:
        df["sol"] = df["sol"].astype("Int64")
    for column in DETECTION_COLUMNS:
        if column not in df.columns:
            dtype = "object" if column in ("map_id", "polygon_wkt", "class", "subphase") else "float64"
            df[column] = pd.Series(dtype="Int64" if column == "sol" else dtype)
    extra = [c for c in df.columns if c not in DETECTION_COLUMNS]
    return df[DETECTION_COLUMNS + extra]


# ------------------------------------------------------------------------------------------------
# label images
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
        :func:`marsdust.mdad_format.member_cube_value` of tracked member ids to write member numbers as
        MDAD does).
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
