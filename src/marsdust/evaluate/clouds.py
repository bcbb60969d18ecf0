"""Scores of a detector around water-ice clouds: per-class AP (dust, cloud) and dust false alarms on clouds.

A detection of a two-class detector is ``dust`` or ``cloud``; the cloud ground truth of a map is
the cloud instances of its cloud mask (:func:`marsdust.cloudmask.cloud_instances`), so cloud AP is
computed on the maps that have a mask only.

**Dust false alarms on clouds** (:func:`dust_false_alarms_on_clouds`): at one operating point
(a score threshold, normally the one stored with the detector), the dust detections that pair
with no catalogued storm (the greedy pairing of :mod:`marsdust.evaluate.matching`: wrapped box
IoU ≥ 0.5, as the error analysis pairs them) and that lie on a cloud by the error analysis's rule
(:func:`marsdust.evaluate.errors.cloudy_fraction`: at least
:data:`~marsdust.evaluate.errors.ON_CLOUD_FRACTION` of the outline's pixels cloudy in the map's
cloud mask). Counted on the maps with a cloud mask, with the recall at the same threshold beside
it, so a one-class and a two-class detector can be compared at the same recall.
:func:`false_alarms_on_clouds_by_threshold` repeats it over the ladder of score thresholds
(:data:`~marsdust.evaluate.matching.SCORE_THRESHOLDS`), and :func:`on_clouds_at_recall` reads
that ladder at a given recall (a detector's false alarms at another detector's recall).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from marsdust.evaluate.errors import ON_CLOUD_FRACTION, cloudy_fraction, is_on_cloud
from marsdust.evaluate.inputs import entry_boxes, entry_masks
from marsdust.evaluate.matching import SCORE_THRESHOLDS, detection_storm_iou, threshold_ladder
from marsdust.evaluate.metrics import box_map_summary


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


class _OnCloud:
    """Whether each detection of one map lies on a cloud, decided once per detection when first asked."""

    def __init__(self, prediction: Mapping, cloudy: np.ndarray, grid):
        self.boxes, self.outlines = entry_boxes(prediction), entry_masks(prediction)
        self.cloudy, self.grid, self.known = np.asarray(cloudy, bool), grid, {}

    def __call__(self, index: int) -> bool:
        if index not in self.known:
            outline = self.outlines[index] if self.outlines is not None and index < len(self.outlines) else None
            self.known[index] = is_on_cloud(cloudy_fraction(outline, self.boxes[index], self.cloudy, self.grid))
        return self.known[index]


def false_alarms_on_clouds_by_threshold(ground_truth: Mapping, predictions: Mapping, grids: Mapping, cloudy: Mapping,
                                        thresholds=SCORE_THRESHOLDS, match_iou: float = 0.5) -> list[dict]:
    """:func:`dust_false_alarms_on_clouds` at each of ``thresholds`` (a list of its dicts, thresholds ascending).

    One pass over the maps: each map's IoU matrix is computed once and walked up the thresholds by
    :func:`marsdust.evaluate.matching.threshold_ladder`; each detection's place on or off a cloud
    is decided once.
    """
    thresholds = sorted(float(t) for t in thresholds)
    map_ids = [m for m in ground_truth if m in cloudy]
    totals = [dict.fromkeys(("n_storms", "n_found", "n_kept", "n_false", "n_on_clouds"), 0) for _ in thresholds]
    for map_id in map_ids:
        iou, scores = detection_storm_iou(ground_truth[map_id], predictions[map_id], grids[map_id].width, map_id)
        on_cloud = _OnCloud(predictions[map_id], cloudy[map_id], grids[map_id])
        for total, (_, kept, pairs) in zip(totals, threshold_ladder(iou, scores, thresholds, match_iou)):
            paired = set(pairs.values())
            false_alarms = [int(d) for d in kept if d not in paired]
            total["n_storms"] += iou.shape[1]
            total["n_found"] += len(pairs)
            total["n_kept"] += len(kept)
            total["n_false"] += len(false_alarms)
            total["n_on_clouds"] += sum(on_cloud(d) for d in false_alarms)
    return [{"score_threshold": threshold, "n_maps": len(map_ids), "n_storms": total["n_storms"],
             "recall": total["n_found"] / total["n_storms"] if total["n_storms"] else float("nan"),
             "n_detections": total["n_kept"], "n_false_alarms": total["n_false"],
             "n_false_alarms_on_clouds": int(total["n_on_clouds"]), "on_cloud_fraction": ON_CLOUD_FRACTION}
            for threshold, total in zip(thresholds, totals)]


def on_clouds_at_recall(ladder: list[dict], recall: float) -> dict | None:
    """The entry of a :func:`false_alarms_on_clouds_by_threshold` ladder at the highest threshold whose recall
    is still at least ``recall`` (None when no threshold reaches it)."""
    reaching = [entry for entry in ladder if entry["recall"] >= recall - 1e-9]
    return max(reaching, key=lambda entry: entry["score_threshold"]) if reaching else None
