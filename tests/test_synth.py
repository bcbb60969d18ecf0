"""Statistics of the synthetic Mars (not pixels): seasons, regions, areas, gaps, colours, determinism,
and round trips through the project's readers."""

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from shapely import wkt as shapely_wkt

from marsdust.grid import MapGrid, lon_difference_deg, polygon_area_km2
from marsdust.synth import synthesize
from marsdust.synth.calendar import CalendarConfig, build_calendar, ls_from_sol_of_year, sol_of_year_from_ls
from marsdust.synth.presets import ci_config
from marsdust.synth.storms import MDAD_SOURCES, StormClimatology, draw_storm_members, source_activity


@pytest.fixture(scope="module")
def ci(ci_synthesis):
    """The session's ``ci`` dataset: its folder and the maps and storms tables synthesize returned."""
    out, result = ci_synthesis
    return out, result["maps"], result["storms"]


def tiny_config(**storms):
    base = ci_config()
    return replace(base, res_deg=0.8, sol_stride=200, sols_per_run=2, write_cubes=False,
                   storms=replace(base.storms, **storms) if storms else base.storms)


def test_calendar_is_mars_like():
    assert abs(sol_of_year_from_ls(90.0) - 193.3) < 2 and abs(sol_of_year_from_ls(180.0) - 371.9) < 2
    assert abs(ls_from_sol_of_year(sol_of_year_from_ls(251.0)) - 251.0) < 1e-6
    cal = build_calendar(CalendarConfig())
    assert 2550 < len(cal) < 2700  # MY24 Ls150 – MY28 Ls121
    lengths = cal.groupby("subphase").size()
    assert lengths.iloc[:-1].between(28, 32).all()
    assert cal["subphase"].iloc[0] == "M01" and cal["mars_year"].iloc[-1] == 28


def test_storm_seasons_and_regions_follow_climatology():
    clim = StormClimatology(genesis_per_sol=0.5, global_event=None, sequence_probability=0.0)
    cal = build_calendar(CalendarConfig())
    members = draw_storm_members(cal, clim, seed=3)
    sources = {s.name: s for s in MDAD_SOURCES}
    starts = pd.DataFrame({"source": [m.source for m in members],
                           "ls": [cal["ls"].iloc[m.start_day] for m in members],
                           "lon": [m.states[0].lon_deg for m in members],
                           "lat": [m.states[0].lat_deg for m in members]})
    in_season = [bool(source_activity(sources[s], ls, 0.0)) for s, ls in zip(starts.source, starts.ls)]
    # activity 1 in season vs 0.08 off season: most geneses fall in their seasons
    assert np.mean(in_season) > 0.75
    for name in ("Acidalia", "Hellas", "Utopia"):
        rows = starts[starts.source == name]
        src = sources[name]
        assert len(rows) > 10
        assert abs(np.median(lon_difference_deg(rows.lon, src.lon_deg))) < 4
        assert abs(np.median(rows.lat) - src.lat_deg) < 4
    north_secondary = starts[(starts.ls >= 300) & starts.source.isin(["Acidalia", "Utopia", "Arcadia"])]
    south_in_north_secondary = starts[(starts.ls >= 300) & starts.source.isin(["Hellas"])]
    assert len(north_secondary) > 3 * len(south_in_north_secondary)


def test_catalog_areas_match_drawn_outlines(ci):
    _, maps, storms = ci
    assert len(storms) > 50
    outline_area = np.array([polygon_area_km2(shapely_wkt.loads(w)) for w in storms.polygon_wkt])
    assert np.allclose(outline_area, storms.area_km2, rtol=0.02)
    assert storms.area_km2.min() >= 2e4 and storms.area_km2.max() < 1.3e7
    assert set(storms.confidence) <= {50, 75, 100} and storms.confidence.nunique() >= 2


def test_gaps_are_black_and_no_storm_lies_inside_a_gap(ci):
    from shapely import wkt

    _, maps, storms = ci
    grid = MapGrid.moc(0.4)
    black_fraction = []
    for row in maps.itertuples():
        rgb = np.asarray(Image.open(row.path))
        valid = rgb.any(axis=2)
        black_fraction.append(1 - valid.mean())
        for storm in storms[storms.map_id == row.map_id].itertuples():
            geometry = wkt.loads(storm.polygon_wkt)
            x, y = grid.lonlat_to_pixel(geometry.representative_point().x, geometry.representative_point().y)
            assert valid[int(y), int(x) % grid.width], f"{row.map_id}: storm centre of its outline is in a gap"
    assert max(black_fraction) > 0.005  # gaps / polar night exist
    assert np.mean(black_fraction) < 0.2


def test_storms_are_redder_than_the_same_place_without_storms(ci):
    from shapely import wkt

    _, maps, storms = ci
    grid = MapGrid.moc(0.4)
    images = {r.map_id: np.asarray(Image.open(r.path)).astype(np.float32) for r in maps.itertuples()}
    with_storm = {m: np.zeros(grid.shape, bool) for m in images}
    from rasterio.features import rasterize
    from affine import Affine

    transform = Affine(grid.res_deg, 0, -180, 0, -grid.res_deg, 60)
    for storm in storms.itertuples():
        with_storm[storm.map_id] |= rasterize([wkt.loads(storm.polygon_wkt)], out_shape=grid.shape,
                                              transform=transform).astype(bool)
    any_storm = np.any(list(with_storm.values()), axis=0)
    differences = []
    for storm in storms[storms.confidence == 100].head(15).itertuples():
        mask = rasterize([wkt.loads(storm.polygon_wkt)], out_shape=grid.shape, transform=transform).astype(bool)
        clear = [images[m][..., 0][mask & ~with_storm[m] & images[m].any(axis=2)].mean()
                 for m in images if not (with_storm[m] & mask).any() and (images[m].any(axis=2) & mask).sum()]
        if clear:
            stormy = images[storm.map_id][..., 0][mask & images[storm.map_id].any(axis=2)].mean()
            differences.append(stormy - np.median(clear))
    assert len(differences) >= 10 and any_storm.any()
    assert np.median(differences) > 15  # 8-bit red counts


def test_same_seed_same_files_different_seed_different_planet(tmp_path):
    config = replace(tiny_config(), write_cubes=True)
    a = synthesize(tmp_path / "a", config, seed=5, progress=False)
    b = synthesize(tmp_path / "b", config, seed=5, progress=False)
    c = synthesize(tmp_path / "c", config, seed=6, progress=False)

    def digest(root: Path) -> dict:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in (".png", ".csv", ".txt")}

    assert digest(tmp_path / "a" / "archive") == digest(tmp_path / "b" / "archive")
    assert (tmp_path / "a" / "mdad" / "MDAD.csv").read_bytes() == (tmp_path / "b" / "mdad" / "MDAD.csv").read_bytes()
    cubes = sorted((tmp_path / "a" / "mdad").rglob("*.nc"))
    assert cubes and all(p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes() for p in cubes)
    first_a = np.asarray(Image.open(a["maps"].path.iloc[0])).astype(int)
    first_c = np.asarray(Image.open(c["maps"].path.iloc[0])).astype(int)
    assert np.abs(first_a - first_c).mean() > 5
    assert a["storms"].equals(b["storms"])


def test_an_earlier_synthesis_is_refused_unless_overwrite(tmp_path):
    from marsdust.mdgm import index_archive
    from marsdust.synth import SynthOutputExistsError

    config = tiny_config()
    out = tmp_path / "out"
    first = synthesize(out, config, seed=5, progress=False)
    (out / "notes.txt").write_text("mine\n")
    (out / "runs").mkdir()
    (out / "runs" / "model.ckpt").write_bytes(b"weights")
    listed = Path(first["maps"].path.iloc[0])
    stale = listed.with_name(f"{listed.parent.name.lower()}_099.png")  # a map no list_ls.txt lists
    stale.write_bytes(listed.read_bytes())
    assert [p["kind"] for p in index_archive(out / "archive").attrs["problems"]] == ["unlisted_map"]

    with pytest.raises(SynthOutputExistsError) as refused:
        synthesize(out, config, seed=6, progress=False)
    message = str(refused.value)
    assert isinstance(refused.value, FileExistsError)
    assert str(out) in message and "--overwrite" in message and "\n" not in message
    assert stale.exists() and listed.exists()  # refusing removes nothing

    second = synthesize(out, config, seed=6, progress=False, overwrite=True)
    assert not stale.exists()
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "runs" / "model.ckpt").read_bytes() == b"weights"
    index = index_archive(out / "archive")
    assert list(index.map_id) == list(second["maps"].map_id)
    assert index.attrs["problems"] == []


def test_any_synth_folder_counts_as_an_earlier_synthesis(tmp_path):
    from marsdust.synth import SynthOutputExistsError

    (tmp_path / "truth").mkdir()
    (tmp_path / "other.csv").write_text("a\n1\n")
    with pytest.raises(SynthOutputExistsError, match="truth/"):
        synthesize(tmp_path, tiny_config(), seed=0, progress=False)
    assert not (tmp_path / "archive").exists()
    synthesize(tmp_path / "fresh", tiny_config(), seed=0, progress=False)  # a new folder needs no flag


def test_readers_read_the_output_back(ci):
    from shapely import wkt

    from marsdust.formats.mdad_table import read_v10_table
    from marsdust.mdad import read_catalog
    from marsdust.mdgm import index_archive

    out, maps, storms = ci
    index = index_archive(out / "archive")
    assert list(index.map_id) == list(maps.map_id)
    assert np.allclose(index.ls, maps.ls, atol=1e-3)
    table = read_v10_table(out / "mdad" / "MDAD.csv")
    assert len(table) == len(storms)
    catalog = read_catalog(out / "mdad")
    assert len(catalog) == len(storms)
    merged = catalog.merge(storms, on=["map_id", "member_id"], suffixes=("", "_truth"))
    assert len(merged) == len(storms)
    assert np.allclose(merged.area_km2, merged.area_km2_truth, rtol=1e-3)
    assert (merged.sequence_id.fillna("") == merged.sequence_id_truth).all()
    across = [r for r in merged.itertuples() if wkt.loads(r.polygon_wkt_truth).geom_type == "MultiPolygon"
              and wkt.loads(r.polygon_wkt_truth).bounds[0] <= -179 and wkt.loads(r.polygon_wkt_truth).bounds[2] >= 179]
    assert across, "the ci preset should hold a storm across 180°"
    for r in across:
        read_back, truth = wkt.loads(r.polygon_wkt), wkt.loads(r.polygon_wkt_truth)
        assert read_back.bounds[0] <= -179 and read_back.bounds[2] >= 179
        assert read_back.symmetric_difference(truth).area < 0.15 * truth.area


def test_ci_preset_spans_the_paper_calendar_and_both_splits_have_storms(ci):
    from marsdust.data import make_split
    from marsdust.mdgm import index_archive

    out, maps, storms = ci
    assert 48 <= len(maps) <= 64 and set(maps.mars_year) == {24, 25, 26, 27, 28}
    assert storms.map_id.nunique() / len(maps) > 0.6
    index = index_archive(out / "archive")
    storm_maps = set(storms.map_id)
    temporal = make_split(index, "temporal")
    counts = temporal.split.value_counts()
    assert counts["train"] >= 24 and counts["val"] >= 6 and counts["test"] >= 12
    for split in (make_split(index, "temporal"), make_split(index, "random")):
        for name in ("train", "val", "test"):
            assert split[split.split == name].map_id.isin(storm_maps).sum() >= 5, name


def test_presets_cover_the_paper_calendar():
    from marsdust.synth.build import selected_days
    from marsdust.synth.presets import get_preset

    calendar = build_calendar(CalendarConfig())
    sizes = {name: len(selected_days(get_preset(name), calendar, 0)) for name in ("ci", "demo", "bench", "full")}
    assert 48 <= sizes["ci"] <= 64 and 120 <= sizes["demo"] <= 160 and 450 <= sizes["bench"] <= 600
    assert 2450 <= sizes["full"] <= 2600
    with pytest.raises(ValueError, match="unknown synth preset"):
        get_preset("huge")


def test_full_preset_has_about_a_quarter_of_maps_with_storms():
    from marsdust.synth.build import draw_catalog
    from marsdust.synth.presets import full_config

    maps, storms = draw_catalog(full_config(), seed=0, res_deg=0.8, every=4)
    assert 600 <= len(maps) <= 660
    fraction = (maps.n_storms > 0).mean()
    assert 0.15 < fraction < 0.35  # real MOC: 607 of 2484 maps
    assert set(storms.map_id) <= set(maps.map_id) and (storms.area_km2 >= 2e4).all()


def test_overlapping_storms_share_a_smooth_edge_and_combine_their_dust():
    from scipy import ndimage

    from marsdust.synth.imaging import combine_storms
    from marsdust.synth.storms import StormState, StormTiles, storm_field

    grid = MapGrid.moc(0.2)
    tiles = StormTiles.draw(grid, seed=0)
    states = [StormState(k, 10, lon, 5.0, 1.2e6, 700.0, 550.0, 20.0, 0.0, tau, seed)
              for k, (lon, tau, seed) in enumerate([(-4.0, 1.0, 11), (4.0, 1.05, 12)])]
    tau, owner, fields = combine_storms(grid, tiles, states)
    single = [np.zeros(grid.shape, np.float32) for _ in states]
    inside = [np.zeros(grid.shape, bool) for _ in states]
    for image, outline, state in zip(single, inside, states):
        f = storm_field(state, grid, tiles)
        image[f.row0:f.row1, f.cols] = f.tau
        outline[f.row0:f.row1, f.cols] = f.inside
    overlap = inside[0] & inside[1]
    assert overlap.sum() > 1000
    neighbours = np.ones((3, 3), int)
    for index in (0, 1):
        owned = (owner == index) & overlap
        assert owned.sum() > 100
        # a few pieces (a per-pixel winner on the textured tau leaves ~100 speckles of each storm)
        assert ndimage.label(owned, neighbours)[1] <= 6
        alone = owned & (ndimage.convolve(owned.astype(int), neighbours, mode="constant") == 1)
        assert alone.sum() <= 3
    both = (single[0] > 0.1) & (single[1] > 0.1)
    assert both.sum() > 100
    largest = np.maximum(single[0], single[1])[both]
    assert (tau[both] >= largest - 1e-5).all() and (tau[both] <= 2 ** 0.25 * largest + 1e-5).all()


def test_draw_catalog_at_the_preset_resolution_is_the_written_catalog(ci):
    """The benchmarks draw catalogs of big presets without writing maps: it must be the same catalog."""
    from marsdust.synth.build import draw_catalog

    out, maps, storms = ci
    drawn_maps, drawn = draw_catalog(ci_config(), seed=0, res_deg=ci_config().res_deg)
    assert drawn_maps["map_id"].tolist() == maps["map_id"].tolist()
    written = pd.read_csv(out / "truth" / "storms.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(drawn.reset_index(drop=True), storms.reset_index(drop=True))
    assert len(written) == len(drawn) and written["polygon_wkt"].tolist() == drawn["polygon_wkt"].tolist()
