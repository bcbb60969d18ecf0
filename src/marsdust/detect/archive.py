""":func:`detect_archive`: the run over an archive — this process's share (:mod:`marsdust.detect.pipeline`:
reader threads, batched inference, writer threads), local worker processes and torchrun ranks; rank 0
(or the calling process) merges the parts."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marsdust.detect.inputs import history_maps, resolve_maps
from marsdust.detect.merge import CLOUD_CUBE, MDAD_DIR, merge_parts
from marsdust.detect.parts import (CLOUD_CHUNKS, PARTS_DIR, RUN_RECORD, check_settings, finished_run, part_path,
                                   record_finished_run, run_settings)
from marsdust.detect.pipeline import process_maps, resolve_device
from marsdust.detect.results import DetectSummary
from marsdust.detect.settings import (DetectExecution, DetectOutputs, DetectSettings, latitude_range_text,
                                     resolve_latitudes)
from marsdust.fileio import remove_stale_temp_files
from marsdust.history import needs_history

log = logging.getLogger(__name__)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


@dataclass(frozen=True)
class _Job:
    """A run's detector, maps and options, as every process of it gets them (picklable for worker processes)."""

    checkpoint_or_model: object
    rows: list  # the run's maps (resolve_maps records), in time order
    history_rows: list  # the maps reference backgrounds may be built from (history_maps)
    settings: DetectSettings  # score_threshold resolved
    outputs: DetectOutputs
    execution: DetectExecution


def detect_archive(checkpoint_or_model, maps, outputs: DetectOutputs | str | os.PathLike, *,
                   settings: DetectSettings | None = None, execution: DetectExecution | None = None,
                   history=None) -> DetectSummary:
    """Detect storms on every map of an archive and write the catalog products (see :mod:`marsdust.detect`).

    Parameters
    ----------
    checkpoint_or_model : path or MarsDustDetector
        A checkpoint file (:func:`marsdust.models.load_model`) or a built detector.
    maps : path, glob or list
        See :func:`resolve_maps`.
    outputs : DetectOutputs or path
        What to write and where; a path is ``DetectOutputs(path)`` (the products alone, tracked, resumed).
    settings : DetectSettings, optional
        Inference options (default ``DetectSettings(score_threshold=None)``). A score threshold of None
        is the one chosen on validation maps and stored in the checkpoint
        (:func:`marsdust.models.resolve_score_threshold`), else 0.5; the value used is logged and
        recorded in ``OUT/parts/settings.json`` (a resumed run must use the same).
    execution : DetectExecution, optional
        Device, batch size, worker processes, threads and this process's share (default
        ``DetectExecution()``: CPU, one map at a time, one process). Under torchrun (``WORLD_SIZE`` > 1
        and no rank given) ranks meet at a barrier and rank 0 merges.
    history : path, glob or list, optional
        For a detector with reference bands (:mod:`marsdust.reference`): maps whose images may make
        the backgrounds (as ``maps``; e.g. the whole archive when ``maps`` is its test sols). Default:
        the maps being processed. Each map's background comes from the maps of ``history`` and
        ``maps`` in the ``reference_sols`` sols before it, read once each in time order
        (:class:`marsdust.history.MapHistory`).

    Returns
    -------
    DetectSummary
    """
    t_start = time.perf_counter()
    outputs = outputs if isinstance(outputs, DetectOutputs) else DetectOutputs(outputs)
    execution = DetectExecution() if execution is None else execution
    settings = _resolve_settings(checkpoint_or_model, settings or DetectSettings(score_threshold=None))
    rows = resolve_maps(maps).to_dict("records")
    if not rows:
        raise ValueError(f"{maps}: no maps to process")
    job = _Job(checkpoint_or_model, rows, history_maps(rows, history), settings, outputs, execution)

    env_world = _env_int("WORLD_SIZE")
    if execution.rank is None and execution.world_size is None and env_world and env_world > 1 \
            and execution.workers == 1:
        return _torchrun_rank(job, t_start)

    rank = 0 if execution.rank is None else int(execution.rank)
    world_size = 1 if execution.world_size is None else int(execution.world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")

    with output_lock(outputs.out_dir) if world_size == 1 else contextlib.nullcontext():
        if rank == 0 and execution.merge:
            _prepare_output_folder(outputs.out_dir, outputs.overwrite)
        key = _run_key(job)
        done = finished_run(outputs.out_dir, key)
        if done is not None:
            (outputs.out_dir / LOCK_FILE).unlink(missing_ok=True)  # held: nobody else is using it
            return _timed(_finished_summary(job, done, rank), t_start)
        check_settings(outputs.out_dir, key)
        return _run_and_merge(job, rank, world_size, t_start)


def _finished_summary(job: _Job, recorded: dict, rank: int) -> DetectSummary:
    """The summary of a run found finished (:func:`marsdust.detect.parts.finished_run`): nothing processed now.

    A run recorded before ``n_without_history`` existed counts 0 maps without history.
    """
    out_dir = job.outputs.out_dir
    if rank != 0:
        return DetectSummary(out_dir, recorded["n_maps"], 0, recorded["n_errors"], 0, 0.0, 0.0, {})
    paths = {name: out_dir / file_name for name, file_name in recorded["paths"].items()}
    return DetectSummary(out_dir, recorded["n_maps"], 0, recorded["n_errors"], recorded["n_detections"], 0.0, 0.0,
                         paths, n_without_history=int(recorded.get("n_without_history", 0)),
                         n_beyond_latitudes=int(recorded.get("n_beyond_latitudes", 0)),
                         needs_history=needs_history(job.checkpoint_or_model))


def _resolve_settings(checkpoint_or_model, settings: DetectSettings) -> DetectSettings:
    """``settings`` with the score threshold (the checkpoint's for None) and the latitudes to use, logged."""
    from marsdust.models import resolve_score_threshold

    threshold, source = resolve_score_threshold(checkpoint_or_model, settings.score_threshold)
    (log.debug if source == "given" else log.info)("score threshold %.3g: %s", threshold, source)
    settings, where = resolve_latitudes(checkpoint_or_model, settings)
    (log.debug if where == "given" else log.info)("latitudes %s: %s", latitude_range_text(settings.latitudes_deg),
                                                  where)
    return dataclasses.replace(settings, score_threshold=threshold)


def _run_key(job: _Job) -> dict:
    """Everything a run's output depends on, which its parts must share to be merged (``OUT/parts/settings.json``).

    The detector (checkpoint content), the ONNX backbone file's content, the maps and the history maps
    (:func:`maps_identity`), every inference setting (the engine resolved from the environment) and the
    per-map products asked for. :func:`marsdust.detect.parts.check_settings` names the items that differ.
    """
    from marsdust.detect.engines import default_engine

    settings = job.settings
    key = {"checkpoint_sha256": checkpoint_key(job.checkpoint_or_model),
           "onnx_model_sha256": None if settings.onnx_model is None else file_sha256(settings.onnx_model),
           "maps": maps_identity(job.rows), "history_maps": maps_identity(job.history_rows)}
    for field in dataclasses.fields(settings):
        if field.name not in ("onnx_model", "classes"):  # classes: the detector's, set when it runs
            key[field.name] = getattr(settings, field.name)
    key["engine"] = settings.engine or default_engine()
    key["geotiff"], key["quicklook"] = job.outputs.geotiff, job.outputs.quicklook
    key["mask_grid"] = job.outputs.mask_grid
    return key


def maps_identity(rows: list) -> str:
    """SHA-256 over a list of maps: each one's id, Mars year, Ls, path, and its file's size and modification time.

    Parameters
    ----------
    rows : list of dict
        ``map_id, mars_year, ls, path`` records (:func:`marsdust.detect.inputs.resolve_maps`); a path
        ``TARFILE::MEMBER`` is identified by its tar file.
    """
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: str(r["map_id"])):
        path = str(row["path"])
        try:
            stat = os.stat(path.split("::", 1)[0])
            stamp = f"{stat.st_size}|{stat.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{row['map_id']}|{int(row['mars_year'])}|{float(row['ls'])!r}|{path}|{stamp}\n".encode())
    return digest.hexdigest()


def share_of(rows: list, index: int, count: int) -> list:
    """The ``index``-th of ``count`` consecutive, nearly equal stretches of ``rows``."""
    bounds = np.linspace(0, len(rows), count + 1).round().astype(int)
    return rows[bounds[index]:bounds[index + 1]]


def _run_and_merge(job: _Job, rank: int, world_size: int, t_start: float) -> DetectSummary:
    """This process's share of the maps (or its local workers'), then the merge on rank 0."""
    out_dir, execution = job.outputs.out_dir, job.execution
    if execution.workers > 1:
        processed = sum(not part_path(out_dir, row["map_id"]).is_file() for row in job.rows)
        if processed:
            _spawn_workers(job)
    else:
        processed = process_maps(job.checkpoint_or_model, share_of(job.rows, rank, world_size), job.history_rows,
                                 job.settings, job.outputs, execution, _env_int("LOCAL_RANK"))
    summary = DetectSummary(out_dir, len(job.rows), processed, 0, 0, 0.0, 0.0)
    if execution.merge and rank == 0:
        summary = _merge(job)
        summary.n_processed = processed
    return _timed(summary, t_start)


def _merge(job: _Job) -> DetectSummary:
    """The products from the parts (and whether the detector needs history, :func:`marsdust.history.needs_history`);
    then the run record replaces ``parts/`` and the lock file is removed."""
    out_dir = job.outputs.out_dir
    summary = merge_parts(out_dir, job.rows, track=job.outputs.track, table_format=job.outputs.table_format,
                          progress=job.execution.progress, mask_grid=job.outputs.mask_grid)
    summary.needs_history = needs_history(job.checkpoint_or_model)
    record_finished_run(out_dir, run_settings(out_dir), {
        "n_maps": summary.n_maps, "n_errors": summary.n_errors, "n_detections": summary.n_detections,
        "n_without_history": summary.n_without_history,
        "n_beyond_latitudes": summary.n_beyond_latitudes,
        "paths": {name: os.path.relpath(path, out_dir) for name, path in summary.paths.items()}})
    release_finished_run(out_dir)
    return summary


def _timed(summary: DetectSummary, t_start: float) -> DetectSummary:
    """``summary`` with the run's seconds and maps per second since ``t_start``."""
    summary.seconds = time.perf_counter() - t_start
    summary.maps_per_second = summary.n_processed / summary.seconds if summary.seconds > 0 else 0.0
    return summary


def checkpoint_key(checkpoint_or_model) -> str:
    """What a run's parts are keyed on: the SHA-256 of the checkpoint file's content (a model object: ``"model"``).

    Keyed on content, not path, so parts made by a checkpoint later replaced at the same path
    (a retrained ``best.ckpt``) are not mixed with the new model's.
    """
    if not isinstance(checkpoint_or_model, (str, os.PathLike)):
        return "model"
    return file_sha256(checkpoint_or_model)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's content (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


LOCK_FILE = ".marsdust-detect.lock"
"""``OUT/.marsdust-detect.lock``: held while a detect run writes the folder; removed when its merge is done."""


@contextlib.contextmanager
def output_lock(out_dir: Path):
    """Hold ``OUT/.marsdust-detect.lock`` (an exclusive ``flock``) so that two runs never write one folder at once.

    The lock goes with its process, also when that is killed. The file is opened without following
    a link (``O_NOFOLLOW``: a link planted there is refused, its target never written). Local worker
    processes share their parent's lock; torchrun ranks (each a run over one share) take none.

    Raises
    ------
    ValueError
        Another process holds the lock, or the lock's name is a link.
    """
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError:
        if path.is_symlink():
            raise ValueError(f"{path}: is a symbolic link, not marsdust's lock file; remove it") from None
        raise
    with os.fdopen(fd, "r+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = handle.read().strip() or "another process"
            raise ValueError(f"{out_dir}: another marsdust detect ({holder}) is writing to this folder "
                             f"(lock {path}); wait for it to finish or choose another output folder") from None
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def release_finished_run(out_dir: Path) -> None:
    """After a complete merge: remove ``OUT/parts/`` (the products and the run record replace it) and the lock file.

    Called while the lock is held; a run that starts on the folder after this finds the run record
    (:func:`marsdust.detect.parts.finished_run`).
    """
    shutil.rmtree(out_dir / PARTS_DIR, ignore_errors=True)
    (out_dir / LOCK_FILE).unlink(missing_ok=True)


def _prepare_output_folder(out_dir: Path, overwrite: bool) -> None:
    """Clear earlier outputs (``overwrite``) and the temporary files of a killed run."""
    if overwrite and out_dir.exists():
        _clear_outputs(out_dir)
    for folder in (out_dir, out_dir / PARTS_DIR, out_dir / PARTS_DIR / "masks", out_dir / PARTS_DIR / CLOUD_CHUNKS,
                   out_dir / "geotiff", out_dir / "quicklook", *sorted((out_dir / MDAD_DIR).glob("MY*"))):
        if folder.is_dir():
            removed = remove_stale_temp_files(folder)
            if removed:
                log.info("%s: removed %d temporary file(s) of an interrupted run", folder, removed)


def _clear_outputs(out_dir: Path) -> None:
    for name in (PARTS_DIR, "geotiff", "quicklook", MDAD_DIR):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    for name in ("detections.csv", "detections.parquet", "detections.geojson", "masks.nc", "masks_master.csv",
                 "maps.csv", CLOUD_CUBE, RUN_RECORD):
        (out_dir / name).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# scale-out
# ---------------------------------------------------------------------------------------------
def die_with_parent(parent_pid: int) -> None:
    """Make this process end when the process ``parent_pid`` (its parent) ends, also when that is killed.

    On Linux the kernel sends SIGKILL (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread checks
    the parent pid once a second. A parent already gone ends this process at once.
    """
    import signal
    import threading

    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    else:
        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, name="marsdust-parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the kernel was told
        os._exit(1)


def _worker_main(index: int, job: _Job, parent_pid: int) -> None:
    """One local worker process (torch.multiprocessing.spawn target): its stretch of the maps, no merge; it
    ends with its parent (:func:`die_with_parent`)."""
    die_with_parent(parent_pid)
    logging.basicConfig(level=logging.WARNING)
    execution = job.execution
    process_maps(job.checkpoint_or_model, share_of(job.rows, index, execution.workers), job.history_rows,
                 job.settings, job.outputs, execution, index if execution.device == "cuda" else None)


def _spawn_workers(job: _Job) -> None:
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    workers, device = job.execution.workers, job.execution.device
    threads = max(1, (os.cpu_count() or 1) // workers)
    log.info("detect: %d local worker processes, %d threads each", workers, threads)
    worker_job = dataclasses.replace(job, execution=dataclasses.replace(job.execution, threads=threads,
                                                                        progress=False))
    # fork is much faster to start (no re-import of torch) and safe while this process has not used CUDA
    start_method = "fork" if sys.platform.startswith("linux") and device == "cpu" else "spawn"
    try:
        mp.start_processes(_worker_main, args=(worker_job, os.getpid()), nprocs=workers, join=True,
                           start_method=start_method)
    except ProcessException as err:  # the child's traceback is in the message: keep its last line
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        raise ValueError(f"a detect worker failed: {lines[-1] if lines else err} (maps done so far are kept; "
                         "run the command again to resume)") from err


def _torchrun_rank(job: _Job, t_start: float) -> DetectSummary:
    """One torchrun rank: process its stretch of the rows (:func:`share_of`), barrier, rank 0 merges."""
    import datetime

    import torch
    import torch.distributed as dist

    rank, world_size = _env_int("RANK") or 0, _env_int("WORLD_SIZE") or 1
    execution = job.execution
    use_cuda = execution.device.startswith("cuda")
    initialised_here = False
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(resolve_device(execution.device, _env_int("LOCAL_RANK")))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://",
                                timeout=datetime.timedelta(hours=72))
        initialised_here = True
    try:
        if rank == 0:
            _prepare_output_folder(job.outputs.out_dir, job.outputs.overwrite)
        dist.barrier()
        threads = execution.threads
        if threads is None and not use_cuda:
            threads = max(1, (os.cpu_count() or 1) // (_env_int("LOCAL_WORLD_SIZE") or world_size))
        rank_job = dataclasses.replace(job, execution=dataclasses.replace(
            execution, rank=rank, world_size=world_size, merge=False, threads=threads,
            progress=execution.progress and rank == 0))
        key = _run_key(job)
        done = finished_run(job.outputs.out_dir, key)
        if done is not None:
            return _timed(_finished_summary(job, done, rank), t_start)
        dist.barrier()  # every rank has looked for a finished run before any writes parts/settings.json
        check_settings(job.outputs.out_dir, key)
        summary = _run_and_merge(rank_job, rank, world_size, t_start)
        processed_by_rank = [None] * world_size
        dist.all_gather_object(processed_by_rank, summary.n_processed)  # also the barrier before merging
        if rank == 0:
            summary = _merge(job)
            summary.n_processed = sum(processed_by_rank)
        dist.barrier()
    finally:
        if initialised_here:
            dist.destroy_process_group()
    return _timed(summary, t_start)
