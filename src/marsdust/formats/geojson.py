"""Detections (or any table with a WKT outline column) as a GeoJSON FeatureCollection on the Mars CRS.

Only written: marsdust reads its detections back from ``detections.csv``; GIS tools (QGIS,
geopandas, ogr2ogr) read the GeoJSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from marsdust.fileio import atomic_output
from marsdust.formats.geotiff import MARS_CRS_CODE


def _json_value(value):
    if value is None:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is pd.NA or value is pd.NaT:
        return None
    return value if isinstance(value, (int, str)) else str(value)


def write_geojson(df: pd.DataFrame, path: str | os.PathLike, geometry_column: str = "polygon_wkt") -> Path:
    """Write detections (or any table with a WKT outline column) as GeoJSON, atomically.

    Each row becomes a Feature whose geometry is the row's outline (already split at 180° as
    RFC 7946 §3.1.9 asks, so QGIS and geopandas draw storms across the antimeridian correctly;
    a row without an outline gets a null geometry) and whose properties are all other columns
    (NaN → null).

    CRS choice: RFC 7946 GeoJSON has no ``crs`` member and means WGS 84 (Earth). Our coordinates
    are planetocentric degrees on the Mars (2015) sphere, so the file carries the GeoJSON-2008
    style top-level member ``"crs": {"type": "name", "properties": {"name": "IAU_2015:49900"}}``.
    GDAL (hence QGIS, geopandas/pyogrio, ogr2ogr) reads that member and tags the layer with the
    Mars CRS; RFC 7946-only readers ignore unknown members, so the file stays valid for them. We
    prefer this to a sidecar file because it travels with the data and is machine-read.
    """
    import shapely

    if geometry_column not in df.columns:
        raise ValueError(f"{path}: table has no {geometry_column!r} column to take outlines from")
    properties = [c for c in df.columns if c != geometry_column]
    features = []
    for row_number, row in enumerate(df.itertuples(index=False)):
        values = dict(zip(df.columns, row))
        wkt = values[geometry_column]
        geometry = None
        if isinstance(wkt, str) and wkt.strip():
            try:
                geometry = json.loads(shapely.to_geojson(shapely.from_wkt(wkt)))
            except Exception as err:  # shapely raises GEOSException subclasses
                raise ValueError(f"{path}: row {row_number}: {geometry_column} is not valid WKT: {err}") from err
        features.append({
            "type": "Feature",
            "properties": {name: _json_value(values[name]) for name in properties},
            "geometry": geometry,
        })
    collection = {
        "type": "FeatureCollection",
        "name": Path(path).stem,
        "crs": {"type": "name", "properties": {"name": MARS_CRS_CODE}},
        "features": features,
    }
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(collection, allow_nan=False), encoding="utf-8")
    return path
