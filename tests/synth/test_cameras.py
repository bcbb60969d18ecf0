"""The two cameras of the synthetic Mars (marsdust.synth.cameras): MARCI maps on the global grid, polar
night, colour balance, seams, JPEG; the two-camera presets' calendar, archive and catalog."""

from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest

from marsdust.grid import MapGrid
from marsdust.mdgm import index_archive, read_map, read_map_pixels
from marsdust.synth import synthesize
from marsdust.synth.build import Simulation, selected_days
from marsdust.synth.calendar import CalendarConfig, build_calendar
from marsdust.synth.imaging import render_sol, swath_layout
from marsdust.synth.presets import ci_config, twocam_ci_config

MARCI_YEARS = {28, 29, 30, 31, 32}


@pytest.fixture(scope="module")
def twocam(tmp_path_factory):
    """The ``twocam_ci`` preset (seed 0): output folder, maps and storms tables."""
    out = tmp_path_factory.mktemp("twocam")
    result = synthesize(out, "twocam_ci", seed=0, progress=False)
    return out, result["maps"], result["storms"]


@pytest.fixture(scope="module")
def simulation():
    return Simulation(twocam_ci_config(), seed=0)


def test_marci_maps_are_global_jpegs_and_moc_maps_keep_their_band(twocam):
    out, maps, _ = twocam
    assert set(maps.camera) == {"moc", "marci"}
    assert set(maps[maps.camera == "marci"].mars_year) == MARCI_YEARS
    assert maps[maps.camera == "moc"].mars_year.max() == 28
    for row in maps.groupby("camera").head(3).itertuples():
        rgb, lossy = read_map_pixels(row.path)
        image = read_map(row.path)
        path = Path(row.path).relative_to(out).as_posix()
        if row.camera == "marci":
            assert path == f"archive/{row.subphase}/{row.subphase}_day{row.sol:02d}.jpg" and lossy
            assert rgb.shape == (450, 900, 3) and image.grid == MapGrid.marci(0.4)
        else:
            assert path == f"archive/{row.subphase}/{row.map_id}.png" and not lossy
            assert rgb.shape == (300, 900, 3) and image.grid == MapGrid.moc(0.4)


def test_marci_maps_get_global_cloud_masks(twocam):
    from marsdust.cloudmask import cloud_mask_path
    from marsdust.formats.cloud_mask import read_cloud_mask, read_cloud_mask_on

    out, maps, _ = twocam
    assert all(cloud_mask_path(out / "cloudmask", s, m).is_file() for s, m in zip(maps.subphase, maps.map_id))
    row = maps[maps.camera == "marci"].iloc[0]
    path = cloud_mask_path(out / "cloudmask", row.subphase, row.map_id)
    assert read_cloud_mask(path)["cloudy"].shape == (225, 450)  # 90°S–90°N at 0.8°
    cloudy, valid = read_cloud_mask_on(path, MapGrid.marci(0.4))
    assert cloudy.shape == valid.shape == (450, 900)
    map_valid = read_map(row.path).valid
    assert (~map_valid).mean() > 0.02 and (valid == map_valid).mean() > 0.97  # unobserved where the map is


def test_marci_years_are_named_after_mro_subphases_and_the_moc_years_keep_their_calendar():
    config = twocam_ci_config()
    calendar = Simulation(config, seed=0).calendar
    moc_only = build_calendar(CalendarConfig(), seed=0)  # the MOC presets' calendar, MY24 Ls150 – MY28 Ls121
    pd.testing.assert_frame_equal(calendar.iloc[: len(moc_only)], moc_only)
    marci = calendar[(calendar.mars_year > 28) | ((calendar.mars_year == 28) & (calendar.ls >= 130))]
    assert marci.subphase.iloc[0] == "P01" and marci.sol.iloc[0] == 1
    assert {s[0] for s in marci.subphase} <= set("PBGDFJ") and "B05" in set(marci.subphase)
    imaged = calendar.iloc[selected_days(config, calendar, 0)]
    assert imaged.query("mars_year == 28 and 121 <= ls < 130").empty  # between MOC's end and MARCI's start
    assert imaged.mars_year.max() == 32


def test_polar_night_is_black_in_the_winter_hemisphere(twocam):
    out, maps, _ = twocam
    grid = MapGrid.marci(0.4)
    lat = grid.lat_centers_deg
    marci = maps[maps.camera == "marci"]
    seasons = {"north winter": (marci.ls > 250) & (marci.ls < 300), "south winter": (marci.ls > 70) & (marci.ls < 110)}
    for season, chosen in seasons.items():
        assert chosen.sum() >= 2, season
        dark, lit = (lat > 75, lat < -75) if season == "north winter" else (lat < -75, lat > 75)
        for path in marci[chosen].path:
            image = read_map(path)
            assert not image.valid[dark].any(), f"{path}: the winter pole has observed pixels"
            assert image.rgb[dark].max() == 0.0
            assert image.valid[lit].mean() > 0.8, f"{path}: the summer pole is not observed"


def test_marci_sees_the_same_surface_with_another_colour_balance(simulation):
    moc, marci = simulation.imagers["moc"], simulation.imagers["marci"]
    row = simulation.maps[simulation.maps.camera == "marci"].iloc[3]
    views = {imager.camera.name: render_sol(imager.planet, imager.instruments, [], int(row.day), 250.0, 0.0,
                                            imager.camera.imaging, simulation.config.clouds, 0)
             for imager in (moc, marci)}
    moc_rgb = views["moc"].rgb.astype(float)
    marci_rgb = marci.grid.crop_to(views["marci"].rgb, moc.grid).astype(float)
    both = views["moc"].valid & marci.grid.crop_to(views["marci"].valid, moc.grid)
    both[:25] = both[-25:] = False  # 50°S–50°N: no polar caps
    assert both.mean() > 0.6
    correlation = np.corrcoef(moc_rgb[..., 0][both], marci_rgb[..., 0][both])[0, 1]
    assert correlation > 0.8  # the same ground
    ratio = {name: np.median(rgb[..., 2][both] / rgb[..., 0][both]) for name, rgb in
             (("moc", moc_rgb), ("marci", marci_rgb))}
    assert ratio["marci"] < ratio["moc"] - 0.1  # MARCI's stretch is warmer: less blue for the same red


def test_marci_maps_have_brightness_steps_at_swath_seams(simulation):
    row = simulation.maps[simulation.maps.camera == "marci"].iloc[5].to_dict()
    imager = simulation.imagers["marci"]
    view = simulation.draw(row).view
    swath, _, _ = swath_layout(imager.grid, imager.camera.imaging, row["day"])
    band = np.abs(imager.grid.lat_centers_deg) < 40
    observed = view.valid[band]
    count = observed.sum(axis=0)
    column_mean = (view.rgb[band][..., 0] * observed).sum(axis=0) / np.maximum(count, 1)
    step = np.abs(np.diff(column_mean))
    both_seen = (count[1:] > 20) & (count[:-1] > 20)  # neither column in a gap
    at_seam = swath[1:] != swath[:-1]
    assert (at_seam & both_seen).sum() >= 10
    assert np.median(step[at_seam & both_seen]) > 3 * np.median(step[~at_seam & both_seen])


def test_jpeg_maps_read_back_with_the_drawn_missing_pixels(simulation, tmp_path):
    from marsdust.mdgm import read_map_resampled

    imager = simulation.imagers["marci"]
    agree, dropped = [], []
    for row in simulation.maps[simulation.maps.camera == "marci"].head(4).to_dict("records"):
        view = simulation.draw(row).view
        path = tmp_path / "m.jpg"
        imager.camera.map_format.write(view.rgb, path)
        raw, _ = read_map_pixels(path)
        image = read_map(path)
        assert (raw[~view.valid] != 0).any()  # JPEG turns black into near-black noise
        assert image.grid == imager.grid and image.rgb[~image.valid].max() == 0.0
        agree.append((image.valid == view.valid).mean())
        dropped.append((~view.valid).mean())
        coarse = read_map_resampled(path, 0.8)
        assert coarse.rgb[~coarse.valid].max() == 0.0 and coarse.rgb[coarse.valid].min() > 0.05
    assert min(agree) > 0.9995 and max(dropped) > 0.02


def test_twocam_catalog_has_table_rows_for_all_years_and_cubes_for_marci_years_only(twocam):
    from marsdust.formats.mdad_table import read_v10_table

    out, maps, storms = twocam
    table = read_v10_table(out / "mdad" / "MDAD.csv")
    assert len(table) == len(storms) and set(table.mars_year) == set(range(24, 33))
    assert set(storms[storms.map_id.isin(maps[maps.camera == "moc"].map_id)].mars_year) == {24, 25, 26, 27, 28}
    assert sorted(p.name for p in (out / "mdad").glob("MY*")) == [f"MY{y}" for y in sorted(MARCI_YEARS)]
    for year in MARCI_YEARS:
        marci = maps[(maps.camera == "marci") & (maps.mars_year == year)]
        with netCDF4.Dataset(out / "mdad" / f"MY{year}" / f"MDADMY{year}.nc") as cube:
            assert [str(d) for d in cube["dayList"][:]] == [p.split("/")[-1][:-4] for p in marci.path]
            assert cube["MDAD"].shape[1:] == (900, 451)
        master = pd.read_csv(out / "mdad" / f"MY{year}" / f"MDAD_MY{year}_master.csv")
        assert len(master) == storms.map_id.isin(marci.map_id).sum()


def test_index_reads_a_two_camera_archive(twocam, tmp_path):
    from typer.testing import CliRunner

    from marsdust.cli import app

    out, maps, _ = twocam
    index = index_archive(out / "archive")
    assert index.attrs["problems"] == []
    assert list(index.map_id) == list(maps.map_id)
    assert np.allclose(index.ls, maps.ls, atol=1e-3)
    result = CliRunner().invoke(app, ["index", str(out / "archive"), "-o", str(tmp_path / "index.csv")])
    assert result.exit_code == 0, result.output
    assert f"{len(maps)} maps" in result.output and "0 problem(s)" in result.output


def test_every_camera_epoch_needs_one_grid_per_cube_year(tmp_path):
    from dataclasses import replace

    from marsdust.synth.cameras import CameraEpoch, marci_camera, moc_camera

    config = replace(ci_config(), sol_stride=20, res_deg=0.8, write_cloud_masks=False,
                     cameras=(CameraEpoch(moc_camera(), end_mars_year=26, end_ls_deg=200.0),
                              CameraEpoch(marci_camera(), start_mars_year=26, start_ls_deg=200.0)))
    with pytest.raises(ValueError, match="MY26: maps of cameras on different grids"):
        synthesize(tmp_path, config, progress=False)
    assert list(tmp_path.iterdir()) == []  # refused before anything is written


def test_presets_are_listed_by_the_synth_command():
    from typer.testing import CliRunner

    from marsdust.cli import app
    from marsdust.synth.presets import PRESETS

    help_text = CliRunner().invoke(app, ["synth", "--help"], env={"COLUMNS": "200"}).output
    assert all(name in help_text for name in PRESETS)
