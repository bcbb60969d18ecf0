"""Region heads: the dustrcnn mask head (MaskerA + MaskerB) and the SPP-net box head.

How we read the paper and BMask R-CNN
-------------------------------------
The paper (sect. 4.3, Fig. 1) splits its mask network in two: *MaskerA* runs four 3 x 3 convs
on 14 x 14 x 256 RoIAlign features; *MaskerB* runs two 3 x 3 convs on 28 x 28 x 256 RoIAlign
features "and MaskerA", and the combination gives the binary map. It cites Cheng et al. (2020),
"Boundary-preserving Mask R-CNN" (BMask R-CNN), whose mask head has exactly this shape:

- a mask branch (four 3 x 3 convs on 14 x 14 multi-level RoIAlign features);
- a boundary branch on finer 28 x 28 RoIAlign features taken from the highest-resolution
  pyramid level (P2 only), brought to 14 x 14 by a stride-2 3 x 3 conv;
- *mask-to-boundary fusion*: the mask features (through a 1 x 1 conv) are added to the boundary
  features before the boundary branch's two 3 x 3 convs;
- *boundary-to-mask fusion*: the boundary features (through a 1 x 1 conv) are added back to
  the mask features, followed by one more 3 x 3 conv;
- both branches are upsampled 2x by a transposed conv and predict 28 x 28 maps: the mask, and a
  boundary map supervised by the edges of the target mask (Laplacian of the mask) with
  BCE + Dice.

So MaskerA is the mask branch and MaskerB the boundary branch, which refines the mask at the
storm's edges (a dust front is the part of a storm that matters and the hardest to place).
Differences from BMask: our mask loss is Dice (paper eq. 4) instead of BCE, and normalization is
GroupNorm (or none) as configured. The code is written from this description, not copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv3x3_block(in_channels: int, out_channels: int, norm_layer=None, stride: int = 1) -> nn.Sequential:
    """3 x 3 conv (+ norm) + ReLU; ``norm_layer(channels)`` or None."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=norm_layer is None)
    ]
    if norm_layer is not None:
        layers.append(norm_layer(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _init_predictor(conv: nn.Module) -> None:
    nn.init.normal_(conv.weight, std=0.001)
    nn.init.zeros_(conv.bias)


class MaskerA(nn.Module):
    """Mask branch: four 3 x 3 convs on (R, C, 14, 14) RoIAlign features."""

    def __init__(self, in_channels: int, channels: int, norm_layer=None, num_convs: int = 4) -> None:
        super().__init__()
        blocks = [conv3x3_block(in_channels if i == 0 else channels, channels, norm_layer) for i in range(num_convs)]
        self.convs = nn.Sequential(*blocks)

    def forward(self, roi_features: Tensor) -> Tensor:  # noqa: D102
        return self.convs(roi_features)


class MaskerB(nn.Module):
    """Boundary branch: 28 x 28 fine RoI features -> stride-2 conv -> (+ MaskerA) -> two 3 x 3 convs."""

    def __init__(self, in_channels: int, channels: int, norm_layer=None, num_convs: int = 2) -> None:
        super().__init__()
        self.downsample = conv3x3_block(in_channels, channels, norm_layer, stride=2)
        self.from_mask = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True))
        self.convs = nn.Sequential(*[conv3x3_block(channels, channels, norm_layer) for _ in range(num_convs)])

    def forward(self, fine_roi_features: Tensor, mask_features: Tensor) -> Tensor:  # noqa: D102
        boundary = self.downsample(fine_roi_features)
        if boundary.shape[-2:] != mask_features.shape[-2:]:
            boundary = F.interpolate(boundary, mask_features.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(boundary + self.from_mask(mask_features))


class BoundaryPreservingMaskHead(nn.Module):
    """MaskerA + MaskerB with two-way fusion; predicts mask and boundary logits (R, K, 28, 28).

    Parameters
    ----------
    in_channels : int
        Channels of the RoIAlign features (FPN width).
    channels : int
        Width of the head's convs.
    num_classes : int
        Output channels: foreground classes + 1 (torchvision's layout: channel k is class k,
        channel 0 is unused background), so torchvision's ``maskrcnn_inference`` applies.
    norm_layer : callable or None
        Normalization factory for the 3 x 3 convs.
    """

    def __init__(self, in_channels: int, channels: int, num_classes: int, norm_layer=None) -> None:
        super().__init__()
        self.masker_a = MaskerA(in_channels, channels, norm_layer)
        self.masker_b = MaskerB(in_channels, channels, norm_layer)
        self.to_mask = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True))
        self.fuse = conv3x3_block(channels, channels, norm_layer)
        self.mask_up = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.boundary_up = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.mask_logits = nn.Conv2d(channels, num_classes, 1)
        self.boundary_logits = nn.Conv2d(channels, num_classes, 1)
        _init_predictor(self.mask_logits)
        _init_predictor(self.boundary_logits)

    def forward(self, roi_features: Tensor, fine_roi_features: Tensor) -> tuple[Tensor, Tensor]:
        """Mask and boundary logits from 14 x 14 and 28 x 28 RoI features."""
        mask = self.masker_a(roi_features)
        boundary = self.masker_b(fine_roi_features, mask)
        mask = self.fuse(mask + self.to_mask(boundary))
        mask_logits = self.mask_logits(F.relu(self.mask_up(mask)))
        boundary_logits = self.boundary_logits(F.relu(self.boundary_up(boundary)))
        return mask_logits, boundary_logits


class SPPBoxHead(nn.Module):
    """SPP-net style box head: a spatial pyramid of max-pooled bins, then a two-layer MLP.

    Each region's RoIAlign grid (e.g. 8 x 8) is max-pooled into ``levels`` bin grids (1 x 1,
    2 x 2, 4 x 4 by default, He et al. 2015), the bins are concatenated
    (C * (1 + 4 + 16) values) and fed to two fully connected layers, instead of flattening one
    fixed 7 x 7 grid.
    """

    def __init__(self, in_channels: int, representation_size: int, levels: tuple[int, ...] = (1, 2, 4)) -> None:
        super().__init__()
        self.levels = tuple(levels)
        n_bins = sum(level * level for level in self.levels)
        self.fc6 = nn.Linear(in_channels * n_bins, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, roi_features: Tensor) -> Tensor:  # noqa: D102
        pyramid = [F.adaptive_max_pool2d(roi_features, level).flatten(1) for level in self.levels]
        x = torch.cat(pyramid, dim=1)
        return F.relu(self.fc7(F.relu(self.fc6(x))))
