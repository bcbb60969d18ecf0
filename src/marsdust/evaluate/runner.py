"""Scoring a trained checkpoint on a split (``marsdust evaluate``): :func:`evaluate_checkpoint`.

It runs the detector the way ``marsdust detect`` does (:func:`marsdust.detect.detect_map`) on every
map of the split, scores the detections against the catalogue with :mod:`marsdust.evaluate.metrics`
(COCO mAP of the run's labels, of the paper's 12° boxes drawn at each detection's outline centroid,
masks, breakdowns, centre deviations, area agreement, inference time; pixel IoU and Dice of the detections
at the detector's stored score threshold against the catalogued outlines, on the maps with outline truth:
those within the time span of the catalogue's outlined storms whose every storm has one), writes the error analysis
of :mod:`marsdust.evaluate.errors` and the figures of :mod:`marsdust.plots`. The existing scores are those of
dust; :mod:`marsdust.evaluate.clouds` adds per-class AP and the dust false alarms on clouds where the
maps have cloud masks (:mod:`marsdust.cloudmask`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from marsdust import plots
from marsdust.evaluate.errors import MapsToAnalyze, write_error_analysis
from marsdust.evaluate.matching import SCORE_THRESHOLDS
from marsdust.data import load_split, select_split
from marsdust.detect import DetectSettings, detect_map
from marsdust.detect.prepare import working_image
from marsdust.detect.settings import resolve_latitudes
from marsdust.evaluate.metrics import (
    area_agreement,
    box_map_summary,
    center_deviations,
    evaluate_detections,
    iou_and_dice,
    pixel_counts_by_threshold,
    pixel_overlap,
    score_map,
    season_of,
    time_inference,
    write_metrics_json,
)
from marsdust.fileio import write_text_atomic
from marsdust.history import MapHistory
from marsdust.labels import in_outlined_span, map_targets, mask_supervised, outlined_span, paper_boxes_at
from marsdust.mdgm import MapImage, read_map
from marsdust.cloudmask import CloudMasks, cloud_mask_root
from marsdust.evaluate.clouds import dust_false_alarms_on_clouds, false_alarms_on_clouds_by_threshold, per_class_ap
from marsdust.models import detector_classes, load_model, resolve_score_threshold, stored_outline_threshold
from marsdust.train.config import TrainConfig, load_config_yaml, load_tables, resolve_data_paths, split_for


def _cloud_scores(model, found) -> dict:
    """``classes``, ``per_class`` AP, ``dust_false_alarms_on_clouds`` (at the detector's stored threshold) and
    ``dust_false_alarms_on_clouds_by_threshold`` (0.05 to 0.95, to compare detectors at one recall) for
    metrics.json (:mod:`marsdust.evaluate.clouds`); the last two None without cloud masks."""
    classes = detector_classes(model)
    cloud = (found.cloud_truth, found.cloud_predictions) if "cloud" in classes else None
    on_clouds = ladder = None
    if found.cloudy:
        threshold, _ = resolve_score_threshold(model, None)
        on_clouds = dust_false_alarms_on_clouds(found.ground_truth, found.predictions, found.grids, found.cloudy,
                                                threshold)
        ladder = false_alarms_on_clouds_by_threshold(found.ground_truth, found.predictions, found.grids,
                                                     found.cloudy)
    return {"classes": list(classes), "per_class": per_class_ap((found.ground_truth, found.predictions), cloud,
                                                                found.grids),
            "dust_false_alarms_on_clouds": on_clouds, "dust_false_alarms_on_clouds_by_threshold": ladder}


def run_config_of(checkpoint: str | os.PathLike) -> dict:
    """The ``config.yaml`` of the run folder holding ``RUN_DIR/checkpoints/<checkpoint>``, as a dict ({} if none).

    Parameters
    ----------
    checkpoint : path
        A checkpoint of a training run (``RUN_DIR/checkpoints/best.ckpt``) or any other file.
    """
    path = Path(checkpoint).resolve().parent.parent / "config.yaml"
    return load_config_yaml(path) if path.is_file() else {}


def evaluation_split(checkpoint: Path, index_df: pd.DataFrame, split_file: str | None, run_values: dict,
                     strategy: str | None) -> tuple[pd.DataFrame, str]:
    """Split manifest for an evaluation and where it came from.

    Order: ``split_file``; the run folder's ``split.csv`` next to the checkpoint; recomputed from
    the run's ``config.yaml`` (or defaults) with ``strategy`` if given.
    """
    if split_file:
        return load_split(split_file), str(split_file)
    near = checkpoint.resolve().parent.parent / "split.csv"
    if near.is_file() and strategy in (None, run_values.get("strategy")):
        return load_split(near), str(near)
    values = {k: v for k, v in run_values.items() if k in {f.name for f in dataclasses.fields(TrainConfig)}}
    values.pop("split_file", None)
    if strategy:
        values["strategy"] = strategy
    config = TrainConfig.from_dict(values, source="run config")
    return split_for(config, index_df), f"recomputed ({config.strategy}, seed {config.seed})"


def prediction_entry(result, grid, class_name: str | None = None) -> dict:
    """A detection result as :mod:`marsdust.evaluate.metrics` scores it: one map's ``predictions`` entry.

    Parameters
    ----------
    result : marsdust.detect.MapResult
        What :func:`marsdust.detect.detect_map` returned for the map.
    grid : marsdust.grid.MapGrid
        The working grid the entry is expressed on (``result.grid``).
    class_name : str, optional
        Keep only the detections of this class (``dust`` / ``cloud``); default all.

    Returns
    -------
    dict
        ``boxes`` (n, 4) xyxy working-grid pixels, ``scores`` (n,), ``masks`` (n, H, W) uint8,
        ``area_km2`` (n,), and ``paper_boxes`` (n, 4): the paper's 12° boxes centred on each
        detection's outline centroid (:func:`marsdust.labels.paper_boxes_at`), the way the
        catalogue's fixed boxes are drawn.
    """
    factor = result.native_grid.width / grid.width
    chosen = [k for k, r in enumerate(result.records) if class_name is None or r.get("class", "dust") == class_name]
    records = [result.records[k] for k in chosen]
    boxes = np.array([[r["x0"], r["y0"], r["x1"], r["y1"]] for r in records], dtype=float).reshape(-1, 4) / factor
    masks = (np.stack([result.masks[k] for k in chosen]).astype(np.uint8) if chosen
             else np.zeros((0, grid.height, grid.width), dtype=np.uint8))
    area_km2 = np.array([r["area_km2"] for r in records], dtype=float)
    lon_deg = np.array([r["lon"] for r in records], dtype=float)
    lat_deg = np.array([r["lat"] for r in records], dtype=float)
    return {"boxes": boxes, "scores": result.scores[chosen], "masks": masks, "area_km2": area_km2,
            "paper_boxes": paper_boxes_at(lon_deg, lat_deg, grid)}


@dataclass
class _SplitDetections:
    """Ground truth and detections of every map of a split, by ``map_id`` (working grid)."""

    ground_truth: dict = field(default_factory=dict)
    paper_truth: dict = field(default_factory=dict)  # the catalogue's 12° boxes
    predictions: dict = field(default_factory=dict)
    grids: dict = field(default_factory=dict)
    map_ls: dict = field(default_factory=dict)
    images: dict = field(default_factory=dict)
    valid_masks: dict = field(default_factory=dict)
    per_map: list = field(default_factory=list)  # rows of per_map.csv
    cloudy: dict = field(default_factory=dict)  # cloudy pixels of the maps with a cloud mask
    cloud_truth: dict = field(default_factory=dict)  # their cloud instances
    cloud_predictions: dict = field(default_factory=dict)  # cloud detections (two-class detectors)
    outline_truth: dict = field(default_factory=dict)  # union of the outlines, maps with outline truth only


def _detect_on_split(model, rows: pd.DataFrame, storms_df: pd.DataFrame, label_mode: str, *, split: str,
                     settings: DetectSettings, device: str, progress: bool,
                     transform_image: Callable[[MapImage], MapImage] | None,
                     backgrounds: dict | None = None, clouds: CloudMasks | None = None) -> _SplitDetections:
    """Run the detector on every map of ``rows`` and collect what the scoring needs (dust; and clouds
    where ``clouds`` finds a map's cloud mask)."""
    two_class = "cloud" in detector_classes(model)
    storms_by_map = dict(tuple(storms_df.groupby("map_id", sort=False)))
    empty = storms_df.iloc[0:0]
    span = outlined_span(storms_df)
    found = _SplitDetections()
    for row in tqdm(rows.itertuples(), total=len(rows), desc=f"evaluate {split}", unit="map", disable=not progress):
        image = read_map(row.path) if transform_image is None else transform_image(read_map(row.path))
        t0 = time.perf_counter()
        result = detect_map(model, image, map_id=row.map_id, mars_year=int(row.mars_year), ls=float(row.ls),
                            settings=settings, device=device,
                            background=None if backgrounds is None else backgrounds[row.map_id])
        seconds = time.perf_counter() - t0
        grid = result.grid
        storms = storms_by_map.get(row.map_id, empty)
        target = map_targets(storms, grid, label_mode)
        found.ground_truth[row.map_id] = {**{k: target[k] for k in ("boxes", "masks", "confidence", "area_km2")},
                                          "mask_scored": mask_supervised(target["has_outline"], label_mode)}
        found.paper_truth[row.map_id] = {"boxes": map_targets(storms, grid, "fixed", with_masks=False)["boxes"]}
        outlines = outline_truth(storms, grid) if in_outlined_span(span, row.mars_year, row.ls) else None
        if outlines is not None:
            found.outline_truth[row.map_id] = outlines
        found.predictions[row.map_id] = prediction_entry(result, grid, "dust")
        cloudy = clouds.cloudy(row._asdict(), grid) if clouds is not None else None
        if cloudy is not None:
            found.cloudy[row.map_id] = cloudy
            found.cloud_truth[row.map_id] = clouds.instances_in(cloudy, grid)
        if two_class:
            found.cloud_predictions[row.map_id] = prediction_entry(result, grid, "cloud")
        found.grids[row.map_id], found.map_ls[row.map_id] = grid, float(row.ls)
        found.images[row.map_id] = result.image.rgb if result.image is not None else None
        found.valid_masks[row.map_id] = result.valid
        found.per_map.append({"map_id": row.map_id, "mars_year": int(row.mars_year), "ls": float(row.ls),
                              "n_catalog": int(len(target["boxes"])),
                              "n_detections": int(len(found.predictions[row.map_id]["scores"])),
                              "n_detections_05": int((found.predictions[row.map_id]["scores"] >= 0.5).sum()),
                              "valid_fraction": float(result.valid_fraction), "seconds": seconds,
                              "n_beyond_latitudes": int(result.n_beyond_latitudes)})
    return found


def outline_truth(storms: pd.DataFrame, grid) -> np.ndarray | None:
    """The ``(H, W)`` bool union of a map's catalogued outlines on ``grid``, or None when the map has no outline truth.

    A map has outline truth when every storm it shows (:func:`marsdust.labels.map_targets` in
    ``outline`` mode) has an outline; a map without storms has (empty) truth. Whether the map lies in
    the span of the outlining catalogue is the caller's test (:func:`outlined_span`).
    """
    if len(storms) == 0:
        return np.zeros(grid.shape, dtype=bool)
    target = map_targets(storms, grid, "outline")
    if not bool(np.all(target["has_outline"])):
        return None
    return target["masks"].astype(bool).any(axis=0) if len(target["masks"]) else np.zeros(grid.shape, dtype=bool)


PIXEL_LATITUDE_BANDS = {"90S-60S": (-90.0, -60.0), "60S-60N": (-60.0, 60.0), "60N-90N": (60.0, 90.0)}
"""Latitude bands (degrees, south edge included) of ``metrics["pixel"]["by_latitude"]``: the polar caps and hood
of a global map apart from the band MOC also images."""


def pixel_scores(found: _SplitDetections, model) -> dict:
    """``metrics["pixel"]``: :func:`marsdust.evaluate.metrics.pixel_overlap` of the dust detections against the
    outlines, on the maps with outline truth, at the detector's outline threshold.

    That is the threshold of best pixel IoU on the validation maps where the checkpoint stores one
    (:func:`marsdust.models.stored_outline_threshold`), else its detection threshold (best F1 of storms
    found, :func:`marsdust.models.resolve_score_threshold`); ``threshold`` and ``threshold_source`` say
    which. ``at_detection_threshold``: IoU and Dice at the detection threshold, what the products of
    ``detect`` at its default threshold overlap. ``by_latitude``: the same as the main scores over the
    rows of each band of :data:`PIXEL_LATITUDE_BANDS` (empty bands: NaN). ``by_score_threshold``: pixel
    IoU, Dice and predicted pixels at each score of the ladder
    (:data:`~marsdust.evaluate.matching.SCORE_THRESHOLDS`), on these test maps (so their best is an upper
    bound, not a result)."""
    detection_threshold = resolve_score_threshold(model, None)[0]
    threshold, source = stored_outline_threshold(model), "chosen on validation maps (best pixel IoU)"
    if threshold is None:
        threshold, source = detection_threshold, "the detection threshold (the checkpoint stores no outline threshold)"
    valid = {m: found.valid_masks[m] for m in found.outline_truth}
    predicted = _masks_scoring_at_least(found, threshold)
    by_latitude = {}
    for name, (south, north) in PIXEL_LATITUDE_BANDS.items():
        in_band = {m: valid[m] & _rows_between(found.grids[m], south, north)[:, None] for m in valid}
        by_latitude[name] = pixel_overlap(found.outline_truth, predicted, in_band)
    by_score_threshold = _pixel_ladder(found, valid)
    at_detection = pixel_overlap(found.outline_truth, _masks_scoring_at_least(found, detection_threshold), valid)
    return {**pixel_overlap(found.outline_truth, predicted, valid), "threshold": float(threshold),
            "threshold_source": source,
            "at_detection_threshold": {"threshold": float(detection_threshold), "iou": at_detection["iou"],
                                       "dice": at_detection["dice"]},
            "by_latitude": by_latitude, "by_score_threshold": by_score_threshold}


def _pixel_ladder(found: _SplitDetections, valid: dict) -> list[dict]:
    """Pixel IoU, Dice and predicted pixels at each score of the ladder, counted as validation counts them when it
    chooses the outline threshold: one map of scores a map (:func:`marsdust.evaluate.metrics.score_map`), its
    pixels counted at every rung (:func:`~marsdust.evaluate.metrics.pixel_counts_by_threshold`), summed over maps."""
    counts = np.zeros((len(SCORE_THRESHOLDS), 4), dtype=np.int64)
    for map_id, truth in found.outline_truth.items():
        entry = found.predictions[map_id]
        scores_map = (score_map(entry["masks"], entry["scores"]) if len(entry["scores"])
                      else np.zeros(truth.shape, dtype=np.float32))
        counts += pixel_counts_by_threshold(scores_map, truth, valid[map_id], SCORE_THRESHOLDS)
    ladder = []
    for threshold, (inter, union, n_true, n_predicted) in zip(SCORE_THRESHOLDS, counts):
        iou, dice = iou_and_dice(inter, union, n_true, n_predicted)
        ladder.append({"score_threshold": threshold, "iou": iou, "dice": dice, "n_predicted_pixels": int(n_predicted)})
    return ladder


def _masks_scoring_at_least(found: _SplitDetections, threshold: float) -> dict:
    """The dust detections' masks with score ≥ ``threshold``, by map id, on the maps with outline truth."""
    return {m: found.predictions[m]["masks"][found.predictions[m]["scores"] >= threshold]
            for m in found.outline_truth}


def _rows_between(grid, south_deg: float, north_deg: float) -> np.ndarray:
    """``(H,)`` bool: the grid's rows centred in ``[south_deg, north_deg)`` (the north pole's row included)."""
    lat_deg = grid.lat_centers_deg
    return (lat_deg >= south_deg) & ((lat_deg < north_deg) | (north_deg >= 90.0))


def _inference_timing(model, rows: pd.DataFrame, *, device: str,
                      transform_image: Callable[[MapImage], MapImage] | None,
                      backgrounds: dict | None = None) -> dict | None:
    """:func:`marsdust.evaluate.metrics.time_inference` on the maps of ``rows`` (the first two warm up); None for
    two maps or fewer."""
    if len(rows) <= 2:
        return None
    images = [read_map(p) if transform_image is None else transform_image(read_map(p)) for p in rows["path"]]
    extra = [None if backgrounds is None else backgrounds[map_id] for map_id in rows["map_id"]]

    def detect(item):
        image, background = item
        return detect_map(model, image, settings=DetectSettings(score_threshold=0.5), device=device,
                          background=background)

    return time_inference(detect, list(zip(images, extra)))


def split_backgrounds(model, index_df: pd.DataFrame, rows: pd.DataFrame,
                      transform_image: Callable[[MapImage], MapImage] | None = None) -> dict | None:
    """The reference background of every map of ``rows`` from the archive ``index_df`` (None without reference bands).

    A map's history is every earlier map of the archive, whatever its split (images only), served by
    :class:`marsdust.history.MapHistory` under the detector's no-history rule. With
    ``transform_image`` the whole archive is seen through it (the history too), as an archive that
    looks different would be.
    """
    if not model.config.reference_config.enabled:
        return None
    res_deg = float(model.config.map_res_deg)

    def load(path: str):
        image = read_map(path)
        image, _ = working_image(image if transform_image is None else transform_image(image), res_deg)
        return image.rgb, image.valid

    return MapHistory.for_detector(model, index_df, load).backgrounds(rows["map_id"])


def _choose_figure_maps(ground_truth: dict, map_ls: dict, n: int) -> list[str]:
    """Up to ``n`` maps for GT-vs-prediction figures: the map with most storms in each season first."""
    by_season: dict[str, list[tuple[int, str]]] = {}
    for map_id, gt in ground_truth.items():
        by_season.setdefault(season_of(map_ls.get(map_id, float("nan"))) or "?", []).append((-len(gt["boxes"]), map_id))
    ranked = [sorted(v) for _, v in sorted(by_season.items())]
    chosen: list[str] = []
    while len(chosen) < n and any(ranked):
        for entries in ranked:
            if entries and len(chosen) < n:
                chosen.append(entries.pop(0)[1])
    return chosen


def _write_figures(model, found: _SplitDetections, metrics: dict, deviations: pd.DataFrame, figures: Path, *,
                   split: str, n_figures: int) -> None:
    """Precision–recall curves, centre deviations and ``n_figures`` maps ground truth next to prediction."""
    name = f"{model.model_name} on {split} maps"
    plots.plot_pr_curves(metrics["pr_curves"], figures / "pr_curves.png", title=f"precision–recall: {name}")
    plots.plot_center_deviations(deviations, figures / "center_deviation_hist.png", title=f"centre deviations: {name}")
    for map_id in _choose_figure_maps(found.ground_truth, found.map_ls, n_figures):
        rgb = found.images.get(map_id)
        if rgb is None:
            continue
        grid, gt, pred = found.grids[map_id], found.ground_truth[map_id], found.predictions[map_id]
        keep = pred["scores"] >= 0.5
        plots.plot_truth_vs_prediction(
            rgb, grid.res_deg, grid.lat_north_deg, gt["boxes"], pred["boxes"][keep], pred["scores"][keep],
            figures / f"truth_vs_prediction_{map_id}.png",
            title=f"{map_id} Ls {found.map_ls[map_id]:.1f}°", gt_labels=[f"CL{int(c)}" for c in gt["confidence"]],
            pred_masks=pred["masks"][keep] if model.has_masks else None)


def _closest_cloud_and_storm(found: _SplitDetections) -> tuple[str, int, int] | None:
    """``(map_id, centre column, half width px)`` of the map where a catalogued storm and a cloud instance
    lie closest in longitude (centre columns), or None when no map has both."""
    best = None
    for map_id, clouds in found.cloud_truth.items():
        storms = found.ground_truth[map_id]["boxes"]
        width = found.grids[map_id].width
        if not len(storms) or not len(clouds["boxes"]):
            continue
        storm_cols = ((storms[:, 0] + storms[:, 2]) / 2) % width
        cloud_cols = ((clouds["boxes"][:, 0] + clouds["boxes"][:, 2]) / 2) % width
        apart = (cloud_cols[None, :] - storm_cols[:, None] + width / 2) % width - width / 2
        i, j = np.unravel_index(np.argmin(np.abs(apart)), apart.shape)
        if best is None or abs(apart[i, j]) < best[0]:
            best = (abs(apart[i, j]), map_id, int(round(storm_cols[i] + apart[i, j] / 2)) % width)
    if best is None:
        return None
    distance, map_id, center = best
    res_deg = found.grids[map_id].res_deg
    return map_id, center, int(round(max(distance / 2 + 20.0 / res_deg, 30.0 / res_deg)))


def _write_cloud_and_storm_figure(found: _SplitDetections, threshold: float, figures: Path) -> None:
    """``figures/cloud_and_storm.png``: a two-class detector's detections where a cloud and a storm sit side by side."""
    chosen = _closest_cloud_and_storm(found)
    if chosen is None:
        return
    map_id, center, half = chosen
    rgb = found.images.get(map_id)
    if rgb is None:
        return
    detections = [(mask.astype(bool), name, float(score))
                  for name, entry in (("dust", found.predictions[map_id]), ("cloud", found.cloud_predictions[map_id]))
                  for mask, score in zip(entry["masks"], entry["scores"]) if score >= threshold]
    plots.plot_cloud_and_storm(rgb, found.grids[map_id], found.ground_truth[map_id]["masks"], found.cloudy[map_id],
                               detections, figures / "cloud_and_storm.png", center, half,
                               title=f"{map_id} Ls {found.map_ls[map_id]:.1f}°: catalogue, cloud mask and detections "
                                     f"at score ≥ {threshold:.2f}")


@dataclass(frozen=True)
class EvaluateOptions:
    """How :func:`evaluate_checkpoint` scores a checkpoint (each default is ``marsdust evaluate``'s).

    Attributes
    ----------
    data, archive, catalog, master : str, optional
        The data (as for training; default: the run's ``config.yaml``).
    strict : bool
        Stop on MDAD cube/master disagreements instead of one warning (:attr:`marsdust.train.TrainConfig.strict`).
    split : {"test", "val", "train"}
        Which maps to score.
    split_file : str, optional
        Split manifest (default: the run's ``split.csv``, else recomputed).
    strategy : {"temporal", "random"}, optional
        Recompute the split with this strategy.
    label_mode : str, optional
        Ground-truth shape (default: the one the checkpoint was trained on, else the run folder's
        ``config.yaml``, else ``fixed``).
    score_threshold : float
        Detections below this score are not scored (the model's own ``box_score_thresh`` still
        applies); COCO mAP uses the rest, ranked by score.
    mask_threshold : float
        Mask probability at which a pixel belongs to a storm, as ``detect --mask-threshold`` cuts its
        outlines (:attr:`marsdust.detect.DetectSettings.mask_threshold`): mask mAP, areas and pixel scores
        are those of the products ``detect`` writes at it.
    mask_box_scale : float, optional
        The outline window, times the detection box (:attr:`marsdust.detect.DetectSettings.mask_box_scale`;
        None: the detector's own).
    n_figures : int
        Maps drawn ground truth next to prediction.
    n_timed : int
        Maps timed (after 2 warm-up maps) for the median inference time.
    device : str
        ``cpu`` or ``cuda``.
    progress : bool
        Show a progress bar.
    transform_image : callable, optional
        Applied to every map as read (native grid, float RGB in [0, 1]) before detection, e.g. an
        appearance shift of :mod:`marsdust.shift`; the scored maps, their history, timing and figures
        all see its output.
    latitudes_deg : (float, float), optional
        Detections centred outside ``(south, north)`` are dropped, as ``detect`` drops them
        (:attr:`marsdust.detect.DetectSettings.latitudes_deg`; None: the detector's training latitudes,
        :data:`marsdust.detect.settings.ALL_LATITUDES`: none dropped).
    """

    data: str | None = None
    archive: str | None = None
    catalog: str | None = None
    master: str | None = None
    strict: bool = False
    split: str = "test"
    split_file: str | None = None
    strategy: str | None = None
    label_mode: str | None = None
    score_threshold: float = 0.05
    mask_threshold: float = 0.5
    mask_box_scale: float | None = None
    n_figures: int = 4
    n_timed: int = 10
    device: str = "cpu"
    progress: bool = True
    transform_image: Callable[[MapImage], MapImage] | None = None
    latitudes_deg: tuple[float, float] | None = None


@dataclass
class _EvaluationData:
    """The data an evaluation scores: the archive's tables, the split's maps and where the split came from."""

    config: TrainConfig
    run_values: dict
    label_mode: str
    index_df: pd.DataFrame
    storms_df: pd.DataFrame
    rows: pd.DataFrame
    split_source: str


def _evaluation_data(model, checkpoint: Path, options: EvaluateOptions) -> _EvaluationData:
    """The data, label mode and split maps of an evaluation (defaults: the run folder's)."""
    run_values = run_config_of(checkpoint)
    data, catalog = options.data, options.catalog
    config = TrainConfig.from_dict({"data": data or run_values.get("data"),
                                    "archive": options.archive or (None if data else run_values.get("archive")),
                                    "catalog": catalog or (None if data else run_values.get("catalog")),
                                    "master": options.master or (None if data or catalog else run_values.get("master")),
                                    "strict": options.strict, "cloud_masks": run_values.get("cloud_masks")},
                                   source="evaluation data")
    label_mode = (options.label_mode or model.checkpoint_extra.get("label_mode")
                  or run_values.get("label_mode", "fixed"))
    index_df, storms_df = load_tables(config)
    split_df, split_source = evaluation_split(checkpoint, index_df, options.split_file, run_values, options.strategy)
    rows = select_split(index_df, split_df, options.split)
    if len(rows) == 0:
        raise ValueError(f"the {options.split} split ({split_source}) holds no maps")
    return _EvaluationData(config, run_values, label_mode, index_df, storms_df, rows, split_source)


def _split_detections(model, data: _EvaluationData, options: EvaluateOptions,
                      settings: DetectSettings) -> tuple[_SplitDetections, dict | None]:
    """Detections on every map of the split with ``settings`` (:func:`detect_settings`; with their reference
    backgrounds and cloud masks), and the timing."""
    backgrounds = split_backgrounds(model, data.index_df, data.rows, options.transform_image)
    recorded = model.checkpoint_extra  # the checkpoint's own record first: it travels with a copied checkpoint
    max_width_deg = (recorded["cloud_max_width_deg"] if "cloud_max_width_deg" in recorded
                     else data.run_values.get("cloud_max_width_deg"))
    clouds = CloudMasks(data.config.cloud_masks or cloud_mask_root(resolve_data_paths(data.config)[0]),
                        max_width_deg=max_width_deg)
    found = _detect_on_split(model, data.rows, data.storms_df, data.label_mode, split=options.split,
                             settings=settings, device=options.device,
                             progress=options.progress, transform_image=options.transform_image,
                             backgrounds=backgrounds, clouds=clouds)
    timing = _inference_timing(model, data.rows.iloc[: options.n_timed + 2], device=options.device,
                               transform_image=options.transform_image, backgrounds=backgrounds)
    return found, timing


def detect_settings(model, options: EvaluateOptions) -> DetectSettings:
    """How an evaluation detects: every detection from ``options.score_threshold`` up, its outline cut at
    ``options.mask_threshold``, at the latitudes asked (None: the detector's training latitudes)."""
    settings = DetectSettings(score_threshold=options.score_threshold, mask_threshold=options.mask_threshold,
                              latitudes_deg=options.latitudes_deg, mask_box_scale=options.mask_box_scale)
    return resolve_latitudes(model, settings)[0]


def _outline_window(model, settings: DetectSettings) -> float | None:
    """The window the masks were outlined in, times the box: the settings', else the detector's (None for a
    detector without RoI heads)."""
    if settings.mask_box_scale is not None:
        return settings.mask_box_scale
    return getattr(getattr(model, "roi_heads", None), "mask_box_scale", None)


def evaluate_checkpoint(checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
                        options: EvaluateOptions | None = None) -> dict:
    """Run a trained detector on a split's maps and score it (``EVAL_DIR/metrics.json``, ``per_map.csv``, figures).

    Parameters
    ----------
    checkpoint : path
        ``best.ckpt`` / ``last.ckpt`` of a run (or any marsdust checkpoint).
    out_dir : path
        ``EVAL_DIR``: gets ``metrics.json``, ``per_map.csv``, ``deviations.csv``, ``figures/*.png`` and
        the error analysis of :func:`marsdust.evaluate.errors.write_error_analysis` (``error_analysis.json``,
        ``error_analysis.md``, ``errors_missed.csv``, ``errors_false_alarms.csv``, two galleries).
    options : EvaluateOptions, optional
        The data, split, thresholds, figures and device (default ``EvaluateOptions()``).

    Returns
    -------
    dict
        The metrics written to ``metrics.json`` (``map25, map50, map75`` box AP fractions, ``segm``,
        breakdowns, ``pr_curves``, ``center_deviation``, ``time_ms_per_map``, ``error_analysis``
        (recall and error counts at score 0.5, :func:`marsdust.evaluate.errors.compact_summary`), ``pixel``
        (:func:`pixel_scores`), ``adaptation`` (the checkpoint's AdaBN record or None), ...).
    """
    options = EvaluateOptions() if options is None else options
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    model = load_model(checkpoint, map_location=options.device)
    data = _evaluation_data(model, checkpoint, options)
    settings = detect_settings(model, options)
    found, timing = _split_detections(model, data, options, settings)
    split = options.split

    # the scores
    metrics = evaluate_detections(found.ground_truth, found.predictions, found.grids, map_ls=found.map_ls,
                                  segm=bool(model.has_masks),
                                  time_ms_per_map=None if timing is None else timing["median_ms"])
    paper_predictions = {k: {"boxes": p["paper_boxes"], "scores": p["scores"]} for k, p in found.predictions.items()}
    metrics["paper_boxes"] = box_map_summary(found.paper_truth, paper_predictions, found.grids)
    metrics["area_agreement"] = area_agreement(found.ground_truth, found.predictions, found.grids)
    deviations = center_deviations(found.ground_truth, found.predictions, found.grids)
    matched = deviations.groupby("map_id").size() if len(deviations) else pd.Series(dtype=int)
    per_map_df = pd.DataFrame(found.per_map)
    per_map_df["n_matched_iou50"] = per_map_df["map_id"].map(matched).fillna(0).astype(int)
    metrics.update({"model_name": model.model_name, "checkpoint": str(checkpoint), "split": split,
                    "split_source": data.split_source, "label_mode": data.label_mode, "n_maps": len(data.rows),
                    "score_threshold": options.score_threshold, "mask_threshold": settings.mask_threshold,
                    "mask_box_scale": _outline_window(model, settings), "timing": timing,
                    "latitudes_deg": list(settings.latitudes_deg),
                    "n_beyond_latitudes": int(per_map_df["n_beyond_latitudes"].sum()),
                    "working_res_deg": float(model.config.map_res_deg)})
    metrics.update(_cloud_scores(model, found))
    metrics["pixel"] = pixel_scores(found, model)
    metrics["adaptation"] = model.checkpoint_extra.get("adaptation")

    # EVAL_DIR: the error analysis (error_analysis.{json,md}, errors_*.csv, galleries), the tables, the figures
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics["error_analysis"] = write_error_analysis(
        MapsToAnalyze(found.ground_truth, found.predictions, found.grids, map_ls=found.map_ls, images=found.images,
                      valid_masks=found.valid_masks, cloud_masks=found.cloudy),
        out_dir, title=f"{model.model_name} on {split} maps")
    write_metrics_json(metrics, out_dir / "metrics.json")
    write_text_atomic(out_dir / "per_map.csv", per_map_df.to_csv(index=False))
    write_text_atomic(out_dir / "deviations.csv", deviations.to_csv(index=False))
    _write_figures(model, found, metrics, deviations, out_dir / "figures", split=split, n_figures=options.n_figures)
    if "cloud" in metrics["classes"] and options.n_figures > 0:
        _write_cloud_and_storm_figure(found, resolve_score_threshold(model, None)[0], out_dir / "figures")
    return metrics
