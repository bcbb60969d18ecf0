"""marsdust.evaluate.clouds: per-class AP and the dust false alarms on clouds, on hand-made maps whose
counts are worked out by hand."""

import numpy as np
import pytest

from marsdust.evaluate.clouds import (
    dust_false_alarms_on_clouds,
    false_alarms_on_clouds_by_threshold,
    on_clouds_at_recall,
    per_class_ap,
)
from marsdust.evaluate.matching import SCORE_THRESHOLDS
from marsdust.grid import MapGrid


def test_dust_false_alarms_on_clouds_counts_unmatched_detections_mostly_on_cloudy_pixels():
    grid = MapGrid.moc(1.6)
    cloudy = np.zeros(grid.shape, bool)
    cloudy[10:20, 10:30] = True

    def mask(y0, y1, x0, x1):
        m = np.zeros(grid.shape, np.uint8)
        m[y0:y1, x0:x1] = 1
        return m

    storm = {"boxes": np.array([[100, 40, 120, 50]], float), "masks": mask(40, 50, 100, 120)[None]}
    prediction = {"boxes": np.array([[100, 40, 120, 50], [10, 10, 30, 20], [12, 14, 32, 24], [60, 40, 70, 50]], float),
                  "scores": np.array([0.9, 0.8, 0.7, 0.3]),
                  "masks": np.stack([mask(40, 50, 100, 120), mask(10, 20, 10, 30), mask(14, 24, 12, 32),
                                     mask(40, 50, 60, 70)])}
    result = dust_false_alarms_on_clouds({"a": storm}, {"a": prediction}, {"a": grid}, {"a": cloudy}, 0.5)
    # found storm; two false alarms above 0.5, one wholly and one 54 % on the cloud; the last below the threshold
    assert result == {"score_threshold": 0.5, "n_maps": 1, "n_storms": 1, "recall": 1.0, "n_detections": 3,
                      "n_false_alarms": 2, "n_false_alarms_on_clouds": 2, "on_cloud_fraction": 0.5}
    assert dust_false_alarms_on_clouds({"a": storm}, {"a": prediction}, {"a": grid}, {}, 0.5)["n_maps"] == 0
    assert per_class_ap(({"a": storm}, {"a": prediction}), None, {"a": grid})["cloud"] is None

    ladder = false_alarms_on_clouds_by_threshold({"a": storm}, {"a": prediction}, {"a": grid}, {"a": cloudy},
                                                 thresholds=(0.95, 0.75, 0.5, 0.2))
    assert [entry["score_threshold"] for entry in ladder] == [0.2, 0.5, 0.75, 0.95]
    assert [entry["n_false_alarms_on_clouds"] for entry in ladder] == [2, 2, 1, 0]
    assert [entry["recall"] for entry in ladder] == [1.0, 1.0, 1.0, 0.0]
    assert on_clouds_at_recall(ladder, 1.0)["score_threshold"] == 0.75  # the highest threshold still finding it
    assert on_clouds_at_recall(ladder[3:], 0.5) is None


def ladder_case():
    """Three maps at 1.6° (75 x 225 px), boxes only (no masks: a detection's outline is its box's pixels).

    Map ``a`` (cloud mask: rows 10-19, columns 10-29): storms S1 [100, 40, 120, 50] and
    S2 [200, 40, 220, 50]; detections d0 on S1 (0.92), d1 on S2 shifted 4 px (IoU 2/3, 0.42),
    d2 wholly on the cloud (0.82), d3 half on it (columns 20-39: 50 %, 0.62), d4 on it for 8 of
    10 rows and 8 of 20 columns (32 %, 0.32), d5 a duplicate of S1 shifted 1 px (IoU 19/21, but
    S1 goes to d0, 0.72). Map ``b`` has no cloud mask (left out of every count). Map ``c``
    (cloud mask: rows 30-39, columns 0-4 and 220-224) has no storm and one detection across 180°
    whose pixels are all cloudy (columns 220-229 wrap to 220-224 and 0-4, 0.22)."""
    grid = MapGrid.moc(1.6)
    cloudy_a = np.zeros(grid.shape, bool)
    cloudy_a[10:20, 10:30] = True
    cloudy_c = np.zeros(grid.shape, bool)
    cloudy_c[30:40, :5] = True
    cloudy_c[30:40, 220:] = True
    truth = {"a": {"boxes": np.array([[100, 40, 120, 50], [200, 40, 220, 50]], float)},
             "b": {"boxes": np.array([[50, 40, 60, 50]], float)},
             "c": {"boxes": np.zeros((0, 4))}}
    predictions = {
        "a": {"boxes": np.array([[100, 40, 120, 50], [204, 40, 224, 50], [10, 10, 30, 20], [20, 10, 40, 20],
                                 [22, 12, 42, 22], [101, 40, 121, 50]], float),
              "scores": np.array([0.92, 0.42, 0.82, 0.62, 0.32, 0.72])},
        "b": {"boxes": np.array([[10, 10, 30, 20]], float), "scores": np.array([0.9])},
        "c": {"boxes": np.array([[220, 30, 230, 40]], float), "scores": np.array([0.22])},
    }
    return truth, predictions, {m: grid for m in truth}, {"a": cloudy_a, "c": cloudy_c}


# Worked out by hand from ladder_case: for each band of thresholds (the ladder's values in it), the detections
# kept, the storms found (S1 while d0 is kept, S2 while d1 is), the false alarms and those on clouds (d2, d3, c's).
BY_HAND = [  # (highest threshold of the band, detections, found, false alarms, on clouds)
    (0.20, 7, 2, 5, 3),  # all: false alarms d2, d3, d4, d5, c
    (0.30, 6, 2, 4, 2),  # c's (0.22) gone
    (0.40, 5, 2, 3, 2),  # d4 (0.32) gone
    (0.60, 4, 1, 3, 2),  # d1 (0.42) gone: S2 missed
    (0.70, 3, 1, 2, 1),  # d3 (0.62) gone
    (0.80, 2, 1, 1, 1),  # d5 (0.72) gone
    (0.90, 1, 1, 0, 0),  # d2 (0.82) gone
    (0.95, 0, 0, 0, 0),  # d0 (0.92) gone
]


def expected_at(threshold: float) -> dict:
    n_detections, n_found, n_false, n_on_clouds = next(row[1:] for row in BY_HAND if threshold <= row[0] + 1e-9)
    return {"score_threshold": threshold, "n_maps": 2, "n_storms": 2, "recall": n_found / 2,
            "n_detections": n_detections, "n_false_alarms": n_false, "n_false_alarms_on_clouds": n_on_clouds,
            "on_cloud_fraction": 0.5}


def test_the_one_pass_ladder_gives_the_hand_counted_false_alarms_at_each_threshold():
    truth, predictions, grids, cloudy = ladder_case()
    ladder = false_alarms_on_clouds_by_threshold(truth, predictions, grids, cloudy)
    assert [entry["score_threshold"] for entry in ladder] == list(SCORE_THRESHOLDS)
    assert ladder == [expected_at(t) for t in SCORE_THRESHOLDS]
    assert ladder[9] == dust_false_alarms_on_clouds(truth, predictions, grids, cloudy, SCORE_THRESHOLDS[9])
    assert sum(entry["n_false_alarms_on_clouds"] for entry in ladder) > 0


def test_a_detection_is_on_a_cloud_by_its_outline_not_its_box():
    """The outline (mask) decides, in the count here and in the error analysis: a box two-thirds cloudy whose
    outline is a sixth cloudy is not on a cloud; a box an eighth cloudy whose outline is wholly cloudy is."""
    from marsdust.evaluate.errors import error_tables

    grid = MapGrid.moc(1.6)
    cloudy = np.zeros(grid.shape, bool)
    cloudy[10:20, 10:30] = True
    outlines = np.zeros((2, *grid.shape), np.uint8)
    outlines[0, 10:20, 28:40] = 1  # box [10, 10, 40, 20]: columns 10-29 of 10-39 cloudy; outline: 2 of its 12 columns
    outlines[1, 10:20, 20:30] = 1  # box [20, 10, 60, 30]: 100 of 800 pixels cloudy; outline: all of its 100
    boxes = np.array([[10, 10, 40, 20], [20, 10, 60, 30]], float)
    truth = {"boxes": np.zeros((0, 4))}
    for k, on_cloud in ((0, 0), (1, 1)):
        prediction = {"boxes": boxes[k:k + 1], "scores": np.array([0.9]), "masks": outlines[k:k + 1]}
        result = dust_false_alarms_on_clouds({"m": truth}, {"m": prediction}, {"m": grid}, {"m": cloudy}, 0.5)
        assert result["n_false_alarms"] == 1 and result["n_false_alarms_on_clouds"] == on_cloud
    prediction = {"boxes": boxes, "scores": np.array([0.9, 0.8]), "masks": outlines}
    _, detections = error_tables({"m": truth}, {"m": prediction}, {"m": grid}, cloud_masks={"m": cloudy})
    assert detections["cloudy_fraction"].tolist() == pytest.approx([1 / 6, 1.0])
    assert detections["category"].tolist() == ["background", "cloud"]
