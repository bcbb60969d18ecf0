"""Test-time adaptation of a detector to an archive that looks different (AdaBN, ``marsdust adapt``).

AdaBN (Li et al. 2016) keeps every learnt weight and re-estimates only the BatchNorm running
statistics (mean and variance per channel) on unlabeled maps of the target archive, so that the
normalised features of the new camera are centred and scaled as those of the training maps were.

Rules decided here
------------------
* **Which detectors**: those whose backbone holds BatchNorm layers (``DetectorConfig.norm ==
  "batch"``, e.g. the model preset ``small_cpu``). GroupNorm and frozen BatchNorm keep no statistics
  to re-estimate: such a detector is refused (:class:`AdaptationError`).
* **Statistics**: every BatchNorm layer of the backbone is reset and then accumulates a *cumulative
  average* over the target maps (``momentum = None``: each map, all its tiles one batch, weighs the
  same). Only those layers are in train mode; everything else stays in eval mode, no gradient is
  computed and no weight changes. The layers' own momentum is restored afterwards.
* **Inputs** are prepared exactly as ``marsdust detect`` prepares them: the map at the working
  resolution (:func:`marsdust.detect.prepare.working_image`), wrap-padded and tiled
  (:func:`marsdust.detect.prepare.prepare_map` with default :class:`~marsdust.detect.DetectSettings`),
  reference bands from :class:`marsdust.history.MapHistory` under the detector's no-history rule,
  then the model's own ``transform`` (input normalisation, padding to a multiple of 32).
* **Which maps**: all maps of the target archive, or ``n_maps`` of them spread evenly in time.
* **Record**: the adapted checkpoint keeps the source checkpoint's extra metadata and adds
  ``adaptation``: ``{"method": "adabn", "source_checkpoint", "target_archive", "n_maps",
  "map_ids", "date_utc"}`` (``metrics.json`` of ``marsdust evaluate`` repeats it).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pandas as pd

ADAPTATION_METHOD = "adabn"
"""The ``method`` recorded in an adapted checkpoint's ``adaptation`` metadata."""


class AdaptationError(ValueError):
    """A detector or target archive that AdaBN cannot use (message names what and why)."""


def batch_norm_layers(model) -> list:
    """The BatchNorm layers of ``model``'s backbone whose running statistics AdaBN re-estimates.

    Raises
    ------
    AdaptationError
        The backbone has none (GroupNorm or frozen BatchNorm detectors), or there is no backbone (``unet``).
    """
    from torch import nn

    if getattr(model, "backbone", None) is None:  # the unet segmenters
        raise AdaptationError(f"detector {model.model_name!r} has no backbone: AdaBN here adapts the R-CNN "
                              "detectors' backbone")
    kinds = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)  # not FrozenBatchNorm2d: it keeps no statistics
    layers = [m for m in model.backbone.modules() if isinstance(m, kinds) and m.track_running_stats]
    if not layers:
        raise AdaptationError(
            f"detector {model.model_name!r} (norm {model.config.norm!r}) has no BatchNorm running statistics to "
            "re-estimate: AdaBN needs a detector trained with norm 'batch' (e.g. model preset small_cpu); "
            "GroupNorm and frozen BatchNorm detectors cannot be adapted this way")
    return layers


def spread_in_time(maps: pd.DataFrame, n_maps: int | None) -> pd.DataFrame:
    """``n_maps`` rows of a time-sorted map table, evenly spaced (all of them when None or more than there are)."""
    if n_maps is not None and n_maps < 1:
        raise AdaptationError(f"n_maps must be at least 1, got {n_maps}")
    if n_maps is None or n_maps >= len(maps):
        return maps
    positions = np.unique(np.round(np.linspace(0, len(maps) - 1, n_maps)).astype(int))
    return maps.iloc[positions]


def _map_backgrounds(model, maps: pd.DataFrame, all_maps: pd.DataFrame) -> dict | None:
    """The reference background of each map of ``maps`` (history: ``all_maps``), None without reference bands."""
    from marsdust.detect.prepare import working_image
    from marsdust.history import MapHistory
    from marsdust.mdgm import read_map

    if not model.config.reference_config.enabled:
        return None
    res_deg = float(model.config.map_res_deg)

    def load(path: str):
        image, _ = working_image(read_map(path), res_deg)
        return image.rgb, image.valid

    return MapHistory.for_detector(model, all_maps, load).backgrounds(maps["map_id"])


def detector_inputs(model, row, background) -> list:
    """The tiles of one map as ``marsdust detect`` feeds them to the model (before ``model.transform``)."""
    from marsdust.detect import DetectSettings
    from marsdust.detect.prepare import prepare_map, working_image
    from marsdust.mdgm import read_map

    image, native = working_image(read_map(row.path), float(model.config.map_res_deg))
    extra = None if background is None else np.asarray(background, dtype=np.float32)
    prepared = prepare_map(image, native, DetectSettings(), map_id=str(row.map_id), mars_year=int(row.mars_year),
                           ls=float(row.ls), in_channels=int(model.config.in_channels), extra_bands=extra)
    return prepared.tensors


def adapt_batch_norm(model, maps: pd.DataFrame, *, all_maps: pd.DataFrame | None = None, device: str = "cpu",
                     progress: bool = False):
    """Re-estimate the backbone's BatchNorm running statistics on ``maps`` (AdaBN, in place; see the module rules).

    Parameters
    ----------
    model : MarsDustDetector
        A detector with BatchNorm (:func:`batch_norm_layers`).
    maps : DataFrame
        ``map_id, mars_year, ls, path`` of the target maps to average over.
    all_maps : DataFrame, optional
        Every map the reference backgrounds may be built from (default ``maps``).
    device : str
        Where to run.
    progress : bool
        Show a progress bar.

    Returns
    -------
    MarsDustDetector
        ``model``, in eval mode, with the new statistics.
    """
    import torch
    from tqdm.auto import tqdm

    if len(maps) == 0:
        raise AdaptationError("no target maps to adapt on")
    layers = batch_norm_layers(model)
    backgrounds = _map_backgrounds(model, maps, maps if all_maps is None else all_maps)
    momenta = [layer.momentum for layer in layers]
    model.to(device).eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the maps
        layer.train()
    try:
        with torch.no_grad():
            for row in tqdm(maps.itertuples(), total=len(maps), desc="AdaBN", unit="map", disable=not progress):
                background = None if backgrounds is None else backgrounds[row.map_id]
                tensors = [t.to(device) for t in detector_inputs(model, row, background)]
                batch, _ = model.transform(tensors)
                model.backbone(batch.tensors)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.eval()
    return model


def adapt_checkpoint(checkpoint: str | os.PathLike, target_archive, out: str | os.PathLike, *,
                     n_maps: int | None = None, history=None, device: str = "cpu", progress: bool = False) -> Path:
    """``marsdust adapt``: a checkpoint's detector adapted (AdaBN) to a target archive, saved with its record.

    Parameters
    ----------
    checkpoint : path
        The detector to adapt (norm ``batch``).
    target_archive : path, glob or list of them
        The unlabeled target maps, as :func:`marsdust.detect.inputs.resolve_maps` takes them (an
        archive folder, tar, index, glob, map files, or a list of these).
    out : path
        The adapted checkpoint to write.
    n_maps : int, optional
        Use this many maps spread evenly in time (default: all).
    history : path, glob or list, optional
        More maps the reference backgrounds may be built from (e.g. the whole archive when the target
        is some of its maps), as :func:`marsdust.detect.inputs.history_maps` takes them.
    device : str
        Where to run.
    progress : bool
        Show a progress bar.

    Returns
    -------
    Path
        ``out``; its extra metadata holds the source's and ``adaptation`` (see the module rules).
    """
    from marsdust.detect.inputs import history_maps, resolve_maps
    from marsdust.models import load_model, save_checkpoint

    model = load_model(checkpoint, map_location=device)
    batch_norm_layers(model)  # refuse before reading any map
    target = resolve_maps(target_archive)
    if len(target) == 0:
        raise AdaptationError(f"{target_archive}: no maps found to adapt on")
    chosen = spread_in_time(target, n_maps)
    all_maps = pd.DataFrame(history_maps(target.to_dict("records"), history))
    adapt_batch_norm(model, chosen, all_maps=all_maps, device=device, progress=progress)
    named = [target_archive] if isinstance(target_archive, (str, os.PathLike)) else list(target_archive)
    record = {"method": ADAPTATION_METHOD, "source_checkpoint": str(Path(checkpoint).resolve()),
              "target_archive": ", ".join(str(Path(p).resolve()) for p in named[:3])
                                + (f" and {len(named) - 3} more" if len(named) > 3 else ""),
              "n_maps": int(len(chosen)),
              "map_ids": [str(m) for m in chosen["map_id"]],
              "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    extra = {**(getattr(model, "checkpoint_extra", None) or {}), "adaptation": record}
    return save_checkpoint(model.to("cpu"), out, **extra)
