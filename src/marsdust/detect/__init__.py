"""Full-map inference: run a detector over one map or a whole archive and write the storm catalog.

The code lives in :mod:`marsdust.detect.archive` for now (moved there with ``git mv`` so its history
follows); this package re-exports its public names.
"""

from marsdust.detect.archive import (
    DEFAULT_MAX_TILE_PX,
    DEFAULT_PAD_DEG,
    DUPLICATE_IOU,
    ENGINE_ENV,
    ENGINES,
    MAPS_COLUMNS,
    MIN_VALID_FRACTION,
    PARTS_DIR,
    SETTINGS_FILE,
    DetectSettings,
    DetectSummary,
    MapResult,
    OnnxBackbone,
    decode_map,
    default_engine,
    detect_archive,
    detect_map,
    export_backbone_onnx,
    merge_parts,
    onnx_backbone_for,
    pad_columns,
    part_path,
    plan_tiles,
    prepare_map,
    resolve_engine,
    resolve_maps,
    run_model,
    working_image,
    wrap_pad,
)

__all__ = [
    "DEFAULT_MAX_TILE_PX", "DEFAULT_PAD_DEG", "DUPLICATE_IOU", "ENGINE_ENV", "ENGINES", "MAPS_COLUMNS",
    "MIN_VALID_FRACTION", "PARTS_DIR", "SETTINGS_FILE", "DetectSettings", "DetectSummary", "MapResult",
    "OnnxBackbone", "decode_map", "default_engine", "detect_archive", "detect_map", "export_backbone_onnx",
    "merge_parts", "onnx_backbone_for", "pad_columns", "part_path", "plan_tiles", "prepare_map", "resolve_engine",
    "resolve_maps", "run_model", "working_image", "wrap_pad",
]
