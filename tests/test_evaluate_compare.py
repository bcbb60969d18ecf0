"""marsdust.evaluate.compare: the paper's Table 1 layout with our rows beside the paper's."""

import pytest

import json

import numpy as np

from marsdust.evaluate.compare import (PAPER_SOURCE, causes_table, comparison_table, measures_markdown,
                                       measures_table, recall_table, write_comparison_table)
from marsdust.evaluate.metrics import write_metrics_json


def test_comparison_table_in_table1_layout(tmp_path):
    ours = {"map25": 0.5, "map50": 0.4, "map75": 0.1, "time_ms_per_map": 80.0}
    metrics_file = write_metrics_json(ours, tmp_path / "m.json")
    table = comparison_table({"dustrcnn": {"temporal": ours, "random": metrics_file}}, our_label="ours (synthetic)")
    assert table.loc[("DustRCNN", "ours (synthetic)"), ("mAP50", "strategy 1")] == pytest.approx(40.0)
    assert table.loc[("DustRCNN", "ours (synthetic)"), ("Time (ms)", "strategy 2")] == 80.0
    assert table.loc[("DustRCNN", PAPER_SOURCE), ("mAP75", "strategy 2")] == 37.7
    assert table.loc[("SPPnet", PAPER_SOURCE), ("mAP25", "strategy 1")] == 62.5
    assert len(table) == 5
    md_path, csv_path = write_comparison_table(table, tmp_path / "comparison")
    text = md_path.read_text()
    assert "| DustRCNN | ours (synthetic) | 50.0 | 50.0 | 40.0 |" in text and "real MGS MOC" in text
    assert "mAP25 strategy 1" in csv_path.read_text().splitlines()[0]


def test_pixel_columns_only_when_our_metrics_have_them(tmp_path):
    plain = {"map25": 0.5, "map50": 0.4, "map75": 0.1, "time_ms_per_map": 80.0}
    assert "Pixel IoU" not in comparison_table({"dustrcnn": {"temporal": plain}}).columns.get_level_values(0)
    with_pixels = {**plain, "pixel": {"iou": 0.25, "dice": 0.4, "n_pixels": 100, "threshold": 0.5}}
    table = comparison_table({"dustrcnn": {"temporal": with_pixels}}, our_label="ours")
    assert table.loc[("DustRCNN", "ours"), ("Pixel IoU", "strategy 1")] == pytest.approx(25.0)
    assert table.loc[("DustRCNN", "ours"), ("Dice", "strategy 1")] == pytest.approx(40.0)
    assert table.loc[("DustRCNN", PAPER_SOURCE), ("Dice", "strategy 1")] != table.loc[("DustRCNN", PAPER_SOURCE),
                                                                                     ("Dice", "strategy 1")]  # NaN
    md_path, _ = write_comparison_table(table, tmp_path / "comparison")
    text = md_path.read_text()
    assert "Pixel IoU s1" in text and "| 25.0 |" in text and "observed pixels" in text


def test_the_unets_are_rows_after_the_papers_networks():
    scores = {"map25": 0.5, "map50": 0.4, "map75": 0.1, "time_ms_per_map": 80.0,
              "pixel": {"iou": 0.45, "dice": 0.62, "n_pixels": 100, "threshold": 0.5}}
    table = comparison_table({name: {"temporal": scores} for name in
                              ("dustrcnn", "maskrcnn", "fasterrcnn", "sppnet", "unet", "unet_cbam")})
    ours = [network for network, source in table.index if source == "ours"]
    assert ours == ["Fast R-CNN", "Mask R-CNN", "SPPnet", "DustRCNN", "U-Net", "CBAM U-Net"]
    assert table.index[-2:].tolist() == [("U-Net", "ours"), ("CBAM U-Net", "ours")]  # the paper has no U-Net
    assert table.loc[("U-Net", "ours"), ("Pixel IoU", "strategy 1")] == pytest.approx(45.0)


def _counts(n_storms, n_found):
    return {"n_storms": n_storms, "n_found": n_found}


def test_measures_and_recall_tables_read_every_run(tmp_path):
    """Every measure of a run and its recall per kind of storm, from its metrics.json and error_analysis.json."""
    metrics = {"map25": 0.6, "map50": 0.5, "map75": 0.2, "time_ms_per_map": 41.0,
               "paper_boxes": {"map50": 0.7, "map75": 0.3}, "segm": {"map50": 0.55},
               "pixel": {"iou": 0.45, "dice": 0.62}, "area_agreement": {"median_ratio": 1.08, "within_25pct": 0.8},
               "error_analysis": {"recall": 0.75, "n_false_alarms": 9}}
    with_analysis, without = tmp_path / "unet_temporal", tmp_path / "dustrcnn_random"
    for folder in (with_analysis, without):
        write_metrics_json(metrics if folder is with_analysis else {"map25": 0.4, "map50": 0.3, "map75": 0.1},
                           folder / "metrics.json")
    size = {"bin_edges_km2": [3e5, 1e6], "0-3e+05 km2": _counts(10, 2), "3e+05-1e+06 km2": _counts(10, 6),
            ">=1e+06 km2": _counts(10, 9)}
    recall = {"all": _counts(30, 17), "by_size": size,
              "by_confidence": {"50": _counts(2, 0), "75": _counts(3, 1), "100": _counts(25, 16)},
              "by_seam_distance": {"0 (touching)": _counts(1, 1), "0-5 deg": _counts(3, 0), ">15 deg": _counts(26, 16)},
              "by_gap_distance": {"0 (touching)": _counts(4, 1)},
              "by_lat_band": {"60N-90N": _counts(0, 0)}}
    causes = {"missed": {"counts": {"low_score": 5, "merged": 4, "not_detected": 4}},
              "false_alarms": {"counts": {"localization": 7, "cloud": 2}}}
    (with_analysis / "error_analysis.json").write_text(json.dumps({"recall": recall, **causes}))
    results = {"unet": {"temporal": str(with_analysis / "metrics.json")},
               "dustrcnn": {"random": str(without / "metrics.json")}}

    measures = measures_table(results)
    row = measures.loc[("U-Net", "strategy 1")]
    assert row["12° mAP50"] == pytest.approx(70.0) and row["box mAP50"] == pytest.approx(50.0)
    assert row["mask mAP50"] == pytest.approx(55.0) and row["Dice"] == pytest.approx(62.0)
    assert row["false alarms"] == 9 and row["area ratio"] == pytest.approx(1.08) and row["Time (ms)"] == 41.0
    assert np.isnan(measures.loc[("DustRCNN", "strategy 2"), "pixel IoU"])  # not measured: NaN, not 0

    table = recall_table(results)
    assert list(table.index) == [("U-Net", "strategy 1")]  # the run without an error analysis is left out
    found = table.loc[("U-Net", "strategy 1")]
    assert [found["small"], found["medium"], found["large"]] == pytest.approx([20.0, 60.0, 90.0])
    assert found["confidence 50–75"] == pytest.approx(20.0) and found["confidence 50–75 n"] == 5
    assert found["≤ 5° from 180°"] == pytest.approx(25.0) and found["≤ 5° from 180° n"] == 4
    assert np.isnan(found["poleward of 60°"])
    why = causes_table(results)
    assert why.loc[("U-Net", "strategy 1"), "missed merged"] == 4 and len(why) == 1
    assert why.loc[("U-Net", "strategy 1"), "false alarm cloud"] == 2
    text = measures_markdown(measures, table, why)
    assert "| U-Net | strategy 1 | 5 | 4 | 4 | 7 | 2 |" in text
    assert "| U-Net | strategy 1 | 70.0 | 30.0 | 50.0 | 55.0 | 45.0 | 62.0 | 75.0 | 9 | 1.08 | 80.0 | 41 |" in text
    assert "small (< 3e+05 km², 10)" in text and "large (≥ 1e+06 km², 10)" in text
