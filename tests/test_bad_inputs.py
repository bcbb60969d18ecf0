"""A corpus of bad inputs fed to every command through Typer's CliRunner.

Each bad input must end in one line ``error: ...`` naming the file (and row, column or variable
where there is one), exit code 1 (a data error; 2 is kept for wrong command lines) and no traceback;
a map that cannot be read is one
``error`` row of ``maps.csv``, not the end of a ``detect`` run. Inputs are hand-built and tiny.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from mdad_cube_files import write_cube_dir

from marsdust.cli import app
from marsdust.models import build_model, save_checkpoint

runner = CliRunner()
MASTER_HEADER = "subphase,sol,mem_ID,seq_ID,confidence_flag,area,swathLs,centroid_lon,centroid_lat\n"
V10_HEADER = "Mars Year,Mission subphase,Sol,Ls,Centroid longitude,Centroid latitude,Area (square km)," \
             "Confidence interval,Member ID,Sequence ID\n"


def assert_one_line_error(result, *words):
    """Exit code 1 (a data error, docs/cli.md), one ``error:`` line holding every one of ``words``, no traceback."""
    output = result.output.strip()
    assert result.exit_code == 1, (result.exit_code, output)
    assert "Traceback" not in output, output
    lines = output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), output
    for word in words:
        assert word in lines[0], (word, output)


@pytest.fixture
def odd_dir(tmp_path):
    """A folder whose path has spaces and non-ASCII characters."""
    folder = tmp_path / "données de Mars ☄"
    folder.mkdir()
    return folder


def blocked_output(folder):
    """An output path that cannot be written (its parent is a file), also for root."""
    blocker = folder / "not a folder"
    blocker.write_text("a file")
    return blocker / "out.csv"


# --- catalog ----------------------------------------------------------------------------------
V10_ROW = "24,R18,40,150.5,10.0,10.0,120000,100,R18_031,S001\n"
CATALOG_CASES = {
    "nan latitude": (V10_ROW.replace("150.5,10.0,10.0", "150.5,10.0,nan"), ("row 3", "Centroid latitude")),
    "latitude out of range": (V10_ROW.replace("150.5,10.0,10.0", "150.5,10.0,95"), ("row 3", "Centroid latitude")),
    "longitude out of range": (V10_ROW.replace("150.5,10.0", "150.5,400"), ("row 3", "Centroid longitude")),
    "Ls out of range": (V10_ROW.replace("150.5", "365"), ("row 3", "'Ls'")),
    "malformed member id": (V10_ROW.replace("R18_031", "R18-031"), ("row 3", "Member ID")),
    "member number too large": (V10_ROW.replace("R18_031", "R18_200"), ("row 3", "Member ID")),
    "negative area": (V10_ROW.replace("120000", "-5"), ("row 3", "Area (square km)")),
    "empty sol": (V10_ROW.replace(",40,", ",,"), ("row 3", "Sol")),
    "Mars year 1e12": (V10_ROW.replace("24,", "1e12,", 1), ("row 3", "Mars Year", "[1, 100]")),
    "Mars year 25.5": (V10_ROW.replace("24,", "25.5,", 1), ("row 3", "Mars Year")),
}


@pytest.mark.parametrize("case", sorted(CATALOG_CASES))
def test_catalog_bad_rows(odd_dir, case):
    row, words = CATALOG_CASES[case]
    table = odd_dir / "MDAD v1.0.csv"
    table.write_text(V10_HEADER + V10_ROW + row, encoding="utf-8")
    result = runner.invoke(app, ["catalog", str(table), "-o", str(odd_dir / "storms.csv")])
    assert_one_line_error(result, "MDAD v1.0.csv", *words)


def test_catalog_longitudes_0_to_360_are_read(odd_dir):
    table = odd_dir / "MDAD.csv"
    table.write_text(V10_HEADER + V10_ROW.replace("150.5,10.0", "150.5,350.0"), encoding="utf-8")
    result = runner.invoke(app, ["catalog", str(table), "-o", str(odd_dir / "storms.csv")])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(odd_dir / "storms.csv")["lon"].tolist() == [-10.0]


def write_tiny_cube(path, variables=("MDAD", "dayList"), n_time=1, n_lon=90):
    """A cube of ``n_time`` days at ``360 / n_lon`` degrees, only its first day's values written (zlib: a
    few KB on disk whatever it declares)."""
    import netCDF4

    path.parent.mkdir(parents=True, exist_ok=True)
    n_lat = n_lon // 2 + 1
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", n_time)
        ds.createDimension("longitude", n_lon)
        ds.createDimension("latitude", n_lat)
        ds.createVariable("longitude", "f8", ("longitude",))[:] = -180.0 + 360.0 / n_lon * (np.arange(n_lon) + 0.5)
        ds.createVariable("latitude", "f8", ("latitude",))[:] = np.linspace(-90, 90, n_lat)
        if "MDAD" in variables:
            ds.createVariable("MDAD", "u1", ("time", "longitude", "latitude"), zlib=True)[0] = 0
        if "dayList" in variables:
            ds.createVariable("dayList", str, ("time",))[0] = "D01_day05"
    return path


CUBE_CASES = {
    "truncated netCDF": ("truncate", ("MDADMY30.nc", "not a readable netCDF")),
    "zero-byte netCDF": ("empty", ("MDADMY30.nc", "not a readable netCDF")),
    "cube without MDAD": (("dayList",), ("MDADMY30.nc", "no variable 'MDAD'")),
    "cube without dayList": (("MDAD",), ("MDADMY30.nc", "no variable 'dayList'")),
}


@pytest.mark.parametrize("case", sorted(CUBE_CASES))
def test_catalog_bad_cubes(odd_dir, case):
    how, words = CUBE_CASES[case]
    cube = odd_dir / "MY30" / "MDADMY30.nc"
    write_tiny_cube(cube, how if isinstance(how, tuple) else ("MDAD", "dayList"))
    if how == "truncate":
        cube.write_bytes(cube.read_bytes()[:200])
    elif how == "empty":
        cube.write_bytes(b"")
    (odd_dir / "MY30" / "master.csv").write_text(MASTER_HEADER + "D01,5,D01_001,,100,1,10,0,0\n")
    result = runner.invoke(app, ["catalog", str(odd_dir), "-o", str(odd_dir / "storms.csv")])
    assert_one_line_error(result, *words)


@pytest.mark.parametrize("n_time, n_lon, words", [
    (1_000_000, 90, ("(time: 1,000,000 values)", "100 Mars years")),  # 13 KB declaring 2 GB of fill values
    (1, 36_000, ("longitude × latitude: 648,036,000 values", "0.05°")),  # a 0.01° grid: 648 MB for one day
])
def test_catalog_cube_declaring_more_than_a_cube_holds(odd_dir, n_time, n_lon, words):
    write_tiny_cube(odd_dir / "MY30" / "MDADMY30.nc", n_time=n_time, n_lon=n_lon)
    (odd_dir / "MY30" / "master.csv").write_text(MASTER_HEADER + "D01,5,D01_001,,100,1,10,0,0\n")
    result = runner.invoke(app, ["catalog", str(odd_dir), "-o", str(odd_dir / "storms.csv")])
    assert_one_line_error(result, "MDADMY30.nc", "variable 'MDAD' declares", *words)


@pytest.mark.parametrize("column, change, words", [
    ("area", lambda values: values * 10, ("area differs", "D01_031")),
    ("centroid_lat", lambda values: -values, ("centroid lies", "D01_031")),
])
def test_catalog_strict_master_disagreeing_with_its_cube(odd_dir, column, change, words):
    cube_dir = write_cube_dir(odd_dir / "MY30")  # master areas and centroids as in the cube
    master_path = cube_dir / "MDAD_MY30_master.csv"
    result = runner.invoke(app, ["catalog", str(odd_dir), "-o", str(odd_dir / "storms.csv"), "--strict"])
    assert result.exit_code == 0, result.output
    master = pd.read_csv(master_path, keep_default_na=False)
    master[column] = change(master[column])
    master.to_csv(master_path, index=False)
    result = runner.invoke(app, ["catalog", str(odd_dir), "-o", str(odd_dir / "storms.csv"), "--strict"])
    assert_one_line_error(result, "MDAD consistency", "MDAD_MY30_master.csv", *words)


def test_catalog_master_with_a_v10_table_is_refused(odd_dir):
    table = odd_dir / "MDAD.csv"
    table.write_text(V10_HEADER + V10_ROW, encoding="utf-8")
    master = odd_dir / "master.csv"
    master.write_text(MASTER_HEADER + "D01,5,D01_001,,100,1,10,0,0\n")
    for source in (table, odd_dir):
        result = runner.invoke(app, ["catalog", str(source), "--master", str(master), "-o", str(odd_dir / "s.csv")])
        assert_one_line_error(result, "--master", "v1.0")


def test_catalog_unwritable_output(odd_dir):
    table = odd_dir / "MDAD.csv"
    table.write_text(V10_HEADER + V10_ROW, encoding="utf-8")
    result = runner.invoke(app, ["catalog", str(table), "-o", str(blocked_output(odd_dir))])
    assert_one_line_error(result, "not a folder")


# --- index ------------------------------------------------------------------------------------
def test_index_bad_inputs(odd_dir):
    result = runner.invoke(app, ["index", str(odd_dir / "no archive"), "-o", str(odd_dir / "i.csv")])
    assert_one_line_error(result, "no archive")
    index = odd_dir / "index.csv"
    index.write_text("map_id,subphase,sol,mars_year,ls,path\nr18_040,R18,40,25,abc,r18_040.png\n")
    result = runner.invoke(app, ["index", str(index), "-o", str(odd_dir / "i2.csv")])
    assert_one_line_error(result, "index.csv", "row 2", "'ls'")
    archive = odd_dir / "archive" / "R18"
    archive.mkdir(parents=True)
    (archive / "list_ls.txt").write_text("r18_040 25 150\n")
    result = runner.invoke(app, ["index", str(odd_dir / "archive"), "-o", str(blocked_output(odd_dir))])
    assert_one_line_error(result, "not a folder")


def test_index_list_ls_bomb_is_a_problem_not_a_crash(odd_dir):
    """A 17 KB tar.gz whose list_ls.txt expands past MAX_LIST_LS_BYTES: its subphase is a problem, the others indexed."""
    import io
    import tarfile

    from marsdust.mdgm import MAX_LIST_LS_BYTES

    archive = one_map_archive(odd_dir / "archive")
    with tarfile.open(archive / "B01.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("B01/list_ls.txt")
        info.size = MAX_LIST_LS_BYTES + 1
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    result = runner.invoke(app, ["index", str(archive), "-o", str(odd_dir / "i.csv")])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    warning = next(line for line in result.output.splitlines() if line.startswith("warning:"))
    assert "B01.tar.gz::B01/list_ls.txt: unreadable_list_ls" in warning and "16,777,216" in warning
    assert pd.read_csv(odd_dir / "i.csv")["map_id"].tolist() == ["r18_001"]


# --- track / climatology -------------------------------------------------------------------------
STORM_HEADER = "map_id,subphase,sol,mars_year,ls,lon,lat,area_km2,polygon_wkt\n"
STORM_ROW = 'r18_041,R18,41,25,100.5,10.0,20.0,500000,"POLYGON ((5 15, 15 15, 15 25, 5 25, 5 15))"\n'
STORM_CASES = {  # the second data row (spreadsheet row 3) changed -> words of the error
    "latitude 150": (("20.0,500000", "150,500000"), ("row 3", "'lat'", "[-90, 90]")),
    "longitude 360": (("10.0,20.0", "360,20.0"), ("row 3", "'lon'", "[-180, 180]")),
    "longitude inf": (("10.0,20.0", "inf,20.0"), ("row 3", "'lon'")),
    "negative area": (("500000", "-5e5"), ("row 3", "'area_km2'", "> 0")),
    "Ls 400": (("100.5", "400"), ("row 3", "'ls'", "[0, 360)")),
    "Mars year -3": ((",25,", ",-3,"), ("row 3", "'mars_year'", "[1, 100]")),
    "Mars year 25.5": ((",25,", ",25.5,"), ("row 3", "'mars_year'")),
    "Mars year 1e12": ((",25,", ",1e12,"), ("row 3", "'mars_year'")),
    "empty map id": (("r18_041,", ","), ("row 3", "'map_id'")),
    "unparsable WKT": (("POLYGON ((5 15, 15 15", "POLYGON ((5 15 15 15"), ("row 3", "'polygon_wkt'", "WKT")),
    "empty sol": ((",41,", ",,"), ("row 3", "'sol'")),
}


def storm_table(folder, case=None):
    """A two-row storm table (``catalog`` output columns), its second row changed by ``STORM_CASES[case]``."""
    second = STORM_ROW if case is None else STORM_ROW.replace(*STORM_CASES[case][0])
    path = folder / "storms table.csv"
    path.write_text(STORM_HEADER + STORM_ROW.replace("r18_041,R18,41", "r18_040,R18,40") + second, encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["track", "climatology"])
@pytest.mark.parametrize("case", sorted(STORM_CASES))
def test_storm_table_bad_values(odd_dir, command, case):
    table = storm_table(odd_dir, case)
    result = runner.invoke(app, [command, str(table), "-o", str(odd_dir / ("t.csv" if command == "track" else "c"))])
    assert_one_line_error(result, "storms table.csv", *STORM_CASES[case][1])


TRACK_OPTION_CASES = {
    "--max-ls-gap-deg": ("inf", "--max-ls-gap-deg"),
    "--size-factor": ("-5", "--size-factor"),
    "--min-link-km": ("nan", "--min-link-km"),
    "--min-iou": ("nan", "--min-iou"),
}


@pytest.mark.parametrize("option", sorted(TRACK_OPTION_CASES))
def test_track_bad_options(odd_dir, option):
    value, word = TRACK_OPTION_CASES[option]
    table = storm_table(odd_dir)
    result = runner.invoke(app, ["track", str(table), "-o", str(odd_dir / "t.csv"), option, value])
    assert_one_line_error(result, word, "finite")


def test_track_outputs_that_collide_or_cannot_be_written(odd_dir):
    table = storm_table(odd_dir)
    result = runner.invoke(app, ["track", str(table), "-o", str(odd_dir / "t.csv"), "--members", str(odd_dir / "t.csv")])
    assert_one_line_error(result, "--members", "t.csv", "same file")
    assert not (odd_dir / "t.csv").exists()
    (odd_dir / "a folder").mkdir()
    result = runner.invoke(app, ["track", str(table), "-o", str(odd_dir / "a folder")])
    assert_one_line_error(result, "a folder", "is a folder")
    result = runner.invoke(app, ["track", str(table), "-o", "/proc/no such folder/x.csv"])
    assert_one_line_error(result, "x.csv", "cannot write")
    assert "disk is full" not in result.output
    result = runner.invoke(app, ["track", str(table), "-o", str(blocked_output(odd_dir))])
    assert_one_line_error(result, "not a folder")


def test_climatology_output_that_is_a_file(odd_dir):
    table = storm_table(odd_dir)
    (odd_dir / "figures").write_text("a file")
    result = runner.invoke(app, ["climatology", str(table), "-o", str(odd_dir / "figures")])
    assert_one_line_error(result, "figures", "is a file")


def test_climatology_rerun_without_truth_removes_the_earlier_comparison_only(odd_dir):
    table = storm_table(odd_dir)
    out = odd_dir / "figures"
    result = runner.invoke(app, ["climatology", str(table), "-o", str(out), "--truth", str(table)])
    assert result.exit_code == 0, result.output
    assert (out / "detected_vs_catalogued.csv").is_file() and (out / "detected_vs_catalogued.png").is_file()
    (out / "notes.txt").write_text("mine")
    (out / ".marsdust-members.png.k2x9.tmp.png").write_bytes(b"left by a killed run")
    (out / ".marsdust-mine.k2x9.tmp.png").write_bytes(b"not a figure of climatology: kept")
    result = runner.invoke(app, ["climatology", str(table), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{name}.{ext}" for name in ("ls_lat", "area_per_sol", "members", "sequence_paths") for ext in ("csv", "png")]
        + ["notes.txt", ".marsdust-mine.k2x9.tmp.png"])


def test_formulas_in_free_text_are_neutralized_in_track_outputs(odd_dir):
    table = storm_table(odd_dir)
    frame = pd.read_csv(table)
    frame["note"] = ['=HYPERLINK("http://example.invalid","click")', "@SUM(A1:A9)"]
    frame.to_csv(table, index=False)
    result = runner.invoke(app, ["track", str(table), "-o", str(odd_dir / "t.csv")])
    assert result.exit_code == 0, result.output
    notes = pd.read_csv(odd_dir / "t.csv")["note"].tolist()
    assert notes == ["'=HYPERLINK(\"http://example.invalid\",\"click\")", "'@SUM(A1:A9)"]


def test_good_storm_table_is_tracked(odd_dir):
    table = storm_table(odd_dir)
    (odd_dir / ".marsdust-t.csv.k2x9.tmp.csv").write_text("left by a killed run")
    result = runner.invoke(app, ["track", str(table), "-o", str(odd_dir / "t.csv")])
    assert not (odd_dir / ".marsdust-t.csv.k2x9.tmp.csv").exists()
    assert result.exit_code == 0, result.output
    assert pd.read_csv(odd_dir / "t.csv")["member_id"].tolist() == ["R18_001"] * 2


# --- detect -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_detector):
    folder = tmp_path_factory.mktemp("ckpt")
    return save_checkpoint(build_model("dustrcnn", map_res_deg=1.6, **tiny_detector), folder / "tiny model.ckpt")


@pytest.fixture(scope="module")
def storm_checkpoint(tmp_path_factory):
    """A detector that finds a storm on every map (:func:`marsdust.models.always_storm_detector`), whatever ran
    before in the process (a random-weights detector's output depends on the torch seed it happens to meet)."""
    from marsdust.models import always_storm_detector

    return save_checkpoint(always_storm_detector(1.6), tmp_path_factory.mktemp("storm") / "storm.ckpt")


def good_map(height=75, width=225):
    rng = np.random.default_rng(0)
    return rng.integers(30, 200, (height, width, 3), dtype=np.uint8)


BAD_MAPS = {
    "r18_002": ("zero-byte", lambda p: p.write_bytes(b"")),
    "r18_003": ("truncated", lambda p: p.write_bytes(_png_bytes(good_map())[:300])),
    "r18_004": ("mislabelled text", lambda p: p.write_text("this is not an image")),
    "r18_005": ("grayscale", lambda p: Image.fromarray(good_map()[..., 0], "L").save(p)),
    "r18_006": ("16-bit", lambda p: Image.fromarray(good_map()[..., 0].astype(np.uint16) * 200).save(p)),
    "r18_007": ("wrong shape", lambda p: Image.fromarray(good_map(100, 100)).save(p)),
    "r18_008": ("JPEG named .png", lambda p: Image.fromarray(good_map()).save(p, format="JPEG")),
    "r18_009": ("image data of half its rows", lambda p: p.write_bytes(_half_png_bytes(good_map()))),
}


def _png_bytes(rgb):
    import io

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _half_png_bytes(rgb):
    """A PNG whose IDAT is one complete zlib stream of only the first half of its rows (PIL reads it without error)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = rgb.shape
    raw = b"".join(b"\0" + row.tobytes() for row in rgb[: height // 2])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_detect_bad_maps_are_error_rows_naming_the_file(odd_dir, checkpoint):
    folder = odd_dir / "archive" / "R18"
    folder.mkdir(parents=True)
    Image.fromarray(good_map()).save(folder / "r18_001.png")
    lines = ["r18_001 25 100"]
    for map_id, (_, make) in BAD_MAPS.items():
        make(folder / f"{map_id}.png")
        lines.append(f"{map_id} 25 {100 + int(map_id[-1])}")
    (folder / "list_ls.txt").write_text("\n".join(lines) + "\n")
    out = odd_dir / "out put"
    result = runner.invoke(app, ["detect", str(checkpoint), str(odd_dir / "archive"), "-o", str(out), "--quiet",
                                 "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "score threshold 0.5: default (the checkpoint stores no validated threshold)" in result.output
    maps = pd.read_csv(out / "maps.csv", keep_default_na=False).set_index("map_id")
    jpeg_read = maps.loc["r18_008", "status"] == "ok"  # a JPEG named .png is still an RGB map: read as one
    bad = [m for m in BAD_MAPS if m != "r18_008" or not jpeg_read]
    assert maps.loc["r18_001", "status"] == "ok"
    for map_id in bad:
        error = maps.loc[map_id, "error"]
        assert maps.loc[map_id, "status"] == "error" and f"{map_id}.png" in error, (BAD_MAPS[map_id][0], error)
        assert "\n" not in error


def test_detect_odd_map_names_do_not_stop_the_run(odd_dir, storm_checkpoint, caplog):
    """A 240-character loose map name (its part file too long before), a name that is no map id, and one that is
    not UTF-8 (surrogates not allowed before, naming no file): the first two are detected, the last left out."""
    import os

    folder = odd_dir / "maps"
    folder.mkdir()
    long_name = "x" * 240
    for name in ("r18_001", long_name, "my map"):
        Image.fromarray(good_map()).save(folder / f"{name}.png")
    Image.fromarray(good_map()).save(os.fsencode(folder) + b"/bad\xff\xfename.png")
    out = odd_dir / "out"
    result = runner.invoke(app, ["detect", str(storm_checkpoint), str(folder), "-o", str(out), "--quiet",
                                 "--threads", "1", "--score-threshold", "0"])  # detections on every map: the master CSV leaves out
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output  # the maps naming no sol
    assert "bad\\xff\\xfename.png: left out: its file name is not UTF-8" in caplog.text
    maps = pd.read_csv(out / "maps.csv", keep_default_na=False)
    assert sorted(maps["map_id"]) == sorted(["r18_001", long_name, "my map"]) and (maps["status"] == "ok").all()
    detected = pd.read_csv(out / "detections.csv", keep_default_na=False)
    assert set(detected["map_id"]) == {"r18_001", long_name, "my map"}
    assert len(pd.read_csv(out / "masks_master.csv")) == (detected["map_id"] == "r18_001").sum()
    result = runner.invoke(app, ["detect", str(storm_checkpoint), str(folder), "-o", str(odd_dir / "out2"), "--quiet",
                                 "--threads", "1", "--quicklook"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (odd_dir / "out2" / "quicklook").iterdir()) == sorted([
        "r18_001.png", "my_map~" + __import__("hashlib").sha256(b"my map").hexdigest()[:16] + ".png",
        "x" * 40 + "~" + __import__("hashlib").sha256(long_name.encode()).hexdigest()[:16] + ".png"])


def test_index_map_name_that_is_not_utf8_is_a_problem_naming_it(odd_dir):
    import os

    archive = one_map_archive(odd_dir / "archive")
    Image.fromarray(good_map()).save(os.fsencode(archive / "R18") + b"/r18_\xff02.png")
    result = runner.invoke(app, ["index", str(archive), "-o", str(odd_dir / "i.csv")])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "undecodable_name: " in result.output and "r18_\\xff02.png: the file name is not UTF-8" in result.output
    assert pd.read_csv(odd_dir / "i.csv")["map_id"].tolist() == ["r18_001"]


@pytest.mark.parametrize("kind", ["foreign", "truncated", "random", "empty"])
def test_detect_bad_checkpoints(odd_dir, checkpoint, kind):
    import random

    import torch

    bad = odd_dir / f"{kind} é.ckpt"
    if kind == "foreign":
        torch.save({"weights": torch.zeros(3)}, bad)
    elif kind == "truncated":
        bad.write_bytes(checkpoint.read_bytes()[:5000])
    elif kind == "random":
        bad.write_bytes(random.Random(1).randbytes(3000))
    else:
        bad.write_bytes(b"")
    folder = odd_dir / "archive" / "R18"
    folder.mkdir(parents=True)
    Image.fromarray(good_map()).save(folder / "r18_001.png")
    (folder / "list_ls.txt").write_text("r18_001 25 100\n")
    result = runner.invoke(app, ["detect", str(bad), str(odd_dir / "archive"), "-o", str(odd_dir / "out"), "--quiet"])
    assert_one_line_error(result, f"{kind} é.ckpt")


def test_detect_unwritable_output_folder(odd_dir, checkpoint):
    folder = odd_dir / "archive" / "R18"
    folder.mkdir(parents=True)
    Image.fromarray(good_map()).save(folder / "r18_001.png")
    (folder / "list_ls.txt").write_text("r18_001 25 100\n")
    blocker = odd_dir / "blocker"
    blocker.write_text("a file")
    result = runner.invoke(app, ["detect", str(checkpoint), str(odd_dir / "archive"), "-o", str(blocker / "out"),
                                 "--quiet"])
    assert_one_line_error(result, "blocker")


def one_map_archive(folder):
    (folder / "R18").mkdir(parents=True)
    Image.fromarray(good_map()).save(folder / "R18" / "r18_001.png")
    (folder / "R18" / "list_ls.txt").write_text("r18_001 25 100\n")
    return folder


def test_detect_resume_with_other_inputs_is_refused(odd_dir, checkpoint, tiny_detector):
    pytest.importorskip("onnxruntime")
    from marsdust.detect import export_backbone_onnx

    archive = one_map_archive(odd_dir / "archive")
    history = one_map_archive(odd_dir / "history")
    (history / "R18" / "r18_001.png").rename(history / "R18" / "r18_000.png")
    (history / "R18" / "list_ls.txt").write_text("r18_000 25 99\n")
    out = odd_dir / "out"
    base = ["detect", str(checkpoint), str(archive), "-o", str(out), "--quiet", "--threads", "1"]
    assert runner.invoke(app, base).exit_code == 0
    result = runner.invoke(app, base + ["--history", str(history)])
    assert_one_line_error(result, "other settings", "history_maps")
    other = export_backbone_onnx(build_model("dustrcnn", map_res_deg=1.6, **tiny_detector).eval(),
                                 odd_dir / "other model.onnx")
    result = runner.invoke(app, base + ["--onnx-model", str(other), "--engine", "onnx"])
    assert_one_line_error(result, "other settings", "onnx_model_sha256")
    result = runner.invoke(app, base + ["--onnx-model", str(other), "--engine", "onnx", "--overwrite"])
    assert_one_line_error(result, "other model.onnx", "another detector")


def test_detect_lock_file_that_is_a_link(odd_dir, checkpoint):
    archive = one_map_archive(odd_dir / "archive")
    out = odd_dir / "out"
    out.mkdir()
    target = odd_dir / "precious.txt"
    target.write_text("keep me")
    (out / ".marsdust-detect.lock").symlink_to(target)
    result = runner.invoke(app, ["detect", str(checkpoint), str(archive), "-o", str(out), "--quiet"])
    assert_one_line_error(result, ".marsdust-detect.lock", "symbolic link")
    assert target.read_text() == "keep me"


def test_detect_broken_list_ls(odd_dir, checkpoint):
    folder = odd_dir / "archive" / "R18"
    folder.mkdir(parents=True)
    Image.fromarray(good_map()).save(folder / "r18_001.png")
    (folder / "list_ls.txt").write_text("r18_001 25 400\n")
    result = runner.invoke(app, ["detect", str(checkpoint), str(odd_dir / "archive"), "-o", str(odd_dir / "out"),
                                 "--quiet"])
    assert_one_line_error(result, "archive")


# --- evaluate / train -------------------------------------------------------------------------
def test_evaluate_foreign_checkpoint(odd_dir):
    import torch

    bad = odd_dir / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, bad)
    result = runner.invoke(app, ["evaluate", str(bad), "--data", str(odd_dir), "-o", str(odd_dir / "eval")])
    assert_one_line_error(result, "foreign.ckpt")


@pytest.mark.parametrize("command", ["export-onnx", "adapt"])
def test_checkpoint_commands_name_a_damaged_checkpoint(odd_dir, command):
    damaged = odd_dir / "damaged model.ckpt"
    damaged.write_bytes(b"not a checkpoint at all")
    target = ["-o", str(odd_dir / "out.onnx")] if command == "export-onnx" else [str(odd_dir), "-o",
                                                                                 str(odd_dir / "adapted.ckpt")]
    result = runner.invoke(app, [command, str(damaged), *target])
    assert_one_line_error(result, "damaged model.ckpt", "not a checkpoint")
    assert not (odd_dir / "out.onnx").exists() and not (odd_dir / "adapted.ckpt").exists()


def test_show_names_a_missing_folder_and_unknown_map_ids(odd_dir):
    result = runner.invoke(app, ["show", str(odd_dir / "nowhere"), "-o", str(odd_dir / "maps.png")])
    assert_one_line_error(result, "nowhere")
    archive = odd_dir / "archive" / "R18"
    archive.mkdir(parents=True)
    Image.fromarray(good_map()).save(archive / "R18_001.png")
    (archive / "list_ls.txt").write_text("R18_001.png 28 10.0\n")
    (odd_dir / "truth").mkdir()
    (odd_dir / "truth" / "storms.csv").write_text("map_id,polygon_wkt\n")
    result = runner.invoke(app, ["show", str(odd_dir), "--map-ids", "r18_001,r18_999", "-o", str(odd_dir / "m.png")])
    assert_one_line_error(result, "r18_999")
    assert not (odd_dir / "maps.png").exists() and not (odd_dir / "m.png").exists()


def _declaring_300000_time_steps(path):
    import netCDF4

    path.unlink()
    with netCDF4.Dataset(path, "w") as ds:  # 13 KB declaring 37.7 GiB
        for name, size in (("time", 300_000), ("latitude", 150), ("longitude", 450)):
            ds.createDimension(name, size)
        ds.createVariable("latitude", "f8", ("latitude",))[:] = 59.6 - 0.8 * np.arange(150)
        ds.createVariable("longitude", "f8", ("longitude",))[:] = -179.6 + 0.8 * np.arange(450)
        ds.createVariable("cloudmask", "i2", ("time", "latitude", "longitude"), zlib=True)


def _rewritten(path, change):
    """The mask rewritten with its grid, its values changed by ``change(values, grid)`` -> (values, grid)."""
    from marsdust.formats.cloud_mask import read_cloud_mask, write_cloud_mask
    from marsdust.grid import MapGrid

    values = read_cloud_mask(path)["cloudmask"].values
    values, grid = change(values, MapGrid.from_shape(*values.shape))
    path.unlink()
    write_cloud_mask(path, values, grid)


CLOUD_MASK_CASES = {  # damage done to every mask -> words of the error
    "declares 300000 time steps": (_declaring_300000_time_steps, ("variable 'cloudmask' declares", "300000")),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:300]), ("not a readable netCDF",)),
    "value -5": (lambda p: _rewritten(p, lambda v, g: (np.full_like(v, -5), g)), ("holds -5", "-999")),
    "half the band": (lambda p: _rewritten(p, lambda v, g: (v[: len(v) // 2], g.__class__(60.0, 0.0, g.res_deg))),
                      ("does not match map",)),
}


@pytest.mark.parametrize("case", sorted(CLOUD_MASK_CASES))
def test_train_refuses_a_bad_cloud_mask_before_training(ci_data, tmp_path, case):
    import shutil

    damage, words = CLOUD_MASK_CASES[case]
    masks = tmp_path / "cloud masks"
    shutil.copytree(ci_data / "cloudmask", masks)
    for path in sorted(masks.rglob("*.nc")):
        damage(path)
    result = runner.invoke(app, ["train", "--data", str(ci_data), "-o", str(tmp_path / "run"), "--quiet",
                                 "--classes", "dust,cloud", "--cloud-masks", str(masks), "--num-workers", "2",
                                 "--model-preset", "small_cpu", "--map-res-deg", "1.6", "--max-steps", "2"])
    assert_one_line_error(result, str(masks), ".nc", *words)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_error_in_a_loader_worker_is_its_one_line_message(ci_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(ci_data / "archive", data / "archive")
    shutil.copytree(ci_data / "mdad", data / "mdad")
    for path in sorted((data / "archive").rglob("*.png")):
        path.write_bytes(path.read_bytes()[:300])
    result = runner.invoke(app, ["train", "--data", str(data), "-o", str(tmp_path / "run"), "--quiet",
                                 "--reference", "none", "--num-workers", "2", "--threads", "1",
                                 "--model-preset", "small_cpu", "--map-res-deg", "1.6", "--max-steps", "2"])
    assert_one_line_error(result, str(data / "archive"), ".png: corrupt or truncated image")
    assert "worker" not in result.output


def test_train_with_a_missing_catalog_and_a_bad_master(odd_dir):
    (odd_dir / "archive").mkdir()
    result = runner.invoke(app, ["train", "--data", str(odd_dir), "-o", str(odd_dir / "run"), "--quiet"])
    assert_one_line_error(result, "mdad")
    (odd_dir / "mdad").mkdir()
    Image.fromarray(good_map()).save(odd_dir / "archive" / "r18_001.png")
    (odd_dir / "archive" / "list_ls.txt").write_text("r18_001 25 100\n")
    result = runner.invoke(app, ["train", "--data", str(odd_dir), "--master", str(odd_dir / "nope.csv"),
                                 "-o", str(odd_dir / "run"), "--quiet"])
    assert_one_line_error(result, "nope.csv", "master CSV not found")
