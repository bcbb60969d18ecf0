"""U-Net segmenters ``unet`` and ``unet_cbam``: the field's semantic-segmentation approach beside the R-CNNs.

A U-Net (Ronneberger et al. 2015) gives each pixel a storm probability; Venturini et al. (2025) add CBAM
attention (Woo et al. 2018: channel attention, then spatial attention) after its convolution blocks.
``unet_cbam`` is the same network with CBAM after every block, so the two measure the attention alone.
Both take the detectors' inputs (the map's R, G, B and the reference bands ``in_channels`` counts, in
[0, 1], missing pixels 0) and give the detectors' outputs, so training, ``detect``, ``evaluate``,
``track`` and every product run them unchanged:

- **training** (``model(images, targets)``): :func:`masked_pixel_losses` (BCE with
  ``unet_pos_weight`` on storm pixels + soft Dice) against the union of the instances' masks of each
  class (:func:`pixel_targets`). Pixels that do not count: missing data (pixels whose map bands are
  all 0, as :func:`marsdust.models.registry.standardize_observed` decides), the batch's padding, and
  the masks of instances whose ``mask_supervised`` is False (in outline mode the catalogue rows
  without an outline, whose mask is only a fallback box: the storm lies somewhere in it, its shape
  is unknown) unless an outlined instance covers them — except the box's core (:func:`box_cores`,
  ``unet_box_core`` of the inscribed ellipse around the centroid), which counts as storm: the one
  weak pixel label a centroid and an area give, without which a U-Net learns nothing from the
  MOC years' v1.0 table. The rest of such a map counts as background, like a map without storms.
- **inference** (``model(images)``): the probability map of each class, set to 0 on missing pixels,
  is cut at ``unet_pixel_threshold`` into connected components
  (:func:`marsdust.grid.wrapped_components`, 8-connected). An input exactly 360° wide
  (``width * map_res_deg == 360``) is a whole-longitude map whose first and last columns are
  neighbours: a storm across the 180° seam is one instance, its box ``x1`` past the width
  (:func:`marsdust.grid.wrap_aware_bbox`). Any other input (``detect``'s wrap-padded maps, tiles)
  has edges. Each component is an instance: ``score`` the mean probability inside it, ``boxes`` its
  pixel box, ``masks`` (1, H, W) its probabilities inside it and 0 elsewhere; at most
  ``box_detections_per_img`` per image, highest scores first.

The network runs on the whole input (padded to a multiple of ``2**unet_depth``), and ``detect`` gives it
each wrap-padded map whole, untiled (:attr:`UNetDetector.runs_whole_map`). It has no backbone + RPN for
the ONNX engine: ``detect`` runs it with the ``plain`` engine (``model(images)``) and ``export-onnx``
refuses it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from marsdust.grid import wrap_aware_bbox, wrapped_components
from marsdust.models.backbone import norm_layer_for
from marsdust.models.config import DetectorConfig
from marsdust.models.losses import masked_pixel_losses
from marsdust.models.registry import RegisteredDetector, register_network, standardize_observed

MAP_BANDS = 3
"""Leading input bands that are the map itself (R, G, B): a pixel is observed where one of them is not 0."""


class ChannelAttention(nn.Module):
    """CBAM's channel attention: a shared MLP on the average- and max-pooled channels, sigmoid, rescale."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        weights = self.mlp(x.mean(dim=(2, 3), keepdim=True)) + self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return x * torch.sigmoid(weights)


class SpatialAttention(nn.Module):
    """CBAM's spatial attention: a 7 x 7 convolution of the channel-wise mean and max, sigmoid, rescale."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class CBAM(nn.Sequential):
    """Convolutional block attention module (Woo et al. 2018): channel attention, then spatial attention."""

    def __init__(self, channels: int) -> None:
        super().__init__(ChannelAttention(channels), SpatialAttention())


class ConvBlock(nn.Sequential):
    """Two 3 x 3 convolutions, each with normalization and ReLU, then CBAM when ``attention``."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, attention: bool) -> None:
        norm_layer = norm_layer_for(norm)
        layers = []
        for channels in (in_channels, out_channels):
            layers += [nn.Conv2d(channels, out_channels, 3, padding=1, bias=False), norm_layer(out_channels),
                       nn.ReLU(inplace=True)]
        if attention:
            layers.append(CBAM(out_channels))
        super().__init__(*layers)


class UNet(nn.Module):
    """Encoder-decoder with skip connections: ``(N, C, H, W)`` → ``(N, out_channels, H, W)`` logits.

    Level ``i`` has ``base_channels * 2**i`` channels (``i = 0 .. depth``); max-pooling down, transposed
    convolutions up. ``H`` and ``W`` must be multiples of ``2**depth``.
    """

    def __init__(self, in_channels: int, out_channels: int, base_channels: int, depth: int, norm: str,
                 attention: bool) -> None:
        super().__init__()
        widths = [base_channels * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([ConvBlock(in_channels, widths[0], norm, attention)]
                                  + [ConvBlock(widths[i], widths[i + 1], norm, attention) for i in range(depth)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth)])
        self.merge = nn.ModuleList([ConvBlock(2 * widths[i], widths[i], norm, attention) for i in range(depth)])
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for level in reversed(range(len(self.up))):
            x = self.merge[level](torch.cat([skips.pop(), self.up[level](x)], dim=1))
        return self.head(x)


class UNetDetector(nn.Module, RegisteredDetector):
    """A :class:`UNet` with the detectors' interface (see the module docstring for the rules).

    Parameters
    ----------
    model_name : str
        Registry name (``unet`` or ``unet_cbam``).
    config : DetectorConfig
        Resolved configuration (``norm`` resolved).
    attention : bool
        CBAM after every convolution block.
    """

    runs_whole_map = True
    """``detect`` gives it whole wrap-padded maps, never tiles (:func:`marsdust.detect.settings.untiled_if_whole_map`):
    a tile edge would cut its connected components."""

    def __init__(self, model_name: str, config: DetectorConfig, attention: bool) -> None:
        super().__init__()
        if config.norm == "frozen_bn":
            raise ValueError(f"{model_name}: norm 'frozen_bn' freezes pretrained statistics, and a U-Net starts from "
                             "random weights; use norm 'group' or 'batch' (or 'auto': group)")
        self.model_name = model_name
        self.config = config
        self.net = UNet(config.in_channels, config.num_classes, config.unet_channels, config.unet_depth,
                        config.norm, attention)
        self.register_buffer("band_mean", torch.tensor(config.band_mean).reshape(-1, 1, 1), persistent=False)
        self.register_buffer("band_std", torch.tensor(config.band_std).reshape(-1, 1, 1), persistent=False)

    @property
    def has_masks(self) -> bool:
        """True: every instance has a mask."""
        return True

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        """Losses (training, ``targets`` given) or one dict of instances per image (eval)."""
        if self.training and targets is None:
            raise ValueError(f"{self.model_name}: targets are required in training mode")
        batch, observed, sizes = self.batch_inputs(images)
        logits = self.net(batch)
        if self.training:
            counted = torch.zeros_like(logits, dtype=torch.bool)
            positive = torch.zeros_like(counted)
            for i, (target, (height, width)) in enumerate(zip(targets, sizes)):
                positive[i, :, :height, :width], counted[i, :, :height, :width] = pixel_targets(
                    target, observed[i, :height, :width], self.config.num_classes, self.config.unet_box_core)
            return masked_pixel_losses(logits, positive, counted, self.config.unet_pos_weight)
        probabilities = torch.sigmoid(logits.float())
        return [self.instances(probabilities[i, :, :height, :width], observed[i, :height, :width])
                for i, (height, width) in enumerate(sizes)]

    def batch_inputs(self, images: list[Tensor]) -> tuple[Tensor, Tensor, list[tuple[int, int]]]:
        """Normalized images zero-padded into one ``(N, C, H', W')`` batch (``H', W'`` multiples of
        ``2**unet_depth``), their observed pixels ``(N, H', W')`` bool (False in the padding) and sizes."""
        for k, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != self.config.in_channels:
                raise ValueError(f"{self.model_name}: image {k} has shape {tuple(image.shape)}, expected "
                                 f"({self.config.in_channels}, H, W)")
        sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        step = 2 ** self.config.unet_depth
        height = -(-max(h for h, _ in sizes) // step) * step
        width = -(-max(w for _, w in sizes) // step) * step
        batch = images[0].new_zeros((len(images), self.config.in_channels, height, width))
        observed = torch.zeros((len(images), height, width), dtype=torch.bool, device=images[0].device)
        for i, (image, (h, w)) in enumerate(zip(images, sizes)):
            observed[i, :h, :w] = (image[:MAP_BANDS] != 0).any(dim=0)
            if self.config.input_norm != "fixed":
                res_deg = self.config.map_res_deg if self.config.input_norm == "per_map_60" else None
                batch[i, :, :h, :w] = standardize_observed(image, res_deg)
            else:
                batch[i, :, :h, :w] = (image - self.band_mean) / self.band_std
        return batch, observed, sizes

    def instances(self, probabilities: Tensor, observed: Tensor) -> dict[str, Tensor]:
        """One image's instances from its ``(K, H, W)`` class probabilities (module docstring, inference)."""
        height, width = probabilities.shape[-2:]
        device = probabilities.device
        wraps = int(round(360.0 / self.config.map_res_deg)) == width
        seen = observed.cpu().numpy()
        found = []  # (score, class index, component labels, component number, probabilities)
        for k in range(probabilities.shape[0]):
            prob = probabilities[k].cpu().numpy() * seen
            labels, n = wrapped_components(prob >= self.config.unet_pixel_threshold, wraps)
            if n:
                sums = np.bincount(labels.ravel(), weights=prob.ravel(), minlength=n + 1)[1:]
                means = sums / np.bincount(labels.ravel(), minlength=n + 1)[1:]
                found += [(float(means[j]), k, labels, j + 1, prob) for j in range(n)]
        found.sort(key=lambda item: -item[0])
        found = found[: self.config.box_detections_per_img]
        masks = np.zeros((len(found), 1, height, width), dtype=np.float32)
        boxes = np.zeros((len(found), 4), dtype=np.float32)
        for row, (_, _, labels, number, prob) in enumerate(found):
            inside = labels == number
            masks[row, 0][inside] = prob[inside]
            boxes[row] = wrap_aware_bbox(inside)
        return {"boxes": torch.from_numpy(boxes).to(device),
                "labels": torch.tensor([k + 1 for _, k, *_ in found], dtype=torch.int64, device=device),
                "scores": torch.tensor([s for s, *_ in found], dtype=torch.float32, device=device),
                "masks": torch.from_numpy(masks).to(device)}


def pixel_targets(target: dict, observed: Tensor, num_classes: int, box_core: float = 0.0) -> tuple[Tensor, Tensor]:
    """Per-pixel targets of one image: ``(positive, counted)``, both ``(num_classes, H, W)`` bool.

    ``positive[k]``: inside a mask of an instance of class ``k + 1`` whose ``mask_supervised`` is True
    (every instance when the key is absent), or inside the core (:func:`box_cores` with ``box_core``)
    of the mask of one whose ``mask_supervised`` is False; ``counted[k]``: observed and not inside the
    mask of an instance of class ``k + 1`` without mask supervision, unless ``positive[k]`` (module
    docstring).

    Raises
    ------
    ValueError
        Target masks of another size than the image.
    """
    masks = target["masks"].to(device=observed.device, dtype=torch.bool)
    if masks.numel() and tuple(masks.shape[-2:]) != tuple(observed.shape):
        raise ValueError(f"target masks of size {tuple(masks.shape[-2:])} for an image of size "
                         f"{tuple(observed.shape)} (map {target.get('map_id', '?')})")
    labels = target["labels"].to(observed.device)
    supervised = target.get("mask_supervised")
    supervised = (torch.ones_like(labels, dtype=torch.bool) if supervised is None
                  else supervised.to(device=observed.device, dtype=torch.bool))
    positive = torch.zeros((num_classes, *observed.shape), dtype=torch.bool, device=observed.device)
    unknown = torch.zeros_like(positive)
    for k in range(num_classes):
        of_class = labels == k + 1
        if bool((of_class & supervised).any()):
            positive[k] = masks[of_class & supervised].any(dim=0)
        weak = of_class & ~supervised
        if bool(weak.any()):
            unknown[k] = masks[weak].any(dim=0)
            if box_core > 0:
                cores = box_cores(target["boxes"][weak].to(observed.device), tuple(observed.shape), box_core)
                positive[k] |= (masks[weak] & cores).any(dim=0)
    counted = observed.unsqueeze(0) & (positive | ~unknown)
    return positive, counted


def box_cores(boxes: Tensor, shape: tuple[int, int], fraction: float) -> Tensor:
    """``(n, H, W)`` bool: the pixels (by centre) of the ellipse inscribed in each ``[x0, y0, x1, y1]`` box
    of an ``(H, W)`` image, its half-axes scaled by ``fraction`` around the box centre (area ``fraction²·π/4``
    of the box's). Used as weak storm pixels of box-only catalogue rows (:func:`pixel_targets`)."""
    height, width = shape
    boxes = boxes.to(torch.float32).reshape(-1, 4)
    centre_x = (0.5 * (boxes[:, 0] + boxes[:, 2])).reshape(-1, 1, 1)
    centre_y = (0.5 * (boxes[:, 1] + boxes[:, 3])).reshape(-1, 1, 1)
    half_x = (0.5 * fraction * (boxes[:, 2] - boxes[:, 0])).clamp(min=0.5).reshape(-1, 1, 1)
    half_y = (0.5 * fraction * (boxes[:, 3] - boxes[:, 1])).clamp(min=0.5).reshape(-1, 1, 1)
    rows = torch.arange(height, dtype=torch.float32, device=boxes.device).reshape(1, -1, 1) + 0.5
    cols = torch.arange(width, dtype=torch.float32, device=boxes.device).reshape(1, 1, -1) + 0.5
    return ((cols - centre_x) / half_x) ** 2 + ((rows - centre_y) / half_y) ** 2 <= 1.0


@register_network("unet", "U-Net segmenter (semantic segmentation, Venturini et al. 2025's baseline): BCE + "
                          "Dice on observed pixels, instances = connected components joined across 180°")
def _unet(name: str, config: DetectorConfig) -> UNetDetector:
    return UNetDetector(name, config, attention=False)


@register_network("unet_cbam", "the unet with CBAM attention (channel + spatial, Woo et al. 2018) after every "
                               "convolution block, as Venturini et al. 2025")
def _unet_cbam(name: str, config: DetectorConfig) -> UNetDetector:
    return UNetDetector(name, config, attention=True)
