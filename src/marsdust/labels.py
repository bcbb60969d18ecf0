"""Ground truth per map: boxes and masks of the catalogued dust storms on a map grid.

Three ways to turn the storm-table rows of one map into detection targets (``label_mode``):

``"fixed"`` (default, the paper's)
    A square of ``box_size_deg`` degrees (12°) centred on each storm centroid: 120 × 120 px at
    the native 0.1°, 30 × 30 px at the 0.4° working resolution. The mask is the box.
``"area"``
    A box centred on the centroid whose area on the sphere equals the catalogued
    ``area_km2``. ``area_box_shape="ground"`` (default) makes it square on the ground: its
    longitude width is its latitude height divided by cos(latitude), and then its spherical
    area is ``4 R² h sin h`` (``h`` the half-height in radians) whatever the latitude.
    ``"pixels"`` makes it square in map pixels instead. The mask is the box.
``"outline"``
    The catalogued outline (``polygon_wkt``, lon/lat degrees) rasterized on the grid (pixel
    centres inside the polygon; a polygon too small to cover any pixel centre gets every
    pixel it touches); the box is the mask's bounding box. Rows without an outline (MDAD's
    v1.0 rows: the MOC years) fall back to ``outline_fallback`` (``"area"`` by default: the
    catalogued area is the one size the v1.0 table gives, and an area-sized box is nearer the
    outline's bounding box, the box the outlined instances train, than the paper's 12° square)
    and are marked ``has_outline`` False. Their mask array is that box, but it is no mask
    target: :func:`mask_supervised` leaves them out of the mask loss and the mask mAP.

Which instances' masks are targets (:func:`mask_supervised`): in ``"fixed"`` and ``"area"``
modes every instance's (the box is the shape asked for, as in the paper); in ``"outline"``
mode only the outlined ones (and water-ice clouds, which come with their pixels).

Conventions of the returned boxes (decided here, relied on by :mod:`marsdust.data` and
:mod:`marsdust.evaluate`):

* Boxes are ``[x0, y0, x1, y1]`` float32 in continuous pixel coordinates of the given grid
  (see :mod:`marsdust.grid`). **A box across 180° is kept whole**: its centre column lies in
  ``[0, W)`` and ``x0 < 0`` or ``x1 > W`` (the same convention as the detections table). Its
  mask wraps, i.e. has pixels at both map edges. :func:`roll_target` rolls a target to a map
  frame where no box crosses the seam (:func:`seam_free_shift` finds such a frame), which is
  what the training dataset feeds the detectors; :func:`split_at_seam` cuts boxes in two
  where no such frame exists.
* Boxes wider than the map become ``[0, W]``.
* Latitudes are clipped to the grid's band. A box whose visible part after clipping is less
  than ``min_visible_fraction`` (default 0.25) of its full height (for outlines: of its
  polygon's area), or less than ``min_box_px`` pixels high, is dropped — a storm mostly
  beyond the map's edge cannot be learned from the few rows that show it.
* Box sides shorter than ``min_box_px`` (default 2 px) are widened to it around the centre.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from marsdust.grid import MARS_RADIUS_KM, MapGrid, polygon_area_km2, wrap_aware_bbox
from marsdust.mdad_format import mars_time_sols

LABEL_MODES = ("fixed", "area", "outline")
DUST_LABEL = 1
"""Class index of a dust storm (0 is torchvision's background)."""

META_KEYS = ("confidence", "area_km2", "lon", "lat", "member_id", "has_outline")
"""Per-instance metadata arrays returned beside boxes, masks and labels."""


def has_outline(values) -> np.ndarray:
    """Whether each value is an outline: a non-blank WKT string (None, NaN and blank strings are not)."""
    return np.array([isinstance(v, str) and bool(v.strip()) for v in values], dtype=bool)


def outlined_span(storms_df: pd.DataFrame) -> tuple[float, float] | None:
    """The Mars time span (sols, :func:`marsdust.mdad_format.mars_time_sols`) from the first to the last storm
    of the catalogue with an outline (a ``polygon_wkt``), or None when no storm has one.

    The span of an outlining catalogue (MDAD v1.1 cubes): a map outside it, e.g. of the years of a
    box-only v1.0 table, has no outline truth.
    """
    if "polygon_wkt" not in storms_df.columns or len(storms_df) == 0:
        return None
    outlined = storms_df[has_outline(storms_df["polygon_wkt"])]
    if len(outlined) == 0:
        return None
    times = np.asarray(mars_time_sols(outlined["mars_year"], outlined["ls"]), dtype=float)
    return float(times.min()), float(times.max())


def in_outlined_span(span: tuple[float, float] | None, mars_year, ls_deg) -> bool:
    """Whether a map of ``mars_year`` at ``ls_deg`` lies in the span of the outlining catalogue (:func:`outlined_span`;
    None: no catalogue outlines anything)."""
    return span is not None and span[0] <= float(mars_time_sols(mars_year, ls_deg)) <= span[1]


def mask_supervised(has_outline, label_mode: str) -> np.ndarray:
    """Which instances' masks are training and scoring targets (bool (n,)), by ``label_mode``.

    ``"outline"``: the instances with an outline (``has_outline``), because the mask of a row
    without one is only its fallback box; ``"fixed"`` / ``"area"``: every instance (the box is
    the mask asked for).
    """
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    has_outline = np.asarray(has_outline, dtype=bool).reshape(-1)
    return has_outline.copy() if label_mode == "outline" else np.ones_like(has_outline)


LABEL_SOURCES = ("outline", "area_box", "fixed_box")
"""What a storm's target comes from (:func:`label_sources`): its catalogued outline (MDAD v1.1
cubes), a box of its catalogued area (v1.0 table), or the paper's fixed box."""


def label_sources(storms: pd.DataFrame, label_mode: str, outline_fallback: str = "area") -> pd.Series:
    """The label source (:data:`LABEL_SOURCES`) of each storm-table row, as :func:`map_targets` draws it.

    ``"outline"`` mode: ``outline`` for rows with a ``polygon_wkt``, else the fallback's box;
    ``"area"``: ``area_box``; ``"fixed"``: ``fixed_box``.
    """
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    box = {"fixed": "fixed_box", "area": "area_box"}
    if label_mode != "outline":
        return pd.Series(box[label_mode], index=storms.index, dtype=object)
    if "polygon_wkt" in storms.columns:
        outlined = storms["polygon_wkt"].map(lambda v: isinstance(v, str) and bool(v.strip()))
    else:
        outlined = pd.Series(False, index=storms.index)
    return pd.Series(np.where(outlined.to_numpy(bool), "outline", box[outline_fallback]), index=storms.index,
                     dtype=object)


# --- box sizes --------------------------------------------------------------------------------
def fixed_box_half_size_px(grid: MapGrid, box_size_deg: float = 12.0) -> float:
    """Half the side, in pixels of ``grid``, of the paper's fixed box (12° = 120 px at 0.1°)."""
    if box_size_deg <= 0:
        raise ValueError(f"box_size_deg must be positive, got {box_size_deg}")
    return 0.5 * box_size_deg / grid.res_deg


def ground_square_half_height_deg(area_km2: float, radius_km: float = MARS_RADIUS_KM) -> float:
    """Half-height in degrees of a box square on the ground whose spherical area is ``area_km2``.

    Such a box (longitude width = latitude height / cos(lat)) has area ``4 R² h sin h`` for a
    half-height of ``h`` radians, at any latitude; solved for ``h`` by Brent's method.
    """
    from scipy.optimize import brentq

    area = float(area_km2)
    if not np.isfinite(area) or area <= 0:
        raise ValueError(f"area_km2 must be a positive number, got {area_km2}")
    target = area / (4.0 * radius_km**2)
    if target >= (np.pi / 2) * 1.0:  # larger than a pole-to-pole square: cap at the whole sphere's height
        return 90.0
    h_rad = brentq(lambda h: h * np.sin(h) - target, 0.0, np.pi / 2, xtol=1e-12)
    return float(np.degrees(h_rad))


def pixel_square_side_deg(area_km2: float, lat_deg: float, radius_km: float = MARS_RADIUS_KM) -> float:
    """Side in degrees of a lon/lat square (square in map pixels) centred at ``lat_deg`` of the given area.

    Area of a square of side ``s`` centred at latitude ``φ``: ``2 R² s cos φ sin(s/2)`` (s in
    radians); solved for ``s`` by Brent's method, capped at 180°.
    """
    from scipy.optimize import brentq

    area = float(area_km2)
    if not np.isfinite(area) or area <= 0:
        raise ValueError(f"area_km2 must be a positive number, got {area_km2}")
    cos_lat = max(np.cos(np.radians(lat_deg)), 1e-6)

    def excess(side_rad):
        return 2.0 * radius_km**2 * side_rad * cos_lat * np.sin(side_rad / 2.0) - area

    if excess(np.pi) < 0:
        return 180.0
    return float(np.degrees(brentq(excess, 0.0, np.pi, xtol=1e-12)))


def area_box_half_sizes_px(area_km2: float, lat_deg: float, grid: MapGrid, shape: str = "ground") -> tuple[float, float]:
    """Half width and half height in pixels of the area-sized box of a storm.

    Parameters
    ----------
    area_km2 : float
        Catalogued storm area, km².
    lat_deg : float
        Centroid latitude, degrees north.
    grid : MapGrid
        Grid whose pixels the sizes are in.
    shape : {"ground", "pixels"}
        ``"ground"``: square on the ground (lat-corrected lon/lat box); ``"pixels"``: square on the map.
    """
    if shape == "ground":
        half_h_deg = ground_square_half_height_deg(area_km2)
        cos_lat = max(np.cos(np.radians(lat_deg)), 1e-6)
        half_w_deg = min(half_h_deg / cos_lat, 180.0)
    elif shape == "pixels":
        half_h_deg = half_w_deg = 0.5 * pixel_square_side_deg(area_km2, lat_deg)
    else:
        raise ValueError(f"area_box_shape must be 'ground' or 'pixels', got {shape!r}")
    return half_w_deg / grid.res_deg, half_h_deg / grid.res_deg


# --- masks --------------------------------------------------------------------------------------
def box_mask(box_xyxy, grid: MapGrid) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the pixels whose centres fall in a box ``[x0, x1) × [y0, y1)``; columns wrap at 180°.

    The pixel holding the box centre is always set, so a box thinner than a pixel still has a mask.
    """
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    height, width = grid.shape
    mask = np.zeros((height, width), dtype=bool)
    rows = _covered_indices(y0, y1)
    rows = rows[(rows >= 0) & (rows < height)]
    if rows.size == 0:
        rows = np.array([int(np.clip(np.floor(0.5 * (y0 + y1)), 0, height - 1))])
    if x1 - x0 >= width:
        cols = np.arange(width)
    else:
        cols = _covered_indices(x0, x1)
        if cols.size == 0:
            cols = np.array([int(np.floor(0.5 * (x0 + x1)))])
        cols = np.mod(cols, width)
    mask[np.ix_(rows, cols)] = True
    return mask


def _covered_indices(start: float, stop: float) -> np.ndarray:
    """Integer pixel indices whose centres ``i + 0.5`` lie in ``[start, stop)``."""
    first = int(np.ceil(start - 0.5))
    last = int(np.ceil(stop - 0.5)) - 1
    return np.arange(first, last + 1)


def rasterize_outline(geometry, grid: MapGrid) -> np.ndarray:
    """Boolean ``(H, W)`` mask of a lon/lat (Multi)Polygon on ``grid``.

    Pixels whose centres are inside the polygon; if that leaves none (a polygon smaller than a
    pixel), every pixel the polygon touches. Longitudes outside [-180, 180) are wrapped.
    """
    from rasterio.features import rasterize
    from shapely import affinity, get_parts
    from shapely.geometry import box as shapely_box

    shapes = []
    # copies of the polygon shifted by ±360° pick up parts given past the 180° edge; only
    # parts with an area are kept (a copy touching the edge leaves a line that would rasterize)
    for shift in (-360.0, 0.0, 360.0):
        part = affinity.translate(geometry, xoff=shift).intersection(shapely_box(-180.0, -90.0, 180.0, 90.0))
        shapes.extend((piece, 1) for piece in get_parts(part) if piece.geom_type == "Polygon" and piece.area > 0)
    if not shapes:
        return np.zeros(grid.shape, dtype=bool)
    for all_touched in (False, True):
        mask = rasterize(shapes, out_shape=grid.shape, transform=grid.affine, fill=0, all_touched=all_touched, dtype="uint8")
        if mask.any():
            break
    return mask.astype(bool)


def mask_bounding_box(mask: np.ndarray) -> np.ndarray:
    """Bounding box ``[x0, y0, x1, y1]`` of a wrapping ``(H, W)`` mask (keeps a box across 180° whole).

    The box leaves out the widest run of empty columns (counted around the seam; on a tie with
    the run across the seam, the inner run), so a mask with pixels at both map edges gets
    ``x1 > W`` (:func:`marsdust.grid.wrap_aware_bbox`). An empty mask raises ``ValueError``.
    """
    return np.array(wrap_aware_bbox(mask, ties_cross_seam=True), dtype=np.float64)


# --- the targets of one map ------------------------------------------------------------------------
def empty_target(grid: MapGrid, with_masks: bool = True) -> dict:
    """Target of a map without storms (the arrays :func:`map_targets` returns, with n = 0)."""
    height, width = grid.shape
    target = {
        "boxes": np.zeros((0, 4), dtype=np.float32),
        "labels": np.zeros((0,), dtype=np.int64),
        "confidence": np.zeros((0,), dtype=np.int64),
        "area_km2": np.zeros((0,), dtype=np.float64),
        "lon": np.zeros((0,), dtype=np.float64),
        "lat": np.zeros((0,), dtype=np.float64),
        "member_id": np.zeros((0,), dtype=object),
        "has_outline": np.zeros((0,), dtype=bool),
    }
    if with_masks:
        target["masks"] = np.zeros((0, height, width), dtype=np.uint8)
    return target


def map_targets(
    storms: pd.DataFrame,
    grid: MapGrid,
    label_mode: Literal["fixed", "area", "outline"] = "fixed",
    *,
    box_size_deg: float = 12.0,
    area_box_shape: str = "ground",
    outline_fallback: Literal["fixed", "area"] = "area",
    min_visible_fraction: float = 0.25,
    min_box_px: float = 2.0,
    with_masks: bool = True,
) -> dict:
    """Detection targets of one map from its rows of the storm table.

    Parameters
    ----------
    storms : DataFrame
        Rows of the storm table (:func:`marsdust.mdad.read_catalog`) for one map; needs ``lon``,
        ``lat`` (degrees) and, by mode, ``area_km2`` (km²) and ``polygon_wkt``; ``confidence``
        and ``member_id`` are carried along when present. May be empty.
    grid : MapGrid
        Grid of the image the targets are for (e.g. the 0.4° working grid).
    label_mode : {"fixed", "area", "outline"}
        How boxes are sized, see the module docstring.
    box_size_deg : float
        Side of the fixed box in degrees (the paper's 120 px at 0.1° = 12°).
    area_box_shape : {"ground", "pixels"}
        Shape of area-sized boxes.
    outline_fallback : {"fixed", "area"}
        Box for rows without an outline in ``"outline"`` mode.
    min_visible_fraction : float
        Boxes whose part inside the latitude band is a smaller fraction than this are dropped.
    min_box_px : float
        Smallest box side in pixels; smaller sides are widened, and clipped boxes lower than
        this are dropped.
    with_masks : bool
        Whether to build the ``(n, H, W)`` masks (skip them for box-only uses).

    Returns
    -------
    dict of ndarray
        ``boxes`` (n, 4) float32 xyxy pixels (a box across 180° has x0 < 0 or x1 > W),
        ``labels`` (n,) int64 all 1, ``masks`` (n, H, W) uint8 (if ``with_masks``), and
        per-instance ``confidence`` int64 (0 if unknown), ``area_km2`` float64 (NaN if unknown),
        ``lon``, ``lat`` float64 degrees, ``member_id`` object, ``has_outline`` bool.
    """
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    if outline_fallback not in ("fixed", "area"):
        raise ValueError(f"outline_fallback must be 'fixed' or 'area', got {outline_fallback!r}")
    if not 0.0 <= min_visible_fraction <= 1.0:
        raise ValueError(f"min_visible_fraction must be in [0, 1], got {min_visible_fraction}")
    _check_columns(storms, label_mode)
    instances = []
    for position, (_, row) in enumerate(storms.iterrows()):
        instance = _row_instance(row, position, grid, label_mode, box_size_deg, area_box_shape,
                                 outline_fallback, min_visible_fraction, min_box_px, with_masks)
        if instance is not None:
            instances.append(instance)
    if not instances:
        return empty_target(grid, with_masks)
    target = {
        "boxes": np.stack([i["box"] for i in instances]).astype(np.float32),
        "labels": np.full(len(instances), DUST_LABEL, dtype=np.int64),
        "confidence": np.array([i["confidence"] for i in instances], dtype=np.int64),
        "area_km2": np.array([i["area_km2"] for i in instances], dtype=np.float64),
        "lon": np.array([i["lon"] for i in instances], dtype=np.float64),
        "lat": np.array([i["lat"] for i in instances], dtype=np.float64),
        "member_id": np.array([i["member_id"] for i in instances], dtype=object),
        "has_outline": np.array([i["has_outline"] for i in instances], dtype=bool),
    }
    if with_masks:
        target["masks"] = np.stack([i["mask"] for i in instances]).astype(np.uint8)
    return target


def _check_columns(storms: pd.DataFrame, label_mode: str) -> None:
    needed = ["lon", "lat"] + (["area_km2"] if label_mode == "area" else [])
    missing = [c for c in needed if c not in storms.columns]
    if missing:
        raise ValueError(f"storm table lacks column(s) {missing} needed for label_mode={label_mode!r}; "
                         f"it has {list(storms.columns)}")


def _describe(row, position: int) -> str:
    parts = [f"storm row {position}"]
    for key in ("map_id", "member_id"):
        if key in row and pd.notna(row[key]):
            parts.append(f"{key}={row[key]}")
    return " ".join(parts)


def _row_instance(row, position, grid, label_mode, box_size_deg, area_box_shape, outline_fallback,
                  min_visible_fraction, min_box_px, with_masks):
    lon, lat = float(row["lon"]), float(row["lat"])
    if not (np.isfinite(lon) and np.isfinite(lat)):
        raise ValueError(f"{_describe(row, position)}: centroid lon/lat must be finite, got {lon}, {lat}")
    area = float(row["area_km2"]) if "area_km2" in row and pd.notna(row["area_km2"]) else float("nan")
    wkt = row["polygon_wkt"] if "polygon_wkt" in row and isinstance(row["polygon_wkt"], str) and row["polygon_wkt"].strip() else None
    meta = {
        "confidence": int(row["confidence"]) if "confidence" in row and pd.notna(row["confidence"]) else 0,
        "area_km2": area,
        "lon": lon,
        "lat": lat,
        "member_id": str(row["member_id"]) if "member_id" in row and pd.notna(row["member_id"]) else "",
        "has_outline": False,
    }
    if label_mode == "outline" and wkt is not None:
        shape = _outline_shape(wkt, grid, min_visible_fraction, min_box_px, row, position)
        if shape is None:
            return None
        box, mask = shape
        meta["has_outline"] = True
        return {**meta, "box": box, "mask": mask if with_masks else None}
    mode = label_mode if label_mode != "outline" else outline_fallback
    if mode == "area" and not (np.isfinite(area) and area > 0):
        raise ValueError(f"{_describe(row, position)}: area_km2 must be a positive number for area-sized boxes, got {area}")
    cx, cy = grid.lonlat_to_pixel(lon, lat)
    if mode == "fixed":
        half_w = half_h = fixed_box_half_size_px(grid, box_size_deg)
    else:
        half_w, half_h = area_box_half_sizes_px(area, lat, grid, area_box_shape)
    box = _clipped_box(float(cx), float(cy), half_w, half_h, grid, min_visible_fraction, min_box_px)
    if box is None:
        return None
    return {**meta, "box": box, "mask": box_mask(box, grid) if with_masks else None}


def paper_boxes_at(lon_deg, lat_deg, grid: MapGrid, box_size_deg: float = 12.0) -> np.ndarray:
    """The paper's fixed boxes centred on given centroids, as ``"fixed"`` labels draw them, none dropped.

    This is how a detection is reduced to the paper's 12° box: a square of ``box_size_deg``
    around the centroid of its outline, clipped to the latitude band exactly like the
    catalogue's fixed boxes (:func:`map_targets`), but kept even when mostly outside the band
    so that every detection keeps its box.

    Parameters
    ----------
    lon_deg, lat_deg : array_like
        Centroids, degrees east / north.
    grid : MapGrid
        Grid of the boxes' pixels.
    box_size_deg : float
        Side of the box in degrees.

    Returns
    -------
    ndarray (n, 4) float64
        ``x0, y0, x1, y1`` pixels of ``grid`` (a box across 180° kept whole).
    """
    lon = np.atleast_1d(np.asarray(lon_deg, dtype=np.float64))
    lat = np.atleast_1d(np.asarray(lat_deg, dtype=np.float64))
    half = fixed_box_half_size_px(grid, box_size_deg)
    boxes = np.zeros((lon.size, 4), dtype=np.float64)
    for k, (cx, cy) in enumerate(zip(*grid.lonlat_to_pixel(lon, lat))):
        box = _clipped_box(float(cx), float(cy), half, half, grid, 0.0, 0.0)
        boxes[k] = box if box is not None else (cx - half, cy - half, cx + half, cy + half)
    return boxes


def _clipped_box(cx, cy, half_w, half_h, grid, min_visible_fraction, min_box_px):
    """Box around a centre, clipped to the latitude band; None if too little of it is visible."""
    half_w = max(half_w, 0.5 * min_box_px)
    half_h = max(half_h, 0.5 * min_box_px)
    height, width = grid.shape
    x0, x1 = cx - half_w, cx + half_w
    if x1 - x0 >= width:
        x0, x1 = 0.0, float(width)
    y0, y1 = cy - half_h, cy + half_h
    y0_clip, y1_clip = max(y0, 0.0), min(y1, float(height))
    visible = y1_clip - y0_clip
    if visible <= 0 or visible < min_box_px or visible < min_visible_fraction * (y1 - y0):
        return None
    return np.array([x0, y0_clip, x1, y1_clip], dtype=np.float64)


def _outline_shape(wkt, grid, min_visible_fraction, min_box_px, row, position):
    from shapely import wkt as shapely_wkt

    try:
        geometry = shapely_wkt.loads(wkt)
    except Exception as error:  # shapely raises several types for bad WKT
        raise ValueError(f"{_describe(row, position)}: polygon_wkt is not valid WKT ({error})") from error
    mask = rasterize_outline(geometry, grid)
    if not mask.any():
        return None
    full_area = polygon_area_km2(geometry)
    if full_area > 0 and grid.mask_area_km2(mask) < min_visible_fraction * full_area:
        return None
    box = mask_bounding_box(mask)
    if box[3] - box[1] < min_box_px and (box[1] <= 0 or box[3] >= grid.height):
        return None  # a sliver at the band edge
    return box, mask


# --- the seam at 180° ----------------------------------------------------------------------------------
def seam_free_columns(boxes: np.ndarray, width: int) -> np.ndarray:
    """Which integer column boundaries ``s`` in ``[0, W)`` no box strictly straddles (bool (W,)).

    A seam placed at such a boundary (by rolling the map so that ``s`` becomes x = 0) cuts no box.
    Boxes as wide as the map are ignored: they span the whole map in any frame.
    """
    free = np.ones(width, dtype=bool)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    columns = np.arange(width)
    for x0, _, x1, _ in boxes:
        if x1 - x0 >= width:
            continue
        offset = np.mod(columns - x0, width)  # distance of each boundary east of x0
        free &= ~((offset > 1e-9) & (offset < x1 - x0 - 1e-9))
    return free


def seam_free_shift(boxes: np.ndarray, width: int, rng: np.random.Generator | None = None) -> int | None:
    """A roll (pixels, for ``np.roll(image, shift, axis=-1)``) after which no box crosses the map edge.

    Without ``rng`` the smallest roll is returned (0 when no box crosses 180°); with ``rng`` a
    uniformly random one among all seam-free rolls. ``None`` when every column is inside a box.
    """
    free = np.flatnonzero(seam_free_columns(boxes, width))
    if free.size == 0:
        return None
    if rng is not None:
        seam = int(rng.choice(free))
    else:
        distance = np.minimum(free, width - free)
        seam = int(free[np.argmin(distance)])
    return int((-seam) % width)


def roll_target(target: dict, shift_px: int, width: int) -> dict:
    """The target of a map rolled by ``shift_px`` columns (``np.roll(image, shift_px, axis=-1)``).

    Box x-coordinates move by ``shift_px`` and are re-expressed with ``x0`` in ``[0, W)``
    (a box then runs past ``W`` only if it crosses the new seam); masks roll with the image.
    Other keys are copied unchanged.
    """
    shift_px = int(shift_px)
    out = dict(target)
    boxes = np.array(target["boxes"], dtype=np.float64).reshape(-1, 4)
    widths = boxes[:, 2] - boxes[:, 0]
    full = widths >= width
    x0 = np.mod(boxes[:, 0] + shift_px, width)
    x0 = np.where(np.isclose(x0, width), 0.0, x0)
    x1 = x0 + widths
    x1 = np.where(np.abs(x1 - width) < 1e-6, float(width), x1)
    x0, x1 = np.where(full, 0.0, x0), np.where(full, float(width), x1)
    out["boxes"] = np.column_stack([x0, boxes[:, 1], x1, boxes[:, 3]]).astype(np.float32)
    if "masks" in target:
        out["masks"] = np.roll(target["masks"], shift_px, axis=-1)
    return out


def flip_target(target: dict, width: int) -> dict:
    """The target of a map mirrored left–right (columns ``j -> W-1-j``, longitudes ``lon -> -lon``)."""
    out = dict(target)
    boxes = np.array(target["boxes"], dtype=np.float64).reshape(-1, 4)
    out["boxes"] = np.column_stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]]).astype(np.float32)
    if "masks" in target:
        out["masks"] = np.ascontiguousarray(target["masks"][..., ::-1])
    return out


def split_at_seam(target: dict, width: int, min_visible_fraction: float = 0.25) -> dict:
    """Cut boxes that cross the map edge into their two visible pieces.

    Used only when no roll frees the seam (:func:`seam_free_shift` returned None). Each piece
    keeps the instance's metadata and the part of its mask on its side of the seam; a piece
    narrower than ``min_visible_fraction`` of the box's width is dropped.
    """
    boxes = np.array(target["boxes"], dtype=np.float64).reshape(-1, 4)
    per_instance = [k for k, v in target.items() if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == len(boxes)]
    pieces_index, pieces_boxes, piece_cols = [], [], []
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        box_width = x1 - x0
        if x0 >= 0 and x1 <= width:
            parts = [(x0, x1)]
        else:
            x0w = x0 % width if x0 < 0 else x0
            x1w = x1 - width if x1 > width else x1
            parts = [(x0w, float(width)), (0.0, x1w)]
        for a, b in parts:
            if b - a <= 0 or (len(parts) == 2 and b - a < min_visible_fraction * box_width):
                continue
            pieces_index.append(i)
            pieces_boxes.append([a, y0, b, y1])
            piece_cols.append((a, b, len(parts) == 2))
    out = {k: v for k, v in target.items() if k not in per_instance}
    index = np.array(pieces_index, dtype=np.int64)
    for key in per_instance:
        out[key] = target[key][index]
    out["boxes"] = np.array(pieces_boxes, dtype=np.float32).reshape(-1, 4)
    if "masks" in target and len(index):
        masks = out["masks"].copy()
        for k, (a, b, was_split) in enumerate(piece_cols):
            if was_split:
                keep = np.zeros(width, dtype=bool)
                keep[int(np.floor(a)):int(np.ceil(b))] = True
                masks[k][:, ~keep] = 0
        out["masks"] = masks
    return out
