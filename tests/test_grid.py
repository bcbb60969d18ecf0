"""marsdust.grid against hand-computed values."""

import math

import numpy as np
import pytest
from shapely.geometry import MultiPolygon, Polygon, box

from marsdust.grid import (
    MARCI_GRID,
    MARS_RADIUS_KM,
    MOC_GRID,
    MapGrid,
    lon_difference_deg,
    lonlat_box_area_km2,
    normalize_lon,
    occupied_column_span,
    polygon_area_km2,
    wrap_aware_bbox,
    wrapped_components,
)

R = 3396.19


def test_radius_is_iau_2015_equatorial():
    assert MARS_RADIUS_KM == R


def test_pixel_centres_moc_and_marci():
    assert MOC_GRID.shape == (1200, 3600)
    assert MARCI_GRID.shape == (1800, 3600)
    lon = MOC_GRID.lon_centers_deg
    assert lon[0] == pytest.approx(-179.95) and lon[-1] == pytest.approx(179.95)
    lat = MOC_GRID.lat_centers_deg
    assert lat[0] == pytest.approx(59.95) and lat[-1] == pytest.approx(-59.95)
    coarse = MapGrid.moc(4.0)
    assert coarse.shape == (30, 90)
    np.testing.assert_allclose(coarse.lat_centers_deg[:3], [58.0, 54.0, 50.0])
    np.testing.assert_allclose(coarse.lon_centers_deg[:2], [-178.0, -174.0])


@pytest.mark.parametrize(
    "lon_in, convention, expected",
    [
        (0.0, "east", 0.0),
        (359.9, "east", -0.1),
        (180.0, "east", -180.0),
        (-180.0, "east", -180.0),
        (190.0, "east", -170.0),
        (720.5, "east", 0.5),
        (-190.0, "east", 170.0),
        (89.25, "west", -89.25),  # "89.25° W"
        (270.0, "west", 90.0),
        (-10.0, "west", 10.0),
    ],
)
def test_normalize_lon(lon_in, convention, expected):
    assert normalize_lon(lon_in, convention) == pytest.approx(expected)


def test_normalize_lon_returns_in_range_values_bit_for_bit():
    lon = np.array([63.406, 74.504, -179.9, -180.0, 0.1])
    np.testing.assert_array_equal(normalize_lon(lon), lon)  # no modulo rounding noise in written tables
    assert normalize_lon(63.406) == 63.406
    assert normalize_lon(243.406) == pytest.approx(-116.594)


def test_normalize_lon_array_and_bad_convention():
    out = normalize_lon(np.array([0.0, 90.0, 180.0, 270.0, 359.0]))
    np.testing.assert_allclose(out, [0.0, 90.0, -180.0, -90.0, -1.0])
    with pytest.raises(ValueError, match="convention"):
        normalize_lon(10.0, "north")


def test_lon_difference_wraps():
    assert lon_difference_deg(-179.0, 179.0) == pytest.approx(2.0)
    assert lon_difference_deg(179.0, -179.0) == pytest.approx(-2.0)


def test_lonlat_pixel_round_trip_and_known_pixels():
    grid = MapGrid.moc(0.1)
    x, y = grid.lonlat_to_pixel(-179.95, 59.95)
    assert (x, y) == pytest.approx((0.5, 0.5))
    x, y = grid.lonlat_to_pixel(0.0, 0.0)
    assert (x, y) == pytest.approx((1800.0, 600.0))
    x, y = grid.lonlat_to_pixel(350.0, 10.0)  # same column as -10°
    assert x == pytest.approx((170.0) / 0.1)
    rng = np.random.default_rng(0)
    lon = rng.uniform(-180, 180, 100)
    lat = rng.uniform(-60, 60, 100)
    lon2, lat2 = grid.pixel_to_lonlat(*grid.lonlat_to_pixel(lon, lat))
    np.testing.assert_allclose(lon2, lon, atol=1e-9)
    np.testing.assert_allclose(lat2, lat, atol=1e-9)
    # x past the map edge wraps
    lon_wrapped, _ = grid.pixel_to_lonlat(3600 + 5, 0)
    assert lon_wrapped == pytest.approx(-179.5)


def test_contains_lat():
    assert MOC_GRID.contains_lat(60.0) and not MOC_GRID.contains_lat(60.1)
    assert MARCI_GRID.contains_lat(-90.0)


def test_box_inside_map_is_one_pixel_box():
    grid = MapGrid.moc(1.0)
    boxes = grid.lonlat_box_to_pixel_boxes(-10.0, 10.0, -5.0, 5.0)
    np.testing.assert_allclose(boxes, [[170.0, 55.0, 190.0, 65.0]])


def test_box_across_180_splits_in_two():
    grid = MapGrid.moc(1.0)
    boxes = grid.lonlat_box_to_pixel_boxes(170.0, -170.0, 0.0, 10.0)
    np.testing.assert_allclose(boxes, [[350.0, 50.0, 360.0, 60.0], [0.0, 50.0, 10.0, 60.0]])
    # the same box given with 0–360 longitudes
    np.testing.assert_allclose(grid.lonlat_box_to_pixel_boxes(170.0, 190.0, 0.0, 10.0), boxes)


def test_box_ending_at_180_and_outside_band():
    grid = MapGrid.moc(1.0)
    np.testing.assert_allclose(grid.lonlat_box_to_pixel_boxes(170.0, 180.0, 0.0, 10.0), [[350.0, 50.0, 360.0, 60.0]])
    assert grid.lonlat_box_to_pixel_boxes(0.0, 10.0, 70.0, 80.0).shape == (0, 4)
    # clipped to the band
    np.testing.assert_allclose(grid.lonlat_box_to_pixel_boxes(0.0, 10.0, 50.0, 70.0), [[180.0, 0.0, 190.0, 10.0]])


def test_pixel_box_to_lonlat_box_wraps():
    grid = MapGrid.moc(1.0)
    assert grid.pixel_box_to_lonlat_box(350.0, 50.0, 370.0, 60.0) == pytest.approx((170.0, -170.0, 0.0, 10.0))
    assert grid.pixel_box_to_lonlat_box(0.0, 0.0, 360.0, 120.0) == pytest.approx((-180.0, 180.0, -60.0, 60.0))


def test_area_of_band_60s_60n():
    expected = 4.0 * math.pi * R**2 * math.sin(math.radians(60.0))
    assert lonlat_box_area_km2(-180.0, 180.0, -60.0, 60.0) == pytest.approx(expected, rel=1e-12)
    grid = MapGrid.moc(1.0)
    assert grid.mask_area_km2(np.ones(grid.shape, bool)) == pytest.approx(expected, rel=1e-9)
    assert grid.row_pixel_area_km2().sum() * grid.width == pytest.approx(expected, rel=1e-9)


def test_area_of_one_degree_box_at_equator():
    expected = R**2 * math.radians(1.0) * math.sin(math.radians(1.0))  # ≈ 3513.3 km² = (pi R / 180)^2 * sin(1°)/rad(1°)
    assert expected == pytest.approx(3513.3, abs=0.1)
    assert lonlat_box_area_km2(0.0, 1.0, 0.0, 1.0) == pytest.approx(expected, rel=1e-12)
    assert polygon_area_km2(box(0.0, 0.0, 1.0, 1.0)) == pytest.approx(expected, rel=1e-12)
    # across 180°, as 0–360 or as a split MultiPolygon
    assert lonlat_box_area_km2(179.5, -179.5, 0.0, 1.0) == pytest.approx(expected, rel=1e-9)
    split = MultiPolygon([box(179.5, 0.0, 180.0, 1.0), box(-180.0, 0.0, -179.5, 1.0)])
    assert polygon_area_km2(split) == pytest.approx(expected, rel=1e-9)


def test_pixel_area_rows_match_formula():
    grid = MapGrid.marci(1.0)
    area = grid.row_pixel_area_km2()
    assert area[0] == pytest.approx(R**2 * math.radians(1.0) * (1 - math.sin(math.radians(89.0))))
    assert area[90] == pytest.approx(R**2 * math.radians(1.0) * math.sin(math.radians(1.0)))
    mask = np.zeros(grid.shape, bool)
    mask[90, 180] = True  # 0–1°E, 1°S–0°
    assert grid.mask_area_km2(mask) == pytest.approx(3513.3, abs=0.1)
    with pytest.raises(ValueError, match="shape"):
        grid.mask_area_km2(np.ones((2, 2), bool))


def test_polygon_area_triangle_small():
    tri = Polygon([(0, 0), (1, 0), (0, 1)])
    assert polygon_area_km2(tri) == pytest.approx(3513.3 / 2, rel=1e-3)


@pytest.mark.parametrize(
    "shape, north, south, res",
    [
        ((1200, 3600), 60.0, -60.0, 0.1),  # MOC
        ((1800, 3600), 90.0, -90.0, 0.1),  # MARCI
        ((3600, 7200), 90.0, -90.0, 0.05),  # MARCI 0.05°
        ((300, 900), 60.0, -60.0, 0.4),
        ((30, 90), 60.0, -60.0, 4.0),
        ((45, 90), 90.0, -90.0, 4.0),
    ],
)
def test_from_shape(shape, north, south, res):
    grid = MapGrid.from_shape(*shape)
    assert (grid.lat_north_deg, grid.lat_south_deg) == (north, south)
    assert grid.res_deg == pytest.approx(res)
    assert grid.shape == shape


@pytest.mark.parametrize("shape", [(1000, 3600), (3600, 3600), (0, 10), (30, -90)])
def test_from_shape_rejects_unknown_shapes(shape):
    with pytest.raises(ValueError, match="neither a MOC|must be positive"):
        MapGrid.from_shape(*shape)


def test_grid_validation():
    with pytest.raises(ValueError, match="latitudes"):
        MapGrid(-10.0, 10.0, 1.0)
    with pytest.raises(ValueError, match="whole number"):
        MapGrid(60.0, -60.0, 0.7)


def test_rescaled():
    assert MOC_GRID.rescaled(4).shape == (300, 900)


def test_crop_marci_to_moc_band():
    marci = MapGrid.marci(1.0)
    moc = MapGrid.moc(1.0)
    image = np.arange(marci.height)[:, None] * np.ones((1, marci.width))
    cropped = marci.crop_to(image, moc)
    assert cropped.shape == moc.shape
    # first kept row is the one whose northern edge is 60°N (row 30 from 90°N)
    assert cropped[0, 0] == 30 and cropped[-1, 0] == 149
    np.testing.assert_allclose(marci.lat_centers_deg[30:150], moc.lat_centers_deg)
    with pytest.raises(ValueError, match="resample"):
        marci.crop_to(image, MapGrid.moc(2.0))
    with pytest.raises(ValueError, match="not inside"):
        moc.crop_rows(70.0, -60.0)


# --- geometry owned by MapGrid: affine, width, outlines, wrap-aware boxes ----------------------------
def test_affine_maps_pixel_corners_to_lonlat():
    grid = MapGrid.moc(0.5)
    assert grid.affine @ (0, 0) == (-180.0, 60.0)
    assert grid.affine @ (grid.width, grid.height) == pytest.approx((180.0, -60.0))
    assert grid.window_affine(row0=4, col0=10) @ (0, 0) == pytest.approx(grid.affine @ (10, 4))


def test_from_width_gives_the_global_band_by_default():
    assert MapGrid.from_width(3600) == MARCI_GRID
    assert MapGrid.from_width(3600, 60.0, -60.0) == MOC_GRID
    assert MapGrid.from_shape(1200, 3600) == MOC_GRID
    with pytest.raises(ValueError):
        MapGrid.from_width(0)


def test_outline_of_a_mask_straddling_180_is_split_at_the_seam():
    grid = MapGrid.moc(1.0)
    mask = np.zeros(grid.shape, bool)
    mask[10:20, :5] = mask[10:20, -3:] = True  # 177°E … 175°W
    outline = grid.mask_to_polygon(mask)
    assert isinstance(outline, MultiPolygon) and len(outline.geoms) == 2
    east, west = sorted(outline.geoms, key=lambda p: -p.bounds[0])
    assert east.bounds == pytest.approx((177.0, 40.0, 180.0, 50.0))
    assert west.bounds == pytest.approx((-180.0, 40.0, -175.0, 50.0))
    assert polygon_area_km2(outline) == pytest.approx(grid.mask_area_km2(mask), rel=1e-12)


def test_outline_of_a_window_lands_where_the_window_lies():
    grid = MapGrid.moc(1.0)
    mask = np.zeros(grid.shape, bool)
    mask[30:33, 100:104] = True
    whole = grid.mask_to_polygon(mask)
    assert whole.equals(box(-80.0, 27.0, -76.0, 30.0))
    assert grid.outline_of(mask[30:40], row0=30).equals(whole)
    assert grid.outline_of(np.zeros((2, 2), bool)).is_empty
    with pytest.raises(ValueError):
        grid.mask_to_polygon(np.zeros(grid.shape, bool))


def test_wrap_aware_bbox_keeps_a_storm_across_180_whole():
    grid = MapGrid.moc(1.0)
    mask = np.zeros(grid.shape, bool)
    mask[10:20, :5] = mask[10:20, -3:] = True
    assert grid.wrap_aware_bbox(mask) == (grid.width - 3, 10, grid.width + 5, 20)
    mask[:] = False
    mask[5:7, 40:50] = True
    assert grid.wrap_aware_bbox(mask) == (40, 5, 50, 7)
    with pytest.raises(ValueError):
        grid.wrap_aware_bbox(mask[:, :10])


def test_wrap_aware_bbox_ties_between_inner_and_seam_gaps():
    columns = np.zeros(10, bool)
    columns[[0, 5]] = True  # four empty columns inside, four across the seam
    assert occupied_column_span(columns) == (0, 6)
    assert occupied_column_span(columns, ties_cross_seam=True) == (5, 11)
    assert wrap_aware_bbox(np.tile(columns, (3, 1)), ties_cross_seam=True) == (5, 0, 11, 3)


def test_wrapped_columns_of_a_pixel_span_wrap_at_180():
    from marsdust.grid import wrapped_columns

    assert wrapped_columns(2.5, 5.2, 10).tolist() == [2, 3, 4, 5]  # every column the span touches
    assert wrapped_columns(8.0, 12.0, 10).tolist() == [8, 9, 0, 1]  # across 180°, west to east
    assert wrapped_columns(-2.0, 1.0, 10).tolist() == [8, 9, 0]
    assert wrapped_columns(3.0, 3.0, 10).tolist() == [3]  # at least the column of x0
    assert wrapped_columns(-3.0, 20.0, 10).tolist() == [7, 8, 9, 0, 1, 2, 3, 4, 5, 6]  # each column once


def test_wrapped_components_join_a_storm_cut_by_the_seam():
    mask = np.zeros((10, 30), dtype=bool)
    mask[2:5, :3] = True  # the storm's eastern part, at 180°W
    mask[4:7, 27:] = True  # its western part, at 180°E, touching it across the seam (row 4)
    mask[0, 29] = True  # diagonal neighbour of nothing: row 0 at 180°E, nothing at 180°W in rows 0-1
    mask[8, 10:15] = True
    labels, n = wrapped_components(mask)
    assert n == 3
    assert labels[2, 0] == labels[6, 29] != labels[0, 29]
    assert set(np.unique(labels)) == {0, 1, 2, 3}  # numbered 1..n
    diagonal = np.zeros((4, 8), dtype=bool)
    diagonal[1, 0] = diagonal[2, 7] = True  # 8-connected across the seam
    assert wrapped_components(diagonal)[1] == 1
    assert wrapped_components(diagonal, wraps=False)[1] == 2
    assert wrapped_components(mask, wraps=False)[1] == 4
    assert wrapped_components(np.zeros((3, 5), bool))[1] == 0
