"""Tests of marsdust.track: members and sequences from detections."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from marsdust import track
from marsdust.grid import MapGrid
from marsdust.outlines import detection_records, detections_frame

GRID = MapGrid.moc(0.5)
LS_PER_SOL = 0.55


def disk_mask(lon0_deg, lat0_deg, radius_deg):
    lat = np.radians(GRID.lat_centers_deg)[:, None]
    lon = np.radians(GRID.lon_centers_deg)[None, :]
    lat0, lon0 = np.radians(lat0_deg), np.radians(lon0_deg)
    cos_arc = np.sin(lat) * np.sin(lat0) + np.cos(lat) * np.cos(lat0) * np.cos(lon - lon0)
    return np.degrees(np.arccos(np.clip(cos_arc, -1, 1))) <= radius_deg


def detections(storms_per_sol, first_sol=40, subphase="r18", mars_year=25, ls0=100.0):
    """Detections table from a list (one entry per sol) of lists of (lon, lat, radius) disks."""
    frames = []
    for k, storms in enumerate(storms_per_sol):
        if not storms:
            continue
        masks = [disk_mask(*storm) for storm in storms]
        records = detection_records(f"{subphase}_{first_sol + k:03d}", mars_year, ls0 + LS_PER_SOL * k,
                                    GRID, masks, [0.9] * len(masks))
        frames.append(detections_frame(records))
    return pd.concat(frames, ignore_index=True)


def test_moving_storm_is_one_member_and_one_sequence():
    df = detections([[(-50.0 + 2.0 * k, 15.0, 4.0)] for k in range(4)])
    out = track.track(df)
    assert out["member_id"].nunique() == 1
    assert out["member_id"].iloc[0] == "R18_001"
    assert out["sequence_id"].unique().tolist() == ["MY25_S001"]


def test_storms_far_apart_are_two_members():
    df = detections([[(-50.0 + 2.0 * k, 15.0, 4.0), (60.0 - 2.0 * k, -30.0, 3.0)] for k in range(3)])
    out = track.track(df)
    assert out["member_id"].nunique() == 2
    west = out[out["lon"] < 0]["member_id"].unique()
    east = out[out["lon"] > 0]["member_id"].unique()
    assert len(west) == 1 and len(east) == 1 and west[0] != east[0]
    assert out["sequence_id"].nunique() == 2  # each lasts 3 sols: two sequences


def test_storm_across_180_moving_east_stays_one_member():
    df = detections([[(176.0 + 2.0 * k, 5.0, 4.0)] for k in range(4)])  # 176, 178, 180, -178
    assert (df["lon"] < 0).any() and (df["lon"] > 0).any()
    out = track.track(df)
    assert out["member_id"].nunique() == 1


def test_overlap_links_across_180_even_without_close_centroids():
    df = detections([[(178.0, 0.0, 6.0)], [(-176.0, 0.0, 6.0)]])
    out = track.track(df, min_link_km=0.0, size_factor=0.0)  # only outline overlap can link them
    assert out["member_id"].nunique() == 1


def test_gap_longer_than_allowed_starts_a_new_member():
    storm = (10.0, 0.0, 4.0)
    df = detections([[storm], [storm], [], [storm]])
    assert track.track(df)["member_id"].nunique() == 2
    assert track.track(df, max_gap_sols=2)["member_id"].nunique() == 1


def test_merge_keeps_the_larger_member_and_joins_the_sequence():
    # a big storm and a small one side by side, then one storm covering both
    df = detections([
        [(0.0, 0.0, 6.0), (12.0, 0.0, 3.0)],
        [(1.0, 0.0, 6.0), (12.0, 0.0, 3.0)],
        [(5.0, 0.0, 10.0)],
    ])
    out = track.track(df)
    big_member = out[(out["map_id"] == "r18_040") & (out["lon"] < 5)]["member_id"].iloc[0]
    small_member = out[(out["map_id"] == "r18_040") & (out["lon"] > 5)]["member_id"].iloc[0]
    assert out[out["map_id"] == "r18_042"]["member_id"].iloc[0] == big_member
    assert big_member != small_member
    assert out["sequence_id"].nunique() == 1 and out["sequence_id"].iloc[0] == "MY25_S001"


def test_ids_are_numbered_per_subphase_and_mars_year_without_sols():
    df = detections([[(0.0, 0.0, 4.0)]] * 2, subphase="r18")
    df2 = detections([[(0.0, 0.0, 4.0)]], subphase="r19", first_sol=1, ls0=101.1)
    both = pd.concat([df, df2], ignore_index=True)
    out = track.track(both)  # sols of different subphases are compared through Ls
    assert out["member_id"].tolist() == ["R18_001"] * 3
    assert out["sequence_id"].tolist() == ["MY25_S001"] * 3

    unnamed = df.assign(map_id=["map_a", "map_b"]).drop(columns=["subphase", "sol"])  # the columns from map_id
    out = track.track(unnamed)
    assert out["member_id"].tolist() == ["MY25_001"] * 2 and out["sequence_id"].tolist() == ["", ""]


def test_bad_input_is_reported():
    with pytest.raises(ValueError, match="lacks columns"):
        track.track(pd.DataFrame({"map_id": ["r18_040"]}))
    empty = track.track(detections_frame([]))
    assert "member_id" in empty.columns and len(empty) == 0


def scattered_storms(n_maps, n_storms, seed=0, half_deg=0.4, area_km2=1e4):
    """``n_storms`` small square storms per map drifting a little from map to map, uniformly over 60°S–60°N."""
    rng = np.random.default_rng(seed)
    lon, lat = rng.uniform(-179, 179, n_storms), rng.uniform(-60, 60, n_storms)
    frames = []
    for m in range(n_maps):
        x = np.clip(lon + rng.normal(0, 0.3, n_storms), -179.5, 179.5)
        y = lat + rng.normal(0, 0.3, n_storms)
        wkt = [f"POLYGON (({a - half_deg} {b - half_deg}, {a + half_deg} {b - half_deg}, {a + half_deg} {b + half_deg}, "
               f"{a - half_deg} {b + half_deg}, {a - half_deg} {b - half_deg}))" for a, b in zip(x, y)]
        frames.append(pd.DataFrame({"map_id": f"r18_{m + 1:03d}", "subphase": "R18", "sol": m + 1, "mars_year": 25,
                                    "ls": 100 + LS_PER_SOL * m, "lon": x, "lat": y,
                                    "area_km2": area_km2 * rng.uniform(0.2, 50, n_storms), "polygon_wkt": wkt}))
    return pd.concat(frames, ignore_index=True)


def test_the_spatial_indexes_find_exactly_the_pairs_of_the_full_matrices():
    from marsdust.evaluate.matching import outline_iou

    df = scattered_storms(2, 400, half_deg=3.0)
    df.loc[::7, "polygon_wkt"] = None
    a, b = df[df["sol"] == 1], df[df["sol"] == 2]
    reach_km = 50.0 + 0.5 * np.sqrt(a["area_km2"].to_numpy() / np.pi)
    distance_km = track.great_circle_km(a["lon"].to_numpy()[:, None], a["lat"].to_numpy()[:, None],
                                        b["lon"].to_numpy()[None, :], b["lat"].to_numpy()[None, :])
    i, j = track.pairs_within_reach(track.unit_vectors(a["lon"], a["lat"]), track.unit_vectors(b["lon"], b["lat"]),
                                    reach_km)
    within = np.zeros(distance_km.shape, bool)
    within[i, j] = True
    assert (within >= (distance_km <= reach_km[:, None])).all()  # every pair within reach is found
    assert (distance_km[within] <= reach_km[i] * (1 + 1e-6)).all()  # and none much beyond
    geoms = track_outlines(df)
    i, j = track.overlapping_outlines(geoms[a.index], geoms[b.index])
    overlapping = np.zeros(distance_km.shape, bool)
    overlapping[i, j] = True
    np.testing.assert_array_equal(overlapping, outline_iou(a["polygon_wkt"], b["polygon_wkt"]) > 0)
    assert overlapping.sum() > 50 and (overlapping & ~within).any()  # outlines link some pairs out of reach


def track_outlines(df):
    import shapely

    from marsdust.evaluate.matching import has_outline

    return np.array([shapely.from_wkt(wkt) if known else None
                     for wkt, known in zip(df["polygon_wkt"], has_outline(df["polygon_wkt"]))], dtype=object)


def test_tracking_memory_grows_with_storms_per_map_not_their_square():
    import tracemalloc

    df = scattered_storms(2, 5000)
    tracemalloc.start()
    try:
        out = track.track(df)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak_bytes < 5000 * 5000 * 8 / 2  # half of one 5000 x 5000 float64 matrix of the pairwise rule
    assert out["member_id"].nunique() < 10_000 and len(out) == 10_000
