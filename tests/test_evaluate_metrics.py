"""marsdust.evaluate.metrics: the evaluator against hand-computed COCO AP, the breakdown rules, dx/dy across 180°, outputs."""

import json

import numpy as np
import pytest

from marsdust.evaluate.metrics import (
    area_agreement,
    center_deviations,
    coco_map,
    evaluate_detections,
    time_inference,
    write_metrics_json,
)
from marsdust.grid import MapGrid

GRID = MapGrid.moc(0.4)  # 300 x 900


def box_masks(boxes):
    masks = np.zeros((len(boxes), 300, 900), dtype=np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, int)):
        masks[k, y0:y1, x0:x1] = 1
    return masks


def hand_case():
    """2 storms, 3 detections: a hit (0.9), a miss far away (0.8), a hit of IoU 2/3 (0.7)."""
    gt_boxes = np.array([[100, 50, 110, 60], [200, 50, 210, 60]], float)
    pred_boxes = np.array([[100, 50, 110, 60], [500, 200, 510, 210], [202, 50, 212, 60]], float)
    ground_truth = {"r18_040": {"boxes": gt_boxes, "masks": box_masks(gt_boxes), "confidence": np.array([100, 50]),
                                "area_km2": np.array([1e5, 4e5]), "ls": 100.0}}
    predictions = {"r18_040": {"boxes": pred_boxes, "scores": np.array([0.9, 0.8, 0.7]), "masks": box_masks(pred_boxes)}}
    return ground_truth, predictions


# At IoU 0.25 and 0.5 the ranked detections are TP, FP, TP: recall 0.5, 0.5, 1 and precision 1, 1/2, 2/3;
# interpolated precision is 1 for the 51 recall points <= 0.5 and 2/3 for the 50 above: AP = (51 + 50 * 2/3) / 101.
# At IoU 0.75 the third detection (IoU 2/3) is a FP too: precision 1 up to recall 0.5, then 0: AP = 51 / 101.
AP50_BY_HAND = (51 + 50 * 2 / 3) / 101
AP75_BY_HAND = 51 / 101


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_coco_map_matches_hand_computed_ap(backend):
    ground_truth, predictions = hand_case()
    result = coco_map(ground_truth, predictions, GRID, backend=backend)
    assert result["map25"] == pytest.approx(AP50_BY_HAND, abs=1e-12)
    assert result["map50"] == pytest.approx(AP50_BY_HAND, abs=1e-12)
    assert result["map75"] == pytest.approx(AP75_BY_HAND, abs=1e-12)
    assert result["n_gt"] == 2 and result["n_pred"] == 3
    segm = coco_map(ground_truth, predictions, iou_type="segm", backend=backend)  # size from the masks
    assert segm["map50"] == pytest.approx(AP50_BY_HAND, abs=1e-12) and segm["map75"] == pytest.approx(AP75_BY_HAND, abs=1e-12)


def test_detection_across_180_matches_a_storm_across_180():
    ground_truth = {"m": {"boxes": np.array([[885.0, 100, 915, 130]])}}  # runs 15 px past the eastern edge
    predictions = {"m": {"boxes": np.array([[-15.0, 100, 15, 130]]), "scores": np.array([0.9])}}
    assert coco_map(ground_truth, predictions, GRID)["map75"] == pytest.approx(1.0)


def test_no_ground_truth_gives_nan_and_no_predictions_gives_zero():
    empty = {"m": {"boxes": np.zeros((0, 4))}}
    assert np.isnan(coco_map(empty, {}, GRID)["map50"])
    ground_truth, _ = hand_case()
    assert coco_map(ground_truth, {}, GRID)["map50"] == 0.0


def test_confidence_breakdown_ignores_detections_of_other_levels():
    ground_truth, predictions = hand_case()
    metrics = evaluate_detections(ground_truth, predictions, GRID)
    # level 100 keeps storm 0: hit (0.9), FP (0.8), detection on the level-50 storm ignored -> AP 1
    assert metrics["by_confidence"]["100"]["map50"] == pytest.approx(1.0)
    # level 50 keeps storm 1: the hit on storm 0 is ignored; FP (0.8) then TP (0.7) -> precision 1/2 at all recalls
    assert metrics["by_confidence"]["50"]["map50"] == pytest.approx(0.5)
    assert metrics["by_confidence"]["50"]["map75"] == pytest.approx(0.0)  # IoU 2/3 < 0.75
    assert metrics["by_confidence"]["75"]["map50"] != metrics["by_confidence"]["75"]["map50"]  # NaN: no such storms
    assert metrics["by_season"]["Ls090-180"]["map50"] == pytest.approx(AP50_BY_HAND)
    assert metrics["by_season"]["Ls000-090"]["n_maps"] == 0
    sizes = evaluate_detections(ground_truth, predictions, GRID, size_bins_km2=[2e5])["by_size"]
    assert sizes["bin_edges_km2"] == [2e5]
    assert sizes["0-2e+05 km2"]["map50"] == pytest.approx(1.0) and sizes[">=2e+05 km2"]["map50"] == pytest.approx(0.5)
    assert metrics["segm"]["map50"] == pytest.approx(AP50_BY_HAND)
    assert len(metrics["pr_curves"]["precision"]["0.5"]) == 101


def test_center_deviation_wraps_at_180():
    # storm box centred at x = 905 (5 px past the eastern edge = column 5); detection centred at x = 10, y + 1
    ground_truth = {"m": {"boxes": np.array([[890.0, 100, 920, 130]]), "confidence": np.array([75])}}
    predictions = {"m": {"boxes": np.array([[-5.0, 101, 25, 131], [600, 0, 630, 30]]), "scores": np.array([0.9, 0.95])}}
    deviations = center_deviations(ground_truth, predictions, GRID, match_iou=0.5)
    assert len(deviations) == 1
    row = deviations.iloc[0]
    assert row["dx_px"] == pytest.approx(5.0) and row["dy_px"] == pytest.approx(1.0)
    assert row["dlon_deg"] == pytest.approx(2.0) and row["dlat_deg"] == pytest.approx(-0.4)
    assert row["pred_index"] == 0 and row["iou"] == pytest.approx(725 / 1075)


def test_metrics_json_is_atomic_with_fractions_and_nulls(tmp_path):
    ground_truth, predictions = hand_case()
    metrics = evaluate_detections(ground_truth, predictions, GRID, time_ms_per_map=12.5)
    path = write_metrics_json(metrics, tmp_path / "eval" / "metrics.json")
    loaded = json.loads(path.read_text())
    assert loaded["map50"] == pytest.approx(AP50_BY_HAND) and loaded["by_confidence"]["75"]["map50"] is None
    assert loaded["time_ms_per_map"] == 12.5 and [p.name for p in path.parent.iterdir()] == ["metrics.json"]
    with pytest.raises(ValueError, match="fraction"):
        write_metrics_json({"map25": 64.1, "map50": 0.5, "map75": 0.3}, tmp_path / "bad.json")


def test_time_inference_times_only_the_calls_after_warmup_in_milliseconds():
    """Warm-up calls sleep 300 ms, timed ones 30 ms: the median is the timed calls' (≥ 30 ms, sleep's floor),
    far below a warm-up call's; ``n_timed`` counts the inputs after the warm-up, here 3 of 5."""
    import time

    calls = []

    def predict(seconds):
        calls.append(seconds)
        time.sleep(seconds)

    inputs = [0.3, 0.3, 0.03, 0.031, 0.032]
    result = time_inference(predict, inputs, warmup=2)
    assert calls == inputs  # every input once, in order
    assert result["n_timed"] == 3 and result["warmup"] == 2
    assert 30.0 <= result["median_ms"] < 300.0
    with pytest.raises(ValueError, match="more than warmup=2 inputs, got 2"):
        time_inference(predict, [0.0, 0.0], warmup=2)


def test_area_agreement_pairs_storms_and_reports_ratios():
    grid = MapGrid(60.0, -60.0, 0.8)
    gt = {"m": {"boxes": np.array([[10, 10, 30, 30], [100, 50, 120, 70]], float), "area_km2": np.array([1e6, 2e6])}}
    pred = {"m": {"boxes": np.array([[11, 10, 31, 30], [300, 50, 320, 70]], float), "scores": np.array([0.9, 0.9]),
                  "area_km2": np.array([1.1e6, 5e6])}}
    result = area_agreement(gt, pred, {"m": grid})
    assert result["n_matched"] == 1 and result["median_ratio"] == pytest.approx(1.1)
    assert result["within_25pct"] == 1.0
    assert area_agreement(gt, {"m": {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "area_km2": np.zeros(0)}},
                          {"m": grid})["n_matched"] == 0


def test_mask_map_ignores_storms_whose_mask_is_no_target():
    """Storm 1 known only by a box (``mask_scored`` False): the mask mAP neither counts it nor the
    detection on it, while the box mAP still scores it."""
    ground_truth, predictions = hand_case()
    ground_truth["r18_040"]["mask_scored"] = np.array([True, False])
    metrics = evaluate_detections(ground_truth, predictions, GRID)
    assert metrics["map50"] == pytest.approx(AP50_BY_HAND)  # boxes: unchanged
    # masks: storm 0 only; hit (0.9), FP far away (0.8), the detection on storm 1 ignored -> AP 1
    assert metrics["segm"]["map50"] == pytest.approx(1.0) and metrics["segm"]["n_gt"] == 1


def test_pixel_overlap_pools_over_maps_and_ignores_missing_pixels():
    from marsdust.evaluate.metrics import pixel_overlap

    valid = np.ones((4, 10), bool)
    valid[:, 8:] = False  # two missing columns
    truth_a = np.zeros((4, 10), bool)
    truth_a[0:2, 0:4] = True  # 8 px
    pred_a = np.zeros((2, 4, 10), bool)
    pred_a[0, 0:2, 2:6] = True  # 8 px, 4 shared with the truth
    pred_a[1, 3, 8:] = True  # on missing pixels only: not counted
    truth_b = np.zeros((4, 10), bool)
    truth_b[3, 0:2] = True  # 2 px, nothing detected
    truth_c = np.zeros((4, 10), bool)  # neither truth nor prediction: no per-map value
    result = pixel_overlap({"a": truth_a, "b": truth_b, "c": truth_c}, {"a": pred_a},
                           {"a": valid, "b": valid, "c": valid})
    # pooled: intersection 4, union 12 + 2 = 14; |P| + |T| = 8 + 10
    assert result["iou"] == pytest.approx(4 / 14)
    assert result["dice"] == pytest.approx(8 / 18)
    assert result["iou_per_map_mean"] == pytest.approx((4 / 12 + 0) / 2)
    assert result["dice_per_map_mean"] == pytest.approx((8 / 16 + 0) / 2)
    assert result["n_pixels"] == 3 * 32 and result["n_maps"] == 3
    assert result["n_true_pixels"] == 10 and result["n_predicted_pixels"] == 8
    empty = pixel_overlap({"c": truth_c}, {}, {"c": valid})
    assert np.isnan(empty["iou"]) and np.isnan(empty["dice"]) and np.isnan(empty["iou_per_map_mean"])
    with pytest.raises(ValueError, match="map a: no valid mask"):
        pixel_overlap({"a": truth_a}, {}, {})
    with pytest.raises(ValueError, match="map a: .* share one grid"):
        pixel_overlap({"a": truth_a}, {"a": np.ones((3, 10), bool)}, {"a": valid})


def test_the_union_splits_into_overlap_storms_missed_false_alarms_and_edges_wrapping_at_180():
    from marsdust.evaluate.metrics import UNION_SHARES, pixel_overlap, union_shares_text

    valid = np.ones((6, 12), bool)
    truth = np.zeros((6, 12), bool)
    truth[0:2, 0:4] = True  # storm 1 (8 px), found too narrow: 4 px of it detected
    truth[4:6, 10:12] = truth[4:6, 0:1] = True  # storm 2 across 180° (6 px): its western part is touched
    predicted = np.zeros((6, 12), bool)
    predicted[0:2, 2:4] = predicted[0:2, 4:6] = True  # 4 px on storm 1 and 4 px beyond it
    predicted[4, 0] = True  # 1 px of storm 2, in its western column
    predicted[3, 7:9] = True  # a false alarm (2 px)
    other_truth = np.zeros((6, 12), bool)
    other_truth[2:4, 0:3] = True  # a map whose one storm (6 px) no detection touches
    result = pixel_overlap({"a": truth, "b": other_truth}, {"a": predicted}, {"a": valid, "b": valid})
    shares = result["union_shares"]
    assert list(shares) == list(UNION_SHARES)
    # union: map a's 14 true pixels, 2 of false alarm and 4 beyond storm 1; map b's 6. Overlap 4 + 1
    assert result["iou"] == pytest.approx(5 / 26) and shares["overlap"] == pytest.approx(5 / 26)
    assert shares["missed_regions"] == pytest.approx(6 / 26)  # map b's storm; storm 2 counts as found (one region)
    assert shares["false_alarm_regions"] == pytest.approx(2 / 26)
    assert shares["edge_missed"] == pytest.approx((4 + 5) / 26) and shares["edge_extra"] == pytest.approx(4 / 26)
    assert sum(shares.values()) == pytest.approx(1.0)
    text = union_shares_text(shares)
    assert text.startswith("Of the pixels either side calls dust, 19.2 % agree, 23.1 % lie in catalogued storms")
    assert union_shares_text(pixel_overlap({"c": np.zeros((6, 12), bool)}, {}, {"c": valid})["union_shares"]) == ""


# --- the outline threshold: pixel IoU at every score threshold from one map of scores ---------------------------
def test_score_map_holds_the_highest_score_covering_each_pixel():
    from marsdust.evaluate.metrics import score_map

    masks = np.zeros((2, 1, 4, 6), np.float32)
    masks[0, 0, :, :3] = 0.9  # score 0.8 over the left half
    masks[1, 0, 1:3, 2:5] = 0.7  # score 0.3, overlapping it in column 2
    masks[1, 0, 0, 5] = 0.4  # under the mask threshold: not covered
    scores_map = score_map(masks, [0.8, 0.3])
    assert scores_map[0, 0] == pytest.approx(0.8) and scores_map[1, 2] == pytest.approx(0.8)
    assert scores_map[1, 3] == pytest.approx(0.3) and scores_map[0, 5] == 0.0
    with pytest.raises(ValueError, match="do not fit 1 scores"):
        score_map(masks, [0.8])


def test_pixel_counts_and_the_best_pixel_threshold_on_a_ladder():
    from marsdust.evaluate.metrics import best_pixel_threshold, pixel_counts_by_threshold

    truth = np.zeros((10, 10), bool)
    truth[:, :4] = True  # 40 true pixels
    scores_map = np.zeros((10, 10), np.float32)
    scores_map[:, :3] = 0.9  # 30 of them at 0.9
    scores_map[:, 3:6] = 0.4  # the last 10 and 20 false ones at 0.4
    valid = np.ones((10, 10), bool)
    valid[:, 9] = False  # never counted
    counts = pixel_counts_by_threshold(scores_map, truth, valid, [0.3, 0.5, 0.95])
    assert counts.tolist() == [[40, 60, 40, 60], [30, 40, 40, 30], [0, 40, 40, 0]]
    assert best_pixel_threshold(counts, [0.3, 0.5, 0.95]) == (0.5, pytest.approx(0.75))
    tie = np.array([[30, 40, 40, 30], [30, 40, 40, 30]])
    assert best_pixel_threshold(tie, [0.3, 0.5])[0] == 0.5  # the higher threshold wins a tie
    assert best_pixel_threshold(np.zeros((2, 4), int), [0.3, 0.5])[0] is None  # nothing true, nothing found
    with pytest.raises(ValueError, match="must share one grid"):
        pixel_counts_by_threshold(scores_map, truth[:5], valid, [0.5])
