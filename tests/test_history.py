"""The one walker that serves reference backgrounds in time order, and the one no-history rule (marsdust.history)."""

import logging

import numpy as np
import pandas as pd
import pytest

from marsdust.history import MapHistory, no_history_policy
from marsdust.reference import ReferenceConfig

SHAPE = (6, 12)


def _map(value: float):
    return np.full((*SHAPE, 3), value, dtype=np.float32), np.ones(SHAPE, bool)


def _archive(n_maps: int, first_sol: float = 100.0, mars_year: int = 26):
    """An index of daily maps of rising brightness (Ls from the calendar) and their images by path."""
    from marsdust.synth.calendar import ls_from_sol_of_year

    sols = np.arange(n_maps, dtype=float) + first_sol
    index = pd.DataFrame({"map_id": [f"m{i:03d}" for i in range(n_maps)], "mars_year": mars_year,
                          "ls": ls_from_sol_of_year(sols), "path": [str(i) for i in range(n_maps)]})
    images = {str(i): _map(0.1 + 0.01 * i) for i in range(n_maps)}
    return index, images


def test_a_worker_share_or_resumed_run_gets_the_backgrounds_of_a_full_pass():
    index, images = _archive(15)
    config = ReferenceConfig("prior-median", sols=4)
    full = MapHistory(config, index, images.__getitem__).backgrounds()
    history = MapHistory(config, index, images.__getitem__)
    for position in (9, 10, 11):  # the second half of a run: maps 0-8 were done earlier
        map_id = index["map_id"][position]
        background = history.background(map_id, SHAPE)
        np.testing.assert_array_equal(background.astype(np.float16), full[map_id])
        history.add(map_id, *images[index["path"][position]])
    assert history.extra_reads <= config.sols + 1  # only the window before map 9 was read again


def test_backgrounds_of_some_maps_take_the_others_as_history_and_are_served_in_time_order_whatever_the_table_order():
    index, images = _archive(8)
    config = ReferenceConfig("prior-median", sols=3)
    full = MapHistory(config, index, images.__getitem__).backgrounds()
    shuffled = index.sample(frac=1.0, random_state=1)
    some = MapHistory(config, shuffled, images.__getitem__).backgrounds(["m006", "m003"])
    assert sorted(some) == ["m003", "m006"]
    for map_id in some:
        np.testing.assert_array_equal(some[map_id], full[map_id])
        assert some[map_id].dtype == np.float16
    np.testing.assert_allclose(full["m005"], 0.13, atol=1e-3)  # lower median of m002, m003, m004
    assert not full["m000"].any()  # the first map has no history


def test_the_time_axis_runs_on_across_mars_years():
    """The window counts sols on mars_time_sols: the last sols of MY26 are history of the first of MY27."""
    from marsdust.synth.calendar import ls_from_sol_of_year

    index = pd.DataFrame({"map_id": ["late", "early"], "mars_year": [26, 27],
                          "ls": [ls_from_sol_of_year(667.0), ls_from_sol_of_year(1.0)], "path": ["a", "b"]})
    images = {"a": _map(0.3), "b": _map(0.6)}
    history = MapHistory(ReferenceConfig("prior-median", sols=5), index, images.__getitem__)
    assert history.map_ids == ["late", "early"]
    backgrounds = history.backgrounds()
    np.testing.assert_allclose(backgrounds["early"], 0.3, atol=1e-3)
    assert history.without_history == ["late"]


def test_maps_without_a_time_are_refused_naming_them_unless_the_detector_works_without_history(caplog):
    rows = [{"map_id": "loose_map", "mars_year": 0, "ls": float("nan"), "path": "loose_map.png"}]
    config = ReferenceConfig("prior-median")
    needs_a_time = r"need each map's Mars year and Ls; 1 map\(s\) have none, e.g. \['loose_map'\]"
    with pytest.raises(ValueError, match=needs_a_time):
        MapHistory(config, rows, lambda path: _map(0.4))
    with pytest.raises(ValueError, match="--reference-dropout"):  # says which detector would take them
        MapHistory(config, rows, lambda path: _map(0.4))
    with caplog.at_level(logging.WARNING, logger="marsdust"):
        history = MapHistory(config, rows, lambda path: _map(0.4), works_without=True)
    assert history.untimed == ["loose_map"]
    assert any("1 map(s) have no Mars year and Ls" in r.getMessage() for r in caplog.records)
    assert not history.backgrounds()["loose_map"].any()


def test_untimed_maps_get_a_background_of_zeros_and_timed_ones_their_history():
    from marsdust.detect.pipeline import with_background
    from marsdust.detect.prepare import prepare_map
    from marsdust.detect.settings import DetectSettings
    from marsdust.grid import MapGrid
    from marsdust.mdgm import MapImage

    grid = MapGrid(60.0, -60.0, 8.0)
    rows = [{"map_id": f"m{i}", "mars_year": 26, "ls": float(i), "path": f"m{i}.png"} for i in range(2)]
    rows.append({"map_id": "loose", "mars_year": 0, "ls": float("nan"), "path": "loose.png"})
    settings = DetectSettings(0.5, 0.5, 0.0, 4096)
    history = MapHistory(ReferenceConfig("prior-median"), rows, lambda path: None, works_without=True)
    bands, had_history = {}, {}
    for row in rows:
        image = MapImage(np.full((*grid.shape, 3), 0.4, np.float32), np.ones(grid.shape, bool), grid)
        read = prepare_map(image, grid, settings, map_id=row["map_id"], mars_year=row["mars_year"], ls=row["ls"])
        ready = with_background(read, history, settings)
        bands[row["map_id"]], had_history[row["map_id"]] = ready.tensors[0][3:], ready.has_history
    assert history.without_history == ["m0"] and history.untimed == ["loose"]
    assert had_history == {"m0": False, "m1": True, "loose": False}  # maps.csv: none, yes, none
    assert float(bands["m1"].min()) == pytest.approx(0.4, abs=1e-3)  # m0 is m1's history (float16)
    assert float(bands["loose"].abs().max()) == 0.0


def test_an_unreadable_history_map_is_no_history():
    index, images = _archive(4)

    def load(path):
        if path == "1":
            raise OSError("broken file")
        return images[path]

    history = MapHistory(ReferenceConfig("prior-median", sols=5), index, load)
    background = history.background("m003", SHAPE)  # m000 and m002 read as history, m001 not
    np.testing.assert_allclose(background, 0.10, atol=1e-3)
    assert history.extra_reads == 2


def test_a_map_outside_the_table_is_named():
    index, images = _archive(2)
    history = MapHistory(ReferenceConfig("prior-median", sols=5), index, images.__getitem__)
    with pytest.raises(KeyError, match="elsewhere"):
        history.background("elsewhere", SHAPE)
    with pytest.raises(KeyError, match=r"1 map\(s\) are not in the history's table of maps, e.g. \['elsewhere'\]"):
        history.backgrounds(["m000", "elsewhere"])


def test_training_refuses_maps_without_a_time_naming_them():
    from marsdust.data import dataset_backgrounds

    index = pd.DataFrame({"map_id": ["m000", "nowhen"], "mars_year": [26, 0], "ls": [10.0, float("nan")],
                          "path": ["a", "b"]})
    with pytest.raises(ValueError, match=r"e.g. \['nowhen'\]"):
        dataset_backgrounds(index, 8.0, ReferenceConfig("prior-median"), load_map=lambda path, res: None)


def test_no_history_policy_is_silent_for_no_maps():
    no_history_policy(ReferenceConfig("prior-median"), [], False, missing="background", hint="none")


def test_detect_map_without_a_background_follows_the_checkpoints_no_history_rule(tiny_detector, caplog):
    from marsdust.detect import detect_map
    from marsdust.grid import MapGrid
    from marsdust.mdgm import MapImage
    from marsdust.models import build_model

    grid = MapGrid(60.0, -60.0, 1.6)
    image = MapImage(np.full((*grid.shape, 3), 0.3, np.float32), np.ones(grid.shape, bool), grid)
    model = build_model("dustrcnn", map_res_deg=1.6, reference="prior-median", in_channels=6, **tiny_detector).eval()
    with pytest.raises(ValueError, match=r"need each map's background; 1 map\(s\) have none, e.g. \['m'\]"):
        detect_map(model, image, map_id="m")
    model.checkpoint_extra = {"reference_dropout": 0.2}
    with caplog.at_level(logging.WARNING, logger="marsdust"):
        without = detect_map(model, image, map_id="m")
    assert any("1 map(s) have no background (e.g. m)" in r.getMessage() for r in caplog.records)
    zeros = detect_map(model, image, map_id="m", background=np.zeros((*grid.shape, 3), np.float32))
    assert without.records == zeros.records  # no history is a background of zeros
