"""marsdust.formats.geojson: detections as GeoJSON on the Mars CRS, storms across 180° as two-part MultiPolygons."""

from __future__ import annotations

import pytest
import shapely

from marsdust.formats.geojson import write_geojson
from marsdust.grid import MapGrid, polygon_area_km2
from marsdust.outlines import detection_records, detections_frame

from disk_masks import cap_area_km2, disk_mask

GRID = MapGrid.moc(0.5)  # 240 x 720: small and fast, same geometry as the real 0.1° grid


def test_storm_across_180_is_one_record_with_two_part_geojson(tmp_path):
    import geopandas as gpd

    mask = disk_mask(GRID, 178.0, -10.0, 8.0)
    assert mask[:, 0].any() and mask[:, -1].any()  # touches both map edges
    records = detection_records("r18_041", 25, 100.5, GRID, [mask], [0.8])
    assert len(records) == 1
    record = records[0]
    assert abs(record["lon"]) > 175.0 and record["lon"] == pytest.approx(178.0, abs=0.3)
    assert record["lon_max"] < record["lon_min"]  # crosses 180°
    assert record["x1"] > GRID.width  # pixel box runs past the eastern edge
    outline = shapely.from_wkt(record["polygon_wkt"])
    assert outline.geom_type == "MultiPolygon" and len(outline.geoms) == 2
    assert outline.bounds[0] >= -180.0 and outline.bounds[2] <= 180.0

    df = detections_frame(records)
    path = write_geojson(df, tmp_path / "detections.geojson")
    gdf = gpd.read_file(path)
    assert len(gdf) == 1
    assert gdf.geometry.iloc[0].geom_type == "MultiPolygon" and len(gdf.geometry.iloc[0].geoms) == 2
    assert polygon_area_km2(gdf.geometry.iloc[0]) == pytest.approx(cap_area_km2(8.0), rel=0.02)
    assert gdf["area_km2"].iloc[0] == pytest.approx(record["area_km2"])
    assert gdf["map_id"].iloc[0] == "r18_041"
    assert gdf.crs is not None and gdf.crs.ellipsoid.semi_major_metre == pytest.approx(3396190.0)
