"""marsdust.mdad, the catalog front door: files and folders → the storm table, v1.1 cubes joined to their master
CSVs with outlines, the consistency checks, the ``catalog`` command.

The formats themselves are tested by module in ``tests/formats/`` (``test_mdad_table.py``, ``test_mdad_cube.py``).
"""

import netCDF4
import numpy as np
import pandas as pd
import pytest
from shapely import wkt

from marsdust.formats.mdad_cube import instance_mask
from marsdust.formats.mdad_table import read_v10_table
from marsdust.grid import polygon_area_km2
from marsdust.mdad import read_catalog
from marsdust.mdad_format import STORM_COLUMNS, V10_COLUMNS, CatalogError

from mdad_cube_files import GRID, cube_days, master_frame, write_cube, write_cube_dir

REAL_HEADERS = list(V10_COLUMNS.values())


def test_v10_table_through_the_front_door(tmp_path):
    path = tmp_path / "MDAD.csv"
    rows = [[24, "R18", 40, 150.5, 350.0, 10.0, 120000.0, 100, "R18_031", "S001"],
            [25, "S20", 1, 2.0, 10.0, -5.0, 5000.0, 50, "S20_001b", ""]]
    pd.DataFrame(rows, columns=REAL_HEADERS).to_csv(path, index=False)
    pd.testing.assert_frame_equal(read_catalog(path), read_v10_table(path))


# --- v1.1 cubes with their master CSV ---------------------------------------------------------
@pytest.fixture
def cube_dir(tmp_path):
    return write_cube_dir(tmp_path / "mdad" / "MY30")


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
    assert by_member.loc["D01_031", "lon"] == pytest.approx(-178.0)  # the master's value
    assert by_member.loc["D01_031", "ls"] == pytest.approx(10.0)


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
        "area": [1.83e5], "swathLs": [300.2], "centroid_lon": [-152.0], "centroid_lat": [65.8]})], ignore_index=True)
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


def test_a_year_with_a_cube_keeps_the_v10_rows_of_maps_outside_the_cube(tmp_path):
    """MY29 has a cube for sol B05 3 only (its MARCI maps); the v1.0 rows of its other maps (MOC maps) stay."""
    head = v11_head(tmp_path)
    pd.DataFrame([
        [29, "B04", 7, 280.0, 20.0, 5.0, 3.0e5, 50, "B04_001", ""],  # MY29, a map no cube holds: kept
        [29, "B05", 3, 300.0, -150.0, 60.0, 1.0e4, 75, "B05_012", ""],  # the cube's day: left to the cube
        [30, "D01", 5, 10.0, 1.0, 5.0, 2.0, 75, "D01_031", "S1"],  # the cube's day: left to the cube
    ], columns=REAL_HEADERS).to_csv(head / "MDAD.csv", index=False)
    df = read_catalog(head)
    my29 = df[df["mars_year"] == 29].set_index("map_id")
    assert sorted(my29.index) == ["b04_007", "b05_003"]
    assert pd.isna(my29.loc["b04_007", "polygon_wkt"]) and my29.loc["b04_007", "member_id"] == "B04_001"
    assert isinstance(my29.loc["b05_003", "polygon_wkt"], str)  # the cube's row, with its outline
    assert len(df) == 6 and (df["member_id"] == "B05_012").sum() == 1
    sources = " | ".join(df.attrs["sources"])
    assert "v1.0 MDAD.csv: 1 rows (MY29); 2 rows of MY29, MY30 left to the cubes" in sources


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
    assert result.exit_code == 1 and "Traceback" not in result.output
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
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "error: MDAD consistency: 1 row(s) whose swathLs differs" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not run.exists()  # stopped while reading the tables, before the run folder was made


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


# --- the Mars year of a cube: name, else marsYear; a disagreement is refused ---------------------
def _marsdust_cube(path, years):
    """A cube written by marsdust (with ``marsYear``) holding one storm per step, and its master CSV."""
    from marsdust.formats.mdad_cube import MaskStep, write_mask_cube, write_master_csv

    labels = np.zeros(GRID.shape, np.uint8)
    labels[20:23, 40:44] = 1
    steps = [MaskStep("B05", sol, year, 10.0 * sol, labels) for sol, year in enumerate(years, start=1)]
    write_mask_cube(path, steps, GRID)
    from marsdust.outlines import mask_centroid_lonlat

    lon, lat = mask_centroid_lonlat(labels == 1, GRID)  # the master agrees with its cube
    rows = pd.DataFrame({"map_id": [f"b05_{s.sol:03d}" for s in steps], "ls": [s.ls_deg for s in steps],
                         "lon": lon, "lat": lat, "area_km2": GRID.mask_area_km2(labels == 1),
                         "member_id": ["B05_001"] * len(steps)})
    write_master_csv(rows, path.parent / "master.csv")
    return path


def test_cube_year_comes_from_marsyear_when_the_name_has_none(tmp_path):
    storms = read_catalog(_marsdust_cube(tmp_path / "det" / "masks.nc", [28, 28]))
    assert storms["mars_year"].tolist() == [28, 28] and len(storms) == 2


def test_cube_whose_marsyear_disagrees_with_its_name_is_refused(tmp_path):
    path = _marsdust_cube(tmp_path / "MY27" / "MDADMY27.nc", [28])
    with pytest.raises(CatalogError, match=r"MDADMY27.nc: named for MY27 but its marsYear variable holds MY28"):
        read_catalog(path)
    with pytest.raises(CatalogError, match=r"named for MY27 but its marsYear variable holds MY28"):
        read_catalog(tmp_path)


def test_cube_of_several_years_without_a_year_in_its_name_is_refused(tmp_path):
    path = _marsdust_cube(tmp_path / "det" / "masks.nc", [27, 28])
    with pytest.raises(CatalogError, match=r"masks.nc: holds several Mars years \(MY27, MY28\)"):
        read_catalog(path)
