"""Full-map inference: run a detector over one map or a whole archive and write the storm catalog.

Public API
----------
* :func:`detect_map` — one map (a :class:`marsdust.mdgm.MapImage` or a file) → :class:`MapResult`
  (detection records, masks and a probability raster on the working grid).
* :func:`detect_archive` — single maps, globs, an archive folder / tar, or an index CSV →
  ``OUT/detections.csv`` (+ ``.parquet``), ``OUT/detections.geojson``, ``OUT/masks.nc`` (+
  ``OUT/masks_master.csv``), ``OUT/maps.csv``, optional ``OUT/geotiff/`` and ``OUT/quicklook/``;
  resumable, and spread over several processes (``workers``) or torchrun ranks.

How one map is processed
------------------------
1. **Resample** the map to the detector's working resolution ``config.map_res_deg`` by block
   averaging (:func:`marsdust.mdgm.read_map_resampled` / :func:`~marsdust.mdgm.downsample`; a block
   is valid where at least half its pixels are).
2. **Wrap-pad** across 180° longitude: the last ``pad`` columns are put in front of the map and the
   first ``pad`` columns after it (``torch.cat``), so a storm that straddles the map edge is seen
   whole. The pad (``pad_deg``, default 25°) is rounded up so the padded width is a multiple of 32
   pixels (the detector pads to that with zeros anyway, so the extra context is free).
3. **Tile** the padded image when it is larger than ``max_tile_px`` on a side (only at fine
   working resolutions; at 0.4° a whole map is one tile). Tiles overlap by ``tile_overlap_px``; a
   tile owns the detections whose box centre lies in its *core* (the tile minus half the overlap
   on each interior side), so a storm cut by one tile's edge is taken from the neighbour that sees it
   whole.
4. **Run the model** under :func:`torch.inference_mode` on a list of tiles (several maps at a time
   in :func:`detect_archive`). The model's own score threshold is raised to ``score_threshold`` for
   the call, so low-score boxes are never given masks (an untrained model emits up to
   ``box_detections_per_img`` junk boxes).
5. **Back to the canonical frame**: a detection is kept only if its box centre lies in the unpadded
   columns ``[0, W)`` (its copy in the pad is the same storm); its mask probabilities are folded
   into ``[0, W)`` with wrap (column ``c`` of the padded image is map column ``(c - pad) mod W``).
   Masks are ``probability >= mask_threshold`` restricted to valid pixels (a storm is not seen
   where the map has no observation). Detections whose thresholded mask lies mostly in missing
   data (valid fraction < ``min_valid_fraction`` = 0.5) or that are empty are dropped; remaining
   duplicates (mask IoU > ``duplicate_iou`` = 0.5, e.g. from two tiles) keep the higher score.
6. **Records** via :func:`marsdust.export.detection_records` on the working grid: centroid, bounds,
   area on the sphere, outline split at 180°; the ``x0, y0, x1, y1`` columns are the detector's box
   on the map's **native** grid (working-grid pixels times the resampling factor), with ``x0`` in
   ``[0, W_native)`` and ``x1 > W_native`` for a box across 180°.

Products of :func:`detect_archive` (column names as DESIGN.md fixes them)
---------------------------------------------------------------------------
* ``detections.csv``: ``map_id, mars_year, ls, lon, lat, lon_min, lon_max, lat_min, lat_max,
  area_km2, score, polygon_wkt, x0, y0, x1, y1`` and, when tracked, ``member_id, sequence_id``.
* ``detections.geojson``: the same rows with their outlines (Mars CRS, see :mod:`marsdust.export`).
* ``masks.nc``: MDAD v1.1 layout cube on the **working grid** (``MDAD(time, longitude, latitude)``
  uint8, 255 missing); labels are MDAD member numbers when tracked, else the per-map detection
  number (row order of the map in ``detections.csv``). ``masks_master.csv`` beside it is the
  matching master CSV, so ``marsdust.mdad.read_v11_cube(masks.nc, masks_master.csv, mars_year=..)``
  reads a single-year run back.
* ``maps.csv``: ``map_id, mars_year, ls, valid_fraction, n_detections, seconds, status, error``;
  ``valid_fraction`` is the fraction of the map's working-grid pixels that hold an observation,
  ``seconds`` the map's processing time (decode + its share of the batch inference +
  post-processing and writing; with overlapped decoding the wall time per map is lower).

Resuming: each map writes ``OUT/parts/<map_id>.json`` (its records and ``maps.csv`` row) atomically
*after* its mask chunk ``OUT/parts/masks/<DAY>.nc`` and optional GeoTIFF / quick-look; a map is done
iff its part exists, so a run killed at any moment and started again with the same command
processes every map exactly once. The final products are rebuilt from all parts at the end.
A corrupt map (:class:`marsdust.mdgm.MapReadError`) gets a part with ``status = error`` (reported in
``maps.csv`` and the log, not retried on resume; ``overwrite=True`` starts afresh).

Speed (measured 2026-11-30 on the shared 2-core development machine, load average ~5 from other
jobs, so absolute numbers are pessimistic; default compact ``dustrcnn``, random init, native
1200 x 3600 PNG maps, 0.4° working grid = 300 x 1024 padded, 2 torch threads)
------------------------------------------------------------------------------------------------
* end to end through :func:`detect_archive` (6 maps): 0.71–1.5 s per map with ``score_threshold``
  0.9 (no detections), 1.8 s per map with 0.5 (the untrained model emits ~9 junk storms per map);
  peak RSS 1.1–1.3 GB.
* where one map's time goes: PNG decode + block average 0.15–0.19 s (in a reader thread, overlapped
  with inference); backbone + FPN ~0.55 s (ResNet-18 convolutions are ~60 % of model time); RPN
  ~0.27 s; the dustrcnn mask head ~0.09 s *per detection* (MaskerB's 28 x 28 convolutions and
  transposed convolutions), so the detection count drives the rest; decoding, records and outlines
  0.05 s for 50 candidates; mask chunk + part file 0.01–0.02 s (writer thread, overlapped).
* what was done: the model's box score threshold is raised to ``score_threshold`` so low-score
  boxes never reach the mask head; masks are pasted only inside their boxes (torchvision pastes each
  into a full-size image and stacks them: zeros/stack/cat took a third of the model time with 50
  detections, and 65 MB); reading and writing run in threads beside inference; float32 throughout.
* ``channels_last`` was measured and does not pay on CPU (0.76 vs 0.71 s per map), so it is not used.
* **engines** (:data:`ENGINES`, ``engine=`` of :func:`detect_map` / :func:`detect_archive`, or
  ``$MARSDUST_DETECT_ENGINE``): on CPU the default (``auto``) runs the dense part — backbone, FPN
  and the RPN head's convolutions — in ONNX Runtime (exported once per model to a temporary file,
  ~2-4 s, or from ``marsdust export-onnx``): that part is ~4x faster than eager PyTorch (0.53 vs
  2.18 s on one map at load ~11) and the whole model call ~1.6x; detections match the eager
  forward within float tolerance (``tests/test_detect_speedpaths.py``). On a GPU ``auto`` is the
  eager fast path (``torch``). ``plain`` is the model's own ``model(images)`` (accuracy reference).
  ``benchmarks/bench_detect.py`` measures all of this against stock torchvision in one run.
"""

from __future__ import annotations

import glob as globlib
import json
import logging
import math
import os
import shutil
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from marsdust import export
from marsdust.grid import MapGrid
from marsdust.mdgm import (
    MapImage,
    MapReadError,
    downsample,
    index_archive,
    parse_list_ls,
    read_map_resampled_with_grid,
)
from marsdust.naming import make_map_id, parse_map_name

log = logging.getLogger(__name__)

DEFAULT_PAD_DEG = 25.0
"""Longitude (degrees) copied across 180° on each side of a map before detection."""

DEFAULT_MAX_TILE_PX = 2048
"""Largest tile side (working-grid pixels); bigger padded maps are tiled with overlap."""

MIN_VALID_FRACTION = 0.5
"""Detections whose mask has fewer valid (observed) pixels than this fraction are dropped."""

DUPLICATE_IOU = 0.5
"""Two kept detections whose masks overlap more than this IoU are one storm (higher score wins)."""

MAPS_COLUMNS = ["map_id", "mars_year", "ls", "valid_fraction", "n_detections", "seconds", "status", "error"]
"""Columns of ``maps.csv``."""

PARTS_DIR = "parts"
SETTINGS_FILE = "settings.json"


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------
@dataclass
class MapResult:
    """Detections on one map.

    Attributes
    ----------
    map_id : str
    mars_year : int
    ls : float
        Solar longitude, degrees.
    grid : MapGrid
        The working grid (the detector's ``map_res_deg``) that ``masks``, ``valid`` and
        ``probability`` are on.
    native_grid : MapGrid
        The map file's own grid (``x0..y1`` of the records are pixels on it).
    valid : ndarray of bool, ``grid.shape``
        Working-grid pixels that hold an observation.
    valid_fraction : float
        ``valid.mean()``: the fraction of the map that was observed.
    records : list of dict
        One per detected storm, keys :data:`marsdust.export.DETECTION_COLUMNS`, in descending score.
    masks : list of ndarray of bool, ``grid.shape``
        One per record (same order), thresholded and restricted to valid pixels.
    probability : ndarray of float32, ``grid.shape``, or None
        Per-pixel maximum mask probability over the kept detections (0 elsewhere).
    image : MapImage or None
        The working-resolution map (kept for quick-looks).
    seconds : float
        Processing time of this map (decode + inference share + post-processing), s.
    """

    map_id: str
    mars_year: int
    ls: float
    grid: MapGrid
    native_grid: MapGrid
    valid: np.ndarray
    valid_fraction: float
    records: list[dict]
    masks: list[np.ndarray]
    probability: np.ndarray | None = None
    image: MapImage | None = None
    seconds: float = 0.0

    @property
    def n_detections(self) -> int:
        """Number of storms found on the map."""
        return len(self.records)

    @property
    def scores(self) -> np.ndarray:
        """Detection scores, in record order."""
        return np.array([r["score"] for r in self.records], dtype=np.float64)

    def frame(self) -> pd.DataFrame:
        """The records as a detections DataFrame (:func:`marsdust.export.detections_frame`)."""
        return export.detections_frame(self.records)


@dataclass
class DetectSummary:
    """What :func:`detect_archive` did.

    Attributes
    ----------
    out_dir : Path
    n_maps : int
        Maps in the run (all ranks).
    n_processed : int
        Maps processed by this call (this rank; resumed maps are not counted).
    n_errors : int
        Maps that could not be read (all ranks; see ``maps.csv``).
    n_detections : int
        Storm instances in ``detections.csv`` (0 on ranks other than 0).
    seconds : float
        Wall time of the call, s.
    maps_per_second : float
        Maps processed by this call per second of its wall time.
    paths : dict of str to Path
        Written products (``detections``, ``geojson``, ``masks``, ``maps``, …); empty on ranks other
        than 0, which do not merge.
    """

    out_dir: Path
    n_maps: int
    n_processed: int
    n_errors: int
    n_detections: int
    seconds: float
    maps_per_second: float
    paths: dict[str, Path] = field(default_factory=dict)


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


# ---------------------------------------------------------------------------------------------
# one map: preparation
# ---------------------------------------------------------------------------------------------
def working_image(map_image_or_path: MapImage | str | os.PathLike, res_deg: float) -> tuple[MapImage, MapGrid]:
    """The map at the working resolution ``res_deg`` (block average) and the map's native grid.

    Raises
    ------
    MapReadError
        Unreadable file, or a native resolution that ``res_deg`` is not a whole multiple of.
    """
    if isinstance(map_image_or_path, MapImage):
        native = map_image_or_path.grid
        ratio = res_deg / native.res_deg
        factor = int(round(ratio))
        if factor < 1 or abs(ratio - factor) > 1e-6:
            raise MapReadError(
                f"{map_image_or_path.path or 'map'}: a {native.res_deg}° map cannot be block-averaged to the "
                f"model's {res_deg}° working resolution (need a whole multiple)"
            )
        return downsample(map_image_or_path, factor), native
    return read_map_resampled_with_grid(map_image_or_path, res_deg)


def pad_columns(width_px: int, pad_deg: float, res_deg: float) -> int:
    """Columns copied across 180° on each side: ``pad_deg`` rounded up so ``width + 2 pad`` is a multiple of 32."""
    if pad_deg <= 0:
        return 0
    pad = int(math.ceil(pad_deg / res_deg - 1e-9))
    padded = width_px + 2 * pad
    padded = int(math.ceil(padded / 32.0)) * 32
    pad = (padded - width_px) // 2
    return min(pad, width_px)


def wrap_pad(image_chw, pad_px: int):
    """Pad a ``(C, H, W)`` tensor across 180°: last ``pad_px`` columns in front, first ones behind."""
    import torch

    if pad_px == 0:
        return image_chw
    return torch.cat([image_chw[..., -pad_px:], image_chw, image_chw[..., :pad_px]], dim=-1)


@dataclass
class _Tile:
    """A window of the padded image: pixel ranges and the core it owns detections in."""

    y0: int
    y1: int
    x0: int
    x1: int
    core_y: tuple[float, float]
    core_x: tuple[float, float]


def _axis_tiles(length: int, max_len: int, overlap: int) -> list[tuple[int, int, float, float]]:
    if length <= max_len:
        return [(0, length, -math.inf, math.inf)]
    overlap = min(overlap, max_len // 2)
    step = max_len - overlap
    n = int(math.ceil((length - overlap) / step))
    starts = [min(i * step, length - max_len) for i in range(n)]
    out = []
    for i, start in enumerate(starts):
        stop = start + max_len
        lo = -math.inf if i == 0 else (start + starts[i - 1] + max_len) / 2.0
        hi = math.inf if i == n - 1 else (stop + starts[i + 1]) / 2.0
        out.append((start, stop, lo, hi))
    return out


def plan_tiles(height: int, width: int, max_tile_px: int, overlap_px: int) -> list[_Tile]:
    """Overlapping tiles covering a ``height x width`` image, each at most ``max_tile_px`` a side.

    Cores (where a tile owns detection centres) partition the image: the boundary between two
    neighbours lies in the middle of their overlap.
    """
    tiles = []
    for y0, y1, cy0, cy1 in _axis_tiles(height, max_tile_px, overlap_px):
        for x0, x1, cx0, cx1 in _axis_tiles(width, max_tile_px, overlap_px):
            tiles.append(_Tile(y0, y1, x0, x1, (cy0, cy1), (cx0, cx1)))
    return tiles


@dataclass
class _Prepared:
    """One map ready for the model: its padded tensor's tiles and what is needed to decode them."""

    map_id: str
    mars_year: int
    ls: float
    image: MapImage
    native_grid: MapGrid
    pad_px: int
    tiles: list[_Tile]
    tensors: list
    seconds: float


def prepare_map(image: MapImage, native_grid: MapGrid, settings: DetectSettings, *, map_id: str, mars_year: int,
                ls: float, in_channels: int = 3, seconds: float = 0.0) -> _Prepared:
    """Tensor tiles of a working-resolution map (wrap-padded), ready for the model."""
    import torch

    if in_channels != 3:
        raise ValueError(f"map {map_id}: the detector expects {in_channels} bands but detect feeds RGB maps (3 bands)")
    chw = torch.from_numpy(image.rgb).permute(2, 0, 1)
    height, width = image.grid.shape
    pad = pad_columns(width, settings.pad_deg, image.grid.res_deg)
    padded = wrap_pad(chw, pad)
    if pad == 0:
        padded = padded.contiguous()
    overlap = settings.tile_overlap_px if settings.tile_overlap_px is not None else max(pad, 32)
    tiles = plan_tiles(height, width + 2 * pad, settings.max_tile_px, overlap)
    tensors = [padded[:, t.y0:t.y1, t.x0:t.x1] for t in tiles]
    if len(tiles) > 1:
        tensors = [t.contiguous() for t in tensors]
    return _Prepared(map_id, int(mars_year), float(ls), image, native_grid, pad, tiles, tensors, seconds)


# ---------------------------------------------------------------------------------------------
# one map: model and decoding
# ---------------------------------------------------------------------------------------------
@contextmanager
def _score_threshold(model, threshold: float):
    """Temporarily raise the model's box score threshold (fewer masks to compute and paste)."""
    heads = getattr(model, "roi_heads", None)
    old = getattr(heads, "score_thresh", None)
    if old is None:
        yield
        return
    heads.score_thresh = max(float(old), float(threshold))
    try:
        yield
    finally:
        heads.score_thresh = old


def _has_fast_path(model) -> bool:
    """True for an unmodified torchvision two-stage detector whose transform never resizes (MarsDustDetector)."""
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

    from marsdust.models.registry import NoResizeTransform

    return (isinstance(model, GeneralizedRCNN) and "forward" not in vars(model)
            and type(model).forward is GeneralizedRCNN.forward and isinstance(model.transform, NoResizeTransform))


# ---------------------------------------------------------------------------------------------
# inference engines: torch (the fast path above), ONNX Runtime for the dense part, or plain
# ---------------------------------------------------------------------------------------------
ENGINES = ("auto", "onnx", "torch", "plain")
"""Ways to run a detector: ``torch`` = :func:`run_model`'s eager fast path (no full-size mask
pasting); ``onnx`` = the same with the backbone + FPN + RPN head convolutions run by ONNX Runtime
(:class:`OnnxBackbone`; proposals, NMS and the RoI heads stay in PyTorch);
``plain`` = the model's own ``model(images)`` forward (reference for accuracy checks); ``auto`` =
``onnx`` on CPU when onnxruntime is installed and the model has the fast path, else ``torch``."""

ENGINE_ENV = "MARSDUST_DETECT_ENGINE"
"""Environment variable that sets the default engine (one of :data:`ENGINES`; default ``auto``)."""


def default_engine() -> str:
    """The engine used when none is given: ``$MARSDUST_DETECT_ENGINE`` or ``auto``."""
    value = os.environ.get(ENGINE_ENV, "auto").strip().lower() or "auto"
    if value not in ENGINES:
        raise ValueError(f"${ENGINE_ENV} must be one of {ENGINES}, got {value!r}")
    return value


def _onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _model_fingerprint(model) -> tuple:
    """Identity and in-place version of every parameter and buffer: changes when training updates weights."""
    return tuple((id(t), t._version) for t in list(model.parameters()) + list(model.buffers()))


def _dense_part(model):
    """An ``nn.Module``: images → FPN levels, then the RPN head's logits and deltas per level, as one tuple
    (ONNX has no dict outputs)."""
    import torch

    class DensePart(torch.nn.Module):
        def __init__(self, backbone, rpn_head):
            super().__init__()
            self.backbone = backbone
            self.rpn_head = rpn_head

        def forward(self, images):
            levels = list(self.backbone(images).values())
            logits, deltas = self.rpn_head(levels)
            return tuple(levels) + tuple(logits) + tuple(deltas)

    return DensePart(model.backbone, model.rpn.head)


class _PrecomputedRPNHead:
    """Stands in for ``rpn.head``: returns the logits and deltas ONNX Runtime already computed."""

    def __new__(cls, logits, deltas):
        import torch

        class PrecomputedHead(torch.nn.Module):
            def forward(self, features):
                return logits, deltas

        return PrecomputedHead()


def _rpn_with_head_outputs(rpn, logits, deltas):
    """A shallow copy of ``rpn`` whose head returns precomputed outputs (anchors, NMS, etc. unchanged)."""
    import copy
    from collections import OrderedDict

    clone = copy.copy(rpn)
    clone._modules = OrderedDict(rpn._modules)  # copy.copy shares the module dict: give the clone its own
    clone.head = _PrecomputedRPNHead(logits, deltas)
    return clone


def export_backbone_onnx(model, path: str | os.PathLike, *, opset: int = 17) -> Path:
    """Write the model's dense part as ONNX: normalized ``(N, C, H, W)`` images → pyramid levels
    (``level_<key>``), then the RPN head's objectness logits (``rpn_logits_<key>``) and box deltas
    (``rpn_deltas_<key>``) per level.

    Anchors, proposal selection / NMS, the RoI heads and post-processing stay in PyTorch (their
    shapes depend on the data).
    Height and width are dynamic (multiples of 32, as the model's transform pads them). Written
    atomically.

    Parameters
    ----------
    model : MarsDustDetector
    path : path
        The ``.onnx`` file to write.
    opset : int
        ONNX opset (17: GroupNorm is exported as InstanceNormalization + affine).

    Returns
    -------
    Path
    """
    import warnings

    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _dense_part(model).eval()
    example = torch.zeros(1, int(model.config.in_channels), 64, 64)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            keys = list(model.backbone(example))
        names = ([f"level_{key}" for key in keys] + [f"rpn_logits_{key}" for key in keys]
                 + [f"rpn_deltas_{key}" for key in keys])
        with export.atomic_output(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (example,), os.fspath(tmp), input_names=["images"], output_names=names,
                              dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}}, opset_version=opset,
                              dynamo=False)
    finally:
        model.train(was_training)
    return path


class OnnxBackbone:
    """The detector's backbone + FPN + RPN head run by ONNX Runtime on CPU (about 2x eager PyTorch there).

    Parameters
    ----------
    model : MarsDustDetector
        The detector whose backbone is replaced at inference.
    onnx_path : path, optional
        A file written by :func:`export_backbone_onnx` for this model (``marsdust export-onnx``);
        default: export to a temporary file now (~2 s).
    threads : int, optional
        ONNX Runtime intra-op threads (default: ``torch.get_num_threads()``).
    """

    def __init__(self, model, onnx_path: str | os.PathLike | None = None, threads: int | None = None):
        import tempfile

        import onnxruntime as ort
        import torch

        self.fingerprint = _model_fingerprint(model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # no busy-waiting between runs: the spinning threads would take the cores from the PyTorch heads,
        # the PNG reader thread and the writer thread that run beside ONNX Runtime
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if onnx_path is None:
            with tempfile.TemporaryDirectory(prefix="marsdust-onnx-") as folder:
                made = export_backbone_onnx(model, Path(folder) / "backbone.onnx")
                self.session = ort.InferenceSession(os.fspath(made), options, providers=["CPUExecutionProvider"])
        else:
            onnx_path = Path(onnx_path)
            if not onnx_path.is_file():
                raise FileNotFoundError(f"{onnx_path}: no such ONNX model (write one with marsdust export-onnx)")
            self.session = ort.InferenceSession(os.fspath(onnx_path), options, providers=["CPUExecutionProvider"])
        outputs = [o.name for o in self.session.get_outputs()]
        n_levels = len(model.rpn.anchor_generator.sizes)  # one anchor size per pyramid level
        if len(outputs) != 3 * n_levels:
            raise ValueError(f"{onnx_path}: the ONNX model has {len(outputs)} outputs but the detector has "
                             f"{n_levels} pyramid levels (3 outputs each: features, RPN logits, RPN deltas); "
                             "export it from this checkpoint (marsdust export-onnx)")
        self.level_keys = [name.removeprefix("level_") for name in outputs[:n_levels]]
        self.input_name = self.session.get_inputs()[0].name

    def matches(self, model) -> bool:
        """True while ``model``'s weights are the ones this session was built from."""
        return self.fingerprint == _model_fingerprint(model)

    def __call__(self, batch):
        """Pyramid levels (an ``OrderedDict`` of CPU tensors) and the RPN head's per-level ``(logits,
        deltas)`` lists of a normalized ``(N, C, H, W)`` batch."""
        from collections import OrderedDict

        import numpy as np
        import torch

        arrays = self.session.run(None, {self.input_name: np.ascontiguousarray(batch.detach().cpu().numpy())})
        tensors = [torch.from_numpy(a) for a in arrays]
        n = len(self.level_keys)
        levels = OrderedDict(zip(self.level_keys, tensors[:n]))
        return levels, (tensors[n:2 * n], tensors[2 * n:])


_ENGINE_CACHE: "dict[tuple, tuple[object, OnnxBackbone]]" = {}


def onnx_backbone_for(model, onnx_path: str | os.PathLike | None = None) -> OnnxBackbone:
    """A cached :class:`OnnxBackbone` for ``model``, rebuilt when its weights changed since."""
    import weakref

    key = (id(model), None if onnx_path is None else os.fspath(onnx_path))
    cached = _ENGINE_CACHE.get(key)
    if cached is not None and cached[0]() is model and cached[1].matches(model):
        return cached[1]
    engine = OnnxBackbone(model, onnx_path)
    _ENGINE_CACHE.clear()  # one model at a time: never keep sessions of dead models
    _ENGINE_CACHE[key] = (weakref.ref(model), engine)
    return engine


def resolve_engine(model, device, engine: str | None = None) -> str:
    """The engine that will run ``model`` on ``device``: ``onnx``, ``torch`` or ``plain`` (see :data:`ENGINES`)."""
    import torch

    engine = (engine or default_engine()).lower()
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    fast = _has_fast_path(model)
    on_cpu = torch.device(device).type == "cpu"
    if engine == "auto":
        return "onnx" if fast and on_cpu and _onnxruntime_available() else ("torch" if fast else "plain")
    if engine == "onnx":
        if not on_cpu:
            raise ValueError("engine 'onnx' runs on CPU only; use engine 'torch' on a GPU")
        if not _onnxruntime_available():
            raise ValueError("engine 'onnx' needs the onnxruntime package")
    if engine in ("onnx", "torch") and not fast:
        return "plain"
    return engine


def run_model(model, tensors: Sequence, device, score_threshold: float, engine: str = "torch",
              onnx_backbone: "OnnxBackbone | None" = None) -> list[dict]:
    """Model outputs on CPU for a list of ``(C, H, W)`` images.

    Each output has ``boxes`` (n, 4, input pixels), ``scores`` and either ``mask_rois`` (n, 1, M, M)
    probabilities in box coordinates (fast path for :class:`~marsdust.models.MarsDustDetector`:
    torchvision's pasting of every mask into a full-size image — zeros, stack, cat — is skipped;
    :func:`decode_map` pastes each mask only inside its box) or ``masks`` (n, 1, H, W) pasted by
    the model (any other torchvision-style detector, or ``engine="plain"``), or neither (box-only
    detectors).

    Parameters
    ----------
    engine : {"torch", "onnx", "plain", "auto"}
        See :data:`ENGINES` (default ``torch``: this low-level call never exports anything by itself).
    onnx_backbone : OnnxBackbone, optional
        The ONNX Runtime backbone for ``engine="onnx"`` (default: a cached one for ``model``).
    """
    import torch

    engine = resolve_engine(model, device, engine)
    with torch.inference_mode(), _score_threshold(model, score_threshold):
        images = [t.to(device, non_blocking=True) for t in tensors]
        if engine in ("torch", "onnx"):
            batch, _ = model.transform(images)
            rpn = model.rpn
            if engine == "onnx":
                features, (logits, deltas) = (onnx_backbone or onnx_backbone_for(model))(batch.tensors)
                rpn = _rpn_with_head_outputs(model.rpn, logits, deltas)
            else:
                features = model.backbone(batch.tensors)
            proposals, _ = rpn(batch, features)
            outputs, _ = model.roi_heads(features, proposals, batch.image_sizes)
            for out in outputs:  # no resize: boxes are already in input pixels
                if "masks" in out:
                    out["mask_rois"] = out.pop("masks")
        else:
            outputs = model(images)
    return [{k: v.detach().to("cpu") for k, v in out.items()} for out in outputs]


def _mask_patch(mask_roi, box) -> tuple[int, int, np.ndarray]:
    """A detection's ``M x M`` mask probabilities resized into its box, as torchvision pastes them.

    Same arithmetic as ``torchvision.models.detection.roi_heads.paste_masks_in_image`` (1-pixel
    padded mask, expanded integer box, bilinear resize) but only the box window is built.

    Returns
    -------
    (row0, col0, patch) : the patch's top-left pixel in input coordinates (may be negative) and
    the float32 patch.
    """
    import torch
    import torch.nn.functional as F
    from torchvision.models.detection.roi_heads import expand_boxes, expand_masks

    padded, scale = expand_masks(mask_roi[None], padding=1)
    expanded = expand_boxes(torch.as_tensor(box, dtype=torch.float32)[None], scale).to(torch.int64)[0].tolist()
    x0, y0, x1, y1 = expanded
    width, height = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
    patch = F.interpolate(padded[:, :1].float(), size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    return y0, x0, patch.numpy()


def _fold_columns(width: int, start_col: int, stop_col: int, shift: int) -> list[tuple[int, int, int]]:
    """Split padded columns ``[start, stop)`` into runs that map to contiguous map columns.

    Returns ``(src_start, src_stop, dst_start)``: padded column ``c`` is map column ``(c - shift) mod width``.
    """
    runs = []
    col = start_col
    while col < stop_col:
        dst = (col - shift) % width
        run = min(stop_col - col, width - dst)
        runs.append((col, col + run, dst))
        col += run
    return runs


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def decode_map(prepared: _Prepared, outputs: Sequence[dict], settings: DetectSettings, seconds: float = 0.0) -> MapResult:
    """Turn the model outputs of one map's tiles into a :class:`MapResult` (see the module docstring)."""
    t0 = time.perf_counter()
    image = prepared.image
    grid = image.grid
    height, width = grid.shape
    pad = prepared.pad_px
    valid = image.valid
    candidates = []  # (score, box canonical [x0, y0, x1, y1], probability map)
    for tile, out in zip(prepared.tiles, outputs):
        boxes = out["boxes"].numpy().astype(np.float64, copy=False)
        scores = out["scores"].numpy()
        masks = out.get("masks")
        mask_rois = out.get("mask_rois")
        tile_h, tile_w = tile.y1 - tile.y0, tile.x1 - tile.x0
        for k in range(len(scores)):
            score = float(scores[k])
            if score < settings.score_threshold:
                continue
            bx0, by0, bx1, by1 = boxes[k]
            cx = (bx0 + bx1) / 2.0 + tile.x0  # padded-image coordinates
            cy = (by0 + by1) / 2.0 + tile.y0
            if not (tile.core_x[0] <= cx < tile.core_x[1] and tile.core_y[0] <= cy < tile.core_y[1]):
                continue  # another tile owns this storm
            if not (pad <= cx < pad + width):
                continue  # the copy in the pad; the same storm is kept from the unpadded columns
            prob = np.zeros((height, width), dtype=np.float32)
            if mask_rois is not None:
                row0, col0, patch = _mask_patch(mask_rois[k], boxes[k])
                _paste_patch_folded(prob, patch, row0, col0, tile, tile_h, tile_w, pad, width)
            elif masks is not None:
                _paste_folded(prob, masks[k, 0].numpy(), tile, (bx0, by0, bx1, by1), pad, width)
            else:  # box-only detector: the box is the storm
                _fill_box_folded(prob, tile, (bx0, by0, bx1, by1), pad, width)
            box = np.array([bx0 + tile.x0 - pad, by0 + tile.y0, bx1 + tile.x0 - pad, by1 + tile.y0])
            candidates.append((score, box, prob))
    candidates.sort(key=lambda item: -item[0])
    kept_masks, kept_scores, kept_boxes, kept_probs = [], [], [], []
    for score, box, prob in candidates:
        raw = prob >= settings.mask_threshold
        n_raw = np.count_nonzero(raw)
        if n_raw == 0:
            continue
        mask = raw & valid
        if np.count_nonzero(mask) < settings.min_valid_fraction * n_raw or not mask.any():
            continue  # mostly in missing data
        if any(_mask_iou(mask, other) > settings.duplicate_iou for other in kept_masks):
            continue
        kept_masks.append(mask)
        kept_scores.append(score)
        kept_boxes.append(box)
        kept_probs.append(prob)
    factor = grid.res_deg / prepared.native_grid.res_deg
    native_boxes = np.array([_native_box(b, width, factor) for b in kept_boxes]).reshape(-1, 4)
    records = export.detection_records(prepared.map_id, prepared.mars_year, prepared.ls, grid, kept_masks,
                                       kept_scores, boxes_px=native_boxes)
    probability = None
    if settings.probability:
        probability = np.zeros((height, width), dtype=np.float32)
        for prob in kept_probs:
            np.maximum(probability, prob, out=probability)
    seconds += prepared.seconds + time.perf_counter() - t0
    return MapResult(prepared.map_id, prepared.mars_year, prepared.ls, grid, prepared.native_grid, valid,
                     float(valid.mean()), records, kept_masks, probability, image, seconds)


def _paste_folded(prob: np.ndarray, tile_mask: np.ndarray, tile: _Tile, box, pad: int, width: int) -> None:
    """Max-merge one detection's tile-sized mask probabilities (inside its box) into map columns."""
    th, tw = tile_mask.shape
    c0 = max(int(math.floor(box[0])) - 1, 0)
    c1 = min(int(math.ceil(box[2])) + 1, tw)
    r0 = max(int(math.floor(box[1])) - 1, 0)
    r1 = min(int(math.ceil(box[3])) + 1, th)
    if c1 <= c0 or r1 <= r0:
        return
    rows = slice(r0 + tile.y0, r1 + tile.y0)
    for src0, src1, dst in _fold_columns(width, c0 + tile.x0, c1 + tile.x0, pad):
        target = prob[rows, dst:dst + (src1 - src0)]
        np.maximum(target, tile_mask[r0:r1, src0 - tile.x0:src1 - tile.x0], out=target)


def _paste_patch_folded(prob: np.ndarray, patch: np.ndarray, row0: int, col0: int, tile: _Tile, tile_h: int,
                        tile_w: int, pad: int, width: int) -> None:
    """Max-merge a box-sized probability patch (top-left at tile pixel ``row0, col0``) into map columns."""
    r0, c0 = max(row0, 0), max(col0, 0)
    r1, c1 = min(row0 + patch.shape[0], tile_h), min(col0 + patch.shape[1], tile_w)
    if r1 <= r0 or c1 <= c0:
        return
    rows = slice(r0 + tile.y0, r1 + tile.y0)
    for src0, src1, dst in _fold_columns(width, c0 + tile.x0, c1 + tile.x0, pad):
        target = prob[rows, dst:dst + (src1 - src0)]
        source = patch[r0 - row0:r1 - row0, src0 - tile.x0 - col0:src1 - tile.x0 - col0]
        np.maximum(target, source, out=target)


def _fill_box_folded(prob: np.ndarray, tile: _Tile, box, pad: int, width: int) -> None:
    c0 = int(round(box[0])) + tile.x0
    c1 = max(int(round(box[2])) + tile.x0, c0 + 1)
    r0 = int(round(box[1])) + tile.y0
    r1 = max(int(round(box[3])) + tile.y0, r0 + 1)
    for src0, src1, dst in _fold_columns(width, c0, c1, pad):
        prob[r0:r1, dst:dst + (src1 - src0)] = 1.0


def _native_box(box: np.ndarray, width: int, factor: float) -> np.ndarray:
    """A canonical working-grid box → native-grid pixels, ``x0`` moved into ``[0, W)`` (``x1`` may pass ``W``)."""
    out = np.asarray(box, dtype=np.float64).copy()
    if out[0] < 0:
        out[[0, 2]] += width
    elif out[0] >= width:
        out[[0, 2]] -= width
    return out * factor


def detect_map(
    model,
    map_image_or_path: MapImage | str | os.PathLike,
    *,
    map_id: str | None = None,
    mars_year: int = 0,
    ls: float = float("nan"),
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    pad_deg: float = DEFAULT_PAD_DEG,
    max_tile_px: int = DEFAULT_MAX_TILE_PX,
    tile_overlap_px: int | None = None,
    min_valid_fraction: float = MIN_VALID_FRACTION,
    device=None,
    engine: str | None = None,
    onnx_model: str | os.PathLike | None = None,
) -> MapResult:
    """Detect dust storms on one map.

    Parameters
    ----------
    model : MarsDustDetector
        A detector (:func:`marsdust.models.build_model` / :func:`~marsdust.models.load_model`) in eval
        mode; its ``config.map_res_deg`` is the working resolution.
    map_image_or_path : MapImage or path
        The map at any resolution the working resolution is a whole multiple of, or its file
        (``TARFILE::MEMBER`` allowed).
    map_id, mars_year, ls : optional
        Written into the records (default: the file stem, year 0, Ls NaN).
    score_threshold : float
        Detections scoring below this are dropped (and never get masks).
    mask_threshold : float
        Mask probability at which a pixel belongs to the storm.
    pad_deg : float
        Longitude copied across 180° on each side, degrees (rounded up to a multiple-of-32 width).
    max_tile_px, tile_overlap_px : int
        Tiling of the padded working-resolution image (pixels); see the module docstring.
    min_valid_fraction : float
        Detections whose mask has a smaller fraction of observed pixels are dropped.
    device : str or torch.device, optional
        Where to run (default: where the model's parameters are).
    engine : {"auto", "onnx", "torch", "plain"}, optional
        How to run the model (:data:`ENGINES`; default ``$MARSDUST_DETECT_ENGINE`` or ``auto``: ONNX
        Runtime for the backbone on CPU, exported once per model and re-exported if its weights
        change).
    onnx_model : path, optional
        A backbone written by ``marsdust export-onnx`` for this model (default: export on first use).

    Returns
    -------
    MapResult
        Records (``area_km2`` on the sphere, outlines split at 180°, lon/lat bounds in degrees,
        ``x0..y1`` the box in pixels of the map's **native** grid), masks and the probability
        raster on the working grid.
    """
    t0 = time.perf_counter()
    settings = DetectSettings(score_threshold, mask_threshold, pad_deg, max_tile_px, tile_overlap_px,
                              min_valid_fraction, engine=engine,
                              onnx_model=None if onnx_model is None else os.fspath(onnx_model))
    res_deg = float(model.config.map_res_deg)
    image, native = working_image(map_image_or_path, res_deg)
    if map_id is None:
        stem = Path(os.fspath(image.path or "map").split("::")[-1]).name.rsplit(".", 1)[0]
        map_id = _map_id_from_stem(stem)
    device = _model_device(model) if device is None else device
    prepared = prepare_map(image, native, settings, map_id=map_id, mars_year=mars_year, ls=ls,
                           in_channels=int(model.config.in_channels))
    engine = resolve_engine(model, device, settings.engine)
    backbone = onnx_backbone_for(model, settings.onnx_model) if engine == "onnx" else None
    outputs = run_model(model, prepared.tensors, device, settings.score_threshold, engine, backbone)
    return decode_map(prepared, outputs, settings, seconds=time.perf_counter() - t0)


def _model_device(model):
    import torch

    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _map_id_from_stem(stem: str) -> str:
    try:
        return make_map_id(*parse_map_name(stem))
    except ValueError:
        return stem


# ---------------------------------------------------------------------------------------------
# archives: inputs
# ---------------------------------------------------------------------------------------------
def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _single_map_rows(paths: Iterable[str]) -> list[dict]:
    """Rows for loose map files; Mars year and Ls from a ``list_ls.txt`` beside them when there is one."""
    listed: dict[str, dict[str, tuple[int, float]]] = {}
    rows = []
    for path in paths:
        path = str(Path(path).resolve())
        folder = str(Path(path).parent)
        if folder not in listed:
            entries: dict[str, tuple[int, float]] = {}
            list_file = Path(folder) / "list_ls.txt"
            if list_file.is_file():
                parsed, _ = parse_list_ls(list_file.read_text(errors="replace"), str(list_file))
                entries = {stem.lower(): (year, ls) for stem, year, ls in parsed}
            listed[folder] = entries
        stem = Path(path).name.rsplit(".", 1)[0]
        year, ls = listed[folder].get(stem.lower(), (0, float("nan")))
        rows.append({"map_id": _map_id_from_stem(stem), "mars_year": int(year), "ls": float(ls), "path": path})
    return rows


def resolve_maps(maps) -> pd.DataFrame:
    """The maps of a run as a table ``map_id, mars_year, ls, path`` (sorted in time, unique ids).

    Parameters
    ----------
    maps : path, glob pattern, or list of them
        A map file; a glob (``"ARCHIVE/R18/*.png"``); an archive folder, subphase folder or tar, or a
        saved index CSV/Parquet (:func:`marsdust.mdgm.index_archive`); a flat folder of maps; or a
        list mixing these. Loose maps take Mars year and Ls from a ``list_ls.txt`` beside them, or
        year 0 and Ls NaN (then tracking is skipped).

    Raises
    ------
    FileNotFoundError
        A path or pattern that matches nothing.
    ValueError
        Two different files with the same map id.
    """
    items = [maps] if isinstance(maps, (str, os.PathLike)) else list(maps)
    frames = []
    for item in items:
        text = os.fspath(item)
        if _is_glob(text) and not Path(text).exists():
            found = sorted(globlib.glob(text, recursive=True))
            if not found:
                raise FileNotFoundError(f"{text}: no map file matches this pattern")
            frames.append(pd.DataFrame(_single_map_rows(found)))
            continue
        path = Path(text)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such map, archive or index")
        lower = path.name.lower()
        if path.is_file() and lower.endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff")):
            frames.append(pd.DataFrame(_single_map_rows([text])))
            continue
        index = index_archive(path)
        if len(index) == 0 and path.is_dir():
            loose = sorted(str(p) for p in path.iterdir()
                           if p.is_file() and p.name.lower().endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff")))
            if loose:
                frames.append(pd.DataFrame(_single_map_rows(loose)))
                continue
        frames.append(index[["map_id", "mars_year", "ls", "path"]])
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["map_id", "mars_year", "ls", "path"])
    table = table.drop_duplicates(["map_id", "path"])
    clash = table["map_id"].duplicated(keep=False)
    if clash.any():
        first = table.loc[clash].iloc[:2]
        raise ValueError(f"map id {first['map_id'].iloc[0]!r} names two files: {list(first['path'])}")
    table = table.astype({"mars_year": "int64", "ls": "float64"})
    return table.sort_values(["mars_year", "ls", "map_id"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# archives: parts (resumable per-map results)
# ---------------------------------------------------------------------------------------------
def _parts_dir(out_dir: Path) -> Path:
    return out_dir / PARTS_DIR


def part_path(out_dir: str | os.PathLike, map_id: str) -> Path:
    """``OUT/parts/<map_id>.json``: a map is done iff this file exists."""
    return _parts_dir(Path(out_dir)) / f"{map_id}.json"


def _write_json(path: Path, payload: dict) -> None:
    with export.atomic_output(path) as tmp:
        tmp.write_text(json.dumps(payload, allow_nan=True), encoding="utf-8")


def _check_settings(out_dir: Path, settings: dict) -> None:
    """Refuse to resume a run made with other settings (the parts would not be comparable)."""
    path = _parts_dir(out_dir) / SETTINGS_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: unreadable run settings ({err}); use overwrite to start afresh") from err
        if old != settings:
            changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(
                f"{out_dir}: holds parts of a run with other settings ({', '.join(changed)}); "
                "use --overwrite to start afresh or another output folder"
            )
        return
    _write_json(path, settings)


def _error_part(row: dict, message: str, seconds: float) -> dict:
    return {"map": {"map_id": row["map_id"], "mars_year": int(row["mars_year"]), "ls": float(row["ls"]),
                    "valid_fraction": float("nan"), "n_detections": 0, "seconds": seconds,
                    "status": "error", "error": message},
            "detections": [], "mask_chunk": None}


def _write_map_outputs(result: MapResult, out_dir: Path, geotiff: bool, quicklook: bool) -> dict:
    """Mask chunk, optional GeoTIFF / quick-look, then the part JSON (last: it marks the map done)."""
    t0 = time.perf_counter()
    parts = _parts_dir(out_dir)
    chunk_name = None
    try:
        step = export.map_mask_step(result.map_id, result.mars_year, result.ls if np.isfinite(result.ls) else 0.0,
                                    result.masks[:export.MAX_STORM_LABEL], scores=result.scores[:export.MAX_STORM_LABEL],
                                    valid=result.valid)
        chunk = export.write_mask_chunk(parts / "masks", step, result.grid)
        chunk_name = chunk.name
    except ValueError as err:  # a map id without subphase/sol cannot be a cube time step
        log.warning("%s: no mask-cube step (%s)", result.map_id, err)
    if geotiff:
        probability = result.probability if result.probability is not None else np.zeros(result.grid.shape, np.float32)
        export.write_geotiff(out_dir / "geotiff" / f"{result.map_id}.tif", probability, result.grid, valid=result.valid)
    if quicklook and result.image is not None:
        export.write_quicklook_png(out_dir / "quicklook" / f"{result.map_id}.png", result.image.rgb,
                                   [r["polygon_wkt"] for r in result.records], grid=result.grid, title=result.map_id)
    seconds = result.seconds + time.perf_counter() - t0
    payload = {
        "map": {"map_id": result.map_id, "mars_year": result.mars_year, "ls": result.ls,
                "valid_fraction": result.valid_fraction, "n_detections": result.n_detections,
                "seconds": seconds, "status": "ok", "error": ""},
        "detections": result.records,
        "mask_chunk": chunk_name,
    }
    _write_json(part_path(out_dir, result.map_id), payload)
    return payload


# ---------------------------------------------------------------------------------------------
# archives: the run
# ---------------------------------------------------------------------------------------------
def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def _set_threads(threads: int | None) -> None:
    import torch

    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    elif not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(os.cpu_count() or 1)


def _resolve_device(device: str, local_rank: int | None):
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu")
        if device == "cuda" and local_rank is not None:
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device(device)
    if device != "cpu":
        raise ValueError(f"device must be 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}")
    return torch.device("cpu")


def _load(model_or_checkpoint, device):
    from marsdust.models import load_model

    if isinstance(model_or_checkpoint, (str, os.PathLike)):
        model = load_model(model_or_checkpoint, map_location="cpu")
    else:
        model = model_or_checkpoint
    return model.to(device).eval()


def _prefetch(rows: list[dict], res_deg: float, settings: DetectSettings, lookahead: int, loaders: int) -> Iterator:
    """Yield ``(row, prepared or exception)`` in order, decoding up to ``lookahead`` maps ahead in threads."""

    def load(row):
        t0 = time.perf_counter()
        try:
            image, native = working_image(row["path"], res_deg)
            prepared = prepare_map(image, native, settings, map_id=row["map_id"], mars_year=row["mars_year"],
                                   ls=row["ls"], seconds=0.0)
            prepared.seconds = time.perf_counter() - t0
            return prepared
        except (MapReadError, OSError) as err:
            return MapReadError(str(err)) if not isinstance(err, MapReadError) else err

    with ThreadPoolExecutor(max_workers=max(1, loaders), thread_name_prefix="marsdust-read") as pool:
        pending: list[tuple[dict, Future]] = []
        position = 0
        while position < len(rows) or pending:
            while position < len(rows) and len(pending) < lookahead:
                pending.append((rows[position], pool.submit(load, rows[position])))
                position += 1
            row, future = pending.pop(0)
            yield row, future.result()


def detect_archive(
    checkpoint_or_model,
    maps,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 1,
    device: str = "cpu",
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    pad_deg: float = DEFAULT_PAD_DEG,
    max_tile_px: int = DEFAULT_MAX_TILE_PX,
    geotiff: bool = False,
    quicklook: bool = False,
    track: bool = True,
    table_format: str = "csv",
    overwrite: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    workers: int = 1,
    threads: int | None = None,
    merge: bool = True,
    progress: bool = True,
    engine: str | None = None,
    onnx_model: str | os.PathLike | None = None,
) -> DetectSummary:
    """Detect storms on every map of an archive and write the catalog products (see the module docstring).

    Parameters
    ----------
    checkpoint_or_model : path or MarsDustDetector
        A checkpoint file (:func:`marsdust.models.load_model`) or a built detector.
    maps : path, glob or list
        See :func:`resolve_maps`.
    out_dir : path
        Output folder (created); holds ``parts/`` while the run is incomplete.
    batch_size : int
        Maps given to the model at once (useful on a GPU).
    device : {"cpu", "cuda", "cuda:N"}
        Under torchrun, ``cuda`` means ``cuda:LOCAL_RANK``.
    score_threshold, mask_threshold, pad_deg, max_tile_px
        See :func:`detect_map`.
    geotiff, quicklook : bool
        Also write ``OUT/geotiff/<map_id>.tif`` (probability, Mars CRS) / ``OUT/quicklook/<map_id>.png``.
    track : bool
        Link detections into MDAD members and sequences (:func:`marsdust.track.track`); skipped with a
        warning when some map has no Ls.
    table_format : {"csv", "parquet"}
        ``parquet`` writes ``detections.parquet`` besides ``detections.csv``.
    overwrite : bool
        Delete earlier parts and products first (else an interrupted run resumes).
    rank, world_size : int, optional
        This process's share: index rows ``rank::world_size``. Default: ``RANK``/``WORLD_SIZE`` from
        the environment (torchrun), else 0 / 1. With ``world_size > 1`` and torch.distributed
        initialisable from the environment, ranks meet at a barrier and rank 0 merges.
    workers : int
        Local processes (``torch.multiprocessing`` spawn) for a machine without torchrun; each gets
        ``cpu_count // workers`` threads; the calling process merges.
    threads : int, optional
        Torch CPU threads (default: all cores, unless ``OMP_NUM_THREADS`` is set).
    merge : bool
        Build the final products (False: only write parts — used by workers).
    progress : bool
        Show a tqdm bar with maps/s and ETA.
    engine : {"auto", "onnx", "torch", "plain"}, optional
        How to run the model (:data:`ENGINES`; default ``$MARSDUST_DETECT_ENGINE`` or ``auto`` =
        ONNX Runtime for the backbone on CPU, PyTorch on a GPU).
    onnx_model : path, optional
        The backbone written by ``marsdust export-onnx`` for this checkpoint (default: export it to
        a temporary file at the start, ~2 s).

    Returns
    -------
    DetectSummary
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    if table_format not in ("csv", "parquet"):
        raise ValueError(f"table format must be 'csv' or 'parquet', got {table_format!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    settings = DetectSettings(score_threshold, mask_threshold, pad_deg, max_tile_px, engine=engine,
                              onnx_model=None if onnx_model is None else os.fspath(onnx_model))
    rows = resolve_maps(maps).to_dict("records")
    if not rows:
        raise ValueError(f"{maps}: no maps to process")

    env_world = _env_int("WORLD_SIZE")
    if rank is None and world_size is None and env_world and env_world > 1 and workers == 1:
        return _torchrun_rank(checkpoint_or_model, maps, out_dir, rows, t_start, locals())

    rank = 0 if rank is None else int(rank)
    world_size = 1 if world_size is None else int(world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")

    if rank == 0 and merge and overwrite and out_dir.exists():
        _clear_outputs(out_dir)
    model_key = str(Path(checkpoint_or_model).resolve()) if isinstance(checkpoint_or_model, (str, os.PathLike)) else "model"
    _check_settings(out_dir, {"checkpoint": model_key, "score_threshold": score_threshold,
                              "mask_threshold": mask_threshold, "pad_deg": pad_deg, "max_tile_px": max_tile_px})

    if workers > 1:
        processed = sum(not part_path(out_dir, row["map_id"]).is_file() for row in rows)
        if processed:
            _spawn_workers(checkpoint_or_model, maps, out_dir, workers, device, batch_size, settings, geotiff, quicklook)
    else:
        mine = rows[rank::world_size]
        processed = _process_rows(checkpoint_or_model, mine, out_dir, settings, batch_size=batch_size, device=device,
                                  geotiff=geotiff, quicklook=quicklook, threads=threads, progress=progress,
                                  local_rank=_env_int("LOCAL_RANK"))
    summary = DetectSummary(out_dir, len(rows), processed, 0, 0, 0.0, 0.0)
    if merge and rank == 0:
        summary = merge_parts(out_dir, rows, track=track, table_format=table_format, progress=progress)
        summary.n_processed = processed
    summary.seconds = time.perf_counter() - t_start
    summary.maps_per_second = processed / summary.seconds if summary.seconds > 0 else 0.0
    return summary


def _clear_outputs(out_dir: Path) -> None:
    for name in (PARTS_DIR, "geotiff", "quicklook"):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    for name in ("detections.csv", "detections.parquet", "detections.geojson", "masks.nc", "masks_master.csv",
                 "maps.csv"):
        (out_dir / name).unlink(missing_ok=True)


def _process_rows(checkpoint_or_model, rows: list[dict], out_dir: Path, settings: DetectSettings, *, batch_size: int,
                  device: str, geotiff: bool, quicklook: bool, threads: int | None, progress: bool,
                  local_rank: int | None) -> int:
    """Process the maps of ``rows`` that have no part yet; returns how many were processed."""
    todo = [row for row in rows if not part_path(out_dir, row["map_id"]).is_file()]
    if len(todo) < len(rows):
        log.info("%s: %d of %d maps already done (resuming)", out_dir, len(rows) - len(todo), len(rows))
    if not todo:
        return 0
    _set_threads(threads)
    torch_device = _resolve_device(device, local_rank)
    model = _load(checkpoint_or_model, torch_device)
    res_deg = float(model.config.map_res_deg)
    in_channels = int(model.config.in_channels)
    engine = resolve_engine(model, torch_device, settings.engine)
    onnx_backbone = OnnxBackbone(model, settings.onnx_model) if engine == "onnx" else None
    log.info("detect: engine %s on %s", engine, torch_device)
    if in_channels != 3:
        raise ValueError(f"the detector expects {in_channels} bands; detect feeds RGB maps (3 bands)")
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="detect", unit="map", disable=not progress, dynamic_ncols=True)
    n_errors = 0
    host_threads = _host_threads(torch_device, batch_size)
    with ThreadPoolExecutor(max_workers=host_threads, thread_name_prefix="marsdust-write") as writer:
        pending_writes: list[Future] = []
        batch: list[_Prepared] = []

        def flush():
            nonlocal pending_writes
            if not batch:
                return
            t0 = time.perf_counter()
            outputs = run_model(model, [t for p in batch for t in p.tensors], torch_device, settings.score_threshold,
                                engine, onnx_backbone)
            share = (time.perf_counter() - t0) / len(batch)
            position = 0
            for prepared in batch:
                own = outputs[position:position + len(prepared.tensors)]
                position += len(prepared.tensors)
                pending_writes.append(writer.submit(_decode_and_write, prepared, own, settings, share, out_dir,
                                                    geotiff, quicklook))
            batch.clear()
            while len(pending_writes) > 2 * batch_size:  # bounded memory: wait for the writer to catch up
                pending_writes.pop(0).result()
                bar.update(1)
            done = [f for f in pending_writes if f.done()]
            for future in done:
                future.result()  # re-raise write errors
                bar.update(1)
            pending_writes = [f for f in pending_writes if not f.done()]

        lookahead = max(2 * batch_size, host_threads) + 1
        for row, loaded in _prefetch(todo, res_deg, settings, lookahead=lookahead, loaders=host_threads):
            if isinstance(loaded, Exception):
                n_errors += 1
                log.error("%s: skipped, cannot read map %s: %s", row["map_id"], row["path"], loaded)
                _write_json(part_path(out_dir, row["map_id"]), _error_part(row, str(loaded), 0.0))
                bar.update(1)
                continue
            batch.append(loaded)
            if len(batch) >= batch_size:
                flush()
            bar.set_postfix(errors=n_errors, refresh=False)
        flush()
        for future in pending_writes:
            future.result()
            bar.update(1)
    bar.close()
    return len(todo)


def _host_threads(device, batch_size: int) -> int:
    """Reader threads (decode the next maps) and writer threads (post-process and save) each.

    On a GPU the model takes milliseconds per map and the host work is the bottleneck: decoding PNGs
    (~0.15 s per native map) and post-processing (outlines, ~3 ms per storm). PIL and most numpy
    work release the GIL, so several threads of each pay; on CPU the cores belong to torch and one
    of each overlaps enough.
    """
    if device.type != "cuda":
        return 1
    return min(8, max(1, (os.cpu_count() or 1) // 2), batch_size)


def _decode_and_write(prepared: _Prepared, outputs, settings: DetectSettings, infer_seconds: float, out_dir: Path,
                      geotiff: bool, quicklook: bool) -> dict:
    result = decode_map(prepared, outputs, settings, seconds=infer_seconds)
    if not quicklook:
        result.image = None
    return _write_map_outputs(result, out_dir, geotiff, quicklook)


# ---------------------------------------------------------------------------------------------
# scale-out
# ---------------------------------------------------------------------------------------------
def _worker_main(index: int, checkpoint, maps, out_dir: str, workers: int, device: str, batch_size: int,
                 settings: DetectSettings, geotiff: bool, quicklook: bool, threads: int) -> None:
    """One local worker process (torch.multiprocessing.spawn target)."""
    logging.basicConfig(level=logging.WARNING)
    rows = resolve_maps(maps).to_dict("records")[index::workers]
    _process_rows(checkpoint, rows, Path(out_dir), settings, batch_size=batch_size, device=device, geotiff=geotiff,
                  quicklook=quicklook, threads=threads, progress=False,
                  local_rank=index if device == "cuda" else None)


def _spawn_workers(checkpoint_or_model, maps, out_dir: Path, workers: int, device: str, batch_size: int,
                   settings: DetectSettings, geotiff: bool, quicklook: bool) -> None:
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    threads = max(1, (os.cpu_count() or 1) // workers)
    maps_arg = [os.fspath(m) for m in maps] if isinstance(maps, (list, tuple)) else os.fspath(maps)
    log.info("detect: %d local worker processes, %d threads each", workers, threads)
    # fork is much faster to start (no re-import of torch) and safe while this process has not used CUDA
    start_method = "fork" if sys.platform.startswith("linux") and device == "cpu" else "spawn"
    try:
        mp.start_processes(_worker_main, args=(checkpoint_or_model, maps_arg, str(out_dir), workers, device, batch_size,
                                               settings, geotiff, quicklook, threads),
                           nprocs=workers, join=True, start_method=start_method)
    except ProcessException as err:  # the child's traceback is in the message: keep its last line
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        raise ValueError(f"a detect worker failed: {lines[-1] if lines else err} (maps done so far are kept; "
                         "run the command again to resume)") from err


def _torchrun_rank(checkpoint_or_model, maps, out_dir: Path, rows: list[dict], t_start: float, options: dict):
    """One torchrun rank: process rows ``rank::world_size``, barrier, rank 0 merges."""
    import datetime

    import torch
    import torch.distributed as dist

    rank, world_size = _env_int("RANK") or 0, _env_int("WORLD_SIZE") or 1
    use_cuda = options["device"].startswith("cuda")
    initialised_here = False
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(_resolve_device(options["device"], _env_int("LOCAL_RANK")))
        dist.init_process_group(backend=backend, init_method="env://", timeout=datetime.timedelta(hours=72))
        initialised_here = True
    try:
        if rank == 0 and options["overwrite"] and out_dir.exists():
            _clear_outputs(out_dir)
        dist.barrier()
        kwargs = {k: options[k] for k in ("batch_size", "device", "score_threshold", "mask_threshold", "pad_deg",
                                          "max_tile_px", "geotiff", "quicklook", "track", "table_format", "threads",
                                          "progress", "engine", "onnx_model")}
        kwargs["progress"] = kwargs["progress"] and rank == 0
        threads = kwargs.pop("threads")
        if threads is None and not use_cuda:
            local_world = _env_int("LOCAL_WORLD_SIZE") or world_size
            threads = max(1, (os.cpu_count() or 1) // local_world)
        summary = detect_archive(checkpoint_or_model, maps, out_dir, rank=rank, world_size=world_size, merge=False,
                                 threads=threads, **kwargs)
        dist.barrier()
        if rank == 0:
            merged = merge_parts(out_dir, rows, track=options["track"], table_format=options["table_format"],
                                 progress=options["progress"])
            merged.n_processed = summary.n_processed
            summary = merged
        dist.barrier()
    finally:
        if initialised_here:
            dist.destroy_process_group()
    summary.seconds = time.perf_counter() - t_start
    summary.maps_per_second = summary.n_processed / summary.seconds if summary.seconds > 0 else 0.0
    return summary


# ---------------------------------------------------------------------------------------------
# merging parts into the products
# ---------------------------------------------------------------------------------------------
def _read_part(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable part file ({err}); delete it to redo that map") from err


def merge_parts(out_dir: str | os.PathLike, rows: Sequence[dict], *, track: bool = True, table_format: str = "csv",
                progress: bool = True) -> DetectSummary:
    """Build ``detections.csv`` / ``.geojson`` / ``masks.nc`` / ``maps.csv`` from the parts of ``rows``, atomically.

    Raises
    ------
    ValueError
        A map of ``rows`` has no part (the run is incomplete).
    """
    from marsdust.track import track as track_detections

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    missing = [row["map_id"] for row in rows if not part_path(out_dir, row["map_id"]).is_file()]
    if missing:
        raise ValueError(f"{out_dir}: {len(missing)} map(s) have no part yet (e.g. {missing[:3]}); run detect again")
    parts = [_read_part(part_path(out_dir, row["map_id"])) for row in rows]
    maps_table = pd.DataFrame([p["map"] for p in parts], columns=MAPS_COLUMNS)
    records = [dict(rec, _order=k) for p in parts for k, rec in enumerate(p["detections"])]
    detections = export.detections_frame(records)
    order_in_map = detections.pop("_order") if "_order" in detections.columns else pd.Series(dtype="int64")
    tracked = False
    if track and len(detections):
        if detections["ls"].isna().any():
            log.warning("%s: some maps have no Ls (no list_ls.txt / index); tracking skipped", out_dir)
        else:
            detections = track_detections(detections)
            tracked = True
    paths: dict[str, Path] = {}
    paths["detections"] = export.write_table(detections, out_dir / "detections.csv")
    if table_format == "parquet":
        paths["parquet"] = export.write_table(detections, out_dir / "detections.parquet")
    paths["geojson"] = export.write_geojson(detections, out_dir / "detections.geojson")
    masks = _merge_masks(out_dir, parts, detections, order_in_map, tracked, progress)
    if masks is not None:
        paths["masks"] = masks
        master = detections.copy()
        if not tracked:  # label k+1 of a map is its (k+1)-th detection: name it like an MDAD member
            master["member_id"] = [_detection_member_id(m, int(k)) for m, k in zip(master["map_id"], order_in_map)]
        paths["masks_master"] = export.write_master_csv(master, out_dir / "masks_master.csv")
    paths["maps"] = export.write_table(maps_table, out_dir / "maps.csv")
    n_errors = int((maps_table["status"] == "error").sum())
    if n_errors:
        bad = maps_table.loc[maps_table["status"] == "error", "map_id"].tolist()
        log.warning("%s: %d map(s) could not be read and were skipped: %s (see maps.csv)", out_dir, n_errors, bad[:10])
    seconds = time.perf_counter() - t0
    return DetectSummary(out_dir, len(rows), 0, n_errors, len(detections), seconds, 0.0, paths)


def _detection_member_id(map_id: str, k: int) -> str:
    try:
        subphase, _ = parse_map_name(map_id)
    except ValueError:
        return ""
    return f"{subphase}_{k + 1:03d}"


def _merge_masks(out_dir: Path, parts: list[dict], detections: pd.DataFrame, order_in_map: pd.Series, tracked: bool,
                 progress: bool) -> Path | None:
    """Concatenate the per-map mask chunks into ``masks.nc`` (time-ordered), relabelled to members if tracked."""
    import netCDF4

    chunks = [(p["map"], out_dir / PARTS_DIR / "masks" / p["mask_chunk"]) for p in parts if p.get("mask_chunk")]
    if not chunks:
        log.warning("%s: no map gave a mask-cube step; masks.nc not written", out_dir)
        return None
    luts = _label_tables(detections, order_in_map, tracked)
    with netCDF4.Dataset(chunks[0][1]) as ds:
        res_deg = 360.0 / ds.dimensions["longitude"].size
    grid = None
    for north, south in ((90.0, -90.0), (60.0, -60.0)):  # the writer only needs width and resolution
        try:
            grid = MapGrid(north, south, res_deg)
            break
        except ValueError:
            continue
    if grid is None:
        log.warning("%s: %g° working grid does not fit a latitude band; masks.nc not written", out_dir, res_deg)
        return None
    order = sorted(range(len(chunks)), key=lambda i: (chunks[i][0]["mars_year"], chunks[i][0]["ls"], chunks[i][0]["map_id"]))
    from tqdm.auto import tqdm

    path = out_dir / "masks.nc"
    with export.MaskCubeWriter(path, grid) as cube:
        for i in tqdm(order, desc="masks.nc", unit="map", disable=not progress or len(order) < 50):
            info, chunk = chunks[i]
            with netCDF4.Dataset(chunk) as ds:
                ds.set_auto_mask(False)
                labels = np.asarray(ds["MDAD"][0])
                lut = luts.get(info["map_id"])
                if lut is not None:
                    labels = lut[labels]
                cube.append_cube_slice(labels, str(ds["dayList"][0]), int(ds["marsYear"][0]), float(ds["timeList"][0, 4]),
                                       time_row=np.asarray(ds["timeList"][0], dtype=np.float64))
    return path


def _label_tables(detections: pd.DataFrame, order_in_map: pd.Series, tracked: bool) -> dict[str, np.ndarray]:
    """Per map: a 256-entry table from detection number (chunk label) to MDAD member number."""
    if not tracked or len(detections) == 0:
        return {}
    try:
        values = [export.member_label_value(m) for m in detections["member_id"]]
    except ValueError as err:
        log.warning("masks.nc keeps per-map detection numbers: a member number does not fit the cube (%s)", err)
        return {}
    luts: dict[str, np.ndarray] = {}
    for map_id, k, value in zip(detections["map_id"], order_in_map, values):
        lut = luts.get(map_id)
        if lut is None:
            lut = luts[map_id] = np.arange(256, dtype=np.uint8)
        if int(k) + 1 <= export.MAX_STORM_LABEL:
            lut[int(k) + 1] = value
    return luts
