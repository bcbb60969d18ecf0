"""Scores of a detector around water-ice clouds: per-class AP (dust, cloud) and dust false alarms on clouds.

A detection of a two-class detector is ``dust`` or ``cloud``; the cloud ground truth of a map is
the cloud instances of its cloud mask (:func:`marsdust.cloudmask.cloud_instances`), so cloud AP is
computed on the maps that have a mask only.

**Dust false alarms on clouds** (:func:`dust_false_alarms_on_clouds`): at one operating point
(a score threshold, normally the one stored with the detector), the dust detections that pair
with no catalogued storm (greedy by box IoU ≥ 0.5, wrap-aware, as :func:`marsdust.analysis.error_tables`
pairs them) and whose outline lies mostly — at least :data:`ON_CLOUD_FRACTION` of its pixels — on
cloudy pixels of the map's cloud mask. Counted on the maps with a cloud mask, with the recall at
the same threshold beside it, so a one-class and a two-class detector can be compared at the same
recall. :func:`false_alarms_on_clouds_by_threshold` repeats it over a ladder of thresholds, and
:func:`on_clouds_at_recall` reads that ladder at a given recall (a detector's false alarms at another
detector's recall).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from marsdust.analysis import detection_storm_iou, pairs_at_threshold
from marsdust.evaluate.metrics import box_map_summary

ON_CLOUD_FRACTION = 0.5
"""A dust false alarm is on a cloud when at least this fraction of its outline's pixels are cloudy."""

THRESHOLD_LADDER = tuple(round(0.05 * k, 2) for k in range(1, 20))
"""Score thresholds of :func:`false_alarms_on_clouds_by_threshold` (0.05 to 0.95)."""


def per_class_ap(dust: tuple[Mapping, Mapping], cloud: tuple[Mapping, Mapping] | None, grids: Mapping) -> dict:
    """COCO box ``map25/50/75`` (with ``n_maps, n_gt, n_pred``) per class.

    Parameters
    ----------
    dust : (ground_truth, predictions)
        The catalogue's storms and the dust detections, by map id.
    cloud : (ground_truth, predictions) or None
        The cloud instances of the maps with a cloud mask and the cloud detections on them; None
        for a one-class detector (``cloud`` is then None).
    grids : dict map_id -> MapGrid
    """
    out = {"dust": box_map_summary(dust[0], dust[1], grids), "cloud": None}
    if cloud is not None and cloud[0]:
        out["cloud"] = box_map_summary(cloud[0], {k: cloud[1][k] for k in cloud[0]}, grids)
    return out


def dust_false_alarms_on_clouds(ground_truth: Mapping, predictions: Mapping, grids: Mapping, cloudy: Mapping,
                                score_threshold: float, match_iou: float = 0.5) -> dict:
    """Dust false alarms that lie on clouds, at one score threshold, on the maps with a cloud mask.

    Parameters
    ----------
    ground_truth, predictions : dict map_id -> dict
        Catalogued storms and dust detections (``masks`` (n, H, W) needed for the outlines;
        box-only detectors use their boxes' pixels).
    grids : dict map_id -> MapGrid
    cloudy : dict map_id -> bool ndarray (H, W)
        The cloudy pixels of each map that has a cloud mask (maps without one are left out).
    score_threshold : float
        The operating point.

    Returns
    -------
    dict
        ``score_threshold``, ``n_maps`` (with a cloud mask), ``n_storms``, ``recall`` (IoU ≥ 0.5
        at the threshold, NaN without storms), ``n_detections`` (≥ threshold), ``n_false_alarms``,
        ``n_false_alarms_on_clouds``, ``on_cloud_fraction`` (the rule's pixel fraction).
    """
    return false_alarms_on_clouds_by_threshold(ground_truth, predictions, grids, cloudy, (score_threshold,),
                                               match_iou)[0]


def _cloudy_fraction(prediction: Mapping, index: int, cloudy: np.ndarray, grid) -> float:
    """Fraction of one detection's outline pixels (its box's where it has no mask) that are cloudy."""
    masks = prediction.get("masks")
    if masks is not None and len(masks) > index:
        outline = np.asarray(masks[index], bool)
    else:
        outline = np.zeros(grid.shape, bool)
        x0, y0, x1, y1 = np.asarray(prediction["boxes"][index], float)
        columns = np.arange(int(np.floor(x0)), int(np.ceil(x1))) % grid.width
        outline[max(int(np.floor(y0)), 0):int(np.ceil(y1)), columns] = True
    n = np.count_nonzero(outline)
    return float(np.count_nonzero(outline & cloudy) / n) if n else 0.0


def false_alarms_on_clouds_by_threshold(ground_truth: Mapping, predictions: Mapping, grids: Mapping, cloudy: Mapping,
                                        thresholds=THRESHOLD_LADDER, match_iou: float = 0.5) -> list[dict]:
    """:func:`dust_false_alarms_on_clouds` at each of ``thresholds`` (a list of its dicts, thresholds ascending).

    One pass over the maps: each map's IoU matrix and each detection's cloudy fraction are computed
    once, only the greedy pairing of :func:`marsdust.analysis.error_tables` is redone per threshold.
    """
    map_ids = [m for m in ground_truth if m in cloudy]
    maps = []
    for map_id in map_ids:
        iou, scores = detection_storm_iou(ground_truth[map_id], predictions[map_id], grids[map_id], map_id)
        maps.append((map_id, iou, scores, {}))
    ladder = []
    for threshold in sorted(thresholds):
        n_storms = n_found = n_kept = n_false = n_on_clouds = 0
        for map_id, iou, scores, fractions in maps:
            pairs = pairs_at_threshold(iou, scores, threshold, match_iou)
            paired = set(pairs.values())
            kept = np.flatnonzero(scores >= threshold)
            false_alarms = [d for d in kept if d not in paired]
            for d in false_alarms:
                if d not in fractions:
                    fractions[d] = _cloudy_fraction(predictions[map_id], int(d), cloudy[map_id], grids[map_id])
            n_storms += iou.shape[1]
            n_found += len(pairs)
            n_kept += len(kept)
            n_false += len(false_alarms)
            n_on_clouds += sum(fractions[d] >= ON_CLOUD_FRACTION for d in false_alarms)
        ladder.append({"score_threshold": float(threshold), "n_maps": len(map_ids), "n_storms": n_storms,
                       "recall": n_found / n_storms if n_storms else float("nan"), "n_detections": n_kept,
                       "n_false_alarms": n_false, "n_false_alarms_on_clouds": int(n_on_clouds),
                       "on_cloud_fraction": ON_CLOUD_FRACTION})
    return ladder


def on_clouds_at_recall(ladder: list[dict], recall: float) -> dict | None:
    """The entry of a :func:`false_alarms_on_clouds_by_threshold` ladder at the highest threshold whose recall
    is still at least ``recall`` (None when no threshold reaches it)."""
    reaching = [entry for entry in ladder if entry["recall"] >= recall - 1e-9]
    return max(reaching, key=lambda entry: entry["score_threshold"]) if reaching else None
