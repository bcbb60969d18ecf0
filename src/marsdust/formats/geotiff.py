"""GeoTIFF rasters of one map (storm probability or mask) and the Mars CRS they, and the other georeferenced
products (GeoJSON, the MDAD cube's ``crs`` attribute), carry.

The CRS is the Mars (2015) sphere, planetocentric, east-positive longitudes (:data:`MARS_CRS_CODE`),
with an explicit WKT2 fallback (:data:`MARS_SPHERE_WKT`) where the installed PROJ lacks the IAU codes.
A raster's geotransform is its grid's (:attr:`marsdust.grid.MapGrid.affine`: west edge -180°, north
edge ``grid.lat_north_deg``, degrees per pixel).
"""

from __future__ import annotations

import os

import numpy as np

from marsdust.fileio import atomic_output
from marsdust.grid import MapGrid

MARS_CRS_CODE = "IAU_2015:49900"
"""PROJ code of the Mars (2015) sphere, planetocentric, east-positive longitudes (R = 3396.19 km)."""

MARS_SPHERE_WKT = (
    'GEOGCRS["Mars (2015) - Sphere / Ocentric",'
    'DATUM["Mars (2015) - Sphere",ELLIPSOID["Mars (2015) - Sphere",3396190,0,LENGTHUNIT["metre",1]]],'
    'PRIMEM["Reference Meridian",0,ANGLEUNIT["degree",0.0174532925199433]],'
    'CS[ellipsoidal,2],AXIS["geodetic latitude (Lat)",north,ORDER[1],ANGLEUNIT["degree",0.0174532925199433]],'
    'AXIS["geodetic longitude (Lon)",east,ORDER[2],ANGLEUNIT["degree",0.0174532925199433]]]'
)
"""Explicit WKT2 of the same sphere, used when the installed PROJ database lacks the IAU codes."""


def mars_rasterio_crs():
    """The Mars CRS for rasterio, and how it was obtained.

    Returns
    -------
    (crs, source) : (rasterio.crs.CRS, str)
        ``source`` is ``"IAU_2015:49900"`` when GDAL/PROJ know the IAU code (PROJ ≥ 8.2 does), else
        ``"explicit WKT (3396.19 km sphere)"`` (:data:`MARS_SPHERE_WKT`).
    """
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        return CRS.from_user_input(MARS_CRS_CODE), MARS_CRS_CODE
    except CRSError:
        return CRS.from_wkt(MARS_SPHERE_WKT), "explicit WKT (3396.19 km sphere)"


def write_geotiff(path: str | os.PathLike, prob_or_mask: np.ndarray, grid: MapGrid,
                  valid: np.ndarray | None = None) -> str:
    """Write a per-map storm probability (float, [0, 1]) or mask (bool/int) as a GeoTIFF, atomically.

    The raster carries the Mars CRS (see :func:`mars_rasterio_crs`) and the grid's geotransform,
    deflate-compressed. Float rasters get NaN where ``valid`` is False (nodata NaN); integer and
    boolean rasters are written as uint8 with 255 there (nodata 255).

    Returns
    -------
    str
        Which CRS definition was written: ``"IAU_2015:49900"`` or the explicit-WKT fallback.
    """
    import rasterio

    data = np.asarray(prob_or_mask)
    if data.shape != grid.shape:
        raise ValueError(f"{path}: raster shape {data.shape} does not match the grid's {grid.shape}")
    if np.issubdtype(data.dtype, np.floating):
        out, nodata = data.astype(np.float32), float("nan")
        if valid is not None:
            out = np.where(np.asarray(valid, dtype=bool), out, np.float32(np.nan))
    else:
        if data.size and (data.min() < 0 or data.max() > 254):
            raise ValueError(f"{path}: integer raster values must be in 0..254 (255 is nodata)")
        out, nodata = data.astype(np.uint8), 255
        if valid is not None:
            out = np.where(np.asarray(valid, dtype=bool), out, np.uint8(255)).astype(np.uint8)
    crs, crs_source = mars_rasterio_crs()
    with atomic_output(path) as tmp:
        with rasterio.open(
            tmp, "w", driver="GTiff", height=grid.height, width=grid.width, count=1, dtype=out.dtype.name,
            crs=crs, transform=grid.affine, nodata=nodata, compress="deflate",
        ) as dst:
            dst.write(out, 1)
            dst.update_tags(planet="Mars", crs_source=crs_source,
                            content="storm probability" if out.dtype == np.float32 else "storm mask")
    return crs_source
