"""Error analysis of a detector against the catalogue: where storms are missed, what false alarms are.

Inputs are the per-map dicts of :mod:`marsdust.evaluate.inputs` (ground truth ``boxes``,
``confidence``, ``area_km2``; predictions ``boxes``, ``scores``, optional ``masks``; boxes in
working-grid pixels, a box across 180° kept whole with ``x0 < 0`` or ``x1 > W``), the maps'
:class:`MapGrid`\\ s, their Ls, and optionally each map's image (``(H, W, 3)`` float RGB in [0, 1]),
valid mask (``(H, W)`` bool, False = missing data: black gaps, missing swaths, polar night) and
cloud mask (``(H, W)`` bool, True = cloudy); :class:`MapsToAnalyze` holds them together.

Rules decided here
------------------
* **Matching** is :mod:`marsdust.evaluate.matching`'s (the rule of the centre deviations and of
  ``per_map.csv``'s ``n_matched_iou50``): wrapped box IoU
  (:func:`~marsdust.evaluate.matching.wrapped_iou`), then pairs with IoU ≥ ``match_iou`` (0.5)
  taken greedily in decreasing IoU, each storm and each detection used once. A storm is
  **found** when it is paired with a detection of score ≥ ``score_threshold`` (0.5); **found at
  any score** when it is paired in the same matching over every detection given (the best
  recall any threshold could reach).
* **Storm attributes** (one row per catalogued storm): centre ``lon_deg, lat_deg`` (box centre),
  ``area_km2`` and ``confidence`` from the catalogue, ``season`` (Ls quarter,
  :func:`~marsdust.evaluate.metrics.season_of`), ``lat_band`` (:data:`LAT_BAND_EDGES_DEG`, by centre
  latitude) and three distances in degrees of the map grid (pixels × resolution), each 0 when
  the box touches or crosses the thing: ``edge_distance_deg`` from the box to the map's
  northern or southern edge, ``seam_distance_deg`` from the box to 180° (boxes across it are
  0), ``gap_distance_deg`` from the box to the nearest missing pixel (Euclidean distance
  transform of the valid mask, wrapping in longitude; ``inf`` on a map without missing pixels,
  NaN without a valid mask).
* **Missed storms** get one category, the first that applies: ``low_score`` (a detection
  below the score threshold overlaps it at IoU ≥ ``match_iou``: found, but ranked too low);
  ``merged`` (a detection at or above the threshold overlaps it at IoU ≥ ``match_iou`` but was
  paired with another storm); ``localization`` (its best IoU with a detection at or above the
  threshold is in [0.1, ``match_iou``)); ``not_detected`` (nothing near it).
* **False alarms** are detections with score ≥ ``score_threshold`` paired with no storm. Each
  gets one category, the first that applies (TIDE's duplicate and localization errors, then
  causes one can see on the map):

  1. ``duplicate``: IoU ≥ ``match_iou`` with a storm that another detection (of higher IoU
     with it) was paired with;
  2. ``localization``: best IoU with any storm in [0.1, ``match_iou``);
  3. ``seam_or_gap``: the box crosses 180°, or at least :data:`GAP_FRACTION` (25%) of its
     pixels are missing or within :data:`GAP_MARGIN_DEG` (1°) of a missing pixel;
  4. ``cloud`` (water-ice cloud): the median blue/red ratio of the box's valid pixels is at
     least :data:`CLOUD_BLUE_RED_FACTOR` (1.2) times the median blue/red ratio of the map's
     valid pixels, and the box's median blue ranks at or above the map's
     :data:`CLOUD_BLUE_PERCENTILE` (50th) percentile of blue. Water-ice clouds add reflectance,
     more in the blue band (MOC's 400–450 nm) than in the red (575–625 nm); dust does the
     opposite. Dark ground is also greyer (higher blue/red) but darker in blue, which the second
     test excludes. Ratios and ranks against the map's own pixels are unchanged by a linear
     stretch of either band, so the rule carries from synthetic to real MDGMs. Where the map
     has a cloud mask (``cloud_masks``, :mod:`marsdust.cloudmask`) the mask decides instead:
     the detection lies **on a cloud** (the rule :mod:`marsdust.evaluate.clouds` counts by too,
     :func:`cloudy_fraction`) when at least :data:`ON_CLOUD_FRACTION` (50%) of its outline's
     pixels are cloudy (its mask's pixels; a detection without a mask is outlined by its box's
     pixels, :func:`box_window`);
  5. ``bright_surface``: not a cloud by 4, and the median red of the box's valid pixels ranks
     at or above the :data:`BRIGHT_RED_PERCENTILE` (75th) percentile of red over the map's
     valid pixels (ties counted half): a bright albedo region (Tharsis, Arabia, Hellas).
     Bright ground is as reddish as dust, so colour cannot tell it from dust the catalogue
     does not list; this category holds both;
  6. ``background``: the rest.

  Pixel ratios use pixels whose red is at least :data:`MIN_RED_FOR_RATIO` (0.02). Without an
  image the colour tests never apply; without a valid mask only the seam test of 3 does.
* **Recall breakdowns** (``found`` fractions, and ``found at any score``) by storm size
  (``area_km2`` terciles, or fixed inner edges in km²; the bins of
  :func:`marsdust.evaluate.metrics.breakdown_by_size`), latitude band, season, catalogue confidence,
  the three distances (bins :data:`DISTANCE_BIN_EDGES_DEG`: touching, (0, 5]°, (5, 15]°,
  > 15°), and a sweep of the score threshold (recall, precision and detections at each of
  :data:`~marsdust.evaluate.matching.SCORE_THRESHOLDS`, 0.05 to 0.95). Recall is NaN (``null``
  in JSON) for a bin without storms.
* **Pixels of a box** (:func:`box_window`): the rows from ``floor(y0)`` to ``ceil(y1)`` inside
  the map and the columns from ``floor(x0)`` to ``ceil(x1)`` wrapped at 180°
  (:func:`marsdust.grid.wrapped_columns`), at least one pixel.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from marsdust.evaluate.inputs import as_array, check_map_keys, entry_boxes, entry_masks, entry_scores, map_ls_of
from marsdust.evaluate.matching import (
    SCORE_THRESHOLDS,
    detection_storm_iou,
    pairs_among,
    pairs_at_threshold,
    threshold_ladder,
)
from marsdust.evaluate.metrics import SEASONS, jsonable, season_of, size_bin_edges, size_bin_labels
from marsdust.fileio import write_table_atomic, write_text_atomic
from marsdust.grid import MapGrid, lonlat_box_area_km2, wrapped_columns
from marsdust.mdad_format import CONFIDENCE_LEVELS

LAT_BAND_EDGES_DEG = (-90.0, -60.0, -30.0, 0.0, 30.0, 60.0, 90.0)
"""Latitude band edges (degrees north) of the recall breakdown."""

DISTANCE_BIN_EDGES_DEG = (0.0, 5.0, 15.0)
"""Distance bins (degrees): touching (0), (0, 5], (5, 15], > 15."""

LOCALIZATION_MIN_IOU = 0.1
GAP_MARGIN_DEG = 1.0
GAP_FRACTION = 0.25
CLOUD_BLUE_RED_FACTOR = 1.2
CLOUD_BLUE_PERCENTILE = 50.0
ON_CLOUD_FRACTION = 0.5
"""A detection lies on a cloud when at least this fraction of its outline's pixels are cloudy in the map's cloud mask."""
BRIGHT_RED_PERCENTILE = 75.0
MIN_RED_FOR_RATIO = 0.02

MISS_CATEGORIES = ("low_score", "merged", "localization", "not_detected")
FALSE_ALARM_CATEGORIES = ("duplicate", "localization", "seam_or_gap", "cloud", "bright_surface", "background")


# --- per-map context --------------------------------------------------------------------------------
def gap_distance_deg(valid: np.ndarray, res_deg: float) -> np.ndarray:
    """Distance (degrees of the grid) from every pixel to the nearest missing pixel, wrapping in longitude.

    Parameters
    ----------
    valid : ndarray of bool (H, W)
        False where the map has no observation.
    res_deg : float
        Pixel size in degrees.

    Returns
    -------
    ndarray of float (H, W)
        0 on missing pixels; ``inf`` everywhere when no pixel is missing. Exact up to 180°.
    """
    from scipy import ndimage

    valid = np.asarray(valid, dtype=bool)
    if valid.ndim != 2:
        raise ValueError(f"valid mask must be (H, W), got shape {valid.shape}")
    if valid.all():
        return np.full(valid.shape, np.inf)
    pad = valid.shape[1] // 2
    padded = np.pad(valid, ((0, 0), (pad, pad)), mode="wrap")
    return ndimage.distance_transform_edt(padded)[:, pad:pad + valid.shape[1]] * res_deg


class _MapContext:
    """What the analysis needs of one map: grid, distance to gaps, red and blue/red pixel statistics."""

    def __init__(self, map_id: str, grid: MapGrid, rgb: np.ndarray | None, valid: np.ndarray | None,
                 cloudy: np.ndarray | None = None):
        self.grid = grid
        self.cloudy = None if cloudy is None else np.asarray(cloudy, dtype=bool)
        if self.cloudy is not None:
            _check_shape(f"cloud_masks[{map_id!r}]", self.cloudy.shape, grid.shape)
        if valid is not None:
            valid = np.asarray(valid, dtype=bool)
            _check_shape(f"valid_masks[{map_id!r}]", valid.shape, grid.shape)
        self.gap_distance = None if valid is None else gap_distance_deg(valid, grid.res_deg)
        self.red = self.blue = self.blue_red = None
        if rgb is not None:
            rgb = as_array(rgb, np.float64)
            _check_shape(f"images[{map_id!r}]", rgb.shape[:2], grid.shape)
            observed = rgb.max(axis=-1) > 0 if valid is None else valid  # black = missing, as mdgm reads maps
            self.red = np.where(observed, rgb[..., 0], np.nan)
            self.blue = np.where(observed, rgb[..., 2], np.nan)
            self.blue_red = np.where(self.red >= MIN_RED_FOR_RATIO, rgb[..., 2] / np.maximum(self.red, MIN_RED_FOR_RATIO),
                                     np.nan)
            self.sorted_red = np.sort(self.red[np.isfinite(self.red)])
            self.sorted_blue = np.sort(self.blue[np.isfinite(self.blue)])
            self.median_blue_red = float(np.nanmedian(self.blue_red)) if np.isfinite(self.blue_red).any() else np.nan

    def box_features(self, box) -> dict:
        """Gap distance, near-gap fraction and colour statistics of one box (module docstring)."""
        rows, cols = box_window(box, self.grid)
        out = {"gap_distance_deg": np.nan, "near_gap_fraction": np.nan, "blue_red_vs_map": np.nan,
               "red_percentile": np.nan, "blue_percentile": np.nan}
        if self.gap_distance is not None:
            distance = self.gap_distance[rows][:, cols]
            out["gap_distance_deg"] = float(distance.min())
            out["near_gap_fraction"] = float((distance <= GAP_MARGIN_DEG).mean())
        if self.red is not None:
            blue_red = self.blue_red[rows][:, cols]
            if np.isfinite(blue_red).any() and self.median_blue_red > 0:
                out["blue_red_vs_map"] = float(np.nanmedian(blue_red) / self.median_blue_red)
            out["red_percentile"] = _percentile_rank(self.red[rows][:, cols], self.sorted_red)
            out["blue_percentile"] = _percentile_rank(self.blue[rows][:, cols], self.sorted_blue)
        return out


def box_window(box, grid: MapGrid) -> tuple[slice, np.ndarray]:
    """Rows (slice) and map columns (wrapped index array, west to east) of the pixels a box covers.

    Rows run from ``floor(y0)`` to ``ceil(y1)`` clipped to the map, columns from ``floor(x0)``
    to ``ceil(x1)`` wrapped at 180° (:func:`marsdust.grid.wrapped_columns`); at least one pixel.
    """
    height = grid.height
    x0, y0, x1, y1 = (float(v) for v in box)
    row0 = int(np.clip(np.floor(y0), 0, height - 1))
    row1 = int(np.clip(max(np.ceil(y1), row0 + 1), row0 + 1, height))
    return slice(row0, row1), wrapped_columns(x0, x1, grid.width)


def cloudy_fraction(outline: np.ndarray | None, box, cloudy: np.ndarray, grid: MapGrid) -> float:
    """Fraction of a detection's outline pixels that are cloudy (the "on a cloud" rule of the module docstring).

    Parameters
    ----------
    outline : ndarray (H, W) or None
        The detection's mask (nonzero = outline pixels); None for a detection without a mask,
        which is outlined by its box's pixels (:func:`box_window`).
    box : (x0, y0, x1, y1)
        The detection's box (pixels).
    cloudy : bool ndarray (H, W)
        The map's cloud mask on ``grid``.
    grid : MapGrid

    Returns
    -------
    float
        In [0, 1]; 0 for an empty outline. The detection lies on a cloud when this is at least
        :data:`ON_CLOUD_FRACTION` (:func:`is_on_cloud`).
    """
    if outline is None:
        rows, cols = box_window(box, grid)
        return float(cloudy[rows][:, cols].mean())
    outline = np.asarray(outline, bool)
    n = np.count_nonzero(outline)
    return float(np.count_nonzero(outline & cloudy) / n) if n else 0.0


def is_on_cloud(fraction: float) -> bool:
    """Whether a detection whose outline is this :func:`cloudy_fraction` cloudy lies on a cloud."""
    return fraction >= ON_CLOUD_FRACTION


def _percentile_rank(box_values: np.ndarray, sorted_map_values: np.ndarray) -> float:
    """Percentile rank (0–100, ties counted half as scipy's ``kind="mean"``) of a box's median among a map's values."""
    if not np.isfinite(box_values).any() or sorted_map_values.size == 0:
        return float("nan")
    median = np.nanmedian(box_values)
    rank = np.searchsorted(sorted_map_values, median, "left") + np.searchsorted(sorted_map_values, median, "right")
    return float(50.0 * rank / sorted_map_values.size)


def _check_shape(name: str, shape, expected) -> None:
    if tuple(shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(shape)}, but the map's grid is {tuple(expected)}")


def _grid_of(map_id: str, grids, entry) -> MapGrid:
    grid = grids.get(map_id) if isinstance(grids, Mapping) else grids
    if isinstance(grid, MapGrid):
        return grid
    masks = entry_masks(entry)
    if masks is not None and masks.ndim == 3:
        return MapGrid.from_shape(*masks.shape[1:])
    raise ValueError(f"map {map_id}: pass grids= (a MapGrid or a dict of them) or give its ground-truth masks")


# --- geometry of boxes --------------------------------------------------------------------------------
def box_geometry(boxes: np.ndarray, grid: MapGrid) -> pd.DataFrame:
    """Centre, size and distances to the map's edge and to 180° of xyxy pixel boxes.

    Returns
    -------
    DataFrame
        One row per box: ``lon_deg, lat_deg`` (box centre), ``box_area_km2`` (the box on the
        sphere), ``edge_distance_deg`` (to the nearer northern/southern map edge, 0 when
        touching), ``seam_distance_deg`` (to 180°, 0 when crossing), ``crosses_seam``.
    """
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    height, width = grid.shape
    center_x = 0.5 * (boxes[:, 0] + boxes[:, 2])
    shift = np.floor(center_x / width) * width  # the copy whose centre lies in [0, W)
    x0, x1 = boxes[:, 0] - shift, boxes[:, 2] - shift
    lon, lat = grid.pixel_to_lonlat(center_x - shift, 0.5 * (boxes[:, 1] + boxes[:, 3]))
    lon_min, lat_max = grid.pixel_to_lonlat(x0, boxes[:, 1])
    lon_max, lat_min = grid.pixel_to_lonlat(x1, boxes[:, 3])
    return pd.DataFrame({
        "lon_deg": np.atleast_1d(lon), "lat_deg": np.atleast_1d(lat),
        "box_area_km2": np.atleast_1d(lonlat_box_area_km2(lon_min, lon_max, lat_min, lat_max)),
        "edge_distance_deg": np.clip(np.minimum(boxes[:, 1], height - boxes[:, 3]), 0, None) * grid.res_deg,
        "seam_distance_deg": np.clip(np.minimum(x0, width - x1), 0, None) * grid.res_deg,
        "crosses_seam": (x0 < 0) | (x1 > width),
    })


def lat_band_of(lat_deg) -> np.ndarray:
    """Name of the :data:`LAT_BAND_EDGES_DEG` band of each latitude (``"30S-0"``, ``"0-30N"`` …)."""
    names = [f"{_lat_name(lo)}-{_lat_name(hi)}" for lo, hi in zip(LAT_BAND_EDGES_DEG[:-1], LAT_BAND_EDGES_DEG[1:])]
    index = np.clip(np.searchsorted(LAT_BAND_EDGES_DEG, np.asarray(lat_deg, float), side="right") - 1,
                    0, len(names) - 1)
    return np.asarray(names, dtype=object)[index]


def _lat_name(lat_deg: float) -> str:
    return "0" if lat_deg == 0 else f"{abs(lat_deg):g}{'N' if lat_deg > 0 else 'S'}"


def distance_bin_of(distance_deg, edges=DISTANCE_BIN_EDGES_DEG) -> np.ndarray:
    """Label of each distance (degrees): ``"0 (touching)"``, ``"0-5 deg"``, …, ``">15 deg"``; None for NaN."""
    labels = distance_bin_labels(edges)
    distance = np.asarray(distance_deg, float)
    index = np.searchsorted(np.asarray(edges, float), distance, side="left")  # d <= 0 -> 0, (0, 5] -> 1, ...
    return np.where(np.isnan(distance), None, np.asarray(labels, dtype=object)[np.minimum(index, len(labels) - 1)])


def distance_bin_labels(edges=DISTANCE_BIN_EDGES_DEG) -> list[str]:
    """Bin labels of :func:`distance_bin_of` for the given edges (the first edge is 0: touching)."""
    inner = [f"{lo:g}-{hi:g} deg" for lo, hi in zip(edges[:-1], edges[1:])]
    return ["0 (touching)", *inner, f">{edges[-1]:g} deg"]


# --- categories of one map ---------------------------------------------------------------------------
def miss_category(iou_to_storm: np.ndarray, scores: np.ndarray, paired_detections: set, score_threshold: float,
                  match_iou: float) -> str:
    """Category of a missed storm from its IoU with every detection (module docstring order)."""
    kept = scores >= score_threshold
    if np.any(~kept & (iou_to_storm >= match_iou)):
        return "low_score"
    if any(kept[d] and iou_to_storm[d] >= match_iou and d in paired_detections for d in range(len(scores))):
        return "merged"
    if np.any(kept & (iou_to_storm >= LOCALIZATION_MIN_IOU)):
        return "localization"
    return "not_detected"


def false_alarm_category(best_iou: float, crosses_seam: bool, features: Mapping, match_iou: float) -> str:
    """Category of a false alarm (module docstring order) from its best IoU with any storm and its box features."""
    if best_iou >= match_iou:
        return "duplicate"
    if best_iou >= LOCALIZATION_MIN_IOU:
        return "localization"
    if crosses_seam or features["near_gap_fraction"] >= GAP_FRACTION:
        return "seam_or_gap"
    cloudy = features.get("cloudy_fraction")
    if cloudy is not None:  # the map's cloud mask decides
        if is_on_cloud(cloudy):
            return "cloud"
    elif features["blue_red_vs_map"] >= CLOUD_BLUE_RED_FACTOR and features["blue_percentile"] >= CLOUD_BLUE_PERCENTILE:
        return "cloud"
    if features["red_percentile"] >= BRIGHT_RED_PERCENTILE:
        return "bright_surface"
    return "background"


def _map_tables(map_id, gt, prediction, context: _MapContext, ls_deg, score_threshold, match_iou):
    """(storm rows, detection rows) of one map."""
    gt_boxes = entry_boxes(gt)
    iou, scores = detection_storm_iou(gt, prediction, context.grid.width, map_id)
    found = pairs_at_threshold(iou, scores, score_threshold, match_iou)
    found_any = pairs_among(iou, np.arange(len(scores)), match_iou)
    base = {"map_id": map_id, "ls_deg": ls_deg, "season": season_of(ls_deg)}
    storms = _storm_rows(gt, gt_boxes, iou, scores, found, found_any, context, base, score_threshold, match_iou)
    detections = _detection_rows(prediction, scores, iou, found, context, base, score_threshold, match_iou)
    return storms, detections


def _storm_rows(gt, gt_boxes, iou, scores, found, found_any, context, base, score_threshold, match_iou) -> pd.DataFrame:
    n = len(gt_boxes)
    geometry = box_geometry(gt_boxes, context.grid)
    confidence = as_array(gt.get("confidence", np.full(n, np.nan)), float).reshape(-1)
    area = as_array(gt.get("area_km2", np.full(n, np.nan)), float).reshape(-1)
    paired = set(found.values())
    rows = []
    for g in range(n):
        is_found = g in found
        kept_iou = iou[scores >= score_threshold, g]
        rows.append({**base, "gt_index": g, "confidence": confidence[g], "area_km2": area[g],
                     "found": is_found, "found_any_score": g in found_any,
                     "matched_score": float(scores[found[g]]) if is_found else np.nan,
                     "best_iou": float(kept_iou.max()) if kept_iou.size else 0.0,
                     "best_score_at_match_iou": _max_or_nan(scores[iou[:, g] >= match_iou]),
                     "category": None if is_found else miss_category(iou[:, g], scores, paired, score_threshold,
                                                                      match_iou),
                     "gap_distance_deg": context.box_features(gt_boxes[g])["gap_distance_deg"]})
    table = pd.concat([pd.DataFrame(rows, columns=_STORM_BASE_COLUMNS), geometry], axis=1)
    table[["x0", "y0", "x1", "y1"]] = gt_boxes
    return table


def _max_or_nan(values: np.ndarray) -> float:
    return float(values.max()) if values.size else float("nan")


_STORM_BASE_COLUMNS = ["map_id", "ls_deg", "season", "gt_index", "confidence", "area_km2", "found", "found_any_score",
                       "matched_score", "best_iou", "best_score_at_match_iou", "category", "gap_distance_deg"]


def _detection_rows(prediction, scores, iou, found, context, base, score_threshold, match_iou) -> pd.DataFrame:
    pred_boxes = entry_boxes(prediction)
    outlines = entry_masks(prediction) if context.cloudy is not None else None
    geometry = box_geometry(pred_boxes, context.grid)
    paired = {d: g for g, d in found.items()}
    rows = []
    for d in range(len(pred_boxes)):
        features = context.box_features(pred_boxes[d])
        if context.cloudy is not None:
            outline = outlines[d] if outlines is not None and d < len(outlines) else None
            features["cloudy_fraction"] = cloudy_fraction(outline, pred_boxes[d], context.cloudy, context.grid)
        best_iou = float(iou[d].max()) if iou.shape[1] else 0.0
        false_alarm = scores[d] >= score_threshold and d not in paired
        category = (false_alarm_category(best_iou, bool(geometry["crosses_seam"].iloc[d]), features, match_iou)
                    if false_alarm else None)
        rows.append({**base, "pred_index": d, "score": float(scores[d]), "matched_gt_index": paired.get(d, -1),
                     "best_iou": best_iou, "false_alarm": false_alarm, "category": category, **features})
    columns = _DETECTION_BASE_COLUMNS + (["cloudy_fraction"] if context.cloudy is not None else [])
    table = pd.concat([pd.DataFrame(rows, columns=columns), geometry], axis=1)
    table[["x0", "y0", "x1", "y1"]] = pred_boxes
    return table


_DETECTION_BASE_COLUMNS = ["map_id", "ls_deg", "season", "pred_index", "score", "matched_gt_index", "best_iou",
                           "false_alarm", "category", "gap_distance_deg", "near_gap_fraction", "blue_red_vs_map",
                           "red_percentile", "blue_percentile"]


# --- all maps -----------------------------------------------------------------------------------------------
def error_tables(ground_truth: Mapping, predictions: Mapping, grids=None, *, map_ls: Mapping | None = None,
                 images: Mapping | None = None, valid_masks: Mapping | None = None, score_threshold: float = 0.5,
                 match_iou: float = 0.5, cloud_masks: Mapping | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per catalogued storm and one per detection, with matches, attributes and error categories.

    Parameters
    ----------
    ground_truth, predictions : dict map_id -> dict
        As for :func:`marsdust.evaluate.evaluate_detections` (boxes in pixels of the map's grid).
    grids : MapGrid or dict map_id -> MapGrid, optional
        The grid the boxes, images and valid masks are on (else inferred from ground-truth masks).
    map_ls : dict map_id -> Ls (degrees), optional
        Else the ground-truth entries' ``ls``.
    images : dict map_id -> ndarray (H, W, 3) float in [0, 1] or None, optional
        The maps, for the cloud and bright-surface tests.
    valid_masks : dict map_id -> ndarray (H, W) bool or None, optional
        Observed pixels, for the gap distances and the seam-or-gap test.
    cloud_masks : dict map_id -> ndarray (H, W) bool, optional
        Cloudy pixels of the maps that have a cloud mask: their false alarms are ``cloud`` by the
        mask (``cloudy_fraction`` of the detection's outline, :func:`cloudy_fraction`) instead of
        by colour.
    score_threshold : float
        Operating point: detections below it do not count as found storms or false alarms.
    match_iou : float
        IoU of a match (0.5).

    Returns
    -------
    storms, detections : DataFrame
        ``storms``: ``map_id, ls_deg, season, gt_index, confidence, area_km2, found,
        found_any_score, matched_score, best_iou`` (with detections ≥ threshold),
        ``best_score_at_match_iou``, ``category`` (missed storms), distances (degrees),
        ``lon_deg, lat_deg, lat_band``, ``x0..y1`` (pixels). ``detections``: ``map_id, ls_deg,
        season, pred_index, score, matched_gt_index`` (-1 unpaired), ``best_iou``,
        ``false_alarm``, ``category`` (false alarms), box features, ``lon_deg, lat_deg,
        box_area_km2``, distances, ``x0..y1``.
    """
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    storms, detections = [], []
    for map_id in check_map_keys(ground_truth, predictions):
        gt = ground_truth[map_id]
        grid = _grid_of(map_id, grids, gt)
        context = _MapContext(map_id, grid, (images or {}).get(map_id), (valid_masks or {}).get(map_id),
                              (cloud_masks or {}).get(map_id))
        map_storms, map_detections = _map_tables(map_id, gt, predictions.get(map_id) or {}, context,
                                                 map_ls_of(map_id, gt, map_ls), score_threshold, match_iou)
        storms.append(map_storms)
        detections.append(map_detections)
    storms_df = _concat(storms, ("found", "found_any_score", "crosses_seam"))
    if len(storms_df):
        storms_df["lat_band"] = lat_band_of(storms_df["lat_deg"])
    return storms_df, _concat(detections, ("false_alarm", "crosses_seam"))


def _concat(tables: list[pd.DataFrame], bool_columns) -> pd.DataFrame:
    """Per-map tables stacked; maps without rows are left out so they cannot turn flags into objects."""
    filled = [table for table in tables if len(table)]
    if not filled:
        return tables[0] if tables else pd.DataFrame()
    out = pd.concat(filled, ignore_index=True)
    return out.astype({column: bool for column in bool_columns})


# --- summaries ------------------------------------------------------------------------------------------------
def _recall_counts(storms: pd.DataFrame) -> dict:
    n = int(len(storms))
    n_found, n_any = int(storms["found"].sum()) if n else 0, int(storms["found_any_score"].sum()) if n else 0
    return {"n_storms": n, "n_found": n_found, "recall": n_found / n if n else float("nan"),
            "n_found_any_score": n_any, "recall_any_score": n_any / n if n else float("nan")}


def _recall_by(storms: pd.DataFrame, labels, keys) -> dict:
    labels = pd.Series(labels, index=storms.index, dtype=object)
    return {str(key): _recall_counts(storms[labels == key]) for key in keys}


def recall_breakdowns(storms: pd.DataFrame, size_bins_km2=None, distance_edges_deg=DISTANCE_BIN_EDGES_DEG) -> dict:
    """Recall at the operating point and at any score, overall and per bin (module docstring).

    Parameters
    ----------
    storms : DataFrame
        :func:`error_tables`' storm table.
    size_bins_km2 : list of float, optional
        Inner size-bin edges (km²); default terciles of the storms' ``area_km2``.
    distance_edges_deg : tuple of float
        Distance bin edges (degrees), starting at 0.
    """
    if len(storms) == 0:
        return {"all": _recall_counts(storms)}
    areas = {"all": {"area_km2": storms["area_km2"].to_numpy(float)}}
    edges = size_bin_edges(areas, size_bins_km2)
    bounds = np.concatenate([[0.0], edges, [np.inf]])
    size_labels = size_bin_labels(edges)
    size_index = np.searchsorted(bounds, storms["area_km2"].to_numpy(float), side="right") - 1
    size_names = np.asarray(size_labels, dtype=object)[np.clip(size_index, 0, len(size_labels) - 1)]
    sizes = np.where(storms["area_km2"].notna(), size_names, None)
    bands = [f"{_lat_name(lo)}-{_lat_name(hi)}" for lo, hi in zip(LAT_BAND_EDGES_DEG[:-1], LAT_BAND_EDGES_DEG[1:])]
    distances = distance_bin_labels(distance_edges_deg)
    confidence = [None if c != c else str(int(c)) for c in storms["confidence"]]
    return {
        "all": _recall_counts(storms),
        "by_size": {"bin_edges_km2": edges.tolist(), **_recall_by(storms, sizes, size_labels)},
        "by_lat_band": _recall_by(storms, storms["lat_band"], bands),
        "by_season": _recall_by(storms, storms["season"], SEASONS),
        "by_confidence": _recall_by(storms, confidence, [str(c) for c in CONFIDENCE_LEVELS]),
        **{f"by_{name}": _recall_by(storms, distance_bin_of(storms[f"{name}_deg"], distance_edges_deg), distances)
           for name in ("edge_distance", "seam_distance", "gap_distance")},
    }


def score_sweep(ground_truth: Mapping, predictions: Mapping, grids=None, thresholds=SCORE_THRESHOLDS,
                match_iou: float = 0.5) -> list[dict]:
    """Recall, precision and counts at each score threshold, ascending (the greedy matching at ``match_iou``
    of :func:`marsdust.evaluate.matching.threshold_ladder`).

    Returns
    -------
    list of dict
        ``score_threshold, n_detections, n_true, recall, precision`` (NaN when undefined).
    """
    thresholds = sorted(thresholds)
    n_gt, n_det, n_true = 0, np.zeros(len(thresholds), int), np.zeros(len(thresholds), int)
    for map_id in check_map_keys(ground_truth, predictions):
        gt, prediction = ground_truth[map_id], predictions.get(map_id) or {}
        both = len(entry_boxes(gt)) and len(entry_boxes(prediction))  # a map's size matters only then
        iou, scores = detection_storm_iou(gt, prediction, _grid_of(map_id, grids, gt).width if both else 0, map_id)
        n_gt += iou.shape[1]
        for k, (_, kept, pairs) in enumerate(threshold_ladder(iou, scores, thresholds, match_iou)):
            n_det[k] += len(kept)
            n_true[k] += len(pairs)
    return [{"score_threshold": float(t), "n_detections": int(d), "n_true": int(m),
             "recall": m / n_gt if n_gt else float("nan"), "precision": m / d if d else float("nan")}
            for t, d, m in zip(thresholds, n_det, n_true)]


def _category_counts(categories: pd.Series, names) -> dict:
    total = int(len(categories))
    counts = {name: int((categories == name).sum()) for name in names}
    return {"n": total, "counts": counts,
            "fractions": {name: (c / total if total else float("nan")) for name, c in counts.items()}}


def analyze_errors(ground_truth: Mapping, predictions: Mapping, grids=None, *, map_ls=None, images=None,
                   valid_masks=None, score_threshold: float = 0.5, match_iou: float = 0.5, size_bins_km2=None,
                   cloud_masks=None) -> dict:
    """The whole error analysis as a dict (the content of ``error_analysis.json``) plus the two tables.

    Parameters are those of :func:`error_tables`; ``size_bins_km2`` as in :func:`recall_breakdowns`.

    Returns
    -------
    dict
        ``score_threshold, match_iou, recall`` (:func:`recall_breakdowns`), ``score_sweep``,
        ``missed`` and ``false_alarms`` (``n``, ``counts`` and ``fractions`` per category),
        ``rules`` (the thresholds used), and the DataFrames ``storms`` and ``detections``.
    """
    storms, detections = error_tables(ground_truth, predictions, grids, map_ls=map_ls, images=images,
                                      valid_masks=valid_masks, score_threshold=score_threshold, match_iou=match_iou,
                                      cloud_masks=cloud_masks)
    missed = storms[~storms["found"]] if len(storms) else storms
    false_alarms = detections[detections["false_alarm"]] if len(detections) else detections
    return {
        "score_threshold": score_threshold, "match_iou": match_iou,
        "recall": recall_breakdowns(storms, size_bins_km2),
        "score_sweep": score_sweep(ground_truth, predictions, grids, match_iou=match_iou),
        "missed": _category_counts(missed.get("category", pd.Series(dtype=object)), MISS_CATEGORIES),
        "false_alarms": _category_counts(false_alarms.get("category", pd.Series(dtype=object)), FALSE_ALARM_CATEGORIES),
        "rules": {"localization_min_iou": LOCALIZATION_MIN_IOU, "gap_margin_deg": GAP_MARGIN_DEG,
                  "gap_fraction": GAP_FRACTION, "cloud_blue_red_factor": CLOUD_BLUE_RED_FACTOR,
                  "cloud_blue_percentile": CLOUD_BLUE_PERCENTILE, "cloud_mask_fraction": ON_CLOUD_FRACTION,
                  "bright_red_percentile": BRIGHT_RED_PERCENTILE, "distance_bin_edges_deg": list(DISTANCE_BIN_EDGES_DEG),
                  "lat_band_edges_deg": list(LAT_BAND_EDGES_DEG)},
        "storms": storms, "detections": detections,
    }


def compact_summary(analysis: Mapping) -> dict:
    """The few numbers of an :func:`analyze_errors` result worth keeping in ``metrics.json``."""
    overall = analysis["recall"]["all"]
    return {"score_threshold": analysis["score_threshold"], "match_iou": analysis["match_iou"],
            "n_storms": overall["n_storms"], "recall": overall["recall"], "recall_any_score": overall["recall_any_score"],
            "missed": analysis["missed"]["counts"], "false_alarms": analysis["false_alarms"]["counts"],
            "n_false_alarms": analysis["false_alarms"]["n"]}


# --- output ----------------------------------------------------------------------------------------------------
MISSED_COLUMNS = ["map_id", "ls_deg", "season", "gt_index", "lon_deg", "lat_deg", "area_km2", "confidence", "category",
                  "best_iou", "best_score_at_match_iou", "lat_band", "edge_distance_deg", "seam_distance_deg",
                  "gap_distance_deg", "x0", "y0", "x1", "y1"]
FALSE_ALARM_COLUMNS = ["map_id", "ls_deg", "season", "pred_index", "score", "lon_deg", "lat_deg", "box_area_km2",
                       "category", "best_iou", "crosses_seam", "near_gap_fraction", "blue_red_vs_map", "red_percentile",
                       "blue_percentile", "edge_distance_deg", "seam_distance_deg", "gap_distance_deg",
                       "x0", "y0", "x1", "y1"]


def worst_misses(storms: pd.DataFrame) -> pd.DataFrame:
    """Missed storms, most confident then largest first."""
    if len(storms) == 0:
        return pd.DataFrame(columns=MISSED_COLUMNS)
    missed = storms[~storms["found"]]
    return missed.sort_values(["confidence", "area_km2"], ascending=False, na_position="last")[MISSED_COLUMNS]


def worst_false_alarms(detections: pd.DataFrame) -> pd.DataFrame:
    """False alarms, highest score first."""
    if len(detections) == 0:
        return pd.DataFrame(columns=FALSE_ALARM_COLUMNS)
    return detections[detections["false_alarm"]].sort_values("score", ascending=False)[FALSE_ALARM_COLUMNS]


@dataclass(frozen=True)
class MapsToAnalyze:
    """The per-map inputs of one error analysis (each field as the parameter of :func:`error_tables`)."""

    ground_truth: Mapping
    predictions: Mapping
    grids: MapGrid | Mapping | None = None
    map_ls: Mapping | None = None
    images: Mapping | None = None
    valid_masks: Mapping | None = None
    cloud_masks: Mapping | None = None


def write_error_analysis(maps: MapsToAnalyze, out_dir: str | os.PathLike, *, score_threshold: float = 0.5,
                         match_iou: float = 0.5, size_bins_km2=None, n_gallery: int = 12, title: str = "") -> dict:
    """Write the error analysis into ``out_dir`` and return its compact summary.

    Writes ``error_analysis.json`` (:func:`analyze_errors` without the tables),
    ``errors_missed.csv`` and ``errors_false_alarms.csv`` (one row per missed storm / false
    alarm, worst first), ``error_analysis.md`` and ``figures/worst_misses.png``,
    ``figures/worst_false_alarms.png`` (the ``n_gallery`` worst of each; maps without an image
    are left out of the galleries).

    Parameters
    ----------
    maps : MapsToAnalyze
        The maps' ground truth, predictions, grids, Ls, images, valid and cloud masks.
    out_dir : path
    score_threshold, match_iou, size_bins_km2
        As for :func:`analyze_errors`.
    n_gallery : int
        Cases per gallery.
    title : str
        Of the report and figures (e.g. the model).

    Returns
    -------
    dict
        :func:`compact_summary` of the analysis.
    """
    out_dir = Path(out_dir)
    analysis = analyze_errors(maps.ground_truth, maps.predictions, maps.grids, map_ls=maps.map_ls, images=maps.images,
                              valid_masks=maps.valid_masks, score_threshold=score_threshold, match_iou=match_iou,
                              size_bins_km2=size_bins_km2, cloud_masks=maps.cloud_masks)
    storms, detections = analysis.pop("storms"), analysis.pop("detections")
    misses, false_alarms = worst_misses(storms), worst_false_alarms(detections)
    write_text_atomic(out_dir / "error_analysis.json", json.dumps(jsonable(analysis), indent=2) + "\n")
    write_table_atomic(misses, out_dir / "errors_missed.csv")
    write_table_atomic(false_alarms, out_dir / "errors_false_alarms.csv")
    write_text_atomic(out_dir / "error_analysis.md", error_analysis_markdown(analysis, title))
    write_galleries(maps, misses, false_alarms, out_dir / "figures", score_threshold=score_threshold,
                    n_gallery=n_gallery, title=title)
    return compact_summary(analysis)


def write_galleries(maps: MapsToAnalyze, misses: pd.DataFrame, false_alarms: pd.DataFrame, figures: Path, *,
                    score_threshold: float, n_gallery: int, title: str) -> None:
    """``figures/worst_misses.png`` and ``figures/worst_false_alarms.png``: the first ``n_gallery`` rows (with an
    image) of :func:`worst_misses` and :func:`worst_false_alarms` (:func:`marsdust.plots.plot_error_gallery`)."""
    from marsdust import plots

    galleries = (("worst_misses", misses, "missed storms (most confident, then largest)"),
                 ("worst_false_alarms", false_alarms, "false alarms (highest score)"))
    for name, table, what in galleries:
        panels = gallery_panels(table, maps.ground_truth, maps.predictions, maps.grids, maps.images or {},
                                score_threshold, n_gallery)
        plots.plot_error_gallery(panels, figures / f"{name}.png", title=f"{title}: {what}" if title else what,
                                 score_threshold=score_threshold)


# --- gallery ------------------------------------------------------------------------------------------------------
def crop_window(box, grid: MapGrid, min_half_size_deg: float = 15.0) -> tuple[slice, np.ndarray, float, float]:
    """Rows, wrapped columns and pixel origin ``(x, y)`` of a square crop centred on a box.

    The crop's half side is the larger of twice the box's larger side and ``min_half_size_deg``
    (in pixels of ``grid``); rows stop at the map's edges, columns wrap around 180°.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    half = int(np.ceil(max(2.0 * max(x1 - x0, y1 - y0), min_half_size_deg / grid.res_deg)))
    center_x, center_y = int(round(0.5 * (x0 + x1))), int(round(0.5 * (y0 + y1)))
    row0, row1 = max(0, center_y - half), min(grid.height, center_y + half)
    half_x = min(half, grid.width // 2)
    cols = wrapped_columns(center_x - half_x, center_x + half_x, grid.width)
    return slice(row0, row1), cols, float(center_x - half_x), float(row0)


def _boxes_in_crop(boxes: np.ndarray, origin_x: float, origin_y: float, crop_width: int, width: int) -> np.ndarray:
    """Boxes moved into crop pixel coordinates, each in the copy (±W) nearest the crop's centre."""
    boxes = np.asarray(boxes, float).reshape(-1, 4).copy()
    center = origin_x + crop_width / 2
    shift = np.round((center - 0.5 * (boxes[:, 0] + boxes[:, 2])) / width) * width
    boxes[:, [0, 2]] += shift[:, None] - origin_x
    boxes[:, [1, 3]] -= origin_y
    return boxes


def gallery_panels(table: pd.DataFrame, ground_truth, predictions, grids, images: Mapping, score_threshold: float,
                   n: int) -> list[dict]:
    """Panels of :func:`marsdust.plots.plot_error_gallery`: the first ``n`` rows with an image of a miss or false-alarm table."""
    panels = []
    for row in table.itertuples():
        if len(panels) >= n:
            break
        rgb = images.get(row.map_id)
        if rgb is None:
            continue
        gt, prediction = ground_truth[row.map_id], predictions.get(row.map_id) or {}
        grid = _grid_of(row.map_id, grids, gt)
        subject = np.array([row.x0, row.y0, row.x1, row.y1])
        rows, cols, origin_x, origin_y = crop_window(subject, grid)
        pred_boxes = entry_boxes(prediction)
        scores = entry_scores(prediction, len(pred_boxes), row.map_id)
        place = lambda boxes: _boxes_in_crop(boxes, origin_x, origin_y, len(cols), grid.width)  # noqa: E731
        is_miss = hasattr(row, "gt_index")
        label = (f"CL{row.confidence:.0f}, {row.area_km2:.3g} km²" if is_miss else f"score {row.score:.2f}")
        panels.append({
            "rgb": np.clip(as_array(rgb, float)[rows][:, cols], 0, 1),
            "catalog_boxes": place(entry_boxes(gt)), "detection_boxes": place(pred_boxes), "detection_scores": scores,
            "subject_box": place(subject)[0], "subject_is_miss": is_miss,
            "title": (f"{row.map_id} Ls {row.ls_deg:.1f}° {row.lon_deg:.1f}°E {row.lat_deg:.1f}°N\n"
                      f"{label}: {row.category}"),
        })
    return panels


# --- Markdown --------------------------------------------------------------------------------------------------
def _pct(value) -> str:
    return "–" if value is None or not math.isfinite(float(value)) else f"{100 * float(value):.1f}"


def _category_lines(name: str, summary: Mapping) -> list[str]:
    lines = [f"| {name} | n | % |", "|---|---|---|"]
    lines += [f"| {category} | {count} | {_pct(summary['fractions'][category])} |"
              for category, count in summary["counts"].items()]
    return lines + [f"| total | {summary['n']} | |", ""]


def _recall_lines(title: str, table: Mapping) -> list[str]:
    lines = [f"**{title}**", "", "| bin | storms | recall % | recall at any score % |", "|---|---|---|---|"]
    for key, counts in table.items():
        if isinstance(counts, Mapping) and counts["n_storms"]:
            lines.append(f"| {key} | {counts['n_storms']} | {_pct(counts['recall'])} | {_pct(counts['recall_any_score'])} |")
    return lines + [""]


def error_analysis_markdown(analysis: Mapping, title: str = "") -> str:
    """A short human-readable report of an :func:`analyze_errors` result (tables in Markdown)."""
    recall = analysis["recall"]
    overall = recall["all"]
    threshold, match_iou = analysis["score_threshold"], analysis["match_iou"]
    lines = [f"# Error analysis{': ' + title if title else ''}", "",
             f"Operating point: score ≥ {threshold:g}, IoU ≥ {match_iou:g} (greedy by IoU, wrap-aware at 180°). "
             f"{overall['n_found']} of {overall['n_storms']} catalogued storms found (recall {_pct(overall['recall'])}%); "
             f"at any score {overall['n_found_any_score']} ({_pct(overall['recall_any_score'])}%). "
             f"{analysis['false_alarms']['n']} false alarms.", "",
             "Categories are defined in `marsdust.evaluate.errors` (first matching rule wins). Worst cases: "
             "`errors_missed.csv`, `errors_false_alarms.csv`, `figures/worst_misses.png`, `figures/worst_false_alarms.png`.",
             ""]
    lines += _category_lines("missed storms", analysis["missed"])
    lines += _category_lines("false alarms", analysis["false_alarms"])
    names = {"by_size": "by storm size (km²)", "by_lat_band": "by latitude band", "by_season": "by season (Ls)",
             "by_confidence": "by catalogue confidence", "by_edge_distance": "by distance to the map's N/S edge",
             "by_seam_distance": "by distance to 180°", "by_gap_distance": "by distance to missing data"}
    for key, name in names.items():
        if key in recall:
            lines += _recall_lines(f"Recall {name}", recall[key])
    lines += ["**Score sweep**", "", "| score ≥ | detections | true | recall % | precision % |", "|---|---|---|---|---|"]
    lines += [f"| {row['score_threshold']:g} | {row['n_detections']} | {row['n_true']} | {_pct(row['recall'])} | "
              f"{_pct(row['precision'])} |" for row in analysis["score_sweep"]]
    return "\n".join(lines) + "\n"
