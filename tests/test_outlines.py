"""marsdust.outlines: storm masks as catalog rows (area, centroid, bounds, outline) and label images."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from marsdust.grid import MapGrid, polygon_area_km2
from marsdust.outlines import detection_records, label_image

from disk_masks import cap_area_km2, disk_mask


def test_disk_area_matches_spherical_cap():
    grid = MapGrid.moc(0.25)
    records = detection_records("r18_040", 25, 100.0, grid, [disk_mask(grid, 30.0, 35.0, 10.0)], [0.9])
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


def test_label_image_earlier_mask_wins_overlaps():
    labels = label_image([np.eye(3, dtype=bool), np.ones((3, 3), dtype=bool)])
    assert labels[0, 0] == 1 and labels[0, 1] == 2  # the earlier (higher-score) mask wins overlaps


def test_outline_edges_are_densified_so_geodesic_tools_measure_area_km2():
    """pyproj's Geod takes each edge as a geodesic: long edges along parallels would cut the cap off
    a high-latitude storm (-39 % for this one); densified to 0.1° it measures ``area_km2`` on the
    3396.19 km sphere the areas are defined on."""
    import shapely
    from pyproj import Geod

    from marsdust.outlines import OUTLINE_SEGMENT_DEG, detection_records

    grid = MapGrid.marci(0.8)
    lat, lon = grid.lat_centers_deg[:, None], grid.lon_centers_deg[None, :]
    band = (lat > 40) & (lat < 60) & (np.abs(lon) < 60)
    seam = (lat > -20) & (lat < 10) & (np.abs(lon) > 150)  # across 180°
    records = detection_records("r18_001", 25, 100.0, grid, [band, seam], [0.9, 0.8])
    sphere = Geod(a=3396190.0, b=3396190.0)
    for record in records:
        outline = shapely.from_wkt(record["polygon_wkt"])
        for part in getattr(outline, "geoms", [outline]):
            assert np.abs(np.diff(np.asarray(part.exterior.coords), axis=0)).max() <= OUTLINE_SEGMENT_DEG + 1e-9
        area_m2, _ = sphere.geometry_area_perimeter(outline)
        assert abs(area_m2) / 1e6 == pytest.approx(record["area_km2"], rel=0.005)
    assert [(r["subphase"], r["sol"]) for r in records] == [("R18", 1), ("R18", 1)]
