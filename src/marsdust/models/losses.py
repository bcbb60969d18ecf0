"""Losses of the paper (eq. 1-4) and the boundary loss of MaskerB.

- box classification: cross-entropy over (background, classes); with one foreground class this
  *is* the binary cross-entropy of eq. 2 (a two-way softmax is a sigmoid of the logit
  difference), and it stays a proper loss for dust + water-ice cloud;
- box regression: mean absolute error (L1) of the encoded box offsets (eq. 3);
- mask: Dice loss (eq. 4, Milletari et al. 2016) with a smoothing term;
- boundary (dustrcnn's MaskerB, after BMask R-CNN): BCE + Dice against the edges of the
  target mask (Laplacian of the mask, thresholded);
- pixels (the ``unet`` segmenters, :func:`masked_pixel_losses`): BCE with a weight on storm
  pixels + soft Dice, both over the pixels that count (observed and labelled).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def dice_loss(mask_probs: Tensor, target_masks: Tensor, smooth: float = 1.0) -> Tensor:
    """Dice loss ``1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s)``, averaged over instances.

    Parameters
    ----------
    mask_probs : Tensor (N, H, W)
        Predicted foreground probabilities in [0, 1].
    target_masks : Tensor (N, H, W)
        Target masks, 0/1 (float or bool).
    smooth : float
        Smoothing term (pixels); makes an empty prediction of an empty target score 0 and keeps
        gradients finite.

    Returns
    -------
    Tensor
        Scalar; 0 for a perfect mask. With N = 0 it is 0 and still attached to the graph.
    """
    if mask_probs.shape != target_masks.shape:
        raise ValueError(f"dice_loss: mask_probs {tuple(mask_probs.shape)} vs target {tuple(target_masks.shape)}")
    if mask_probs.shape[0] == 0:
        return mask_probs.sum() * 0.0
    probs = mask_probs.flatten(1)
    target = target_masks.flatten(1).to(probs.dtype)
    overlap = (probs * target).sum(dim=1)
    dice = (2.0 * overlap + smooth) / (probs.sum(dim=1) + target.sum(dim=1) + smooth)
    return (1.0 - dice).mean()


def box_losses(
    class_logits: Tensor,
    box_regression: Tensor,
    labels: list[Tensor],
    regression_targets: list[Tensor],
    reg_loss: str = "l1",
) -> dict[str, Tensor]:
    """Box classification (BCE / cross-entropy) and box regression (L1) losses.

    Parameters
    ----------
    class_logits : Tensor (R, K+1)
        Scores of all sampled RoIs of the batch (K foreground classes + background).
    box_regression : Tensor (R, 4 (K+1))
        Encoded box offsets per class.
    labels, regression_targets : list of Tensor
        Per image, the sampled RoIs' class (0 = background) and encoded target offsets.
    reg_loss : str
        ``l1`` (paper, eq. 3) or ``smooth_l1`` (torchvision, beta 1/9).

    Returns
    -------
    dict
        ``loss_classifier`` and ``loss_box_reg``; the regression loss is summed over positive
        RoIs and divided by all sampled RoIs, as torchvision does.
    """
    labels_all = torch.cat(labels, dim=0)
    targets_all = torch.cat(regression_targets, dim=0)
    loss_classifier = F.cross_entropy(class_logits, labels_all)
    positive = torch.where(labels_all > 0)[0]
    per_class = box_regression.reshape(box_regression.shape[0], -1, 4)
    predicted = per_class[positive, labels_all[positive]]
    if reg_loss == "l1":
        loss_box = F.l1_loss(predicted, targets_all[positive], reduction="sum")
    else:
        loss_box = F.smooth_l1_loss(predicted, targets_all[positive], beta=1 / 9, reduction="sum")
    return {"loss_classifier": loss_classifier, "loss_box_reg": loss_box / max(labels_all.numel(), 1)}


_LAPLACIAN = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]])


def mask_edges(target_masks: Tensor) -> Tensor:
    """Edge pixels of 0/1 masks (N, H, W): inside pixels with an outside neighbour -> 1."""
    kernel = _LAPLACIAN.to(target_masks.device, torch.float32).reshape(1, 1, 3, 3)
    response = F.conv2d(target_masks.float().unsqueeze(1), kernel, padding=1).squeeze(1)
    return (response > 0.1).to(target_masks.dtype if target_masks.is_floating_point() else torch.float32)


def boundary_loss(boundary_logits: Tensor, target_masks: Tensor, smooth: float = 1.0) -> Tensor:
    """BCE + Dice of predicted boundary logits (N, H, W) against the target masks' edges."""
    if boundary_logits.shape[0] == 0:
        return boundary_logits.sum() * 0.0
    edges = mask_edges(target_masks).to(boundary_logits.dtype)
    if edges.shape[-2:] != boundary_logits.shape[-2:]:
        edges = F.interpolate(edges.unsqueeze(1), boundary_logits.shape[-2:], mode="nearest").squeeze(1)
    bce = F.binary_cross_entropy_with_logits(boundary_logits, edges)
    return bce + dice_loss(boundary_logits.sigmoid(), edges, smooth)


def masked_pixel_losses(logits: Tensor, positive: Tensor, counted: Tensor, pos_weight: float,
                        smooth: float = 1.0) -> dict[str, Tensor]:
    """Per-pixel losses of a segmenter over the pixels that count, for a rare foreground.

    Parameters
    ----------
    logits : Tensor (N, K, H, W)
        One logit per foreground class and pixel.
    positive : Tensor (N, K, H, W) bool
        Target: the pixel belongs to an instance of class k.
    counted : Tensor (N, K, H, W) bool
        Pixels that enter the losses; the others (missing data, padding, the boxes of instances
        without an outline) give neither loss nor gradient.
    pos_weight : float
        Weight of positive pixels in the binary cross-entropy (class imbalance).
    smooth : float
        Smoothing term of the Dice loss, pixels.

    Returns
    -------
    dict
        ``loss_pixel_bce``: weighted BCE averaged over the counted pixels; ``loss_pixel_dice``:
        soft Dice of each class over all counted pixels of the batch, averaged over classes. Both
        are 0 (and attached to the graph) when no pixel counts.
    """
    if not (logits.shape == positive.shape == counted.shape):
        raise ValueError(f"masked_pixel_losses: logits {tuple(logits.shape)}, positive {tuple(positive.shape)} and "
                         f"counted {tuple(counted.shape)} must have one shape")
    weight = counted.to(logits.dtype)
    target = positive.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(
        logits, target, weight=weight, reduction="sum",
        pos_weight=torch.tensor(float(pos_weight), dtype=logits.dtype, device=logits.device))
    loss_bce = bce / weight.sum().clamp_min(1.0)
    probs = torch.sigmoid(logits) * weight
    target = target * weight
    overlap = (probs * target).sum(dim=(0, 2, 3))
    dice = (2.0 * overlap + smooth) / (probs.sum(dim=(0, 2, 3)) + target.sum(dim=(0, 2, 3)) + smooth)
    loss_dice = (1.0 - dice).mean() if int(counted.sum()) else logits.sum() * 0.0
    return {"loss_pixel_bce": loss_bce, "loss_pixel_dice": loss_dice}
