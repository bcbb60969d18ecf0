"""The paper's Table 1 on our data (``marsdust compare``): its layout, and each detector trained and scored
under each split strategy.

Every run gets the same budget (one :class:`marsdust.train.TrainConfig`, only ``model`` and
``strategy`` change): :func:`marsdust.train.train`, then :func:`marsdust.evaluate.evaluate_checkpoint`
on the test split, then :func:`comparison_table` puts our rows under the paper's.

Rules decided here
------------------
* **Rows**: every network of the paper's Table 1 (:data:`PAPER_TABLE1`), ours above the paper's
  where given (registry names map to rows by :data:`NETWORK_NAMES`), then networks the paper
  does not list.
* **Columns**: mAP25, mAP50, mAP75 in percent and the median inference time in ms, each under
  strategy 1 (temporal split) and strategy 2 (random split).
* **Pixel IoU and Dice** (percent; :func:`marsdust.evaluate.metrics.pixel_overlap`, ``metrics["pixel"]``)
  are two more columns when any of our metrics holds them (the paper gives none).
* **Our mAP** is AP on the paper's 12° boxes (``metrics["paper_boxes"]``: each detection reduced
  to a 12° box at its outline centroid) when the metrics hold it, else the top-level
  ``map25/50/75`` (a run trained on the 12° boxes themselves).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np
import pandas as pd

from marsdust.evaluate.metrics import MAP_KEYS, read_metrics_json
from marsdust.fileio import write_text_atomic

if TYPE_CHECKING:
    from marsdust.train import TrainConfig

log = logging.getLogger(__name__)


# --- the paper's Table 1 ----------------------------------------------------------------------------------
PAPER_TABLE1 = {
    # network: {metric: (strategy 1, strategy 2)} — Table 1 of the paper, real MGS MOC maps, percent / ms
    "Fast R-CNN": {"mAP25": (64.1, 64.8), "mAP50": (59.1, 58.1), "mAP75": (32.2, 32.1), "Time (ms)": (350, 320)},
    "Mask R-CNN": {"mAP25": (67.8, 68.1), "mAP50": (61.2, 60.5), "mAP75": (38.1, 33.1), "Time (ms)": (290, 300)},
    "SPPnet": {"mAP25": (62.5, 63.2), "mAP50": (50.1, 53.1), "mAP75": (22.5, 20.1), "Time (ms)": (370, 360)},
    "DustRCNN": {"mAP25": (68.2, 67.5), "mAP50": (62.1, 61.2), "mAP75": (39.0, 37.7), "Time (ms)": (320, 310)},
}
"""The paper's Table 1 (its "Current R-CNN" is our DustRCNN)."""

NETWORK_NAMES = {"fastrcnn": "Fast R-CNN", "fasterrcnn": "Fast R-CNN", "maskrcnn": "Mask R-CNN",
                 "sppnet": "SPPnet", "dustrcnn": "DustRCNN", "unet": "U-Net", "unet_cbam": "CBAM U-Net"}
"""Registry model names -> the rows of Table 1 (the U-Nets, the segmentation approach, are not in the paper's)."""


def network_row_name(network: str) -> str:
    """The Table 1 row of a registry model name (``"unet_cbam"`` -> ``"CBAM U-Net"``); other names unchanged."""
    return NETWORK_NAMES.get(str(network).lower().replace("-", "").replace(" ", ""), str(network))


TABLE_METRICS = ("mAP25", "mAP50", "mAP75", "Time (ms)")
PIXEL_METRICS = ("Pixel IoU", "Dice")
"""Columns added to Table 1 when our metrics hold pixel scores (``metrics["pixel"]``: ``iou``, ``dice``)."""
STRATEGIES = ("strategy 1", "strategy 2")
_STRATEGY_ALIASES = {"temporal": "strategy 1", "1": "strategy 1", "strategy 1": "strategy 1",
                     "random": "strategy 2", "2": "strategy 2", "strategy 2": "strategy 2"}
PAPER_SOURCE = "paper (real MOC MDGMs)"


def comparison_table(results: Mapping, our_label: str = "ours") -> pd.DataFrame:
    """The paper's Table 1 layout with our results beside the paper's.

    Parameters
    ----------
    results : dict network -> dict strategy -> metrics
        ``network`` a registry name (``dustrcnn``, ``maskrcnn``, ``fasterrcnn``, ``sppnet``, ``unet``, ``unet_cbam``) or a
        Table 1 row name; ``strategy`` ``"temporal"``/``"random"`` (or 1/2); ``metrics`` a
        metrics dict or the path of a ``metrics.json`` (fractions; ``time_ms_per_map`` in ms).
        The mAP columns are the paper's: AP on its 12° boxes, i.e. ``metrics["paper_boxes"]``
        (each detection reduced to a 12° box at its outline centroid) when present, else the
        top-level ``map25/50/75`` (a run trained on the 12° boxes themselves).
    our_label : str
        Source label of our rows (e.g. ``"ours (synthetic)"``).

    Returns
    -------
    DataFrame
        Index ``(network, source)``, rows of every Table 1 network: the paper's (source
        :data:`PAPER_SOURCE`) and ours where given; columns ``(metric, strategy)`` with mAP in
        percent (as in the paper) and time in ms, then pixel IoU and Dice in percent
        (:data:`PIXEL_METRICS`) when any of our metrics holds them. Missing values are NaN.
    """
    ours: dict[str, dict] = {}
    for network, by_strategy in results.items():
        row = ours.setdefault(network_row_name(network), {})
        for strategy, metrics in by_strategy.items():
            column = _STRATEGY_ALIASES.get(str(strategy).lower())
            if column is None:
                raise ValueError(f"unknown strategy {strategy!r} for {network}; use 'temporal'/'random' or 1/2")
            if isinstance(metrics, (str, os.PathLike)):
                metrics = read_metrics_json(metrics)
            scored = metrics.get("paper_boxes") or metrics  # the paper's 12° boxes, whatever the labels trained on
            for key, metric in zip(MAP_KEYS, TABLE_METRICS[:3]):
                value = scored.get(key)
                row[(metric, column)] = np.nan if value is None else 100.0 * float(value)
            time_ms = metrics.get("time_ms_per_map")
            row[("Time (ms)", column)] = np.nan if time_ms is None else float(time_ms)
            pixel = metrics.get("pixel")
            if pixel:
                for metric, key in zip(PIXEL_METRICS, ("iou", "dice")):
                    value = pixel.get(key)
                    row[(metric, column)] = np.nan if value is None else 100.0 * float(value)
    with_pixels = any(metric in PIXEL_METRICS for row in ours.values() for metric, _ in row)
    names = TABLE_METRICS + (PIXEL_METRICS if with_pixels else ())
    columns = pd.MultiIndex.from_product([names, STRATEGIES], names=["metric", "strategy"])
    records, index = [], []
    for name in list(PAPER_TABLE1) + [n for n in ours if n not in PAPER_TABLE1]:
        if name in ours:
            records.append([ours[name].get(c, np.nan) for c in columns])
            index.append((name, our_label))
        if name in PAPER_TABLE1:
            records.append([PAPER_TABLE1[name][metric][STRATEGIES.index(strategy)] if metric in TABLE_METRICS
                            else np.nan for metric, strategy in columns])
            index.append((name, PAPER_SOURCE))
    return pd.DataFrame(records, index=pd.MultiIndex.from_tuples(index, names=["network", "source"]), columns=columns)


def comparison_markdown(table: pd.DataFrame) -> str:
    """Markdown of a :func:`comparison_table` (mAP in percent, one decimal; time in whole ms)."""
    header = ["Network", "Source"] + [f"{m} {s.replace('strategy ', 's')}" for m, s in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (network, source), row in table.iterrows():
        cells = []
        for (metric, _), value in row.items():
            if pd.isna(value):
                cells.append("–")
            else:
                cells.append(f"{value:.0f}" if metric == "Time (ms)" else f"{value:.1f}")
        lines.append("| " + " | ".join([network, source] + cells) + " |")
    note = ("\nmAP in percent at IoU 0.25 / 0.5 / 0.75; s1 = strategy 1 (temporal split), s2 = strategy 2 "
            "(random split); time = median inference per map. Rows marked "
            f"\"{PAPER_SOURCE}\" are the paper's Table 1 (real MGS MOC maps, its \"Current R-CNN\" = DustRCNN), "
            "not reproduced here; they are not directly comparable with results on other data.\n")
    if any(metric in PIXEL_METRICS for metric, _ in table.columns):
        note += ("Pixel IoU and Dice in percent: dust pixels of the detections at the detector's stored score "
                 "threshold against the catalogued outlines, observed pixels of the maps with outline truth, "
                 "summed over maps.\n")
    return "\n".join(lines) + "\n" + note


def write_comparison_table(table: pd.DataFrame, out_stem: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.csv`` atomically; returns both paths."""
    stem = Path(out_stem)
    if stem.suffix in (".md", ".csv"):
        stem = stem.with_suffix("")
    flat = table.copy()
    flat.columns = [f"{m} {s}" for m, s in table.columns]
    md_path = write_text_atomic(stem.with_suffix(".md"), comparison_markdown(table))
    csv_path = write_text_atomic(stem.with_suffix(".csv"), flat.reset_index().to_csv(index=False))
    return md_path, csv_path


# --- every measure, and where each detector finds storms ----------------------------------------------
MEASURES = {
    # column: (path into metrics.json, scale); percent unless the scale is 1
    "12° mAP50": (("paper_boxes", "map50"), 100.0), "12° mAP75": (("paper_boxes", "map75"), 100.0),
    "box mAP50": (("map50",), 100.0), "mask mAP50": (("segm", "map50"), 100.0),
    "pixel IoU": (("pixel", "iou"), 100.0), "Dice": (("pixel", "dice"), 100.0),
    "recall": (("error_analysis", "recall"), 100.0), "false alarms": (("error_analysis", "n_false_alarms"), 1.0),
    "area ratio": (("area_agreement", "median_ratio"), 1.0),
    "areas ±25 %": (("area_agreement", "within_25pct"), 100.0),
    "Time (ms)": (("time_ms_per_map",), 1.0),
}
"""The measures table's columns (:func:`measures_table`): where each comes from in ``metrics.json``.
``box mAP50`` is against the run's own labels (catalogue outlines' boxes), ``recall`` and ``false alarms``
at the detector's stored score threshold (IoU 0.5), ``area ratio`` the median detected / catalogued
area of matched storms."""

RECALL_BINS = {
    # column: (breakdown of error_analysis.json's "recall", bins merged)
    "small": ("by_size", 0), "medium": ("by_size", 1), "large": ("by_size", 2),
    "confidence 50–75": ("by_confidence", ("50", "75")), "confidence 100": ("by_confidence", ("100",)),
    "≤ 5° from 180°": ("by_seam_distance", ("0 (touching)", "0-5 deg")),
    "touching missing data": ("by_gap_distance", ("0 (touching)",)),
    "poleward of 60°": ("by_lat_band", ("90S-60S", "60N-90N")),
}
"""The recall table's columns (:func:`recall_table`): storm-size terciles of the test storms, the
catalogue's confidence, storms near the 180° seam, touching a gap in the map, and at high latitude."""


def _lookup(metrics: Mapping, path) -> float:
    value = metrics
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return np.nan if value is None else float(value)


def _runs(results: Mapping):
    """``(row name, strategy column, metrics.json path)`` of every run of ``results``."""
    for network, by_strategy in results.items():
        for strategy, metrics_path in by_strategy.items():
            yield network_row_name(network), _STRATEGY_ALIASES.get(str(strategy).lower(), str(strategy)), Path(metrics_path)


def _error_analyses(results: Mapping):
    """``(row name, strategy column, error_analysis.json content)`` of every run that has one beside its metrics."""
    for name, strategy, metrics_path in _runs(results):
        analysis_path = metrics_path.parent / "error_analysis.json"
        if analysis_path.is_file():
            yield name, strategy, read_metrics_json(analysis_path)


def measures_table(results: Mapping) -> pd.DataFrame:
    """Every measure of every run (:data:`MEASURES`), one row per network and strategy.

    Parameters
    ----------
    results : dict network -> dict strategy -> path of ``metrics.json``
        As :func:`compare` returns them.

    Returns
    -------
    DataFrame
        Index ``(network, strategy)``, one column per :data:`MEASURES` entry (percent where scaled).
    """
    rows, index = [], []
    for name, strategy, metrics_path in _runs(results):
        metrics = read_metrics_json(metrics_path)
        rows.append([_lookup(metrics, path) * scale for path, scale in MEASURES.values()])
        index.append((name, strategy))
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["network", "strategy"]),
                        columns=list(MEASURES))


def _recall_of(breakdown: Mapping, bins) -> tuple[float, int, str]:
    """Recall (percent), storm count and bin names over ``bins`` of one breakdown (an int: the n-th bin)."""
    if isinstance(bins, int):
        keys = [k for k in breakdown if k != "bin_edges_km2"]
        bins = keys[bins:bins + 1]
    counts = [breakdown[b] for b in bins if b in breakdown]
    n_storms = sum(c["n_storms"] for c in counts)
    n_found = sum(c["n_found"] for c in counts)
    return (100.0 * n_found / n_storms if n_storms else np.nan), n_storms, "+".join(bins)


def recall_table(results: Mapping) -> pd.DataFrame:
    """Recall at each run's operating point per kind of storm (:data:`RECALL_BINS`).

    Read from each evaluation's ``error_analysis.json`` (beside its ``metrics.json``); runs without
    one are left out. Columns ``<bin>`` (recall, percent), ``<bin> n`` (storms in the bin) and ``<bin> bin``
    (the breakdown's bin names; the size terciles' edges in km²).
    """
    rows, index = [], []
    for name, strategy, analysis in _error_analyses(results):
        recall = analysis["recall"]
        row = {}
        for column, (breakdown, bins) in RECALL_BINS.items():
            row[column], row[f"{column} n"], row[f"{column} bin"] = _recall_of(recall.get(breakdown, {}), bins)
        rows.append(row)
        index.append((name, strategy))
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["network", "strategy"]))


def _size_range(bin_name: str) -> str:
    """``"0-3.49e+05 km2"`` -> ``"< 3.5e+05 km², "`` (a size bin's range, for a table header)."""
    text = bin_name.replace(" km2", "")
    if text.startswith(">="):
        return f"≥ {float(text[2:]):.2g} km², "
    low, _, high = text.partition("-")
    return f"< {float(high):.2g} km², " if float(low) == 0 else f"{float(low):.2g}–{float(high):.2g} km², "


def causes_table(results: Mapping) -> pd.DataFrame:
    """Missed storms and false alarms by cause at each run's operating point (:mod:`marsdust.evaluate.errors`'
    categories: ``missed <cause>`` and ``false alarm <cause>`` counts), from each ``error_analysis.json``."""
    rows, index = [], []
    for name, strategy, analysis in _error_analyses(results):
        rows.append({**{f"missed {k}": v for k, v in analysis["missed"]["counts"].items()},
                     **{f"false alarm {k}": v for k, v in analysis["false_alarms"]["counts"].items()}})
        index.append((name, strategy))
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["network", "strategy"]))


def _markdown_rows(table: pd.DataFrame, cell) -> list[str]:
    lines = ["| Network | Strategy | " + " | ".join(table.columns) + " |", "|" + "---|" * (len(table.columns) + 2)]
    for (network, strategy), row in table.iterrows():
        lines.append(f"| {network} | {strategy} | " + " | ".join(cell(c, v) for c, v in row.items()) + " |")
    return lines


def measures_markdown(measures: pd.DataFrame, recall: pd.DataFrame | None = None,
                      causes: pd.DataFrame | None = None) -> str:
    """Markdown of :func:`measures_table` (then of :func:`recall_table`, storm counts in its header, and of
    :func:`causes_table`)."""
    def cell(column, value):
        if pd.isna(value):
            return "–"
        return f"{value:.0f}" if column in ("false alarms", "Time (ms)") else (
            f"{value:.2f}" if column == "area ratio" else f"{value:.1f}")

    text = "\n".join(_markdown_rows(measures, cell)) + "\n"
    if recall is not None and len(recall):
        columns = [c for c in recall.columns if not c.endswith((" n", " bin"))]
        for strategy in dict.fromkeys(recall.index.get_level_values("strategy")):
            part = recall.xs(strategy, level="strategy")
            counts = part.iloc[0]
            header = [f"{c} ({_size_range(counts[f'{c} bin']) if RECALL_BINS[c][0] == 'by_size' else ''}"
                      f"{int(counts[f'{c} n'])})" for c in columns]
            text += (f"\nRecall (percent) at each detector's operating point, {strategy}; storms per bin in "
                     f"brackets:\n\n| Network | " + " | ".join(header) + " |\n|" + "---|" * (len(columns) + 1) + "\n")
            for network, row in part.iterrows():
                text += f"| {network} | " + " | ".join(cell(c, row[c]) for c in columns) + " |\n"
    if causes is not None and len(causes):
        text += ("\nMissed storms and false alarms by cause at the same operating point (rules in "
                 "`marsdust.evaluate.errors`; counts on the test maps):\n\n"
                 + "\n".join(_markdown_rows(causes, lambda c, v: "–" if pd.isna(v) else f"{v:.0f}")) + "\n")
    return text


# --- our rows: train and evaluate each detector under each strategy ---------------------------------------
def compare(out_dir: str | os.PathLike, base: TrainConfig, models=("dustrcnn", "maskrcnn", "fasterrcnn", "sppnet"),
            strategies=("temporal", "random"), *, our_label: str = "ours", progress: bool = True) -> dict:
    """Train and evaluate each detector under each split strategy with the same budget; write Table 1.

    Each run lives in ``OUT/runs/<model>_<strategy>/`` and its evaluation (test split) in
    ``OUT/eval/<model>_<strategy>/``. A run with ``done.json`` is not trained again, a run with
    a ``last.ckpt`` is resumed, an evaluation with ``metrics.json`` is not redone — so an
    interrupted comparison continues where it stopped.

    Returns
    -------
    dict
        ``table`` (DataFrame of :func:`comparison_table`), ``markdown`` and
        ``csv`` paths, ``results`` (model -> strategy -> metrics.json path), ``measures``
        (:func:`measures_table`, also written to ``measures.md``/``.csv``), ``recall`` (:func:`recall_table`) and
        ``causes`` (:func:`causes_table`).
    """
    from marsdust.evaluate.runner import EvaluateOptions, evaluate_checkpoint
    from marsdust.train import run_checkpoint, train

    out_dir = Path(out_dir)
    results: dict[str, dict[str, str]] = {}
    for model in models:
        for strategy in strategies:
            name = f"{model}_{strategy}"
            run_dir, eval_dir = out_dir / "runs" / name, out_dir / "eval" / name
            metrics_path = eval_dir / "metrics.json"
            if not metrics_path.is_file():
                config = dataclasses.replace(base, model=model, strategy=strategy, progress=progress)
                if not (run_dir / "done.json").is_file():
                    log.info("compare: training %s", name)
                    train(config, run_dir, resume=(run_dir / "checkpoints" / "last.ckpt").exists())
                evaluate_checkpoint(run_checkpoint(run_dir), eval_dir, EvaluateOptions(
                    data=base.data, archive=base.archive, catalog=base.catalog, master=base.master,
                    strict=base.strict, progress=progress))
            results.setdefault(model, {})[strategy] = str(metrics_path)
    table = comparison_table(results, our_label=our_label)
    md_path, csv_path = write_comparison_table(table, out_dir / "table1")
    measures, recall, causes = measures_table(results), recall_table(results), causes_table(results)
    write_text_atomic(out_dir / "measures.md", measures_markdown(measures, recall, causes))
    write_text_atomic(out_dir / "measures.csv", measures.join(recall).join(causes).reset_index().to_csv(index=False))
    return {"table": table, "markdown": md_path, "csv": csv_path, "results": results, "measures": measures,
            "recall": recall, "causes": causes}
