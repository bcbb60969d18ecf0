"""marsdust.formats.mdad_table: the MDAD v1.0 table — headers and aliases, row validation, reading, writing."""

import numpy as np
import pandas as pd
import pytest

from marsdust.formats.mdad_table import read_v10_table, write_v10_table
from marsdust.mdad_format import STORM_COLUMNS, CatalogError

REAL_HEADERS = ["Mars Year", "Mission subphase", "Sol", "Ls", "Centroid longitude", "Centroid latitude",
                "Area (square km)", "Confidence interval", "Member ID", "Sequence ID"]
ALIAS_HEADERS = ["MY", "subphase", "sol", "swathLs", "centroid_lon", "centroid_lat", "area", "confidence_flag",
                 "mem_ID", "seq_ID"]
ROWS = [
    [24, "R18", 40, 150.5, 350.0, 10.0, 120000.0, 100, "R18_031", "S001"],
    [24, "R18", 41, 151.0, -170.0, 12.0, 90000.0, 75, "R18_031+032", ""],
    [25, "S20", 1, 2.0, 10.0, -5.0, 5000.0, 50, "S20_001b", np.nan],
]


def v10_frame(headers=REAL_HEADERS, rows=ROWS):
    return pd.DataFrame(rows, columns=headers)


def check_v10(df):
    assert list(df.columns) == STORM_COLUMNS
    assert list(df["map_id"]) == ["r18_040", "r18_041", "s20_001"]
    np.testing.assert_allclose(df["lon"], [-10.0, -170.0, 10.0])
    assert list(df["confidence"]) == [100, 75, 50]
    assert list(df["member_id"]) == ["R18_031", "R18_031+032", "S20_001b"]
    assert list(df["sequence_id"]) == ["S001", "", ""]
    assert df["mars_year"].dtype == np.int64 and df["sol"].dtype == np.int64
    assert df["polygon_wkt"].isna().all()


def test_v10_csv_real_headers(tmp_path):
    path = tmp_path / "MDAD.csv"
    v10_frame().to_csv(path, index=False)
    check_v10(read_v10_table(path))


def test_v10_csv_aliases_with_odd_case_and_spaces(tmp_path):
    path = tmp_path / "MDAD.csv"
    headers = [h.upper() if i % 2 else f"  {h} " for i, h in enumerate(ALIAS_HEADERS)]
    v10_frame(headers).to_csv(path, index=False)
    check_v10(read_v10_table(path))


def test_a_storm_table_written_by_save_catalog_reads_back_with_its_outlines(tmp_path):
    """Pseudo-labels and exported catalogues are storm tables with outlines: reading one keeps them."""
    from marsdust.mdad import read_catalog, save_catalog

    storms = read_v10_table(_written(tmp_path))
    storms["polygon_wkt"] = ["POLYGON ((-12 8, -8 8, -8 12, -12 12, -12 8))", None, " "]
    save_catalog(storms, tmp_path / "storms.csv")
    again = read_catalog(tmp_path / "storms.csv")
    assert again["polygon_wkt"].iloc[0] == "POLYGON ((-12 8, -8 8, -8 12, -12 12, -12 8))"
    assert again["polygon_wkt"].iloc[1:].isna().all()  # missing and blank: no outline
    assert list(again["map_id"]) == list(storms["map_id"])


def _written(tmp_path):
    path = tmp_path / "MDAD.csv"
    v10_frame().to_csv(path, index=False)
    return path


def test_v10_xlsx(tmp_path):
    path = tmp_path / "MDAD.xlsx"
    v10_frame().to_excel(path, index=False)
    check_v10(read_v10_table(path))


BAD_CASES = [
    (5, 95.0, "Centroid latitude", "latitude"),
    (4, np.nan, "Centroid longitude", "longitude"),
    (8, "R18-031", "Member ID", "member ID"),
    (7, 60, "Confidence interval", "confidence"),
    (2, "x", "Sol", "sol"),
]


@pytest.mark.parametrize("column, value, header, words", BAD_CASES, ids=[c[2] for c in BAD_CASES])
def test_v10_bad_value_names_file_row_column(tmp_path, column, value, header, words):
    rows = [list(r) for r in ROWS]
    rows[1][column] = value
    path = tmp_path / "MDAD.csv"
    v10_frame(rows=rows).to_csv(path, index=False)
    with pytest.raises(CatalogError, match=words) as info:
        read_v10_table(path)
    message = str(info.value)
    assert "MDAD.csv" in message and "row 3" in message and header in message


def test_v10_skip_bad_drops_rows_with_one_warning(tmp_path):
    rows = [list(r) for r in ROWS]
    rows[0][5] = -91.0
    rows[2][8] = "??"
    path = tmp_path / "MDAD.csv"
    v10_frame(rows=rows).to_csv(path, index=False)
    with pytest.warns(UserWarning, match=r"dropped 2 bad row\(s\) \(spreadsheet rows 2, 4\)") as record:
        df = read_v10_table(path, skip_bad=True)
    assert len([w for w in record if "dropped" in str(w.message)]) == 1
    assert list(df["map_id"]) == ["r18_041"]


def test_v10_missing_column_lists_found(tmp_path):
    path = tmp_path / "MDAD.csv"
    v10_frame().drop(columns=["Centroid latitude"]).to_csv(path, index=False)
    with pytest.raises(CatalogError, match=r"MDAD\.csv: missing required column.*lat.*found columns.*Centroid longitude"):
        read_v10_table(path)


def test_exact_duplicate_rows_are_dropped_with_a_warning(tmp_path):
    path = tmp_path / "MDAD.csv"
    v10_frame(rows=ROWS + [ROWS[0]]).to_csv(path, index=False)
    with pytest.warns(UserWarning, match=r"dropped 1 exact duplicate row\(s\) \(spreadsheet rows 5\)"):
        assert len(read_v10_table(path)) == 3


def test_written_v10_table_reads_back(tmp_path):
    storms = read_v10_table(_write(v10_frame(), tmp_path / "MDAD.csv"))
    path = write_v10_table(storms, tmp_path / "again" / "MDAD.csv")
    assert pd.read_csv(path, nrows=0).columns.tolist() == REAL_HEADERS
    pd.testing.assert_frame_equal(read_v10_table(path), storms)


def _write(frame: pd.DataFrame, path):
    frame.to_csv(path, index=False)
    return path
