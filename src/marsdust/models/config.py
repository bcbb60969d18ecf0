"""Configuration of a marsdust detector (one dataclass, detectron2 style).

A detector is fully described by its registry name and a :class:`DetectorConfig`; checkpoints
store both, so :func:`marsdust.models.load_model` rebuilds the right network with no other input.

Why the defaults are *compact* and ``norm="auto"`` is GroupNorm for random init: see
docs/benchmark-notes.md, "Measurements behind defaults".

The time of the stock configuration goes to (a) the 256-channel FPN and RPN convolutions on
the full-resolution P2 level, (b) 512 sampled RoIs per image through a 12.8M-parameter FC box
head (256*7*7 -> 1024 -> 1024), (c) 2000 RPN proposals per image through NMS and RoIAlign,
and (d) the 256-channel mask head on every positive RoI. The compact default shrinks each of
these (FPN 128 ch, 600/300 proposals in training and 300/100 at test time, 128 RoIs per image,
a 256-d box head, at most 50 detections per map).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from marsdust.reference import DEFAULT_REFERENCE_SOLS, ReferenceConfig
from marsdust.schema import check_mask_box_scale

#: Native resolution (degrees per pixel) of the MOC MDGMs the paper's anchors refer to.
NATIVE_RES_DEG = 0.1

#: ImageNet mean / std of the R, G, B bands (images scaled to [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Mean / std used for any band beyond the third (e.g. a reference or cloud channel).
EXTRA_BAND_MEAN = 0.449
EXTRA_BAND_STD = 0.226

BACKBONES = ("resnet18", "resnet34", "resnet50")
NORMS = ("auto", "group", "frozen_bn", "batch")
INPUT_NORMS = ("fixed", "per_map", "per_map_60")
#: Network input value of missing (black) pixels under ``input_norm="per_map"`` / ``"per_map_60"`` (observed
#: pixels have mean 0 and standard deviation 1 per band).
MISSING_INPUT_VALUE = -3.0


@dataclass
class DetectorConfig:
    """Every knob of a marsdust detector.

    Pixel sizes refer to the *working resolution* ``map_res_deg`` at which the model sees maps
    (``marsdust.data`` and ``marsdust.detect`` resample maps to it).

    Attributes
    ----------
    num_classes : int
        Number of foreground classes (1 = dust; 2 = dust + water-ice cloud).
    in_channels : int
        Number of input bands (3 = RGB; more bands, e.g. reference channels, adapt conv1).
    image_mean, image_std : tuple of float or None
        Per-band normalization of [0, 1] images; None = ImageNet values for R, G, B and
        ``EXTRA_BAND_MEAN/STD`` for further bands. Used when ``input_norm`` is ``fixed``.
    input_norm : str
        ``fixed``: subtract ``image_mean`` and divide by ``image_std`` (torchvision's way);
        ``per_map``: standardize each band of each input by the mean and standard deviation of
        its own observed (not black) pixels, so that a map's overall brightness, contrast and
        colour balance — which differ between cameras, missions and map processing — do not
        reach the network; missing pixels become :data:`MISSING_INPUT_VALUE`;
        ``per_map_60``: the same, with the mean and standard deviation taken over the observed pixels between
        60°S and 60°N only (:data:`marsdust.models.registry.STATISTICS_LAT_DEG`): every pixel of a MOC map, the
        band of a global MARCI map that MOC also images. A global map's polar caps and hood, bright in blue,
        would otherwise set its statistics (on the synthetic MARCI maps the blue band's standard deviation is
        2.1 times that between 60°S and 60°N: ``benchmarks/band_statistics.py``) and dim every storm a detector
        learnt on MOC maps expects to see.
    backbone : str
        ``resnet18``, ``resnet34`` or ``resnet50`` (+ FPN on conv2-conv5).
    backbone_weights : str or None
        ``"auto"``: ImageNet weights if torch's hub cache already holds them, else random init;
        a file path: load that local file; None: random init; ``"checkpoint"``: weights come
        from a checkpoint (set by ``load_model``). Nothing is ever downloaded.
    trainable_backbone_layers : int
        0-5 ResNet stages left trainable (only relevant with pretrained weights).
    norm : str
        Normalization in backbone, FPN and conv heads: ``group`` (GroupNorm, good for batch 2
        and random init), ``frozen_bn`` (torchvision's choice with ImageNet weights), ``batch``,
        or ``auto`` (frozen_bn with ImageNet weights, else group). The built model stores the
        resolved value.
    fpn_channels : int
        FPN output channels (stock 256).
    map_res_deg : float
        Working resolution in degrees per pixel (0.4 deg -> 300 x 900 px for 60S-60N).
    anchor_sizes_native_px : tuple of float
        Anchor sizes in pixels *at the native 0.1 deg resolution*, one per pyramid level
        P2, P3, P4, P5 (paper: 32, 64, 128, 256). A fifth entry adds a P6 level (max-pooled P5)
        for area-sized labels of very large storms (e.g. 512 -> 128 px at 0.4 deg). The model
        uses ``anchor_sizes_px`` = these * 0.1 / map_res_deg.
    anchor_aspect_ratios : tuple of float
        Height/width ratios of the anchors (paper: 1:2, 1:1, 2:1).
    rpn_fg_iou_thresh, rpn_bg_iou_thresh : float
        RPN anchor matching thresholds (paper: 0.7 / 0.3).
    rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train, rpn_pre_nms_top_n_test,
    rpn_post_nms_top_n_test : int
        Proposals kept per image (per level before NMS; after NMS).
    rpn_batch_size_per_image : int
        Anchors sampled per image for the RPN loss.
    rpn_nms_thresh : float
        IoU threshold of the RPN's NMS.
    box_fg_iou_thresh, box_bg_iou_thresh : float
        RoI matching thresholds for the box head.
    box_batch_size_per_image : int
        RoIs sampled per image for the box head in training (stock 512).
    box_positive_fraction : float
        Fraction of positive RoIs among the sampled ones.
    representation_size : int
        Width of the box head's MLP (stock 1024).
    box_score_thresh, box_nms_thresh : float
        Post-processing of detections.
    box_detections_per_img : int
        Maximum detections per image (stock 100).
    box_reg_loss : str
        ``l1`` (paper eq. 3: mean absolute error) or ``smooth_l1`` (torchvision).
    mask_head_channels : int
        Channels of the conv mask heads (stock 256).
    mask_roi_size : int
        RoIAlign output of MaskerA / the standard mask head (14 -> 28 x 28 masks).
    boundary_roi_size : int
        RoIAlign output of MaskerB (finer, from P2 only; 28 in BMask R-CNN).
    mask_box_scale : float
        At inference, the mask head outlines each detection inside its box enlarged by this factor about
        its centre (clipped to the map), and its mask is pasted there; the box itself is kept. 1 is
        torchvision's (a mask never leaves its box). A storm's thin arms often reach beyond the regressed
        box, so a wider window lets the outline follow them (docs/benchmark-notes.md, "Outlines confined
        to their boxes"). Training is unchanged.
    dice_smooth : float
        Smoothing term of the Dice loss (keeps the gradient finite for empty masks).
    boundary_loss_weight : float
        Weight of MaskerB's boundary loss (dustrcnn).
    spp_levels : tuple of int
        Bin grids of the sppnet box head's spatial pyramid (1x1, 2x2, 4x4).
    reference : {"none", "prior-median"}
        Reference bands the detector expects after the map's R, G, B (:mod:`marsdust.reference`):
        ``prior-median`` adds the clear-sky background of the previous ``reference_sols`` sols
        (3 bands, so ``in_channels`` is 6). ``detect`` and ``evaluate`` rebuild them from this.
    reference_sols : int
        Window of the ``prior-median`` background, sols.
    unet_channels : int
        Width of the first level of the ``unet`` / ``unet_cbam`` segmenters (doubling at each of
        the ``unet_depth`` levels below it; 16 with depth 4 is about 1.9 M parameters, the size of
        Venturini et al.'s CBAM U-Net). The segmenters use ``in_channels``, ``num_classes``,
        ``norm``, ``input_norm`` / ``image_mean`` / ``image_std``, ``map_res_deg``, ``reference``,
        ``box_detections_per_img`` and the ``unet_*`` fields; the backbone, anchor, RPN and RoI
        fields are the R-CNN detectors'.
    unet_depth : int
        Number of 2x downsamplings of the U-Net (inputs are padded to a multiple of ``2**depth``).
    unet_pos_weight : float
        Weight of storm pixels in the segmenters' binary cross-entropy (class imbalance: storms
        cover a few percent of a map).
    unet_pixel_threshold : float
        Probability at which a pixel belongs to a storm when the segmenters cut their probability
        map into instances (connected components).
    unet_box_core : float
        Weak pixel supervision of the segmenters from box-only catalogue rows (MDAD's v1.0 table: a
        centroid and an area, no outline; the MOC years). Such a row's fallback box is ignored by the
        loss, except its core: the ellipse inscribed in the box, shrunk to ``unet_box_core`` of its
        half-axes around the centroid, counts as storm. With the area box (``outline_fallback``
        ``"area"``) and 0.6, the core is 0.28 of the catalogued area, a region almost any storm of
        that area and centroid covers. 0 ignores the whole box (outlined rows alone teach storm
        pixels, so a U-Net learns nothing from a box-only archive).
    """

    num_classes: int = 1
    in_channels: int = 3
    image_mean: tuple[float, ...] | None = None
    image_std: tuple[float, ...] | None = None
    input_norm: str = "fixed"
    backbone: str = "resnet18"
    backbone_weights: str | None = "auto"
    trainable_backbone_layers: int = 5
    norm: str = "auto"
    fpn_channels: int = 128
    map_res_deg: float = 0.4
    anchor_sizes_native_px: tuple[float, ...] = (32.0, 64.0, 128.0, 256.0)
    anchor_aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_pre_nms_top_n_train: int = 600
    rpn_post_nms_top_n_train: int = 300
    rpn_pre_nms_top_n_test: int = 300
    rpn_post_nms_top_n_test: int = 100
    rpn_batch_size_per_image: int = 256
    rpn_nms_thresh: float = 0.7
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 128
    box_positive_fraction: float = 0.25
    representation_size: int = 256
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 50
    box_reg_loss: str = "l1"
    mask_head_channels: int = 128
    mask_roi_size: int = 14
    boundary_roi_size: int = 28
    mask_box_scale: float = 1.0
    dice_smooth: float = 1.0
    boundary_loss_weight: float = 1.0
    spp_levels: tuple[int, ...] = (1, 2, 4)
    reference: str = "none"
    reference_sols: int = DEFAULT_REFERENCE_SOLS
    unet_channels: int = 16
    unet_depth: int = 4
    unet_pos_weight: float = 3.0
    unet_pixel_threshold: float = 0.5
    unet_box_core: float = 0.6
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("image_mean", "image_std", "anchor_sizes_native_px", "anchor_aspect_ratios", "spp_levels"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(value))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field that holds an impossible value."""
        if self.num_classes < 1:
            raise ValueError(f"DetectorConfig.num_classes must be >= 1 (foreground classes), got {self.num_classes}")
        if self.in_channels < 1:
            raise ValueError(f"DetectorConfig.in_channels must be >= 1 band, got {self.in_channels}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"DetectorConfig.backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.norm not in NORMS:
            raise ValueError(f"DetectorConfig.norm must be one of {NORMS}, got {self.norm!r}")
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"DetectorConfig.input_norm must be one of {INPUT_NORMS}, got {self.input_norm!r}")
        if self.box_reg_loss not in ("l1", "smooth_l1"):
            raise ValueError(f"DetectorConfig.box_reg_loss must be 'l1' or 'smooth_l1', got {self.box_reg_loss!r}")
        if not 0 <= self.trainable_backbone_layers <= 5:
            raise ValueError(
                f"DetectorConfig.trainable_backbone_layers must be in 0..5, got {self.trainable_backbone_layers}"
            )
        if len(self.anchor_sizes_native_px) not in (4, 5):
            raise ValueError(
                "DetectorConfig.anchor_sizes_native_px needs 4 sizes (P2-P5) or 5 (P2-P6), "
                f"got {self.anchor_sizes_native_px}"
            )
        if self.map_res_deg <= 0:
            raise ValueError(f"DetectorConfig.map_res_deg must be > 0 degrees per pixel, got {self.map_res_deg}")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if value is not None and len(value) != self.in_channels:
                raise ValueError(
                    f"DetectorConfig.{name} needs one value per band ({self.in_channels}), got {len(value)}"
                )
        if self.fpn_channels < 8 or self.mask_head_channels < 8:
            raise ValueError("DetectorConfig.fpn_channels and mask_head_channels must be >= 8")
        if self.unet_channels < 2 or not 1 <= self.unet_depth <= 6:
            raise ValueError(f"DetectorConfig.unet_channels must be >= 2 and unet_depth in 1..6, got "
                             f"{self.unet_channels} / {self.unet_depth}")
        if self.unet_pos_weight <= 0 or not 0 < self.unet_pixel_threshold < 1:
            raise ValueError(f"DetectorConfig.unet_pos_weight must be > 0 and unet_pixel_threshold in (0, 1), got "
                             f"{self.unet_pos_weight} / {self.unet_pixel_threshold}")
        check_mask_box_scale("DetectorConfig.mask_box_scale", self.mask_box_scale)
        if not 0 <= self.unet_box_core <= 1:
            raise ValueError(f"DetectorConfig.unet_box_core must be in [0, 1], got {self.unet_box_core}")
        reference = self.reference_config  # validates the kind and the window
        if reference.enabled and self.in_channels != 3 + reference.n_bands:
            raise ValueError(
                f"DetectorConfig.reference {reference.kind!r} adds {reference.n_bands} bands to the map's 3: "
                f"in_channels must be {3 + reference.n_bands}, got {self.in_channels}"
            )

    @property
    def reference_config(self) -> ReferenceConfig:
        """How the reference bands are made (:class:`marsdust.reference.ReferenceConfig`)."""
        return ReferenceConfig(self.reference, int(self.reference_sols))

    # ------------------------------------------------------------------ derived values
    @property
    def anchor_sizes_px(self) -> tuple[float, ...]:
        """Anchor sizes (pixels at the working resolution), one per pyramid level."""
        scale = NATIVE_RES_DEG / self.map_res_deg
        return tuple(round(size * scale, 3) for size in self.anchor_sizes_native_px)

    @property
    def band_mean(self) -> list[float]:
        """Per-band normalization mean (image values in [0, 1])."""
        if self.image_mean is not None:
            return list(self.image_mean)
        return _per_band(IMAGENET_MEAN, EXTRA_BAND_MEAN, self.in_channels)

    @property
    def band_std(self) -> list[float]:
        """Per-band normalization standard deviation (image values in [0, 1])."""
        if self.image_std is not None:
            return list(self.image_std)
        return _per_band(IMAGENET_STD, EXTRA_BAND_STD, self.in_channels)

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        """Plain dict of builtins (tuples become lists), for YAML, JSON and checkpoints."""
        out = dataclasses.asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in out.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config") -> "DetectorConfig":
        """Build from a dict; unknown keys raise ``ValueError`` naming them and ``source``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown detector config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes: Any) -> "DetectorConfig":
        """Copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


def _per_band(rgb: tuple[float, ...], extra: float, n_bands: int) -> list[float]:
    values = list(rgb[:n_bands])
    return values + [extra] * (n_bands - len(values))


#: A configuration close to torchvision's stock Mask R-CNN (for speed comparisons only; model preset
#: ``stock_like``).
STOCK_LIKE = dict(
    fpn_channels=256,
    mask_head_channels=256,
    rpn_pre_nms_top_n_train=2000,
    rpn_post_nms_top_n_train=2000,
    rpn_pre_nms_top_n_test=1000,
    rpn_post_nms_top_n_test=1000,
    box_batch_size_per_image=512,
    representation_size=1024,
    box_detections_per_img=100,
)

#: Overrides of a *small* detector (model preset ``small_cpu``) for minutes of training on a laptop
#: CPU (the demo, the CPU Table 1 benchmark, the learning test): ResNet-18-FPN with 32 channels,
#: BatchNorm, fewer proposals and sampled RoIs, and per-map input standardization with a global map's
#: statistics taken between 60°S and 60°N (``input_norm="per_map_60"``; on MOC-layout maps the same as
#: ``per_map``), and outlines drawn in boxes 1.3 times the detection's (``mask_box_scale``). Pair it with a
#: coarser working resolution (``map_res_deg=0.8``: 150 x 450 px maps, the smallest storms still ~7 px
#: across), a higher learning rate (2e-3) and batches of 4 maps: BatchNorm takes its statistics over the
#: batch, and two maps are too few (docs/benchmark-notes.md, "Training recipe").
SMALL_CPU = dict(
    backbone_weights=None,
    norm="batch",
    fpn_channels=32,
    mask_head_channels=32,
    representation_size=128,
    rpn_pre_nms_top_n_train=200,
    rpn_post_nms_top_n_train=100,
    rpn_pre_nms_top_n_test=100,
    rpn_post_nms_top_n_test=50,
    box_batch_size_per_image=64,
    rpn_batch_size_per_image=128,
    input_norm="per_map_60",
    mask_box_scale=1.3,
)

#: Named sets of :class:`DetectorConfig` overrides: ``TrainConfig.model_preset``, ``model_preset:``
#: in a run YAML, ``--model-preset`` of ``marsdust train`` / ``compare``. ``compact`` is the
#: detector's default configuration (no overrides); ``small_cpu`` is what ``marsdust train`` trains
#: when no preset is named (:data:`marsdust.train.config.DEFAULT_MODEL_PRESET`). A run applies its preset first, then its explicit
#: ``model_config`` fields; checkpoints store the resolved fields, never the preset name, so
#: loading a model does not depend on this table.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "compact": {},
    "small_cpu": SMALL_CPU,
    "stock_like": STOCK_LIKE,
}

#: One line per preset for ``marsdust models``.
MODEL_PRESET_DESCRIPTIONS = {
    "compact": "the detector's own configuration (DetectorConfig defaults): ResNet-18, 128-channel FPN, fewer "
               "proposals and RoIs than stock; for a GPU, made for map_res_deg 0.4",
    "small_cpu": "marsdust train's default, the recipe the README measures: 32-channel FPN, BatchNorm, per-map "
                 "input standardization (a global map's statistics from 60°S–60°N), random init, at map_res_deg "
                 "0.8 with lr 2e-3 and 4 maps a step; minutes "
                 "of CPU training",
    "stock_like": "close to torchvision's stock Mask R-CNN sizes (speed comparisons)",
}


def preset_overrides(name: str | None) -> dict[str, Any]:
    """A copy of the overrides of model preset ``name`` (None: ``compact``, i.e. none).

    Raises ``ValueError`` listing the valid names for an unknown one.
    """
    if name is None:
        return {}
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid names: {', '.join(MODEL_PRESETS)}")
    return dict(MODEL_PRESETS[name])
