"""Scoring detections against the catalogue: COCO mAP@25/50/75, breakdowns, centre deviations, area agreement.

Inputs are the per-map dicts of :mod:`marsdust.evaluate.inputs` (ground truth and predictions keyed
by ``map_id``; how their fields are read is stated there).

Rules decided here
------------------
* **AP** comes from a standard COCO evaluator (pycocotools' ``COCOeval``, or faster-coco-eval's
  drop-in) with ``iouThrs = [0.25, 0.5, 0.75]``, 101 recall points, all areas, up to
  ``max_dets`` (100) detections per map. mAP at a threshold is COCO's own summary (the mean
  of the interpolated precision over recall points) for the one class "dust". Values are
  **fractions in [0, 1]** (the paper's Table 1 shows percent); NaN (``null`` in JSON) when
  the evaluated maps hold no ground truth.
* **Wrap at 180°**: each predicted box is compared in the copy (shifted by 0 or ±W pixels)
  that overlaps the map's ground truth best (:func:`marsdust.evaluate.matching.align_to_ground_truth`),
  so a detection found on the other side of the seam still matches. Masks wrap by construction
  and need no such care.
* **Confidence and size breakdowns** restrict the ground truth to the level or size bin and
  turn every other ground-truth storm into a COCO *crowd* (ignore) region: a detection that
  matches no kept storm but covers another storm (intersection / detection area ≥ the IoU
  threshold) counts neither as true nor as false positive; any other unmatched detection is a
  false positive. Sizes are binned by catalogued ``area_km2``: terciles of the evaluated
  ground truth unless fixed bin edges (km²) are given.
* **Seasons**: Ls quarters [0, 90), [90, 180), [180, 270), [270, 360) (northern spring,
  summer, autumn, winter); the maps of a quarter with all their storms and detections.
* **Centre deviations** ``dx, dy``: detections with score ≥ ``min_score`` (0.5) are paired
  with ground truth by the greedy pairing of :mod:`marsdust.evaluate.matching` (wrapped box IoU
  ≥ ``match_iou``, 0.5 by default). ``dx_px`` = detected minus catalogued box centre
  column, wrapped into [-W/2, W/2); ``dy_px`` = row difference (positive southwards);
  ``dlon_deg = dx_px · res``, ``dlat_deg = -dy_px · res`` (positive northwards).
* **Pixel IoU and Dice** (:func:`pixel_overlap`) of the dust class over *observed* pixels only (each
  map's valid mask; missing pixels count neither way): truth is the union of a map's catalogued
  outlines, prediction the union of its detected masks at one score threshold. Pooled over maps
  (the field's convention): IoU = Σ|P∩T| / Σ|P∪T|, Dice = 2 Σ|P∩T| / (Σ|P| + Σ|T|), sums over every
  scored map; also the per-map means, over the maps where the quantity is defined (a map with
  neither truth nor prediction has none). Which maps have outline truth is the caller's rule
  (:mod:`marsdust.evaluate.runner`). Where IoU is lost (``union_shares``): the pooled union splits into
  the pixels both call dust (``overlap``, = IoU), true pixels of dust regions that no predicted pixel
  touches (``missed_regions``: storms not found at all), predicted pixels of regions that touch no true
  pixel (``false_alarm_regions``), and the rest, at the edges of the regions found: true pixels outside
  the predicted outline (``edge_missed``: drawn too narrow) and predicted pixels outside the true one
  (``edge_extra``: drawn too wide). A region is a connected (8-neighbour) set of observed dust pixels, wrapping at
  180° (:func:`marsdust.grid.wrapped_components`), so touching storms form one region.
* **Inference time** is the median per map after warm-up calls (:func:`time_inference`),
  measured by whoever runs the model and passed in as ``time_ms_per_map``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from marsdust.evaluate.inputs import as_array, check_map_keys, entry_boxes, entry_masks, entry_scores, map_ls_of
from marsdust.evaluate.matching import align_to_ground_truth, greedy_pairs, wrapped_iou
from marsdust.fileio import write_text_atomic
from marsdust.grid import MapGrid, wrapped_components
from marsdust.mdad_format import CONFIDENCE_LEVELS

IOU_THRESHOLDS = (0.25, 0.5, 0.75)
"""IoU thresholds of the paper's mAP25, mAP50, mAP75."""

MAP_KEYS = ("map25", "map50", "map75")
SEASONS = {"Ls000-090": (0.0, 90.0), "Ls090-180": (90.0, 180.0), "Ls180-270": (180.0, 270.0), "Ls270-360": (270.0, 360.0)}


# --- map sizes ------------------------------------------------------------------------------------
def _map_size(map_id: str, entry, grid) -> tuple[int, int, float]:
    """(height, width, res_deg) of a map from the ``grid`` argument or the ground-truth masks."""
    if isinstance(grid, Mapping):
        grid = grid.get(map_id)
    if isinstance(grid, MapGrid):
        return grid.height, grid.width, grid.res_deg
    masks = entry_masks(entry)
    if masks is not None and masks.ndim == 3:
        height, width = masks.shape[1:]
        return height, width, MapGrid.from_width(width).res_deg
    raise ValueError(f"map {map_id}: pass grid= (a MapGrid or a dict of them) or give its ground truth masks, "
                     "so the map's size is known")



# --- COCO ------------------------------------------------------------------------------------------
def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _coco_datasets(ground_truth, predictions, map_ids, grid, iou_type, gt_keep):
    images, gt_anns, dt_anns = [], [], []
    for image_id, map_id in enumerate(map_ids, start=1):
        gt = ground_truth[map_id]
        height, width, _ = _map_size(map_id, gt, grid)
        images.append({"id": image_id, "width": int(width), "height": int(height), "file_name": map_id})
        gt_boxes = entry_boxes(gt)
        keep = np.ones(len(gt_boxes), bool) if gt_keep is None else np.asarray(gt_keep[map_id], bool)
        gt_masks = entry_masks(gt) if iou_type == "segm" else None
        if iou_type == "segm" and gt_masks is None and len(gt_boxes):
            raise ValueError(f"map {map_id}: segm evaluation needs ground-truth masks")
        for k, (x0, y0, x1, y1) in enumerate(gt_boxes):
            ann = {"id": len(gt_anns) + 1, "image_id": image_id, "category_id": 1,
                   "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)), "iscrowd": int(not keep[k])}
            if gt_masks is not None:
                ann["segmentation"] = _rle(gt_masks[k])
                ann["area"] = float(gt_masks[k].sum())
            gt_anns.append(ann)
        pred = predictions.get(map_id)
        if pred is None:
            continue
        scores = as_array(pred.get("scores", np.zeros(0)), np.float64).reshape(-1)
        pred_boxes = align_to_ground_truth(entry_boxes(pred), gt_boxes, width)
        if len(scores) != len(pred_boxes):
            raise ValueError(f"map {map_id}: {len(pred_boxes)} predicted boxes but {len(scores)} scores")
        pred_masks = entry_masks(pred) if iou_type == "segm" else None
        if iou_type == "segm" and pred_masks is None and len(pred_boxes):
            raise ValueError(f"map {map_id}: segm evaluation needs predicted masks")
        for k, (x0, y0, x1, y1) in enumerate(pred_boxes):
            ann = {"id": len(dt_anns) + 1, "image_id": image_id, "category_id": 1, "score": float(scores[k]),
                   "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0}
            if pred_masks is not None:
                ann["segmentation"] = _rle(pred_masks[k])
                ann["area"] = float(pred_masks[k].sum())
            dt_anns.append(ann)
    categories = [{"id": 1, "name": "dust"}]
    return ({"images": images, "annotations": gt_anns, "categories": categories},
            {"images": images, "annotations": dt_anns, "categories": categories})


def _coco_classes(backend: str):
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    raise ValueError(f"COCO backend must be 'pycocotools' or 'faster_coco_eval', got {backend!r}")


def coco_map(ground_truth: Mapping, predictions: Mapping, grid=None, *, iou_type: str = "bbox",
             map_ids: Iterable[str] | None = None, gt_keep: Mapping | None = None,
             max_dets: int = 100, backend: str = "pycocotools") -> dict:
    """COCO mAP at IoU 0.25 / 0.5 / 0.75 over a set of maps.

    Parameters
    ----------
    ground_truth, predictions : dict map_id -> dict
        See the module docstring. Every map to score needs a ground-truth entry.
    grid : MapGrid or dict map_id -> MapGrid, optional
        Map sizes (else taken from the ground-truth masks).
    iou_type : {"bbox", "segm"}
    map_ids : iterable of str, optional
        Score only these maps (default: all ground-truth maps).
    gt_keep : dict map_id -> bool array, optional
        Ground truth to score; the rest become crowd (ignore) regions.
    max_dets : int
        Detections per map considered (highest scores first).
    backend : {"pycocotools", "faster_coco_eval"}

    Returns
    -------
    dict
        ``map25, map50, map75`` (fractions, NaN without ground truth), ``precision`` ndarray
        (3, 101) (-1 where undefined), ``recall_points`` (101,), ``n_maps``, ``n_gt``, ``n_pred``.
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    all_ids = check_map_keys(ground_truth, predictions)
    map_ids = all_ids if map_ids is None else sorted(map_ids)
    gt_data, dt_data = _coco_datasets(ground_truth, predictions, map_ids, grid, iou_type, gt_keep)
    n_gt = sum(1 for a in gt_data["annotations"] if not a["iscrowd"])
    result = {"n_maps": len(map_ids), "n_gt": n_gt, "n_pred": len(dt_data["annotations"])}
    if not map_ids:
        return {**result, **{k: float("nan") for k in MAP_KEYS}, "precision": np.full((3, 101), -1.0),
                "recall_points": np.linspace(0, 1, 101)}
    coco_class, eval_class = _coco_classes(backend)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt, coco_dt = coco_class(), coco_class()
        coco_gt.dataset, coco_dt.dataset = gt_data, dt_data
        coco_gt.createIndex()
        coco_dt.createIndex()
        evaluator = eval_class(coco_gt, coco_dt, iou_type)
        evaluator.params.iouThrs = np.array(IOU_THRESHOLDS)
        evaluator.params.maxDets = [1, 10, int(max_dets)]
        evaluator.params.imgIds = list(range(1, len(map_ids) + 1))
        evaluator.evaluate()
        evaluator.accumulate()
    precision = np.asarray(evaluator.eval["precision"])[:, :, 0, 0, -1]  # (T, R): class dust, all areas, max dets
    for key, row in zip(MAP_KEYS, precision):
        defined = row[row > -1]
        result[key] = float(defined.mean()) if defined.size else float("nan")
    result["precision"] = precision
    result["recall_points"] = np.asarray(evaluator.params.recThrs)
    return result


# --- breakdowns --------------------------------------------------------------------------------------
def season_of(ls_deg: float) -> str | None:
    """Name of the Ls quarter (``"Ls000-090"`` …) holding ``ls_deg``; None for NaN."""
    if not np.isfinite(ls_deg):
        return None
    ls = float(ls_deg) % 360.0
    return next(name for name, (lo, hi) in SEASONS.items() if lo <= ls < hi)


def size_bin_edges(ground_truth: Mapping, size_bins_km2: Iterable[float] | None = None) -> np.ndarray:
    """Inner bin edges (km²) of the size breakdown: the given ones, or terciles of all ground-truth areas."""
    if size_bins_km2 is not None:
        edges = np.sort(np.asarray(list(size_bins_km2), float))
        if edges.size == 0:
            raise ValueError("size_bins_km2 needs at least one edge")
        return edges
    areas = np.concatenate([as_array(e.get("area_km2", np.zeros(0)), float).reshape(-1) for e in ground_truth.values()] or [np.zeros(0)])
    areas = areas[np.isfinite(areas)]
    if areas.size == 0:
        return np.zeros(0)
    return np.quantile(areas, [1 / 3, 2 / 3])


def size_bin_labels(edges: np.ndarray) -> list[str]:
    """Names of the size bins [0, e1), [e1, e2), …, [en, inf) of inner edges (km²): ``"0-2e+05 km2"``, ``">=2e+05 km2"``."""
    bounds = np.concatenate([[0.0], np.asarray(edges, float), [np.inf]])
    return [f"{lo:.3g}-{hi:.3g} km2" if np.isfinite(hi) else f">={lo:.3g} km2" for lo, hi in zip(bounds[:-1], bounds[1:])]


def _summary(result: dict) -> dict:
    return {k: result[k] for k in (*MAP_KEYS, "n_maps", "n_gt", "n_pred")}


def box_map_summary(ground_truth: Mapping, predictions: Mapping, grid=None, **coco_kwargs) -> dict:
    """Box ``map25, map50, map75`` with ``n_maps, n_gt, n_pred`` (:func:`coco_map` without curves)."""
    return _summary(coco_map(ground_truth, predictions, grid, **coco_kwargs))


def breakdown_by_season(ground_truth, predictions, grid=None, map_ls=None, **coco_kwargs) -> dict:
    """mAP per Ls quarter (maps grouped by their Ls)."""
    groups: dict[str, list[str]] = {name: [] for name in SEASONS}
    for map_id, entry in ground_truth.items():
        season = season_of(map_ls_of(map_id, entry, map_ls))
        if season is not None:
            groups[season].append(map_id)
    return {name: _summary(coco_map(ground_truth, predictions, grid, map_ids=ids, **coco_kwargs))
            for name, ids in groups.items()}


def breakdown_by_confidence(ground_truth, predictions, grid=None, levels=CONFIDENCE_LEVELS, **coco_kwargs) -> dict:
    """mAP per MDAD confidence level; storms of other levels are ignore regions (module docstring)."""
    out = {}
    for level in levels:
        keep = {m: as_array(e.get("confidence", np.zeros(len(entry_boxes(e)))), float).reshape(-1) == level
                for m, e in ground_truth.items()}
        out[str(level)] = _summary(coco_map(ground_truth, predictions, grid, gt_keep=keep, **coco_kwargs))
    return out


def breakdown_by_size(ground_truth, predictions, grid=None, size_bins_km2=None, **coco_kwargs) -> dict:
    """mAP per storm-size bin of catalogued ``area_km2``; storms of other bins are ignore regions."""
    edges = size_bin_edges(ground_truth, size_bins_km2)
    bounds = np.concatenate([[0.0], edges, [np.inf]])
    out = {"bin_edges_km2": edges.tolist()}
    for k, name in enumerate(size_bin_labels(edges)):
        lo, hi = bounds[k], bounds[k + 1]
        keep = {}
        for m, e in ground_truth.items():
            area = as_array(e.get("area_km2", np.full(len(entry_boxes(e)), np.nan)), float).reshape(-1)
            keep[m] = (area >= lo) & (area < hi)
        out[name] = _summary(coco_map(ground_truth, predictions, grid, gt_keep=keep, **coco_kwargs))
    return out


# --- centre deviations ---------------------------------------------------------------------------------
def center_deviations(ground_truth: Mapping, predictions: Mapping, grid=None, *, match_iou: float = 0.5,
                      min_score: float = 0.5) -> pd.DataFrame:
    """Centre offsets of matched detections (greedy by IoU, see the module docstring).

    Returns
    -------
    DataFrame
        One row per matched pair: ``map_id, gt_index, pred_index, iou, score, dx_px, dy_px,
        dlon_deg, dlat_deg`` (+ ``confidence`` of the storm when known).
    """
    rows = []
    for map_id in check_map_keys(ground_truth, predictions):
        gt, pred = ground_truth[map_id], predictions.get(map_id)
        if pred is None:
            continue
        _, width, res_deg = _map_size(map_id, gt, grid)
        gt_boxes, pred_boxes = entry_boxes(gt), entry_boxes(pred)
        scores = entry_scores(pred, len(pred_boxes), map_id)
        use = np.flatnonzero(scores >= min_score)
        if len(gt_boxes) == 0 or len(use) == 0:
            continue
        iou = wrapped_iou(pred_boxes[use], gt_boxes, width)
        confidence = as_array(gt.get("confidence", np.zeros(len(gt_boxes))), float).reshape(-1)
        for p, g in greedy_pairs(iou, match_iou):
            pred_box, gt_box = pred_boxes[use[p]], gt_boxes[g]
            dx = float((0.5 * (pred_box[0] + pred_box[2] - gt_box[0] - gt_box[2]) + width / 2) % width - width / 2)
            dy = float(0.5 * (pred_box[1] + pred_box[3] - gt_box[1] - gt_box[3]))
            rows.append({"map_id": map_id, "gt_index": int(g), "pred_index": int(use[p]), "iou": float(iou[p, g]),
                         "score": float(scores[use[p]]), "dx_px": dx, "dy_px": dy,
                         "dlon_deg": dx * res_deg, "dlat_deg": -dy * res_deg, "confidence": confidence[g]})
    columns = ["map_id", "gt_index", "pred_index", "iou", "score", "dx_px", "dy_px", "dlon_deg", "dlat_deg", "confidence"]
    return pd.DataFrame(rows, columns=columns)


def summarize_deviations(deviations: pd.DataFrame) -> dict:
    """Count, mean, median, standard deviation and 90th percentile of |·| of dx, dy (px) and dlon, dlat (deg)."""
    out = {"n_matched": int(len(deviations))}
    for column in ("dx_px", "dy_px", "dlon_deg", "dlat_deg"):
        values = deviations[column].to_numpy(float) if len(deviations) else np.zeros(0)
        out[column] = {
            "mean": float(values.mean()) if values.size else float("nan"),
            "median": float(np.median(values)) if values.size else float("nan"),
            "std": float(values.std()) if values.size else float("nan"),
            "abs_p90": float(np.quantile(np.abs(values), 0.9)) if values.size else float("nan"),
        }
    return out


def area_agreement(ground_truth: Mapping, predictions: Mapping, grid=None, *, match_iou: float = 0.5,
                   min_score: float = 0.5) -> dict:
    """How well detected storm areas agree with the catalogue's, over matched storms.

    Storms are paired as for the centre deviations (:func:`center_deviations`: greedy by box
    IoU ≥ ``match_iou``, detections with score ≥ ``min_score``); both entries need
    ``area_km2`` (the catalogued area, and the detection's outline area on the sphere).

    Returns
    -------
    dict
        ``n_matched``; ``median_ratio`` (detected / catalogued area); ``median_abs_rel_error``
        (median of |detected / catalogued − 1|); ``within_25pct`` (share of matched storms whose
        area is within ±25 % of the catalogue's). NaN when nothing matched.
    """
    pairs = center_deviations(ground_truth, predictions, grid, match_iou=match_iou, min_score=min_score)
    ratios = []
    for row in pairs.itertuples():
        gt_area = as_array(ground_truth[row.map_id].get("area_km2", []), float).reshape(-1)
        pred_area = as_array(predictions[row.map_id].get("area_km2", []), float).reshape(-1)
        if row.gt_index < gt_area.size and row.pred_index < pred_area.size and gt_area[row.gt_index] > 0:
            ratios.append(pred_area[row.pred_index] / gt_area[row.gt_index])
    ratios = np.asarray(ratios, dtype=float)
    ratios = ratios[np.isfinite(ratios)]
    if ratios.size == 0:
        return {"n_matched": 0, "median_ratio": float("nan"), "median_abs_rel_error": float("nan"),
                "within_25pct": float("nan"), "match_iou": match_iou, "min_score": min_score}
    return {"n_matched": int(ratios.size), "median_ratio": float(np.median(ratios)),
            "median_abs_rel_error": float(np.median(np.abs(ratios - 1.0))),
            "within_25pct": float(np.mean(np.abs(ratios - 1.0) <= 0.25)), "match_iou": match_iou,
            "min_score": min_score}


# --- pixels --------------------------------------------------------------------------------------------------
def _union(masks, map_id: str, what: str) -> np.ndarray:
    """A ``(H, W)`` bool union of a ``(H, W)`` mask or an ``(n, H, W)`` stack of them."""
    array = np.asarray(masks).astype(bool)
    if array.ndim == 3:
        return array.any(axis=0)
    if array.ndim != 2:
        raise ValueError(f"map {map_id}: {what} must be (H, W) or (n, H, W), got shape {array.shape}")
    return array


def pixel_overlap(truth: Mapping, predicted: Mapping, valid: Mapping) -> dict:
    """Pixel IoU and Dice of predicted against true dust pixels, over observed pixels, pooled over maps.

    Parameters
    ----------
    truth, predicted : dict map_id -> ndarray
        Per map a ``(H, W)`` mask or an ``(n, H, W)`` stack (its union is taken): the catalogued
        outlines and the detected masks at the chosen score threshold. Every map of ``truth`` is
        scored; a map missing from ``predicted`` has no detection.
    valid : dict map_id -> ndarray of bool (H, W)
        Observed pixels of each map of ``truth``; the others are left out of every count.

    Returns
    -------
    dict
        ``iou`` = Σ|P∩T| / Σ|P∪T| and ``dice`` = 2 Σ|P∩T| / (Σ|P| + Σ|T|) summed over all maps
        (NaN when both are empty everywhere), ``iou_per_map_mean`` and ``dice_per_map_mean``
        (means over maps where truth or prediction is non-empty; NaN if none), ``n_pixels``
        (observed pixels scored), ``n_maps``, ``n_true_pixels``, ``n_predicted_pixels``, and
        ``union_shares``: the pooled union's shares ``overlap``, ``missed_regions``,
        ``false_alarm_regions``, ``edge_missed`` and ``edge_extra`` (summing to 1; NaN when the union
        is empty; module docstring).
    """
    totals = dict.fromkeys(("inter", "union", "true", "predicted", "observed", "missed", "false_alarm"), 0)
    ious, dices = [], []
    for map_id, true_masks in truth.items():
        if map_id not in valid:
            raise ValueError(f"map {map_id}: no valid mask given for the pixel scores")
        observed = _union(valid[map_id], map_id, "valid")
        t = _union(true_masks, map_id, "truth")
        p = predicted.get(map_id)
        p = np.zeros_like(t) if p is None or np.asarray(p).size == 0 else _union(p, map_id, "predicted")
        if t.shape != observed.shape or p.shape != observed.shape:
            raise ValueError(f"map {map_id}: truth {t.shape}, prediction {p.shape} and valid {observed.shape} "
                             "masks must share one grid")
        t, p = t & observed, p & observed
        counts = {"inter": int((t & p).sum()), "union": int((t | p).sum()), "true": int(t.sum()),
                  "predicted": int(p.sum()), "observed": int(observed.sum()),
                  "missed": untouched_region_pixels(t, p), "false_alarm": untouched_region_pixels(p, t)}
        totals = {k: totals[k] + counts[k] for k in totals}
        if counts["union"]:
            iou, dice = iou_and_dice(counts["inter"], counts["union"], counts["true"], counts["predicted"])
            ious.append(iou)
            dices.append(dice)
    iou, dice = iou_and_dice(totals["inter"], totals["union"], totals["true"], totals["predicted"])
    return {"iou": iou, "dice": dice,
            "iou_per_map_mean": float(np.mean(ious)) if ious else math.nan,
            "dice_per_map_mean": float(np.mean(dices)) if dices else math.nan,
            "n_pixels": totals["observed"], "n_maps": len(truth), "n_true_pixels": totals["true"],
            "n_predicted_pixels": totals["predicted"], "union_shares": _union_shares(totals)}


UNION_SHARES = ("overlap", "missed_regions", "false_alarm_regions", "edge_missed", "edge_extra")
"""Keys of ``pixel_overlap(...)["union_shares"]``, in the order they split the union (module docstring)."""


def untouched_region_pixels(mask: np.ndarray, other: np.ndarray) -> int:
    """Pixels of ``mask``'s regions (8-connected, wrapping at 180°) that share no pixel with ``other``: with
    ``mask`` the true dust pixels and ``other`` the predicted, the storms not found at all; the other way round,
    the false alarms."""
    labels, n_regions = wrapped_components(mask)
    if n_regions == 0:
        return 0
    sizes = np.bincount(labels.ravel(), minlength=n_regions + 1)
    touched = np.unique(labels[other & mask])
    return int(sizes[1:].sum() - sizes[touched].sum())


def _union_shares(totals: dict) -> dict:
    """The pooled union's shares (module docstring: where IoU is lost)."""
    union, inter = totals["union"], totals["inter"]
    if not union:
        return dict.fromkeys(UNION_SHARES, math.nan)
    pixels = (inter, totals["missed"], totals["false_alarm"], totals["true"] - inter - totals["missed"],
              totals["predicted"] - inter - totals["false_alarm"])
    return {name: count / union for name, count in zip(UNION_SHARES, pixels)}


def union_shares_text(shares: dict) -> str:
    """Where pixel IoU is lost (``metrics.json``'s ``pixel.union_shares``), as a sentence; empty where the scores
    hold no breakdown (earlier versions) or no pixel is dust."""
    if not shares or not math.isfinite(shares.get("overlap", math.nan)):
        return ""
    return (f"Of the pixels either side calls dust, {100 * shares['overlap']:.1f} % agree, "
            f"{100 * shares['missed_regions']:.1f} % lie in catalogued storms no detection touches, "
            f"{100 * shares['false_alarm_regions']:.1f} % in detections that touch no catalogued storm, "
            f"{100 * shares['edge_missed']:.1f} % inside a found storm's outline but not the detected one, and "
            f"{100 * shares['edge_extra']:.1f} % inside the detected outline but not the catalogued one.")


def iou_and_dice(inter: int, union: int, n_true: int, n_predicted: int) -> tuple[float, float]:
    """Pixel IoU |P∩T| / |P∪T| and Dice 2|P∩T| / (|P| + |T|) from pixel counts (NaN where a denominator is 0)."""
    sizes = n_true + n_predicted
    return (float(inter / union) if union else math.nan, float(2 * inter / sizes) if sizes else math.nan)


def score_map(masks, scores, mask_threshold: float = 0.5) -> np.ndarray:
    """``(H, W)`` float: at each pixel the highest score of the detections whose mask covers it (0 elsewhere).

    ``masks`` is an ``(n, H, W)`` or ``(n, 1, H, W)`` stack of mask probabilities (numpy or torch; a
    torch stack is reduced where it lies, e.g. on the GPU, and only the map comes back), ``scores``
    their ``(n,)`` scores. The detections with score ≥ ``t`` cover exactly the pixels where the result
    is ≥ ``t`` (for ``t > 0``), so one map answers every score threshold of a ladder.
    """
    import torch

    masks = torch.as_tensor(masks)
    masks = masks.reshape(masks.shape[0], *masks.shape[-2:]) if masks.ndim == 4 else masks
    scores = torch.as_tensor(scores, dtype=torch.float32, device=masks.device).reshape(-1)
    if masks.ndim != 3 or len(masks) != len(scores):
        raise ValueError(f"score_map: masks of shape {tuple(masks.shape)} do not fit {len(scores)} scores")
    best = torch.zeros(masks.shape[-2:], dtype=torch.float32, device=masks.device)
    for mask, score in zip(masks, scores):
        best = torch.maximum(best, torch.where(mask > mask_threshold, score, 0.0))
    return best.cpu().numpy()


def pixel_counts_by_threshold(scores_map: np.ndarray, truth: np.ndarray, valid: np.ndarray,
                              thresholds) -> np.ndarray:
    """``(len(thresholds), 4)`` int64: |P∩T|, |P∪T|, |T|, |P| over the observed pixels of one map, where P are
    the pixels of :func:`score_map` ≥ each threshold and T the true dust pixels; their sums over maps go to
    :func:`best_pixel_threshold`."""
    truth, valid = np.asarray(truth, dtype=bool), np.asarray(valid, dtype=bool)
    if truth.shape != valid.shape or scores_map.shape != valid.shape:
        raise ValueError(f"pixel counts: score map {scores_map.shape}, truth {truth.shape} and valid {valid.shape} "
                         "must share one grid")
    observed_scores, observed_truth = scores_map[valid], truth[valid]
    n_true = int(observed_truth.sum())
    counts = np.zeros((len(thresholds), 4), dtype=np.int64)
    for row, threshold in enumerate(thresholds):
        predicted = observed_scores >= threshold
        inter = int((predicted & observed_truth).sum())
        n_predicted = int(predicted.sum())
        counts[row] = (inter, n_predicted + n_true - inter, n_true, n_predicted)
    return counts


def best_pixel_threshold(counts: np.ndarray, thresholds) -> tuple[float | None, float]:
    """The score threshold of highest pixel IoU from summed :func:`pixel_counts_by_threshold`, and that IoU.

    The higher threshold wins a tie. ``(None, nan)`` when no threshold has a pixel in the union (no
    dust catalogued and none detected).
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(len(thresholds), 4)
    best, best_iou = None, -1.0
    for threshold, (inter, union, _, _) in zip(thresholds, counts):
        if union > 0 and inter / union >= best_iou:
            best, best_iou = float(threshold), inter / union
    return (best, float(best_iou)) if best is not None else (None, math.nan)


# --- timing --------------------------------------------------------------------------------------------
def time_inference(predict: Callable, inputs: Iterable, warmup: int = 2) -> dict:
    """Median wall time per call of ``predict(x)`` in ms, after ``warmup`` untimed calls.

    Returns ``{"median_ms", "n_timed", "warmup"}``. CUDA work is synchronized before each
    clock reading when torch sees a GPU.
    """
    try:
        import torch

        sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    except ImportError:  # pragma: no cover
        sync = lambda: None  # noqa: E731
    inputs = list(inputs)
    if len(inputs) <= warmup:
        raise ValueError(f"time_inference needs more than warmup={warmup} inputs, got {len(inputs)}")
    for x in inputs[:warmup]:
        predict(x)
    times = []
    for x in inputs[warmup:]:
        sync()
        start = time.perf_counter()
        predict(x)
        sync()
        times.append((time.perf_counter() - start) * 1000.0)
    return {"median_ms": float(np.median(times)), "n_timed": len(times), "warmup": warmup}


def _masks_scored(ground_truth: Mapping) -> dict | None:
    """``gt_keep`` of the mask mAP: each entry's ``mask_scored`` (all True where absent); None if no entry has it."""
    if not any("mask_scored" in entry for entry in ground_truth.values()):
        return None
    return {map_id: as_array(entry["mask_scored"], bool) if "mask_scored" in entry
            else np.ones(len(entry_boxes(entry)), bool) for map_id, entry in ground_truth.items()}


# --- everything at once ----------------------------------------------------------------------------------
def evaluate_detections(ground_truth: Mapping, predictions: Mapping, grid=None, *, map_ls: Mapping | None = None,
                        match_iou: float = 0.5, min_score: float = 0.5, size_bins_km2=None,
                        time_ms_per_map: float | None = None, segm: bool | None = None,
                        backend: str = "pycocotools", max_dets: int = 100) -> dict:
    """All metrics of a detector on a set of maps (the content of ``metrics.json``).

    Parameters
    ----------
    ground_truth, predictions, grid
        See :func:`coco_map`.
    map_ls : dict map_id -> Ls (degrees), optional
        Season of each map (else the ground-truth entries' ``ls``).
    match_iou, min_score : float
        Pairing rule of the centre deviations.
    size_bins_km2 : list of float, optional
        Inner edges of the size bins (default: terciles).
    time_ms_per_map : float, optional
        Median inference time per map (ms), stored as ``time_ms_per_map``.
    segm : bool, optional
        Also score masks; by default when every map's ground truth and predictions have masks.
        Ground-truth instances whose entry's ``mask_scored`` (bool (n,), optional) is False (in
        outline mode, storms without an outline, whose mask is only a box) are ignore regions of
        the mask mAP: not counted, and detections on them are neither hits nor false alarms.

    Returns
    -------
    dict
        ``map25, map50, map75`` (box AP, fractions), ``iou_thresholds``, counts, ``segm``
        (same keys for masks, or None), ``by_season``, ``by_confidence``, ``by_size``,
        ``pr_curves`` (recall points and box precision per threshold), ``center_deviation``,
        ``time_ms_per_map``.
    """
    coco_kwargs = {"backend": backend, "max_dets": max_dets}
    boxes = coco_map(ground_truth, predictions, grid, **coco_kwargs)
    if segm is None:
        segm = all(entry_masks(e) is not None for e in ground_truth.values()) and all(
            entry_masks(p) is not None for p in predictions.values()) and len(predictions) > 0
    segm_result = _summary(coco_map(ground_truth, predictions, grid, iou_type="segm",
                                    gt_keep=_masks_scored(ground_truth), **coco_kwargs)) if segm else None
    deviations = center_deviations(ground_truth, predictions, grid, match_iou=match_iou, min_score=min_score)
    return {
        **_summary(boxes),
        "iou_thresholds": list(IOU_THRESHOLDS),
        "segm": segm_result,
        "by_season": breakdown_by_season(ground_truth, predictions, grid, map_ls, **coco_kwargs),
        "by_confidence": breakdown_by_confidence(ground_truth, predictions, grid, **coco_kwargs),
        "by_size": breakdown_by_size(ground_truth, predictions, grid, size_bins_km2, **coco_kwargs),
        "pr_curves": {
            "recall": boxes["recall_points"].tolist(),
            "precision": {f"{t:g}": [None if v < 0 else float(v) for v in row]
                          for t, row in zip(IOU_THRESHOLDS, boxes["precision"])},
        },
        "center_deviation": {"match_iou": match_iou, "min_score": min_score, **summarize_deviations(deviations)},
        "time_ms_per_map": None if time_ms_per_map is None else float(time_ms_per_map),
        "units": "mAP values are fractions in [0, 1]; time in ms per map; dx/dy in pixels of the evaluated grid, dlon/dlat in degrees",
    }


# --- output ------------------------------------------------------------------------------------------------
def jsonable(value):
    """``value`` with numpy scalars and arrays as Python numbers and lists, tuples as lists, NaN and ±inf as None
    (what :func:`json.dumps` writes as JSON, ``null`` for undefined values)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def write_metrics_json(metrics: Mapping, path: str | os.PathLike) -> Path:
    """Write metrics atomically as JSON (NaN as null); must hold ``map25``, ``map50``, ``map75`` in [0, 1]."""
    missing = [k for k in MAP_KEYS if k not in metrics]
    if missing:
        raise ValueError(f"metrics lack key(s) {missing}")
    for key in MAP_KEYS:
        value = metrics[key]
        if value is not None and math.isfinite(float(value)) and not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"metrics[{key!r}] = {value} is not a fraction in [0, 1]")
    return write_text_atomic(Path(path), json.dumps(jsonable(metrics), indent=2) + "\n")


def read_metrics_json(path: str | os.PathLike) -> dict:
    """Read a ``metrics.json`` written by :func:`write_metrics_json`."""
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)
