"""Tests of full-map inference (marsdust.detect) and the ``marsdust detect`` command.

Geometry is tested independently of learning: a tiny detector's ``forward`` is replaced by a fake
that "detects" the bright (red) blobs of whatever image it is given, so wrap padding, folding back
into [0, W), areas and outlines can be checked against analytic values. The resumable / multi-process
tests use a real tiny checkpoint whose weights are set so that it deterministically detects boxes
(:func:`marsdust.models.always_storm_detector`) on archives of bright discs (:mod:`marsdust.synth.discs`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from marsdust import detect
from marsdust.grid import MARS_RADIUS_KM, MapGrid
from marsdust.models import always_storm_detector, build_model, save_checkpoint
from marsdust.outlines import DETECTION_COLUMNS
from marsdust.synth.discs import draw_disc_map, write_disc_archive

NATIVE = MapGrid.moc(0.4)  # 300 x 900 maps
QUIET = detect.DetectExecution(progress=False)
ONE_THREAD = detect.DetectExecution(threads=1, progress=False)


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def cap_area_km2(radius_deg: float) -> float:
    return 2 * math.pi * MARS_RADIUS_KM**2 * (1 - math.cos(math.radians(radius_deg)))


def blob_forward(min_red: float = 0.6, extra_boxes=()):
    """A fake detector forward: one detection per connected bright blob of each input image.

    ``extra_boxes``: (x0, y0, x1, y1, score) boxes (input-image pixels) returned as well, with a full mask.
    """
    from scipy import ndimage

    def forward(images, targets=None):
        outputs = []
        for image in images:
            bright = (image[0] >= min_red).numpy()
            labels, n = ndimage.label(bright)
            boxes, scores, masks = [], [], []
            for k, window in enumerate(ndimage.find_objects(labels), start=1):
                rows, cols = window
                boxes.append([cols.start, rows.start, cols.stop, rows.stop])
                scores.append(0.9)
                masks.append(labels == k)
            for x0, y0, x1, y1, score in extra_boxes:
                mask = np.zeros(bright.shape, bool)
                mask[y0:y1, x0:x1] = True
                boxes.append([x0, y0, x1, y1])
                scores.append(score)
                masks.append(mask)
            h, w = bright.shape
            outputs.append({
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "scores": torch.tensor(scores, dtype=torch.float32),
                "labels": torch.ones(len(scores), dtype=torch.int64),
                "masks": torch.from_numpy(np.array(masks, dtype=np.float32).reshape(-1, 1, h, w)),
            })
        return outputs

    return forward


@pytest.fixture(scope="module")
def blob_model(tiny_detector):
    model = build_model("dustrcnn", map_res_deg=0.8, **tiny_detector).eval()
    model.forward = blob_forward()
    return model


# ------------------------------------------------------------------------------------------------
# one map: geometry
# ------------------------------------------------------------------------------------------------
def test_storm_across_180_is_detected_once_with_the_right_area(tmp_path, blob_model):
    path = draw_disc_map(tmp_path / "r18_001.png", [(179.0, 20.0, 15.0), (0.0, -30.0, 12.0)])
    result = detect.detect_map(blob_model, path, mars_year=25, ls=100.0)
    assert result.map_id == "r18_001"
    assert result.grid.res_deg == pytest.approx(0.8) and result.native_grid == NATIVE
    assert result.n_detections == 2
    by_lon = {round(r["lon"]): r for r in result.records}
    across = by_lon[179]
    # seen whole across the seam: bounds wrap, outline split at 180° into two parts
    assert across["lon_min"] > 0 > across["lon_max"]
    assert across["polygon_wkt"].startswith("MULTIPOLYGON")
    assert across["lat"] == pytest.approx(20.0, abs=0.5)
    # areas agree with the spherical caps drawn (within 2%)
    assert across["area_km2"] == pytest.approx(cap_area_km2(15.0), rel=0.02)
    assert by_lon[0]["area_km2"] == pytest.approx(cap_area_km2(12.0), rel=0.02)
    # boxes are on the native 0.4° grid: x0 inside the map, x1 past its eastern edge for the seam storm
    assert 0 <= across["x0"] < NATIVE.width < across["x1"]
    assert across["x1"] - across["x0"] == pytest.approx(2 * 15.0 / math.cos(math.radians(20)) / 0.4, rel=0.1)
    centre_box = by_lon[0]
    assert centre_box["x0"] == pytest.approx((180 - math.degrees(math.asin(math.sin(math.radians(12)) / math.cos(math.radians(30))))) / 0.4, abs=2.5)
    # masks and probability raster on the working grid, folded into [0, W)
    assert result.masks[0].shape == result.grid.shape == result.probability.shape
    assert result.probability.max() == pytest.approx(1.0)
    assert result.valid_fraction == 1.0


def test_without_the_wrap_pad_a_seam_storm_falls_in_two(tmp_path, blob_model):
    path = draw_disc_map(tmp_path / "r18_002.png", [(180.0, 0.0, 6.0)])
    padded = detect.detect_map(blob_model, path)
    unpadded = detect.detect_map(blob_model, path, settings=detect.DetectSettings(pad_deg=0.0))
    assert padded.n_detections == 1 and unpadded.n_detections == 2
    # same pixels either way: one storm of the whole area, or two halves
    total = sum(r["area_km2"] for r in unpadded.records)
    assert padded.records[0]["area_km2"] == pytest.approx(total)
    assert padded.records[0]["area_km2"] == pytest.approx(cap_area_km2(6.0), rel=0.08)


def test_tiles_find_each_storm_once(tmp_path, blob_model):
    storms = [(-150.0, 0.0, 6.0), (-60.0, 30.0, 6.0), (0.5, -10.0, 7.0), (90.0, 40.0, 5.0), (179.0, 0.0, 6.0)]
    path = draw_disc_map(tmp_path / "r18_003.png", storms)
    whole = detect.detect_map(blob_model, path)
    tiled = detect.detect_map(blob_model, path, settings=detect.DetectSettings(max_tile_px=96, tile_overlap_px=40))
    assert len(detect.plan_tiles(150, 512, 96, 40)) >= 10
    assert whole.n_detections == tiled.n_detections == len(storms)
    key = lambda r: round(r["lon"], 3)  # noqa: E731
    for a, b in zip(sorted(whole.records, key=key), sorted(tiled.records, key=key)):
        assert a["area_km2"] == pytest.approx(b["area_km2"]) and a["polygon_wkt"] == b["polygon_wkt"]


def test_detections_beyond_the_training_latitudes_are_dropped(tmp_path, blob_model):
    """A detector records the latitudes of its training maps; on a global map, detect drops what it finds
    centred beyond them (a MOC-trained detector has never seen a polar cap) and counts them."""
    path = draw_disc_map(tmp_path / "B05_day03.png", [(0.0, 75.0, 6.0), (40.0, 20.0, 6.0), (-90.0, -70.0, 5.0)],
                         grid=MapGrid.marci(0.4))
    model = blob_model
    model.checkpoint_extra = {}  # trained before the record: every latitude
    everything = detect.detect_map(model, path)
    assert sorted(round(r["lat"]) for r in everything.records) == [-70, 20, 75]
    assert everything.n_beyond_latitudes == 0
    model.checkpoint_extra = {"training_latitudes_deg": [-60.0, 60.0]}  # what training on MOC maps records
    try:
        trained = detect.detect_map(model, path)
        assert [round(r["lat"]) for r in trained.records] == [20] and trained.n_beyond_latitudes == 2
        assert len(trained.masks) == 1 and trained.probability[:20].max() == 0.0  # nothing left at the pole
        kept = detect.detect_map(model, path, settings=detect.DetectSettings(latitudes_deg=detect.ALL_LATITUDES))
        assert kept.n_detections == 3 and kept.n_beyond_latitudes == 0
        narrow = detect.detect_map(model, path, settings=detect.DetectSettings(latitudes_deg=(-80.0, 0.0)))
        assert [round(r["lat"]) for r in narrow.records] == [-70]
    finally:
        model.checkpoint_extra = {}
    with pytest.raises(ValueError, match="latitudes_deg"):
        detect.DetectSettings(latitudes_deg=(60.0, -60.0))


def test_detections_mostly_in_missing_data_are_dropped(tiny_detector, tmp_path):
    model = build_model("dustrcnn", map_res_deg=0.8, **tiny_detector).eval()
    # padded working image: 150 rows, pad p columns; missing data at native columns 400..500 -> working 200..250
    pad = detect.pad_columns(450, detect.DEFAULT_PAD_DEG, 0.8)
    model.forward = blob_forward(extra_boxes=[(pad + 205, 40, pad + 245, 80, 0.8), (pad + 240, 40, pad + 280, 80, 0.7)])
    path = draw_disc_map(tmp_path / "r18_004.png", [(-120.0, 0.0, 5.0)], missing_cols=slice(400, 500))
    result = detect.detect_map(model, path)
    scores = sorted(r["score"] for r in result.records)
    # the box wholly in the gap is dropped; the one 75 % observed is kept, its mask cut to observed pixels
    assert scores == pytest.approx([0.7, 0.9])
    kept = result.masks[[r["score"] for r in result.records].index(pytest.approx(0.7))]
    assert kept.sum() == 30 * 40 and not (kept & ~result.valid).any()
    assert result.valid_fraction == pytest.approx(1 - 100 / 900)


def test_model_score_threshold_is_restored_and_real_model_runs(tiny_detector, tmp_path):
    model = build_model("dustrcnn", map_res_deg=1.6, **tiny_detector).eval()
    path = draw_disc_map(tmp_path / "r18_005.png", [(10.0, 0.0, 10.0)])
    result = detect.detect_map(model, path, settings=detect.DetectSettings(score_threshold=0.0))
    assert model.roi_heads.score_thresh == model.config.box_score_thresh
    assert result.grid.shape == (75, 225)
    for record in result.records:
        assert set(DETECTION_COLUMNS) <= set(record)


# ------------------------------------------------------------------------------------------------
# archives: products
# ------------------------------------------------------------------------------------------------
def test_archive_products_read_back(tmp_path, blob_model):
    import geopandas as gpd
    import rasterio
    import shapely
    import xarray as xr

    from marsdust.mdad import read_catalog

    maps = {f"r18_{sol:03d}": (100.0 + 0.5 * sol, [(175.0 + 2 * sol, 10.0, 8.0), (-40.0, -35.0, 5.0)])
            for sol in (1, 2, 3)}
    archive = write_disc_archive(tmp_path / "archive", maps)
    (archive / "R18" / "r18_004.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with open(archive / "R18" / "list_ls.txt", "a") as handle:
        handle.write("r18_004 25 102.0\n")
    out = tmp_path / "out"
    outputs = detect.DetectOutputs(out, table_format="parquet", geotiff=True, quicklook=True)
    summary = detect.detect_archive(blob_model, archive, outputs, execution=QUIET)
    assert summary.n_maps == 4 and summary.n_errors == 1 and summary.n_detections == 6

    table = pd.read_csv(out / "detections.csv")
    assert list(table.columns[:12]) == ["map_id", "mars_year", "ls", "lon", "lat", "lon_min", "lon_max", "lat_min",
                                        "lat_max", "area_km2", "score", "polygon_wkt"]
    assert {"x0", "y0", "x1", "y1", "member_id", "sequence_id"} <= set(table.columns)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "detections.parquet"), table, check_dtype=False)
    # tracking: the storm that moves east across 180° is one member (in a sequence), the fixed one another
    assert table.groupby("member_id")["map_id"].nunique().tolist() == [3, 3]
    assert (table["sequence_id"].fillna("") != "").all()

    maps_csv = pd.read_csv(out / "maps.csv")
    bad = maps_csv.set_index("map_id").loc["r18_004"]
    assert bad["status"] == "error" and "r18_004" in bad["error"] and bad["n_detections"] == 0
    assert (maps_csv.loc[maps_csv["map_id"] != "r18_004", "status"] == "ok").all()
    assert list(maps_csv.columns) == detect.MAPS_COLUMNS and detect.MAPS_COLUMNS[-2:] == ["history", "n_beyond_latitudes"]
    assert maps_csv["history"].isna().all()  # a detector without reference bands: empty
    assert summary.n_without_history == 0 and not summary.needs_history and not summary.all_without_history

    frame = gpd.read_file(out / "detections.geojson")
    assert len(frame) == 6
    assert "49900" in frame.crs.to_string() or "Mars" in frame.crs.to_wkt()
    assert (frame.geometry.geom_type == "MultiPolygon").sum() >= 2  # r18_001 and r18_002 storms cross 180°
    from marsdust.grid import polygon_area_km2
    for geometry, area in zip(frame.geometry, table["area_km2"]):
        assert polygon_area_km2(shapely.from_wkt(geometry.wkt)) == pytest.approx(area, rel=1e-3)  # outline simplified by 0.5 px

    cube_file = out / "mdad" / "MY25" / "MDADMY25.nc"
    assert sorted(p.relative_to(out / "mdad").as_posix() for p in (out / "mdad").rglob("*") if p.is_file()) == [
        "MY25/MDADMY25.nc", "MY25/MDAD_MY25_master.csv"]
    with xr.open_dataset(out / "masks.nc", mask_and_scale=False) as working:  # the contract's file, beside them
        assert working["MDAD"].shape[0] == 3 and int(working["MDAD"].max()) >= 1
    with xr.open_dataset(cube_file) as cube:
        assert cube["MDAD"].dims == ("time", "longitude", "latitude") and cube["MDAD"].shape == (3, 3600, 1801)
        assert list(cube["dayList"].values) == ["R18_day01", "R18_day02", "R18_day03"]
        assert {"dayList", "marsYear", "soy"} <= set(cube.coords) and "time" in cube.indexes
        first = cube["MDAD"].sel(time=100.5).values  # (longitude, latitude); 255 is _FillValue → NaN
        member_values = sorted(int(m.split("_")[1]) for m in table.loc[table["map_id"] == "r18_001", "member_id"])
        assert sorted(set(np.unique(first[np.isfinite(first)]).astype(int)) - {0}) == member_values
    catalog = read_catalog(out / "mdad")
    assert sorted(catalog["map_id"]) == sorted(table["map_id"]) and set(catalog["mars_year"]) == {25}
    merged = catalog.merge(table, on=["map_id", "member_id"], suffixes=("_cat", "_det"))
    assert len(merged) == len(table) == len(catalog)
    np.testing.assert_allclose(merged["area_km2_cat"], merged["area_km2_det"], rtol=1e-6)

    with rasterio.open(out / "geotiff" / "r18_001.tif") as raster:
        assert raster.shape == (150, 450)
        assert "49900" in str(raster.crs) or "Mars" in raster.crs.to_wkt()
        assert np.nanmax(raster.read(1)) == pytest.approx(1.0)
    assert (out / "quicklook" / "r18_002.png").is_file()
    assert not (out / "geotiff" / "r18_004.tif").exists()


def test_two_mars_years_give_two_mdad_cubes_that_catalog_reads_back_as_detections(tmp_path, blob_model):
    """One ``MY??/MDADMY??.nc`` per Mars year: ``marsdust catalog OUT/mdad`` gives the storms of
    detections.csv (map ids, years, count); the single working-grid cube of ``--mask-grid working`` holds
    both years, and catalog refuses to guess its year instead of labelling every storm with one."""
    import shutil

    from typer.testing import CliRunner

    from marsdust.cli import app

    maps = {f"r18_{sol:03d}": (100.0, [(-60.0 + 3 * sol, 10.0, 8.0)]) for sol in (1, 2, 3, 4)}
    archive = write_disc_archive(tmp_path / "archive", maps)
    (archive / "R18" / "list_ls.txt").write_text("r18_001 25 358.8\nr18_002 25 359.4\nr18_003 26 0.1\n"
                                                  "r18_004 26 0.7\n")
    out = tmp_path / "out"
    detect.detect_archive(blob_model, archive, detect.DetectOutputs(out), execution=QUIET)
    table = pd.read_csv(out / "detections.csv")
    assert sorted(table["mars_year"].unique()) == [25, 26] and len(table) == 4
    assert table["subphase"].tolist() == ["R18"] * 4 and table["sol"].tolist() == [1, 2, 3, 4]
    assert sorted(p.relative_to(out / "mdad").as_posix() for p in (out / "mdad").rglob("*.nc")) == [
        "MY25/MDADMY25.nc", "MY26/MDADMY26.nc"]
    storms = tmp_path / "storms.csv"
    result = CliRunner().invoke(app, ["catalog", str(out / "mdad"), "-o", str(storms)])
    assert result.exit_code == 0, result.output
    catalog = pd.read_csv(storms)
    key = ["map_id", "mars_year", "member_id"]
    pd.testing.assert_frame_equal(catalog[key].sort_values(key).reset_index(drop=True),
                                  table[key].sort_values(key).reset_index(drop=True))

    working = tmp_path / "working"
    detect.detect_archive(blob_model, archive, detect.DetectOutputs(working, mask_grid="working"), execution=QUIET)
    assert (working / "masks.nc").is_file() and not (working / "mdad").exists()
    result = CliRunner().invoke(app, ["catalog", str(working / "masks.nc"), "--master",
                                      str(working / "masks_master.csv"), "-o", str(storms)])
    assert result.exit_code == 1 and "holds several Mars years (MY25, MY26)" in result.output, result.output
    renamed = tmp_path / "copied" / "MY25" / "MDADMY25.nc"
    renamed.parent.mkdir(parents=True)
    shutil.copy(working / "masks.nc", renamed)
    result = CliRunner().invoke(app, ["catalog", str(renamed), "--master", str(working / "masks_master.csv"),
                                      "-o", str(storms)])
    assert result.exit_code == 1 and "named for MY25 but its marsYear variable holds MY25, MY26" in result.output


def test_several_host_threads_as_on_a_gpu_write_the_same_products(tmp_path, blob_model, monkeypatch):
    """On a GPU detect reads and post-processes maps in several threads; the products must not change."""
    import rasterio
    import xarray as xr

    maps = {f"r18_{sol:03d}": (100.0 + 0.5 * sol, [(-170.0 + 40 * sol, 5.0, 6.0), (20.0, -30.0 + 3 * sol, 5.0)])
            for sol in range(1, 9)}
    archive = write_disc_archive(tmp_path / "archive", maps, grid=MapGrid.moc(0.4))
    umask_before = os.umask(0o022)
    os.umask(umask_before)
    three_maps = detect.DetectExecution(batch_size=3, progress=False)
    detect.detect_archive(blob_model, archive, detect.DetectOutputs(tmp_path / "one", geotiff=True),
                          execution=three_maps)
    monkeypatch.setattr(detect.pipeline, "_host_threads", lambda device, batch_size: 4)
    detect.detect_archive(blob_model, archive, detect.DetectOutputs(tmp_path / "four", geotiff=True, quicklook=True),
                          execution=three_maps)
    assert os.umask(umask_before) == umask_before  # the writers' umask reads left it as it was

    one, four = (pd.read_csv(tmp_path / name / "detections.csv") for name in ("one", "four"))
    assert len(one) == 16
    pd.testing.assert_frame_equal(one, four)
    maps_one, maps_four = (pd.read_csv(tmp_path / name / "maps.csv").drop(columns="seconds") for name in ("one", "four"))
    pd.testing.assert_frame_equal(maps_one, maps_four)
    cube = Path("mdad") / "MY25" / "MDADMY25.nc"
    with xr.open_dataset(tmp_path / "one" / cube) as a, xr.open_dataset(tmp_path / "four" / cube) as b:
        np.testing.assert_array_equal(a["MDAD"].values, b["MDAD"].values)
    with rasterio.open(tmp_path / "one" / "geotiff" / "r18_005.tif") as a, \
            rasterio.open(tmp_path / "four" / "geotiff" / "r18_005.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
    assert len(list((tmp_path / "four" / "quicklook").glob("*.png"))) == 8


def test_resume_does_not_redo_maps_and_other_settings_are_refused(tmp_path, blob_model):
    maps = {f"r18_{sol:03d}": (100.0 + sol, [(10.0 * sol, 0.0, 6.0)]) for sol in (1, 2)}
    archive = write_disc_archive(tmp_path / "archive", maps)
    out = tmp_path / "out"
    detect.detect_archive(blob_model, archive, out, execution=QUIET)
    assert not (out / "parts").exists() and not (out / detect.archive.LOCK_FILE).exists()  # finished: cleaned up
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    summary = detect.detect_archive(blob_model, archive, out, execution=QUIET)
    assert summary.n_processed == 0 and summary.n_detections == 2 and summary.n_errors == 0
    assert summary.paths["detections"] == out / "detections.csv"
    assert stamp == {p.name: p.stat().st_mtime_ns for p in out.iterdir()}  # nothing rewritten
    with pytest.raises(ValueError, match="other settings.*score_threshold"):
        detect.detect_archive(blob_model, archive, out, settings=detect.DetectSettings(0.3), execution=QUIET)
    summary = detect.detect_archive(blob_model, archive, detect.DetectOutputs(out, overwrite=True),
                                    settings=detect.DetectSettings(0.3), execution=QUIET)
    assert summary.n_processed == 2


RUN_KEY_CHANGES = {  # run-key item -> (settings, outputs options, history) that change it
    "score_threshold": ({"score_threshold": 0.3}, {}, None),
    "mask_threshold": ({"mask_threshold": 0.4}, {}, None),
    "pad_deg": ({"pad_deg": 20.0}, {}, None),
    "max_tile_px": ({"max_tile_px": 1024}, {}, None),
    "tile_overlap_px": ({"tile_overlap_px": 64}, {}, None),
    "min_valid_fraction": ({"min_valid_fraction": 0.4}, {}, None),
    "duplicate_iou": ({"duplicate_iou": 0.4}, {}, None),
    "probability": ({"probability": False}, {}, None),
    "engine": ({"engine": "plain"}, {}, None),
    "onnx_model_sha256": ({"onnx_model": "backbone.onnx"}, {}, None),
    "geotiff": ({}, {"geotiff": True}, None),
    "quicklook": ({}, {"quicklook": True}, None),
    "history_maps": ({}, {}, "history"),
}


def test_every_input_and_setting_is_in_the_resume_key(tmp_path, blob_model, monkeypatch):
    """Each item of the run key, changed alone, is refused by name; the maps' files are part of it."""
    monkeypatch.setenv("MARSDUST_DETECT_ENGINE", "torch")
    maps = {f"r18_{sol:03d}": (100.0 + sol, [(10.0 * sol, 0.0, 6.0)]) for sol in (1, 2)}
    archive = write_disc_archive(tmp_path / "archive", maps)
    write_disc_archive(tmp_path / "history", {"r18_000": (99.0, [])})
    (tmp_path / "backbone.onnx").write_bytes(b"an exported backbone")
    out = tmp_path / "out"
    base = {"score_threshold": 0.5}
    detect.detect_archive(blob_model, archive, out, settings=detect.DetectSettings(**base), execution=QUIET)
    for item, (settings, outputs, history) in RUN_KEY_CHANGES.items():
        if "onnx_model" in settings:
            settings = {"onnx_model": tmp_path / settings["onnx_model"]}
        with pytest.raises(ValueError, match=rf"other settings \({item}\)"):
            detect.detect_archive(blob_model, archive, detect.DetectOutputs(out, **outputs),
                                  settings=detect.DetectSettings(**{**base, **settings}), execution=QUIET,
                                  history=None if history is None else tmp_path / history)
    (archive / "R18" / "r18_002.png").write_bytes((archive / "R18" / "r18_002.png").read_bytes() + b"\0")
    with pytest.raises(ValueError, match=r"other settings \(history_maps, maps\)"):
        detect.detect_archive(blob_model, archive, out, settings=detect.DetectSettings(**base), execution=QUIET)


def test_cli_drops_and_counts_detections_beyond_the_training_latitudes(tmp_path):
    from typer.testing import CliRunner

    from marsdust.cli import app

    path = draw_disc_map(tmp_path / "maps" / "r18_001.png", [(0.0, 0.0, 10.0)])
    ckpt = save_checkpoint(always_storm_detector(1.6), tmp_path / "equator.ckpt", training_latitudes_deg=[-10.0, 10.0])
    base = ["detect", str(ckpt), str(path), "--quiet", "--threads", "1", "--no-track"]
    result = CliRunner().invoke(app, base + ["-o", str(tmp_path / "trained")])
    assert result.exit_code == 0, result.output
    maps = pd.read_csv(tmp_path / "trained" / "maps.csv")
    dropped = int(maps["n_beyond_latitudes"].sum())
    assert dropped > 0
    assert (f"latitudes 10°S–10°N: the latitudes of the detector's training maps; {dropped} detection"
            in result.output)
    kept = pd.read_csv(tmp_path / "trained" / "detections.csv")
    assert kept["lat"].between(-10.5, 10.5).all()
    result = CliRunner().invoke(app, base + ["-o", str(tmp_path / "all"), "--all-latitudes"])
    assert result.exit_code == 0, result.output
    assert "latitudes: all (--all-latitudes)" in result.output
    assert len(pd.read_csv(tmp_path / "all" / "detections.csv")) == len(kept) + dropped


def test_cli_names_the_stored_outline_threshold_where_it_differs_from_the_detection_threshold(tmp_path,
                                                                                             checkpoint_reads):
    from typer.testing import CliRunner

    from marsdust.cli import app

    path = draw_disc_map(tmp_path / "maps" / "r18_001.png", [(0.0, 0.0, 10.0)])
    ckpt = save_checkpoint(always_storm_detector(1.6), tmp_path / "model.ckpt", score_threshold=0.6,
                           outline_score_threshold=0.35)
    base = ["detect", str(ckpt), str(path), "--quiet", "--threads", "1", "--no-track"]
    result = CliRunner().invoke(app, base + ["-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    # once for what the command asks of it (thresholds, latitudes, history), once the weights
    assert len(checkpoint_reads) == 2
    assert "score threshold 0.6: chosen on validation maps" in result.output
    assert "outline threshold 0.35:" in result.output and "--score-threshold 0.35 writes" in result.output
    result = CliRunner().invoke(app, base + ["-o", str(tmp_path / "out2"), "--score-threshold", "0.35"])
    assert result.exit_code == 0, result.output
    assert "outline threshold" not in result.output  # the threshold asked for is that one


def test_cli_reports_bad_input_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from marsdust.cli import app

    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(app, ["detect", str(ckpt), str(tmp_path / "nothing"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1  # a data error; 2 is a wrong command line (docs/cli.md)
    assert result.output.strip().startswith("error:") and len(result.output.strip().splitlines()) == 1

    result = CliRunner().invoke(app, ["detect", str(ckpt), str(tmp_path), "-o", str(tmp_path / "o"), "--engine", "gpu"])
    assert result.exit_code == 2 and "--engine must be one of auto, onnx, torch, plain" in result.output


# ------------------------------------------------------------------------------------------------
# archives: killed and resumed, several workers (real checkpoint, subprocesses)
# ------------------------------------------------------------------------------------------------
def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "marsdust", "detect", *map(str, args), "--quiet"]


HANG_S = 900
"""Seconds after which a ``marsdust detect`` child counts as hung: a guard far above its run time on a loaded machine."""

# ``marsdust detect ARGS`` that SIGKILLs itself right after writing its third map's part file: a kill
# mid-archive at a point that does not depend on how fast the machine is or how loaded.
KILLED_AFTER_THREE_PARTS = """
import os, signal, sys
import marsdust.detect.parts as parts
from marsdust.cli import main
write_json, written = parts.write_json, []
def write_then_die(path, payload):
    write_json(path, payload)
    if path.parent.name == "parts" and path.name.startswith("r18_"):
        written.append(path)
        if len(written) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
parts.write_json = write_then_die
sys.argv = ["marsdust", *sys.argv[1:]]
main()
"""


def _env():
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_rows_and_two_workers_and_two_torchrun_ranks_agree(tmp_path):
    grid = MapGrid.moc(0.8)  # 150 x 450 native, 1.6° working grid
    maps = {f"r18_{sol:03d}": (100.0 + 0.5 * sol, [(20.0 * sol - 170.0, 10.0 - sol, 6.0 + sol % 3)])
            for sol in range(1, 13)}
    archive = write_disc_archive(tmp_path / "archive", maps, grid=grid)
    ckpt = save_checkpoint(always_storm_detector(), tmp_path / "model.ckpt")

    reference = tmp_path / "reference"
    detect.detect_archive(ckpt, archive, reference, execution=ONE_THREAD)  # same numerics as OMP_NUM_THREADS=1
    expected = pd.read_csv(reference / "detections.csv")
    assert len(expected) >= 12 and expected["map_id"].nunique() >= 10

    killed = tmp_path / "killed"
    process = subprocess.run([sys.executable, "-c", KILLED_AFTER_THREE_PARTS, "detect", str(ckpt), str(archive), "-o",
                              str(killed), "--quiet"], env=_env(), timeout=HANG_S, capture_output=True)
    done = len(list((killed / "parts").glob("r18_*.json")))
    assert process.returncode == -signal.SIGKILL and 3 <= done < 12, "the run must be killed mid-archive"
    assert not (killed / "detections.csv").exists()
    finished = subprocess.run(_cli(ckpt, archive, "-o", killed), check=True, env=_env(), timeout=HANG_S,
                              capture_output=True, text=True)
    assert f"{12 - done} processed now" in finished.stdout
    pd.testing.assert_frame_equal(pd.read_csv(killed / "detections.csv"), expected)

    two = tmp_path / "two_workers"
    subprocess.run(_cli(ckpt, archive, "-o", two, "--workers", "2"), check=True, env=_env(), timeout=HANG_S)
    pd.testing.assert_frame_equal(pd.read_csv(two / "detections.csv"), expected)
    maps_csv = pd.read_csv(two / "maps.csv")
    assert maps_csv["map_id"].tolist() == sorted(maps) and (maps_csv["status"] == "ok").all()
    assert not (killed / "parts").exists()  # removed once the merge was complete
    assert pd.read_csv(killed / "maps.csv")["n_detections"].sum() == len(expected)

    ranks = tmp_path / "torchrun"  # as on several GPUs or nodes: two ranks (gloo on a CPU), rank 0 merges
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "marsdust", "detect",
                str(ckpt), str(archive), "-o", str(ranks), "--quiet"]
    finished = subprocess.run(torchrun, check=True, env=_env(), timeout=HANG_S, capture_output=True, text=True)
    assert finished.stdout.count("12 processed now") == 1, finished.stdout  # one report, for both ranks
    pd.testing.assert_frame_equal(pd.read_csv(ranks / "detections.csv"), expected)


def _children(pid: int) -> set[int]:
    """The child processes of ``pid`` (Linux /proc)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(child) for child in text.split()}


def _parent_pid(pid: int) -> int:
    """The parent process id of ``pid`` (from /proc)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads child processes from /proc")
def test_worker_processes_die_with_a_killed_parent(tmp_path):
    grid = MapGrid.moc(0.8)
    maps = {f"r18_{sol:03d}": (100.0 + 0.5 * sol, [(20.0 * sol - 170.0, 0.0, 6.0)]) for sol in range(1, 41)}
    archive = write_disc_archive(tmp_path / "archive", maps, grid=grid)
    ckpt = save_checkpoint(always_storm_detector(), tmp_path / "model.ckpt")
    out = tmp_path / "out"
    process = subprocess.Popen(_cli(ckpt, archive, "-o", out, "--workers", "2"), env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if list((out / "parts").glob("r18_*.json")):
            break
        time.sleep(0.05)
    workers = _children(process.pid)
    assert process.poll() is None and len(workers) >= 2, "the workers must be running"
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


CHILD = """
import os, signal, sys, time
from marsdust.detect.archive import die_with_parent
signal.signal(signal.SIGINT, signal.SIG_IGN)  # deaf to torch's own SIGINT-on-parent-death, as a busy worker can be
if sys.argv[1] == "watched":
    die_with_parent(os.getppid())
print("ready", flush=True)  # on the parent's stdout, which the child shares
time.sleep(60)
"""
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from /proc")
@pytest.mark.parametrize("watched", [True, False])
def test_die_with_parent_ends_a_process_whose_parent_is_killed(watched):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, "watched" if watched else "free"],
                              stdout=subprocess.PIPE, text=True, env=_env())
    child = int(parent.stdout.readline())
    assert parent.stdout.readline().strip() == "ready"  # the child has called die_with_parent
    parent.kill()
    parent.wait()
    # A watched child gets SIGKILL as its parent dies: poll (the deadline only guards a hang). An unwatched one
    # has been re-parented by the time wait() returns; a second later it is still running: the case this prevents.
    deadline = time.monotonic() + (10 if watched else 1)
    while time.monotonic() < deadline and (_alive(child) if watched else True):
        time.sleep(0.1)
    try:
        assert _alive(child) is not watched
        if not watched:
            assert _parent_pid(child) != parent.pid
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_fast_mask_pasting_equals_torchvision(tiny_detector):
    torch.manual_seed(0)
    model = build_model("dustrcnn", map_res_deg=0.8, **{**tiny_detector, "box_detections_per_img": 20}).eval()
    image = torch.rand(3, 150, 512)
    fast = detect.run_model(model, [image], "cpu", 0.0)[0]
    with torch.inference_mode():
        reference = model([image])[0]
    assert len(fast["scores"]) > 0 and torch.equal(fast["boxes"], reference["boxes"])
    for k in range(len(fast["scores"])):
        row0, col0, patch = detect.decode._mask_patch(fast["mask_rois"][k], fast["boxes"][k].numpy())
        pasted = np.zeros((150, 512), np.float32)
        r0, c0 = max(row0, 0), max(col0, 0)
        r1, c1 = min(row0 + patch.shape[0], 150), min(col0 + patch.shape[1], 512)
        pasted[r0:r1, c0:c1] = patch[r0 - row0:r1 - row0, c0 - col0:c1 - col0]
        np.testing.assert_array_equal(pasted, reference["masks"][k, 0].numpy())


# ------------------------------------------------------------------------------------------------
# faults a long archive run meets
# ------------------------------------------------------------------------------------------------
def png_declaring(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares ``width`` x ``height`` RGB pixels (no image data follows)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_png_is_one_unreadable_map(tmp_path, blob_model):
    maps = {f"r18_{sol:03d}": (100.0 + sol, [(10.0 * sol, 0.0, 6.0)]) for sol in (1, 2)}
    archive = write_disc_archive(tmp_path / "archive", maps)
    png_declaring(archive / "R18" / "r18_002.png", 60000, 20000)
    summary = detect.detect_archive(blob_model, archive, tmp_path / "out", execution=QUIET)
    assert summary.n_errors == 1
    table = pd.read_csv(tmp_path / "out" / "maps.csv").set_index("map_id")
    assert table.loc["r18_002", "status"] == "error" and "r18_002.png" in table.loc["r18_002", "error"]
    assert "too many pixels" in table.loc["r18_002", "error"] and table.loc["r18_001", "status"] == "ok"


def test_disk_full_while_writing_parts_names_the_file(tmp_path, blob_model, monkeypatch):
    import errno

    archive = write_disc_archive(tmp_path / "archive", {"r18_001": (101.0, [(0.0, 0.0, 6.0)])})
    real_write_text = Path.write_text

    def full_disk(self, *args, **kwargs):
        if "parts" in self.parts:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError, match=r"parts/.*: cannot write, the disk is full") as info:
        detect.detect_archive(blob_model, archive, tmp_path / "out", execution=QUIET)
    assert type(info.value).__name__ == "DiskFullError"
    assert not list((tmp_path / "out").rglob("*.tmp*"))  # no temporary file left behind


def test_hdf_error_on_a_full_disk_is_reported_as_disk_full(tmp_path, monkeypatch):
    from collections import namedtuple

    from marsdust import fileio

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda folder: usage(100, 100, 0))
    with pytest.raises(fileio.DiskFullError, match=r"masks\.nc: cannot write, the disk is full.*HDF error"):
        with fileio.atomic_output(tmp_path / "masks.nc"):
            raise RuntimeError("NetCDF: HDF error")


def test_resume_is_keyed_on_the_checkpoints_content_not_its_path(tmp_path):
    grid = MapGrid.moc(0.8)
    archive = write_disc_archive(tmp_path / "archive", {"r18_001": (101.0, [(0.0, 0.0, 8.0)]),
                                                   "r18_002": (102.0, [(40.0, 0.0, 8.0)])}, grid=grid)
    ckpt = save_checkpoint(always_storm_detector(), tmp_path / "best.ckpt")
    out = tmp_path / "out"
    detect.detect_archive(ckpt, archive, out, execution=dataclasses.replace(ONE_THREAD, merge=False))
    (out / "parts" / "r18_002.json").unlink()  # as if killed before the last map
    moved = tmp_path / "moved.ckpt"
    moved.write_bytes(ckpt.read_bytes())
    assert detect.detect_archive(moved, archive, out, execution=ONE_THREAD).n_processed == 1  # same model
    retrained = torch.load(ckpt, weights_only=False)
    key = next(k for k in retrained["state_dict"] if k.endswith("cls_score.bias"))
    retrained["state_dict"][key] = retrained["state_dict"][key] + 0.5
    torch.save(retrained, ckpt)  # a retrained best.ckpt at the same path
    with pytest.raises(ValueError, match="other settings.*checkpoint_sha256"):
        detect.detect_archive(ckpt, archive, out, execution=ONE_THREAD)


def test_no_detections_still_has_member_and_sequence_columns(tmp_path, blob_model):
    archive = write_disc_archive(tmp_path / "archive", {"r18_001": (101.0, [])})
    detect.detect_archive(blob_model, archive, tmp_path / "out", execution=QUIET)
    columns = pd.read_csv(tmp_path / "out" / "detections.csv").columns
    assert {"member_id", "sequence_id"} <= set(columns)


def test_parts_written_before_the_history_column_merge_with_it_empty(tmp_path):
    from marsdust.detect.parts import write_json

    old_part = {"map": {"map_id": "r18_001", "mars_year": 25, "ls": 101.0, "valid_fraction": 1.0, "n_detections": 0,
                        "seconds": 0.1, "status": "ok", "error": ""}, "detections": [], "mask_chunk": None}
    write_json(detect.part_path(tmp_path, "r18_001"), old_part)
    summary = detect.merge_parts(tmp_path, [{"map_id": "r18_001"}], progress=False)
    maps = pd.read_csv(tmp_path / "maps.csv", keep_default_na=False)
    assert maps["history"].tolist() == [""] and summary.n_without_history == 0


def test_temp_files_of_a_killed_run_are_removed_and_a_second_run_is_locked_out(tmp_path, blob_model):
    from marsdust.detect.archive import output_lock

    archive = write_disc_archive(tmp_path / "archive", {"r18_001": (101.0, [(0.0, 0.0, 6.0)])})
    out = tmp_path / "out"
    stale = [out / "parts" / ".marsdust-r18_001.json.k1ll3d.tmp.json",
             out / "parts" / "masks" / ".marsdust-r18_001.nc.x.tmp.nc", out / ".marsdust-detections.csv.y.tmp.csv",
             out / "mdad" / "MY25" / ".marsdust-MDADMY25.nc.z.tmp.nc"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half written")
    users = [out / ".mywork.tmp", out / ".detections.csv.y.tmp.csv"]  # not marsdust's names: left alone
    for path in users:
        path.write_text("the user's")
    detect.detect_archive(blob_model, archive, out, execution=QUIET)
    assert not any(path.exists() for path in stale)
    assert all(path.read_text() == "the user's" for path in users)
    with output_lock(out):  # another detect holds the folder
        with pytest.raises(ValueError, match=r"another marsdust detect \(pid \d+\) is writing to this folder"):
            detect.detect_archive(blob_model, archive, out, execution=QUIET)
    assert detect.detect_archive(blob_model, archive, out, execution=QUIET).n_processed == 0  # released


def test_a_link_planted_as_the_lock_file_is_refused_and_its_target_kept(tmp_path, blob_model):
    archive = write_disc_archive(tmp_path / "archive", {"r18_001": (101.0, [(0.0, 0.0, 6.0)])})
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (out / detect.archive.LOCK_FILE).symlink_to(target)
    with pytest.raises(ValueError, match="symbolic link"):
        detect.detect_archive(blob_model, archive, out, execution=QUIET)
    assert target.read_text() == "keep me"
