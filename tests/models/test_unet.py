"""marsdust.models.unet: the U-Net segmenters (``unet``, ``unet_cbam``) — shapes, the pixel loss's exclusions,
instances joined across 180°, checkpoints, ``detect`` with a U-Net, and a short training that learns."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from marsdust import detect
from marsdust.models import (
    UNetDetector,
    build_model,
    count_parameters,
    load_model,
    save_checkpoint,
)
from marsdust.models.losses import masked_pixel_losses
from marsdust.models.unet import box_cores, pixel_targets
from marsdust.synth.discs import draw_disc_map, write_disc_archive

TINY_UNET = dict(unet_channels=4, unet_depth=2, norm="batch", map_res_deg=1.6)
HEIGHT, WIDTH = 32, 48


@pytest.fixture(autouse=True)
def _ci_threads(ci_threads):
    """Every test here runs torch on CI's threads (see conftest.ci_threads)."""


def blob_target(height: int = HEIGHT, width: int = WIDTH, supervised=(True, True)) -> dict:
    """Two instances: an outlined blob and a second one whose mask is its box."""
    masks = torch.zeros(2, height, width, dtype=torch.uint8)
    masks[0, 4:12, 4:14] = 1
    masks[1, 18:28, 24:40] = 1
    return {"boxes": torch.tensor([[4.0, 4, 14, 12], [24.0, 18, 40, 28]]), "labels": torch.ones(2, dtype=torch.int64),
            "masks": masks, "mask_supervised": torch.tensor(supervised)}


# ------------------------------------------------------------------------------------------------ interface
@pytest.mark.parametrize("name", ["unet", "unet_cbam"])
@pytest.mark.parametrize("bands", [3, 6])
def test_unet_trains_one_step_and_returns_detections_like_the_rcnns(name, bands):
    torch.manual_seed(0)
    reference = {"reference": "prior-median"} if bands == 6 else {}
    model = build_model(name, in_channels=bands, **reference, **TINY_UNET)
    assert isinstance(model, UNetDetector) and model.model_name == name and model.has_masks
    images = [torch.rand(bands, HEIGHT, WIDTH), torch.rand(bands, HEIGHT - 5, WIDTH - 7)]  # sizes not multiples of 4
    targets = [blob_target(), {**blob_target(HEIGHT - 5, WIDTH - 7)}]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_pixel_bce", "loss_pixel_dice"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.inference_mode():
        model.config = model.config.replace(unet_pixel_threshold=0.01)  # an untrained net: some pixels pass
        outputs = model(images)
    for image, out in zip(images, outputs):
        n = len(out["scores"])
        assert n >= 1
        assert out["boxes"].shape == (n, 4) and out["labels"].tolist() == [1] * n
        assert out["masks"].shape == (n, 1, *image.shape[-2:]) and out["masks"].dtype == torch.float32
        assert (out["scores"][:-1] >= out["scores"][1:]).all() and (out["scores"] >= 0.01).all()
    with pytest.raises(ValueError, match="targets are required"):
        model.train()(images)
    with pytest.raises(ValueError, match=r"image 0 has shape \(2, 32, 48\), expected \(%d, H, W\)" % bands):
        model([torch.rand(2, HEIGHT, WIDTH)], [blob_target()])


def test_frozen_batch_norm_is_refused():
    with pytest.raises(ValueError, match="norm 'frozen_bn' freezes pretrained statistics"):
        build_model("unet", norm="frozen_bn")
    assert build_model("unet").config.norm == "group"  # auto: nothing is pretrained


def test_default_unets_have_the_size_of_venturinis_cbam_unet():
    """Venturini et al. 2025: a CBAM U-Net of 1.95 M parameters."""
    assert 1.85e6 < count_parameters(build_model("unet")) < count_parameters(build_model("unet_cbam")) < 2.05e6


# ------------------------------------------------------------------------------------------------ the pixel loss
def test_pixel_targets_leave_out_missing_pixels_and_instances_without_an_outline():
    observed = torch.ones(HEIGHT, WIDTH, dtype=torch.bool)
    observed[:, 44:] = False  # a missing swath
    positive, counted = pixel_targets(blob_target(supervised=(True, False)), observed, num_classes=1)
    assert positive[0, 4:12, 4:14].all() and int(positive.sum()) == 80  # only the outlined instance
    assert not counted[0, 18:28, 24:40].any()  # the box-only instance: unknown, not background
    assert not counted[0, :, 44:].any()
    assert int(counted.sum()) == HEIGHT * 44 - 10 * 16


def test_a_box_only_instance_teaches_its_core_as_storm_and_leaves_the_rest_of_its_box_out():
    """The weak label of a v1.0 row (``unet_box_core``): the box's shrunk inscribed ellipse is storm, the ring unknown."""
    observed = torch.ones(HEIGHT, WIDTH, dtype=torch.bool)
    positive, counted = pixel_targets(blob_target(supervised=(True, False)), observed, num_classes=1, box_core=0.5)
    core = positive[0] & ~blob_target()["masks"][0].bool()
    rows, cols = torch.nonzero(core, as_tuple=True)
    # box x 24..40, y 18..28: centre (32, 23), half-axes 4 x 2.5 px
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (21, 24, 28, 35)
    assert 0.5**2 * torch.pi / 4 * 160 * 0.8 < int(core.sum()) < 0.5**2 * torch.pi / 4 * 160 * 1.2
    assert counted[0][core].all()  # the core counts (as storm) ...
    ring = blob_target()["masks"][1].bool() & ~core
    assert not counted[0][ring].any()  # ... the rest of the box is unknown
    # off, the whole box is unknown and nothing of it is storm
    positive_off, _ = pixel_targets(blob_target(supervised=(True, False)), observed, num_classes=1)
    assert int(positive_off.sum()) == 80
    # a core never leaves its instance's mask (here a box cut by the map's top edge)
    target = blob_target(supervised=(True, False))
    target["masks"][1, 18:21] = 0
    positive_cut, _ = pixel_targets(target, observed, num_classes=1, box_core=1.0)
    assert not positive_cut[0, 18:21].any() and positive_cut[0, 21:28].any()


def test_box_cores_are_the_shrunk_ellipses_inscribed_in_their_boxes():
    cores = box_cores(torch.tensor([[0.0, 0, 10, 10], [20.0, 4, 21, 5]]), (12, 30), 1.0)
    assert cores.shape == (2, 12, 30)
    assert int(cores[0].sum()) == 80  # pixel centres inside the r = 5 circle at (5, 5): 4 x (5+5+4+4+2)
    assert int(cores[1].sum()) == 1 and bool(cores[1, 4, 20])  # a 1-px box keeps its pixel
    assert int(box_cores(torch.tensor([[0.0, 0, 10, 10]]), (12, 30), 0.5).sum()) < 80 / 3


def test_loss_gives_no_gradient_on_missing_pixels_or_box_only_instances():
    """A loss that counted the missing pixels or the box-only instance's box (as background) fails here."""
    torch.manual_seed(0)
    observed = torch.ones(HEIGHT, WIDTH, dtype=torch.bool)
    observed[:, 44:] = False
    positive, counted = pixel_targets(blob_target(supervised=(True, False)), observed, num_classes=1)
    logits = torch.randn(1, 1, HEIGHT, WIDTH, requires_grad=True)
    losses = masked_pixel_losses(logits, positive[None], counted[None], pos_weight=3.0)
    sum(losses.values()).backward()
    gradient = logits.grad[0, 0]
    assert (gradient[:, 44:] == 0).all() and (gradient[18:28, 24:40] == 0).all()
    assert (gradient[counted[0]] != 0).all()
    # the same map with the box-only instance dropped from the catalogue: its box now counts as background
    _, counted_without = pixel_targets({k: v[:1] for k, v in blob_target().items()}, observed, num_classes=1)
    without = masked_pixel_losses(logits, positive[None], counted_without[None], pos_weight=3.0)
    assert not torch.isclose(without["loss_pixel_bce"], losses["loss_pixel_bce"])


def test_model_loss_ignores_what_the_input_holds_in_missing_pixels_of_the_target():
    """Through the whole model: a storm mask over missing pixels (all bands 0) adds nothing to the loss."""
    torch.manual_seed(0)
    model = build_model("unet", **TINY_UNET).train()
    image = torch.rand(3, HEIGHT, WIDTH) * 0.8 + 0.1
    image[:, :, 44:] = 0.0
    target = blob_target()
    covering = {k: v.clone() for k, v in target.items()}
    covering["masks"][1, :, 44:] = 1  # the second storm's mask reaches into the missing swath
    with torch.no_grad():
        plain = model([image], [target])
        reaching = model([image], [covering])
    for key in plain:
        assert torch.allclose(plain[key], reaching[key]), key


# ------------------------------------------------------------------------------------------------ instances
def bright_red_net(threshold: float = 0.6) -> nn.Module:
    """Stands in for the U-Net: logit +/-10 where the red band (after fixed normalization) is above ``threshold``."""
    from marsdust.models.config import IMAGENET_MEAN, IMAGENET_STD

    class BrightRed(nn.Module):
        def forward(self, batch):
            return 20.0 * (batch[:, :1] - (threshold - IMAGENET_MEAN[0]) / IMAGENET_STD[0]).sign()

    return BrightRed()


def test_a_storm_cut_by_the_seam_of_a_whole_map_is_one_instance():
    model = build_model("unet", **TINY_UNET).eval()  # 1.6 deg: a whole map is 225 columns wide
    probabilities = torch.zeros(1, 20, 225)
    probabilities[0, 5:10, :6] = 0.9
    probabilities[0, 7:12, 219:] = 0.7
    probabilities[0, 15:18, 100:110] = 0.8
    observed = torch.ones(20, 225, dtype=torch.bool)
    whole = model.instances(probabilities, observed)
    assert len(whole["scores"]) == 2
    seam = int(torch.argmax(whole["boxes"][:, 2]))
    assert whole["boxes"][seam].tolist() == [219.0, 5.0, 231.0, 12.0]  # x1 past the width: across 180°
    assert whole["scores"][seam] == pytest.approx((30 * 0.9 + 30 * 0.7) / 60)
    assert int((whole["masks"][seam] > 0).sum()) == 60
    window = model.instances(probabilities[:, :, :224], observed[:, :224])  # not 360° wide: edges are edges
    assert len(window["scores"]) == 3
    observed[:, :6] = False  # missing pixels belong to no instance
    assert len(model.instances(probabilities, observed)["scores"]) == 2


def test_detect_finds_a_seam_storm_once_with_and_without_the_wrap_pad(tmp_path):
    model = build_model("unet", **{**TINY_UNET, "map_res_deg": 0.8}).eval()
    model.net = bright_red_net()
    path = draw_disc_map(tmp_path / "r18_001.png", [(179.0, 20.0, 15.0), (0.0, -30.0, 12.0)])
    padded = detect.detect_map(model, path, mars_year=25, ls=100.0)
    unpadded = detect.detect_map(model, path, settings=detect.DetectSettings(pad_deg=0.0))
    for result in (padded, unpadded):
        assert result.n_detections == 2
        across = {round(r["lon"]): r for r in result.records}[179]
        assert across["lon_min"] > 0 > across["lon_max"] and across["polygon_wkt"].startswith("MULTIPOLYGON")
        assert across["area_km2"] == pytest.approx(2 * math.pi * 3396.19**2 * (1 - math.cos(math.radians(15))),
                                                   rel=0.03)
    assert [r["area_km2"] for r in padded.records] == pytest.approx([r["area_km2"] for r in unpadded.records])


def test_detect_gives_a_unet_whole_maps_never_tiles(tmp_path):
    model = build_model("unet", **{**TINY_UNET, "map_res_deg": 0.8}).eval()
    model.net = bright_red_net()
    seen = []
    forward = model.forward
    model.forward = lambda images, targets=None: seen.append([tuple(i.shape) for i in images]) or forward(images)
    path = draw_disc_map(tmp_path / "r18_001.png", [(179.0, 20.0, 15.0)])
    detect.detect_map(model, path, settings=detect.DetectSettings(max_tile_px=128))
    pad = detect.prepare.pad_columns(450, detect.DetectSettings().pad_deg, 0.8)
    assert seen == [[(3, 150, 450 + 2 * pad)]]  # one input: the whole wrap-padded map


# ------------------------------------------------------------------------------------------------ checkpoints
def storm_everywhere_unet(name: str = "unet") -> UNetDetector:
    """A real tiny U-Net whose head says "storm" on every observed pixel."""
    torch.manual_seed(0)
    model = build_model(name, **TINY_UNET)
    with torch.no_grad():
        model.net.head.weight.zero_()
        model.net.head.bias.fill_(4.0)
    return model.eval()


@pytest.mark.parametrize("name", ["unet", "unet_cbam"])
def test_checkpoint_rebuilds_the_unet_and_onnx_export_is_refused(tmp_path, name):
    from marsdust.cli import app

    model = storm_everywhere_unet(name)
    path = save_checkpoint(model, tmp_path / "unet.ckpt", score_threshold=0.6)
    loaded = load_model(path)
    assert isinstance(loaded, UNetDetector) and loaded.model_name == name
    assert loaded.config == model.config.replace(backbone_weights="checkpoint")
    image = torch.rand(3, 40, 60)
    with torch.inference_mode():
        for key, value in model([image])[0].items():
            assert torch.equal(value, loaded([image])[0][key]), key
    with pytest.raises(ValueError, match="no backbone"):
        detect.export_backbone_onnx(loaded, tmp_path / "unet.onnx")
    result = CliRunner().invoke(app, ["export-onnx", str(path), "-o", str(tmp_path / "unet.onnx")])
    assert result.exit_code == 1 and "no backbone + FPN + RPN head to export" in result.output
    assert not (tmp_path / "unet.onnx").exists()


def test_marsdust_detect_with_a_unet_checkpoint_writes_detections(tmp_path):
    from marsdust.cli import app

    checkpoint = save_checkpoint(storm_everywhere_unet(), tmp_path / "unet.ckpt")
    maps = {f"r18_{sol:03d}": (100.0 + sol, [(-40.0 + 10 * sol, 0.0, 8.0)]) for sol in (1, 2)}
    archive = write_disc_archive(tmp_path / "archive", maps)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["detect", str(checkpoint), str(archive), "-o", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "detections.csv")
    assert sorted(table["map_id"]) == sorted(maps)  # one storm per map: the whole observed map
    assert (table["score"] > 0.95).all() and np.isfinite(table["area_km2"]).all()


# ------------------------------------------------------------------------------------------------ learning
# A short U-Net training on the ci preset (outline labels, temporal split: 26 training maps, 13 test maps from later
# Mars years, 39 storms), map-only, at 1.6 deg (75 x 225 px maps) so that it fits the tests' budget.
LEARN_UNET_RECIPE = dict(
    model="unet", model_preset="small_cpu",
    model_config=dict(unet_channels=8, unet_depth=3, norm="batch", input_norm="per_map"),
    map_res_deg=1.6, label_mode="outline", strategy="temporal", schedule="warmup_cosine", optimizer="adamw", lr=5e-3,
    weight_decay=1e-4, warmup_steps=10, decay="cosine", decay_every_steps=0, decay_factor=1.0, min_lr_ratio=0.05,
    clip_grad_norm=10.0, batch_size=4, max_steps=40, val_every_n_steps=20, augment=True, augment_preset="strong",
    reference="none", reference_dropout=0.0, classes=["dust"], num_workers=0, threads=2, accelerator="cpu",
    devices=1, precision="32-true", progress=False,
)
# Measured (2026-12-07, 2-core AMD EPYC with AVX-512, shared with other jobs, so no seconds are given; the recipe
# run by a script equal to this test on 2 threads unless named, scores of the best checkpoint on the test split):
#   seed, kernels                                              box mAP25 / mask mAP50 / pixel IoU
#   0, default (AVX-512)                                       0.599 / 0.460 / 0.450
#   1, default (AVX-512)                                       0.527 / 0.337 / 0.356
#   0, ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2        0.607 / 0.477 / 0.447
#   0, default (AVX-512), 1 thread as in a make-test worker     0.585 / 0.469 / 0.463
#      (PYTEST_XDIST_WORKER=gw0 pytest tests/models/test_unet.py -k learns -s)
# Each threshold sits at least 3x below the lowest value seen (0.527, 0.356). unet_cbam under the same 40 steps
# scored 0.188 / 0.111 / 0.119 (seed 0): attention is slower to start; this test does not judge it. The untrained
# network (seeds 0 and 1, the same split) scores box mAP25 0.000 / 0.003 and pixel IoU 0.000 / 0.023, so the
# thresholds cannot be met without learning.
LEARN_UNET_MIN_MAP25 = 0.15
LEARN_UNET_MIN_PIXEL_IOU = 0.1


@pytest.mark.slow
def test_tiny_unet_learns_to_segment_storms_on_held_out_maps(ci_data, tmp_path, ci_threads):
    from marsdust.evaluate import EvaluateOptions, evaluate_checkpoint
    from marsdust.train import TrainConfig, train

    config = TrainConfig(data=str(ci_data), seed=0, **{**LEARN_UNET_RECIPE, "threads": ci_threads})
    summary = train(config, tmp_path / "run")
    metrics = evaluate_checkpoint(summary["best_checkpoint"], tmp_path / "eval",
                                  EvaluateOptions(n_figures=0, n_timed=0, progress=False))
    print("unet learning test:", metrics["map25"], metrics["segm"]["map50"], metrics["pixel"])
    assert metrics["n_gt"] > 20
    assert metrics["map25"] > LEARN_UNET_MIN_MAP25
    assert metrics["pixel"]["iou"] > LEARN_UNET_MIN_PIXEL_IOU


def test_a_box_core_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match=r"DetectorConfig.unet_box_core must be in \[0, 1\], got 1.5"):
        build_model("unet", unet_box_core=1.5)
