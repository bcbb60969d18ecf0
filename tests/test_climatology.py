"""Tests of marsdust.climatology and the ``marsdust track`` / ``marsdust climatology`` commands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from marsdust import climatology, track
from marsdust.cli import app

COLUMNS = ["map_id", "subphase", "sol", "mars_year", "ls", "lon", "lat", "area_km2", "member_id", "sequence_id"]


def storm_table(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


# two sequences: one moving east across 180°, one across the MY24/MY25 boundary; a lone storm
CATALOG = storm_table([
    ("r18_040", "R18", 40, 25, 100.0, 176.0, 5.0, 4e5, "R18_001", "MY25-01"),
    ("r18_041", "R18", 41, 25, 100.55, 179.0, 6.0, 5e5, "R18_001", "MY25-01"),
    ("r18_042", "R18", 42, 25, 101.1, -178.0, 7.0, 6e5, "R18_001", "MY25-01"),
    ("r18_042", "R18", 42, 25, 101.1, 20.0, -30.0, 2e5, "R18_002", ""),
    ("m23_030", "M23", 30, 24, 359.5, -40.0, 40.0, 3e5, "M23_004", "MY24-02"),
    ("m23_031", "M23", 31, 25, 0.1, -38.0, 40.0, 3e5, "M23_004", "MY24-02"),
    ("m23_032", "M23", 32, 25, 0.7, -36.0, 41.0, 3e5, "M23_004", "MY24-02"),
])


def test_members_table_spans_mars_years_and_the_180_seam():
    members = track.members_table(CATALOG).set_index("member_id")
    across_year = members.loc["M23_004"]
    assert across_year["n_instances"] == 3 and across_year["duration_sols"] == 3
    assert across_year["ls_span_deg"] == pytest.approx(1.2)  # Ls 359.5 of MY24 to 0.7 of MY25
    assert across_year["first_mars_year"] == 24 and across_year["sequence_id"] == "MY24-02"
    across_seam = members.loc["R18_001"]
    # 176 -> 179 -> -178 (182°E): about 6° of longitude near the equator, not 354°
    assert across_seam["path_length_km"] == pytest.approx(6.1 * 59.27, rel=0.05)
    assert members.loc["R18_002", "path_length_km"] == 0.0 and members.loc["R18_002", "duration_sols"] == 1


def test_tracking_the_catalog_links_across_the_year_boundary_and_the_seam():
    tracked = track.track(CATALOG.drop(columns=["member_id", "sequence_id"]))
    assert tracked.groupby("member_id")["map_id"].nunique().sort_values().tolist() == [1, 3, 3]
    seam = tracked[tracked["map_id"].str.startswith("r18") & (tracked["lat"] > 0)]
    assert seam["member_id"].nunique() == 1


def test_counts_per_ls_bin_list_every_bin_between_the_first_and_last():
    found = CATALOG.iloc[:3]
    counts = climatology.counts_per_ls_bin(found, CATALOG, ls_bin_deg=90.0)
    assert counts[["mars_year", "ls_start_deg"]].values.tolist() == [[24, 270.0], [25, 0.0], [25, 90.0]]
    assert counts["n_catalogued"].tolist() == [1, 2, 4] and counts["n_found"].tolist() == [0, 0, 3]


def test_area_per_map_sums_the_storms_of_each_map():
    per_map = climatology.area_per_map(CATALOG).set_index("map_id")
    assert per_map.loc["r18_042", "total_area_km2"] == 8e5 and per_map.loc["r18_042", "n_storms"] == 2
    assert per_map.index[0] == "m23_030"  # time order: MY24 first


def test_sequence_paths_keep_only_sequences_in_time_order():
    paths = climatology.sequence_paths(CATALOG)
    assert set(paths["sequence_id"]) == {"MY25-01", "MY24-02"} and len(paths) == 6
    lon, _ = climatology._path_segments(np.array([176.0, 179.0, -178.0]), np.array([5.0, 6.0, 7.0]))
    assert np.isnan(lon).sum() == 1  # the path is cut at the seam, not drawn across the map


@pytest.mark.parametrize("rows", [CATALOG, CATALOG.iloc[:0], CATALOG.iloc[3:4]], ids=["catalog", "empty", "one map"])
def test_write_climatology_writes_a_figure_and_a_table_each(tmp_path, rows):
    written = climatology.write_climatology(rows, tmp_path, truth=CATALOG)
    assert set(written) == {"ls_lat", "area_per_sol", "members", "sequence_paths", "detected_vs_catalogued"}
    for png, csv in written.values():
        assert png.stat().st_size > 1000 and csv.is_file()
    assert len(pd.read_csv(tmp_path / "ls_lat.csv")) == len(rows)


def test_detections_without_member_ids_are_tracked_first(tmp_path):
    detections = CATALOG.drop(columns=["member_id", "sequence_id"])
    climatology.write_climatology(detections, tmp_path)
    assert pd.read_csv(tmp_path / "members.csv")["n_instances"].sort_values().tolist() == [1, 3, 3]


def test_track_command_replaces_ids_writes_members_and_scores(tmp_path):
    catalog_csv = tmp_path / "storms.csv"
    CATALOG.assign(member_id="old", sequence_id="old").to_csv(tmp_path / "stale.csv", index=False)
    CATALOG.to_csv(catalog_csv, index=False)
    out = tmp_path / "out" / "tracked.csv"
    result = CliRunner().invoke(app, ["track", str(tmp_path / "stale.csv"), "-o", str(out), "--truth", str(catalog_csv)])
    assert result.exit_code == 0, result.output
    tracked = pd.read_csv(out, keep_default_na=False)
    assert "old" not in set(tracked["member_id"]) and len(tracked) == len(CATALOG)
    assert len(pd.read_csv(tmp_path / "out" / "tracked_members.csv")) == 3
    scores = json.loads((tmp_path / "out" / "tracked_scores.json").read_text())
    assert scores["links"]["f1"] == 1.0 and scores["identity"]["idf1"] == 1.0
    assert scores["sequences"]["recall"] == 1.0 and scores["parameters"]["max_gap_sols"] == 1
    assert "IDF1 100.0%" in result.output


def test_a_map_missing_between_two_sols_is_bridged_only_when_asked(tmp_path):
    gap = CATALOG[CATALOG["map_id"] != "r18_041"]
    gap.to_csv(tmp_path / "gap.csv", index=False)
    for option, n_members in (("1", 4), ("2", 3)):
        out = tmp_path / f"gap_{option}.csv"
        result = CliRunner().invoke(app, ["track", str(tmp_path / "gap.csv"), "-o", str(out), "--max-gap-sols", option])
        assert result.exit_code == 0, result.output
        assert pd.read_csv(out)["member_id"].nunique() == n_members


def test_track_command_refuses_bad_input_in_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    CATALOG.assign(lon=["x"] + [0.0] * (len(CATALOG) - 1)).to_csv(bad, index=False)
    result = CliRunner().invoke(app, ["track", str(bad), "-o", str(tmp_path / "t.csv")])
    assert result.exit_code == 1
    assert "row 2, column 'lon'" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["track", str(tmp_path / "missing.csv")])
    assert result.exit_code == 1 and "not found" in result.output


def test_climatology_command_counts_detections_against_the_catalog_on_their_maps(tmp_path):
    CATALOG.to_csv(tmp_path / "storms.csv", index=False)
    CATALOG.iloc[:3].to_csv(tmp_path / "detections.csv", index=False)
    pd.DataFrame({"map_id": ["r18_040", "r18_041", "r18_042"]}).to_csv(tmp_path / "maps.csv", index=False)
    result = CliRunner().invoke(app, ["climatology", str(tmp_path / "detections.csv"), "-o", str(tmp_path / "clim"),
                                      "--truth", str(tmp_path / "storms.csv"), "--maps", str(tmp_path / "maps.csv")])
    assert result.exit_code == 0, result.output
    counts = pd.read_csv(tmp_path / "clim" / "detected_vs_catalogued.csv")
    assert counts["n_found"].sum() == 3 and counts["n_catalogued"].sum() == 4  # the lone storm on r18_042 is missed
    assert (tmp_path / "clim" / "sequence_paths.png").is_file()
