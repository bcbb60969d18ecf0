"""The MARCI water-ice cloud mask netCDF (Wang & Gonzalez Abad): reading, writing, reading onto a map's grid.

The format: a variable ``cloudmask`` with :data:`INVALID` (-999) where there is no observation, 0
clear, > 0 cloudy, on 1-D ``longitude`` / ``latitude`` coordinates (east-positive, any
longitude convention, any order of the two axes, possibly with more dimensions such as time).

* :func:`read_cloud_mask` — a file as stored, plus boolean ``valid`` / ``cloudy``, on a map-like
  layout (latitudes north first, longitudes from 180°W).
* :func:`write_cloud_mask` — one map's mask (what :mod:`marsdust.synth` writes beside its maps).
* :func:`read_cloud_mask_on` — a file checked against a map's grid and resampled to it
  (:func:`block_majority` where the grid is coarser, repeated cells where it is finer); a mask
  that does not fit is a :class:`CloudMaskGridError` naming both files.

A file whose variables declare more values than one global mask at :data:`FINEST_CLOUD_MASK_RES_DEG`
(:data:`MAX_CLOUD_MASK_VALUES`) is refused before anything of it is read
(:func:`marsdust.formats.netcdf.check_declared_size`).

Where the masks of an archive live, and what a cloud is for training, is :mod:`marsdust.cloudmask`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from marsdust.fileio import atomic_output
from marsdust.formats.netcdf import NETCDF_LOCK, check_declared_size, find_lon_lat_dims, open_netcdf
from marsdust.grid import MapGrid, normalize_lon
from marsdust.mdad_format import CatalogError

INVALID = -999
"""``cloudmask`` value where the mask has no observation."""
FINEST_CLOUD_MASK_RES_DEG = 0.05
"""Finest cloud-mask cell read, degrees: half an MDGM pixel (0.1°); MARCI masks are coarser than their maps."""
MAX_CLOUD_MASK_VALUES = round(360 / FINEST_CLOUD_MASK_RES_DEG) * round(180 / FINEST_CLOUD_MASK_RES_DEG)
"""Most values a cloud-mask variable may declare (7200 × 3600: one global mask at :data:`FINEST_CLOUD_MASK_RES_DEG`).

A map needs one time step of its mask; a file declaring more (e.g. 300 000 time steps, 37.7 GiB of
fill values in a 13 KB file) is refused before it is read."""


class CloudMaskGridError(ValueError):
    """A cloud mask whose grid does not fit its map (coverage, spacing or alignment)."""


# --- reading ------------------------------------------------------------------------------------------
def _read_variables(ds, path: Path) -> tuple[np.ndarray, dict, tuple[str, ...], np.ndarray, np.ndarray]:
    """``cloudmask`` values, attributes and dimensions, and the 1-D longitudes and latitudes of an open file."""
    names = {str(n).lower(): n for n in ds.variables}
    found = sorted(map(str, ds.variables))
    if "cloudmask" not in names:
        raise CatalogError(f"{path}: no variable 'cloudmask' (found {found})")
    lon_name = next((names[k] for k in ("longitude", "lon") if k in names), None)
    lat_name = next((names[k] for k in ("latitude", "lat") if k in names), None)
    if lon_name is None or lat_name is None:
        raise CatalogError(f"{path}: needs 'longitude' and 'latitude' variables (found {found})")
    variable = ds.variables[names["cloudmask"]]
    for checked in (variable, ds.variables[lon_name], ds.variables[lat_name]):
        check_declared_size(path, checked, MAX_CLOUD_MASK_VALUES,
                            f"one map's mask (no finer than {FINEST_CLOUD_MASK_RES_DEG:g}°, one time step)")
    attributes = {name: variable.getncattr(name) for name in variable.ncattrs()}
    lon = np.asarray(ds.variables[lon_name][:], dtype=np.float64)
    lat = np.asarray(ds.variables[lat_name][:], dtype=np.float64)
    return np.asarray(variable[:]), attributes, tuple(variable.dimensions), lon, lat


def read_cloud_mask(path: str | os.PathLike):
    """Read a MARCI cloud mask (Wang & Gonzalez Abad) netCDF.

    Returns
    -------
    xarray.Dataset
        ``cloudmask`` as stored (-999 invalid, 0 clear, > 0 cloudy; with the variable's attributes)
        plus boolean ``valid`` (not -999 / ``_FillValue`` / NaN) and ``cloudy`` (valid and > 0), on
        dims ``latitude`` / ``longitude``, longitudes east-positive in [-180, 180) ascending and
        latitudes descending (north first, like a map). Other dims (e.g. time) are kept first,
        without coordinates.

    Raises
    ------
    FileNotFoundError
        No such file.
    CatalogError
        Not readable, or no ``cloudmask`` / longitude / latitude, axes that do not fit, more values
        declared than :data:`MAX_CLOUD_MASK_VALUES`, or a value below 0 other than :data:`INVALID`
        and ``_FillValue``.
    """
    import xarray as xr

    path = Path(path)
    with open_netcdf(path, "cloud mask file") as ds:
        values, attributes, dims, lon, lat = _read_variables(ds, path)
    if lon.ndim != 1 or lat.ndim != 1:
        raise CatalogError(f"{path}: longitude and latitude must be 1-D")
    lon_dim, lat_dim = find_lon_lat_dims(dict(zip(dims, values.shape)), lon.size, lat.size)
    if lon_dim is None or lat_dim is None:
        raise CatalogError(f"{path}: cloudmask dims {dims} do not match longitude ({lon.size}) and "
                           f"latitude ({lat.size})")
    other = [d for d in dims if d not in (lon_dim, lat_dim)]
    values = values.transpose([dims.index(d) for d in other + [lat_dim, lon_dim]])
    lon = normalize_lon(lon)
    lon_order = np.argsort(lon, kind="stable")
    lat_order = np.argsort(lat, kind="stable")[::-1]  # north first
    values = values[..., lat_order, :][..., lon_order]
    layout = tuple(other) + ("latitude", "longitude")
    numbers = values.astype(np.float64)
    valid = np.isfinite(numbers) & (numbers != INVALID)
    if attributes.get("_FillValue") is not None:
        valid &= numbers != float(attributes["_FillValue"])
    negative = valid & (numbers < 0)
    if negative.any():
        raise CatalogError(f"{path}: 'cloudmask' holds {numbers[negative][0]:g} ({int(negative.sum())} value(s) < 0); "
                           f"expected {INVALID} (no observation), 0 (clear) or > 0 (cloudy)")
    out = xr.Dataset(
        {
            "cloudmask": (layout, values, attributes),
            "valid": (layout, valid, {"description": "True where the cloud mask has data (not -999 / fill)"}),
            "cloudy": (layout, valid & (numbers > 0), {"description": "True where valid and cloudmask > 0"}),
        },
        coords={"latitude": lat[lat_order], "longitude": lon[lon_order]},
    )
    out.attrs["source"] = str(path)
    return out


# --- writing ----------------------------------------------------------------------------------------
def write_cloud_mask(path, values: np.ndarray, grid: MapGrid, attributes: dict | None = None) -> Path:
    """Write one map's cloud mask in the MARCI cloud-mask format, atomically, zlib-compressed.

    Parameters
    ----------
    values : int16 ndarray ``grid.shape``
        ``cloudmask`` values, north first: :data:`INVALID`, 0 clear, > 0 cloudy.
    grid : MapGrid
        The mask's grid (cell centres become ``latitude`` (descending) and ``longitude``).
    attributes : dict, optional
        Global attributes (e.g. the opacity threshold of a synthetic mask).
    """
    import netCDF4

    values = np.asarray(values)
    if values.shape != grid.shape:
        raise ValueError(f"{path}: cloud mask shape {values.shape} does not match its grid {grid.shape}")
    path = Path(path)
    with NETCDF_LOCK, atomic_output(path) as tmp, netCDF4.Dataset(tmp, "w", format="NETCDF4") as ds:
        ds.title = "water-ice cloud mask (MARCI cloud-mask layout: -999 no observation, 0 clear, > 0 cloudy)"
        if attributes:
            ds.setncatts(attributes)
        ds.createDimension("latitude", grid.height)
        ds.createDimension("longitude", grid.width)
        lat = ds.createVariable("latitude", "f8", ("latitude",))
        lat[:] = grid.lat_centers_deg
        lat.units = "degrees_north"
        lon = ds.createVariable("longitude", "f8", ("longitude",))
        lon[:] = grid.lon_centers_deg
        lon.units = "degrees_east"
        mask = ds.createVariable("cloudmask", "i2", ("latitude", "longitude"), zlib=True, complevel=4, shuffle=True)
        mask.setncatts({"long_name": "water-ice cloud mask", "flag_values": np.array([INVALID, 0, 1], np.int16),
                        "flag_meanings": "no_observation clear cloudy"})
        mask[:] = values.astype(np.int16)
    return path


# --- resampling ---------------------------------------------------------------------------------------
def _block_sum(mask: np.ndarray, factor: int) -> np.ndarray:
    height, width = mask.shape
    if height % factor or width % factor:
        raise ValueError(f"block size {factor} does not divide a {height} x {width} mask")
    return mask.reshape(height // factor, factor, width // factor, factor).sum(axis=(1, 3), dtype=np.int64)


def block_majority(cloudy: np.ndarray, valid: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """A cloud mask ``factor`` times coarser, by majority over each ``factor`` × ``factor`` block.

    A block is valid where at least half of its pixels are valid, and cloudy where it is valid
    and at least half of its valid pixels are cloudy. ``factor`` must divide both sides.

    Returns
    -------
    cloudy, valid : bool ndarray (H / factor, W / factor)
    """
    n_valid = _block_sum(valid, factor)
    n_cloudy = _block_sum(cloudy & valid, factor)
    block_valid = 2 * n_valid >= factor * factor
    return block_valid & (2 * n_cloudy >= np.maximum(n_valid, 1)), block_valid


def _covers(lon: np.ndarray, lat_in_band: np.ndarray, res: float, grid: MapGrid) -> bool:
    """Whether cells of ``res`` degrees at these centres span 360° from 180°W and exactly the grid's latitude band."""
    band = grid.lat_north_deg - grid.lat_south_deg
    return (abs(res * lon.size - 360.0) <= 0.01 * res and abs(lon[0] + 180.0 - res / 2) <= 0.1 * res
            and lat_in_band.size > 0 and abs(lat_in_band.size * res - band) <= 0.01 * res
            and abs(lat_in_band[0] - (grid.lat_north_deg - res / 2)) <= 0.1 * res)


def _squeeze(values: np.ndarray, what: str) -> np.ndarray:
    if values.ndim > 2:
        if int(np.prod(values.shape[:-2])) != 1:
            raise CloudMaskGridError(f"{what}: the mask holds {values.shape[:-2]} time steps, one map needs one")
        values = values.reshape(values.shape[-2:])
    return values


def _regular_spacing(lon: np.ndarray, lat: np.ndarray, what: str) -> float:
    if lon.size < 2 or lat.size < 2:
        raise CloudMaskGridError(f"{what}: the mask has {lat.size} x {lon.size} cells")
    res = float(np.median(np.diff(lon)))
    steps = np.concatenate([np.diff(lon), -np.diff(lat)])
    if res <= 0 or np.abs(steps - res).max() > 0.01 * res:
        raise CloudMaskGridError(f"{what}: its longitudes and latitudes are not one regular grid")
    return res


def _resample(cloudy: np.ndarray, valid: np.ndarray, res: float, target_res: float, what: str):
    ratio = target_res / res
    if abs(ratio - round(ratio)) < 1e-4 and round(ratio) >= 1:
        return block_majority(cloudy, valid, int(round(ratio)))
    repeat = 1.0 / ratio
    if abs(repeat - round(repeat)) < 1e-4:
        k = int(round(repeat))
        return (np.repeat(np.repeat(cloudy, k, axis=0), k, axis=1),
                np.repeat(np.repeat(valid, k, axis=0), k, axis=1))
    raise CloudMaskGridError(f"{what}: the mask's {res:g}° cells are not a whole multiple or fraction of "
                             f"{target_res:g}°")


def read_cloud_mask_on(path, grid: MapGrid, map_path=None) -> tuple[np.ndarray, np.ndarray]:
    """A cloud-mask file resampled to a map's (working) grid.

    Parameters
    ----------
    path : path
        The cloud-mask netCDF (read by :func:`read_cloud_mask`).
    grid : MapGrid
        The grid to put it on (the map at the working resolution).
    map_path : path, optional
        The map's file, named in errors.

    Returns
    -------
    cloudy, valid : bool ndarray ``grid.shape``

    Raises
    ------
    CloudMaskGridError
        The mask does not cover 360° of longitude and the map's latitude band on a regular grid
        whose cells line up with the map's, or its resolution is not a whole multiple or fraction
        of the grid's.
    """
    ds = read_cloud_mask(path)
    what = (f"cloud mask {path} does not match map {map_path or '(map)'} ({grid.height} x {grid.width} at "
            f"{grid.res_deg:g}°, {grid.lat_south_deg:g}° to {grid.lat_north_deg:g}° N)")
    cloudy, valid = _squeeze(ds["cloudy"].values, what), _squeeze(ds["valid"].values, what)
    lon = np.asarray(ds["longitude"].values, np.float64)
    lat = np.asarray(ds["latitude"].values, np.float64)
    res = _regular_spacing(lon, lat, what)
    rows = (lat > grid.lat_south_deg) & (lat < grid.lat_north_deg)
    if not _covers(lon, lat[rows], res, grid):
        raise CloudMaskGridError(f"{what}: the mask has {lat.size} x {lon.size} cells of {res:g}°, latitudes "
                                 f"{lat.min():g}° to {lat.max():g}°, longitudes {lon.min():g}° to {lon.max():g}°")
    return _resample(cloudy[rows], valid[rows], res, grid.res_deg, what)
