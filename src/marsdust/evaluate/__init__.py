"""Scoring detections against the catalogue (``marsdust evaluate``), the error analysis, Table 1, tracking scores.

Modules, from the inputs up (each docstring states its rules):

* :mod:`~marsdust.evaluate.inputs` — the per-map dicts every scorer reads and how their fields are read;
* :mod:`~marsdust.evaluate.matching` — which detection is which storm: box IoU across 180°, outline
  IoU, the one greedy pairing and the ladder of score thresholds;
* :mod:`~marsdust.evaluate.metrics` — the scores of plain per-map dicts: COCO mAP@25/50/75,
  breakdowns, centre deviations, area agreement, pixel IoU and Dice, inference time, ``metrics.json``;
* :mod:`~marsdust.evaluate.errors` — the error analysis: recall by storm and map attributes, causes of
  misses and false alarms (and when a false alarm lies on a cloud), galleries;
* :mod:`~marsdust.evaluate.clouds` — per-class AP and the dust false alarms on cloud-mask clouds;
* :mod:`~marsdust.evaluate.compare` — the paper's Table 1: its layout and ``marsdust compare``;
* :mod:`~marsdust.evaluate.tracking` — tracking scores of members and sequences against a catalog;
* :mod:`~marsdust.evaluate.runner` — :func:`evaluate_checkpoint` (its options an
  :class:`EvaluateOptions`): a trained checkpoint run on a
  split's maps and scored, with the error analysis and figures.

The runner's names are imported on first use, so that ``marsdust.evaluate`` stays as light as
its metrics (the runner builds on the detector, the data and the error analysis).
"""

from __future__ import annotations

import importlib

from marsdust.evaluate.compare import (
    NETWORK_NAMES,
    PAPER_SOURCE,
    PIXEL_METRICS,
    PAPER_TABLE1,
    STRATEGIES,
    TABLE_METRICS,
    comparison_markdown,
    comparison_table,
    write_comparison_table,
)
from marsdust.evaluate.matching import align_to_ground_truth, box_iou, wrapped_iou
from marsdust.evaluate.metrics import (
    IOU_THRESHOLDS,
    MAP_KEYS,
    SEASONS,
    area_agreement,
    box_map_summary,
    breakdown_by_confidence,
    breakdown_by_season,
    breakdown_by_size,
    center_deviations,
    coco_map,
    evaluate_detections,
    pixel_overlap,
    read_metrics_json,
    season_of,
    size_bin_edges,
    size_bin_labels,
    summarize_deviations,
    time_inference,
    write_metrics_json,
)

_RUNNER_NAMES = ("EvaluateOptions", "evaluate_checkpoint", "evaluation_split", "prediction_entry", "run_config_of")
"""Names of :mod:`marsdust.evaluate.runner` this package exports, imported on first use."""

__all__ = [
    "IOU_THRESHOLDS",
    "MAP_KEYS",
    "NETWORK_NAMES",
    "PAPER_SOURCE",
    "PAPER_TABLE1",
    "PIXEL_METRICS",
    "SEASONS",
    "STRATEGIES",
    "TABLE_METRICS",
    "align_to_ground_truth",
    "area_agreement",
    "box_iou",
    "box_map_summary",
    "breakdown_by_confidence",
    "breakdown_by_season",
    "breakdown_by_size",
    "center_deviations",
    "coco_map",
    "comparison_markdown",
    "comparison_table",
    "evaluate_detections",
    "pixel_overlap",
    "read_metrics_json",
    "season_of",
    "size_bin_edges",
    "size_bin_labels",
    "summarize_deviations",
    "time_inference",
    "wrapped_iou",
    "write_comparison_table",
    "write_metrics_json",
    *_RUNNER_NAMES,
]


def __getattr__(name: str):
    """The names of :data:`_RUNNER_NAMES`, imported on first use (PEP 562)."""
    if name not in _RUNNER_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("marsdust.evaluate.runner"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_RUNNER_NAMES))
