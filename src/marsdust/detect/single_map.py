""":func:`detect_map`: one map end to end (prepare, run the model, decode)."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np

from marsdust.detect.decode import decode_map
from marsdust.detect.engines import onnx_backbone_for, resolve_engine, run_model
from marsdust.detect.inputs import map_id_from_stem
from marsdust.detect.prepare import prepare_map, working_image
from marsdust.detect.results import MapResult
from marsdust.detect.settings import DetectSettings, resolve_latitudes, untiled_if_whole_map
from marsdust.history import no_history_policy, works_without_history
from marsdust.mdgm import MapImage


def detect_map(
    model,
    map_image_or_path: MapImage | str | os.PathLike,
    *,
    map_id: str | None = None,
    mars_year: int = 0,
    ls: float = float("nan"),
    settings: DetectSettings | None = None,
    device=None,
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
    settings : DetectSettings, optional
        Thresholds, wrap pad, tiling and engine (default ``DetectSettings()``: score threshold 0.5; a
        score threshold of None is the detector's stored one). ``classes`` come from the detector.
    device : str or torch.device, optional
        Where to run (default: where the model's parameters are).
    background : ndarray, optional
        For a detector with reference bands (``model.config.reference``): the map's ``(H, W, 3)``
        background on the working grid (:class:`marsdust.history.MapHistory`; :func:`detect_archive`
        builds them from the archive itself). Without one the map has no history: a detector trained
        with reference dropout gets a background of zeros (with a warning), any other refuses the map
        (:func:`marsdust.history.no_history_policy`).

    Returns
    -------
    MapResult
        Records (``area_km2`` on the sphere, outlines split at 180°, lon/lat bounds in degrees,
        ``x0..y1`` the box in pixels of the map's **native** grid), masks and the probability
        raster on the working grid.
    """
    t0 = time.perf_counter()
    settings = _settings_for(model, settings or DetectSettings())
    image, native = working_image(map_image_or_path, float(model.config.map_res_deg))
    if map_id is None:
        map_id = map_id_from_stem(Path(os.fspath(image.path or "map").split("::")[-1]).name.rsplit(".", 1)[0])
    device = _model_device(model) if device is None else device
    prepared = prepare_map(image, native, settings, map_id=map_id, mars_year=mars_year, ls=ls,
                           in_channels=int(model.config.in_channels),
                           extra_bands=_reference_bands(model, image, background, map_id))
    engine = resolve_engine(model, device, settings.engine)
    backbone = onnx_backbone_for(model, settings.onnx_model) if engine == "onnx" else None
    outputs = run_model(model, prepared.tensors, device, settings.score_threshold, engine, backbone,
                        settings.mask_box_scale)
    return decode_map(prepared, outputs, settings, seconds=time.perf_counter() - t0)


def _settings_for(model, settings: DetectSettings) -> DetectSettings:
    """``settings`` with the detector's class names and, for a score threshold of None, its stored threshold;
    for latitudes of None, its training latitudes (:func:`marsdust.detect.settings.resolve_latitudes`)."""
    from marsdust.models import detector_classes, resolve_score_threshold

    threshold = settings.score_threshold
    if threshold is None:
        threshold, _ = resolve_score_threshold(model, None)
    settings, _ = resolve_latitudes(model, settings)
    return untiled_if_whole_map(model, dataclasses.replace(settings, score_threshold=threshold,
                                                           classes=detector_classes(model)))


def _reference_bands(model, image, background, map_id: str):
    """The reference bands a detector expects for ``image`` (None for a detector without reference bands)."""
    reference = model.config.reference_config
    if not reference.enabled:
        if background is not None:
            raise ValueError(f"map {map_id}: a background was given but the detector has no reference bands")
        return None
    if background is None:
        no_history_policy(reference, [map_id], works_without_history(model), missing="background",
                          hint="pass background=, built from the earlier maps by marsdust.history.MapHistory, or "
                               "detect the archive with detect_archive / marsdust detect")
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
