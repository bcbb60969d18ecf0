"""Look randomization (``marsdust.synth.looks``, ``marsdust synth --random-look``): every map in its own look,
the same weather, swaths and catalogue."""

from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from marsdust.cli import app
from marsdust.synth import synthesize
from marsdust.synth.build import Simulation
from marsdust.synth.imaging import ImagingConfig
from marsdust.synth.looks import LookRandomization, SolLook, draw_sol_look, finish_rgb
from marsdust.synth.presets import get_preset


@pytest.fixture(scope="module")
def two_simulations():
    """``twocam_ci`` at 0.8° with and without look randomization: a few maps of each camera."""
    plain = replace(get_preset("twocam_ci"), res_deg=0.8)
    random = replace(get_preset("twocam_ci", random_look=True), res_deg=0.8)
    return Simulation(plain, seed=3), Simulation(random, seed=3)


def drawn_maps(simulation: Simulation):
    maps = simulation.maps
    rows = [maps[maps.camera == camera].iloc[k].to_dict() for camera in ("moc", "marci") for k in (0, 5, 11)]
    return [simulation.draw(row) for row in rows]


def test_random_look_keeps_weather_swaths_and_catalogue_and_changes_the_pixels(two_simulations):
    plain, random = two_simulations
    assert plain.maps.drop(columns=["path"]).equals(random.maps.drop(columns=["path"]))
    for a, b in zip(drawn_maps(plain), drawn_maps(random)):
        np.testing.assert_array_equal(a.view.valid, b.view.valid)
        np.testing.assert_array_equal(a.view.owner, b.view.owner)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert [{k: v for k, v in r.items() if k != "confidence"} for r in a.storms] == \
               [{k: v for k, v in r.items() if k != "confidence"} for r in b.storms]
        observed = a.view.valid
        assert np.abs(a.view.rgb[observed].astype(int) - b.view.rgb[observed].astype(int)).mean() > 2
        # black means missing, and only that
        assert (b.view.rgb[~observed] == 0).all() and (b.view.rgb[observed] >= 1).all()


def test_looks_differ_between_maps_and_repeat_for_the_same_seed(two_simulations):
    _, random = two_simulations
    looks = [draw_sol_look(ImagingConfig(), LookRandomization(), np.random.default_rng([3, 53, day]))
             for day in range(20)]
    assert len({look.imaging.dust_blue for look in looks}) == 20
    assert {look.jpeg_quality is None for look in looks} == {True, False}
    again = draw_sol_look(ImagingConfig(), LookRandomization(), np.random.default_rng([3, 53, 7]))
    assert again == looks[7]
    first = drawn_maps(random)[0].view.rgb
    np.testing.assert_array_equal(first, drawn_maps(random)[0].view.rgb)


def test_drawn_looks_stay_in_their_ranges_around_the_camera():
    camera = ImagingConfig()
    ranges = LookRandomization()
    for seed in range(50):
        look = draw_sol_look(camera, ranges, np.random.default_rng(seed))
        assert 0.8 * camera.dust_red <= look.imaging.dust_red <= 1.2 * camera.dust_red
        assert 0.7 * camera.dust_blue <= look.imaging.dust_blue <= 1.6 * camera.dust_blue
        assert 0.0 <= look.imaging.dust_light_saturation <= 1.0
        assert np.exp(-0.4) <= look.imaging.storm_tau_gamma <= np.exp(0.4)
        assert all(0.9 <= g <= 1.1 for g in look.channel_gain)
        assert look.jpeg_quality is None or 50 <= look.jpeg_quality <= 95
        # what the draws leave alone: the swath geometry
        assert look.imaging.swaths_per_sol == camera.swaths_per_sol and look.imaging.bands == camera.bands


def test_finish_rgb_compresses_only_when_drawn_and_keeps_missing_pixels_black():
    rng = np.random.default_rng(0)
    rgb = rng.integers(1, 256, size=(40, 64, 3), dtype=np.uint8)
    valid = np.ones((40, 64), bool)
    valid[:, 20:24] = False
    rgb[~valid] = 0
    identity = SolLook(ImagingConfig(), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), None)
    np.testing.assert_array_equal(finish_rgb(rgb, valid, identity), rgb)
    compressed = finish_rgb(rgb, valid, replace(identity, jpeg_quality=50))
    assert np.abs(compressed.astype(int) - rgb.astype(int))[valid].mean() > 3
    assert (compressed[~valid] == 0).all() and (compressed[valid] >= 1).all()
    darker = finish_rgb(rgb, valid, replace(identity, channel_gamma=(1.3, 1.0, 1.0)))
    assert (darker[..., 0][valid] <= rgb[..., 0][valid]).all() and (darker[..., 1] == rgb[..., 1]).all()


def test_a_share_of_the_maps_keeps_its_cameras_look(two_simulations):
    plain, _ = two_simulations
    half = Simulation(replace(get_preset("twocam_ci", random_look=0.5), res_deg=0.8), seed=3)
    same = [np.array_equal(a.view.rgb, b.view.rgb) for a, b in zip(drawn_maps(plain), drawn_maps(half))]
    assert 0 < sum(same) < len(same)
    with pytest.raises(ValueError, match="share of maps in a random look, 0 to 1; got 1.5"):
        get_preset("twocam_ci", random_look=1.5)


def test_random_look_is_refused_for_the_second_look_and_custom_configs(tmp_path):
    with pytest.raises(ValueError, match="look2.*SynthConfig.look"):
        synthesize(tmp_path / "a", "look2", random_look=True, progress=False)
    with pytest.raises(ValueError, match="a SynthConfig"):
        synthesize(tmp_path / "b", get_preset("ci"), random_look=True, progress=False)
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "c"), "--preset", "look2_marci", "--random-look",
                                      "--quiet"])
    assert result.exit_code == 2 and "--random-look draws the main generator's maps" in result.output
    assert not any(tmp_path.iterdir())
