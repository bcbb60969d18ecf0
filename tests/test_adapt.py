"""marsdust.adapt: AdaBN re-estimates the backbone's BatchNorm statistics on target maps and records it."""

import pytest
import torch
from typer.testing import CliRunner

from marsdust.adapt import AdaptationError, adapt_checkpoint, batch_norm_layers, detector_inputs, spread_in_time
from marsdust.cli import app
from marsdust.detect.inputs import resolve_maps
from marsdust.models import TINY_DETECTOR, build_model, load_model, read_checkpoint, save_checkpoint


def tiny(norm: str):
    torch.manual_seed(0)
    return build_model("dustrcnn", **{**TINY_DETECTOR, "norm": norm, "map_res_deg": 1.6}).eval()


def test_adabn_running_stats_become_the_target_maps_statistics(tmp_path, ci_data, ci_threads):
    model = tiny("batch")
    source = save_checkpoint(model, tmp_path / "source.ckpt", score_threshold=0.4)
    first = batch_norm_layers(model)[0]  # the stem's BatchNorm, right after conv1
    before = first.running_mean.clone()
    out = adapt_checkpoint(source, ci_data / "archive", tmp_path / "adapted.ckpt", n_maps=3)

    adapted = load_model(out)
    chosen = spread_in_time(resolve_maps(ci_data / "archive"), 3)
    per_map_means = []
    with torch.no_grad():  # the target statistics, computed directly: conv1 output of each map's tiles
        for row in chosen.itertuples():
            batch, _ = model.transform(detector_inputs(model, row, None))
            per_map_means.append(model.backbone.body.conv1(batch.tensors).mean(dim=(0, 2, 3)))
    expected = torch.stack(per_map_means).mean(dim=0)
    got = batch_norm_layers(adapted)[0].running_mean
    assert not torch.allclose(before, got)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert batch_norm_layers(adapted)[0].momentum == first.momentum  # the layer's own momentum kept
    for name, value in model.state_dict().items():  # learnt weights unchanged
        if "running" not in name and "num_batches" not in name:
            assert torch.equal(value, adapted.state_dict()[name]), name
    extra = read_checkpoint(out)["extra"]
    assert extra["score_threshold"] == 0.4
    record = extra["adaptation"]
    assert record["method"] == "adabn" and record["n_maps"] == 3 and record["map_ids"] == list(chosen["map_id"])
    assert record["target_archive"].endswith("archive") and record["source_checkpoint"].endswith("source.ckpt")
    assert record["date_utc"].startswith("20")


def test_spread_in_time_picks_evenly_spaced_maps():
    import pandas as pd

    maps = pd.DataFrame({"map_id": [f"m{i}" for i in range(10)]})
    assert list(spread_in_time(maps, 3)["map_id"]) == ["m0", "m4", "m9"]
    assert len(spread_in_time(maps, None)) == 10 and len(spread_in_time(maps, 50)) == 10
    with pytest.raises(AdaptationError, match="at least 1"):
        spread_in_time(maps, 0)


def test_group_norm_detector_is_refused():
    with pytest.raises(AdaptationError, match="no BatchNorm running statistics"):
        batch_norm_layers(tiny("group"))


def test_cli_adapt_refuses_a_group_norm_checkpoint_and_a_missing_archive(tmp_path, ci_data):
    group = save_checkpoint(tiny("group"), tmp_path / "group.ckpt")
    result = CliRunner().invoke(app, ["adapt", str(group), str(ci_data / "archive"), "-o", str(tmp_path / "a.ckpt")])
    assert result.exit_code != 0 and "BatchNorm" in result.output
    batch = save_checkpoint(tiny("batch"), tmp_path / "batch.ckpt")
    result = CliRunner().invoke(app, ["adapt", str(batch), str(tmp_path / "nowhere"), "-o", str(tmp_path / "a.ckpt")])
    assert result.exit_code != 0 and "nowhere" in result.output
    assert not (tmp_path / "a.ckpt").exists()
