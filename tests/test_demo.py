"""``marsdust demo`` end to end on the small ``ci`` preset with a few training steps.

The demo's own budget (800 steps on the two-camera ``twocam`` preset, minutes) is measured by running it
(README); here the pipeline's wiring is checked: every product is written, a finished run with
the same settings is reused, and another step budget trains afresh on the same data.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from marsdust.cli import app
from marsdust.demo import _synthesize_once, _train_once, demo_reference

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _ci_threads(ci_threads):
    """torch on CI's threads (see conftest.ci_threads)."""


def _demo(out, steps: int) -> list[str]:
    result = CliRunner().invoke(app, ["demo", "-o", str(out), "--preset", "ci", "--max-steps", str(steps), "--quiet"])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_demo_writes_its_products_reuses_finished_steps_and_retrains_for_another_budget(tmp_path):
    out = tmp_path / "demo"
    lines = _demo(out, 2)  # the demo validates every max_steps // 3 steps: here after each step
    assert any("box mAP25" in line for line in lines)
    for path in ("model.ckpt", "data/synth_done.json", "run/checkpoints/last.ckpt", "report/summary.md",
                 "report/catalog/detections.csv", "report/eval/metrics.json",
                 "report/figures/detections.png", "report/climatology/ls_lat.png",
                 "report/climatology/detected_vs_catalogued.csv", "report/climatology/members.csv"):
        assert (out / path).is_file(), path
    assert list((out / "report" / "catalog" / "mdad").glob("MY*/MDADMY*.nc"))  # one MDAD v1.1 cube per Mars year
    metrics = json.loads((out / "report" / "eval" / "metrics.json").read_text())
    assert {"map25", "map50", "map75"} <= set(metrics)
    summary = (out / "report" / "summary.md").read_text()
    assert "trained for 2 steps" in summary
    assert "climatology/ls_lat.png" in summary and "IDF1" in summary and "test maps not scored)" in summary
    assert list(pd.read_csv(out / "report" / "catalog" / "detections.csv").columns[:3]) == ["map_id", "mars_year", "ls"]

    synth_stamp = (out / "data" / "synth_done.json").stat().st_mtime_ns
    done_stamp = (out / "run" / "done.json").stat().st_mtime_ns
    _synthesize_once(out / "data", "ci", 0, progress=False)  # the same settings: data and run are reused
    reused = _train_once(out / "data", out / "run", "ci", 2, 0, False, *demo_reference(None, None, None), "auto")
    assert reused["global_step"] == 2
    assert (out / "data" / "synth_done.json").stat().st_mtime_ns == synth_stamp
    assert (out / "run" / "done.json").stat().st_mtime_ns == done_stamp

    _demo(out, 1)  # another budget: the run is made afresh, the data reused
    assert (out / "data" / "synth_done.json").stat().st_mtime_ns == synth_stamp
    assert json.loads((out / "run" / "done.json").read_text())["global_step"] == 1
    assert "trained for 1 step" in (out / "report" / "summary.md").read_text()


def test_the_demo_reference_defaults_fit_its_sparse_archive_and_given_values_win():
    from marsdust.demo import demo_reference

    config, dropout = demo_reference(None, None, None)
    assert (config.kind, config.sols, dropout) == ("prior-median", 60, 0.0)  # pairs of sols 37-45 sols apart
    config, dropout = demo_reference("prior-median", 20, 0.2)
    assert (config.kind, config.sols, dropout) == ("prior-median", 20, 0.2)
    config, dropout = demo_reference("none", None, None)
    assert config.kind == "none" and dropout == 0.0
    with pytest.raises(ValueError, match="reference_dropout must be a probability"):
        demo_reference("prior-median", 20, 1.5)


def test_demo_command_stops_on_a_bad_reference_before_any_work(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "-o", str(out), "--reference", "yesterday", "--quiet"])
    assert result.exit_code == 2
    assert "reference must be one of none, prior-median, got 'yesterday'" in result.output
    assert not (out / "data").exists()  # nothing synthesized


def test_the_demo_trains_on_both_cameras_and_its_summary_says_on_what(tmp_path):
    from marsdust.demo import DEMO_PRESET, _data_lines
    from marsdust.synth.presets import get_preset

    cameras = get_preset(DEMO_PRESET).cameras  # both cameras, outlines (cubes) for the MARCI years only
    assert [(epoch.camera.name, epoch.write_cubes) for epoch in cameras] == [("moc", False), ("marci", True)]
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame({"mars_year": [25, 27, 28, 29, 32], "label_source": ["area_box", "area_box", "outline", "outline",
                                                                      "outline"],
                  "mask_target": [False, False, True, True, True], "n_maps": 1, "n_instances": [4, 5, 6, 7, 8],
                  "train": [3, 5, 6, 7, 0], "val": [1, 0, 0, 0, 0], "test": [0, 0, 0, 0, 8], "unused": 0}
                 ).to_csv(run / "label_sources.csv", index=False)
    pd.DataFrame({"map_id": ["a", "b", "c", "d"], "split": ["train", "test", "test", "val"],
                  "mars_year": [25, 32, 32, 29], "ls": [10.0, 300.4, 2.6, 50.0]}).to_csv(run / "split.csv", index=False)
    lines = _data_lines(run)
    assert lines[0].startswith("- training storms: 8 as area-sized boxes (v1.0 table, no mask target), MY25–MY27; "
                               "13 as outlines (v1.1 cubes), MY28–MY29")
    assert lines[1] == "- test sols: MY32 Ls3 – MY32 Ls300, never trained on"


def test_the_summary_gives_pixel_scores_at_the_outline_threshold_and_at_the_detection_threshold_beside():
    from marsdust.demo import _pixel_lines

    pixel = {"n_maps": 30, "iou": 0.712, "dice": 0.83, "threshold": 0.35,
             "threshold_source": "chosen on validation maps (best pixel IoU)",
             "at_detection_threshold": {"threshold": 0.7, "iou": 0.459, "dice": 0.63}}
    line = _pixel_lines(pixel)[-1]
    assert line.startswith("Dust pixels against the catalogued outlines on the 30 test maps that have them: IoU 0.712, "
                           "Dice 0.830 at score >= 0.35, the outline threshold (best pixel IoU on the validation sols)")
    assert line.endswith("; at the detection threshold 0.70: IoU 0.459, Dice 0.630.")
    shares = {"overlap": 0.712, "missed_regions": 0.05, "false_alarm_regions": 0.01, "edge_missed": 0.18,
              "edge_extra": 0.048}
    assert _pixel_lines({**pixel, "union_shares": shares})[-1].endswith(
        "Dice 0.630. Of the pixels either side calls dust, 71.2 % agree, 5.0 % lie in catalogued storms no detection "
        "touches, 1.0 % in detections that touch no catalogued storm, 18.0 % inside a found storm's outline but not "
        "the detected one, and 4.8 % inside the detected outline but not the catalogued one.")
    older = {**pixel, "threshold": 0.7, "threshold_source": "the detection threshold (the checkpoint stores no "
             "outline threshold)"}
    assert _pixel_lines(older)[-1].endswith("at score >= 0.70, the detection threshold.")
    assert _pixel_lines({"n_maps": 0, "iou": float("nan")}) == []  # no test map with outline truth: no line
