"""marsdust.formats.cloud_mask: MARCI cloud masks read onto a map-like layout, written, resampled to a map's grid."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest

from marsdust.formats.cloud_mask import INVALID, block_majority, read_cloud_mask, read_cloud_mask_on, write_cloud_mask
from marsdust.grid import MapGrid
from marsdust.mdad_format import CatalogError


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


def test_cloud_mask_resamples_to_coarser_and_finer_grids(tmp_path):
    grid = MapGrid.moc(0.8)
    values = np.zeros(grid.shape, np.int16)
    values[10:20, 100:140] = 1
    values[:, :2] = INVALID
    path = write_cloud_mask(tmp_path / "m.nc", values, grid)
    coarse, coarse_valid = read_cloud_mask_on(path, MapGrid.moc(1.6))
    assert coarse.shape == (75, 225) and coarse[5:10, 50:70].all() and not coarse_valid[:, 0].any()
    fine, _ = read_cloud_mask_on(path, MapGrid.moc(0.4))
    assert fine.shape == (300, 900) and fine[20:40, 200:280].all() and fine.sum() == 4 * values.clip(0).sum()


def test_cloud_mask_with_a_time_axis_a_fill_value_and_axes_named_x_and_y(tmp_path):
    path = tmp_path / "cloud.nc"
    with netCDF4.Dataset(path, "w") as ds:
        for name, size in (("time", 1), ("y", 2), ("x", 4)):
            ds.createDimension(name, size)
        ds.createVariable("lon", "f8", ("x",))[:] = [90.0, 180.0, 270.0, 0.0]
        ds.createVariable("lat", "f8", ("y",))[:] = [-45.0, 45.0]
        mask = ds.createVariable("CloudMask", "i2", ("time", "y", "x"), fill_value=-5)
        mask.long_name = "cloud mask"
        mask[:] = [[[1, -5, 0, 2], [-999, 0, 3, -5]]]
    ds = read_cloud_mask(path)
    assert ds["cloudmask"].dims == ("time", "latitude", "longitude")
    assert ds["cloudmask"].attrs["long_name"] == "cloud mask" and ds["cloudmask"].dtype == np.int16
    np.testing.assert_allclose(ds["longitude"], [-180.0, -90.0, 0.0, 90.0])
    np.testing.assert_allclose(ds["latitude"], [45.0, -45.0])
    # north row (45°N) from the file's second row, columns 180, 270, 0, 90
    np.testing.assert_array_equal(ds["cloudmask"].values[0], [[0, 3, -5, -999], [-5, 0, 2, 1]])
    np.testing.assert_array_equal(ds["valid"].values[0], [[True, True, False, False], [False, True, True, True]])
    np.testing.assert_array_equal(ds["cloudy"].values[0], [[False, True, False, False], [False, False, True, True]])


def test_block_majority_needs_half_the_pixels_valid_and_half_the_valid_ones_cloudy():
    valid = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
    cloudy = np.array([[1, 0, 1, 1], [0, 0, 1, 1]], bool)
    coarse_cloudy, coarse_valid = block_majority(cloudy, valid, 2)
    np.testing.assert_array_equal(coarse_valid, [[True, False]])
    np.testing.assert_array_equal(coarse_cloudy, [[False, False]])  # 1 of 4 valid cloudy; second block invalid
    coarse_cloudy, _ = block_majority(cloudy | np.eye(2, 4, dtype=bool), valid, 2)
    np.testing.assert_array_equal(coarse_cloudy, [[True, False]])  # 2 of 4: half is enough
    with pytest.raises(ValueError, match="block size 3 does not divide a 2 x 4 mask"):
        block_majority(cloudy, valid, 3)


def test_a_mask_declaring_more_than_one_global_mask_is_refused_before_it_is_read(tmp_path):
    import tracemalloc

    path = tmp_path / "huge.nc"  # 13 KB on disk, 37.7 GiB of fill values declared
    with netCDF4.Dataset(path, "w") as ds:
        for name, size in (("time", 300_000), ("latitude", 150), ("longitude", 450)):
            ds.createDimension(name, size)
        ds.createVariable("latitude", "f8", ("latitude",))[:] = 59.6 - 0.8 * np.arange(150)
        ds.createVariable("longitude", "f8", ("longitude",))[:] = -179.6 + 0.8 * np.arange(450)
        ds.createVariable("cloudmask", "i2", ("time", "latitude", "longitude"), zlib=True)
    tracemalloc.start()
    try:
        with pytest.raises(CatalogError, match=r"huge.nc: variable 'cloudmask' declares shape \(300000, 150, 450\)"):
            read_cloud_mask_on(path, MapGrid.moc(0.8))
        assert tracemalloc.get_traced_memory()[1] < 50 * 2**20
    finally:
        tracemalloc.stop()
