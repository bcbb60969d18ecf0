"""ResNet + FPN backbones for the detectors (torchvision building blocks).

ImageNet weights are used only when they are already on disk (a local file the user names, or
torch's hub cache); nothing is downloaded. Otherwise the backbone starts from random weights; when
that was not asked for (``backbone_weights="auto"`` found no weights) it says so once through :mod:`logging`.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool

from marsdust.models.config import DetectorConfig

log = logging.getLogger(__name__)

_RESNETS = {
    "resnet18": (resnet.resnet18, resnet.ResNet18_Weights.IMAGENET1K_V1, [64, 128, 256, 512]),
    "resnet34": (resnet.resnet34, resnet.ResNet34_Weights.IMAGENET1K_V1, [64, 128, 256, 512]),
    "resnet50": (resnet.resnet50, resnet.ResNet50_Weights.IMAGENET1K_V1, [256, 512, 1024, 2048]),
}
_said_random_init = False


def group_norm(num_channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups where the channel count allows it (fewer for thin layers)."""
    for groups in (32, 16, 8, 4, 2, 1):
        if num_channels % groups == 0 and num_channels // groups >= 2 or groups == 1:
            return nn.GroupNorm(groups, num_channels)
    raise AssertionError("unreachable")


def norm_layer_for(norm: str):
    """Normalization layer factory for a resolved ``DetectorConfig.norm``."""
    return {"group": group_norm, "frozen_bn": FrozenBatchNorm2d, "batch": nn.BatchNorm2d}[norm]


def hub_cache_path(backbone: str) -> Path:
    """Where torch's hub cache would hold the ImageNet weights of ``backbone`` (no network)."""
    url = _RESNETS[backbone][1].url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def find_imagenet_weights(config: DetectorConfig) -> Path | None:
    """Resolve ``config.backbone_weights`` to an existing local file, or None for random init.

    Raises
    ------
    FileNotFoundError
        If the user named a weights file that does not exist.
    """
    choice = config.backbone_weights
    if choice is None or choice in ("none", "checkpoint"):
        return None
    if choice == "auto":
        cached = hub_cache_path(config.backbone)
        return cached if cached.is_file() else None
    path = Path(choice).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"backbone_weights: no weights file at {path} (expected a torchvision ResNet .pth)")
    return path


def resolve_norm(config: DetectorConfig, weights: Path | None) -> str:
    """``auto`` -> frozen BN when ImageNet weights are loaded, GroupNorm for random init."""
    if config.norm != "auto":
        return config.norm
    return "frozen_bn" if weights is not None else "group"


class NoExtraLevel(ExtraFPNBlock):
    """FPN extra block that adds nothing: the pyramid is P2-P5 as in the paper."""

    def forward(self, results, x, names):  # noqa: D102  (see ExtraFPNBlock)
        return results, names


def build_backbone(config: DetectorConfig, norm: str, weights: Path | None) -> BackboneWithFPN:
    """ResNet body with ``config.in_channels`` input bands + FPN (P2-P5, or P2-P6).

    Parameters
    ----------
    config : DetectorConfig
        Backbone name, bands, FPN width and number of anchor levels.
    norm : str
        Resolved normalization (``group``, ``frozen_bn`` or ``batch``).
    weights : Path or None
        Local ImageNet weights file, or None for random initialization.
    """
    global _said_random_init
    constructor, _, stage_channels = _RESNETS[config.backbone]
    body = constructor(weights=None, norm_layer=norm_layer_for(norm))
    if weights is not None:
        _load_imagenet_weights(body, weights, norm)
        log.info("backbone %s: ImageNet weights from %s", config.backbone, weights)
    elif not _said_random_init and config.backbone_weights == "auto":  # None / "none": random init was asked for
        log.warning(
            "backbone %s starts from random weights (no local ImageNet weights; pass backbone_weights=FILE "
            "or put them in %s)",
            config.backbone,
            hub_cache_path(config.backbone).parent,
        )
        _said_random_init = True
    if config.in_channels != 3:
        body.conv1 = _adapt_first_conv(body.conv1, config.in_channels)
    _freeze_stages(body, config.trainable_backbone_layers if weights is not None else 5)
    extra = LastLevelMaxPool() if len(config.anchor_sizes_native_px) == 5 else NoExtraLevel()
    return BackboneWithFPN(
        body,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=stage_channels,
        out_channels=config.fpn_channels,
        extra_blocks=extra,
        norm_layer=group_norm if norm == "group" else None,
    )


def _load_imagenet_weights(body: nn.Module, path: Path, norm: str) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (any unreadable file)
        raise ValueError(f"backbone_weights: cannot read {path}: {error}") from error
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = OrderedDict((k, v) for k, v in state.items() if not k.startswith("fc."))
    if norm == "group":  # BN running statistics have no GroupNorm counterpart
        state = OrderedDict((k, v) for k, v in state.items() if "running_" not in k and "num_batches" not in k)
    missing, unexpected = body.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if unexpected or missing:
        raise ValueError(f"backbone_weights {path} do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """conv1 for ``in_channels`` bands: RGB filters kept, extra bands start from their mean."""
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)
    with torch.no_grad():
        rgb = conv.weight
        n_keep = min(3, in_channels)
        new.weight[:, :n_keep] = rgb[:, :n_keep]
        if in_channels > 3:
            new.weight[:, 3:] = rgb.mean(dim=1, keepdim=True)
        new.weight.mul_(3.0 / in_channels)  # keep the response scale of the RGB filters
    return new


def _freeze_stages(body: nn.Module, trainable_layers: int) -> None:
    stages = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        stages.append("bn1")
    for name, parameter in body.named_parameters():
        if all(not name.startswith(stage) for stage in stages):
            parameter.requires_grad_(False)
