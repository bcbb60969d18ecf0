"""marsdust.formats.netcdf: opening netCDF files raw with clear errors; the one rule for longitude / latitude axes."""

from __future__ import annotations

import threading

import netCDF4
import numpy as np
import pytest

from marsdust.formats.netcdf import NETCDF_LOCK, find_lon_lat_dims, open_netcdf
from marsdust.mdad_format import CatalogError


@pytest.mark.parametrize("dims, expected", [
    ({"time": 3, "longitude": 90, "latitude": 46}, ("longitude", "latitude")),
    ({"t": 3, "x": 90, "y": 45}, ("x", "y")),  # names first, whatever the sizes
    ({"Lat": 46, "LON": 90, "soy": 2}, ("LON", "Lat")),
    ({"soy": 2, "dim_x": 90, "dim_y": 46}, ("dim_x", "dim_y")),  # by size: 90 = 2 x (46 - 1)
    ({"soy": 2, "a": 45, "b": 90}, ("b", "a")),  # by size: 90 = 2 x 45
    ({"soy": 2, "a": 7, "b": 9}, (None, None)),
])
def test_axes_of_a_cube_by_name_else_by_their_sizes(dims, expected):
    assert find_lon_lat_dims(dims) == expected


@pytest.mark.parametrize("dims, sizes, expected", [
    ({"longitude": 4, "latitude": 2}, (4, 2), ("longitude", "latitude")),
    ({"time": 1, "y": 2, "x": 4}, (4, 2), ("x", "y")),
    ({"lon": 2, "lat": 4}, (4, 2), ("lat", "lon")),  # lengths overrule names that disagree with them
    ({"a": 2, "b": 4}, (4, 2), ("b", "a")),  # by the coordinates' lengths
    ({"a": 4, "b": 4}, (4, 4), ("a", "b")),  # square: the first for longitude, the other for latitude
    ({"x": 3, "y": 2}, (4, 2), (None, "y")),
])
def test_axes_with_coordinate_lengths_must_match_them(dims, sizes, expected):
    assert find_lon_lat_dims(dims, lon_size=sizes[0], lat_size=sizes[1]) == expected


def _locked_for_other_threads() -> bool:
    taken = []

    def probe():
        taken.append(NETCDF_LOCK.acquire(blocking=False))
        if taken[0]:
            NETCDF_LOCK.release()

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return not taken[0]


def test_open_netcdf_reads_raw_values_under_the_lock_and_names_bad_files(tmp_path):
    path = tmp_path / "a.nc"
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("x", 2)
        variable = ds.createVariable("v", "u1", ("x",), fill_value=255)
        variable.scale_factor = 2.0
        variable[:] = np.ma.masked_array([1, 255], mask=[False, True])
    with open_netcdf(path, "test file") as ds:
        assert _locked_for_other_threads()
        assert ds["v"][:].tolist() == [0, 255] and not np.ma.isMaskedArray(ds["v"][:])
    assert not _locked_for_other_threads()
    with pytest.raises(FileNotFoundError, match="missing.nc: test file not found"):
        with open_netcdf(tmp_path / "missing.nc", "test file"):
            pass
    (tmp_path / "text.nc").write_text("hello")
    with pytest.raises(CatalogError, match="text.nc: not a readable netCDF file"):
        with open_netcdf(tmp_path / "text.nc", "test file"):
            pass
