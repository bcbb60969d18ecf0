""":func:`detect_map`: one map end to end (prepare, run the model, decode)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from marsdust.detect.decode import decode_map
from marsdust.detect.engines import onnx_backbone_for, resolve_engine, run_model
from marsdust.detect.inputs import _map_id_from_stem
from marsdust.detect.prepare import prepare_map, working_image
from marsdust.detect.results import MapResult
from marsdust.detect.settings import DEFAULT_MAX_TILE_PX, DEFAULT_PAD_DEG, MIN_VALID_FRACTION, DetectSettings
from marsdust.mdgm import MapImage

log = logging.getLogger(__name__)


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
    background: np.ndarray | None = None,
) -> MapResult:
    """Detect dust storms (and, with a two-class detector, water-ice clouds) on one map.

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
        Tiling of the padded working-resolution image (pixels); see :mod:`marsdust.detect`.
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
    background : ndarray, optional
        For a detector with reference bands (``model.config.reference``): the map's ``(H, W, 3)``
        background on the working grid (:class:`marsdust.reference.ReferenceBuilder`). Without it
        the map is treated as the first of an archive (no earlier sols: a background of zeros);
        :func:`detect_archive` builds backgrounds from the archive itself.

    Returns
    -------
    MapResult
        Records (``area_km2`` on the sphere, outlines split at 180°, lon/lat bounds in degrees,
        ``x0..y1`` the box in pixels of the map's **native** grid), masks and the probability
        raster on the working grid.
    """
    from marsdust.models import detector_classes

    t0 = time.perf_counter()
    settings = DetectSettings(score_threshold, mask_threshold, pad_deg, max_tile_px, tile_overlap_px,
                              min_valid_fraction, engine=engine,
                              onnx_model=None if onnx_model is None else os.fspath(onnx_model),
                              classes=detector_classes(model))
    res_deg = float(model.config.map_res_deg)
    image, native = working_image(map_image_or_path, res_deg)
    if map_id is None:
        stem = Path(os.fspath(image.path or "map").split("::")[-1]).name.rsplit(".", 1)[0]
        map_id = _map_id_from_stem(stem)
    device = _model_device(model) if device is None else device
    prepared = prepare_map(image, native, settings, map_id=map_id, mars_year=mars_year, ls=ls,
                           in_channels=int(model.config.in_channels),
                           extra_bands=_reference_bands(model, image, background, map_id))
    engine = resolve_engine(model, device, settings.engine)
    backbone = onnx_backbone_for(model, settings.onnx_model) if engine == "onnx" else None
    outputs = run_model(model, prepared.tensors, device, settings.score_threshold, engine, backbone)
    return decode_map(prepared, outputs, settings, seconds=time.perf_counter() - t0)


def _reference_bands(model, image, background, map_id: str):
    """The reference bands a detector expects for ``image`` (None for a detector without reference bands)."""
    reference = model.config.reference_config
    if not reference.enabled:
        if background is not None:
            raise ValueError(f"map {map_id}: a background was given but the detector has no reference bands")
        return None
    if background is None:
        log.warning("map %s: the detector uses %s backgrounds but none was given; using none (as for the first "
                    "map of an archive). detect_archive builds them from the archive.", map_id, reference.kind)
        return np.zeros((*image.grid.shape, reference.n_bands), dtype=np.float32)
    if background.shape != (*image.grid.shape, reference.n_bands):
        raise ValueError(f"map {map_id}: background of shape {background.shape}, expected "
                         f"{(*image.grid.shape, reference.n_bands)} (the working grid, {reference.n_bands} bands)")
    return background


def _model_device(model):
    import torch

    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")
