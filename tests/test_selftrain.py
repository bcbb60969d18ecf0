"""marsdust.selftrain: pseudo-labels from a teacher's detections, and a student trained on them from its weights."""

import pandas as pd
import pytest

from marsdust.mdad import read_catalog
from marsdust.mdgm import index_archive
from marsdust.models import TINY_DETECTOR, build_model, read_checkpoint, save_checkpoint
from marsdust.models.known_output import always_storm_detector
from marsdust.selftrain import pseudo_catalog, pseudo_split, self_train, student_config


def detections_of(maps: pd.DataFrame) -> pd.DataFrame:
    first, second = maps["map_id"].iloc[0], maps["map_id"].iloc[1]
    square = "POLYGON ((10 0, 14 0, 14 4, 10 4, 10 0))"
    return pd.DataFrame({"map_id": [first, first, second, second], "lon": [12.0, -40.0, 12.0, 90.0],
                         "lat": [2.0, 10.0, 2.0, -20.0], "area_km2": [5e4, 6e4, 5e4, 7e4],
                         "score": [0.9, 0.95, 0.4, 0.8], "polygon_wkt": [square] * 4,
                         "class": ["dust", "dust", "dust", "cloud"]})


def test_pseudo_catalog_keeps_confident_dust_detections_as_a_storm_table_that_reads_back(tmp_path, ci_data):
    from marsdust.mdad import save_catalog

    maps = index_archive(ci_data / "archive")
    table = pseudo_catalog(detections_of(maps), maps, min_score=0.7)
    assert list(table["map_id"]) == [maps["map_id"].iloc[0]] * 2  # 0.4 too low, the cloud not dust
    first = maps.iloc[0]
    assert list(table["member_id"]) == [f"{first['subphase']}_001", f"{first['subphase']}_002"]
    assert (table["sol"] == first["sol"]).all() and (table["confidence"] == 100).all()
    save_catalog(table, tmp_path / "pseudo.csv")
    again = read_catalog(tmp_path / "pseudo.csv")  # the catalogue reader takes it, outlines included
    assert list(again["map_id"]) == list(table["map_id"]) and again["polygon_wkt"].notna().all()
    with pytest.raises(ValueError, match="maps the target archive does not hold: nowhere_001"):
        pseudo_catalog(detections_of(maps).assign(map_id="nowhere_001"), maps, 0.5)
    with pytest.raises(ValueError, match="min_score must be a score in"):
        pseudo_catalog(detections_of(maps), maps, 1.5)


def test_pseudo_split_trains_on_every_map_but_a_validation_tenth():
    maps = pd.DataFrame({"map_id": [f"m{i:02d}" for i in range(30)], "mars_year": 29, "ls": range(30)})
    split = pseudo_split(maps, 0.1, seed=3)
    assert split["split"].value_counts().to_dict() == {"train": 27, "val": 3}
    assert split.equals(pseudo_split(maps, 0.1, seed=3))
    assert (pseudo_split(maps.head(2), 0.1)["split"] == "val").sum() == 1
    part = pseudo_split(maps, 0.1, target_ids=[f"m{i:02d}" for i in range(20, 30)])
    assert part["split"].value_counts().to_dict() == {"unused": 20, "train": 9, "val": 1}
    assert (part["split"].iloc[:20] == "unused").all()


def test_student_starts_from_the_teacher_and_learns_from_its_pseudo_labels(tmp_path, ci_data, ci_threads):
    teacher = save_checkpoint(always_storm_detector(), tmp_path / "teacher.ckpt", score_threshold=0.5,
                              reference_dropout=0.0)
    maps = index_archive(ci_data / "archive")
    later = maps.iloc[len(maps) // 2:]  # a target period: the archive's second half
    result = self_train(teacher, ci_data / "archive", tmp_path / "st", maps=list(later["path"]), steps=2,
                        min_score=0.5, progress=False, batch_size=2, num_workers=0, threads=ci_threads)
    assert result["n_maps"] == len(later)
    detections = pd.read_csv(result["teacher_detections"])
    assert set(detections["map_id"]) <= set(later["map_id"])
    split = pd.read_csv(tmp_path / "st" / "data" / "split.csv")
    assert set(split.loc[split["split"] != "unused", "map_id"]) == set(later["map_id"])
    assert result["n_pseudo_labels"] == int((detections["score"] >= 0.5).sum()) > 0
    labels = read_catalog(tmp_path / "st" / "data" / "mdad" / "pseudo_labels.csv")
    assert len(labels) == result["n_pseudo_labels"] and labels["polygon_wkt"].notna().all()
    student = read_checkpoint(result["checkpoint"])
    source = read_checkpoint(teacher)
    assert student["model_name"] == source["model_name"] == "dustrcnn"
    assert student["model_config"] == source["model_config"]
    moved = {name: float((student["state_dict"][name] - value).abs().max())
             for name, value in source["state_dict"].items() if value.dtype.is_floating_point and "running" not in name}
    assert max(moved.values()) > 0  # trained ...
    assert max(moved.values()) < 0.01  # ... from the teacher's weights: two AdamW steps of lr <= 5e-4 move each little
    assert result["train"]["global_step"] == 2


def test_init_weights_of_another_network_or_shape_is_a_clear_error(tmp_path, ci_data):
    from marsdust.train import TrainConfig, build_module
    from marsdust.train.run import load_initial_weights

    other = save_checkpoint(build_model("fasterrcnn", **{**TINY_DETECTOR, "map_res_deg": 1.6}), tmp_path / "f.ckpt")
    module = build_module(student_config(other, ci_data, "split.csv", 1, model="dustrcnn"))
    with pytest.raises(ValueError, match=r"f\.ckpt: init_weights holds a fasterrcnn detector; this run trains dustrcnn"):
        load_initial_weights(module, other)
    wider = save_checkpoint(build_model("dustrcnn", **{**TINY_DETECTOR, "map_res_deg": 1.6, "fpn_channels": 16}),
                            tmp_path / "w.ckpt")
    narrow = TrainConfig(data=str(ci_data), model="dustrcnn", model_preset=None,
                         model_config={**TINY_DETECTOR}, map_res_deg=1.6, reference="none")
    with pytest.raises(ValueError, match=r"w\.ckpt: its weights do not fit this run's dustrcnn"):
        load_initial_weights(build_module(narrow), wider)


def test_self_train_command_names_a_bad_checkpoint_and_writes_nothing(tmp_path, ci_data):
    from typer.testing import CliRunner

    from marsdust.cli import app

    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(app, ["self-train", str(bad), str(ci_data / "archive"), "-o", str(tmp_path / "st"),
                                      "--quiet"])
    assert result.exit_code == 1, result.output
    assert "broken.ckpt" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "st" / "data").exists()


def test_self_train_refuses_target_maps_outside_its_archive_and_a_bad_validation_fraction(tmp_path, ci_data):
    with pytest.raises(ValueError, match=r"archive: none of the 1 target maps is in the archive"):
        self_train(tmp_path / "teacher.ckpt", ci_data / "archive", tmp_path / "st", maps=[tmp_path / "elsewhere.png"])
    assert not (tmp_path / "st").exists()
    maps = pd.DataFrame({"map_id": ["m0", "m1"], "mars_year": 29, "ls": [0.0, 1.0]})
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\), got 1.0"):
        pseudo_split(maps, 1.0)


def test_write_pseudo_data_names_a_target_archive_that_is_not_a_folder(tmp_path):
    from marsdust.selftrain import write_pseudo_data

    with pytest.raises(FileNotFoundError, match=r"nowhere: the target archive must be a folder of maps"):
        write_pseudo_data(pd.DataFrame(), tmp_path / "nowhere", tmp_path / "data")
    assert not (tmp_path / "data").exists()
