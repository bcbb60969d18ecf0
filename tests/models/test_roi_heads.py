"""marsdust.models.roi_heads: mixed supervision — instances known only by a box (no outline) train the box
branch but give no mask loss (``mask_supervised`` False), for every registered detector."""

from __future__ import annotations

import pytest
import torch

from marsdust.models import TINY_DETECTOR, build_model

HEIGHT, WIDTH = 64, 96
BOX_A = [10.0, 10.0, 30.0, 30.0]  # outlined instance
BOX_B = [50.0, 20.0, 80.0, 44.0]  # box-only instance


def two_instance_target(b_supervised: bool, with_b: bool = True) -> dict:
    boxes = torch.tensor([BOX_A, BOX_B] if with_b else [BOX_A])
    masks = torch.zeros(len(boxes), HEIGHT, WIDTH, dtype=torch.uint8)
    masks[0, 14:26, 12:24] = 1  # an outline inside A's box
    if with_b:
        masks[1, 20:44, 50:80] = 1  # B's "mask" is its box
    supervised = torch.tensor([True, b_supervised][: len(boxes)])
    return {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64), "masks": masks,
            "mask_supervised": supervised}


@pytest.mark.parametrize("name", ["dustrcnn", "maskrcnn"])
def test_box_only_instance_gets_no_mask_gradient(name):
    heads = build_model(name, **TINY_DETECTOR).roi_heads.train()
    mask_boxes = [torch.tensor([BOX_A, [11.0, 9.0, 31.0, 29.0], BOX_B, [52.0, 21.0, 79.0, 45.0]])]
    matched = [torch.tensor([0, 0, 1, 1])]  # rows 0-1: A's RoIs, rows 2-3: B's
    classes, size = heads.box_predictor.cls_score.out_features, 28
    grads = {}
    for b_supervised in (False, True):
        torch.manual_seed(0)
        mask_logits = torch.randn(4, classes, size, size, requires_grad=True)
        boundary_logits = torch.randn(4, classes, size, size, requires_grad=True) if name == "dustrcnn" else None
        losses = heads.mask_losses(mask_logits, boundary_logits, mask_boxes, matched,
                                   [two_instance_target(b_supervised)])
        sum(losses.values()).backward()
        grads[b_supervised] = [mask_logits.grad] + ([boundary_logits.grad] if boundary_logits is not None else [])
    for grad in grads[False]:
        assert torch.count_nonzero(grad[2:]) == 0  # B's RoIs: no mask (or boundary) gradient
        assert torch.count_nonzero(grad[:2]) > 0  # A's RoIs still learn their mask
    for grad in grads[True]:
        assert torch.count_nonzero(grad[2:]) > 0  # the same RoIs with B's mask supervised


def test_all_box_only_batch_gives_a_zero_mask_loss_attached_to_the_graph():
    heads = build_model("maskrcnn", **TINY_DETECTOR).roi_heads.train()
    mask_logits = torch.randn(2, heads.box_predictor.cls_score.out_features, 28, 28, requires_grad=True)
    target = two_instance_target(False)
    target["mask_supervised"][:] = False
    losses = heads.mask_losses(mask_logits, None, [torch.tensor([BOX_A, BOX_B])], [torch.tensor([0, 1])], [target])
    assert losses["loss_mask"].item() == 0.0
    losses["loss_mask"].backward()
    assert torch.count_nonzero(mask_logits.grad) == 0


@pytest.mark.parametrize("name", ["dustrcnn", "maskrcnn", "fasterrcnn", "sppnet"])
def test_box_losses_include_the_box_only_instance(name):
    model = build_model(name, **TINY_DETECTOR).train()
    image = torch.rand(3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(3))

    def losses(target):
        torch.manual_seed(0)  # the same RPN / RoI samples each time
        return {k: v.item() for k, v in model([image], [target]).items()}

    box_only, supervised, without_b = (losses(two_instance_target(False)), losses(two_instance_target(True)),
                                       losses(two_instance_target(False, with_b=False)))
    for key in ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"):
        assert box_only[key] == pytest.approx(supervised[key], rel=1e-6)  # B counts as any instance does
    assert box_only["loss_box_reg"] != pytest.approx(without_b["loss_box_reg"], rel=1e-3)
    if name in ("dustrcnn", "maskrcnn"):
        assert box_only["loss_mask"] != pytest.approx(supervised["loss_mask"], rel=1e-3)
    else:
        assert "loss_mask" not in box_only
