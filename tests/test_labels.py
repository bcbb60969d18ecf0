"""Ground-truth boxes and masks against hand-computed values (0.4° MOC grid: 300 × 900 px)."""

import numpy as np
import pandas as pd
import pytest

from marsdust.grid import MARS_RADIUS_KM, MapGrid, lonlat_box_area_km2
from marsdust.labels import (
    flip_target,
    label_sources,
    map_targets,
    mask_bounding_box,
    mask_supervised,
    roll_target,
    seam_free_shift,
    split_at_seam,
)

GRID = MapGrid.moc(0.4)  # 60°S–60°N, 300 rows x 900 columns, lon -180 at x = 0, lat 60 at y = 0


def storms(**columns):
    n = len(columns["lon"])
    base = {"map_id": ["r18_040"] * n, "confidence": [75] * n, "member_id": [f"R18_{i:03d}" for i in range(n)]}
    return pd.DataFrame({**base, **columns})


def test_fixed_box_is_12_degrees_30_px_around_the_centroid():
    target = map_targets(storms(lon=[0.0], lat=[0.0]), GRID)
    # lon 0 -> x = 180 / 0.4 = 450, lat 0 -> y = 60 / 0.4 = 150, half side 15 px
    np.testing.assert_allclose(target["boxes"], [[435, 135, 465, 165]])
    assert target["boxes"].dtype == np.float32 and target["labels"].tolist() == [1]
    assert target["masks"].shape == (1, 300, 900) and target["masks"].dtype == np.uint8
    assert target["masks"][0].sum() == 900 and target["masks"][0, 135:165, 435:465].all()
    assert target["member_id"].tolist() == ["R18_000"] and target["confidence"].tolist() == [75]


def test_fixed_box_at_native_resolution_is_the_papers_120_px():
    target = map_targets(storms(lon=[-100.0], lat=[20.0]), MapGrid.moc(0.1), with_masks=False)
    box = target["boxes"][0]
    assert box[2] - box[0] == pytest.approx(120) and box[3] - box[1] == pytest.approx(120)
    assert "masks" not in target


def test_box_across_180_stays_whole_and_its_mask_wraps():
    target = map_targets(storms(lon=[178.0, -179.0], lat=[0.0, 0.0]), GRID)
    # lon 178 -> x = 895: box 880..910 runs 10 px past the eastern edge; lon -179 -> x = 2.5
    np.testing.assert_allclose(target["boxes"], [[880, 135, 910, 165], [-12.5, 135, 17.5, 165]])
    first = target["masks"][0]
    assert first[135:165, 880:900].all() and first[135:165, 0:10].all() and first.sum() == 900
    second = target["masks"][1]
    assert second[150, 887:900].all() and second[150, 0:17].all() and second.sum() == 900


def test_boxes_clipped_at_the_band_edge_and_mostly_hidden_ones_dropped():
    target = map_targets(storms(lon=[10.0, 10.0, 10.0], lat=[57.0, 63.0, 64.0]), GRID)
    # lat 57 -> y = 7.5, box -7.5..22.5 clipped to 0..22.5 (75 % visible): kept
    # lat 63 -> y = -7.5, box -22.5..7.5 clipped to 0..7.5 (25 % visible): kept (rule is >= 25 %)
    # lat 64 -> y = -10, box -25..5 (17 % visible): dropped
    np.testing.assert_allclose(target["boxes"], [[460, 0, 490, 22.5], [460, 0, 490, 7.5]])
    assert target["member_id"].tolist() == ["R18_000", "R18_001"]
    assert target["masks"][1].sum() == 30 * 7  # rows 0..6 have centres (0.5 .. 6.5) inside y < 7.5


def test_area_box_is_square_on_the_ground_with_the_catalogued_spherical_area():
    half_height_rad = np.radians(5.0)
    area_km2 = 4 * MARS_RADIUS_KM**2 * half_height_rad * np.sin(half_height_rad)  # a 10° x 10° box at the equator
    target = map_targets(storms(lon=[0.0, 0.0], lat=[0.0, 30.0], area_km2=[area_km2, area_km2]), GRID, "area")
    np.testing.assert_allclose(target["boxes"][0], [437.5, 137.5, 462.5, 162.5], atol=1e-3)
    x0, y0, x1, y1 = target["boxes"][1]
    assert y1 - y0 == pytest.approx(25, abs=1e-3)
    assert x1 - x0 == pytest.approx(25 / np.cos(np.radians(30)), abs=1e-3)  # lat-corrected width
    lon_min, lon_max, lat_min, lat_max = GRID.pixel_box_to_lonlat_box(x0, y0, x1, y1)
    assert lonlat_box_area_km2(lon_min, lon_max, lat_min, lat_max) == pytest.approx(area_km2, rel=1e-4)


def test_area_box_square_in_pixels_has_the_catalogued_area():
    target = map_targets(storms(lon=[40.0], lat=[-45.0], area_km2=[2.0e6]), GRID, "area", area_box_shape="pixels")
    x0, y0, x1, y1 = target["boxes"][0]
    assert x1 - x0 == pytest.approx(y1 - y0, abs=1e-3)
    assert lonlat_box_area_km2(*GRID.pixel_box_to_lonlat_box(x0, y0, x1, y1)) == pytest.approx(2.0e6, rel=1e-4)


def test_area_mode_requires_a_positive_area_and_names_the_row():
    with pytest.raises(ValueError, match="R18_000"):
        map_targets(storms(lon=[0.0], lat=[0.0], area_km2=[np.nan]), GRID, "area")


def test_outline_rasterized_and_box_from_mask_including_across_180():
    wkt_square = "POLYGON ((10 0, 20 0, 20 10, 10 10, 10 0))"
    wkt_across = "MULTIPOLYGON (((170 0, 180 0, 180 4, 170 4, 170 0)), ((-180 0, -170 0, -170 4, -180 4, -180 0)))"
    table = storms(lon=[15.0, 180.0, 50.0], lat=[5.0, 2.0, 10.0], area_km2=[1e5, 1e5, 1e5],
                   polygon_wkt=[wkt_square, wkt_across, None])
    target = map_targets(table, GRID, "outline")
    # lon 10..20 -> x 475..500, lat 10..0 -> y 125..150; across: lon 170..190 -> x 875..925, lat 4..0 -> y 140..150
    np.testing.assert_allclose(target["boxes"][:2], [[475, 125, 500, 150], [875, 140, 925, 150]])
    assert target["masks"][0].sum() == 25 * 25 and target["masks"][1].sum() == 50 * 10
    assert target["masks"][1][140:150, 0:25].all() and target["masks"][1][140:150, 875:900].all()
    assert target["has_outline"].tolist() == [True, True, False]
    # the row without an outline falls back to its area-sized box, and its mask is that box
    area_only = map_targets(table.iloc[[2]].drop(columns="polygon_wkt"), GRID, "area")
    np.testing.assert_allclose(target["boxes"][2], area_only["boxes"][0])


def test_map_without_storms_gives_empty_arrays():
    target = map_targets(storms(lon=[], lat=[]), GRID)
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 300, 900)
    assert target["labels"].dtype == np.int64


def test_unknown_label_mode_is_an_error():
    with pytest.raises(ValueError, match="label_mode"):
        map_targets(storms(lon=[0.0], lat=[0.0]), GRID, "ellipse")


def test_mask_bounding_box_keeps_a_wrapping_mask_whole():
    mask = np.zeros((10, 100), dtype=bool)
    mask[2:5, 95:100] = True
    mask[3:6, 0:4] = True
    np.testing.assert_allclose(mask_bounding_box(mask), [95, 2, 104, 6])


def test_roll_moves_boxes_by_k_mod_w_and_seam_free_shift_frees_the_seam():
    target = map_targets(storms(lon=[178.0, 0.0], lat=[0.0, 20.0]), GRID)
    shift = seam_free_shift(target["boxes"], 900)
    assert shift is not None
    rolled = roll_target(target, shift, 900)
    assert (rolled["boxes"][:, 0] >= 0).all() and (rolled["boxes"][:, 2] <= 900).all()
    np.testing.assert_allclose(rolled["boxes"][:, 0], np.mod(target["boxes"][:, 0] + shift, 900))
    for k in range(2):
        x0, y0, x1, y1 = rolled["boxes"][k].astype(int)
        assert rolled["masks"][k][y0:y1, x0:x1].all() and rolled["masks"][k].sum() == 900
    # smallest roll: seam moves to the nearest free column boundary (box 880..910 -> 10 px west)
    assert shift in (-10 % 900, 20)


def test_split_at_seam_and_flip():
    target = map_targets(storms(lon=[178.0], lat=[0.0]), GRID)
    pieces = split_at_seam(target, 900)
    np.testing.assert_allclose(pieces["boxes"], [[880, 135, 900, 165], [0, 135, 10, 165]])
    assert pieces["masks"][0][:, :10].sum() == 0 and pieces["masks"][1][:, 880:].sum() == 0
    assert pieces["member_id"].tolist() == ["R18_000", "R18_000"]
    flipped = flip_target(pieces, 900)
    np.testing.assert_allclose(flipped["boxes"], [[0, 135, 20, 165], [890, 135, 900, 165]])
    assert flipped["masks"][0][135:165, 0:20].all()


def test_paper_boxes_at_centroids_equal_the_catalogues_fixed_boxes_and_keep_every_detection():
    import pandas as pd

    from marsdust.labels import map_targets, paper_boxes_at

    grid = MapGrid(60.0, -60.0, 0.4)
    storms = pd.DataFrame({"lon": [10.0, 179.0, -40.0], "lat": [0.0, 20.0, -64.0]})
    fixed = map_targets(storms, grid, "fixed", with_masks=False)["boxes"]
    boxes = paper_boxes_at(storms["lon"], storms["lat"], grid)
    assert len(fixed) == 2 and len(boxes) == 3  # mostly beyond 60°S: the catalogue drops it, a detection keeps it
    assert np.allclose(boxes[:2], fixed[:2])
    assert boxes[2, 3] == grid.height  # clipped to the band like the catalogue's


def test_only_outlined_instances_are_mask_targets_in_outline_mode():
    table = storms(lon=[15.0, 50.0], lat=[5.0, 10.0], area_km2=[1e5, 1e5],
                   polygon_wkt=["POLYGON ((10 0, 20 0, 20 10, 10 10, 10 0))", None])
    target = map_targets(table, GRID, "outline")
    assert mask_supervised(target["has_outline"], "outline").tolist() == [True, False]
    assert label_sources(table, "outline").tolist() == ["outline", "area_box"]
    assert label_sources(table, "outline", outline_fallback="fixed").tolist() == ["outline", "fixed_box"]
    for mode, source in (("fixed", "fixed_box"), ("area", "area_box")):  # the box is the mask asked for
        boxes = map_targets(table, GRID, mode)
        assert mask_supervised(boxes["has_outline"], mode).tolist() == [True, True]
        assert label_sources(table, mode).tolist() == [source, source]
    with pytest.raises(ValueError, match="label_mode"):
        mask_supervised([True], "outlines")
