"""Detectors on torchvision detection: ``dustrcnn``, ``maskrcnn``, ``fasterrcnn``, ``sppnet``; U-Net segmenters
with the same interface: ``unet``, ``unet_cbam`` (:mod:`~marsdust.models.unet`).

>>> from marsdust.models import build_model, save_checkpoint, load_model
>>> model = build_model("dustrcnn", in_channels=3, num_classes=1)   # DetectorConfig fields
>>> model.model_name, model.config.fpn_channels
('dustrcnn', 128)

See :mod:`marsdust.models.registry` (interface), :mod:`~marsdust.models.config` (every knob and
why the defaults are compact), :mod:`~marsdust.models.checkpoint` (file layout,
Lightning keys).
"""

from marsdust.models.checkpoint import (
    CHECKPOINT_FORMAT,
    DEFAULT_SCORE_THRESHOLD,
    FORMAT_VERSION,
    CheckpointError,
    detector_classes,
    load_model,
    checkpoint_metadata,
    read_checkpoint,
    read_training_state,
    resolve_score_threshold,
    save_checkpoint,
    stored_reference_dropout,
    training_latitudes,
    stored_score_threshold,
    stored_outline_threshold,
)
from marsdust.models.config import (
    MODEL_PRESET_DESCRIPTIONS,
    MODEL_PRESETS,
    SMALL_CPU,
    STOCK_LIKE,
    DetectorConfig,
    preset_overrides,
)
from marsdust.models.known_output import TINY_DETECTOR, always_storm_detector
from marsdust.models.losses import boundary_loss, box_losses, dice_loss
from marsdust.models.registry import (
    MODEL_REGISTRY,
    MarsDustDetector,
    RegisteredDetector,
    available_models,
    build_model,
    count_parameters,
    default_config,
    register_model,
    register_network,
)
from marsdust.models.unet import UNetDetector

__all__ = [
    "CHECKPOINT_FORMAT",
    "DEFAULT_SCORE_THRESHOLD",
    "FORMAT_VERSION",
    "MODEL_PRESETS",
    "MODEL_PRESET_DESCRIPTIONS",
    "MODEL_REGISTRY",
    "STOCK_LIKE",
    "SMALL_CPU",
    "TINY_DETECTOR",
    "CheckpointError",
    "DetectorConfig",
    "MarsDustDetector",
    "RegisteredDetector",
    "UNetDetector",
    "always_storm_detector",
    "available_models",
    "boundary_loss",
    "box_losses",
    "build_model",
    "count_parameters",
    "default_config",
    "dice_loss",
    "load_model",
    "preset_overrides",
    "read_checkpoint",
    "checkpoint_metadata",
    "read_training_state",
    "resolve_score_threshold",
    "detector_classes",
    "register_model",
    "register_network",
    "save_checkpoint",
    "stored_reference_dropout",
    "training_latitudes",
    "stored_outline_threshold",
    "stored_score_threshold",
]
