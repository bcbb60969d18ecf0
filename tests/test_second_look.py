"""The second look (marsdust.synth.second_look): readable like any synth output, deterministic, storms
visible, and measurably unlike the main generator (what makes it an independent test of carry-over)."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from shapely import wkt

from marsdust.grid import MapGrid, polygon_area_km2
from marsdust.synth.second_look import SecondLookConfig, synthesize_second_look


@pytest.fixture(scope="module")
def look(tmp_path_factory):
    """The default second look (60 maps at 0.4°, MOC layout, seed 0): folder, maps, storms."""
    out = tmp_path_factory.mktemp("second_look")
    result = synthesize_second_look(out, seed=0)
    return out, result["maps"], result["storms"]


def read_rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.float32)


def storm_masks(storms: pd.DataFrame, grid: MapGrid) -> list[np.ndarray]:
    from rasterio.features import rasterize

    return [rasterize([wkt.loads(w)], out_shape=grid.shape, transform=grid.affine).astype(bool)
            for w in storms.polygon_wkt]


def storm_contrasts(maps: pd.DataFrame, storms: pd.DataFrame, root: Path | None = None) -> np.ndarray:
    """(n, 3) mean RGB inside each storm's outline minus a ring 1–4 px outside it (no storm, observed)."""
    from scipy.ndimage import binary_dilation

    out = []
    for row in maps.itertuples():
        on_map = storms[storms.map_id == row.map_id]
        if not len(on_map):
            continue
        rgb = read_rgb(Path(root or "") / row.path)
        grid = MapGrid.from_shape(*rgb.shape[:2])
        valid = rgb.any(axis=2)
        masks = storm_masks(on_map, grid)
        any_storm = np.any(masks, axis=0)
        for mask in masks:
            ring = binary_dilation(mask, iterations=4) & ~binary_dilation(mask) & ~any_storm & valid
            if ring.sum() >= 5:
                out.append(rgb[mask & valid].mean(axis=0) - rgb[ring].mean(axis=0))
    return np.array(out)


def test_archive_and_catalog_read_back_like_any_synth_output(look):
    from marsdust.data import load_split, select_split
    from marsdust.formats.mdad_table import read_v10_table
    from marsdust.mdad import read_catalog
    from marsdust.mdgm import index_archive

    out, maps, storms = look
    index = index_archive(out / "archive")
    assert index.attrs["problems"] == []
    assert list(index.map_id) == list(maps.map_id) and np.allclose(index.ls, maps.ls, atol=1e-3)
    assert len(read_v10_table(out / "mdad" / "MDAD.csv")) == len(storms)
    catalog = read_catalog(out / "mdad")
    merged = catalog.merge(storms, on=["map_id", "member_id"], suffixes=("", "_truth"))
    assert len(catalog) == len(storms) == len(merged)
    assert merged.polygon_wkt.notna().all() and set(merged.map_id) <= set(index.map_id)
    assert np.allclose(merged.area_km2, merged.area_km2_truth, rtol=1e-3)
    assert (merged.sequence_id.fillna("") == merged.sequence_id_truth).all()
    # for testing only: the split manifest it writes sends every map to the test split
    assert list(select_split(index, load_split(out / "truth" / "split.csv"), "test").map_id) == list(index.map_id)
    assert sorted((out / "cloudmask").rglob("*.nc"))


def test_sized_for_evaluation_pairs_of_sols_and_tracks(look):
    _, maps, storms = look
    assert len(maps) == 60 and 1.5 <= len(storms) / len(maps) <= 3.0
    assert storms.map_id.nunique() >= 40
    assert (np.diff(maps.day.to_numpy())[::2] == 1).all()  # pairs of consecutive sols
    per_member = storms.groupby("member_id").map_id.nunique()
    assert (per_member >= 2).sum() >= 15  # members seen on both sols of a pair: tracking can be scored
    sequences = storms[storms.sequence_id != ""].groupby("sequence_id").member_id.nunique()
    assert len(sequences) >= 3
    assert set(storms.source) == {"storm track north", "storm track south", "local", "flushing"}


def test_catalog_measures_the_visible_outlines(look):
    out, maps, storms = look
    grid = MapGrid.moc(0.4)
    outline_area = np.array([polygon_area_km2(wkt.loads(w)) for w in storms.polygon_wkt])
    assert np.allclose(outline_area, storms.area_km2, rtol=0.02)
    assert storms.area_km2.min() >= 3e4 and set(storms.confidence) == {50, 75, 100}
    numbers = storms.member_id.str.split("_").str[1]
    assert not storms.assign(n=numbers).duplicated(["map_id", "n"]).any()  # one label value per storm on a map
    for row in maps.itertuples():
        valid = read_rgb(out / row.path).any(axis=2)
        for storm in storms[storms.map_id == row.map_id].itertuples():
            point = wkt.loads(storm.polygon_wkt).representative_point()
            x, y = grid.lonlat_to_pixel(point.x, point.y)
            assert valid[int(y), int(x) % grid.width], f"{row.map_id} {storm.member_id}: outline in a gap"


def test_storms_are_visible_but_not_glaring(look):
    out, maps, storms = look
    contrast = storm_contrasts(maps, storms, out)
    assert len(contrast) >= 0.8 * len(storms)
    red = contrast[:, 0]
    assert (red > 3).mean() > 0.9
    assert 12 < np.median(red) < 45  # 8-bit red counts: visible, fainter than the main generator's


def test_same_seed_same_files_other_seed_other_planet(tmp_path):
    def digest(root: Path) -> dict:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    a = synthesize_second_look(tmp_path / "a", n_maps=6, res_deg=0.8, seed=3)
    synthesize_second_look(tmp_path / "b", n_maps=6, res_deg=0.8, seed=3)
    c = synthesize_second_look(tmp_path / "c", n_maps=6, res_deg=0.8, seed=4)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert any(p.suffix == ".nc" for p in (tmp_path / "a").rglob("*"))
    first_a, first_c = read_rgb(a["maps"].path.iloc[0]), read_rgb(c["maps"].path.iloc[0])
    assert np.abs(first_a - first_c).mean() > 5


def test_marci_layout_is_global(tmp_path):
    from marsdust.mdad import read_catalog
    from marsdust.mdgm import index_archive, read_map

    result = synthesize_second_look(tmp_path, layout="marci", n_maps=4, res_deg=0.8, seed=1)
    index = index_archive(tmp_path / "archive")
    image = read_map(index.path.iloc[0])
    assert image.grid == MapGrid.marci(0.8) and image.shape == (225, 450)
    assert len(read_catalog(tmp_path / "mdad")) == len(result["storms"])


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path):
    from marsdust.synth import SynthOutputExistsError

    with pytest.raises(ValueError, match="layout must be one of"):
        synthesize_second_look(tmp_path / "x", layout="hirise")
    with pytest.raises(ValueError, match="do not fit in a period"):
        synthesize_second_look(tmp_path / "x", n_maps=2000)
    assert not (tmp_path / "x").exists()
    synthesize_second_look(tmp_path / "y", n_maps=2, res_deg=0.8,
                           config=SecondLookConfig(write_cubes=False, write_cloud_masks=False))
    assert not (tmp_path / "y" / "cloudmask").exists() and not list((tmp_path / "y" / "mdad").glob("MY*"))
    with pytest.raises(SynthOutputExistsError):
        synthesize_second_look(tmp_path / "y", n_maps=2, res_deg=0.8)


def test_fronts_have_a_sharp_leading_edge_and_a_diffuse_trailing_edge():
    from marsdust.synth.second_look.plumes import OUTLINE_DENSITY, front_density
    from marsdust.synth.second_look.weather import FRONT, PlumeState

    state = PlumeState(0, 0, FRONT, 0.0, 0.0, 0.0, 1500.0, 400.0, 1200.0, 1.0, 7, 0)
    along = np.linspace(-1500.0, 500.0, 4001, dtype=np.float32)[None, :]
    density = front_density(state, along, np.zeros_like(along))[0]
    peak = int(np.argmax(density))
    inside = np.flatnonzero(density >= OUTLINE_DENSITY)
    ahead_km, behind_km = along[0, inside[-1]] - along[0, peak], along[0, peak] - along[0, inside[0]]
    assert ahead_km < 0.25 * behind_km


# --- what makes it an independent look ------------------------------------------------------------
def spectral_slope(field: np.ndarray, res_deg: float, longest_deg: float = 20.0, shortest_deg: float = 2.0) -> float:
    """Slope of the mean row power spectrum (log power vs log wavenumber) between two wavelengths."""
    rows = field - field.mean(axis=1, keepdims=True)
    power = (np.abs(np.fft.rfft(rows, axis=1)) ** 2).mean(axis=0)
    k = np.fft.rfftfreq(field.shape[1], d=res_deg)
    band = (k >= 1 / longest_deg) & (k <= 1 / shortest_deg)
    return float(np.polyfit(np.log(k[band]), np.log(power[band]), 1)[0])


def test_ground_texture_has_another_spectrum_than_the_main_generators():
    from marsdust.synth.planet import build_planet
    from marsdust.synth.second_look.ground import build_ground

    grid = MapGrid.moc(0.4)
    for seed in (0, 1):
        second = spectral_slope(build_ground(grid, seed=seed).red, 0.4)
        main = spectral_slope(build_planet(grid, seed=seed).red, 0.4)
        assert second < main - 0.3, (second, main)


def test_maps_differ_from_the_main_generator_in_colour_compression_and_storm_colour(look, ci_synthesis):
    out, maps, storms = look
    ci_out, ci = ci_synthesis

    def green_departure(path) -> float:  # main: green = 1/3 red + 2/3 blue
        rgb = read_rgb(path)
        valid = rgb.all(axis=2)
        return float(np.median(np.abs(rgb[..., 1] - (rgb[..., 0] + 2 * rgb[..., 2]) / 3)[valid]))

    def blockiness(path) -> float:  # red steps across 8-pixel JPEG block edges over steps elsewhere
        red = read_rgb(path)[..., 0]
        valid = red > 0
        steps = np.abs(np.diff(red, axis=1))
        ok = valid[:, 1:] & valid[:, :-1]
        edge = (np.arange(steps.shape[1]) % 8 == 7)[None, :]
        return float(steps[ok & edge].mean() / steps[ok & ~edge].mean())

    second_paths = list(maps.path[:12])
    main_paths = list(ci["maps"].path[:12])
    assert np.median([green_departure(p) for p in second_paths]) > 3
    assert np.median([green_departure(p) for p in main_paths]) < 1
    assert np.median([blockiness(p) for p in second_paths]) > 1.25
    assert np.median([blockiness(p) for p in main_paths]) < 1.05
    # dust colour: the second look's storms brighten green as much as red (yellow-brown), the main's far less
    second = storm_contrasts(maps, storms, out)
    main = storm_contrasts(ci["maps"].head(20), ci["storms"])
    assert np.median(second[:, 1]) / np.median(second[:, 0]) > 0.8
    assert np.median(main[:, 1]) / np.median(main[:, 0]) < 0.7
