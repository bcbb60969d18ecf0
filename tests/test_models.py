"""Tests of marsdust.models: the four detectors, losses, checkpoints, the `marsdust models` command."""

from __future__ import annotations

import logging
import random

import pytest
import torch
import typer
import yaml
from torchvision.ops import box_iou
from typer.testing import CliRunner

from marsdust.models import (
    MODEL_PRESET_DESCRIPTIONS,
    MODEL_PRESETS,
    CheckpointError,
    DetectorConfig,
    available_models,
    build_model,
    dice_loss,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from marsdust.models.losses import boundary_loss, mask_edges

MODEL_NAMES = ["dustrcnn", "maskrcnn", "fasterrcnn", "sppnet"]
TINY = dict(
    backbone="resnet18",
    backbone_weights=None,
    norm="batch",  # GroupNorm's CPU kernels are slower on these tiny inputs
    fpn_channels=16,
    mask_head_channels=16,
    representation_size=64,
    rpn_pre_nms_top_n_train=100,
    rpn_post_nms_top_n_train=50,
    rpn_pre_nms_top_n_test=50,
    rpn_post_nms_top_n_test=20,
    box_batch_size_per_image=32,
    rpn_batch_size_per_image=64,
    box_detections_per_img=10,
)


@pytest.fixture(autouse=True)
def _ci_threads(ci_threads):
    """Every test here runs torch on CI's threads (see conftest.ci_threads)."""


def blob_sample(
    generator: torch.Generator,
    bands: int = 3,
    height: int = 64,
    width: int = 64,
    n_blobs: int = 1,
    half_axes_px: tuple[int, int] = (6, 14),
):
    """A dark noisy image with ``n_blobs`` bright, separate elliptical blobs.

    Half axes are drawn in ``half_axes_px`` (pixels). Returns (image (bands, H, W) in [0, 1],
    target with ``boxes`` x0 y0 x1 y1 px, ``labels`` and ``masks``).
    """
    image = 0.1 + 0.05 * torch.rand(bands, height, width, generator=generator)
    rows = torch.arange(height).view(-1, 1).float()
    cols = torch.arange(width).view(1, -1).float()
    masks, boxes = [], []
    for _ in range(50 * n_blobs):
        if len(boxes) == n_blobs:
            break
        half_h, half_w = (float(torch.randint(*half_axes_px, (1,), generator=generator)) for _ in range(2))
        cy = float(torch.randint(int(half_h) + 2, height - int(half_h) - 2, (1,), generator=generator))
        cx = float(torch.randint(int(half_w) + 2, width - int(half_w) - 2, (1,), generator=generator))
        inside = ((rows - cy) / half_h) ** 2 + ((cols - cx) / half_w) ** 2 <= 1.0
        margin = ((rows - cy) / (half_h + 3)) ** 2 + ((cols - cx) / (half_w + 3)) ** 2 <= 1.0
        if any((margin & m.bool()).any() for m in masks):
            continue  # keep blobs (and their boxes' neighbourhoods) apart
        image[:, inside] = 0.9
        ys, xs = torch.where(inside)
        boxes.append([xs.min().item(), ys.min().item(), xs.max().item() + 1.0, ys.max().item() + 1.0])
        masks.append(inside.to(torch.uint8))
    assert len(boxes) == n_blobs, "could not place the blobs apart; use a larger image"
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.ones(len(boxes), dtype=torch.int64),
        "masks": torch.stack(masks),
    }
    return image, target


# ---------------------------------------------------------------------------------------- losses
def test_dice_loss_is_zero_for_perfect_mask_and_one_for_disjoint():
    target = torch.zeros(2, 28, 28)
    target[0, 5:20, 5:20] = 1
    target[1, 10:12, 3:25] = 1
    assert dice_loss(target.clone(), target).item() == pytest.approx(0.0, abs=1e-7)
    disjoint = 1.0 - target
    assert dice_loss(disjoint, target, smooth=0.0).item() == pytest.approx(1.0, abs=1e-6)


def test_dice_loss_has_finite_gradient_for_empty_masks():
    logits = torch.zeros(3, 28, 28, requires_grad=True)
    loss = dice_loss(logits.sigmoid(), torch.zeros(3, 28, 28))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    empty = torch.zeros(0, 28, 28, requires_grad=True)
    assert dice_loss(empty, torch.zeros(0, 28, 28)).item() == 0.0


def test_boundary_targets_are_the_mask_edges():
    mask = torch.zeros(1, 10, 10)
    mask[0, 2:8, 2:8] = 1
    edges = mask_edges(mask)[0]
    assert edges[2, 2:8].all() and edges[7, 2:8].all() and edges[2:8, 2].all()
    assert not edges[3:7, 3:7].any() and not edges[0].any()
    logits = torch.zeros(1, 10, 10, requires_grad=True)
    boundary_loss(logits, mask).backward()
    assert torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------------------------------- config
def test_config_scales_anchors_to_working_resolution_and_rejects_bad_fields():
    assert DetectorConfig().anchor_sizes_px == (8.0, 16.0, 32.0, 64.0)
    assert DetectorConfig(map_res_deg=0.1).anchor_sizes_px == (32.0, 64.0, 128.0, 256.0)
    assert DetectorConfig(in_channels=5).band_mean[3:] == [0.449, 0.449]
    with pytest.raises(ValueError, match="backbone"):
        DetectorConfig(backbone="vgg16")
    with pytest.raises(ValueError, match="image_mean"):
        DetectorConfig(in_channels=4, image_mean=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="unknown detector config keys"):
        DetectorConfig.from_dict({"fpn_chanels": 64})
    with pytest.raises(ValueError, match=r"mask_box_scale must be in \[1, 3\] \(times the box\), got 0.8"):
        DetectorConfig(mask_box_scale=0.8)
    with pytest.raises(ValueError, match="unknown detector"):
        build_model("yolo")


def test_model_carries_name_resolved_config_and_paper_rpn():
    model = build_model("dustrcnn", **{**TINY, "norm": "auto"})
    assert model.model_name == "dustrcnn"
    assert model.config.norm == "group"  # random init -> GroupNorm
    generator = model.rpn.anchor_generator
    assert [s[0] for s in generator.sizes] == [8.0, 16.0, 32.0, 64.0]
    assert generator.aspect_ratios[0] == (0.5, 1.0, 2.0)
    assert model.rpn.proposal_matcher.high_threshold == 0.7 and model.rpn.proposal_matcher.low_threshold == 0.3
    wide = build_model("fasterrcnn", **{**TINY, "anchor_sizes_native_px": (32, 64, 128, 256, 512)})
    assert [s[0] for s in wide.rpn.anchor_generator.sizes][-1] == 128.0


def test_transform_does_not_rescale_images():
    model = build_model("fasterrcnn", **TINY).eval()
    batch, _ = model.transform([torch.rand(3, 300, 900)])
    assert batch.image_sizes == [(300, 900)]


# ---------------------------------------------------------------------------------------- interface
@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("bands", [3, 5])
def test_each_detector_trains_one_step_and_infers(name, bands):
    generator = torch.Generator().manual_seed(1)
    samples = [blob_sample(generator, bands, 64, 96) for _ in range(2)]
    model = build_model(name, in_channels=bands, **TINY)
    model.train()
    losses = model([s[0] for s in samples], [s[1] for s in samples])
    expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    if name in ("dustrcnn", "maskrcnn"):
        expected.add("loss_mask")
    if name == "dustrcnn":
        expected.add("loss_boundary")
    assert set(losses) == expected
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.inference_mode():
        (out,) = model([samples[0][0]])
    assert out["boxes"].shape[1] == 4 and len(out["scores"]) == len(out["labels"]) <= model.config.box_detections_per_img
    if name in ("dustrcnn", "maskrcnn"):
        assert out["masks"].shape[1:] == (1, 64, 96)
    else:
        assert "masks" not in out


def test_channels_last_inference_matches():
    torch.manual_seed(0)
    model = build_model("dustrcnn", **{**TINY, "box_score_thresh": 0.0}).eval()
    image = torch.rand(3, 64, 96)
    with torch.inference_mode():
        reference = model([image])[0]
        model = model.to(memory_format=torch.channels_last)
        nhwc = image.unsqueeze(0).contiguous(memory_format=torch.channels_last)[0]  # HWC-strided CHW view
        fast = model([nhwc])[0]
    assert torch.allclose(reference["scores"], fast["scores"], atol=1e-4)
    assert torch.allclose(reference["boxes"], fast["boxes"], atol=1e-2)


def test_missing_imagenet_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_model("fasterrcnn", **{**TINY, "backbone_weights": str(tmp_path / "nope.pth")})


def test_local_imagenet_weights_are_loaded(tmp_path, caplog):
    import torchvision

    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="marsdust.models.backbone"):
        model = build_model("fasterrcnn", **{**TINY, "backbone_weights": str(path), "norm": "auto", "in_channels": 4})
    assert model.config.norm == "frozen_bn"
    conv1 = model.backbone.body.conv1.weight
    assert conv1.shape[1] == 4
    assert torch.allclose(conv1[:, :3], resnet.conv1.weight * 0.75)
    assert torch.equal(model.backbone.body.layer1[0].conv1.weight, resnet.layer1[0].conv1.weight)
    assert "ImageNet weights" in caplog.text


def test_random_init_is_announced_only_when_it_was_not_asked_for(monkeypatch, tmp_path, caplog):
    from marsdust.models import backbone

    monkeypatch.setattr(backbone, "hub_cache_path", lambda name: tmp_path / "hub" / f"{name}.pth")  # no weights there
    monkeypatch.setattr(backbone, "_said_random_init", False)
    with caplog.at_level(logging.WARNING, logger="marsdust.models.backbone"):
        build_model("fasterrcnn", **{**TINY, "backbone_weights": None})  # random init asked for: nothing to say
        assert "random weights" not in caplog.text
        build_model("fasterrcnn", **{**TINY, "backbone_weights": "auto"})  # ImageNet weights wanted, none found
    assert "starts from random weights" in caplog.text


# ---------------------------------------------------------------------------------------- checkpoints
def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_model("dustrcnn", **{**TINY, "in_channels": 4, "box_score_thresh": 0.0}).eval()
    path = save_checkpoint(model, tmp_path / "run" / "model.ckpt", step=7)
    assert not list((tmp_path / "run").glob("*.tmp"))
    loaded = load_model(path)
    assert loaded.model_name == "dustrcnn" and loaded.config.in_channels == 4 and not loaded.training
    assert loaded.checkpoint_extra == {"step": 7}
    image = torch.rand(4, 64, 96)
    with torch.inference_mode():
        a, b = model([image])[0], loaded([image])[0]
    assert len(a["boxes"]) > 0
    for key in ("boxes", "scores", "labels", "masks"):
        assert torch.equal(a[key], b[key]), key


def test_lightning_style_checkpoint_is_accepted(tmp_path):
    model = build_model("sppnet", **TINY).eval()
    path = tmp_path / "lightning.ckpt"
    torch.save(
        {
            "epoch": 1,
            "global_step": 10,
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"model_name": "sppnet", "model_config": model.config.to_dict(), "lr": 1e-4},
        },
        path,
    )
    loaded = load_model(path)
    assert loaded.model_name == "sppnet"
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


def test_checkpoint_holding_python_objects_loads_only_when_trusted(tmp_path):
    import os
    import subprocess
    import sys

    from lightning.fabric.utilities.data import AttributeDict  # older Lightning wrote hparams like this

    model = build_model("sppnet", **TINY).eval()
    path = tmp_path / "pickled $(touch PWNED) it's.ckpt"  # the advice must not run what a file name holds
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": AttributeDict(model_name="sppnet", model_config=model.config.to_dict())}, path)
    with pytest.raises(CheckpointError, match="it's.ckpt: holds Python objects.*trust_pickle=True") as refused:
        load_model(path)
    command = str(refused.value).split("convert it once: ", 1)[1]
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}"}
    subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, check=True, timeout=120)  # runs as printed
    assert not (tmp_path / "PWNED").exists()
    assert path.with_name(f"{path.stem}-converted.ckpt").is_file()
    converted = save_checkpoint(load_model(path, trust_pickle=True), tmp_path / "converted.ckpt")
    torch.load(converted, weights_only=True)  # the converted file needs no trust
    reloaded = load_model(converted).state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded[key])


def test_checkpoint_metadata_reads_a_file_once_until_it_is_rewritten(tmp_path, checkpoint_reads):
    from marsdust.models import checkpoint_metadata, detector_classes, stored_outline_threshold, stored_score_threshold

    path = save_checkpoint(build_model("fasterrcnn", **TINY), tmp_path / "model.ckpt", score_threshold=0.4)
    reads = checkpoint_reads
    assert stored_score_threshold(path) == 0.4 and stored_outline_threshold(path) is None
    assert detector_classes(path) == ("dust",) and len(reads) == 1
    checkpoint_metadata(path)["extra"]["score_threshold"] = 0.9  # a caller's change does not reach the cache
    assert stored_score_threshold(path) == 0.4 and len(reads) == 1
    save_checkpoint(build_model("fasterrcnn", **TINY), path, score_threshold=0.7)  # replaced: read again
    assert stored_score_threshold(path) == 0.7 and len(reads) == 2
    assert set(checkpoint_metadata(path)) == {"model_name", "model_config", "extra"}
    with pytest.raises(CheckpointError, match="missing.ckpt: no such checkpoint file"):
        checkpoint_metadata(tmp_path / "missing.ckpt")


def test_bad_checkpoints_raise_checkpoint_error_naming_the_file(tmp_path):
    model = build_model("fasterrcnn", **TINY)
    good = save_checkpoint(model, tmp_path / "good.ckpt")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:4000])
    with pytest.raises(CheckpointError, match="truncated.ckpt"):
        load_model(truncated)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.ckpt"):
        load_model(garbage)
    for number, content in enumerate([b"", b"\x80", b"\x80\x02}q", b"PK\x03\x04", b"\x80\x02\x8a\x0a"]):
        tiny = tmp_path / f"tiny{number}.ckpt"  # torch.load raises IndexError, EOFError, RuntimeError...
        tiny.write_bytes(content)
        with pytest.raises(CheckpointError, match=f"tiny{number}.ckpt.*damaged"):
            load_model(tiny)
    random_bytes = tmp_path / "random.ckpt"
    random_bytes.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(CheckpointError, match="random.ckpt: not a checkpoint") as refused:
        load_model(random_bytes)
    assert "trust_pickle" not in str(refused.value) and "Python objects" not in str(refused.value)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt.*not a marsdust checkpoint"):
        load_model(foreign)
    future = tmp_path / "future.ckpt"
    content = torch.load(good, weights_only=True)
    content["format_version"] = 99
    torch.save(content, future)
    with pytest.raises(CheckpointError, match="future.ckpt.*format version 99"):
        read_checkpoint(future)
    with pytest.raises(CheckpointError, match="missing.ckpt"):
        load_model(tmp_path / "missing.ckpt")


# ---------------------------------------------------------------------------------------- CLI
def test_models_command_lists_detectors_and_prints_yaml_config():
    from marsdust.cli.model_cmds import models_command

    app = typer.Typer()
    app.command("models")(models_command)
    app.callback()(lambda: None)
    runner = CliRunner()
    listing = runner.invoke(app, ["models"])
    assert listing.exit_code == 0, listing.output
    lines = listing.output.strip().splitlines()
    n_models = len(available_models())
    assert [line.split()[0] for line in lines[:n_models]] == list(available_models())
    assert lines[n_models].startswith("model presets")
    assert [line.split()[0] for line in lines[n_models + 1:]] == list(MODEL_PRESETS) == list(MODEL_PRESET_DESCRIPTIONS)
    shown = runner.invoke(app, ["models", "--config", "dustrcnn"])
    assert shown.exit_code == 0, shown.output
    assert DetectorConfig.from_dict(yaml.safe_load(shown.output)) == DetectorConfig()
    assert runner.invoke(app, ["models", "--config", "nope"]).exit_code != 0


# ---------------------------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def blob_dataset():
    """Two 64 x 64 images with 2 and 3 drawn blobs, shared by the overfitting tests."""
    generator = torch.Generator().manual_seed(0)
    return [blob_sample(generator, 3, 64, 64, n_blobs=n) for n in (2, 3)]


def _top_detection_quality(model, samples) -> tuple[float, float]:
    """Mean over all blobs of the best box IoU among the image's top-n detections (n = its
    number of blobs), and the lowest score of those top-n detections (0, 0 if too few)."""
    model.eval()
    ious, scores = [], []
    with torch.inference_mode():
        outputs = model([image for image, _ in samples])
    for (_, target), out in zip(samples, outputs):
        n_blobs = len(target["boxes"])
        if len(out["boxes"]) < n_blobs:
            return 0.0, 0.0
        ious.append(box_iou(target["boxes"], out["boxes"][:n_blobs]).max(dim=1).values)
        scores.append(out["scores"][:n_blobs])
    return torch.cat(ious).mean().item(), torch.cat(scores).min().item()


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_each_detector_overfits_bright_blobs(name, blob_dataset):
    """Trains until every blob is found (mean IoU > 0.8, scores > 0.5), checked every 5 steps."""
    torch.manual_seed(0)
    model = build_model(name, **TINY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    warm_up = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 10))
    images, targets = [s[0] for s in blob_dataset], [s[1] for s in blob_dataset]
    iou = min_score = 0.0
    for step in range(1, 201):
        model.train()
        losses = model(images, targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        warm_up.step()
        if step >= 20 and step % 5 == 0:
            iou, min_score = _top_detection_quality(model, blob_dataset)
            if iou > 0.8 and min_score > 0.5:
                break
    assert iou > 0.8 and min_score > 0.5, (
        f"{name}: after {step} steps, mean IoU of top detections {iou:.2f}, lowest top score {min_score:.2f}"
    )


def test_per_map_input_standardization_ignores_missing_pixels_and_overall_brightness():
    from marsdust.models.config import MISSING_INPUT_VALUE
    from marsdust.models.registry import standardize_observed

    torch.manual_seed(0)
    image = torch.rand(3, 20, 60) * 0.5 + 0.2
    image[:, :, 10:15] = 0.0  # a missing swath
    out = standardize_observed(image)
    observed = out[:, :, list(range(10)) + list(range(15, 60))]
    assert torch.allclose(observed.mean(dim=(1, 2)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(observed.std(dim=(1, 2), unbiased=False), torch.ones(3), atol=1e-4)
    assert (out[:, :, 10:15] == MISSING_INPUT_VALUE).all()
    brighter = image * 1.3 + 0.05 * (image != 0)  # another camera's gain and offset
    assert torch.allclose(standardize_observed(brighter), out, atol=1e-4)
    model = build_model("fasterrcnn", **TINY, input_norm="per_map")
    assert model.transform.input_norm == "per_map" and build_model("fasterrcnn", **TINY).transform.input_norm == "fixed"


def test_per_map_60_takes_a_global_maps_statistics_between_60s_and_60n():
    """A global map's bright polar caps do not set its statistics; a MOC map is standardized as per_map does."""
    from marsdust.models.registry import standardize_observed

    res_deg = 2.0
    torch.manual_seed(0)
    moc = 0.3 + 0.1 * torch.rand(3, 60, 180)  # 60°S–60°N
    assert torch.equal(standardize_observed(moc, res_deg), standardize_observed(moc))
    global_map = torch.cat([torch.full((3, 15, 180), 0.95), moc, torch.full((3, 15, 180), 0.9)], dim=1)  # caps
    out = standardize_observed(global_map, res_deg)
    assert torch.allclose(out[:, 15:75], standardize_observed(moc), atol=1e-5)  # as the MOC map alone
    assert (out[:, :15] > 5).all()  # the caps far above the band's mean
    whole = standardize_observed(global_map)  # per_map: the caps set the spread, the storms' contrast shrinks
    assert whole[:, 15:75].std() < 0.5 * out[:, 15:75].std()
    part = global_map[:, :60]  # the northern rows of a map only: every row, as per_map
    assert torch.equal(standardize_observed(part, res_deg), standardize_observed(part))
    model = build_model("fasterrcnn", **TINY, input_norm="per_map_60")
    assert model.transform.input_norm == "per_map_60" and model.transform.res_deg == model.config.map_res_deg


def test_the_validated_score_threshold_travels_from_a_training_checkpoint_to_detect(tmp_path):
    from marsdust.models import DEFAULT_SCORE_THRESHOLD, resolve_score_threshold, save_checkpoint, stored_score_threshold

    model = build_model("fasterrcnn", **TINY).eval()
    lightning = tmp_path / "best.ckpt"
    torch.save({"global_step": 10, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model_name": "fasterrcnn", "model_config": model.config.to_dict(),
                                     "label_mode": "outline"},
                "marsdust_score_threshold": 0.35}, lightning)
    assert stored_score_threshold(lightning) == pytest.approx(0.35)
    resaved = save_checkpoint(load_model(lightning), tmp_path / "model.ckpt")  # the demo's export keeps it
    assert stored_score_threshold(resaved) == pytest.approx(0.35)
    assert load_model(resaved).checkpoint_extra["label_mode"] == "outline"  # evaluate scores against what it learnt
    assert resolve_score_threshold(resaved, None)[0] == pytest.approx(0.35)
    assert resolve_score_threshold(resaved, 0.8) == (0.8, "given")
    plain = save_checkpoint(model, tmp_path / "plain.ckpt")
    assert stored_score_threshold(plain) is None
    assert resolve_score_threshold(plain, None)[0] == DEFAULT_SCORE_THRESHOLD
