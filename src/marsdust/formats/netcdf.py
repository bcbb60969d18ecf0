"""Reading netCDF files: the one stack (netCDF4) and the one axis-finding rule of marsdust's netCDF formats.

Every netCDF file marsdust reads (MDAD v1.1 cubes and their chunks, MARCI cloud masks) is opened
by :func:`open_netcdf` with netCDF4, the library that writes them too: values come back raw, as
stored (no fill masking, no scaling; an MDAD ``255`` stays ``255``), and one time step at a time
can be read without loading the file. Which dimensions of a variable are longitude and latitude
is decided by :func:`find_lon_lat_dims`, for every format alike. netCDF4 / HDF5 are not
thread-safe (``detect`` writes from several threads on a GPU): readers and writers hold
:data:`NETCDF_LOCK` while a file is open. A file's header declares its dimensions, not its data (a
12 KB file may declare gigabytes of fill values): every reader checks a variable's declared size
with :func:`check_declared_size` before it reads the variable.
"""

from __future__ import annotations

import math
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from marsdust.mdad_format import CatalogError

NETCDF_LOCK = threading.RLock()
"""Held by every netCDF reader (:func:`open_netcdf`) and writer from open to close (re-entrant: a writer may read)."""

LON_NAME_PREFIXES = ("lon", "x")
"""A dimension whose lower-case name starts with one of these is a longitude axis by name."""
LAT_NAME_PREFIXES = ("lat", "y")
"""A dimension whose lower-case name starts with one of these is a latitude axis by name."""


@contextmanager
def open_netcdf(path: str | os.PathLike, what: str) -> Iterator:
    """Open a netCDF file for reading, values raw (``set_auto_maskandscale(False)``), under :data:`NETCDF_LOCK`.

    Use as ``with open_netcdf(path, "MDAD netCDF cube") as dataset:``; the file is closed and the
    lock released when the block ends.

    Parameters
    ----------
    path : path
        The file.
    what : str
        What the file should be, for the not-found error (``"MDAD netCDF cube"``).

    Yields
    ------
    netCDF4.Dataset

    Raises
    ------
    FileNotFoundError
        ``path`` is not a file.
    CatalogError
        The file is not readable as netCDF.
    """
    import netCDF4

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    with NETCDF_LOCK:
        try:
            dataset = netCDF4.Dataset(path, "r")
        except OSError as exc:
            raise CatalogError(f"{path}: not a readable netCDF file ({exc})") from exc
        try:
            dataset.set_auto_maskandscale(False)
            yield dataset
        finally:
            dataset.close()


def check_declared_size(path: str | os.PathLike, variable, max_values: int, expected: str,
                        dims: tuple[str, ...] | None = None) -> None:
    """Refuse a variable that declares more values than ``max_values``, before any of it is read.

    Parameters
    ----------
    path : path
        The file, named in the error.
    variable : netCDF4.Variable
        The variable as declared (``name``, ``shape``); nothing of it is read.
    max_values : int
        The most values (array elements) the reader accepts.
    expected : str
        What the variable should hold, for the error (``"one map's mask"``).
    dims : tuple of str, optional
        Count only these dimensions (e.g. longitude and latitude: the values of one time step
        read at a time); default all.

    Raises
    ------
    CatalogError
        The variable's declared shape (over ``dims``) holds more than ``max_values`` values.
    """
    shape = dict(zip(variable.dimensions, (int(n) for n in variable.shape)))
    counted = tuple(shape.values()) if dims is None else tuple(shape[d] for d in dims)
    count = math.prod(counted)
    if count > max_values:
        counted_as = f"{count:,} values" if dims is None else f"{' × '.join(dims)}: {count:,} values"
        raise CatalogError(f"{path}: variable {variable.name!r} declares shape {tuple(shape.values())} "
                           f"({counted_as}); expected {expected}, at most {max_values:,} values")


def _named_dim(dims: Mapping[str, int], prefixes: tuple[str, ...], size: int | None, exclude: str | None) -> str | None:
    for name, length in dims.items():
        if name != exclude and name.lower().startswith(prefixes) and (size is None or length == size):
            return name
    return None


def _dim_of_size(dims: Mapping[str, int], size: int, exclude: str | None) -> str | None:
    return next((name for name, length in dims.items() if length == size and name != exclude), None)


def _dims_by_size_ratio(dims: Mapping[str, int]) -> tuple[str | None, str | None]:
    lon_dim = lat_dim = None
    for a_name, a_size in dims.items():
        for b_name, b_size in dims.items():
            if a_name != b_name and a_size in (2 * (b_size - 1), 2 * b_size):
                lon_dim, lat_dim = a_name, b_name
    return lon_dim, lat_dim


def find_lon_lat_dims(dims: Mapping[str, int], lon_size: int | None = None,
                      lat_size: int | None = None) -> tuple[str | None, str | None]:
    """Which dimensions of a variable are its longitude and latitude axes.

    Parameters
    ----------
    dims : mapping of str to int
        The variable's dimension names and lengths, in order.
    lon_size, lat_size : int, optional
        Lengths of the file's 1-D longitude and latitude coordinate variables, where the reader
        found those first (cloud masks); None where the axes come first (cubes).

    Returns
    -------
    (lon_dim, lat_dim) : names, either None where no rule finds it

    Notes
    -----
    Rules, in order:

    1. By name: the first dimension whose lower-case name starts with :data:`LON_NAME_PREFIXES`
       (``longitude``, ``lon``, ``x``) is longitude, the first other one starting with
       :data:`LAT_NAME_PREFIXES` latitude; with a coordinate length given, its length must match.
    2. With coordinate lengths given, each axis not found by name is the first (other) dimension
       of that length.
    3. Without them, if either axis is not found by name: longitude is a dimension with
       ``2 × (n - 1)`` or ``2 × n`` values, where ``n`` is the latitude dimension's length (a global
       grid: point-registered or cell-centred latitudes); of several such pairs the last.
    """
    lon_dim = _named_dim(dims, LON_NAME_PREFIXES, lon_size, None)
    if lon_dim is None and lon_size is not None:
        lon_dim = _dim_of_size(dims, lon_size, None)
    lat_dim = _named_dim(dims, LAT_NAME_PREFIXES, lat_size, lon_dim)
    if lat_dim is None and lat_size is not None:
        lat_dim = _dim_of_size(dims, lat_size, lon_dim)
    if lon_size is None and lat_size is None and (lon_dim is None or lat_dim is None):
        return _dims_by_size_ratio(dims)
    return lon_dim, lat_dim
