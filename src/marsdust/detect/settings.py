"""Options of a detect run: :class:`DetectSettings` and the defaults it starts from."""

from __future__ import annotations

from dataclasses import dataclass

from marsdust.detect.engines import ENGINES


DEFAULT_PAD_DEG = 25.0
"""Longitude (degrees) copied across 180° on each side of a map before detection."""

DEFAULT_MAX_TILE_PX = 2048
"""Largest tile side (working-grid pixels); bigger padded maps are tiled with overlap."""

MIN_VALID_FRACTION = 0.5
"""Detections whose mask has fewer valid (observed) pixels than this fraction are dropped."""

DUPLICATE_IOU = 0.5
"""Two kept detections whose masks overlap more than this IoU are one storm (higher score wins)."""


@dataclass(frozen=True)
class DetectSettings:
    """Inference options shared by :func:`detect_map` and :func:`detect_archive`."""

    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    pad_deg: float = DEFAULT_PAD_DEG
    max_tile_px: int = DEFAULT_MAX_TILE_PX
    tile_overlap_px: int | None = None
    min_valid_fraction: float = MIN_VALID_FRACTION
    duplicate_iou: float = DUPLICATE_IOU
    probability: bool = True
    engine: str | None = None
    onnx_model: str | None = None
    classes: tuple[str, ...] = ("dust",)
    """Class names by the model's class index - 1 (:func:`marsdust.models.detector_classes`)."""

    def __post_init__(self):
        for name in ("score_threshold", "mask_threshold", "min_valid_fraction", "duplicate_iou"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.pad_deg < 0 or self.pad_deg > 180:
            raise ValueError(f"pad_deg must be in [0, 180] degrees, got {self.pad_deg}")
        if self.max_tile_px < 64:
            raise ValueError(f"max_tile_px must be >= 64 pixels, got {self.max_tile_px}")
        if self.engine is not None and self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
