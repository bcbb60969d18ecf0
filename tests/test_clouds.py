"""Water-ice clouds: synthetic cloud masks, cloud instances, two-class training, detect's class column and
cloud cube, per-class evaluation of a trained detector (the scores themselves: test_evaluate_clouds.py).

Runs use the session's synthetic ``ci`` preset (``ci_data``, which now carries ``cloudmask/``) and the
small CPU detector at 1.6° (75 x 225 px maps), so training and detection take seconds.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from marsdust.cloudmask import (
    CLOUD_LABEL,
    CloudMasks,
    cloud_components,
    cloud_instances,
    cloud_mask_path,
    cloud_mask_values,
    parse_classes,
)
from marsdust.formats.cloud_mask import (
    INVALID,
    CloudMaskGridError,
    read_cloud_mask,
    read_cloud_mask_on,
    write_cloud_mask,
)
from marsdust.grid import MapGrid

RES_DEG = 1.6


@pytest.fixture(autouse=True)
def _ci_threads(ci_threads):
    """Every test here runs torch on CI's threads (see conftest.ci_threads)."""


def _tiny_config(data, **changes):
    from marsdust.train import TrainConfig

    values = dict(data=str(data), model_preset="small_cpu", map_res_deg=RES_DEG, num_workers=0, progress=False,
                  val_every_n_steps=1000, max_steps=2, batch_size=2, seed=0)
    values.update(changes)
    return TrainConfig(**values)


def _few_maps(ci_data, tmp_path, n=3):
    """An index CSV of ``n`` maps of the ci archive (what detect_archive accepts as its maps)."""
    from marsdust.mdgm import index_archive

    index = index_archive(ci_data / "archive")
    index = index[index["mars_year"] == 27].head(n)
    path = tmp_path / "few.csv"
    index.to_csv(path, index=False)
    return path, index


# ------------------------------------------------------------------------------- synthetic cloud masks
def test_synth_writes_cloud_masks_that_read_back_as_the_drawn_opacity_above_the_threshold(ci_synthesis):
    from marsdust.synth import get_preset
    from marsdust.synth.build import Simulation

    out, written = ci_synthesis
    maps = written["maps"]
    assert all(cloud_mask_path(out / "cloudmask", s, m).is_file() for s, m in zip(maps["subphase"], maps["map_id"]))
    simulation = Simulation(get_preset("ci"), seed=0, out_dir=out)
    row = simulation.maps[(simulation.maps["ls"] > 60) & (simulation.maps["ls"] < 120)].iloc[0].to_dict()
    view = simulation.draw(row).view  # the same sol again: same seed, same opacity
    path = cloud_mask_path(out / "cloudmask", row["subphase"], row["map_id"])

    ds = read_cloud_mask(path)
    assert ds["cloudy"].dims == ("latitude", "longitude") and ds["cloudy"].shape == (150, 450)  # 0.8°
    np.testing.assert_array_equal(ds["cloudmask"].values, cloud_mask_values(view.cloud, view.valid, 2))
    assert set(np.unique(ds["cloudmask"].values)) <= {INVALID, 0, 1}
    assert 0.01 < float(ds["cloudy"].mean()) < 0.6  # the aphelion belt season has clouds
    # on the map's own grid the mask is the drawn opacity above the threshold, block by block
    cloudy, valid = read_cloud_mask_on(path, MapGrid.moc(0.8))
    block = view.cloud.reshape(150, 2, 450, 2)
    above = (block > 0.2) & view.valid.reshape(150, 2, 450, 2)
    expected = 2 * above.sum(axis=(1, 3)) >= np.maximum(view.valid.reshape(150, 2, 450, 2).sum(axis=(1, 3)), 1)
    np.testing.assert_array_equal(cloudy, expected & valid)


def test_cloud_mask_whose_grid_does_not_fit_its_map_is_an_error_naming_both_files(ci_data, tmp_path):
    from marsdust.data import DustDataset
    from marsdust.mdgm import index_archive

    narrow = MapGrid(30.0, -30.0, 0.8)  # covers only part of the map's 60°S–60°N band
    row = index_archive(ci_data / "archive").iloc[0]
    root = tmp_path / "cloudmask"
    path = write_cloud_mask(cloud_mask_path(root, row["subphase"], row["map_id"]), np.zeros(narrow.shape, np.int16),
                            narrow)
    with pytest.raises(CloudMaskGridError, match="does not match map") as error:
        read_cloud_mask_on(path, MapGrid.moc(1.6), row["path"])
    assert str(path) in str(error.value) and str(row["path"]) in str(error.value)
    dataset = DustDataset(pd.DataFrame([row]), pd.DataFrame(columns=["map_id", "lon", "lat"]), 1.6, "outline",
                          cloud_masks=CloudMasks(root))
    with pytest.raises(CloudMaskGridError) as error:
        dataset.load(0)
    assert str(path) in str(error.value) and str(row["path"]) in str(error.value)


# ------------------------------------------------------------------------------------ cloud instances
def test_cloud_instances_are_connected_across_180_and_small_ones_dropped():
    grid = MapGrid.moc(1.6)
    cloudy = np.zeros(grid.shape, bool)
    cloudy[30:40, :6] = True  # one cloud cut by the map edge
    cloudy[32:38, -5:] = True
    cloudy[60:62, 100:101] = True  # ~2 pixels: below the minimum area
    labels, n = cloud_components(cloudy)
    assert n == 2 and labels[35, 0] == labels[35, -1] != 0
    target = cloud_instances(cloudy, grid)
    assert len(target["boxes"]) == 1 and target["labels"].tolist() == [CLOUD_LABEL]
    x0, y0, x1, y1 = target["boxes"][0]
    assert (x0, y0, x1, y1) == (grid.width - 5, 30, grid.width + 6, 40)  # kept whole across 180°
    assert target["masks"][0].sum() == cloudy[30:40].sum()
    assert target["area_km2"][0] == pytest.approx(grid.mask_area_km2(target["masks"][0].astype(bool)))
    assert abs(target["lon"][0]) > 170


def test_cloud_regions_wider_than_the_limit_are_no_instance():
    from marsdust.train import TrainConfig

    grid = MapGrid.moc(1.6)
    cloudy = np.zeros(grid.shape, bool)
    cloudy[5:10, :] = True  # a polar hood all around the planet
    cloudy[40:50, 100:150] = True  # 80° wide
    assert len(cloud_instances(cloudy, grid)["boxes"]) == 2
    narrow = cloud_instances(cloudy, grid, max_width_deg=90)
    assert narrow["boxes"].tolist() == [[100, 40, 150, 50]]
    assert len(cloud_instances(cloudy, grid, max_width_deg=79)["boxes"]) == 0
    for bad in (0, -5, 400):
        with pytest.raises(ValueError, match="cloud_max_width_deg must be in"):
            TrainConfig(cloud_max_width_deg=bad)


def test_classes_option_parses_and_sets_two_detector_classes():
    from marsdust.train import TrainConfig

    assert parse_classes("dust, cloud") == ("dust", "cloud") and parse_classes(["dust"]) == ("dust",)
    for bad in ("cloud", "dust,dust", "dust,ice", ""):
        with pytest.raises(ValueError, match="classes must be"):
            parse_classes(bad)
    config = TrainConfig.from_dict({"classes": "dust,cloud"})
    assert config.classes == ["dust", "cloud"] and config.detector_overrides()["num_classes"] == 2
    assert TrainConfig().classes == ["dust"] and "num_classes" not in TrainConfig().detector_overrides()


# ---------------------------------------------------------------- two classes: train, detect, evaluate
@pytest.fixture(scope="module")
def two_class_checkpoint(ci_data, tmp_path_factory):
    """A two-class (dust, cloud) small detector trained 2 steps on the ci preset, with its run folder."""
    from marsdust.train import train

    run = tmp_path_factory.mktemp("two_class")
    summary = train(_tiny_config(ci_data, classes=["dust", "cloud"]), run)
    return summary["last_checkpoint"]


def test_two_class_training_records_its_classes_and_builds_cloud_targets(ci_data, two_class_checkpoint):
    from marsdust.data import DustDataset
    from marsdust.mdgm import index_archive
    from marsdust.models import detector_classes, load_model

    model = load_model(two_class_checkpoint)
    assert detector_classes(model) == ("dust", "cloud") and model.config.num_classes == 2
    assert detector_classes(two_class_checkpoint) == ("dust", "cloud")
    index = index_archive(ci_data / "archive")
    aphelion = index[(index["ls"] > 60) & (index["ls"] < 120)].head(1)
    dataset = DustDataset(aphelion, pd.DataFrame(columns=["map_id", "lon", "lat"]), RES_DEG, "outline",
                          cloud_masks=CloudMasks(ci_data / "cloudmask"))
    _, target = dataset[0]
    assert (target["labels"] == CLOUD_LABEL).sum() >= 1 and len(target["masks"]) == len(target["labels"])


def test_maps_without_cloud_masks_train_dust_only_and_the_run_says_how_many(ci_data, tmp_path, caplog):
    from marsdust.data import select_split
    from marsdust.train.config import load_tables, split_for
    from marsdust.train.lightning import DustDataModule

    few = tmp_path / "some_masks"
    for source in sorted((ci_data / "cloudmask").rglob("*.nc"))[:3]:
        target = few / source.parent.name / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    config = _tiny_config(ci_data, classes=["dust", "cloud"], cloud_masks=str(few))
    index_df, storms_df = load_tables(config)
    split_df = split_for(config, index_df)
    with caplog.at_level(logging.INFO, logger="marsdust.train.lightning"):
        module = DustDataModule(config, index_df, storms_df, split_df)
    n_train = len(select_split(index_df, split_df, "train"))
    found = module.train_set.cloud_masks.count(module.train_set.index)
    lines = [r.getMessage() for r in caplog.records if "cloud mask" in r.getMessage()]
    assert lines == [f"classes dust,cloud: {found} of {n_train} training maps have a cloud mask under {few}; "
                     f"the other {n_train - found} train the dust class only"]


def test_two_class_detect_writes_the_class_column_and_a_cloud_cube(ci_data, tmp_path, two_class_checkpoint):
    from marsdust.detect import DetectExecution, DetectSettings, detect_archive

    maps, _ = _few_maps(ci_data, tmp_path)
    out = tmp_path / "out"
    summary = detect_archive(two_class_checkpoint, maps, out, settings=DetectSettings(0.0),
                             execution=DetectExecution(progress=False))
    detections = pd.read_csv(out / "detections.csv", keep_default_na=False)
    assert set(detections["class"]) <= {"dust", "cloud"} and "cloud_masks" in summary.paths
    dust = detections[detections["class"] == "dust"]
    masters = sorted((out / "mdad").glob("MY*/MDAD_MY*_master.csv"))
    assert sum(len(pd.read_csv(m)) for m in masters) == len(dust)  # the MDAD-layout outputs keep dust only
    cubes = sorted((out / "mdad").glob("MY*/MDADMY*.nc"))
    n_steps = 0
    for path in cubes:
        with xr.open_dataset(path) as cube:
            n_steps += cube.sizes["time"]
    with xr.open_dataset(out / "cloud_masks.nc", mask_and_scale=False) as clouds:
        assert clouds.sizes["time"] == n_steps == 3
        labels = clouds["MDAD"].values.copy()
        labels[labels == 255] = 0
        n_clouds = (detections["class"] == "cloud").groupby(detections["map_id"]).sum()
        assert labels.max() == (n_clouds.max() if len(n_clouds) else 0)  # per-map cloud numbers
    assert (detections.loc[detections["class"] == "cloud", "member_id"] == "").all()  # tracking links dust only
    geojson = json.loads((out / "detections.geojson").read_text())
    assert {f["properties"]["class"] for f in geojson["features"]} == set(detections["class"])


def test_one_class_checkpoints_write_dust_in_every_row_and_no_cloud_cube(ci_data, tmp_path):
    from marsdust.detect import DetectExecution, DetectSettings, detect_archive
    from marsdust.models import build_model, detector_classes, save_checkpoint

    # the compact default detector, random weights: it finds (junk) storms at score 0, unlike the tiny one
    model = build_model("dustrcnn", map_res_deg=RES_DEG, backbone_weights=None)
    checkpoint = save_checkpoint(model, tmp_path / "one.ckpt")  # stores no class names, as checkpoints before classes
    assert detector_classes(checkpoint) == ("dust",)
    maps, _ = _few_maps(ci_data, tmp_path, n=2)
    detect_archive(checkpoint, maps, tmp_path / "out", settings=DetectSettings(0.0),
                   execution=DetectExecution(progress=False))
    detections = pd.read_csv(tmp_path / "out" / "detections.csv")
    assert len(detections) and (detections["class"] == "dust").all()
    assert not (tmp_path / "out" / "cloud_masks.nc").exists()


def test_evaluate_reports_per_class_ap_and_dust_false_alarms_on_clouds(ci_data, tmp_path, two_class_checkpoint):
    from marsdust.evaluate import EvaluateOptions, evaluate_checkpoint

    _, index = _few_maps(ci_data, tmp_path, n=2)
    split = tmp_path / "split.csv"
    pd.DataFrame({"map_id": index["map_id"], "split": "test"}).to_csv(split, index=False)
    metrics = evaluate_checkpoint(two_class_checkpoint, tmp_path / "eval", EvaluateOptions(
        data=str(ci_data), split_file=str(split), n_figures=0, n_timed=0, progress=False))
    assert metrics["classes"] == ["dust", "cloud"]
    for name in ("dust", "cloud"):
        assert {"map50", "map75", "n_gt", "n_pred"} <= set(metrics["per_class"][name])
    assert metrics["per_class"]["dust"]["map50"] == metrics["map50"]  # the existing scores are dust's
    on_clouds = metrics["dust_false_alarms_on_clouds"]
    assert on_clouds["n_maps"] == 2 and on_clouds["n_false_alarms_on_clouds"] <= on_clouds["n_false_alarms"]
    ladder = metrics["dust_false_alarms_on_clouds_by_threshold"]
    assert len(ladder) == 19 and all(entry["n_maps"] == 2 for entry in ladder)
    assert [entry["n_detections"] for entry in ladder] == sorted((entry["n_detections"] for entry in ladder), reverse=True)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["per_class"]["cloud"] is not None
