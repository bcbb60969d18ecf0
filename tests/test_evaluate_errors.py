"""marsdust.evaluate.errors: the error analysis on hand-made maps whose every storm and detection has a known category."""

import json

import numpy as np
import pandas as pd
import pytest

from marsdust.evaluate.errors import (
    MapsToAnalyze,
    analyze_errors,
    box_geometry,
    distance_bin_of,
    error_tables,
    gap_distance_deg,
    lat_band_of,
    write_error_analysis,
)
from marsdust.grid import MapGrid

GRID = MapGrid.moc(0.4)  # 300 x 900, 0.4° pixels
BASE_RGB = (0.5, 0.4, 0.2)  # blue/red 0.4
CLOUD_BOX = (700, 200, 730, 230)
BRIGHT_BOX = (800, 30, 830, 60)
DARK_GREY_BOX = (500, 200, 530, 230)
GAP_COLUMNS = slice(450, 470)


def paint(rgb, box, colour):
    x0, y0, x1, y1 = box
    rgb[y0:y1, x0:x1] = colour


def hand_case():
    """Map m1 (Ls 100): storms A found, B mislocalized, C across 180° missed, E found only at score 0.3,
    F across 180° found by a detection on the other side; false alarms: a duplicate on A, the
    mislocalized box on B, one in a data gap, one on a blue (cloud) patch, one on a bright patch of
    the map's colour, one on plain ground, one on dark grey ground. Map m2 (Ls 200, no image): storms G and H overlap, one
    detection covers both and is paired with G. Map m3 holds nothing."""
    storms_m1 = np.array([[100, 100, 130, 130],   # A
                          [300, 100, 330, 130],   # B
                          [890, 150, 920, 180],   # C: runs 20 px past the eastern edge
                          [600, 50, 630, 80],     # E
                          [-10, 250, 20, 280]], float)  # F: starts 10 px west of 180°W
    detections_m1 = np.array([[100, 100, 130, 130],  # 0.9 on A
                              [102, 100, 132, 130],  # 0.8 duplicate of A
                              [315, 100, 345, 130],  # 0.7 IoU 1/3 with B
                              [600, 50, 630, 80],    # 0.3 on E, below the threshold
                              [890, 250, 920, 280],  # 0.9 on F, the copy across 180°
                              [448, 200, 472, 224],  # 0.85 on the data gap
                              CLOUD_BOX,             # 0.95 cloud
                              BRIGHT_BOX,            # 0.6 bright surface
                              [200, 250, 230, 280],  # 0.55 background
                              DARK_GREY_BOX], float)  # 0.52 background: greyer than the map but dark, not a cloud
    rgb = np.empty((*GRID.shape, 3))
    rgb[:] = BASE_RGB
    paint(rgb, CLOUD_BOX, (0.5, 0.45, 0.45))  # blue/red 0.9
    paint(rgb, BRIGHT_BOX, (0.9, 0.72, 0.36))  # same blue/red as the map, brighter red
    paint(rgb, DARK_GREY_BOX, (0.2, 0.15, 0.15))  # blue/red 0.75, but blue below the map's
    valid = np.ones(GRID.shape, bool)
    valid[:, GAP_COLUMNS] = False
    rgb[~valid] = 0.0
    ground_truth = {
        "m1": {"boxes": storms_m1, "confidence": np.array([100, 75, 100, 50, 75]),
               "area_km2": np.array([1e5, 2e5, 9e5, 3e5, 4e5])},
        "m2": {"boxes": np.array([[100, 100, 130, 130], [104, 100, 134, 130]], float),
               "confidence": np.array([100, 100]), "area_km2": np.array([5e5, 6e5])},
        "m3": {"boxes": np.zeros((0, 4)), "confidence": np.zeros(0), "area_km2": np.zeros(0)},  # no storms, no detections
    }
    predictions = {
        "m1": {"boxes": detections_m1, "scores": np.array([0.9, 0.8, 0.7, 0.3, 0.9, 0.85, 0.95, 0.6, 0.55, 0.52])},
        "m2": {"boxes": np.array([[102, 100, 132, 130]], float), "scores": np.array([0.9])},
    }
    return ground_truth, predictions, {"m1": 100.0, "m2": 200.0, "m3": 300.0}, {"m1": rgb, "m2": None}, {"m1": valid}


def hand_tables():
    ground_truth, predictions, map_ls, images, valid = hand_case()
    return error_tables(ground_truth, predictions, GRID, map_ls=map_ls, images=images, valid_masks=valid)


def test_every_storm_gets_its_known_outcome():
    storms, _ = hand_tables()
    m1 = storms[storms["map_id"] == "m1"].set_index("gt_index")
    assert m1["found"].tolist() == [True, False, False, False, True]
    assert m1["found_any_score"].tolist() == [True, False, False, True, True]
    assert m1["category"].fillna("found").tolist() == ["found", "localization", "not_detected", "low_score", "found"]
    assert m1.loc[1, "best_iou"] == pytest.approx(1 / 3)
    assert m1.loc[3, "best_score_at_match_iou"] == pytest.approx(0.3)
    m2 = storms[storms["map_id"] == "m2"]
    assert m2["found"].tolist() == [True, False] and m2["category"].tolist()[1] == "merged"
    assert storms["found"].dtype == bool and len(storms) == 7  # m3 adds no rows


def test_storms_at_the_seam_the_edge_and_near_the_gap_have_the_right_distances():
    storms, _ = hand_tables()
    m1 = storms[storms["map_id"] == "m1"].set_index("gt_index")
    assert m1.loc[2, "seam_distance_deg"] == 0.0 and m1.loc[2, "crosses_seam"]
    assert m1.loc[4, "crosses_seam"] and m1.loc[4, "lon_deg"] == pytest.approx(-180 + 5 * 0.4)
    assert m1.loc[0, "seam_distance_deg"] == pytest.approx(100 * 0.4)
    assert m1.loc[3, "edge_distance_deg"] == pytest.approx(50 * 0.4)  # 50 rows below the northern edge
    assert m1.loc[1, "gap_distance_deg"] == pytest.approx((450 - 329) * 0.4)  # last box column 329 -> gap at 450
    assert m1.loc[0, "lat_band"] == "0-30N" and m1.loc[0, "lat_deg"] == pytest.approx(60 - 115 * 0.4)
    assert np.isnan(storms.loc[storms["map_id"] == "m2", "gap_distance_deg"]).all()  # no valid mask


def test_each_false_alarm_gets_its_known_category():
    _, detections = hand_tables()
    m1 = detections[detections["map_id"] == "m1"].set_index("pred_index")
    assert m1["false_alarm"].tolist() == [False, True, True, False, False, True, True, True, True, True]
    expected = {1: "duplicate", 2: "localization", 5: "seam_or_gap", 6: "cloud", 7: "bright_surface", 8: "background",
                9: "background"}
    assert m1["category"].dropna().to_dict() == expected
    assert m1.loc[4, "matched_gt_index"] == 4  # found across 180°
    assert m1.loc[5, "near_gap_fraction"] == 1.0 and m1.loc[6, "blue_red_vs_map"] == pytest.approx(0.9 / 0.4)
    assert m1.loc[8, "red_percentile"] < 75 < m1.loc[7, "red_percentile"]
    assert m1.loc[9, "blue_red_vs_map"] == pytest.approx(0.75 / 0.4) and m1.loc[9, "blue_percentile"] < 1
    assert not detections.loc[detections["map_id"] == "m2", "false_alarm"].any()


def test_a_box_across_180_is_a_seam_false_alarm_without_a_valid_mask():
    ground_truth = {"m": {"boxes": np.zeros((0, 4))}}
    predictions = {"m": {"boxes": np.array([[880.0, 100, 910, 130], [400, 100, 430, 130]]), "scores": np.array([0.9, 0.9])}}
    _, detections = error_tables(ground_truth, predictions, GRID)
    assert detections["category"].tolist() == ["seam_or_gap", "background"]


def test_recall_breakdowns_and_category_counts():
    ground_truth, predictions, map_ls, images, valid = hand_case()
    analysis = analyze_errors(ground_truth, predictions, GRID, map_ls=map_ls, images=images, valid_masks=valid,
                              size_bins_km2=[2.5e5])
    recall = analysis["recall"]
    assert recall["all"]["n_storms"] == 7 and recall["all"]["recall"] == pytest.approx(3 / 7)
    assert recall["all"]["recall_any_score"] == pytest.approx(4 / 7)
    assert recall["by_season"]["Ls090-180"]["recall"] == pytest.approx(2 / 5)
    assert recall["by_season"]["Ls180-270"]["recall"] == pytest.approx(1 / 2)
    assert np.isnan(recall["by_season"]["Ls000-090"]["recall"])
    assert recall["by_seam_distance"]["0 (touching)"] == {"n_storms": 2, "n_found": 1, "recall": 0.5,
                                                          "n_found_any_score": 1, "recall_any_score": 0.5}
    assert recall["by_size"]["0-2.5e+05 km2"]["n_storms"] == 2  # A (found) and B (missed)
    assert recall["by_size"]["0-2.5e+05 km2"]["recall"] == pytest.approx(0.5)
    assert recall["by_confidence"]["50"]["recall_any_score"] == 1.0 and recall["by_confidence"]["50"]["recall"] == 0.0
    assert analysis["missed"]["counts"] == {"low_score": 1, "merged": 1, "localization": 1, "not_detected": 1}
    assert analysis["false_alarms"]["counts"] == {"duplicate": 1, "localization": 1, "seam_or_gap": 1, "cloud": 1,
                                                  "bright_surface": 1, "background": 2}
    assert analysis["false_alarms"]["fractions"]["cloud"] == pytest.approx(1 / 7)
    sweep = pd.DataFrame(analysis["score_sweep"]).set_index("score_threshold")
    assert sweep.loc[0.5, "n_true"] == 3 and sweep.loc[0.3, "n_true"] == 4 and sweep.loc[0.9, "n_true"] == 3  # A, F, G
    assert sweep.loc[0.9, "n_detections"] == 4 and sweep.loc[0.5, "n_detections"] == 10
    assert sweep.loc[0.5, "precision"] == pytest.approx(3 / 10)


def test_write_error_analysis_writes_tables_report_and_galleries(tmp_path):
    ground_truth, predictions, map_ls, images, valid = hand_case()
    maps = MapsToAnalyze(ground_truth, predictions, GRID, map_ls=map_ls, images=images, valid_masks=valid)
    summary = write_error_analysis(maps, tmp_path, n_gallery=4, title="hand case")
    assert summary["recall"] == pytest.approx(3 / 7) and summary["n_false_alarms"] == 7
    saved = json.loads((tmp_path / "error_analysis.json").read_text())
    assert saved["false_alarms"]["counts"]["seam_or_gap"] == 1
    assert saved["recall"]["by_season"]["Ls000-090"]["recall"] is None  # NaN -> null
    missed = pd.read_csv(tmp_path / "errors_missed.csv")
    assert len(missed) == 4 and missed["confidence"].iloc[0] == 100  # most confident first
    false_alarms = pd.read_csv(tmp_path / "errors_false_alarms.csv")
    assert false_alarms["score"].tolist() == sorted(false_alarms["score"], reverse=True)
    assert false_alarms["category"].iloc[0] == "cloud" and len(false_alarms) == 7
    assert "| cloud | 1 | 14.3 |" in (tmp_path / "error_analysis.md").read_text()
    for name in ("worst_misses.png", "worst_false_alarms.png"):
        png = (tmp_path / "figures" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_helpers_wrap_and_bin():
    valid = np.ones((5, 20), bool)
    valid[2, 0] = False
    distance = gap_distance_deg(valid, 0.5)
    assert distance[2, 19] == pytest.approx(0.5) and distance[2, 0] == 0.0  # wraps across the seam
    assert np.isinf(gap_distance_deg(np.ones((3, 4), bool), 1.0)).all()
    assert lat_band_of([-45.0, -0.1, 0.0, 59.9]).tolist() == ["60S-30S", "30S-0", "0-30N", "30N-60N"]
    assert distance_bin_of([0.0, 0.2, 5.0, 14.0, np.inf, np.nan]).tolist() == [
        "0 (touching)", "0-5 deg", "0-5 deg", "5-15 deg", ">15 deg", None]
    geometry = box_geometry(np.array([[895.0, 0, 905, 10]]), GRID)  # centre column 900 -> 0
    assert geometry["crosses_seam"].iloc[0] and geometry["edge_distance_deg"].iloc[0] == 0.0
    assert geometry["lon_deg"].iloc[0] == pytest.approx(-180.0)


def test_images_of_the_wrong_shape_are_refused():
    ground_truth, predictions, map_ls, images, valid = hand_case()
    with pytest.raises(ValueError, match=r"images\['m1'\] has shape \(10, 10\)"):
        error_tables(ground_truth, predictions, GRID, images={"m1": np.zeros((10, 10, 3))})


def test_error_analysis_calls_a_false_alarm_cloud_by_the_cloud_mask_where_the_map_has_one():
    grid = MapGrid.moc(1.6)
    gt = {"boxes": np.array([[100, 40, 120, 50]], float)}
    prediction = {"boxes": np.array([[10, 10, 30, 20], [60, 40, 70, 50]], float), "scores": np.array([0.9, 0.8])}
    cloudy = np.zeros(grid.shape, bool)
    cloudy[10:20, 10:30] = True  # the first false alarm lies on a cloud, the second does not
    _, with_mask = error_tables({"a": gt}, {"a": prediction}, {"a": grid}, cloud_masks={"a": cloudy})
    _, without = error_tables({"a": gt}, {"a": prediction}, {"a": grid})
    assert with_mask["category"].tolist() == ["cloud", "background"]
    assert with_mask["cloudy_fraction"].tolist() == [1.0, 0.0]
    assert without["category"].tolist() == ["background", "background"] and "cloudy_fraction" not in without
