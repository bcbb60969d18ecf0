"""Reference backgrounds built from an archive's earlier maps (marsdust.reference)."""

import numpy as np
import pandas as pd
import pytest

from marsdust.reference import ReferenceBuilder, ReferenceConfig, lower_median, stack_bands

SHAPE = (6, 12)


def _map(value: float, valid: np.ndarray | None = None):
    rgb = np.full((*SHAPE, 3), value, dtype=np.float32)
    valid = np.ones(SHAPE, bool) if valid is None else valid
    rgb[~valid] = 0.0
    return rgb, valid


def test_first_map_of_an_archive_has_a_defined_background_of_zeros():
    builder = ReferenceBuilder(ReferenceConfig("prior-median", sols=5))
    background = builder.background(100.0, SHAPE)
    assert background.shape == (*SHAPE, 3) and background.dtype == np.float32
    assert np.all(background == 0.0) and not np.isnan(background).any()


def test_background_is_the_median_of_earlier_observations_ignoring_missing_pixels():
    builder = ReferenceBuilder(ReferenceConfig("prior-median", sols=10))
    gap = np.ones(SHAPE, bool)
    gap[:, :4] = False  # a missing swath on one sol
    for sol, (value, valid) in enumerate([(0.2, None), (0.9, gap), (0.3, None)]):
        builder.add(float(sol), *_map(value, valid))
    background = builder.background(3.0, SHAPE)
    # columns 0-3 saw 0.2 and 0.3 (lower median 0.2); the others 0.2, 0.9, 0.3 (median 0.3)
    np.testing.assert_allclose(background[:, :4], 0.2, atol=1e-3)
    np.testing.assert_allclose(background[:, 4:], 0.3, atol=1e-3)


def test_a_transient_storm_does_not_enter_the_background():
    builder = ReferenceBuilder(ReferenceConfig("prior-median", sols=10))
    for sol in range(5):
        rgb, valid = _map(0.25)
        if sol == 2:
            rgb[1:4, 2:6] = 0.8  # a one-sol storm
        builder.add(float(sol), rgb, valid)
    np.testing.assert_allclose(builder.background(5.0, SHAPE), 0.25, atol=1e-3)


def test_after_a_gap_longer_than_the_window_there_is_no_history():
    builder = ReferenceBuilder(ReferenceConfig("prior-median", sols=5))
    builder.add(0.0, *_map(0.4))
    builder.add(1.0, *_map(0.4))
    assert np.all(builder.background(3.0, SHAPE) > 0)
    assert np.all(builder.background(30.0, SHAPE) == 0.0)
    assert len(builder) == 0


def test_maps_out_of_time_order_are_refused():
    builder = ReferenceBuilder(ReferenceConfig("prior-median", sols=5))
    builder.add(10.0, *_map(0.4))
    with pytest.raises(ValueError, match="time order"):
        builder.add(4.0, *_map(0.4))
    with pytest.raises(ValueError, match="time"):
        builder.background(float("nan"), SHAPE)


def test_history_on_another_grid_is_not_used():
    builder = ReferenceBuilder(ReferenceConfig("prior-median", sols=5))
    builder.add(0.0, np.full((3, 6, 3), 0.5, np.float32), np.ones((3, 6), bool))
    assert np.all(builder.background(1.0, SHAPE) == 0.0)


def test_a_dark_but_observed_pixel_stays_observed():
    rgb, valid = _map(0.0)  # observed, reflectance 0
    builder = ReferenceBuilder(ReferenceConfig("prior-median", sols=5))
    builder.add(0.0, rgb, valid)
    background = builder.background(1.0, SHAPE)
    assert np.all(background > 0) and np.all(background < 1e-3)


def test_lower_median_ignores_all_zero_samples():
    samples = np.zeros((3, 1, 2, 3), np.float32)
    samples[0, 0, 0] = 0.1
    samples[2, 0, 0] = 0.5
    median = lower_median(samples)
    np.testing.assert_allclose(median[0, 0], 0.1)
    np.testing.assert_allclose(median[0, 1], 0.0)


def test_a_storm_straddling_180_degrees_shows_against_its_background_on_both_edges():
    builder = ReferenceBuilder(ReferenceConfig("prior-median", sols=5))
    for sol in range(3):
        builder.add(float(sol), *_map(0.25))
    rgb, valid = _map(0.25)
    rgb[2:4, -3:] = 0.7  # east of 180°W...
    rgb[2:4, :3] = 0.7   # ...and west of it: one storm across the map edge
    bands = stack_bands(rgb, builder.background(3.0, SHAPE))
    assert bands.shape == (*SHAPE, 6)
    difference = bands[..., :3] - bands[..., 3:]
    assert np.all(difference[2:4, -3:] > 0.4) and np.all(difference[2:4, :3] > 0.4)
    assert np.allclose(difference[:, 3:-3], 0.0, atol=1e-3)


def test_stack_bands_without_a_reference_is_the_map():
    rgb, _ = _map(0.3)
    assert stack_bands(rgb, None) is rgb


def test_config_reads_names_dicts_and_none_and_refuses_bad_values():
    assert not ReferenceConfig.from_value(None).enabled
    assert ReferenceConfig.from_value("prior-median").n_bands == 3
    config = ReferenceConfig.from_value({"kind": "prior-median", "sols": 7})
    assert config == ReferenceConfig("prior-median", 7) and ReferenceConfig.from_value(config.to_dict()) == config
    with pytest.raises(ValueError, match="reference must be one of"):
        ReferenceConfig("mean")
    with pytest.raises(ValueError, match="at least 1 sol"):
        ReferenceConfig("prior-median", sols=0)


# --- end to end: train, evaluate and detect with reference bands -----------------------------------------------
@pytest.mark.slow
def test_a_detector_with_reference_bands_trains_and_detect_and_evaluate_rebuild_them(ci_data, tmp_path, ci_threads):
    from marsdust.detect import DetectExecution, DetectSettings, detect_archive
    from marsdust.evaluate import EvaluateOptions, evaluate_checkpoint
    from marsdust.mdgm import index_archive
    from marsdust.models import load_model
    from marsdust.train import TrainConfig, train

    config = TrainConfig(data=str(ci_data), model_preset="small_cpu", map_res_deg=0.8, num_workers=0, progress=False,
                         val_every_n_steps=4, max_steps=4, seed=0, reference="prior-median", reference_sols=10)
    train(config, tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    model = load_model(checkpoint)
    assert model.config.reference == "prior-median" and model.config.reference_sols == 10
    assert model.config.in_channels == 6

    metrics = evaluate_checkpoint(checkpoint, tmp_path / "eval", EvaluateOptions(progress=False, n_figures=0))
    assert metrics["n_maps"] > 0 and "map50" in metrics

    index = index_archive(ci_data / "archive")
    later = index.iloc[len(index) // 2:]
    later.to_csv(tmp_path / "later.csv", index=False)
    settings = DetectSettings(score_threshold=0.05)
    one_pass = detect_archive(checkpoint, tmp_path / "later.csv", tmp_path / "alone", settings=settings,
                              execution=DetectExecution(progress=False), history=ci_data / "archive")
    two_workers = detect_archive(checkpoint, tmp_path / "later.csv", tmp_path / "workers", settings=settings,
                                 execution=DetectExecution(progress=False, workers=2), history=ci_data / "archive")
    assert one_pass.n_maps == two_workers.n_maps == len(later)
    import pandas as pd

    alone = pd.read_csv(tmp_path / "alone" / "detections.csv")
    shared = pd.read_csv(tmp_path / "workers" / "detections.csv")
    assert len(alone) == len(shared)  # a worker's share builds the same backgrounds from the history


def test_prepare_map_refuses_band_counts_the_detector_does_not_expect():
    from marsdust.detect.prepare import prepare_map
    from marsdust.detect.settings import DetectSettings
    from marsdust.grid import MapGrid
    from marsdust.mdgm import MapImage

    grid = MapGrid(60.0, -60.0, 8.0)
    image = MapImage(np.full((*grid.shape, 3), 0.3, np.float32), np.ones(grid.shape, bool), grid)
    settings = DetectSettings(0.5, 0.5, 0.0, 4096)
    with pytest.raises(ValueError, match="expects 6 input bands but gets 3"):
        prepare_map(image, grid, settings, map_id="m", mars_year=26, ls=10.0, in_channels=6)
    prepared = prepare_map(image, grid, settings, map_id="m", mars_year=26, ls=10.0, in_channels=6,
                           extra_bands=np.zeros((*grid.shape, 3), np.float32))
    assert prepared.tensors[0].shape[0] == 6


def test_per_map_standardization_marks_pixels_without_history_as_missing_in_the_reference_bands_only():
    import torch

    from marsdust.models.config import MISSING_INPUT_VALUE
    from marsdust.models.registry import standardize_observed

    image = torch.rand(6, 4, 5) * 0.5 + 0.1
    image[3:, :, :2] = 0.0  # no history in the two western columns
    image[:3, 0, 4] = 0.0   # one missing map pixel
    out = standardize_observed(image)
    assert torch.all(out[3:, :, :2] == MISSING_INPUT_VALUE)
    assert torch.all(out[:3, 1:, :2] != MISSING_INPUT_VALUE)  # the map itself is observed there
    assert torch.all(out[:, 0, 4] == MISSING_INPUT_VALUE)
    assert torch.isfinite(out).all()
    rgb_only = standardize_observed(image[:3])
    assert torch.equal(rgb_only, out[:3])  # three-band input: unchanged behaviour


def test_a_dataset_without_a_background_for_one_of_its_maps_names_it():
    from marsdust.data import DustDataset

    index = pd.DataFrame({"map_id": ["m000", "m001"], "mars_year": 26, "ls": [10.0, 10.5], "path": ["a", "b"]})
    storms = pd.DataFrame({"map_id": pd.Series([], dtype=str)})
    with pytest.raises(ValueError, match=r"no reference background for 1 map\(s\), e.g. \['m001'\]"):
        DustDataset(index, storms, 0.8, backgrounds={"m000": np.zeros((2, 2, 3), np.float16)})


def test_a_detector_trained_without_history_too_detects_loose_maps_with_no_background(ci_data, tmp_path,
                                                                                      tiny_detector, caplog):
    import logging
    import shutil

    from marsdust.detect import DetectExecution, DetectOutputs, DetectSettings, detect_archive
    from marsdust.mdgm import index_archive
    from marsdust.models import build_model, stored_reference_dropout

    index = index_archive(ci_data / "archive").sort_values(["mars_year", "ls"])
    loose = tmp_path / "loose"
    loose.mkdir()
    for path in index["path"].iloc[10:12]:  # no list_ls.txt: no Mars year, no Ls
        shutil.copy(path, loose)
    model = build_model("dustrcnn", map_res_deg=0.8, reference="prior-median", in_channels=6, **tiny_detector).eval()
    settings, quiet = DetectSettings(score_threshold=0.99), DetectExecution(progress=False)
    with pytest.raises(ValueError, match="need each map's Mars year and Ls"):
        detect_archive(model, loose, DetectOutputs(tmp_path / "refused", track=False), settings=settings,
                       execution=quiet)

    model.checkpoint_extra = {"reference_dropout": 0.2}
    assert stored_reference_dropout(model) == 0.2
    with caplog.at_level(logging.WARNING, logger="marsdust"):
        summary = detect_archive(model, loose, DetectOutputs(tmp_path / "out", track=False), settings=settings,
                                 execution=quiet)
    assert summary.n_maps == 2
    maps = pd.read_csv(tmp_path / "out" / "maps.csv")
    assert len(maps) == 2 and maps["status"].eq("ok").all()
    warned = [r.getMessage() for r in caplog.records if "no Mars year and Ls" in r.getMessage()]
    assert len(warned) == 1 and "2 map(s)" in warned[0]


def test_detect_map_refuses_a_background_of_the_wrong_shape_or_for_a_detector_without_reference_bands(tiny_detector):
    from marsdust.grid import MapGrid
    from marsdust.mdgm import MapImage
    from marsdust.models import build_model
    from marsdust.detect import detect_map

    grid = MapGrid(60.0, -60.0, 1.6)
    image = MapImage(np.full((*grid.shape, 3), 0.3, np.float32), np.ones(grid.shape, bool), grid)
    plain = build_model("dustrcnn", map_res_deg=1.6, **tiny_detector).eval()
    with pytest.raises(ValueError, match="map m: a background was given but the detector has no reference bands"):
        detect_map(plain, image, map_id="m", background=np.zeros((*grid.shape, 3), np.float32))
    with_reference = build_model("dustrcnn", map_res_deg=1.6, reference="prior-median", in_channels=6,
                                **tiny_detector).eval()
    with pytest.raises(ValueError, match=r"map m: background of shape \(2, 2, 3\), expected \(75, 225, 3\)"):
        detect_map(with_reference, image, map_id="m", background=np.zeros((2, 2, 3), np.float32))
    result = detect_map(with_reference, image, map_id="m", background=np.zeros((*grid.shape, 3), np.float32))
    assert result.grid.shape == grid.shape


def test_reference_dropout_shows_some_training_maps_without_history():
    from marsdust.data import DustDataset

    index = pd.DataFrame({"map_id": [f"m{i:03d}" for i in range(40)], "mars_year": 26, "ls": 10.0, "path": "x"})
    storms = pd.DataFrame({"map_id": pd.Series([], dtype=str), "lon": pd.Series([], dtype=float),
                           "lat": pd.Series([], dtype=float)})
    rgb = np.full((8, 16, 3), 0.3, np.float32)
    background = np.full((8, 16, 3), 0.25, np.float16)

    def load(path, res_deg):
        from marsdust.grid import MapGrid
        from marsdust.mdgm import MapImage

        return MapImage(rgb, np.ones((8, 16), bool), MapGrid.from_width(16, 90.0 * 8 / 16, -90.0 * 8 / 16))

    def reference_bands_zero(dropout, augment):
        dataset = DustDataset(index, storms, 22.5, augment=augment, load_map=load, reference_dropout=dropout,
                              backgrounds={m: background for m in index["map_id"]})
        return [bool((dataset[i][0][3:] == 0).all()) for i in range(len(dataset))]

    assert not any(reference_bands_zero(0.0, "basic"))
    dropped = reference_bands_zero(0.5, "basic")
    assert 5 <= sum(dropped) <= 35  # about half of 40
    assert not any(reference_bands_zero(0.5, False))  # never without augmentation (validation, evaluation)
    from marsdust.train import TrainConfig

    with pytest.raises(ValueError, match=r"reference_dropout must be a probability in \[0, 1\], got 1.5"):
        TrainConfig(reference_dropout=1.5)


def test_detect_warns_about_and_marks_maps_without_history(ci_data, tmp_path, tiny_detector, caplog):
    import logging

    from marsdust.detect import DetectExecution, DetectOutputs, DetectSettings, detect_archive
    from marsdust.mdgm import index_archive
    from marsdust.models import build_model

    index = index_archive(ci_data / "archive").sort_values(["mars_year", "ls"]).head(3)
    index.to_csv(tmp_path / "first.csv", index=False)
    model = build_model("dustrcnn", map_res_deg=0.8, reference="prior-median", in_channels=6, **tiny_detector).eval()
    with caplog.at_level(logging.WARNING, logger="marsdust"):
        summary = detect_archive(model, tmp_path / "first.csv", DetectOutputs(tmp_path / "out", track=False),
                                 settings=DetectSettings(score_threshold=0.99), execution=DetectExecution(progress=False))
    warned = [r.getMessage() for r in caplog.records if "had no earlier map" in r.getMessage()]
    assert len(warned) == 1 and index["map_id"].iloc[0] in warned[0]  # the archive's first map has no history
    maps = pd.read_csv(tmp_path / "out" / "maps.csv", keep_default_na=False)
    # the ci maps lie further apart than the default 20-sol window: none of the three had history
    assert "history" in maps.columns and maps["history"].tolist() == ["none", "none", "none"]
    assert summary.n_without_history == 3 and summary.needs_history and summary.all_without_history


def test_cli_detect_marks_maps_without_history_and_exits_3_when_no_map_had_any(ci_data, tmp_path, tiny_detector):
    from typer.testing import CliRunner

    from marsdust.cli import app
    from marsdust.mdgm import index_archive
    from marsdust.models import build_model, save_checkpoint

    index = index_archive(ci_data / "archive").sort_values(["mars_year", "ls"])
    index.head(3).to_csv(tmp_path / "first.csv", index=False)
    index.iloc[[3]].to_csv(tmp_path / "fourth.csv", index=False)  # earlier maps in the archive only
    model = build_model("dustrcnn", map_res_deg=0.8, reference="prior-median", reference_sols=100, in_channels=6,
                        **tiny_detector)  # 100 sols: the window holds the ci archive's previous map
    needs = save_checkpoint(model, tmp_path / "needs.ckpt")
    works_without = save_checkpoint(model, tmp_path / "without.ckpt", reference_dropout=0.2)

    def detect(checkpoint, maps: str, out: str, *options: str):
        result = CliRunner().invoke(app, ["detect", str(checkpoint), str(tmp_path / maps), "-o", str(tmp_path / out),
                                          "--score-threshold", "0.99", "--no-track", "--quiet", *options])
        history = pd.read_csv(tmp_path / out / "maps.csv", keep_default_na=False)["history"].tolist()
        return result, history

    advice = "without history (the detector compares each map with the earlier ones: give --history ARCHIVE)"
    archive_start, history = detect(needs, "first.csv", "start")
    assert archive_start.exit_code == 0 and history == ["none", "yes", "yes"]  # the archive's first map: normal
    assert f"1 map {advice}" in archive_start.stdout and "error" not in archive_start.stderr

    alone, history = detect(needs, "fourth.csv", "alone")
    assert alone.exit_code == 3 and history == ["none"] and f"1 map {advice}" in alone.stdout
    assert alone.stderr.startswith("error: no map of the run had an earlier map") and "--history" in alone.stderr
    again, _ = detect(needs, "fourth.csv", "alone")  # the finished run found again: the same verdict
    assert again.exit_code == 3 and f"1 map {advice}" in again.stdout

    given, history = detect(needs, "fourth.csv", "given", "--history", str(ci_data / "archive"))
    assert given.exit_code == 0 and history == ["yes"] and "without history" not in given.output

    trained_without, history = detect(works_without, "fourth.csv", "trained_without")
    assert trained_without.exit_code == 0 and history == ["none"] and "error" not in trained_without.stderr
    assert "1 map without history (detected as the detector also learnt to" in trained_without.stdout
