"""The benchmark scripts refuse what they cannot run with one line that says why, before any work."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    """benchmarks/<name>.py as a module (its siblings importable, as when run as a script)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_compare_refuses_a_data_folder_that_is_neither_data_nor_a_preset_name(tmp_path):
    with pytest.raises(SystemExit, match=r"nowhere has no archive/ and mdad/, and its name is not a synth preset "
                                         r"\(.*bench.*\)"):
        load("bench_compare").main(["--max-steps", "2", "--data", str(tmp_path / "nowhere"),
                                    "--out", str(tmp_path / "out")])
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "out").exists()


def test_bench_cross_camera_refuses_adabn_for_a_unet_a_zero_budget_and_a_share_outside_0_1(tmp_path):
    bench = load("bench_cross_camera")
    out = ["--out", str(tmp_path / "out"), "--data-root", str(tmp_path / "data")]
    with pytest.raises(SystemExit, match="AdaBN \\(marsdust adapt\\) does not adapt unet; add --no-adabn"):
        bench.main(["--model", "unet", *out])
    with pytest.raises(SystemExit, match="--steps must be at least 1, got 0"):
        bench.main(["--steps", "0", *out])
    with pytest.raises(SystemExit, match="--random-look is a share of the maps, 0 to 1; got 1.5"):
        bench.main(["--random-look", "1.5", *out])
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()


def test_bench_cross_camera_self_trains_only_where_the_test_maps_look_unlike_the_training_maps():
    adaptations_for = load("bench_cross_camera").adaptations_for
    assert adaptations_for("same camera", False, 150) == ["none"]
    assert adaptations_for("cross camera", True, 150) == ["none", "adabn", "self-training"]
    assert adaptations_for("second look, same camera", False, 150) == ["none", "self-training"]
    assert adaptations_for("both cameras trained", False, 150) == ["none"]
    assert adaptations_for("second look, both cameras trained", False, 0) == ["none"]


def test_outline_window_refuses_a_missing_checkpoint_and_windows_narrower_than_the_box(tmp_path, capsys):
    bench = load("outline_window")
    data = ["--data", str(tmp_path), "--split-file", str(tmp_path / "split.csv"), "--csv", str(tmp_path / "w.csv")]
    with pytest.raises(SystemExit):
        bench.main([str(tmp_path / "none.ckpt"), *data])
    assert "none.ckpt does not exist" in capsys.readouterr().err
    (tmp_path / "model.ckpt").write_bytes(b"")
    with pytest.raises(SystemExit):
        bench.main([str(tmp_path / "model.ckpt"), "--scales", "0.8", "1.2", *data])
    assert "--scales must lie in [1, 3] (times the box), got [0.8, 1.2]" in capsys.readouterr().err
    assert not (tmp_path / "w.csv").exists()


@pytest.mark.parametrize("model_name", ["fasterrcnn", "unet"])
def test_outline_window_refuses_a_detector_that_outlines_no_storms_in_boxes(tmp_path, model_name):
    from marsdust.models import TINY_DETECTOR, build_model, save_checkpoint

    checkpoint = save_checkpoint(build_model(model_name, **{**TINY_DETECTOR, "map_res_deg": 1.6}), tmp_path / "m.ckpt")
    with pytest.raises(SystemExit, match=f"m.ckpt: {model_name} does not outline storms in boxes"):
        load("outline_window").main([str(checkpoint), "--data", str(tmp_path), "--split-file", str(tmp_path / "s.csv"),
                                     "--csv", str(tmp_path / "w.csv")])
    assert not (tmp_path / "w.csv").exists()
