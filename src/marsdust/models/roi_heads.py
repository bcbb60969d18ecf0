"""A small subclass of torchvision's ``RoIHeads`` for the paper's losses and the dustrcnn mask head.

What changes against torchvision (everything else, sampling, box coding, post-processing, mask
pasting, is the parent's and reached through its methods):

- box losses: binary cross-entropy classification and L1 (mean absolute error) regression,
  paper eq. 2-3 (:func:`marsdust.models.losses.box_losses`), instead of smooth-L1;
- mask branch (``_mask_branch``): for ``mask_loss="dice"`` a second RoIAlign
  (``boundary_roi_pool``, finer, P2 only) feeds MaskerB of
  :class:`~marsdust.models.heads.BoundaryPreservingMaskHead`; the mask loss is Dice
  (eq. 4) and a boundary loss is added (``loss_boundary``). For ``mask_loss="bce"`` the mask
  branch is torchvision's (``maskrcnn_loss``). Targets are projected on the RoIs with
  torchvision's ``project_masks_on_boxes``;
- mixed supervision (:meth:`DustRoIHeads.mask_losses`): a target's optional ``mask_supervised``
  (n,) bool leaves the RoIs matched to its False instances out of the mask losses (the box
  losses keep them), so instances known only by a box train the box branch alone.

``forward`` is re-stated in a few lines (the parent's ``forward`` computes its box loss inline,
so it cannot be reused for another box loss); keypoint branches are not supported.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import (
    RoIHeads,
    maskrcnn_inference,
    maskrcnn_loss,
    project_masks_on_boxes,
)

from marsdust.models.losses import box_losses, boundary_loss, dice_loss


class DustRoIHeads(RoIHeads):
    """RoI heads with the paper's losses; optional Dice + boundary mask branch.

    Parameters
    ----------
    *args, **kwargs
        As for :class:`torchvision.models.detection.roi_heads.RoIHeads`.
    box_reg_loss : str
        ``l1`` or ``smooth_l1``.
    mask_loss : str or None
        ``dice`` (dustrcnn: mask head returns (mask_logits, boundary_logits)), ``bce``
        (standard Mask R-CNN head + predictor), or None for boxes only.
    boundary_roi_pool : nn.Module or None
        Fine RoIAlign for MaskerB (required with ``mask_loss="dice"``).
    dice_smooth, boundary_loss_weight : float
        Dice smoothing term (pixels) and weight of ``loss_boundary``.
    mask_box_scale : float
        ``DetectorConfig.mask_box_scale``: at inference the masks are outlined in the detection boxes enlarged
        by this factor (:func:`enlarged_boxes`), returned as each result's ``mask_boxes`` when it is not 1.
    """

    def __init__(
        self,
        *args,
        box_reg_loss: str = "l1",
        mask_loss: str | None = None,
        boundary_roi_pool: nn.Module | None = None,
        dice_smooth: float = 1.0,
        boundary_loss_weight: float = 1.0,
        mask_box_scale: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if mask_loss == "dice" and boundary_roi_pool is None:
            raise ValueError("DustRoIHeads: mask_loss='dice' needs boundary_roi_pool (MaskerB's RoIAlign)")
        self.box_reg_loss = box_reg_loss
        self.mask_loss = mask_loss
        self.boundary_roi_pool = boundary_roi_pool
        self.dice_smooth = dice_smooth
        self.boundary_loss_weight = boundary_loss_weight
        self.mask_box_scale = mask_box_scale

    def has_mask(self) -> bool:  # noqa: D102  (mask_predictor is part of the dustrcnn head)
        return self.mask_loss is not None and self.mask_roi_pool is not None and self.mask_head is not None

    def forward(self, features, proposals, image_shapes, targets=None):
        """Boxes (and masks) for the proposals; losses in training, detections in eval."""
        matched_idxs = labels = None
        if self.training:
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        result: list[dict[str, Tensor]] = []
        losses: dict[str, Tensor] = {}
        if self.training:
            losses.update(box_losses(class_logits, box_regression, labels, regression_targets, self.box_reg_loss))
        else:
            boxes, scores, det_labels = self.postprocess_detections(
                class_logits, box_regression, proposals, image_shapes
            )
            result = [{"boxes": b, "labels": lab, "scores": s} for b, s, lab in zip(boxes, scores, det_labels)]
        if self.has_mask():
            losses.update(self._mask_branch(features, proposals, image_shapes, targets, matched_idxs, labels, result))
        return result, losses

    # ------------------------------------------------------------------ mask branch
    def _mask_branch(self, features, proposals, image_shapes, targets, matched_idxs, labels, result):
        if self.training:
            positive = [torch.where(image_labels > 0)[0] for image_labels in labels]
            mask_boxes = [p[keep] for p, keep in zip(proposals, positive)]
            mask_matched = [m[keep] for m, keep in zip(matched_idxs, positive)]
        else:
            mask_boxes = [r["boxes"] for r in result]
            if self.mask_box_scale != 1.0:
                mask_boxes = [enlarged_boxes(boxes, self.mask_box_scale, shape)
                              for boxes, shape in zip(mask_boxes, image_shapes)]
                for r, boxes in zip(result, mask_boxes):
                    r["mask_boxes"] = boxes
        roi_features = self.mask_roi_pool(features, mask_boxes, image_shapes)
        boundary_logits = None
        if self.mask_loss == "dice":
            fine_features = self.boundary_roi_pool(features, mask_boxes, image_shapes)
            mask_logits, boundary_logits = self.mask_head(roi_features, fine_features)
        else:
            mask_logits = self.mask_predictor(self.mask_head(roi_features))

        if not self.training:
            probabilities = maskrcnn_inference(mask_logits, [r["labels"] for r in result])
            for image_probs, r in zip(probabilities, result):
                r["masks"] = image_probs
            return {}
        return self.mask_losses(mask_logits, boundary_logits, mask_boxes, mask_matched, targets)

    def mask_losses(self, mask_logits, boundary_logits, mask_boxes, mask_matched, targets) -> dict[str, Tensor]:
        """Mask losses of the positive RoIs whose matched instance's mask is a target.

        Parameters
        ----------
        mask_logits : Tensor (R, K+1, M, M)
            Mask logits of all positive RoIs of the batch, image after image.
        boundary_logits : Tensor (R, K+1, M', M') or None
            MaskerB's boundary logits (``mask_loss="dice"``).
        mask_boxes, mask_matched : list of Tensor
            Per image, the positive RoIs (n_i, 4) and the index of the target instance each is matched to.
        targets : list of dict
            ``masks``, ``labels`` and, optionally, ``mask_supervised`` (n,) bool: instances with
            False (in outline mode, catalogue rows without an outline, whose mask is only their
            box, :func:`marsdust.labels.mask_supervised`) give no mask loss; their RoIs still
            count in the box losses. Without the key every instance's mask is a target.
        """
        keep = [torch.ones_like(idx, dtype=torch.bool) if "mask_supervised" not in t else t["mask_supervised"][idx]
                for t, idx in zip(targets, mask_matched)]
        rows = torch.cat(keep) if keep else torch.zeros(0, dtype=torch.bool, device=mask_logits.device)
        mask_logits = mask_logits[rows]
        boundary_logits = boundary_logits[rows] if boundary_logits is not None else None
        mask_boxes = [b[k] for b, k in zip(mask_boxes, keep)]
        mask_matched = [m[k] for m, k in zip(mask_matched, keep)]
        gt_masks = [t["masks"] for t in targets]
        gt_labels = [t["labels"] for t in targets]
        if self.mask_loss == "bce":
            return {"loss_mask": maskrcnn_loss(mask_logits, mask_boxes, gt_masks, gt_labels, mask_matched)}
        return self._dice_losses(mask_logits, boundary_logits, mask_boxes, gt_masks, gt_labels, mask_matched)

    def _dice_losses(self, mask_logits, boundary_logits, mask_boxes, gt_masks, gt_labels, mask_matched):
        """Dice mask loss (eq. 4) and BMask boundary loss on the positive RoIs' own class."""
        size = mask_logits.shape[-1]
        target_labels = torch.cat([lab[idx] for lab, idx in zip(gt_labels, mask_matched)])
        target_masks = torch.cat(
            [project_masks_on_boxes(m, b, idx, size) for m, b, idx in zip(gt_masks, mask_boxes, mask_matched)]
        )
        if target_masks.numel() == 0:
            zero = mask_logits.sum() * 0.0 + boundary_logits.sum() * 0.0
            return {"loss_mask": zero, "loss_boundary": zero}
        rows = torch.arange(target_labels.shape[0], device=target_labels.device)
        class_index = target_labels  # channel k predicts class k (channel 0, background, unused: torchvision's layout)
        mask_probs = mask_logits[rows, class_index].sigmoid()
        loss_mask = dice_loss(mask_probs, target_masks, self.dice_smooth)
        loss_boundary = boundary_loss(boundary_logits[rows, class_index], target_masks, self.dice_smooth)
        return {"loss_mask": loss_mask, "loss_boundary": self.boundary_loss_weight * loss_boundary}


def enlarged_boxes(boxes: Tensor, scale: float, image_shape: tuple[int, int]) -> Tensor:
    """``(n, 4)`` xyxy ``boxes`` (pixels) grown ``scale`` times in width and height about their centres, clipped to
    the ``(height, width)`` image."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * (scale / 2)
    height, width = image_shape
    x = torch.stack([centre[:, 0] - half[:, 0], centre[:, 0] + half[:, 0]], 1).clamp(0, width)
    y = torch.stack([centre[:, 1] - half[:, 1], centre[:, 1] + half[:, 1]], 1).clamp(0, height)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)
