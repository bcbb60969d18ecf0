"""Tests of detect's fast paths: the ONNX Runtime backbone engine (the CPU default), the engine
switch (``auto`` / ``onnx`` / ``torch`` / ``plain``) and ``marsdust export-onnx``.

Equivalence is checked against the model's own eager forward: the pyramid levels within 1e-3 and
the detections of a whole map (scores, boxes, masks) within small tolerances.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from marsdust import detect
from marsdust.grid import MapGrid
from marsdust.mdgm import map_image_from_array
from marsdust.models import build_model, save_checkpoint

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny_settings(tiny_detector):
    """The tiny detector at 0.8° per pixel, keeping up to 10 detections per map."""
    return {**tiny_detector, "box_detections_per_img": 10, "map_res_deg": 0.8}


@pytest.fixture(scope="module")
def tiny_model(tiny_settings):
    torch.manual_seed(0)
    return build_model("dustrcnn", **tiny_settings).eval()


def _map_image(seed: int = 0):
    """A 150 x 450 (0.8°) map with a few bright patches and a missing band."""
    rng = np.random.default_rng(seed)
    grid = MapGrid.moc(0.8)
    rgb = rng.integers(40, 90, grid.shape + (3,), dtype=np.uint8)
    for row, col in ((40, 50), (90, 300), (70, 440)):
        rgb[row:row + 20, col:col + 30] = (250, 220, 190)
    rgb[:, 200:215] = 0
    return map_image_from_array(rgb, grid, "synthetic")


def test_onnx_dense_part_matches_pytorch(tiny_model):
    images = torch.rand(2, 3, 160, 512, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = tiny_model.backbone(images)
        reference_logits, reference_deltas = tiny_model.rpn.head(list(reference.values()))
    levels, (logits, deltas) = detect.OnnxBackbone(tiny_model)(images)
    assert list(levels) == list(reference)
    for key in reference:
        assert levels[key].shape == reference[key].shape
        torch.testing.assert_close(levels[key], reference[key], atol=1e-3, rtol=1e-3)
    for ours, theirs in zip(logits + deltas, reference_logits + reference_deltas):
        torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=1e-3)


def test_an_on_the_fly_export_killed_half_way_leaves_no_file(tmp_path, tiny_model):
    """The ONNX model of a run without --onnx-model is built in memory: no temporary folder to leave behind."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    temp = tmp_path / "tmp"
    temp.mkdir()
    script = ("import torch, sys\nfrom marsdust.models import build_model, TINY_DETECTOR\nfrom marsdust import detect\n"
              "model = build_model('dustrcnn', map_res_deg=0.8, **TINY_DETECTOR).eval()\n"
              "print('exporting', flush=True)\nwhile True:\n    detect.OnnxBackbone(model)\n")
    source = str(Path(detect.__file__).parents[2])  # this checkout's marsdust, also from another folder
    child = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "TMPDIR": str(temp), "PYTHONPATH": source},
                             cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "exporting"
        time.sleep(1.5)  # inside an export (each takes about a second)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    left = [p.name for p in tmp_path.rglob("*") if "marsdust" in p.name or "onnx" in p.name]
    assert left == []  # (onnxruntime and torch keep their own .ses / torchinductor_* in TMPDIR)
    path = detect.export_backbone_onnx(tiny_model, tmp_path / "tiny.onnx")
    assert path.read_bytes() == detect.engines.backbone_onnx_bytes(tiny_model)


@pytest.mark.parametrize("engine", ["onnx", "torch"])
def test_fast_engines_give_the_plain_forwards_detections(tiny_model, engine):
    image = _map_image()
    plain = detect.detect_map(tiny_model, image, map_id="m", settings=detect.DetectSettings(0.0, engine="plain"))
    fast = detect.detect_map(tiny_model, image, map_id="m", settings=detect.DetectSettings(0.0, engine=engine))
    assert plain.n_detections > 0
    assert fast.n_detections == plain.n_detections
    np.testing.assert_allclose(fast.scores, plain.scores, atol=1e-4)
    for a, b in zip(fast.records, plain.records):
        np.testing.assert_allclose([a[k] for k in ("x0", "y0", "x1", "y1")], [b[k] for k in ("x0", "y0", "x1", "y1")],
                                   atol=0.05)
    for a, b in zip(fast.masks, plain.masks):
        union = np.count_nonzero(a | b)
        assert union == 0 or np.count_nonzero(a & b) / union > 0.99


@pytest.mark.parametrize("engine", ["torch", "plain"])
def test_outlines_drawn_in_enlarged_boxes_reach_past_the_detection_box_which_stays(engine):
    """``mask_box_scale``: the mask head outlines in the box grown about its centre and the mask is pasted there, by
    the fast path (``mask_rois``) and the model's own pasting alike; the detection's box is unchanged."""
    from marsdust.models import always_storm_detector

    model = always_storm_detector(0.8).eval()  # its masks fill whatever box they are outlined in
    image, settings = _map_image(), detect.DetectSettings(0.0, engine=engine)
    in_box = detect.detect_map(model, image, map_id="m", settings=settings)  # the detector's own window: 1
    enlarged = detect.detect_map(model, image, map_id="m", settings=dataclasses.replace(settings, mask_box_scale=1.5))
    assert model.roi_heads.mask_box_scale == 1.0  # the setting holds for the call only
    first, wide = in_box.records[0], enlarged.records[0]  # the same top-scoring detection
    assert [first[k] for k in ("x0", "y0", "x1", "y1")] == pytest.approx([wide[k] for k in ("x0", "y0", "x1", "y1")])
    rows, cols = np.nonzero(in_box.masks[0])
    assert rows.min() >= first["y0"] - 1 and rows.max() <= first["y1"] + 1  # 0.8° maps: the grid is the native one
    wide_rows, wide_cols = np.nonzero(enlarged.masks[0])
    height = first["y1"] - first["y0"]
    assert wide_rows.min() < first["y0"] - 0.15 * height or wide_rows.max() > first["y1"] + 0.15 * height
    assert enlarged.masks[0].sum() > 1.5 * in_box.masks[0].sum()
    assert np.all(enlarged.masks[0][in_box.masks[0]])  # the wider outline holds the one in the box


def test_auto_engine_is_onnx_on_cpu_and_env_overrides(tiny_model, monkeypatch):
    monkeypatch.delenv(detect.ENGINE_ENV, raising=False)
    assert detect.resolve_engine(tiny_model, "cpu") == "onnx"
    monkeypatch.setenv(detect.ENGINE_ENV, "plain")
    assert detect.resolve_engine(tiny_model, "cpu") == "plain"
    monkeypatch.setenv(detect.ENGINE_ENV, "fastest")
    with pytest.raises(ValueError, match="MARSDUST_DETECT_ENGINE"):
        detect.resolve_engine(tiny_model, "cpu")
    with pytest.raises(ValueError, match="engine must be one of"):
        detect.resolve_engine(tiny_model, "cpu", "tensorrt")
    with pytest.raises(ValueError, match="CPU only"):
        detect.resolve_engine(tiny_model, "cuda", "onnx")


def test_cached_onnx_backbone_is_rebuilt_when_weights_change(tiny_settings):
    torch.manual_seed(2)
    model = build_model("dustrcnn", **tiny_settings).eval()
    first = detect.onnx_backbone_for(model)
    assert detect.onnx_backbone_for(model) is first
    with torch.no_grad():
        model.backbone.fpn.layer_blocks[0][0].weight.mul_(2.0)  # an optimizer step is in place too
    second = detect.onnx_backbone_for(model)
    assert second is not first
    images = torch.rand(1, 3, 96, 256)
    with torch.inference_mode():
        reference = model.backbone(images)
    torch.testing.assert_close(second(images)[0]["0"], reference["0"], atol=1e-3, rtol=1e-3)


def test_export_onnx_command_writes_a_backbone_detect_uses(tmp_path, tiny_model):
    from typer.testing import CliRunner

    from marsdust.cli import app

    checkpoint = save_checkpoint(tiny_model, tmp_path / "tiny.ckpt")
    onnx_path = tmp_path / "tiny.onnx"
    result = CliRunner().invoke(app, ["export-onnx", str(checkpoint), "-o", str(onnx_path)])
    assert result.exit_code == 0, result.output
    assert onnx_path.is_file() and "max |ONNX Runtime - PyTorch|" in result.output
    image = _map_image(3)
    plain = detect.detect_map(tiny_model, image, map_id="m", settings=detect.DetectSettings(0.0, engine="plain"))
    saved = detect.detect_map(tiny_model, image, map_id="m",
                              settings=detect.DetectSettings(0.0, engine="onnx", onnx_model=onnx_path))
    assert saved.n_detections == plain.n_detections > 0
    np.testing.assert_allclose(saved.scores, plain.scores, atol=1e-4)


def test_onnx_model_with_other_levels_is_refused(tmp_path, tiny_settings, tiny_model):
    other = build_model("dustrcnn", **{**tiny_settings, "anchor_sizes_native_px": (32.0, 64.0, 128.0, 256.0, 512.0)}).eval()
    path = detect.export_backbone_onnx(other, tmp_path / "other.onnx")
    with pytest.raises(ValueError, match="outputs"):
        detect.OnnxBackbone(tiny_model, path)
    with pytest.raises(FileNotFoundError, match="export-onnx"):
        detect.OnnxBackbone(tiny_model, tmp_path / "missing.onnx")


def test_onnx_model_of_another_detector_is_refused(tmp_path, tiny_settings, tiny_model):
    """Same architecture, other weights: the weights digest in the ONNX metadata tells them apart."""
    other = build_model("dustrcnn", **tiny_settings).eval()
    with torch.no_grad():
        next(other.parameters()).add_(0.5)
    path = detect.export_backbone_onnx(other, tmp_path / "other.onnx")
    with pytest.raises(ValueError, match="exported from another detector"):
        detect.OnnxBackbone(tiny_model, path)
    assert detect.OnnxBackbone(other, path).matches(other)


def test_detect_archive_engines_write_the_same_catalog(tmp_path, tiny_model):
    from PIL import Image

    folder = tmp_path / "archive" / "R18"
    folder.mkdir(parents=True)
    rgb_u8 = np.round(np.clip(_map_image(4).rgb, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(rgb_u8, "RGB").save(folder / "r18_001.png")
    (folder / "list_ls.txt").write_text("r18_001 25 180.0\n")
    checkpoint = save_checkpoint(tiny_model, tmp_path / "tiny.ckpt")
    for engine in ("onnx", "plain"):
        detect.detect_archive(checkpoint, tmp_path / "archive", detect.DetectOutputs(tmp_path / engine, track=False),
                              settings=detect.DetectSettings(0.0, engine=engine),
                              execution=detect.DetectExecution(progress=False))
    onnx, plain = (pd.read_csv(tmp_path / engine / "detections.csv") for engine in ("onnx", "plain"))
    assert len(plain) > 1
    # ONNX Runtime's backbone moves scores and boxes in their last bits (about 1e-6) and nothing else:
    # the same rows in the same order, the same outlines, areas and positions
    last_bits = {"score": 1e-4, "x0": 0.05, "y0": 0.05, "x1": 0.05, "y1": 0.05}  # as for one map, above
    pd.testing.assert_frame_equal(onnx.drop(columns=list(last_bits)), plain.drop(columns=list(last_bits)))
    for column, atol in last_bits.items():
        np.testing.assert_allclose(onnx[column], plain[column], rtol=0, atol=atol, err_msg=column)
    pd.testing.assert_frame_equal(*(pd.read_csv(tmp_path / engine / "maps.csv").drop(columns="seconds")
                                    for engine in ("onnx", "plain")))
