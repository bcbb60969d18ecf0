""":func:`detect_archive`: the run over an archive — reader threads, batched inference, writer threads,
local worker processes and torchrun ranks; rank 0 (or the calling process) merges the parts."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from marsdust.detect.decode import decode_map
from marsdust.detect.engines import OnnxBackbone, resolve_engine, run_model
from marsdust.detect.inputs import resolve_maps
from marsdust.detect.merge import CLOUD_CUBE, merge_parts
from marsdust.detect.parts import (CLOUD_CHUNKS, PARTS_DIR, _check_settings, _error_part, _write_json,
                                   _write_map_outputs, part_path)
from marsdust.detect.prepare import _Prepared, prepare_map, working_image
from marsdust.detect.results import DetectSummary
from marsdust.detect.settings import DEFAULT_MAX_TILE_PX, DEFAULT_PAD_DEG, DetectSettings
from marsdust.fileio import remove_stale_temp_files
from marsdust.mdgm import MapReadError

log = logging.getLogger(__name__)


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


def _prefetch(rows: list[dict], res_deg: float, settings: DetectSettings, lookahead: int, loaders: int,
              tiles: bool = True) -> Iterator:
    """Yield ``(row, prepared or exception)`` in order, decoding up to ``lookahead`` maps ahead in threads.

    With ``tiles=False`` the maps are read but not cut into tensor tiles (a reference detector's
    input is stacked later, once its background is known: :class:`_ReferenceInputs`).
    """

    def load(row):
        t0 = time.perf_counter()
        try:
            image, native = working_image(row["path"], res_deg)
            if tiles:
                prepared = prepare_map(image, native, settings, map_id=row["map_id"], mars_year=row["mars_year"],
                                       ls=row["ls"], seconds=0.0)
            else:
                prepared = _Prepared(row["map_id"], int(row["mars_year"]), float(row["ls"]), image, native, 0, [], [],
                                     0.0)
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
    score_threshold: float | None = None,
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
    history=None,
) -> DetectSummary:
    """Detect storms on every map of an archive and write the catalog products (see :mod:`marsdust.detect`).

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
    score_threshold : float, optional
        Drop detections scoring below this; default: the threshold chosen on validation maps and
        stored in the checkpoint (:func:`marsdust.models.resolve_score_threshold`), else 0.5. The
        value used is logged and kept in ``DetectSummary.score_threshold``.
    mask_threshold, pad_deg, max_tile_px
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
        This process's share: the ``rank``-th of ``world_size`` consecutive stretches of the maps in
        time order (so a detector with reference bands reads each stretch's history once). Default: ``RANK``/``WORLD_SIZE`` from
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
    history : path, glob or list, optional
        For a detector with reference bands (:mod:`marsdust.reference`): maps whose images may make
        the backgrounds (as ``maps``; e.g. the whole archive when ``maps`` is its test sols). Default:
        the maps being processed. Each map's background comes from the maps of ``history`` and
        ``maps`` in the ``reference_sols`` sols before it, read once each in time order.

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
    from marsdust.models import resolve_score_threshold

    score_threshold, threshold_source = resolve_score_threshold(checkpoint_or_model, score_threshold)
    (log.debug if threshold_source == "given" else log.info)("score threshold %.3g: %s", score_threshold, threshold_source)
    settings = DetectSettings(score_threshold, mask_threshold, pad_deg, max_tile_px, engine=engine,
                              onnx_model=None if onnx_model is None else os.fspath(onnx_model))
    rows = resolve_maps(maps).to_dict("records")
    if not rows:
        raise ValueError(f"{maps}: no maps to process")
    history_rows = _history_rows(rows, history)

    env_world = _env_int("WORLD_SIZE")
    if rank is None and world_size is None and env_world and env_world > 1 and workers == 1:
        return _torchrun_rank(checkpoint_or_model, maps, out_dir, rows, t_start, locals())

    rank = 0 if rank is None else int(rank)
    world_size = 1 if world_size is None else int(world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")

    with output_lock(out_dir) if world_size == 1 else contextlib.nullcontext():
        if rank == 0 and merge:
            _prepare_output_folder(out_dir, overwrite)
        _check_settings(out_dir, {"checkpoint_sha256": checkpoint_key(checkpoint_or_model),
                                  "score_threshold": score_threshold, "mask_threshold": mask_threshold,
                                  "pad_deg": pad_deg, "max_tile_px": max_tile_px})
        return _run_and_merge(checkpoint_or_model, maps, out_dir, rows, settings, t_start, rank=rank,
                              world_size=world_size, workers=workers, device=device, batch_size=batch_size,
                              geotiff=geotiff, quicklook=quicklook, threads=threads, progress=progress, merge=merge,
                              track=track, table_format=table_format, history=history, history_rows=history_rows)


def _history_rows(rows: list[dict], history) -> list[dict]:
    """The maps a reference may be built from: ``history`` and ``rows``, once each, in time order."""
    if history is None:
        return rows
    table = pd.concat([resolve_maps(history), pd.DataFrame(rows)], ignore_index=True)
    table = table.drop_duplicates("map_id", keep="last")
    return table.sort_values(["mars_year", "ls", "map_id"], kind="stable").to_dict("records")


def share_of(rows: list, index: int, count: int) -> list:
    """The ``index``-th of ``count`` consecutive, nearly equal stretches of ``rows``."""
    bounds = np.linspace(0, len(rows), count + 1).round().astype(int)
    return rows[bounds[index]:bounds[index + 1]]


def _run_and_merge(checkpoint_or_model, maps, out_dir: Path, rows: list[dict], settings: DetectSettings,
                   t_start: float, *, rank: int, world_size: int, workers: int, device: str, batch_size: int,
                   geotiff: bool, quicklook: bool, threads: int | None, progress: bool, merge: bool, track: bool,
                   table_format: str, history, history_rows: list[dict]) -> DetectSummary:
    """This process's share of the maps (or its local workers'), then the merge on rank 0."""

    if workers > 1:
        processed = sum(not part_path(out_dir, row["map_id"]).is_file() for row in rows)
        if processed:
            _spawn_workers(checkpoint_or_model, maps, out_dir, workers, device, batch_size, settings, geotiff, quicklook,
                           history)
    else:
        mine = share_of(rows, rank, world_size)
        processed = _process_rows(checkpoint_or_model, mine, out_dir, settings, batch_size=batch_size, device=device,
                                  geotiff=geotiff, quicklook=quicklook, threads=threads, progress=progress,
                                  local_rank=_env_int("LOCAL_RANK"), history_rows=history_rows)
    summary = DetectSummary(out_dir, len(rows), processed, 0, 0, 0.0, 0.0)
    if merge and rank == 0:
        summary = merge_parts(out_dir, rows, track=track, table_format=table_format, progress=progress)
        summary.n_processed = processed
    summary.seconds = time.perf_counter() - t_start
    summary.maps_per_second = processed / summary.seconds if summary.seconds > 0 else 0.0
    return summary


def checkpoint_key(checkpoint_or_model) -> str:
    """What a run's parts are keyed on: the SHA-256 of the checkpoint file's content (a model object: ``"model"``).

    Keyed on content, not path, so parts made by a checkpoint later replaced at the same path
    (a retrained ``best.ckpt``) are not mixed with the new model's.
    """
    if not isinstance(checkpoint_or_model, (str, os.PathLike)):
        return "model"
    digest = hashlib.sha256()
    with open(checkpoint_or_model, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


LOCK_FILE = ".detect.lock"


@contextlib.contextmanager
def output_lock(out_dir: Path):
    """Hold ``OUT/.detect.lock`` (an exclusive ``flock``) so that two runs never write one folder at once.

    The lock goes with its process, also when that is killed. Local worker processes share their
    parent's lock; torchrun ranks (each a run over one share) take none.

    Raises
    ------
    ValueError
        Another process holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_FILE
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ValueError(f"{out_dir}: another marsdust detect ({holder}) is writing to this folder "
                             f"(lock {path}); wait for it to finish or choose another output folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _prepare_output_folder(out_dir: Path, overwrite: bool) -> None:
    """Clear earlier outputs (``overwrite``) and the temporary files of a killed run."""
    if overwrite and out_dir.exists():
        _clear_outputs(out_dir)
    for folder in (out_dir, out_dir / PARTS_DIR, out_dir / PARTS_DIR / "masks", out_dir / PARTS_DIR / CLOUD_CHUNKS,
                   out_dir / "geotiff", out_dir / "quicklook"):
        if folder.is_dir():
            removed = remove_stale_temp_files(folder)
            if removed:
                log.info("%s: removed %d temporary file(s) of an interrupted run", folder, removed)


def _clear_outputs(out_dir: Path) -> None:
    for name in (PARTS_DIR, "geotiff", "quicklook"):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    for name in ("detections.csv", "detections.parquet", "detections.geojson", "masks.nc", "masks_master.csv",
                 "maps.csv", CLOUD_CUBE):
        (out_dir / name).unlink(missing_ok=True)


def _process_rows(checkpoint_or_model, rows: list[dict], out_dir: Path, settings: DetectSettings, *, batch_size: int,
                  device: str, geotiff: bool, quicklook: bool, threads: int | None, progress: bool,
                  local_rank: int | None, history_rows: list[dict] | None = None) -> int:
    """Process the maps of ``rows`` that have no part yet; returns how many were processed."""
    todo = [row for row in rows if not part_path(out_dir, row["map_id"]).is_file()]
    if len(todo) < len(rows):
        log.info("%s: %d of %d maps already done (resuming)", out_dir, len(rows) - len(todo), len(rows))
    if not todo:
        return 0
    _set_threads(threads)
    torch_device = _resolve_device(device, local_rank)
    from marsdust.models import detector_classes

    model = _load(checkpoint_or_model, torch_device)
    settings = dataclasses.replace(settings, classes=detector_classes(model))
    res_deg = float(model.config.map_res_deg)
    in_channels = int(model.config.in_channels)
    engine = resolve_engine(model, torch_device, settings.engine)
    onnx_backbone = OnnxBackbone(model, settings.onnx_model) if engine == "onnx" else None
    log.info("detect: engine %s on %s", engine, torch_device)
    reference = model.config.reference_config
    if in_channels != 3 + reference.n_bands:
        raise ValueError(f"the detector expects {in_channels} bands; detect feeds the map's 3"
                         f"{f' and {reference.n_bands} reference bands' if reference.enabled else ''}")
    backgrounds = None
    if reference.enabled:
        from marsdust.models import stored_reference_dropout

        backgrounds = _ReferenceInputs(reference, history_rows or rows, res_deg, settings,
                                       works_without_history=stored_reference_dropout(model) > 0)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="detect", unit="map", disable=not progress, dynamic_ncols=True)
    n_errors = 0
    host_threads = _host_threads(torch_device, batch_size)
    if host_threads > 1:
        _ignore_rasterio_thread_race_warning()
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
        for row, loaded in _prefetch(todo, res_deg, settings, lookahead=lookahead, loaders=host_threads,
                                     tiles=backgrounds is None):
            if isinstance(loaded, Exception):
                n_errors += 1
                log.error("%s: skipped, cannot read map %s: %s", row["map_id"], row["path"], loaded)
                _write_json(part_path(out_dir, row["map_id"]), _error_part(row, str(loaded), 0.0))
                bar.update(1)
                continue
            if backgrounds is not None:
                loaded = backgrounds.with_background(loaded)
            batch.append(loaded)
            if len(batch) >= batch_size:
                flush()
            bar.set_postfix(errors=n_errors, refresh=False)
        flush()
        for future in pending_writes:
            future.result()
            bar.update(1)
    bar.close()
    if backgrounds is not None:
        log.info("reference: %d earlier maps read for the backgrounds (%s)", backgrounds.feeder.extra_reads,
                 reference.describe())
        lacking = [map_id for map_id in backgrounds.without_history if map_id not in backgrounds.untimed]
        if lacking:
            consequence = ("it was also trained without history, and finds fewer storms without one"
                           if backgrounds.works_without_history else
                           "the detector compares each map with its history and finds few storms without one")
            log.warning("reference: %d map(s) had no earlier map in the %d sols before them (e.g. %s): %s (the first "
                        "sols of an archive, after a gap; --history gives more)", len(lacking), reference.sols,
                        ", ".join(lacking[:3]), consequence)
    return len(todo)


class _ReferenceInputs:
    """Adds each map's reference background to its prepared input, building backgrounds in time order.

    Maps without a Mars year and Ls (loose files without a ``list_ls.txt``) have no place in time and
    so no history: a detector trained to work without one (``reference_dropout > 0``) gets a
    background of zeros for them, as for the first map of an archive; any other refuses them.
    """

    def __init__(self, reference, table: list[dict], res_deg: float, settings: DetectSettings,
                 works_without_history: bool = False) -> None:
        from marsdust.mdad_format import mars_time_sols
        from marsdust.reference import ReferenceFeeder

        times = np.asarray(mars_time_sols([row["mars_year"] for row in table], [row["ls"] for row in table]))
        timed = np.flatnonzero(np.isfinite(times))
        self.untimed = [row["map_id"] for row, time_sol in zip(table, times) if not np.isfinite(time_sol)]
        if self.untimed and not works_without_history:
            raise ValueError(f"the detector uses {reference.kind} backgrounds, which need each map's Mars year and "
                             f"Ls; {len(self.untimed)} map(s) have none, e.g. {self.untimed[:3]} (give an archive "
                             "folder or index, or a list_ls.txt beside loose maps; a detector trained with "
                             "--reference-dropout also takes maps without history)")
        if self.untimed:
            log.warning("reference: %d map(s) have no Mars year and Ls (e.g. %s), so no history: they are detected "
                        "without a background, as the detector also learnt to", len(self.untimed),
                        ", ".join(self.untimed[:3]))
        self.table = [table[i] for i in timed]
        self.res_deg, self.settings = res_deg, settings
        self.position = {row["map_id"]: i for i, row in enumerate(self.table)}
        self.feeder = ReferenceFeeder(reference, times[timed], self._load)
        self.n_bands, self.works_without_history = reference.n_bands, works_without_history
        self.without_history: list[str] = []  # maps whose background observed no pixel

    def _load(self, position: int):
        image, _ = working_image(self.table[position]["path"], self.res_deg)
        return image.rgb, image.valid

    def with_background(self, prepared: _Prepared) -> _Prepared:
        """``prepared`` (a map read but not yet tiled) cut into tiles with its background bands; the map joins
        the history."""
        t0 = time.perf_counter()
        image = prepared.image
        position = self.position.get(prepared.map_id)
        if position is None:  # no place in time
            background = np.zeros((*image.grid.shape, self.n_bands), dtype=np.float32)
        else:
            background = self.feeder.background(position, image.grid.shape)
            self.feeder.add(position, image.rgb, image.valid)
        if not background.any():
            self.without_history.append(prepared.map_id)
        again = prepare_map(image, prepared.native_grid, self.settings, map_id=prepared.map_id,
                            mars_year=prepared.mars_year, ls=prepared.ls, in_channels=3 + background.shape[-1],
                            extra_bands=background)
        again.seconds = prepared.seconds + time.perf_counter() - t0
        return again


def _ignore_rasterio_thread_race_warning() -> None:
    """Silence a stray ``NotGeoreferencedWarning`` from ``rasterio.features.shapes`` under threads.

    Outlines traced in several threads at once now and then raise it (about once in 600 calls in
    a stress test) although every call passes a transform; the outlines are identical to one
    thread's. The filter is process-wide (Python's warning filters are) and names only that
    warning from that module.
    """
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module=r"rasterio\.features")


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
                 settings: DetectSettings, geotiff: bool, quicklook: bool, threads: int, history=None) -> None:
    """One local worker process (torch.multiprocessing.spawn target)."""
    logging.basicConfig(level=logging.WARNING)
    all_rows = resolve_maps(maps).to_dict("records")
    _process_rows(checkpoint, share_of(all_rows, index, workers), Path(out_dir), settings, batch_size=batch_size,
                  device=device, geotiff=geotiff, quicklook=quicklook, threads=threads, progress=False,
                  local_rank=index if device == "cuda" else None, history_rows=_history_rows(all_rows, history))


def _spawn_workers(checkpoint_or_model, maps, out_dir: Path, workers: int, device: str, batch_size: int,
                   settings: DetectSettings, geotiff: bool, quicklook: bool, history=None) -> None:
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    threads = max(1, (os.cpu_count() or 1) // workers)
    maps_arg = _picklable_maps(maps)
    log.info("detect: %d local worker processes, %d threads each", workers, threads)
    # fork is much faster to start (no re-import of torch) and safe while this process has not used CUDA
    start_method = "fork" if sys.platform.startswith("linux") and device == "cpu" else "spawn"
    try:
        mp.start_processes(_worker_main, args=(checkpoint_or_model, maps_arg, str(out_dir), workers, device, batch_size,
                                               settings, geotiff, quicklook, threads,
                                               None if history is None else _picklable_maps(history)),
                           nprocs=workers, join=True, start_method=start_method)
    except ProcessException as err:  # the child's traceback is in the message: keep its last line
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        raise ValueError(f"a detect worker failed: {lines[-1] if lines else err} (maps done so far are kept; "
                         "run the command again to resume)") from err


def _picklable_maps(maps):
    """A ``maps`` / ``history`` argument as plain strings for a worker process."""
    return [os.fspath(m) for m in maps] if isinstance(maps, (list, tuple)) else os.fspath(maps)


def _torchrun_rank(checkpoint_or_model, maps, out_dir: Path, rows: list[dict], t_start: float, options: dict):
    """One torchrun rank: process its stretch of the rows (:func:`share_of`), barrier, rank 0 merges."""
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
        if rank == 0:
            _prepare_output_folder(out_dir, options["overwrite"])
        dist.barrier()
        kwargs = {k: options[k] for k in ("batch_size", "device", "score_threshold", "mask_threshold", "pad_deg",
                                          "max_tile_px", "geotiff", "quicklook", "track", "table_format", "threads",
                                          "progress", "engine", "onnx_model", "history")}
        kwargs["progress"] = kwargs["progress"] and rank == 0
        threads = kwargs.pop("threads")
        if threads is None and not use_cuda:
            local_world = _env_int("LOCAL_WORLD_SIZE") or world_size
            threads = max(1, (os.cpu_count() or 1) // local_world)
        summary = detect_archive(checkpoint_or_model, maps, out_dir, rank=rank, world_size=world_size, merge=False,
                                 threads=threads, **kwargs)
        processed_by_rank = [None] * world_size
        dist.all_gather_object(processed_by_rank, summary.n_processed)  # also the barrier before merging
        if rank == 0:
            merged = merge_parts(out_dir, rows, track=options["track"], table_format=options["table_format"],
                                 progress=options["progress"])
            merged.n_processed = sum(processed_by_rank)
            summary = merged
        dist.barrier()
    finally:
        if initialised_here:
            dist.destroy_process_group()
    summary.seconds = time.perf_counter() - t_start
    summary.maps_per_second = summary.n_processed / summary.seconds if summary.seconds > 0 else 0.0
    return summary
