"""marsdust.formats.mdad_cube: the MDAD v1.1 cube — reading hand-written cubes (any axis order and names, with or
without coordinates), writing cubes and per-map chunks, merging chunks, the master CSV round trip."""

from __future__ import annotations

import netCDF4
import numpy as np
import pandas as pd
import pytest
import shapely
from shapely import wkt

from marsdust.formats.mdad_cube import (
    MaskStep,
    chunk_grid,
    cube_labels,
    instance_mask,
    map_mask_step,
    merge_mask_chunks,
    write_mask_chunk,
    write_mask_cube,
    write_master_csv,
)
from marsdust.grid import MapGrid, polygon_area_km2
from marsdust.mdad import read_catalog
from marsdust.mdad_format import (
    CatalogError,
    cube_latitudes_deg,
    cube_path,
    cube_to_grid_labels,
    grid_labels_to_cube,
    member_cube_value,
)
from marsdust.outlines import detection_records, detections_frame, label_image

from disk_masks import disk_mask
from mdad_cube_files import GRID, cube_days, master_frame, write_cube, write_cube_dir

MOC_GRID = MapGrid.moc(0.5)  # 240 x 720: small and fast, same geometry as the real 0.1° grid


# --- reading cubes laid out as the real files are --------------------------------------------
@pytest.fixture
def cube_dir(tmp_path):
    return write_cube_dir(tmp_path / "mdad" / "MY30")


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


def test_cube_writer_convention_round_trip(tmp_path):
    """Slices placed by the writer's latitude registration read back onto the same pixels."""
    days, maps = cube_days()
    slab = grid_labels_to_cube(np.where(maps[0] == 255, 0, maps[0]), GRID)
    folder = tmp_path / "MY30"
    write_cube(folder / "MDADMY30.nc", days[:1], [maps[0]])
    with netCDF4.Dataset(folder / "MDADMY30.nc", "a") as ds:
        ds["MDAD"][0] = slab
    mask, _ = instance_mask(folder / "MDADMY30.nc", "d01_005", "D01_031")
    np.testing.assert_array_equal(mask, maps[0] == 31)


# --- writing cubes and chunks ----------------------------------------------------------------
def _steps():
    first = label_image([disk_mask(MOC_GRID, 0.0, 0.0, 5.0), disk_mask(MOC_GRID, 90.0, 30.0, 4.0)])
    valid = np.ones(MOC_GRID.shape, dtype=bool)
    valid[:, :10] = False  # a missing swath
    second = label_image([disk_mask(MOC_GRID, 3.0, 0.0, 5.0)], values=[member_cube_value("R18_001b")])
    return [
        MaskStep.from_map_id("r18_041", 25, 100.6, second),
        MaskStep.from_map_id("r18_040", 25, 100.0, first, valid=valid),
    ]


def test_mask_cube_layout_read_back_by_xarray(tmp_path):
    import xarray as xr

    steps = _steps()
    path = write_mask_cube(cube_path(tmp_path, 25), steps, MOC_GRID)
    assert path == tmp_path / "MY25" / "MDADMY25.nc"
    with xr.open_dataset(path, mask_and_scale=False) as ds:
        assert ds["MDAD"].dims == ("time", "longitude", "latitude")
        assert ds["MDAD"].dtype == np.uint8
        assert ds.sizes == {"time": 2, "longitude": 720, "latitude": 361, "timeStat": 8, "nv": 2}
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
    back = cube_to_grid_labels(cube[1], MOC_GRID)
    expected = np.where(steps[1].valid, steps[1].labels, 255)
    np.testing.assert_array_equal(back, expected)


def test_cube_is_cf_for_xarray_with_ls_coordinate_fill_value_bounds_and_crs(tmp_path):
    """xarray understands the cube without help: 255 masked, time selected by Ls, a sol plotted, the CRS read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import xarray as xr
    from pyproj import CRS

    path = write_mask_cube(cube_path(tmp_path, 25), _steps(), MOC_GRID)
    with xr.open_dataset(path) as ds:
        assert {"dayList", "marsYear", "soy"} <= set(ds.coords) and "time" in ds.indexes
        day = ds["MDAD"].sel(time=100.0)
        assert str(day["dayList"].values) == "R18_day40" and int(day["marsYear"]) == 25
        assert day.dtype.kind == "f" and np.isnan(day.values).any()  # 255 → NaN
        assert np.nanmax(day.values) == 2
        figure, axes = plt.subplots()
        day.plot(ax=axes, x="longitude", y="latitude")
        plt.close(figure)
        res = 0.5
        np.testing.assert_allclose(ds["lon_bnds"].values[:, 1] - ds["lon_bnds"].values[:, 0], res)
        np.testing.assert_allclose(ds["lat_bnds"].values[1:, 1], ds["latitude"].values[1:])  # L = northern edge
        np.testing.assert_allclose(ds["lat_bnds"].values[1:, 0], ds["latitude"].values[1:] - res)
        assert ds["MDAD"].encoding["_FillValue"] == 255 and ds["MDAD"].attrs["grid_mapping"] == "crs"
        crs = CRS.from_wkt(ds["crs"].attrs["crs_wkt"])
        assert crs.ellipsoid.semi_major_metre == pytest.approx(3396190.0)


def test_cube_reads_as_real_mdad_files_do_with_plain_netcdf4(tmp_path):
    """Tools written for the real MDAD v1.1 files use netCDF4's default masking and these names.

    255 is the ``_FillValue``: netCDF4 masks it, and the masked array's data (or ``filled(255)``)
    still holds it, so a reader comparing values finds the storm pixels as in MDAD's files.
    """
    import netCDF4

    path = write_mask_cube(cube_path(tmp_path, 25), _steps(), MOC_GRID)
    with netCDF4.Dataset(path) as dataset:
        assert len(dataset.variables["soy"]) == 2
        day = dataset.variables["MDAD"][1, :, :]
        np.testing.assert_array_equal(np.ma.getmaskarray(day), day.data == 255)
        assert day.shape == (MOC_GRID.width, 361) and day.filled(255).max() == 255
        assert set(np.unique(day.compressed())) == {0, 1, 2}
        assert dataset.variables["dayList"][1] == "R18_day40"
        assert dataset.variables["timeList"][1, 7] == pytest.approx(100.0)  # the median Ls


def test_cube_and_master_csv_read_back_by_mdad_reader(tmp_path):
    from marsdust import track

    maps = {"r18_040": (100.0, 0.0), "r18_041": (100.55, 2.0), "r18_042": (101.1, 4.0)}
    frames, masks_by_map = [], {}
    for map_id, (ls, lon0) in maps.items():
        masks = [disk_mask(MOC_GRID, lon0, 10.0, 6.0), disk_mask(MOC_GRID, -120.0, -40.0, 3.0)]
        masks_by_map[map_id] = masks
        frames.append(detections_frame(detection_records(map_id, 25, ls, MOC_GRID, masks, [0.9, 0.6])))
    tracked = track.track(pd.concat(frames, ignore_index=True))
    steps = []
    for map_id, (ls, _) in maps.items():
        rows = tracked[tracked["map_id"] == map_id]
        values = [member_cube_value(m) for m in rows["member_id"]]
        steps.append(MaskStep.from_map_id(map_id, 25, ls, label_image(masks_by_map[map_id], values)))
    write_mask_cube(cube_path(tmp_path, 25), steps, MOC_GRID)
    write_master_csv(tracked, tmp_path / "MY25" / "MDAD_MY25_master.csv")

    catalog = read_catalog(tmp_path)
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

    labels = np.zeros(MOC_GRID.shape, dtype=np.uint8)
    labels[-6:, 100:140] = 7  # the band's six southernmost rows
    labels[:3, 500:520] = 9  # and three northernmost rows
    path = write_mask_cube(cube_path(tmp_path, 25), [
        MaskStep.from_map_id("r18_040", 25, 100.0, labels)], MOC_GRID)
    back, _ = cube_labels(path, "r18_040")  # on the global grid: the MOC band starts at row 60
    top = round((90.0 - MOC_GRID.lat_north_deg) / MOC_GRID.res_deg)
    assert (back[top:top + MOC_GRID.height] == labels).all()
    assert (back[:top] == 255).all() and (back[top + MOC_GRID.height:] == 255).all()
    south_point = np.flatnonzero(np.isclose(cube_latitudes_deg(MOC_GRID.res_deg), MOC_GRID.lat_south_deg))
    with netCDF4.Dataset(path) as ds:
        ds.set_auto_mask(False)
        assert (ds["MDAD"][0, :, south_point] == 255).all()


def test_map_mask_step_numbers_and_overlaps():
    big, small = disk_mask(MOC_GRID, 0.0, 0.0, 6.0), disk_mask(MOC_GRID, 3.0, 0.0, 3.0)
    step = map_mask_step("r18_040", 25, 100.0, [big, small], scores=[0.4, 0.9])
    assert step.day_name == "R18_day40"
    assert step.labels[small].tolist() == [2] * int(small.sum())  # higher score wins the overlap
    assert (step.labels[big & ~small] == 1).all()
    tracked = map_mask_step("r18_040", 25, 100.0, [big, small], member_ids=["R18_007", "R18_002b"],
                                       scores=[0.4, 0.9])
    assert set(np.unique(tracked.labels)) == {0, 7, 135}
    empty = map_mask_step("r18_040", 25, 100.0, [], valid=np.ones(MOC_GRID.shape, dtype=bool))
    assert empty.labels.shape == MOC_GRID.shape and not empty.labels.any()


def test_chunks_merge_into_the_same_cube_in_the_order_given(tmp_path):
    import xarray as xr

    in_time_order = sorted(_steps(), key=lambda s: s.ls_deg)
    chunks = [write_mask_chunk(tmp_path / "chunks", step, MOC_GRID) for step in in_time_order]
    merged = merge_mask_chunks([(chunk, None) for chunk in chunks], tmp_path / "merged.nc", chunk_grid(chunks[0]))
    direct = write_mask_cube(tmp_path / "direct.nc", in_time_order, MOC_GRID)
    with xr.open_dataset(merged, mask_and_scale=False) as a, xr.open_dataset(direct, mask_and_scale=False) as b:
        assert list(a["dayList"].values) == ["R18_day40", "R18_day41"]
        np.testing.assert_array_equal(a["MDAD"].values, b["MDAD"].values)
        np.testing.assert_allclose(a["timeList"].values, b["timeList"].values)
        np.testing.assert_allclose(a["soy"].values, b["soy"].values)


def test_merge_relabels_each_chunk_through_its_table_and_refuses_another_grid(tmp_path):
    import xarray as xr

    in_time_order = sorted(_steps(), key=lambda s: s.ls_deg)
    chunks = [write_mask_chunk(tmp_path / "chunks", step, MOC_GRID) for step in in_time_order]
    relabel = np.arange(256, dtype=np.uint8)
    relabel[1], relabel[2] = 7, 140  # detection numbers 1, 2 of the first map -> member values
    merged = merge_mask_chunks([(chunks[0], relabel), (chunks[1], None)], tmp_path / "merged.nc", chunk_grid(chunks[0]))
    direct = write_mask_cube(tmp_path / "direct.nc", in_time_order, MOC_GRID)
    with xr.open_dataset(merged, mask_and_scale=False) as a, xr.open_dataset(direct, mask_and_scale=False) as b:
        np.testing.assert_array_equal(a["MDAD"].values[0], relabel[b["MDAD"].values[0]])
        np.testing.assert_array_equal(a["MDAD"].values[1], b["MDAD"].values[1])
        assert set(np.unique(a["MDAD"].values[0])) == {0, 7, 140, 255}
    coarse = write_mask_chunk(tmp_path / "coarse", MaskStep("R18", 42, 25, 101.0, np.zeros((75, 225), np.uint8)),
                              MapGrid.moc(1.6))
    message = r"R18_day42: cube slice shape \(225, 113\) does not match the cube's \(720, 361\)"
    with pytest.raises(ValueError, match=message):
        merge_mask_chunks([(chunks[0], None), (coarse, None)], tmp_path / "mixed.nc", chunk_grid(chunks[0]))
    assert not (tmp_path / "mixed.nc").exists()


def test_chunk_grid_has_the_chunks_width_on_a_band_it_fits(tmp_path):
    step = MaskStep("R18", 42, 25, 101.0, np.zeros((75, 225), np.uint8))
    grid = chunk_grid(write_mask_chunk(tmp_path, step, MapGrid.moc(1.6)))  # 225 columns: 112.5 rows of 180°
    assert (grid.width, grid.res_deg, grid.lat_north_deg) == (225, 1.6, 60.0)
    assert chunk_grid(write_mask_chunk(tmp_path, step, MapGrid.moc(1.6))) == grid
    assert chunk_grid(write_mask_cube(tmp_path / "g.nc", [], MapGrid.marci(2.0))) == MapGrid.marci(2.0)
