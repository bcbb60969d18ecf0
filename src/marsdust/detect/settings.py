"""Options of a detect run: what is detected (:class:`DetectSettings`), what is written
(:class:`DetectOutputs`) and how the run is executed (:class:`DetectExecution`), with their defaults."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from marsdust.detect.engines import ENGINES
from marsdust.schema import check_mask_box_scale, check_option


DEFAULT_PAD_DEG = 25.0
"""Longitude (degrees) copied across 180° on each side of a map before detection."""

DEFAULT_MAX_TILE_PX = 2048
"""Largest tile side (working-grid pixels); bigger padded maps are tiled with overlap."""

UNTILED_PX = 1 << 30
"""``max_tile_px`` of a detector that runs on whole maps (:func:`untiled_if_whole_map`): no map is that large."""

MIN_VALID_FRACTION = 0.5
"""Detections whose mask has fewer valid (observed) pixels than this fraction are dropped."""

DUPLICATE_IOU = 0.5
"""Two kept detections whose masks overlap more than this IoU are one storm (higher score wins)."""

ALL_LATITUDES = (-90.0, 90.0)
"""``DetectSettings.latitudes_deg`` that keeps detections at every latitude."""

TABLE_FORMATS = ("csv", "parquet")
MASK_GRIDS = ("both", "mdad", "working")
"""Where ``detect`` writes the dust masks: ``mdad`` (default) one MDAD v1.1 cube per Mars year on MDAD's 0.1° grid,
``OUT/mdad/MY{yy}/MDADMY{yy}.nc`` + ``MDAD_MY{yy}_master.csv``; ``working`` the former single ``OUT/masks.nc`` (all
years, the detector's working grid) + ``OUT/masks_master.csv``."""
"""Formats of the detections table: ``parquet`` writes ``detections.parquet`` besides ``detections.csv``."""


@dataclass(frozen=True)
class DetectSettings:
    """Inference options shared by :func:`detect_map` and :func:`detect_archive` (see :mod:`marsdust.detect`).

    Attributes
    ----------
    score_threshold : float, optional
        Detections scoring below this are dropped (and never get masks). None means the detector's
        own: the threshold chosen on validation maps and stored in its checkpoint, else 0.5
        (:func:`marsdust.models.resolve_score_threshold`); :func:`detect_archive` starts from None,
        :func:`detect_map` from 0.5.
    mask_threshold : float
        Mask probability at which a pixel belongs to the storm.
    pad_deg : float
        Longitude copied across 180° on each side, degrees (rounded up to a multiple-of-32 width).
    max_tile_px, tile_overlap_px : int
        Tiling of the padded working-resolution image, pixels (overlap default: the pad, at least 32).
    min_valid_fraction : float
        Detections whose mask has a smaller fraction of observed pixels are dropped.
    duplicate_iou : float
        Kept detections overlapping more than this mask IoU are one storm (the higher score wins).
    probability : bool
        Keep the storm-probability raster of each map (``MapResult.probability``).
    engine : {"auto", "onnx", "torch", "plain"}, optional
        How to run the model (:data:`marsdust.detect.ENGINES`; default ``$MARSDUST_DETECT_ENGINE`` or
        ``auto``: ONNX Runtime for the backbone on CPU, exported once per model and re-exported if its
        weights change; PyTorch on a GPU).
    onnx_model : path, optional
        A backbone written by ``marsdust export-onnx`` for the detector (default: exported on first use).
    classes : tuple of str
        Class names by the model's class index - 1 (:func:`marsdust.models.detector_classes`; set from
        the detector when it runs).
    latitudes_deg : (float, float), optional
        ``(south, north)``, degrees: detections whose mask centroid lies outside are dropped (and counted in
        :attr:`MapResult.n_beyond_latitudes`). None means the latitudes the detector was trained on, as its
        checkpoint records them (:func:`marsdust.models.training_latitudes`; a detector learnt on MOC's
        60°S–60°N has never seen a polar cap or the polar hood), else every latitude;
        :data:`ALL_LATITUDES` keeps every detection (:func:`resolve_latitudes`).
    mask_box_scale : float, optional
        The window the mask head outlines each storm in, times its detection box (1 to 3). None means the
        detector's own (``DetectorConfig.mask_box_scale``: 1.3 for the ``small_cpu`` preset, 1 for older
        checkpoints); 1 confines every outline to its box.
    """

    score_threshold: float | None = 0.5
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
    latitudes_deg: tuple[float, float] | None = None
    mask_box_scale: float | None = None  # last: the fields before it are also given by position

    def __post_init__(self):
        if self.onnx_model is not None:
            object.__setattr__(self, "onnx_model", os.fspath(self.onnx_model))
        if self.latitudes_deg is not None:
            south, north = (float(v) for v in self.latitudes_deg)
            if not -90.0 <= south < north <= 90.0:
                raise ValueError(f"latitudes_deg must be (south, north) with -90 <= south < north <= 90 degrees, got "
                                 f"{tuple(self.latitudes_deg)}")
            object.__setattr__(self, "latitudes_deg", (south, north))
        for name in ("score_threshold", "mask_threshold", "min_valid_fraction", "duplicate_iou"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        check_mask_box_scale("mask_box_scale", self.mask_box_scale)
        check_option("pad_deg (degrees)", self.pad_deg, 0.0, 180.0)
        if self.max_tile_px < 64:
            raise ValueError(f"max_tile_px must be >= 64 pixels, got {self.max_tile_px}")
        if self.engine is not None and self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")


def resolve_latitudes(checkpoint_or_model, settings: DetectSettings) -> tuple[DetectSettings, str]:
    """``settings`` with the latitudes to keep (None: the detector's training latitudes, else every latitude),
    and where they came from, in words."""
    if settings.latitudes_deg is not None:
        return settings, "given"
    from marsdust.models import training_latitudes

    trained = training_latitudes(checkpoint_or_model)
    if trained is None:
        return (dataclasses.replace(settings, latitudes_deg=ALL_LATITUDES),
                "every latitude (the checkpoint records no training latitudes)")
    return dataclasses.replace(settings, latitudes_deg=trained), "the latitudes of the detector's training maps"


def latitude_range_text(latitudes_deg: tuple[float, float]) -> str:
    """``60°S–60°N``-style text of a ``(south, north)`` range in degrees."""
    def one(lat: float) -> str:
        return f"{abs(lat):g}°{'S' if lat < 0 else 'N' if lat > 0 else ''}"
    return f"{one(latitudes_deg[0])}–{one(latitudes_deg[1])}"


def untiled_if_whole_map(model, settings: DetectSettings) -> DetectSettings:
    """``settings`` without tiling for a detector that runs on whole maps (``model.runs_whole_map`` True: the
    U-Net segmenters, whose instances are connected components that a tile edge would cut); else ``settings``."""
    if getattr(model, "runs_whole_map", False):
        return dataclasses.replace(settings, max_tile_px=UNTILED_PX)
    return settings


@dataclass(frozen=True)
class DetectOutputs:
    """What :func:`detect_archive` writes besides ``detections.csv``, ``detections.geojson``, the mask cubes and
    ``maps.csv``, and where.

    Attributes
    ----------
    out_dir : path
        Output folder (created); holds ``parts/`` while the run is incomplete.
    table_format : {"csv", "parquet"}
        ``parquet`` also writes ``detections.parquet`` (:data:`TABLE_FORMATS`).
    geotiff, quicklook : bool
        Also write ``OUT/geotiff/<map_id>.tif`` (storm probability, Mars CRS) / ``OUT/quicklook/<map_id>.png``.
    track : bool
        Link detections into MDAD members and sequences (:func:`marsdust.track.track`); skipped with a
        warning when some map has no Ls.
    overwrite : bool
        Delete earlier parts and products first (else an interrupted run resumes).
    mask_grid : {"both", "mdad", "working"}
        Where the dust masks go (:data:`MASK_GRIDS`).
    """

    out_dir: Path
    table_format: str = "csv"
    geotiff: bool = False
    quicklook: bool = False
    track: bool = True
    overwrite: bool = False
    mask_grid: str = "both"

    def __post_init__(self):
        object.__setattr__(self, "out_dir", Path(os.fspath(self.out_dir)))
        if self.table_format not in TABLE_FORMATS:
            raise ValueError(f"table format must be 'csv' or 'parquet', got {self.table_format!r}")
        if self.mask_grid not in MASK_GRIDS:
            raise ValueError(f"mask grid must be one of {MASK_GRIDS}, got {self.mask_grid!r}")


@dataclass(frozen=True)
class DetectExecution:
    """How :func:`detect_archive` runs: where, how many maps at once, in how many processes.

    Attributes
    ----------
    device : {"cpu", "cuda", "cuda:N"}
        Under torchrun, ``cuda`` means ``cuda:LOCAL_RANK``.
    batch_size : int
        Maps given to the model at once (useful on a GPU); maps are read ahead by
        ``max(2 batch_size, reader threads) + 1``.
    workers : int
        Local processes (``torch.multiprocessing``) for a machine without torchrun; each gets
        ``cpu_count // workers`` threads; the calling process merges.
    threads : int, optional
        Torch CPU threads (default: all cores, unless ``OMP_NUM_THREADS`` is set).
    rank, world_size : int, optional
        This process's share: the ``rank``-th of ``world_size`` consecutive stretches of the maps in
        time order (so a detector with reference bands reads each stretch's history once). Default:
        ``RANK``/``WORLD_SIZE`` from the environment (torchrun), else 0 / 1.
    merge : bool
        Build the final products (False: only write parts).
    progress : bool
        Show a tqdm bar with maps/s and ETA.
    """

    device: str = "cpu"
    batch_size: int = 1
    workers: int = 1
    threads: int | None = None
    rank: int | None = None
    world_size: int | None = None
    merge: bool = True
    progress: bool = True

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
