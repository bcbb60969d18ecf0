"""Tests of marsdust.evaluate.tracking on hand-made tables whose scores are worked out by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from marsdust.evaluate import tracking


def table(rows, columns=("map_id", "lon", "lat", "member_id", "sequence_id")) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns))


# truth: member A on maps m1, m2, m3 (sequence S1); member B on m1, m2 (no sequence)
TRUTH = table([
    ("m1", 0.0, 0.0, "A", "S1"), ("m2", 2.0, 0.0, "A", "S1"), ("m3", 4.0, 0.0, "A", "S1"),
    ("m1", 90.0, 10.0, "B", ""), ("m2", 92.0, 10.0, "B", ""),
])


def test_a_perfect_assignment_scores_one_everywhere():
    scores = tracking.tracking_scores(TRUTH.assign(member_id=["x", "x", "x", "y", "y"]), TRUTH)
    assert scores["instances"]["match_rule"] == "same rows"
    assert scores["links"] == {"predicted": 4, "true": 4, "correct": 4, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert scores["members"]["purity"] == 1.0 and scores["members"]["completeness"] == 1.0
    assert scores["identity"]["idf1"] == 1.0
    assert scores["sequences"]["recall"] == 1.0 and scores["sequences"]["precision"] == 1.0


def test_a_split_member_loses_recall_and_completeness_but_not_precision():
    # A cut after m1: predicted members {A1}, {A2, A3}, {B1, B2}
    predicted = TRUTH.assign(member_id=["p", "q", "q", "r", "r"], sequence_id=["", "", "", "", ""])
    scores = tracking.tracking_scores(predicted, TRUTH)
    links = scores["links"]
    # true links: A has 3 pairs, B 1 -> 4; predicted: q 1 pair, r 1 -> 2, both correct
    assert (links["predicted"], links["true"], links["correct"]) == (2, 4, 2)
    assert links["precision"] == 1.0 and links["recall"] == 0.5 and links["f1"] == pytest.approx(2 / 3)
    assert scores["members"]["purity"] == 1.0
    assert scores["members"]["completeness"] == pytest.approx(4 / 5)  # A keeps 2 of 3, B 2 of 2
    assert scores["members"]["n_split"] == 1 and scores["members"]["n_merged"] == 0
    # IDF1: best one-to-one pairs q-A (2) and r-B (2) -> IDTP 4 of 5 + 5
    assert scores["identity"]["idtp"] == 4 and scores["identity"]["idf1"] == pytest.approx(0.8)
    # no predicted sequence: the true sequence S1 is not recalled; precision undefined
    assert scores["sequences"]["recall"] == 0.0 and scores["sequences"]["precision"] is None


def test_a_merge_loses_precision_and_purity():
    predicted = TRUTH.assign(member_id=["x"] * 5, sequence_id=["T"] * 5)
    scores = tracking.tracking_scores(predicted, TRUTH)
    links = scores["links"]
    # 5 instances on 3 maps: 10 pairs less the 2 same-map pairs (m1, m2) = 8 predicted links
    assert (links["predicted"], links["true"], links["correct"]) == (8, 4, 4)
    assert links["precision"] == 0.5 and links["recall"] == 1.0
    assert scores["members"]["purity"] == pytest.approx(3 / 5) and scores["members"]["completeness"] == 1.0
    assert scores["members"]["n_merged"] == 1
    assert scores["identity"]["idf1"] == pytest.approx(2 * 3 / 10)
    # T holds all of S1 (recalled); S1 holds 3 of T's 5 instances >= 1/2 (correct)
    assert scores["sequences"]["recall"] == 1.0 and scores["sequences"]["precision"] == 1.0


def test_links_between_members_of_one_catalogued_sequence_count_at_sequence_level():
    truth = table([("m1", 0.0, 0.0, "A", "S"), ("m2", 2.0, 0.0, "A", "S"), ("m3", 4.0, 0.0, "C", "S")])
    predicted = truth.assign(member_id=["x", "x", "x"])
    scores = tracking.tracking_scores(predicted, truth)
    assert scores["links"]["precision"] == pytest.approx(1 / 3)
    assert scores["sequence_links"]["precision"] == 1.0 and scores["sequence_links"]["recall"] == 1.0


def test_sequences_on_fewer_maps_than_required_are_not_scored():
    truth = table([("m1", 0.0, 0.0, "A", "S"), ("m2", 2.0, 0.0, "A", "S")])
    scores = tracking.tracking_scores(truth, truth)
    assert scores["sequences"]["n_truth"] == 0 and scores["sequences"]["n_truth_unobservable"] == 1
    assert scores["sequences"]["recall"] is None


def test_detections_are_matched_by_centroid_then_scored_with_misses_and_false_alarms():
    # detections: A found on m1 and m2 (slightly off), A missed on m3, B found on m1 only, one false alarm
    detections = table([
        ("m1", 0.5, 0.2, "d1", ""), ("m2", 2.3, -0.1, "d1", ""),
        ("m1", 90.4, 10.0, "d2", ""), ("m2", -120.0, 40.0, "d3", ""),
    ])
    pairs = tracking.match_instances(detections, TRUTH)
    assert set(pairs["rule"]) == {"center"}
    assert sorted(zip(pairs["pred_row"], pairs["truth_row"])) == [(0, 0), (1, 1), (2, 3)]
    scores = tracking.tracking_scores(detections, TRUTH, pairs=pairs)
    assert scores["instances"]["n_matched"] == 3
    # on the matched instances: one predicted link (d1: A1-A2), one true link (A1-A2): perfect
    assert scores["links"]["precision"] == 1.0 and scores["links"]["recall"] == 1.0
    # identity counts the miss and the false alarm: IDTP 3 of 4 detections and 5 catalogued
    assert scores["identity"]["idf1"] == pytest.approx(6 / 9)


def test_outlines_are_matched_by_iou_and_a_far_detection_is_not_matched():
    square = "POLYGON ((0 0, 10 0, 10 10, 0 10, 0 0))"
    shifted = "POLYGON ((5 0, 15 0, 15 10, 5 10, 5 0))"  # IoU 50 / 150 = 1/3
    far = "POLYGON ((100 0, 110 0, 110 10, 100 10, 100 0))"
    cols = ("map_id", "lon", "lat", "member_id", "sequence_id", "polygon_wkt")
    truth = table([("m1", 5.0, 5.0, "A", "", square)], cols)
    detections = table([("m1", 105.0, 5.0, "x", "", far), ("m1", 10.0, 5.0, "y", "", shifted)], cols)
    pairs = tracking.match_instances(detections, truth)
    assert pairs[["pred_row", "truth_row", "rule"]].values.tolist() == [[1, 0, "iou"]]
    assert pairs["value"].iloc[0] == pytest.approx(1 / 3)
    assert len(tracking.match_instances(detections, truth, min_iou=0.5)) == 0


def test_empty_tables_give_undefined_ratios_not_errors():
    empty = table([])
    scores = tracking.tracking_scores(empty, empty)
    assert scores["links"]["precision"] is None and scores["identity"]["idf1"] is None
    assert scores["members"]["purity"] is None
    assert "n/a" in tracking.format_scores(scores)
    against_truth = tracking.tracking_scores(empty, TRUTH)
    assert against_truth["identity"]["idf1"] == 0.0 and against_truth["sequences"]["recall"] == 0.0


def test_tables_without_needed_columns_are_refused():
    with pytest.raises(ValueError, match="predicted table lacks columns"):
        tracking.tracking_scores(pd.DataFrame({"map_id": ["m1"]}), TRUTH)
