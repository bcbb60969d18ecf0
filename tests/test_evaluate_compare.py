"""marsdust.evaluate.compare: the paper's Table 1 layout with our rows beside the paper's."""

import pytest

from marsdust.evaluate.compare import PAPER_SOURCE, comparison_table, write_comparison_table
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
