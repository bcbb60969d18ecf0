"""Which detection is which storm: IoU of boxes across 180° and of outlines, and the one greedy pairing.

Every comparison of detections with storms in marsdust goes through here: the centre deviations
and area agreement of :mod:`~marsdust.evaluate.metrics`, the error analysis
(:mod:`~marsdust.evaluate.errors`), the dust false alarms on clouds
(:mod:`~marsdust.evaluate.clouds`), the validation threshold of training
(:mod:`marsdust.train.lightning`), the tracker's outline overlap (:mod:`marsdust.track`), the
tracking scores (:mod:`~marsdust.evaluate.tracking`) and the found / missed colours of
:func:`marsdust.plots.plot_maps_with_outlines`.

Rules decided here
------------------
* **Box IoU across 180°** (:func:`wrapped_iou`): boxes are xyxy pixels of one map whose
  longitudes wrap every ``width`` pixels (a box across 180° kept whole, ``x0 < 0`` or
  ``x1 > width``); a detection's IoU with a storm is the best over its copies shifted by 0 and
  ±``width`` pixels.
* **Outline IoU** (:func:`outline_iou`): outlines are WKT (Multi)Polygons in lon/lat degrees, split
  at 180° the same way on every map, so their intersection over union is computed in lon/lat
  degrees² (both outlines lie on the same map or on maps of the same grid). A missing outline
  (None, NaN, an empty or blank string; :func:`has_outline`) has IoU 0 with everything.
* **Greedy pairing** (:func:`greedy_pairs`): every pair with IoU ≥ the threshold, taken in
  decreasing IoU (ties in row-major order: lower detection, then lower storm index first), each
  detection and each storm used once.
* **Score threshold ladder** (:data:`SCORE_THRESHOLDS`, :func:`threshold_ladder`): 0.05 to 0.95
  in steps of 0.05; at each threshold the detections scoring at least it are paired greedily.
  The score sweep of the error analysis, the ladder of dust false alarms on clouds and the
  threshold of best F1 that training stores all walk this ladder.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from marsdust.evaluate.inputs import entry_boxes, entry_scores
from marsdust.labels import has_outline

SCORE_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))
"""The score thresholds every sweep walks (0.05 to 0.95 in steps of 0.05)."""


# --- boxes across 180° ----------------------------------------------------------------------------------
def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU matrix (n_a, n_b) of xyxy boxes, no wrapping."""
    a, b = np.asarray(boxes_a, float).reshape(-1, 4), np.asarray(boxes_b, float).reshape(-1, 4)
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def align_to_ground_truth(pred_boxes: np.ndarray, gt_boxes: np.ndarray, width: int) -> np.ndarray:
    """Predicted boxes shifted by 0 or ±``width`` px, each to the copy that best overlaps the ground truth."""
    pred = np.asarray(pred_boxes, float).reshape(-1, 4).copy()
    gt = np.asarray(gt_boxes, float).reshape(-1, 4)
    if len(pred) == 0 or len(gt) == 0:
        return pred
    shifts = np.array([0.0, -width, width])
    best = np.stack([box_iou(pred + np.array([s, 0, s, 0]), gt).max(axis=1) for s in shifts])  # (3, n_pred)
    chosen = shifts[np.argmax(best, axis=0)]  # ties keep the unshifted copy
    pred[:, [0, 2]] += chosen[:, None]
    return pred


def wrapped_iou(pred_boxes: np.ndarray, gt_boxes: np.ndarray, width: int) -> np.ndarray:
    """IoU matrix (n_pred, n_gt) with longitudes wrapping every ``width`` px (best of the ±W copies)."""
    pred = np.asarray(pred_boxes, float).reshape(-1, 4)
    return np.max([box_iou(pred + np.array([s, 0, s, 0]), gt_boxes) for s in (0.0, -width, width)], axis=0)


def detection_storm_iou(ground_truth: Mapping, prediction: Mapping, width: int,
                        map_id: str = "") -> tuple[np.ndarray, np.ndarray]:
    """``(iou, scores)`` of one map: the wrapped box IoU (detections × storms) and the detections' scores.

    Parameters
    ----------
    ground_truth, prediction : dict
        One map's entries (:mod:`marsdust.evaluate.inputs`).
    width : int
        The map's width in pixels (where longitudes wrap).
    map_id : str
        Named in the error when scores and boxes disagree.
    """
    gt_boxes, pred_boxes = entry_boxes(ground_truth), entry_boxes(prediction)
    scores = entry_scores(prediction, len(pred_boxes), map_id)
    iou = wrapped_iou(pred_boxes, gt_boxes, width) if len(pred_boxes) and len(gt_boxes) \
        else np.zeros((len(pred_boxes), len(gt_boxes)))
    return iou, scores


# --- the greedy pairing -----------------------------------------------------------------------------------
def greedy_pairs(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(row, column) pairs of an IoU matrix taken in decreasing IoU (≥ ``threshold``), each index used once."""
    candidates = np.argwhere(iou >= threshold)
    order = np.argsort(-iou[candidates[:, 0], candidates[:, 1]], kind="stable")
    used_rows, used_columns, pairs = set(), set(), []
    for row, column in candidates[order]:
        if row not in used_rows and column not in used_columns:
            used_rows.add(row)
            used_columns.add(column)
            pairs.append((int(row), int(column)))
    return pairs


def pairs_among(iou: np.ndarray, use: np.ndarray, match_iou: float) -> dict[int, int]:
    """Greedy pairs among the detections ``use`` (rows of ``iou``, detections × storms): storm -> detection index."""
    return {storm: int(use[row]) for row, storm in greedy_pairs(iou[use], match_iou)}


def pairs_at_threshold(iou: np.ndarray, scores: np.ndarray, score_threshold: float,
                       match_iou: float = 0.5) -> dict[int, int]:
    """Greedy pairs among the detections scoring at least ``score_threshold``: storm -> detection index."""
    return pairs_among(iou, np.flatnonzero(scores >= score_threshold), match_iou)


def threshold_ladder(iou: np.ndarray, scores: np.ndarray, thresholds: Iterable[float] = SCORE_THRESHOLDS,
                     match_iou: float = 0.5) -> list[tuple[float, np.ndarray, dict[int, int]]]:
    """The pairing of one map at each score threshold, thresholds ascending.

    Returns
    -------
    list of (threshold, kept, pairs)
        ``kept`` the indices of the detections scoring at least the threshold, ``pairs`` their
        greedy pairs (storm -> detection index, :func:`pairs_at_threshold`).
    """
    ladder = []
    for threshold in sorted(thresholds):
        kept = np.flatnonzero(scores >= threshold)
        ladder.append((float(threshold), kept, pairs_among(iou, kept, match_iou)))
    return ladder


# --- outlines ----------------------------------------------------------------------------------------------
def outline_iou(wkt_a, wkt_b) -> np.ndarray:
    """IoU (lon/lat degrees²) of every outline of ``wkt_a`` with every outline of ``wkt_b``; 0 where one is missing.

    Parameters
    ----------
    wkt_a, wkt_b : sequence of str or None
        WKT (Multi)Polygons in lon/lat degrees (``polygon_wkt`` of a storm table).

    Returns
    -------
    ndarray of float (len(wkt_a), len(wkt_b))
    """
    import shapely

    def parse(values):
        values = list(values)
        known = has_outline(values)
        return np.array([shapely.from_wkt(v) if k else None for v, k in zip(values, known)], dtype=object), known

    geoms_a, known_a = parse(wkt_a)
    geoms_b, known_b = parse(wkt_b)
    out = np.zeros((len(geoms_a), len(geoms_b)))
    rows, columns = np.nonzero(known_a[:, None] & known_b[None, :])
    if rows.size:
        a, b = geoms_a[rows], geoms_b[columns]
        inter = shapely.area(shapely.intersection(a, b))
        union = shapely.area(a) + shapely.area(b) - inter
        out[rows, columns] = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return out


def outline_matches(catalog: pd.DataFrame, detections: pd.DataFrame,
                    min_iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Which catalogued storms of one map were found and which detections found one, by outline IoU.

    Pairs with :func:`outline_iou` ≥ ``min_iou`` (and above 0) are taken by :func:`greedy_pairs`.

    Parameters
    ----------
    catalog, detections : DataFrame
        Storm tables of one map; ``polygon_wkt`` (rows without it, or without the column, never match).

    Returns
    -------
    (found, hit) : bool arrays, one per catalogue row and one per detection row.
    """
    def outlines(frame):
        return frame["polygon_wkt"].tolist() if "polygon_wkt" in frame.columns else [None] * len(frame)

    iou = outline_iou(outlines(detections), outlines(catalog))
    found, hit = np.zeros(len(catalog), dtype=bool), np.zeros(len(detections), dtype=bool)
    for detection, storm in greedy_pairs(np.where(iou > 0, iou, -1.0), min_iou):
        found[storm], hit[detection] = True, True
    return found, hit
