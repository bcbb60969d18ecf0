"""marsdust.fileio: atomic writes (every product writer leaves no partial file), product tables, permissions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from marsdust.fileio import atomic_output, write_table
from marsdust.formats.geojson import write_geojson
from marsdust.formats.geotiff import write_geotiff
from marsdust.formats.mdad_cube import MaskStep, write_mask_cube
from marsdust.grid import MapGrid
from marsdust.outlines import DETECTION_COLUMNS, detection_records, detections_frame, label_image

from disk_masks import disk_mask

GRID = MapGrid.moc(0.5)  # 240 x 720: small and fast, same geometry as the real 0.1° grid


def test_tables_round_trip_csv_and_parquet(tmp_path):
    masks = [disk_mask(GRID, -40.0, 20.0, 5.0), disk_mask(GRID, 100.0, -30.0, 3.0)]
    df = detections_frame(detection_records("r18_040", 25, 100.0, GRID, masks, [0.9, 0.4]))
    assert list(df.columns[: len(DETECTION_COLUMNS)]) == DETECTION_COLUMNS
    for name in ("d.csv", "d.parquet"):
        write_table(df, tmp_path / name)
        back = pd.read_csv(tmp_path / name) if name.endswith(".csv") else pd.read_parquet(tmp_path / name)
        assert back["area_km2"].to_numpy() == pytest.approx(df["area_km2"].to_numpy())
        assert list(back["polygon_wkt"]) == list(df["polygon_wkt"])
    with pytest.raises(ValueError, match="unknown table format"):
        write_table(df, tmp_path / "d.xlsx")
    assert detections_frame([]).columns.tolist() == DETECTION_COLUMNS


def test_failed_writers_leave_no_file(tmp_path):
    steps = [MaskStep.from_map_id("r18_041", 25, 100.6, label_image([disk_mask(GRID, 3.0, 0.0, 5.0)]))]

    def failing_steps():
        yield steps[0]
        raise RuntimeError("detector crashed")

    target = tmp_path / "MY25" / "MDADMY25.nc"
    with pytest.raises(RuntimeError, match="detector crashed"):
        write_mask_cube(target, failing_steps(), GRID)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary file either

    bad = np.zeros((10, 10), dtype=np.float32)
    with pytest.raises(ValueError, match="does not match"):
        write_geotiff(tmp_path / "p.tif", bad, GRID)
    with pytest.raises(ValueError, match="not valid WKT"):
        write_geojson(pd.DataFrame({"map_id": ["a"], "polygon_wkt": ["POLYGON ((oops"]}), tmp_path / "d.geojson")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MY25"]

    existing = tmp_path / "keep.csv"
    existing.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_output(existing) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert existing.read_text() == "old\n"


def test_atomic_output_gives_products_normal_permissions(tmp_path):
    """Products are readable as any file the user writes (mkstemp alone would leave them 0600)."""
    import os
    import stat

    from marsdust.fileio import write_text_atomic

    mask = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_csv_cells_a_spreadsheet_would_run_are_neutralized(tmp_path):
    from marsdust.fileio import neutralize_formulas, write_table_atomic

    table = pd.DataFrame({"member_id": ["=HYPERLINK(\"http://x\",\"y\")", "@SUM(A1)", "R18_001", "-5", "+cmd|' /C calc'!A0",
                                        "\tx"],
                          "lon": [-5.0, 1.0, 2.0, 3.0, 4.0, 5.0]})
    written = pd.read_csv(write_table_atomic(table, tmp_path / "t.csv"), keep_default_na=False)
    assert written["member_id"].tolist() == ["'=HYPERLINK(\"http://x\",\"y\")", "'@SUM(A1)", "R18_001", "-5",
                                             "'+cmd|' /C calc'!A0", "'\tx"]
    assert written["lon"].tolist() == [-5.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # numeric columns as they are
    plain = pd.DataFrame({"member_id": ["R18_001"], "lon": [-5.0]})
    assert neutralize_formulas(plain) is plain
