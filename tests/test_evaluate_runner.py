"""marsdust.evaluate.runner: the pixel scores of evaluate_checkpoint (which maps have outline truth; perfect
outlines score 1)."""

import pandas as pd
import pytest

from catalogue_oracle import catalogue_detect_map

from marsdust.evaluate import EvaluateOptions, evaluate_checkpoint
from marsdust.evaluate.runner import outline_truth, outlined_span
from marsdust.grid import MapGrid
from marsdust.mdad_format import mars_time_sols
from marsdust.models import TINY_DETECTOR, build_model, save_checkpoint

SQUARE = "POLYGON((0 0, 10 0, 10 10, 0 10, 0 0))"


def storms(rows):
    return pd.DataFrame(rows, columns=["map_id", "mars_year", "ls", "lon", "lat", "area_km2", "polygon_wkt"])


def test_outline_truth_only_where_every_storm_is_outlined_within_the_outlined_span():
    table = storms([["a", 27, 100.0, 50.0, 0.0, 3e5, None],  # a v1.0 year: no outline
                    ["b", 29, 10.0, 5.0, 5.0, 3e5, SQUARE], ["c", 30, 200.0, 5.0, 5.0, 3e5, SQUARE],
                    ["c", 30, 200.0, 90.0, 5.0, 3e5, None]])
    span = outlined_span(table)
    assert span == (pytest.approx(float(mars_time_sols(29, 10.0))), pytest.approx(float(mars_time_sols(30, 200.0))))
    assert outlined_span(table.assign(polygon_wkt=None)) is None
    grid = MapGrid.moc(1.0)
    truth = outline_truth(table[table["map_id"] == "b"], grid)
    assert truth.shape == grid.shape and 80 <= truth.sum() <= 121  # the 10° x 10° square
    assert outline_truth(table[table["map_id"] == "c"], grid) is None  # one storm without an outline
    assert not outline_truth(table.iloc[0:0], grid).any()  # no storm: empty truth


def test_catalogue_outlines_returned_as_detections_score_pixel_iou_one(ci_data, monkeypatch, tmp_path):
    from marsdust.evaluate import runner
    from marsdust.mdad import read_catalog

    catalog = read_catalog(ci_data / "mdad")
    oracle_detect_map = catalogue_detect_map(catalog, "outline", clip_to_observed=True)

    monkeypatch.setattr(runner, "detect_map", oracle_detect_map)
    checkpoint = save_checkpoint(build_model("dustrcnn", **{**TINY_DETECTOR, "map_res_deg": 0.8}),
                                 tmp_path / "model.ckpt", score_threshold=0.5)
    split = tmp_path / "split.csv"
    with_storms = sorted(set(catalog.loc[catalog["polygon_wkt"].notna(), "map_id"]))[:3]
    pd.DataFrame({"map_id": with_storms, "split": "test"}).to_csv(split, index=False)
    metrics = evaluate_checkpoint(checkpoint, tmp_path / "eval", EvaluateOptions(
        data=str(ci_data), split_file=str(split), n_figures=0, n_timed=0, progress=False))
    pixel = metrics["pixel"]
    assert pixel["threshold"] == 0.5 and pixel["n_maps"] == 3 and pixel["n_pixels"] > 0
    assert pixel["iou"] == pytest.approx(1.0) and pixel["dice"] == pytest.approx(1.0)
    assert pixel["iou_per_map_mean"] == pytest.approx(1.0)
    assert pixel["union_shares"] == pytest.approx({"overlap": 1.0, "missed_regions": 0.0, "false_alarm_regions": 0.0,
                                                   "edge_missed": 0.0, "edge_extra": 0.0})
    bands = pixel["by_latitude"]  # MOC maps: every pixel in 60S-60N, none poleward
    assert bands["60S-60N"]["iou"] == pytest.approx(1.0) and bands["60S-60N"]["n_pixels"] == pixel["n_pixels"]
    assert bands["90S-60S"]["n_pixels"] == bands["60N-90N"]["n_pixels"] == 0
    assert metrics["adaptation"] is None
    assert metrics["latitudes_deg"] == [-90.0, 90.0] and metrics["n_beyond_latitudes"] == 0  # no record: all kept


def test_pixel_scores_at_each_score_threshold_keep_only_the_masks_scoring_at_least_it():
    import numpy as np

    from marsdust.evaluate.matching import SCORE_THRESHOLDS
    from marsdust.evaluate.runner import _SplitDetections, pixel_scores

    grid = MapGrid.moc(4.0)  # 30 x 90
    truth = np.zeros(grid.shape, bool)
    truth[5:15, 10:20] = True
    near, far = np.zeros_like(truth), np.zeros_like(truth)
    near[5:15, 10:20] = True  # the storm, found at score 0.9
    far[20:25, 50:60] = True  # a false alarm at score 0.3
    found = _SplitDetections(
        predictions={"m": {"masks": np.stack([near, far]), "scores": np.array([0.9, 0.3])}},
        grids={"m": grid}, valid_masks={"m": np.ones(grid.shape, bool)}, outline_truth={"m": truth})
    model = build_model("dustrcnn", **TINY_DETECTOR)
    model.checkpoint_extra = {"score_threshold": 0.5}
    pixel = pixel_scores(found, model)
    assert pixel["threshold"] == 0.5 and pixel["iou"] == pytest.approx(1.0)
    assert pixel["threshold_source"].startswith("the detection threshold")
    ladder = {row["score_threshold"]: row for row in pixel["by_score_threshold"]}
    assert sorted(ladder) == sorted(SCORE_THRESHOLDS)
    assert ladder[0.3]["iou"] == pytest.approx(100 / 150) and ladder[0.3]["n_predicted_pixels"] == 150
    assert ladder[0.35]["iou"] == ladder[0.9]["iou"] == pytest.approx(1.0)
    assert ladder[0.95]["n_predicted_pixels"] == 0 and ladder[0.95]["iou"] == 0.0


def test_pixel_scores_use_the_outline_threshold_the_checkpoint_stores_and_report_the_detection_ones_beside():
    import numpy as np

    from marsdust.evaluate.runner import _SplitDetections, pixel_scores

    grid = MapGrid.moc(4.0)
    truth = np.zeros(grid.shape, bool)
    truth[5:15, 10:20] = True
    core, arm = np.zeros_like(truth), np.zeros_like(truth)
    core[5:15, 10:15] = True  # half the storm at score 0.9, its other half at 0.3
    arm[5:15, 15:20] = True
    found = _SplitDetections(
        predictions={"m": {"masks": np.stack([core, arm]), "scores": np.array([0.9, 0.3])}},
        grids={"m": grid}, valid_masks={"m": np.ones(grid.shape, bool)}, outline_truth={"m": truth})
    model = build_model("dustrcnn", **TINY_DETECTOR)
    model.checkpoint_extra = {"score_threshold": 0.5, "outline_score_threshold": 0.3}
    pixel = pixel_scores(found, model)
    assert pixel["threshold"] == 0.3 and pixel["iou"] == pytest.approx(1.0)
    assert pixel["threshold_source"] == "chosen on validation maps (best pixel IoU)"
    assert pixel["at_detection_threshold"] == {"threshold": 0.5, "iou": pytest.approx(0.5),
                                               "dice": pytest.approx(2 / 3)}
