"""marsdust.mdad: v1.0 tables, v1.1 cubes + master CSV, folders, member IDs, cloud masks, bad input."""

import netCDF4
import numpy as np
import pandas as pd
import pytest
from shapely import wkt

from marsdust.grid import MapGrid, polygon_area_km2
from marsdust.mdad import (
    STORM_COLUMNS,
    CatalogError,
    MemberId,
    instance_mask,
    parse_member_id,
    read_catalog,
    read_cloud_mask,
)

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


# --- member IDs -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, numbers, groups, mask_value",
    [
        ("D01_031", (31,), (("D01", (31,)),), 31),
        ("D01_031+032", (31, 32), (("D01", (31, 32)),), 31),
        ("D16_001b", (1,), (("D16", (1,)),), 134),
        ("G13_001b+002+017", (1, 2, 17), (("G13", (1, 2, 17)),), 134),
        ("P08_033+P09_010+011+013", (33, 10, 11, 13), (("P08", (33,)), ("P09", (10, 11, 13))), 33),
        ("M17_050+M18_001", (50, 1), (("M17", (50,)), ("M18", (1,))), 50),
        (" r18_005 ", (5,), (("R18", (5,)),), 5),
    ],
)
def test_parse_member_id_first_member_rule(text, numbers, groups, mask_value):
    """MDAD v1.1: every member number is kept; the cube value is the first member's, on any day."""
    member = parse_member_id(text)
    assert isinstance(member, MemberId)
    assert member.numbers == numbers and member.groups == groups
    assert member.mask_value == mask_value
    assert member.cube_values("M18") == member.cube_values("P09") == (mask_value,)


@pytest.mark.parametrize("text", ["", "D01", "D01_", "031", "D01_031+", "D01-031", "D01_000", "D01_140", "D01_120b",
                                  "D01_031+b", "D01_031++032", "031+D01_032", None])
def test_parse_member_id_rejects(text):
    with pytest.raises(ValueError, match="member"):
        parse_member_id(text)


# --- v1.0 tables ------------------------------------------------------------------------------
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
    check_v10(read_catalog(path))


def test_v10_csv_aliases_with_odd_case_and_spaces(tmp_path):
    path = tmp_path / "MDAD.csv"
    headers = [h.upper() if i % 2 else f"  {h} " for i, h in enumerate(ALIAS_HEADERS)]
    v10_frame(headers).to_csv(path, index=False)
    check_v10(read_catalog(path))


def test_v10_xlsx(tmp_path):
    path = tmp_path / "MDAD.xlsx"
    v10_frame().to_excel(path, index=False)
    check_v10(read_catalog(path))


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
        read_catalog(path)
    message = str(info.value)
    assert "MDAD.csv" in message and "row 3" in message and header in message


def test_v10_skip_bad_drops_rows_with_one_warning(tmp_path):
    rows = [list(r) for r in ROWS]
    rows[0][5] = -91.0
    rows[2][8] = "??"
    path = tmp_path / "MDAD.csv"
    v10_frame(rows=rows).to_csv(path, index=False)
    with pytest.warns(UserWarning, match=r"dropped 2 bad row\(s\) \(spreadsheet rows 2, 4\)") as record:
        df = read_catalog(path, skip_bad=True)
    assert len([w for w in record if "dropped" in str(w.message)]) == 1
    assert list(df["map_id"]) == ["r18_041"]


def test_v10_missing_column_lists_found(tmp_path):
    path = tmp_path / "MDAD.csv"
    v10_frame().drop(columns=["Centroid latitude"]).to_csv(path, index=False)
    with pytest.raises(CatalogError, match=r"MDAD\.csv: missing required column.*lat.*found columns.*Centroid longitude"):
        read_catalog(path)


# --- v1.1 cubes -------------------------------------------------------------------------------
RES = 4.0
GRID = MapGrid.marci(RES)  # 45 x 90


def write_cube(path, day_names, label_maps, lat_values=None, dims=("time", "longitude", "latitude"),
               coordinates=True, ls_values=None):
    """Write an MDAD v1.1 cube: map row i goes to the latitude point at its northern edge.

    ``timeList`` columns 4-7 (Ls start, end, mean, median) hold ``ls_values`` (default: 10°, 20°, …).
    """
    height, width = GRID.shape
    lat = np.linspace(-90.0, 90.0, height + 1) if lat_values is None else lat_values
    lon = GRID.lon_centers_deg
    path.parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension(dims[0], len(day_names))
        ds.createDimension(dims[1], width)
        ds.createDimension(dims[2], lat.size)
        ds.createDimension("stat", 8)
        if coordinates:
            ds.createVariable(dims[1], "f8", (dims[1],))[:] = lon
            ds.createVariable(dims[2], "f8", (dims[2],))[:] = lat
        cube = ds.createVariable("MDAD", "u1", dims)
        for t, labels in enumerate(label_maps):
            slab = np.full((width, lat.size), 255, np.uint8)
            if lat.size == height + 1:
                # point k (lat -90 + k*res) is the northern edge of map row height - k
                slab[:, 1:] = labels[::-1].T
            else:
                slab[:] = labels[::-1].T
            cube[t] = slab
        names = ds.createVariable("dayList", str, (dims[0],))
        for t, name in enumerate(day_names):
            names[t] = name
        ls = 10.0 * (np.arange(len(day_names)) + 1) if ls_values is None else np.asarray(ls_values, float)
        times = np.zeros((len(day_names), 8))
        times[:, 4:] = ls[:, None]
        ds.createVariable("timeList", "f8", (dims[0], "stat"))[:] = times


def cube_days():
    """Two days: D01 sol 5 (storm across 180°, split 'b' member, merged member) and P09 sol 10."""
    day0 = np.zeros(GRID.shape, np.uint8)
    day0[:8] = 255  # missing polar strip
    day0[10:13, 0:3] = 31  # west edge ...
    day0[10:13, 88:90] = 31  # ... and east edge: one storm across 180°
    day0[20:22, 40:45] = 31 + 133  # split member D01_031b
    day0[30, 30] = 5
    day0[30, 32] = 6  # merged D01_005+006
    day1 = np.zeros(GRID.shape, np.uint8)
    day1[15:18, 50:55] = 10
    day1[15:18, 56:58] = 11
    day1[15:18, 60:61] = 33  # P08_033+P09_010+011 on a P09 day: the first member's value is its outline
    return ["D01_day05", "P09_day10"], [day0, day1]


def master_frame():
    return pd.DataFrame({
        "subphase": ["D01", "D01", "D01", "P09"],
        "sol": [5, 5, 5, 10],
        "mem_ID": ["D01_031", "D01_031b", "D01_005+006", "P08_033+P09_010+011"],
        "seq_ID": ["S1", "", "", "S2"],
        "confidence_flag": [100, 75, 50, 100],
        "area": [1e5, 2e5, 3e4, 1e5],
        "swathLs": [10.0, 10.0, 10.0, 20.0],
        "centroid_lon": [179.0, 0.0, -40.0, 30.0],
        "centroid_lat": [10.0, 0.0, -30.0, -10.0],
    })


@pytest.fixture
def cube_dir(tmp_path):
    folder = tmp_path / "mdad" / "MY30"
    days, maps = cube_days()
    write_cube(folder / "MDADMY30.nc", days, maps)
    master_frame().to_csv(folder / "MDAD_MY30_master.csv", index=False)
    return folder


def test_v11_cube_rows_and_outlines(cube_dir):
    df = read_catalog(cube_dir / "MDADMY30.nc")
    assert list(df.columns) == STORM_COLUMNS
    assert (df["mars_year"] == 30).all()
    by_member = df.set_index("member_id")
    across = wkt.loads(by_member.loc["D01_031", "polygon_wkt"])
    assert across.geom_type == "MultiPolygon" and len(across.geoms) == 2
    west, east = sorted(across.geoms, key=lambda g: g.bounds[0])
    # rows 10–12 of a 4° global map: 50°N down to 38°N; columns 0–2 and 88–89
    assert west.bounds == pytest.approx((-180.0, 38.0, -168.0, 50.0))
    assert east.bounds == pytest.approx((172.0, 38.0, 180.0, 50.0))
    assert polygon_area_km2(across) == pytest.approx(GRID.mask_area_km2(instance_mask(
        cube_dir / "MDADMY30.nc", "d01_005", "D01_031")[0]))
    split = wkt.loads(by_member.loc["D01_031b", "polygon_wkt"])
    assert split.bounds == pytest.approx((-20.0, 2.0, 0.0, 10.0))
    merged = wkt.loads(by_member.loc["D01_005+006", "polygon_wkt"])  # value 5 only (first-member rule)
    assert merged.geom_type == "Polygon" and merged.bounds == pytest.approx((-60.0, -34.0, -56.0, -30.0))
    cross = wkt.loads(by_member.loc["P08_033+P09_010+011", "polygon_wkt"])
    assert cross.bounds == pytest.approx((60.0, 18.0, 64.0, 30.0))  # value 33, not 10 and 11
    assert by_member.loc["D01_031", "map_id"] == "d01_005"
    assert by_member.loc["D01_031", "lon"] == pytest.approx(179.0)
    assert by_member.loc["D01_031", "ls"] == pytest.approx(10.0)


def test_instance_mask(cube_dir):
    mask, grid = instance_mask(cube_dir / "MDADMY30.nc", "D01_day05", "D01_031b")
    assert grid == GRID and mask.dtype == bool and mask.shape == GRID.shape
    expected = np.zeros(GRID.shape, bool)
    expected[20:22, 40:45] = True
    np.testing.assert_array_equal(mask, expected)
    with pytest.raises(CatalogError, match="no time step"):
        instance_mask(cube_dir / "MDADMY30.nc", "d01_006", "D01_031")


def test_cube_axes_found_by_size_and_cell_centred_latitudes(tmp_path):
    days, maps = cube_days()
    folder = tmp_path / "MY30"
    write_cube(folder / "MDADMY30.nc", days, maps, dims=("t", "x", "y"),
               lat_values=GRID.lat_centers_deg[::-1].copy())
    master_frame().to_csv(folder / "MDAD_MY30_master.csv", index=False)
    mask, _ = instance_mask(folder / "MDADMY30.nc", "d01_005", "D01_031b")
    assert mask[20:22, 40:45].all() and mask.sum() == 10


def test_cube_without_coordinate_variables_is_read_in_the_mdad_layout(tmp_path, caplog):
    days, maps = cube_days()
    folder = tmp_path / "MY30"
    write_cube(folder / "MDADMY30.nc", days, maps, dims=("soy", "dim_x", "dim_y"), coordinates=False)
    master_frame().to_csv(folder / "MDAD_MY30_master.csv", index=False)
    mask, grid = instance_mask(folder / "MDADMY30.nc", "d01_005", "D01_031b")
    assert grid == GRID and mask[20:22, 40:45].all() and mask.sum() == 10
    assert "no longitude/latitude coordinate variables" in caplog.text
    across = read_catalog(folder / "MDADMY30.nc").set_index("member_id").loc["D01_031", "polygon_wkt"]
    assert wkt.loads(across).bounds == pytest.approx((-180.0, 38.0, 180.0, 50.0))


def test_cube_without_coordinates_and_an_odd_latitude_count_is_refused(tmp_path):
    path = tmp_path / "MDADMY30.nc"
    with netCDF4.Dataset(path, "w") as ds:
        for name, size in (("soy", 1), ("lon", GRID.width), ("lat", GRID.height + 3)):  # axes named, no values
            ds.createDimension(name, size)
        ds.createVariable("MDAD", "u1", ("soy", "lon", "lat"))[:] = 0
        ds.createVariable("dayList", str, ("soy",))[0] = "D01_day05"
    with pytest.raises(CatalogError, match=r"MDADMY30.nc: no latitude coordinate, and 48 latitudes fit neither"):
        instance_mask(path, "d01_005", "D01_031b")


def test_cube_export_convention_round_trip(tmp_path):
    """Cubes written by marsdust.export read back onto the same pixels."""
    export = pytest.importorskip("marsdust.export")
    days, maps = cube_days()
    slab = export.grid_labels_to_cube(np.where(maps[0] == 255, 0, maps[0]), GRID)
    folder = tmp_path / "MY30"
    write_cube(folder / "MDADMY30.nc", days[:1], [maps[0]])
    with netCDF4.Dataset(folder / "MDADMY30.nc", "a") as ds:
        ds["MDAD"][0] = slab
    mask, _ = instance_mask(folder / "MDADMY30.nc", "d01_005", "D01_031")
    np.testing.assert_array_equal(mask, maps[0] == 31)


def test_folder_prefers_cubes_for_their_years(cube_dir):
    root = cube_dir.parent
    pd.DataFrame([
        [29, "B01", 1, 100.0, 350.0, 5.0, 1.0, 50, "B01_001", ""],
        [30, "D01", 5, 10.0, 1.0, 5.0, 2.0, 75, "D01_031", "S1"],  # MY30 comes from the cube
    ], columns=REAL_HEADERS).to_csv(root / "MDAD.csv", index=False)
    df = read_catalog(root)
    assert list(df["mars_year"]) == [29, 30, 30, 30, 30]
    assert pd.isna(df.loc[0, "polygon_wkt"]) and df.loc[1:, "polygon_wkt"].notna().all()


def test_cube_master_row_without_day_is_reported(cube_dir):
    master = master_frame()
    master.loc[2, "sol"] = 9
    master.to_csv(cube_dir / "MDAD_MY30_master.csv", index=False)
    with pytest.warns(UserWarning, match=r"1 master row\(s\) matching no cube time step.*row 4 \(D01 sol 9\)"):
        assert len(read_catalog(cube_dir / "MDADMY30.nc")) == 3
    with pytest.raises(CatalogError, match=r"row 4 \(D01 sol 9\).*strict"):
        read_catalog(cube_dir / "MDADMY30.nc", strict=True)


def test_cube_instance_without_pixels_warns(cube_dir):
    master = master_frame()
    master.loc[0, "mem_ID"] = "D01_099"
    master.to_csv(cube_dir / "MDAD_MY30_master.csv", index=False)
    with pytest.warns(UserWarning, match=r"1 row\(s\) whose mask value has no pixels.*row 2 \(D01_099 on d01_005\)"):
        df = read_catalog(cube_dir / "MDADMY30.nc")
    assert pd.isna(df.set_index("member_id").loc["D01_099", "polygon_wkt"])


# --- MDAD v1.1 as distributed: head folder, one master CSV for all years ------------------------
def v11_head(tmp_path, master_name="all_years.csv", master_folder=""):
    """``head/MY29/MDADMY29.nc``, ``head/MY30/MDADMY30.nc`` and one master CSV for both years."""
    head = tmp_path / "MDAD v1.1 é"  # spaces and non-ASCII in the path
    days, maps = cube_days()
    write_cube(head / "MY30" / "MDADMY30.nc", days, maps)
    b05 = np.zeros(GRID.shape, np.uint8)
    b05[5:7, 5:9] = 12
    write_cube(head / "MY29" / "MDADMY29.nc", ["B05_day03"], [b05], ls_values=[300.0])
    master = pd.concat([master_frame(), pd.DataFrame({
        "subphase": ["B05"], "sol": [3], "mem_ID": ["B05_012"], "seq_ID": [""], "confidence_flag": [75],
        "area": [1e4], "swathLs": [300.2], "centroid_lon": [-150.0], "centroid_lat": [60.0]})], ignore_index=True)
    (head / master_folder).mkdir(parents=True, exist_ok=True)
    master.to_csv(head / master_folder / master_name, index=False)
    return head


@pytest.mark.parametrize("master_folder", ["", "tables/v1.1"])
def test_head_folder_with_one_master_for_all_years(tmp_path, master_folder, recwarn):
    head = v11_head(tmp_path, master_folder=master_folder)
    df = read_catalog(head)
    assert sorted(df["mars_year"].unique()) == [29, 30] and len(df) == 5
    assert df.set_index("member_id").loc["B05_012", "mars_year"] == 29
    assert df["polygon_wkt"].notna().all()
    assert any("all_years.csv" in line and "MY29, MY30" in line for line in df.attrs["sources"])
    assert not [w for w in recwarn if "consistency" in str(w.message)]
    # a cube given alone finds the master above it; its rows are only its own days
    one = read_catalog(head / "MY29" / "MDADMY29.nc")
    assert list(one["member_id"]) == ["B05_012"]


def test_master_named_explicitly(tmp_path):
    head = v11_head(tmp_path, master_folder="elsewhere")
    (head / "elsewhere" / "all_years.csv").rename(tmp_path / "mdad_master.txt.csv")
    with pytest.raises(CatalogError, match="no master CSV.*--master"):
        read_catalog(head)
    df = read_catalog(head, master=tmp_path / "mdad_master.txt.csv")
    assert len(df) == 5
    with pytest.raises(CatalogError, match="v1.1 master CSV.*--master"):
        read_catalog(tmp_path / "mdad_master.txt.csv")


def test_two_masters_equally_near_are_refused(tmp_path):
    head = v11_head(tmp_path)
    master_frame().to_csv(head / "second.csv", index=False)
    with pytest.raises(CatalogError, match="several master CSVs.*--master"):
        read_catalog(head)


def test_master_and_v10_table_without_double_counting(tmp_path):
    head = v11_head(tmp_path)
    pd.DataFrame([
        [28, "B01", 1, 100.0, 350.0, 5.0, 1.0, 50, "B01_001", ""],
        [30, "D01", 5, 10.0, 1.0, 5.0, 2.0, 75, "D01_031", "S1"],  # MY30 comes from the cube
    ], columns=REAL_HEADERS).to_csv(head / "MDAD.csv", index=False)
    df = read_catalog(head)
    assert sorted(df["mars_year"].tolist()) == [28, 29, 30, 30, 30, 30]
    sources = " | ".join(df.attrs["sources"])
    assert "v1.0 MDAD.csv: 1 rows (MY28); 1 rows of MY30 left to the cubes" in sources


def test_joined_member_ids_take_the_first_members_pixels(tmp_path):
    head = tmp_path / "mdad"
    m18 = np.zeros(GRID.shape, np.uint8)
    m18[2:4, 2:4] = 50  # M17_050 continued onto an M18 day
    m18[20:22, 20:22] = 1  # M18_001's own pixels: not the joined instance's
    m18[30:32, 30:32] = 35
    m18[30:32, 40:42] = 36
    m18[40:42, 60:62] = 134  # G13_001b
    m18[40:42, 70:72] = 2
    write_cube(head / "MY31" / "MDADMY31.nc", ["M18_day04"], [m18])
    pd.DataFrame({"subphase": ["M18"] * 3, "sol": [4] * 3,
                  "mem_ID": ["M17_050+M18_001", "M13_035+036", "G13_001b+002+017"], "seq_ID": [""] * 3,
                  "confidence_flag": [100] * 3, "area": [1.0] * 3, "swathLs": [10.0] * 3,
                  "centroid_lon": [0.0] * 3, "centroid_lat": [0.0] * 3}).to_csv(head / "master.csv", index=False)
    outlines = read_catalog(head).set_index("member_id")["polygon_wkt"].map(wkt.loads)
    assert outlines["M17_050+M18_001"].bounds == pytest.approx((-172.0, 74.0, -164.0, 82.0))
    assert outlines["M13_035+036"].bounds == pytest.approx((-60.0, -38.0, -52.0, -30.0))  # 35 only
    assert outlines["G13_001b+002+017"].bounds == pytest.approx((60.0, -78.0, 68.0, -70.0))  # 134 only


def test_consistency_report_in_one_warning_and_strict(tmp_path):
    head = v11_head(tmp_path)
    master = pd.read_csv(head / "all_years.csv", keep_default_na=False)
    master.loc[0, "swathLs"] = 12.0  # cube median Ls of D01 sol 5 is 10°
    master.loc[1, "mem_ID"] = "D01_077"  # no pixels
    master = master.loc[master["subphase"] != "P09"]  # P09 sol 10 keeps its storm pixels
    master.to_csv(head / "all_years.csv", index=False)
    with pytest.warns(UserWarning) as record:
        read_catalog(head)
    messages = [str(w.message) for w in record if "consistency" in str(w.message)]
    assert len(messages) == 1
    assert "1 row(s) whose mask value has no pixels" in messages[0] and "row 3 (D01_077 on d01_005)" in messages[0]
    assert "1 row(s) whose swathLs differs" in messages[0] and "swathLs 12 vs 10" in messages[0]
    assert "1 cube time step(s) with storm pixels but no master row: MDADMY30.nc p09_010" in messages[0]
    with pytest.raises(CatalogError, match="MDAD consistency"):
        read_catalog(head, strict=True)


def test_catalog_command_on_the_v11_layout(tmp_path):
    from typer.testing import CliRunner

    from marsdust.cli import app

    head = v11_head(tmp_path, master_folder="elsewhere")
    master = head / "elsewhere" / "all_years.csv"
    out = tmp_path / "storms.csv"
    result = CliRunner().invoke(app, ["catalog", str(head), "--master", str(master), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "5 storms, MY29–MY30, 5 with outlines" in result.output and "source: v1.1" in result.output
    frame = pd.read_csv(master)
    frame.loc[0, "swathLs"] = 40.0
    frame.to_csv(master, index=False)
    result = CliRunner().invoke(app, ["catalog", str(head), "-o", str(out), "--strict"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "error: MDAD consistency: 1 row(s) whose swathLs differs" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_train_strict_stops_on_a_catalog_disagreement_before_training(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from marsdust.cli import app

    head = v11_head(tmp_path)
    frame = pd.read_csv(head / "all_years.csv", keep_default_na=False)
    frame.loc[0, "swathLs"] = 40.0
    frame.to_csv(head / "all_years.csv", index=False)
    archive = tmp_path / "archive"
    (archive / "D01").mkdir(parents=True)
    Image.fromarray(np.full((30, 90, 3), 100, np.uint8)).save(archive / "D01" / "d01_005.png")
    (archive / "D01" / "list_ls.txt").write_text("d01_005 30 10.0\n")
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--archive", str(archive), "--catalog", str(head), "--strict",
                                      "-o", str(run), "--quiet"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "error: MDAD consistency: 1 row(s) whose swathLs differs" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not run.exists()  # stopped while reading the tables, before the run folder was made


def test_exact_duplicate_rows_are_dropped_with_a_warning(tmp_path):
    path = tmp_path / "MDAD.csv"
    v10_frame(rows=ROWS + [ROWS[0]]).to_csv(path, index=False)
    with pytest.warns(UserWarning, match=r"dropped 1 exact duplicate row\(s\) \(spreadsheet rows 5\)"):
        assert len(read_catalog(path)) == 3


def test_netcdf_without_expected_variables(tmp_path):
    folder = tmp_path / "MY30"
    folder.mkdir()
    with netCDF4.Dataset(folder / "MDADMY30.nc", "w") as ds:
        ds.createDimension("x", 3)
        ds.createVariable("other", "f4", ("x",))[:] = 0
    master_frame().to_csv(folder / "MDAD_MY30_master.csv", index=False)
    with pytest.raises(CatalogError, match=r"MDADMY30\.nc: no variable 'MDAD'"):
        read_catalog(folder / "MDADMY30.nc")
    (folder / "MDAD_MY30_master.csv").unlink()
    with pytest.raises(CatalogError, match="no master CSV beside it.*--master"):
        read_catalog(folder / "MDADMY30.nc")


def test_not_netcdf_and_empty_folder(tmp_path):
    path = tmp_path / "MDADMY30.nc"
    path.write_text("hello")
    (tmp_path / "MDAD_MY30_master.csv").write_text(master_frame().to_csv(index=False))
    with pytest.raises(CatalogError, match="not a readable netCDF"):
        read_catalog(path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CatalogError, match="no MDAD table"):
        read_catalog(empty)


# --- cloud masks ------------------------------------------------------------------------------
def test_read_cloud_mask(tmp_path):
    path = tmp_path / "cloud.nc"
    lon = np.array([0.0, 90.0, 180.0, 270.0])
    lat = np.array([-45.0, 45.0])
    values = np.array([[-999, 0, 3, 1], [0, 0, -999, 2]], dtype=np.int16)  # (lat, lon)
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("longitude", 4)
        ds.createDimension("latitude", 2)
        ds.createVariable("longitude", "f8", ("longitude",))[:] = lon
        ds.createVariable("latitude", "f8", ("latitude",))[:] = lat
        ds.createVariable("cloudmask", "i2", ("longitude", "latitude"))[:] = values.T
    ds = read_cloud_mask(path)
    np.testing.assert_allclose(ds["longitude"], [-180.0, -90.0, 0.0, 90.0])
    np.testing.assert_allclose(ds["latitude"], [45.0, -45.0])
    assert ds["cloudy"].dims == ("latitude", "longitude")
    # north row (45°N), lon -180, -90, 0, 90 -> original columns 180, 270, 0, 90
    np.testing.assert_array_equal(ds["valid"].values[0], [False, True, True, True])
    np.testing.assert_array_equal(ds["cloudy"].values[0], [False, True, False, False])
    np.testing.assert_array_equal(ds["cloudy"].values[1], [True, True, False, False])
    bad = tmp_path / "bad.nc"
    with netCDF4.Dataset(bad, "w") as nc:
        nc.createDimension("x", 2)
        nc.createVariable("cloud", "i2", ("x",))[:] = 0
    with pytest.raises(CatalogError, match="no variable 'cloudmask'"):
        read_cloud_mask(bad)
