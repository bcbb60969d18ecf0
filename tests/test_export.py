"""Tests of marsdust.export: records from masks, tables, GeoJSON, MDAD v1.1 cubes, GeoTIFF, PNG, atomic writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely

from marsdust import export
from marsdust.grid import MARS_RADIUS_KM, MapGrid, polygon_area_km2

GRID = MapGrid.moc(0.5)  # 240 x 720: small and fast, same geometry as the real 0.1° grid


def disk_mask(grid: MapGrid, lon0_deg: float, lat0_deg: float, radius_deg: float) -> np.ndarray:
    """Pixels whose centres lie within ``radius_deg`` of arc from the centre (a spherical cap)."""
    lat = np.radians(grid.lat_centers_deg)[:, None]
    lon = np.radians(grid.lon_centers_deg)[None, :]
    lat0, lon0 = np.radians(lat0_deg), np.radians(lon0_deg)
    cos_arc = np.sin(lat) * np.sin(lat0) + np.cos(lat) * np.cos(lat0) * np.cos(lon - lon0)
    return np.degrees(np.arccos(np.clip(cos_arc, -1, 1))) <= radius_deg


def cap_area_km2(radius_deg: float) -> float:
    return 2 * np.pi * MARS_RADIUS_KM**2 * (1 - np.cos(np.radians(radius_deg)))


def test_disk_area_matches_spherical_cap():
    grid = MapGrid.moc(0.25)
    records = export.detection_records("r18_040", 25, 100.0, grid, [disk_mask(grid, 30.0, 35.0, 10.0)], [0.9])
    assert len(records) == 1
    record = records[0]
    assert record["area_km2"] == pytest.approx(cap_area_km2(10.0), rel=0.02)
    # the simplified outline keeps the area too
    assert polygon_area_km2(shapely.from_wkt(record["polygon_wkt"])) == pytest.approx(cap_area_km2(10.0), rel=0.02)
    assert record["lon"] == pytest.approx(30.0, abs=0.1)
    assert record["lat"] == pytest.approx(35.0, abs=0.3)
    assert record["lon_min"] < 30.0 < record["lon_max"]
    assert record["lat_min"] < 35.0 < record["lat_max"]
    assert record["x1"] > record["x0"] and record["y1"] > record["y0"]


def test_storm_across_180_is_one_record_with_two_part_geojson(tmp_path):
    import geopandas as gpd

    mask = disk_mask(GRID, 178.0, -10.0, 8.0)
    assert mask[:, 0].any() and mask[:, -1].any()  # touches both map edges
    records = export.detection_records("r18_041", 25, 100.5, GRID, [mask], [0.8])
    assert len(records) == 1
    record = records[0]
    assert abs(record["lon"]) > 175.0 and record["lon"] == pytest.approx(178.0, abs=0.3)
    assert record["lon_max"] < record["lon_min"]  # crosses 180°
    assert record["x1"] > GRID.width  # pixel box runs past the eastern edge
    outline = shapely.from_wkt(record["polygon_wkt"])
    assert outline.geom_type == "MultiPolygon" and len(outline.geoms) == 2
    assert outline.bounds[0] >= -180.0 and outline.bounds[2] <= 180.0

    df = export.detections_frame(records)
    path = export.write_geojson(df, tmp_path / "detections.geojson")
    gdf = gpd.read_file(path)
    assert len(gdf) == 1
    assert gdf.geometry.iloc[0].geom_type == "MultiPolygon" and len(gdf.geometry.iloc[0].geoms) == 2
    assert polygon_area_km2(gdf.geometry.iloc[0]) == pytest.approx(cap_area_km2(8.0), rel=0.02)
    assert gdf["area_km2"].iloc[0] == pytest.approx(record["area_km2"])
    assert gdf["map_id"].iloc[0] == "r18_041"
    assert gdf.crs is not None and gdf.crs.ellipsoid.semi_major_metre == pytest.approx(3396190.0)


def test_tables_round_trip_csv_and_parquet(tmp_path):
    masks = [disk_mask(GRID, -40.0, 20.0, 5.0), disk_mask(GRID, 100.0, -30.0, 3.0)]
    df = export.detections_frame(export.detection_records("r18_040", 25, 100.0, GRID, masks, [0.9, 0.4]))
    assert list(df.columns[: len(export.DETECTION_COLUMNS)]) == export.DETECTION_COLUMNS
    for name in ("d.csv", "d.parquet"):
        export.write_table(df, tmp_path / name)
        back = pd.read_csv(tmp_path / name) if name.endswith(".csv") else pd.read_parquet(tmp_path / name)
        assert back["area_km2"].to_numpy() == pytest.approx(df["area_km2"].to_numpy())
        assert list(back["polygon_wkt"]) == list(df["polygon_wkt"])
    with pytest.raises(ValueError, match="unknown table format"):
        export.write_table(df, tmp_path / "d.xlsx")
    assert export.detections_frame([]).columns.tolist() == export.DETECTION_COLUMNS


def _steps():
    first = export.label_image([disk_mask(GRID, 0.0, 0.0, 5.0), disk_mask(GRID, 90.0, 30.0, 4.0)])
    valid = np.ones(GRID.shape, dtype=bool)
    valid[:, :10] = False  # a missing swath
    second = export.label_image([disk_mask(GRID, 3.0, 0.0, 5.0)], values=[export.member_label_value("R18_001b")])
    return [
        export.MaskStep.from_map_id("r18_041", 25, 100.6, second),
        export.MaskStep.from_map_id("r18_040", 25, 100.0, first, valid=valid),
    ]


def test_mask_cube_layout_read_back_by_xarray(tmp_path):
    import xarray as xr

    steps = _steps()
    path = export.write_mask_cube(export.mask_cube_path(tmp_path, 25), steps, GRID)
    assert path == tmp_path / "MY25" / "MDADMY25.nc"
    with xr.open_dataset(path) as ds:
        assert ds["MDAD"].dims == ("time", "longitude", "latitude")
        assert ds["MDAD"].dtype == np.uint8
        assert ds.sizes == {"time": 2, "longitude": 720, "latitude": 361, "timeStat": 8}
        assert ds["latitude"].values[0] == -90.0 and ds["latitude"].values[-1] == 90.0
        assert np.all(np.diff(ds["latitude"].values) > 0)
        assert ds["longitude"].values[0] == pytest.approx(-179.75)
        assert ds["longitude"].attrs["units"] == "degrees_east" and ds["latitude"].attrs["units"] == "degrees_north"
        assert list(ds["MDAD"].attrs["flag_values"]) == [0, 255]
        assert ds["MDAD"].attrs["flag_meanings"] == "no_dust missing_mdgm_pixel"
        assert list(ds["dayList"].values) == ["R18_day41", "R18_day40"]
        assert ds["timeList"].values[0, 4:].tolist() == [100.6] * 4
        assert 0 < ds["timeList"].values[0, 0] < 669
        np.testing.assert_array_equal(ds["soy"].values, ds["timeList"].values[:, 3])
        cube = ds["MDAD"].values
    lat = np.linspace(-90, 90, 361)
    outside = (lat > 60) | (lat < -60)
    assert np.all(cube[:, :, outside] == 255)  # outside the MOC band
    assert np.all(cube[1, :10, ~outside] == 255)  # the missing swath
    assert set(np.unique(cube[1])) == {0, 1, 2, 255}
    assert set(np.unique(cube[0])) == {0, 134, 255}
    back = export.cube_to_grid_labels(cube[1], GRID)
    expected = np.where(steps[1].valid, steps[1].labels, 255)
    np.testing.assert_array_equal(back, expected)


def test_chunks_merge_into_the_same_cube_in_time_order(tmp_path):
    import xarray as xr

    chunks = [export.write_mask_chunk(tmp_path / "chunks", step, GRID) for step in _steps()]
    merged = export.merge_mask_cube(chunks, tmp_path / "merged.nc")
    direct = export.write_mask_cube(tmp_path / "direct.nc", sorted(_steps(), key=lambda s: s.ls_deg), GRID)
    with xr.open_dataset(merged) as a, xr.open_dataset(direct) as b:
        assert list(a["dayList"].values) == ["R18_day40", "R18_day41"]
        np.testing.assert_array_equal(a["MDAD"].values, b["MDAD"].values)
        np.testing.assert_allclose(a["timeList"].values, b["timeList"].values)
        np.testing.assert_allclose(a["soy"].values, b["soy"].values)


def test_cube_reads_as_real_mdad_files_do_with_plain_netcdf4(tmp_path):
    """Tools written for the real MDAD v1.1 files use netCDF4's default masking and these names."""
    import netCDF4

    path = export.write_mask_cube(export.mask_cube_path(tmp_path, 25), _steps(), GRID)
    with netCDF4.Dataset(path) as dataset:
        assert len(dataset.variables["soy"]) == 2
        day = dataset.variables["MDAD"][1, :, :]
        assert not np.ma.getmask(day).any()  # 255 (missing) is data, not masked away
        assert day.shape == (GRID.width, 361) and day.max() == 255
        assert dataset.variables["dayList"][1] == "R18_day40"
        assert dataset.variables["timeList"][1, 7] == pytest.approx(100.0)  # the median Ls


def test_cube_and_master_csv_read_back_by_mdad_reader(tmp_path):
    from marsdust import mdad, track

    maps = {"r18_040": (100.0, 0.0), "r18_041": (100.55, 2.0), "r18_042": (101.1, 4.0)}
    frames, masks_by_map = [], {}
    for map_id, (ls, lon0) in maps.items():
        masks = [disk_mask(GRID, lon0, 10.0, 6.0), disk_mask(GRID, -120.0, -40.0, 3.0)]
        masks_by_map[map_id] = masks
        frames.append(export.detections_frame(export.detection_records(map_id, 25, ls, GRID, masks, [0.9, 0.6])))
    tracked = track.track(pd.concat(frames, ignore_index=True))
    steps = []
    for map_id, (ls, _) in maps.items():
        rows = tracked[tracked["map_id"] == map_id]
        values = [export.member_label_value(m) for m in rows["member_id"]]
        steps.append(export.MaskStep.from_map_id(map_id, 25, ls, export.label_image(masks_by_map[map_id], values)))
    export.write_mask_cube(export.mask_cube_path(tmp_path, 25), steps, GRID)
    export.write_master_csv(tracked, tmp_path / "MY25" / "MDAD_MY25_master.csv")

    catalog = mdad.read_catalog(tmp_path)
    assert len(catalog) == len(tracked)
    merged = catalog.merge(tracked, on=["map_id", "member_id"], suffixes=("_cat", "_det"))
    assert len(merged) == len(tracked)
    np.testing.assert_allclose(merged["area_km2_cat"], merged["area_km2_det"], rtol=1e-6)
    np.testing.assert_allclose(merged["lon_cat"], merged["lon_det"], atol=1e-6)
    assert (merged["sequence_id_cat"].fillna("") == merged["sequence_id_det"]).all()
    for wkt_cat, area in zip(merged["polygon_wkt_cat"], merged["area_km2_det"]):
        assert polygon_area_km2(shapely.from_wkt(wkt_cat)) == pytest.approx(area, rel=1e-6)


def test_storm_on_the_band_edges_reads_back_on_its_own_pixels(tmp_path):
    """A MOC storm touching 60°S or 60°N comes back from the cube on the same pixels: the -60° point
    (the northern edge of a cell outside the band) is missing, not a copy of the last row."""
    import netCDF4

    from marsdust import mdad

    labels = np.zeros(GRID.shape, dtype=np.uint8)
    labels[-6:, 100:140] = 7  # the band's six southernmost rows
    labels[:3, 500:520] = 9  # and three northernmost rows
    path = export.write_mask_cube(export.mask_cube_path(tmp_path, 25), [
        export.MaskStep.from_map_id("r18_040", 25, 100.0, labels)], GRID)
    back, _ = mdad.cube_labels(path, "r18_040")  # on the global grid: the MOC band starts at row 60
    top = round((90.0 - GRID.lat_north_deg) / GRID.res_deg)
    assert (back[top:top + GRID.height] == labels).all()
    assert (back[:top] == 255).all() and (back[top + GRID.height:] == 255).all()
    south_point = np.flatnonzero(np.isclose(export.cube_latitudes_deg(GRID.res_deg), GRID.lat_south_deg))
    with netCDF4.Dataset(path) as ds:
        ds.set_auto_mask(False)
        assert (ds["MDAD"][0, :, south_point] == 255).all()


def test_geotiff_has_mars_crs_and_grid_transform(tmp_path):
    import rasterio

    prob = np.zeros(GRID.shape, dtype=np.float32)
    prob[disk_mask(GRID, 10.0, 10.0, 5.0)] = 0.75
    valid = np.ones(GRID.shape, dtype=bool)
    valid[0] = False
    crs_source = export.write_geotiff(tmp_path / "p.tif", prob, GRID, valid=valid)
    assert crs_source == "IAU_2015:49900"
    with rasterio.open(tmp_path / "p.tif") as src:
        assert (src.height, src.width) == GRID.shape
        assert src.transform == export.grid_transform(GRID)
        assert src.transform.c == -180.0 and src.transform.f == 60.0 and src.transform.a == 0.5
        assert src.crs.to_string() == "IAU_2015:49900"
        data = src.read(1)
    assert np.isnan(data[0]).all()
    np.testing.assert_array_equal(data[1:], prob[1:])
    export.write_geotiff(tmp_path / "m.tif", prob > 0, GRID)
    with rasterio.open(tmp_path / "m.tif") as src:
        assert src.dtypes[0] == "uint8" and src.read(1).sum() == (prob > 0).sum()


def test_failed_writers_leave_no_file(tmp_path):
    steps = _steps()

    def failing_steps():
        yield steps[0]
        raise RuntimeError("detector crashed")

    target = tmp_path / "MY25" / "MDADMY25.nc"
    with pytest.raises(RuntimeError, match="detector crashed"):
        export.write_mask_cube(target, failing_steps(), GRID)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary file either

    bad = np.zeros((10, 10), dtype=np.float32)
    with pytest.raises(ValueError, match="does not match"):
        export.write_geotiff(tmp_path / "p.tif", bad, GRID)
    with pytest.raises(ValueError, match="not valid WKT"):
        export.write_geojson(pd.DataFrame({"map_id": ["a"], "polygon_wkt": ["POLYGON ((oops"]}), tmp_path / "d.geojson")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MY25"]

    existing = tmp_path / "keep.csv"
    existing.write_text("old\n")
    with pytest.raises(RuntimeError):
        with export.atomic_output(existing) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert existing.read_text() == "old\n"


def test_quicklook_png_draws_outlines(tmp_path):
    from PIL import Image

    rgb = np.full(GRID.shape + (3,), 0.3, dtype=np.float32)
    records = export.detection_records("r18_040", 25, 100.0, GRID, [disk_mask(GRID, 179.0, 0.0, 6.0)], [0.9])
    path = export.write_quicklook_png(tmp_path / "q.png", rgb, [r["polygon_wkt"] for r in records], GRID,
                                      max_width_px=360, title="r18_040")
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (120, 360, 3)
    yellow = (image[..., 0] > 200) & (image[..., 1] > 200) & (image[..., 2] < 50)
    assert yellow[:, :20].any() and yellow[:, -20:].any()  # both halves of the storm across 180°


def test_member_label_values_follow_mdad():
    assert export.member_label_value("R18_031") == 31
    assert export.member_label_value("R18_031b") == 164
    # joined ids: the first member's value, the rule the reader applies (one parser for both)
    assert export.member_label_value("R18_031+032") == 31
    assert export.member_label_value("G13_001b+002+017") == 134
    with pytest.raises(ValueError):
        export.member_label_value("R18_200")
    labels = export.label_image([np.eye(3, dtype=bool), np.ones((3, 3), dtype=bool)])
    assert labels[0, 0] == 1 and labels[0, 1] == 2  # the earlier (higher-score) mask wins overlaps


def test_map_mask_step_numbers_and_overlaps():
    big, small = disk_mask(GRID, 0.0, 0.0, 6.0), disk_mask(GRID, 3.0, 0.0, 3.0)
    step = export.map_mask_step("r18_040", 25, 100.0, [big, small], scores=[0.4, 0.9])
    assert step.day_name == "R18_day40"
    assert step.labels[small].tolist() == [2] * int(small.sum())  # higher score wins the overlap
    assert (step.labels[big & ~small] == 1).all()
    tracked = export.map_mask_step("r18_040", 25, 100.0, [big, small], member_ids=["R18_007", "R18_002b"],
                                       scores=[0.4, 0.9])
    assert set(np.unique(tracked.labels)) == {0, 7, 135}
    empty = export.map_mask_step("r18_040", 25, 100.0, [], valid=np.ones(GRID.shape, dtype=bool))
    assert empty.labels.shape == GRID.shape and not empty.labels.any()


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
