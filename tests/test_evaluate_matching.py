"""marsdust.evaluate.matching: box IoU across 180°, outline IoU, the greedy pairing and the threshold ladder,
on hand-made boxes and outlines whose IoUs are worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from marsdust.evaluate.matching import (
    SCORE_THRESHOLDS,
    detection_storm_iou,
    greedy_pairs,
    has_outline,
    outline_iou,
    outline_matches,
    pairs_at_threshold,
    threshold_ladder,
    wrapped_iou,
)

WIDTH = 900


def test_a_box_across_180_meets_its_copy_on_the_other_side():
    storm = np.array([[885.0, 100, 915, 130]])  # runs 15 px past the eastern edge
    detection = np.array([[-15.0, 100, 15, 130], [-10.0, 100, 20, 130]])  # the same box seen from the west edge
    assert wrapped_iou(detection, storm, WIDTH)[:, 0] == pytest.approx([1.0, 25 / 35])
    assert wrapped_iou(detection, storm, 10_000)[:, 0] == pytest.approx([0.0, 0.0])  # no wrap on a wider map


def test_greedy_pairs_take_the_highest_iou_first_and_each_box_once():
    iou = np.array([[0.9, 0.6],   # detection 0: best with storm 0
                    [0.8, 0.7],   # detection 1: storm 0 taken, so storm 1
                    [0.55, 0.4]])  # detection 2: nothing left at >= 0.5
    assert greedy_pairs(iou, 0.5) == [(0, 0), (1, 1)]
    assert greedy_pairs(iou, 0.75) == [(0, 0)]
    assert greedy_pairs(np.array([[0.6, 0.6], [0.6, 0.6]]), 0.5) == [(0, 0), (1, 1)]  # ties: row-major order
    assert greedy_pairs(np.zeros((0, 3)), 0.5) == []


def test_pairs_at_a_threshold_and_up_the_ladder():
    gt = {"boxes": np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float)}
    prediction = {"boxes": np.array([[0, 0, 10, 10], [20, 0, 30, 10], [1, 0, 11, 10]], float),
                  "scores": np.array([0.3, 0.8, 0.6])}
    iou, scores = detection_storm_iou(gt, prediction, WIDTH, "m")
    assert iou.shape == (3, 2) and iou[2, 0] == pytest.approx(9 / 11)
    assert pairs_at_threshold(iou, scores, 0.5) == {1: 1, 0: 2}  # storm 0 goes to detection 2 once 0 is below
    assert pairs_at_threshold(iou, scores, 0.2) == {0: 0, 1: 1}
    ladder = threshold_ladder(iou, scores, (0.7, 0.2, 0.9))
    assert [t for t, _, _ in ladder] == [0.2, 0.7, 0.9]
    assert [kept.tolist() for _, kept, _ in ladder] == [[0, 1, 2], [1], []]
    assert [pairs for _, _, pairs in ladder] == [{0: 0, 1: 1}, {1: 1}, {}]
    assert SCORE_THRESHOLDS[0] == 0.05 and SCORE_THRESHOLDS[-1] == 0.95 and len(SCORE_THRESHOLDS) == 19
    with pytest.raises(ValueError, match="map m: 3 predicted boxes but 2 scores"):
        detection_storm_iou(gt, {**prediction, "scores": np.array([0.3, 0.8])}, WIDTH, "m")


SQUARE = "POLYGON ((0 0, 2 0, 2 2, 0 2, 0 0))"
HALF_OVER = "POLYGON ((1 0, 3 0, 3 2, 1 2, 1 0))"  # overlaps SQUARE by half: IoU 2 / 6
ACROSS_180 = "MULTIPOLYGON (((178 0, 180 0, 180 2, 178 2, 178 0)), ((-180 0, -178 0, -178 2, -180 2, -180 0)))"
EAST_OF_180 = "POLYGON ((-180 0, -178 0, -178 2, -180 2, -180 0))"  # the western half of ACROSS_180: IoU 4 / 8


def test_outline_iou_in_lon_lat_degrees_and_zero_without_an_outline():
    iou = outline_iou([SQUARE, ACROSS_180, None], [HALF_OVER, EAST_OF_180, "  ", float("nan")])
    assert iou == pytest.approx(np.array([[1 / 3, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 0, 0]]))
    assert has_outline([SQUARE, None, float("nan"), "", " "]).tolist() == [True, False, False, False, False]
    assert outline_iou([], [SQUARE]).shape == (0, 1)


def test_outline_matches_say_which_storms_were_found_and_which_detections_found_one():
    catalog = pd.DataFrame({"polygon_wkt": [SQUARE, ACROSS_180, None]})
    detections = pd.DataFrame({"polygon_wkt": [EAST_OF_180, SQUARE, HALF_OVER]})
    found, hit = outline_matches(catalog, detections)
    assert found.tolist() == [True, True, False] and hit.tolist() == [True, True, False]  # HALF_OVER: IoU 1/3
    found, hit = outline_matches(catalog, detections, min_iou=0.6)
    assert found.tolist() == [True, False, False] and hit.tolist() == [False, True, False]
    found, hit = outline_matches(catalog, pd.DataFrame({"lon": [0.0]}))  # no outline column: nothing matches
    assert not found.any() and hit.tolist() == [False]
