"""Per-map part files under ``OUT/parts/``: a map is done iff its part exists, so a run resumes from them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np

from marsdust.formats.geotiff import write_geotiff
from marsdust.formats.mdad_cube import map_mask_step, write_mask_chunk
from marsdust.formats.quicklook import write_quicklook_png
from marsdust.mdad_format import MAX_STORM_LABEL
from marsdust.fileio import write_text_atomic
from marsdust.detect.results import MapResult

log = logging.getLogger(__name__)


PARTS_DIR = "parts"
SETTINGS_FILE = "settings.json"
CLOUD_CHUNKS = "cloud_masks"
"""``OUT/parts/cloud_masks/``: the per-map cloud-mask chunks of a two-class detector."""

NO_HISTORY = "none"
"""``history`` of a map detected without history (its reference window held no earlier map)."""


def history_cell(has_history: bool | None) -> str:
    """A map's ``history`` in its part and ``maps.csv``: ``yes``, :data:`NO_HISTORY`, or empty for a detector
    without reference bands (:attr:`marsdust.detect.results.MapResult.has_history`)."""
    return "" if has_history is None else ("yes" if has_history else NO_HISTORY)


def _parts_dir(out_dir: Path) -> Path:
    return out_dir / PARTS_DIR


_PLAIN_MAP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")
"""Map ids used as file names as they are (``r18_040``): letters, digits, ``_.+-``, at most 100 characters."""


def map_file_stem(map_id: str) -> str:
    """The stem of a map's own files (part, GeoTIFF, quick-look), a valid file name for any map id.

    A plain id (:data:`_PLAIN_MAP_ID`, as every archive map's is) is its own stem; any other (a loose
    map's file name of 240 characters, with spaces, slashes or bytes that are not UTF-8) is its first
    40 plain characters, ``~`` and 16 hex digits of the SHA-256 of the id (``~`` is in no plain id, so
    stems never collide).
    """
    if _PLAIN_MAP_ID.fullmatch(map_id):
        return map_id
    digest = hashlib.sha256(map_id.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{re.sub(r'[^A-Za-z0-9_.+-]', '_', map_id)[:40].lstrip('.')}~{digest}"


def part_path(out_dir: str | os.PathLike, map_id: str) -> Path:
    """``OUT/parts/<stem>.json`` (:func:`map_file_stem`): a map is done iff this file exists."""
    return _parts_dir(Path(out_dir)) / f"{map_file_stem(map_id)}.json"


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as JSON to ``path`` atomically (NaN allowed)."""
    write_text_atomic(path, json.dumps(payload, allow_nan=True))


RUN_RECORD = ".marsdust-detect-run.json"
"""``OUT/.marsdust-detect-run.json``: the run key and summary of a finished run (written when ``parts/`` is removed)."""


def check_settings(out_dir: Path, settings: dict) -> None:
    """Refuse to resume a run made with other settings or inputs (the parts would not be comparable).

    The first run records ``settings`` (the run key of :mod:`marsdust.detect.archive`) in
    ``OUT/parts/settings.json``; a later run must bring the same, else a ValueError names every item
    that differs.
    """
    path = _parts_dir(out_dir) / SETTINGS_FILE
    if path.is_file():
        changed = differing_items(_read_record(path), settings)
        if changed:
            raise ValueError(
                f"{out_dir}: holds parts of a run with other settings ({', '.join(changed)}); "
                "use --overwrite to start afresh or another output folder"
            )
        return
    write_json(path, settings)


def run_settings(out_dir: Path) -> dict:
    """The run key recorded in ``OUT/parts/settings.json`` by :func:`check_settings`."""
    return _read_record(_parts_dir(out_dir) / SETTINGS_FILE)


def record_finished_run(out_dir: Path, settings: dict, summary: dict) -> None:
    """Write :data:`RUN_RECORD`: the run key and ``summary`` (``n_maps, n_errors, n_detections, n_without_history,
    n_beyond_latitudes, paths``, the paths as file names in ``out_dir``), so that a later run of the same command
    finds the work done."""
    write_json(out_dir / RUN_RECORD, {"run_key": settings, "summary": summary})


def finished_run(out_dir: Path, settings: dict) -> dict | None:
    """The summary of a finished run in ``out_dir`` (:func:`record_finished_run`) made with ``settings``, or None.

    None when ``OUT/parts/`` exists (a run under way or interrupted: it resumes) or no run finished here.

    Raises
    ------
    ValueError
        The finished run had other settings or inputs (the items named), or one of its products is gone.
    """
    path = out_dir / RUN_RECORD
    if _parts_dir(out_dir).is_dir() or not path.is_file():
        return None
    record = _read_record(path)
    changed = differing_items(record.get("run_key", {}), settings)
    if changed:
        raise ValueError(f"{out_dir}: holds the products of a run with other settings ({', '.join(changed)}); "
                         "use --overwrite to start afresh or another output folder")
    summary = record.get("summary", {})
    missing = [name for name in summary.get("paths", {}).values() if not (out_dir / name).is_file()]
    if missing:
        raise ValueError(f"{out_dir}: {', '.join(missing)} of the finished run is missing; use --overwrite to "
                         "make the products again")
    return summary


def _read_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable run settings ({err}); use overwrite to start afresh") from err


def differing_items(old: dict, new: dict) -> list[str]:
    """The keys whose values differ between a recorded run key and a new one (sorted; NaN equals NaN)."""
    new = json.loads(json.dumps(new, allow_nan=True))  # as it reads back (tuples as lists)
    return sorted(k for k in set(old) | set(new) if not _same(old.get(k), new.get(k)))


def _same(a, b) -> bool:
    """Equal recorded values (NaN equal to NaN)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (a != a and b != b)
    return a == b


def error_part(row: dict, message: str, seconds: float) -> dict:
    """The part of an unreadable map (``status = error`` in ``maps.csv``, no detections)."""
    return {"map": {"map_id": row["map_id"], "mars_year": int(row["mars_year"]), "ls": float(row["ls"]),
                    "valid_fraction": float("nan"), "n_detections": 0, "seconds": seconds,
                    "status": "error", "error": message, "history": "", "n_beyond_latitudes": 0},
            "detections": [], "mask_chunk": None}


def _write_mask_chunk(result: MapResult, class_name: str, folder: Path) -> str | None:
    """The cube step of one class's detections on one map (numbered in record order); its file name, or None."""
    chosen = [k for k, record in enumerate(result.records) if record.get("class", "dust") == class_name]
    chosen = chosen[:MAX_STORM_LABEL]
    try:
        step = map_mask_step(result.map_id, result.mars_year, result.ls if np.isfinite(result.ls) else 0.0,
                             [result.masks[k] for k in chosen], scores=result.scores[chosen], valid=result.valid)
        return write_mask_chunk(folder, step, result.grid).name
    except ValueError as err:  # a map id without subphase/sol cannot be a cube time step
        log.warning("%s: no mask-cube step (%s)", result.map_id, err)
        return None


def write_map_outputs(result: MapResult, out_dir: Path, geotiff: bool, quicklook: bool) -> dict:
    """Mask chunks (dust; clouds of a two-class detector), optional GeoTIFF / quick-look, then the part JSON
    (last: it marks the map done)."""
    t0 = time.perf_counter()
    parts = _parts_dir(out_dir)
    chunk_name = _write_mask_chunk(result, "dust", parts / "masks")
    cloud_chunk = _write_mask_chunk(result, "cloud", parts / CLOUD_CHUNKS) if "cloud" in result.classes else None
    stem = map_file_stem(result.map_id)
    if geotiff:
        probability = result.probability if result.probability is not None else np.zeros(result.grid.shape, np.float32)
        write_geotiff(out_dir / "geotiff" / f"{stem}.tif", probability, result.grid, valid=result.valid)
    if quicklook and result.image is not None:
        write_quicklook_png(out_dir / "quicklook" / f"{stem}.png", result.image.rgb,
                            [r["polygon_wkt"] for r in result.records], grid=result.grid, title=result.map_id)
    seconds = result.seconds + time.perf_counter() - t0
    payload = {
        "map": {"map_id": result.map_id, "mars_year": result.mars_year, "ls": result.ls,
                "valid_fraction": result.valid_fraction, "n_detections": result.n_detections,
                "seconds": seconds, "status": "ok", "error": "", "history": history_cell(result.has_history),
                "n_beyond_latitudes": int(result.n_beyond_latitudes)},
        "detections": result.records,
        "mask_chunk": chunk_name,
    }
    if cloud_chunk is not None:
        payload["cloud_mask_chunk"] = cloud_chunk
    write_json(part_path(out_dir, result.map_id), payload)
    return payload


def read_part(path: Path) -> dict:
    """A part file's content; an unreadable one is a ValueError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable part file ({err}); delete it to redo that map") from err
