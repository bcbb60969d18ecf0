"""Detector registry: ``build_model(name, **config)`` for dustrcnn, maskrcnn, fasterrcnn, sppnet (and the
``unet`` / ``unet_cbam`` segmenters of :mod:`marsdust.models.unet`, registered there by :func:`register_network`).

Each detector is a :class:`MarsDustDetector` (a torchvision ``GeneralizedRCNN``) with the
interface of torchvision's detection models: a list of CHW float images in [0, 1] in; a dict of
losses in training (given targets with ``boxes`` (N, 4) x0 y0 x1 y1 px, ``labels`` (N,) int64 in
1..num_classes and, for mask models, ``masks`` (N, H, W) uint8); a list of dicts ``boxes``,
``scores``, ``labels`` (and ``masks`` (N, 1, H, W) probabilities) in eval. All four share the
backbone, RPN and budget given by the :class:`DetectorConfig`; they differ in their RoI heads.
Every network :func:`build_model` returns is a :class:`RegisteredDetector` with this interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign

from marsdust.models.backbone import build_backbone, find_imagenet_weights, norm_layer_for, resolve_norm
from marsdust.models.config import DetectorConfig
from marsdust.models.heads import BoundaryPreservingMaskHead, SPPBoxHead
from marsdust.models.roi_heads import DustRoIHeads

PYRAMID_LEVELS = ["0", "1", "2", "3"]  # P2..P5 (strides 4, 8, 16, 32)


class NoResizeTransform(GeneralizedRCNNTransform):
    """Normalize and batch (pad to a multiple of 32 px) but never rescale.

    Our maps already come at the working resolution ``map_res_deg``; torchvision's resize to
    ``min_size`` would change the anchors' meaning in degrees.
    """

    input_norm: str = "fixed"
    """``DetectorConfig.input_norm``: ``per_map`` / ``per_map_60`` standardize each input by its own observed pixels."""
    res_deg: float = 0.0
    """``DetectorConfig.map_res_deg`` (tells a whole global map from others under ``per_map_60``)."""

    def resize(self, image, target=None):  # noqa: D102
        return image, target

    def normalize(self, image):  # noqa: D102
        if self.input_norm == "fixed":
            return super().normalize(image)
        return standardize_observed(image, self.res_deg if self.input_norm == "per_map_60" else None)

    def postprocess(self, result, image_shapes, original_image_sizes):
        """torchvision's, except that masks outlined in enlarged boxes (``mask_boxes``,
        ``DetectorConfig.mask_box_scale``) are pasted into those boxes."""
        if self.training:
            return result
        mask_boxes = [pred.pop("mask_boxes", None) for pred in result]
        own_masks = [pred.pop("masks") if boxes is not None else None for pred, boxes in zip(result, mask_boxes)]
        result = super().postprocess(result, image_shapes, original_image_sizes)
        for pred, boxes, masks, size in zip(result, mask_boxes, own_masks, original_image_sizes):
            if boxes is not None:  # no resize here: the boxes are in the input's pixels
                pred["masks"], pred["mask_boxes"] = paste_masks_in_image(masks, boxes, size), boxes
        return result


STATISTICS_LAT_DEG = 60.0
"""``input_norm="per_map_60"`` takes a global map's statistics between this latitude south and north."""


def statistics_rows(height: int, res_deg: float | None):
    """``(H,)`` bool: the rows of an input whose pixels set its statistics (:func:`standardize_observed`).

    With ``res_deg`` and an input of ``height * res_deg`` = 180° (a whole global map, centred on the equator) the
    rows centred within :data:`STATISTICS_LAT_DEG` of the equator; otherwise (``res_deg`` None, a MOC map, whose rows
    all lie there, or a part of a map cut by rows) every row.
    """
    import torch

    if res_deg is None or abs(height * res_deg - 180.0) > 0.5 * res_deg:
        return torch.ones(height, dtype=torch.bool)
    lat_deg = 90.0 - (torch.arange(height, dtype=torch.float64) + 0.5) * res_deg
    return lat_deg.abs() <= STATISTICS_LAT_DEG


def standardize_observed(image, res_deg: float | None = None):
    """Each band of a ``(C, H, W)`` [0, 1] image standardized by its observed pixels.

    A pixel is observed where the map (the first three bands) is not 0 in every band; bands beyond
    the third (reference bands, :mod:`marsdust.reference`) count only where they, too, are not 0
    in every band (0 = no earlier observation). Observed pixels get mean 0 and standard deviation 1
    per band (over the rows of :func:`statistics_rows`: with ``res_deg``, a global map's 60°S–60°N;
    ``input_norm="per_map_60"``); the others get :data:`marsdust.models.config.MISSING_INPUT_VALUE`.
    An image without observed pixels (in those rows) is all missing; a band without spread is only centred.
    """
    import torch

    map_bands = min(3, image.shape[0])
    observed = (image[:map_bands] != 0).any(dim=0)
    rows = statistics_rows(image.shape[-2], res_deg).to(image.device)[:, None]
    out = _standardize_where(image[:map_bands], observed, rows)
    if image.shape[0] > map_bands:
        extra = image[map_bands:]
        out = torch.cat([out, _standardize_where(extra, observed & (extra != 0).any(dim=0), rows)])
    return out


def _standardize_where(bands, observed, rows):
    """``bands`` standardized per band over the ``observed`` pixels of ``rows``; the unobserved set to the missing
    value."""
    import torch

    from marsdust.models.config import MISSING_INPUT_VALUE

    counted = observed & rows
    count = counted.sum()
    if int(count) == 0:
        return torch.full_like(bands, MISSING_INPUT_VALUE)
    weight = counted.to(bands.dtype)
    mean = (bands * weight).sum(dim=(1, 2)) / count
    var = (((bands - mean[:, None, None]) * weight) ** 2).sum(dim=(1, 2)) / count
    std = torch.sqrt(var).clamp_min(1e-3)
    out = (bands - mean[:, None, None]) / std[:, None, None]
    return torch.where(observed, out, torch.full_like(out, MISSING_INPUT_VALUE))


class RegisteredDetector:
    """What every network :func:`build_model` returns is (mixin of :class:`MarsDustDetector` and
    :class:`marsdust.models.unet.UNetDetector`): an ``nn.Module`` with the torchvision detection interface
    of this module's docstring, ``model_name`` (its registry name), ``config`` (the resolved
    :class:`DetectorConfig`) and ``has_masks``; checkpoints (:mod:`marsdust.models.checkpoint`) store and
    rebuild exactly these."""

    model_name: str
    config: DetectorConfig


class MarsDustDetector(GeneralizedRCNN, RegisteredDetector):
    """A torchvision two-stage detector that knows its registry name and config.

    Attributes
    ----------
    model_name : str
        Registry name (``dustrcnn``, ``maskrcnn``, ``fasterrcnn``, ``sppnet``).
    config : DetectorConfig
        The resolved configuration (``norm`` resolved; enough to rebuild the network).
    """

    def __init__(self, backbone, rpn, roi_heads, transform, model_name: str, config: DetectorConfig) -> None:
        super().__init__(backbone, rpn, roi_heads, transform)
        self.model_name = model_name
        self.config = config

    @property
    def has_masks(self) -> bool:
        """True when the detector predicts instance masks."""
        return self.roi_heads.has_mask()


@dataclass(frozen=True)
class ModelSpec:
    """A registered detector: name, one-line description, and either the builder of its RoI heads (a
    :class:`MarsDustDetector`) or the builder of the whole network (``build_network(name, config)``)."""

    name: str
    description: str
    build_roi_heads: Callable[[DetectorConfig, str], DustRoIHeads] | None = None
    build_network: Callable[[str, DetectorConfig], RegisteredDetector] | None = None


MODEL_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, description: str):
    """Decorator registering ``fn(config, norm) -> DustRoIHeads`` under ``name`` (a :class:`MarsDustDetector`)."""

    def decorator(fn):
        _register(ModelSpec(name, description, build_roi_heads=fn))
        return fn

    return decorator


def register_network(name: str, description: str):
    """Decorator registering ``fn(name, config) -> RegisteredDetector`` under ``name``: a network that is not a
    two-stage R-CNN; its config comes with ``norm`` resolved for random initialization."""

    def decorator(fn):
        _register(ModelSpec(name, description, build_network=fn))
        return fn

    return decorator


def _register(spec: ModelSpec) -> None:
    if spec.name in MODEL_REGISTRY:
        raise ValueError(f"detector {spec.name!r} is already registered")
    MODEL_REGISTRY[spec.name] = spec


def available_models() -> dict[str, str]:
    """Registered detector names and their one-line descriptions."""
    return {name: spec.description for name, spec in MODEL_REGISTRY.items()}


def default_config(name: str) -> DetectorConfig:
    """Default configuration of detector ``name``."""
    _spec(name)
    return DetectorConfig()


def build_model(name: str, config: DetectorConfig | None = None, **overrides: Any) -> RegisteredDetector:
    """Build detector ``name`` from a config (a :class:`DetectorConfig`, keyword fields, or both).

    Parameters
    ----------
    name : str
        A name of :func:`available_models` (``dustrcnn``, ``maskrcnn``, ``fasterrcnn``, ``sppnet``,
        ``unet``, ``unet_cbam``).
    config : DetectorConfig, optional
        Base configuration (default: :class:`DetectorConfig` defaults).
    **overrides
        Fields of :class:`DetectorConfig` to change, e.g. ``fpn_channels=64, in_channels=5``.

    Returns
    -------
    RegisteredDetector
        With ``.model_name`` and ``.config`` (``norm`` resolved).
    """
    spec = _spec(name)
    base = config if config is not None else DetectorConfig()
    cfg = DetectorConfig.from_dict({**base.to_dict(), **overrides}, source=f"build_model({name!r})")
    if spec.build_network is not None:  # no ImageNet backbone: random initialization
        return spec.build_network(name, cfg.replace(norm=resolve_norm(cfg, None)))
    weights = find_imagenet_weights(cfg)
    norm = resolve_norm(cfg, weights)
    cfg = cfg.replace(norm=norm)
    backbone = build_backbone(cfg, norm, weights)
    rpn = _build_rpn(cfg)
    roi_heads = spec.build_roi_heads(cfg, norm)
    transform = NoResizeTransform(
        min_size=1, max_size=1_000_000, image_mean=cfg.band_mean, image_std=cfg.band_std, size_divisible=32
    )
    transform.input_norm, transform.res_deg = cfg.input_norm, float(cfg.map_res_deg)
    return MarsDustDetector(backbone, rpn, roi_heads, transform, name, cfg)


def _spec(name: str) -> ModelSpec:
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown detector {name!r}; available: {sorted(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[name]


def _build_rpn(cfg: DetectorConfig) -> RegionProposalNetwork:
    sizes = tuple((size,) for size in cfg.anchor_sizes_px)
    ratios = (tuple(cfg.anchor_aspect_ratios),) * len(sizes)
    anchors = AnchorGenerator(sizes=sizes, aspect_ratios=ratios)
    head = RPNHead(cfg.fpn_channels, anchors.num_anchors_per_location()[0])
    return RegionProposalNetwork(
        anchors,
        head,
        fg_iou_thresh=cfg.rpn_fg_iou_thresh,
        bg_iou_thresh=cfg.rpn_bg_iou_thresh,
        batch_size_per_image=cfg.rpn_batch_size_per_image,
        positive_fraction=0.5,
        pre_nms_top_n={"training": cfg.rpn_pre_nms_top_n_train, "testing": cfg.rpn_pre_nms_top_n_test},
        post_nms_top_n={"training": cfg.rpn_post_nms_top_n_train, "testing": cfg.rpn_post_nms_top_n_test},
        nms_thresh=cfg.rpn_nms_thresh,
    )


def _roi_heads(cfg: DetectorConfig, box_roi_pool, box_head, box_out: int, **mask_parts) -> DustRoIHeads:
    return DustRoIHeads(
        box_roi_pool,
        box_head,
        FastRCNNPredictor(box_out, cfg.num_classes + 1),
        fg_iou_thresh=cfg.box_fg_iou_thresh,
        bg_iou_thresh=cfg.box_bg_iou_thresh,
        batch_size_per_image=cfg.box_batch_size_per_image,
        positive_fraction=cfg.box_positive_fraction,
        bbox_reg_weights=None,
        score_thresh=cfg.box_score_thresh,
        nms_thresh=cfg.box_nms_thresh,
        detections_per_img=cfg.box_detections_per_img,
        box_reg_loss=cfg.box_reg_loss,
        dice_smooth=cfg.dice_smooth,
        boundary_loss_weight=cfg.boundary_loss_weight,
        mask_box_scale=cfg.mask_box_scale,
        **mask_parts,
    )


def _fc_box_parts(cfg: DetectorConfig):
    pool = MultiScaleRoIAlign(PYRAMID_LEVELS, output_size=7, sampling_ratio=2)
    head = TwoMLPHead(cfg.fpn_channels * 7 * 7, cfg.representation_size)
    return pool, head


@register_model("dustrcnn", "the paper's Mask R-CNN: MaskerA + MaskerB (boundary-preserving) mask head, Dice loss")
def _dustrcnn_heads(cfg: DetectorConfig, norm: str) -> DustRoIHeads:
    pool, head = _fc_box_parts(cfg)
    conv_norm = norm_layer_for("group") if norm == "group" else None
    return _roi_heads(
        cfg,
        pool,
        head,
        cfg.representation_size,
        mask_roi_pool=MultiScaleRoIAlign(PYRAMID_LEVELS, output_size=cfg.mask_roi_size, sampling_ratio=2),
        mask_head=BoundaryPreservingMaskHead(cfg.fpn_channels, cfg.mask_head_channels, cfg.num_classes + 1, conv_norm),
        boundary_roi_pool=MultiScaleRoIAlign(["0"], output_size=cfg.boundary_roi_size, sampling_ratio=2),
        mask_loss="dice",
    )


@register_model("maskrcnn", "standard Mask R-CNN baseline: torchvision mask head, per-pixel BCE mask loss")
def _maskrcnn_heads(cfg: DetectorConfig, norm: str) -> DustRoIHeads:
    pool, head = _fc_box_parts(cfg)
    conv_norm = norm_layer_for("group") if norm == "group" else None
    channels = cfg.mask_head_channels
    return _roi_heads(
        cfg,
        pool,
        head,
        cfg.representation_size,
        mask_roi_pool=MultiScaleRoIAlign(PYRAMID_LEVELS, output_size=cfg.mask_roi_size, sampling_ratio=2),
        mask_head=MaskRCNNHeads(cfg.fpn_channels, [channels] * 4, dilation=1, norm_layer=conv_norm),
        mask_predictor=MaskRCNNPredictor(channels, channels, cfg.num_classes + 1),
        mask_loss="bce",
    )


@register_model("fasterrcnn", "boxes only (the paper's 'Fast R-CNN' baseline): FC box head on 7x7 RoIAlign")
def _fasterrcnn_heads(cfg: DetectorConfig, norm: str) -> DustRoIHeads:
    pool, head = _fc_box_parts(cfg)
    return _roi_heads(cfg, pool, head, cfg.representation_size)


@register_model("sppnet", "boxes only, SPP-net box head: 1x1/2x2/4x4 spatial pyramid of each RoI, then an MLP")
def _sppnet_heads(cfg: DetectorConfig, norm: str) -> DustRoIHeads:
    finest = max(cfg.spp_levels)
    pool = MultiScaleRoIAlign(PYRAMID_LEVELS, output_size=2 * finest, sampling_ratio=2)
    head = SPPBoxHead(cfg.fpn_channels, cfg.representation_size, cfg.spp_levels)
    return _roi_heads(cfg, pool, head, cfg.representation_size)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
