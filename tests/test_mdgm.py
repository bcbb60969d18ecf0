"""marsdust.mdgm: reading maps (files, tar members), resampling, indexing archives."""

import logging
import tarfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from marsdust.grid import MapGrid
from marsdust.mdgm import (
    INDEX_COLUMNS,
    MAX_LIST_LS_BYTES,
    MapImage,
    MapReadError,
    downsample,
    index_archive,
    parse_list_ls,
    problems_table,
    read_bounded,
    read_map,
    read_map_array,
    read_map_resampled,
    save_index,
    working_grid,
)


def tiny_map(height=30, width=90, seed=0):
    """A uint8 RGB map with a black (missing) stripe in its top 5 rows."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(1, 256, (height, width, 3), dtype=np.uint8)
    rgb[:5] = 0
    return rgb


def write(path, rgb, **kwargs):
    Image.fromarray(rgb).save(path, **kwargs)
    return path


# --- read_map ---------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", ["png", "tif", "tiff"])
def test_read_lossless_formats_exactly(tmp_path, ext):
    rgb = tiny_map()
    image = read_map(write(tmp_path / f"r18_040.{ext}", rgb))
    assert isinstance(image, MapImage)
    assert image.rgb.dtype == np.float32 and image.rgb.shape == (30, 90, 3)
    np.testing.assert_allclose(image.rgb, rgb / 255.0, atol=1e-6)
    assert image.valid.dtype == bool
    assert not image.valid[:5].any() and image.valid[5:].all()
    assert image.grid == MapGrid.moc(4.0)
    assert image.path.endswith(f"r18_040.{ext}")


def test_read_jpeg_and_marci_shape(tmp_path):
    rgb = np.full((45, 90, 3), 120, np.uint8)
    image = read_map(write(tmp_path / "d01_005.jpg", rgb, quality=95))
    assert image.grid == MapGrid.marci(4.0)
    assert abs(float(image.rgb.mean()) - 120 / 255) < 0.02


def test_pixel_black_in_one_band_only_is_valid(tmp_path):
    rgb = np.zeros((30, 90, 3), np.uint8)
    rgb[0, 0] = (0, 0, 7)
    image = read_map(write(tmp_path / "m.png", rgb))
    assert image.valid.sum() == 1 and image.valid[0, 0]


def gap_map(height=180, width=360):
    """A MARCI-shaped map: red ground, a dark province, black gaps (a lens, a band, one dropped line)."""
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:] = (190, 110, 60)
    rgb[:, 200:260] = (40, 28, 22)  # dark ground, luma ≈ 31
    valid = np.ones((height, width), bool)
    rows = np.arange(height)[:, None]
    valid[np.abs(np.arange(width)[None, :] - 100) < 12 * np.sin(np.pi * (rows + 0.5) / height)] = False
    valid[:20] = False  # polar night
    valid[120, 150:300] = False  # a dropped line
    rgb[~valid] = 0
    return rgb, valid


def test_missing_pixels_of_a_jpeg_are_near_black_by_luma_and_read_as_zero(tmp_path):
    from marsdust.mdgm import LOSSY_MISSING_LUMA, read_map_pixels, valid_mask

    rgb, valid = gap_map()
    path = write(tmp_path / "B05_day03.jpg", rgb, quality=90)
    decoded, lossy = read_map_pixels(path)
    assert lossy and (decoded[~valid] != 0).any()  # JPEG noise: the exact rule would see observations
    assert (decoded[~valid].max(axis=-1) > LOSSY_MISSING_LUMA).any()  # chroma bleed: so would "every band small"
    image = read_map(path)
    assert image.grid == MapGrid.marci(1.0)
    np.testing.assert_array_equal(image.valid, valid_mask(decoded, lossy=True))
    assert (image.valid == valid).mean() > 0.999 and image.valid[:20].sum() == 0
    assert image.valid[:, 200:260][valid[:, 200:260]].all()  # dark ground stays observed
    assert image.rgb[~image.valid].max() == 0.0
    coarse = read_map_resampled(path, 2.0)
    assert not coarse.valid[:10].any() and coarse.rgb[~coarse.valid].max() == 0.0
    assert np.abs(coarse.rgb[12:, 150:180] - np.array([190, 110, 60]) / 255).max() < 0.06


def test_the_lossy_rule_applies_to_jpeg_compressed_tiffs_only(tmp_path):
    from marsdust.mdgm import read_map_pixels

    rgb, valid = gap_map()
    assert read_map_pixels(write(tmp_path / "j.tif", rgb, compression="jpeg"))[1]
    assert not read_map_pixels(write(tmp_path / "d.tif", rgb, compression="tiff_deflate"))[1]
    near_black = np.zeros((30, 90, 3), np.uint8)
    near_black[0, 0] = (9, 9, 9)  # luma 9: an observation in a lossless map, missing in a JPEG
    assert read_map(write(tmp_path / "n.png", near_black)).valid[0, 0]
    assert (read_map(tmp_path / "j.tif").valid == valid).mean() > 0.999


def test_rgba_drops_alpha_and_palette_expands(tmp_path):
    rgb = tiny_map()
    rgba = np.dstack([rgb, np.full((30, 90), 255, np.uint8)])
    image = read_map(write(tmp_path / "a.png", rgba))
    np.testing.assert_allclose(image.rgb, rgb / 255.0, atol=1e-6)
    pal = Image.fromarray(np.full((30, 90, 3), 200, np.uint8)).convert("P")
    pal.save(tmp_path / "p.png")
    assert read_map(tmp_path / "p.png").rgb.shape == (30, 90, 3)


def test_geotiff_with_rasterio(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import Affine

    rgb = tiny_map()
    path = tmp_path / "g.tif"
    with rasterio.open(path, "w", driver="GTiff", width=90, height=30, count=3, dtype="uint8",
                       transform=Affine(4, 0, -180, 0, -4, 60), compress="deflate") as dst:
        dst.write(np.moveaxis(rgb, -1, 0))
    np.testing.assert_allclose(read_map(path).rgb, rgb / 255.0, atol=1e-6)


def test_read_from_tar_member(tmp_path):
    rgb = tiny_map()
    write(tmp_path / "r18_040.png", rgb)
    tar_path = tmp_path / "R18.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(tmp_path / "r18_040.png", arcname="R18/r18_040.png")
    image = read_map(f"{tar_path}::R18/r18_040.png")
    np.testing.assert_allclose(image.rgb, rgb / 255.0, atol=1e-6)
    with pytest.raises(MapReadError, match="no member"):
        read_map(f"{tar_path}::R18/nope.png")
    gz_path = tmp_path / "R18.tar.gz"
    with tarfile.open(gz_path, "w:gz") as tar:
        tar.add(tmp_path / "r18_040.png", arcname="r18_040.png")
    np.testing.assert_allclose(read_map(f"{gz_path}::r18_040.png").rgb, image.rgb)


def add_zeros(tar, name, size):
    """Add a member of ``size`` zero bytes (a gzip of it is a thousand times smaller)."""
    import io

    info = tarfile.TarInfo(name)
    info.size = size
    tar.addfile(info, io.BytesIO(bytes(size)))


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_a_tar_member_larger_than_any_map_is_refused_before_it_is_read(tmp_path, monkeypatch, mode):
    monkeypatch.setattr("marsdust.mdgm.MAX_MAP_FILE_BYTES", 1000)
    tar_path = tmp_path / ("R18.tar" if mode == "w" else "R18.tar.gz")
    with tarfile.open(tar_path, mode) as tar:
        add_zeros(tar, "R18/r18_040.png", 1001)
    with pytest.raises(MapReadError, match=r"R18.tar(.gz)?::R18/r18_040.png: 1,001 bytes, more than the 1,000"):
        read_map(f"{tar_path}::R18/r18_040.png")


def test_read_bounded_stops_at_its_limit_whatever_the_size_declared():
    import io

    assert read_bounded(io.BytesIO(b"12345"), 5, 5, "f") == b"12345"
    with pytest.raises(MapReadError, match="f: 6 bytes, more than the 5"):
        read_bounded(io.BytesIO(b"123456"), 3, 5, "f")


def test_working_grid_from_the_header_is_the_grid_a_map_is_read_on(tmp_path):
    path = write(tmp_path / "r18_040.png", tiny_map())
    assert working_grid(path, 12.0) == read_map_resampled(path, 12.0).grid == MapGrid.moc(12.0)
    with tarfile.open(tmp_path / "R18.tar.gz", "w:gz") as tar:
        tar.add(path, arcname="r18_040.png")
    assert working_grid(f"{tmp_path / 'R18.tar.gz'}::r18_040.png", 4.0) == MapGrid.moc(4.0)
    with pytest.raises(MapReadError, match="whole multiple"):
        working_grid(path, 5.0)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(MapReadError, match="text.png: not a readable"):
        working_grid(tmp_path / "text.png", 4.0)


def png_by_hand(rgb, rows=None, interlace=False):
    """PNG bytes of an RGB array (filter 0), its image data holding only the first ``rows`` rows (all by default)
    in one complete zlib stream; with ``interlace``, Adam7-interlaced."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = rgb.shape
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    images = [rgb[y0::dy, x0::dx] for x0, y0, dx, dy in passes] if interlace else [rgb[: rows or height]]
    raw = b"".join(b"\0" + row.tobytes() for image in images if image.shape[1] for row in image)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, int(interlace))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def test_a_png_whose_image_data_covers_half_its_rows_is_damaged_not_half_missing(tmp_path):
    rgb = tiny_map()
    (tmp_path / "whole.png").write_bytes(png_by_hand(rgb))
    (tmp_path / "interlaced.png").write_bytes(png_by_hand(rgb, interlace=True))
    for name in ("whole.png", "interlaced.png"):
        np.testing.assert_array_equal(read_map_array(tmp_path / name), rgb)
    (tmp_path / "half.png").write_bytes(png_by_hand(rgb, rows=15))
    with pytest.raises(MapReadError, match=r"half.png: damaged PNG: its image data ends after 4,065 of the 8,130 "
                                           r"bytes its 30 rows need"):
        read_map(tmp_path / "half.png")
    with tarfile.open(tmp_path / "R18.tar", "w") as tar:
        tar.add(tmp_path / "half.png", arcname="r18_040.png")
    with pytest.raises(MapReadError, match=r"R18.tar::r18_040.png: damaged PNG"):
        read_map(f"{tmp_path / 'R18.tar'}::r18_040.png")


def test_given_grid_must_match(tmp_path):
    path = write(tmp_path / "m.png", tiny_map())
    assert read_map(path, grid=MapGrid.moc(4.0)).grid == MapGrid.moc(4.0)
    with pytest.raises(MapReadError, match=r"m\.png.*30 x 90.*expected grid"):
        read_map(path, grid=MapGrid.moc(0.1))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: write(p, np.zeros((40, 90, 3), np.uint8)), "neither a MOC"),
        (lambda p: write(p, np.zeros((30, 90), np.uint8)), "RGB"),
        (lambda p: Image.fromarray(np.zeros((30, 90, 2), np.uint8), "LA").save(p), "RGB"),
        (lambda p: p.write_bytes(b"not an image at all"), "not a readable"),
    ],
    ids=["wrong-shape", "grayscale", "gray-alpha", "garbage"],
)
def test_bad_maps_raise_map_read_error(tmp_path, make, match):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(MapReadError, match=match) as info:
        read_map(path)
    assert "bad.png" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_truncated_png_and_missing_file(tmp_path):
    path = write(tmp_path / "t.png", tiny_map())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MapReadError, match="t.png"):
        read_map(path)
    with pytest.raises(MapReadError, match="not found"):
        read_map(tmp_path / "missing.png")


# --- resampling -------------------------------------------------------------------------------
def test_downsample_averages_valid_pixels_only():
    rgb = np.zeros((4, 8, 3), np.float32)
    valid = np.zeros((4, 8), bool)
    # block (0, 0): 3 valid of 4 -> mean of those 3
    rgb[0, 0], rgb[0, 1], rgb[1, 0] = 0.3, 0.6, 0.9
    valid[0, 0] = valid[0, 1] = valid[1, 0] = True
    # block (0, 1): 2 valid of 4 -> valid (exactly half)
    rgb[0, 2], rgb[1, 3] = 0.2, 0.4
    valid[0, 2] = valid[1, 3] = True
    # block (0, 2): 1 valid of 4 -> invalid, black
    rgb[0, 4] = 1.0
    valid[0, 4] = True
    grid = MapGrid(90.0, -90.0, 45.0)  # 4 x 8
    small = downsample(MapImage(rgb, valid, grid, "x"), 2)
    assert small.grid.res_deg == 90.0 and small.rgb.shape == (2, 4, 3)
    assert small.rgb.dtype == np.float32
    np.testing.assert_allclose(small.rgb[0, 0], 0.6, rtol=1e-6)
    np.testing.assert_allclose(small.rgb[0, 1], 0.3, rtol=1e-6)
    assert small.valid[0, 0] and small.valid[0, 1] and not small.valid[0, 2]
    assert (small.rgb[0, 2] == 0).all() and (small.rgb[1] == 0).all()


def test_read_map_resampled_matches_downsample(tmp_path):
    rgb = tiny_map(60, 180)  # 2° map
    path = write(tmp_path / "m.png", rgb)
    direct = read_map_resampled(path, 4.0)
    via = downsample(read_map(path), 2)
    assert direct.grid == MapGrid.moc(4.0)
    np.testing.assert_allclose(direct.rgb, via.rgb, atol=1e-6)
    np.testing.assert_array_equal(direct.valid, via.valid)
    with pytest.raises(MapReadError, match="whole multiple"):
        read_map_resampled(path, 3.0)
    with pytest.raises(MapReadError, match=r"m.png: 60 x 180 map is not divisible into 8 x 8 blocks.*--map-res-deg"):
        read_map_resampled(path, 16.0)


# --- list_ls.txt ------------------------------------------------------------------------------
def test_parse_list_ls_variants():
    text = """# MOC subphase R18
name  mars_year  ls
r18_040.png   25   150.5
r18_041,25,151.0   # trailing comment
 r18_042 , 25 , 151.5

garbage line here
"""
    entries, problems = parse_list_ls(text, "R18/list_ls.txt")
    assert entries == [("r18_040", 25, 150.5), ("r18_041", 25, 151.0), ("r18_042", 25, 151.5)]
    assert len(problems) == 1 and problems[0]["where"] == "R18/list_ls.txt:7"


def test_parse_list_ls_without_header():
    entries, problems = parse_list_ls("s20_001 26 359.9\ns20_002 27 0.4\n", "x")
    assert entries == [("s20_001", 26, 359.9), ("s20_002", 27, 0.4)] and not problems


# --- index_archive ----------------------------------------------------------------------------
@pytest.fixture
def archive(tmp_path):
    root = tmp_path / "archive"
    r18 = root / "R18"
    r18.mkdir(parents=True)
    for sol in (40, 41, 43):  # 43 is not listed
        write(r18 / f"r18_{sol:03d}.png", tiny_map(seed=sol))
    (r18 / "list_ls.txt").write_text("name,mars_year,ls\nr18_041.png,25,151.0\nr18_040,25,150.5\nr18_042,25,152.0\n")
    # a tar subphase with its maps in a subfolder, next Mars year
    staging = tmp_path / "staging"
    staging.mkdir()
    for sol in (1, 2):
        write(staging / f"s20_{sol:03d}.jpg", tiny_map(seed=sol))
    (staging / "list_ls.txt").write_text("s20_002 26 1.0\ns20_001 25 359.5\n")
    with tarfile.open(root / "S20.tar", "w") as tar:
        for name in ("s20_001.jpg", "s20_002.jpg", "list_ls.txt"):
            tar.add(staging / name, arcname=f"S20/{name}")
    return root


def test_index_archive_folders_and_tars(archive, caplog):
    with caplog.at_level(logging.WARNING, logger="marsdust.mdgm"):
        index = index_archive(archive)
    assert list(index.columns) == INDEX_COLUMNS
    assert list(index["map_id"]) == ["r18_040", "r18_041", "s20_001", "s20_002"]
    assert list(index["mars_year"]) == [25, 25, 25, 26]
    assert index["sol"].dtype == np.int64 and list(index["sol"]) == [40, 41, 1, 2]
    assert list(index["subphase"]) == ["R18", "R18", "S20", "S20"]
    assert index.loc[2, "path"].endswith("S20.tar::S20/s20_001.jpg")
    problems = problems_table(index)
    assert sorted(problems["kind"]) == ["missing_map", "unlisted_map"]
    assert "r18_042" in problems.loc[problems["kind"] == "missing_map", "detail"].item()
    assert "r18_043" in problems.loc[problems["kind"] == "unlisted_map", "detail"].item()
    assert "2 problem(s)" in caplog.text
    # every indexed path can be read
    for path in index["path"]:
        assert read_map(path).grid == MapGrid.moc(4.0)


def test_index_single_subphase_and_tar(archive):
    assert list(index_archive(archive / "R18")["map_id"]) == ["r18_040", "r18_041"]
    assert list(index_archive(archive / "S20.tar")["map_id"]) == ["s20_001", "s20_002"]


def test_subphase_without_list_is_reported(tmp_path):
    folder = tmp_path / "a" / "B01"
    folder.mkdir(parents=True)
    write(folder / "b01_001.png", tiny_map())
    index = index_archive(tmp_path / "a")
    assert len(index) == 0
    assert problems_table(index)["kind"].tolist() == ["missing_list_ls"]


def test_a_list_ls_larger_than_any_list_is_a_problem_and_not_read(tmp_path, archive):
    with tarfile.open(archive / "B01.tar.gz", "w:gz") as tar:  # 17 KB expanding to 16 MiB + 1
        add_zeros(tar, "B01/list_ls.txt", MAX_LIST_LS_BYTES + 1)
    index = index_archive(archive)
    assert list(index["map_id"]) == ["r18_040", "r18_041", "s20_001", "s20_002"]
    problem = problems_table(index).set_index("kind").loc["unreadable_list_ls"]
    assert problem["where"].endswith("B01.tar.gz::B01/list_ls.txt")
    assert problem["detail"].startswith(f"{MAX_LIST_LS_BYTES + 1:,} bytes, more than the {MAX_LIST_LS_BYTES:,}")


def test_flat_folder_with_manifest(tmp_path):
    for name in ("r18_040.png", "d01_005.png", "x99_001.png"):
        write(tmp_path / name, tiny_map())
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"Name": ["r18_040.png", "d01_005", "d01_006"], "mars_year": [25, 29, 29], "Ls": [150, 10, 11]}).to_csv(
        manifest, index=False)
    index = index_archive(tmp_path, manifest=manifest)
    assert list(index["map_id"]) == ["r18_040", "d01_005"]
    assert sorted(problems_table(index)["kind"]) == ["missing_map", "unlisted_map"]
    bad = tmp_path / "bad.csv"
    bad.write_text("file,year\nr18_040,25\n")
    with pytest.raises(ValueError, match=r"bad\.csv.*ls"):
        index_archive(tmp_path, manifest=bad)


def test_save_and_reload_index(archive, tmp_path):
    index = index_archive(archive)
    for name in ("index.csv", "index.parquet"):
        out = tmp_path / "out" / name
        save_index(index, out)
        again = index_archive(out)
        pd.testing.assert_frame_equal(again, index.reset_index(drop=True), check_like=False)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left


def test_index_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        index_archive(tmp_path / "nope")
    bad = tmp_path / "other.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="missing column"):
        index_archive(bad)


# --- list_ls.txt values and index tables that cannot be right -----------------------------------
@pytest.mark.parametrize("line, words", [
    ("r18_040 25 400", "Ls '400' is outside"),
    ("r18_040 25 -5", "Ls '-5' is outside"),
    ("r18_040 -25 10", "Mars year '-25' is not a whole number >= 0"),
    ("r18_040 25 abc", "expected 'name mars_year ls'"),  # a malformed first data line is not a header
])
def test_list_ls_bad_values_name_file_and_line(line, words):
    entries, problems = parse_list_ls(f"{line}\nr18_041 25 151\n", "R18/list_ls.txt")
    assert entries == [("r18_041", 25, 151.0)]
    assert len(problems) == 1 and problems[0]["where"] == "R18/list_ls.txt:1" and words in problems[0]["detail"]


def test_index_command_names_problem_maps_and_lines(tmp_path):
    from typer.testing import CliRunner

    from marsdust.cli import app

    r18 = tmp_path / "archive" / "R18"
    r18.mkdir(parents=True)
    write(r18 / "r18_040.png", tiny_map(seed=1))
    (r18 / "list_ls.txt").write_text("name mars_year ls\nr18_040 25 150\nr18_041 25 400\nr18_042 25 152\n")
    result = CliRunner().invoke(app, ["index", str(tmp_path / "archive"), "-o", str(tmp_path / "index.csv")])
    assert result.exit_code == 0, result.output
    assert "R18/list_ls.txt:3: bad_list_line: Ls '400' is outside" in result.output
    assert "R18/list_ls.txt:4: missing_map: r18_042" in result.output


def test_index_csv_with_a_non_numeric_ls_names_file_row_and_column(tmp_path, archive):
    index = index_archive(archive)
    path = tmp_path / "index.csv"
    table = index.astype({"ls": object})
    table.loc[1, "ls"] = "abc"
    table.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"index\.csv: row 3, column 'ls': expected Ls in \[0, 360\) degrees, got 'abc'"):
        index_archive(path)
