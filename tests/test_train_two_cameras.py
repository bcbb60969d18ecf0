"""Training on the two-camera archive (synth preset ``twocam_ci``: MOC maps with the v1.0 table only, then
global MARCI maps with v1.1 outline cubes): what each Mars year trains on (``label_sources.csv``), the
default split over both cameras, and the paper's setting (MOC years, v1.0 table, 12° boxes) as one command."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from marsdust.cli import app
from marsdust.mdgm import index_archive
from marsdust.models import training_latitudes
from marsdust.train import TrainConfig, train

TINY_RUN = dict(model_preset="small_cpu", map_res_deg=0.8, num_workers=0, progress=False, val_every_n_steps=1000,
                seed=0)


@pytest.fixture(autouse=True)
def _ci_threads(ci_threads):
    """Every test here runs torch on CI's threads (see conftest.ci_threads)."""


@pytest.fixture(scope="module")
def twocam_data(tmp_path_factory):
    """The ``twocam_ci`` preset (64 maps at 0.4°, MY24 Ls150 – MY32), synthesized once for this module."""
    from marsdust.synth import synthesize

    out = tmp_path_factory.mktemp("twocam_ci")
    synthesize(out, "twocam_ci", seed=0, progress=False)
    return out


def marci_years(data) -> set[int]:
    """Mars years with MARCI maps: those after the MOC archive's end (MY28 Ls121)."""
    index = index_archive(data / "archive")
    later = (index["mars_year"] > 28) | ((index["mars_year"] == 28) & (index["ls"] > 121.0))
    return set(index.loc[later, "mars_year"].astype(int))


@pytest.mark.slow
def test_outline_run_reports_outlines_for_marci_years_and_area_boxes_for_moc_years(twocam_data, tmp_path, caplog):
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="marsdust.train.lightning"):
        train(TrainConfig(data=str(twocam_data), max_steps=4, **TINY_RUN), run)
    sources = pd.read_csv(run / "label_sources.csv")
    assert list(sources.columns) == ["mars_year", "label_source", "mask_target", "n_maps", "n_instances",
                                     "train", "val", "test", "unused"]
    outline_years = set(sources.loc[sources["label_source"] == "outline", "mars_year"])
    assert outline_years == marci_years(twocam_data) == {28, 29, 30, 31, 32}
    assert set(sources.loc[sources["label_source"] == "area_box", "mars_year"]) == {24, 25, 26, 27, 28}
    assert (sources["mask_target"] == (sources["label_source"] == "outline")).all()
    # every catalogue row of the archive's maps is counted once (MY28: MOC maps' v1.0 rows and MARCI maps' cube rows)
    assert sources["n_instances"].sum() == 201
    assert (sources[["train", "val", "test", "unused"]].sum(axis=1) == sources["n_instances"]).all()
    split = pd.read_csv(run / "split.csv")
    assert set(split.loc[split["split"].isin(["train", "val"]), "mars_year"]) >= {29, 30, 31}  # MARCI years train
    assert set(split.loc[split["split"] == "test", "mars_year"]) == {32}
    assert any("label sources (outline mode" in r.getMessage() and "MY28" in r.getMessage() for r in caplog.records)
    # trained on MOC's 60°S–60°N and MARCI's global maps: every latitude seen
    assert training_latitudes(run / "checkpoints" / "last.ckpt") == (-90.0, 90.0)


@pytest.mark.slow
def test_the_papers_setting_is_one_command(twocam_data, tmp_path):
    """MOC years, the v1.0 table only, the paper's 12° boxes and periods (the README's command)."""
    run = tmp_path / "paper"
    result = CliRunner().invoke(app, [
        "train", "--data", str(twocam_data), "--catalog", str(twocam_data / "mdad" / "MDAD.csv"),
        "--label-mode", "fixed", "--train-period", "MY25 0 - MY27 180", "--test-period", "MY27 180 - MY28 121]",
        "--max-steps", "2", "--model-preset", "small_cpu", "--map-res-deg", "0.8", "--num-workers", "0",
        "--val-every", "1000", "--quiet", "-o", str(run)])
    assert result.exit_code == 0, result.output
    sources = pd.read_csv(run / "label_sources.csv")
    assert set(sources["label_source"]) == {"fixed_box"} and sources["mask_target"].all()
    used = sources[["train", "val", "test"]].sum(axis=1) > 0
    assert set(sources.loc[used, "mars_year"]) == {25, 26, 27, 28}
    split = pd.read_csv(run / "split.csv")
    assert split.loc[split["mars_year"] > 28, "split"].eq("unused").all()
    marci_2028 = (split["mars_year"] == 28) & (split["ls"] > 121.0)
    assert split.loc[marci_2028, "split"].eq("unused").all()
    # MOC maps only: the checkpoint knows it never saw beyond 60°, so detect drops its polar detections
    assert training_latitudes(run / "checkpoints" / "last.ckpt") == (-60.0, 60.0)


def test_a_run_from_a_checkpoints_weights_has_seen_the_latitudes_of_both(tmp_path):
    """Self-training a MOC detector on global maps: the student has seen 60°S–60°N and the global maps."""
    from types import SimpleNamespace

    from marsdust.models import always_storm_detector, save_checkpoint
    from marsdust.train.run import _seen_latitudes

    teacher = save_checkpoint(always_storm_detector(), tmp_path / "teacher.ckpt", training_latitudes_deg=[-60.0, 60.0])
    on_global = SimpleNamespace(training_latitudes_deg=(-90.0, 90.0))
    on_moc = SimpleNamespace(training_latitudes_deg=(-60.0, 60.0))
    assert _seen_latitudes(SimpleNamespace(init_weights=str(teacher)), on_global) == (-90.0, 90.0)
    southern = SimpleNamespace(training_latitudes_deg=(-90.0, 30.0))
    assert _seen_latitudes(SimpleNamespace(init_weights=str(teacher)), southern) == (-90.0, 60.0)
    assert _seen_latitudes(SimpleNamespace(init_weights=None), on_moc) == (-60.0, 60.0)
    unrecorded = save_checkpoint(always_storm_detector(), tmp_path / "old.ckpt")
    assert _seen_latitudes(SimpleNamespace(init_weights=str(unrecorded)), on_moc) == (-60.0, 60.0)


def test_map_latitudes_are_the_union_of_the_maps_grids(twocam_data):
    from marsdust.data import map_latitudes

    index = index_archive(twocam_data / "archive")
    moc = index[~index["mars_year"].isin(marci_years(twocam_data))]
    assert map_latitudes(index, 0.8) == (-90.0, 90.0)
    assert map_latitudes(moc, 0.8) == (-60.0, 60.0)
    assert map_latitudes(moc.assign(subphase=None), 0.8) == (-60.0, 60.0)  # no subphase: every map's header
    assert map_latitudes(index.iloc[0:0], 0.8) is None


def test_only_maps_inside_the_outline_cubes_years_offer_their_pixels_to_the_outline_threshold(twocam_data):
    """The v1.0 table's MOC years have no outline truth: validation chooses the outline threshold on MARCI maps."""
    from marsdust.data import DustDataset
    from marsdust.mdad import read_catalog

    index = index_archive(twocam_data / "archive")
    storms = read_catalog(twocam_data / "mdad")
    picks = pd.concat([index[index["mars_year"] == 26].head(2), index[index["mars_year"] == 31].head(2)])
    flags = {}
    for mode in ("outline", "area"):
        dataset = DustDataset(picks, storms, map_res_deg=2.0, label_mode=mode, cache=False)
        flags[mode] = [bool(dataset[i][1]["outline_truth"]) for i in range(len(dataset))]
        image, target = dataset[0]
        assert target["valid"].shape == image.shape[-2:] and target["valid"].dtype == torch.bool
    assert flags == {"outline": [False, False, True, True], "area": [False] * 4}
