"""One process's share of an archive run (:func:`process_maps`), in three steps.

1. **Load** (:func:`ready_maps`): reader threads decode the next maps ahead of the model; a
   detector with reference bands gets each map's background from a
   :class:`marsdust.history.MapHistory` in time order before the map is cut into tiles; an
   unreadable map gets its error part at once.
2. **Batch** (:meth:`ReadyDetector.run_batch`): the tiles of ``batch_size`` maps go through the
   model at once; each map is charged an equal share of the batch's time.
3. **Write** (:class:`PartWriter`): writer threads decode each map's outputs and write its part
   (:func:`marsdust.detect.parts.write_map_outputs`), with at most ``2 × batch_size`` maps waiting.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

from marsdust.detect.decode import decode_map
from marsdust.detect.engines import OnnxBackbone, resolve_engine, run_model
from marsdust.detect.parts import error_part, part_path, write_json, write_map_outputs
from marsdust.detect.prepare import PreparedMap, prepare_map, working_image
from marsdust.detect.settings import DetectExecution, DetectOutputs, DetectSettings, untiled_if_whole_map
from marsdust.history import MapHistory
from marsdust.mdgm import MapReadError

log = logging.getLogger(__name__)


def set_threads(threads: int | None) -> None:
    """Torch CPU threads: ``threads``, else all cores unless ``OMP_NUM_THREADS`` is set."""
    import torch

    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    elif not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(os.cpu_count() or 1)


def resolve_device(device: str, local_rank: int | None):
    """The torch device of ``device`` (``cuda`` with a local rank: ``cuda:LOCAL_RANK`` modulo the GPUs)."""
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


@dataclass
class ReadyDetector:
    """A detector in eval mode on its device, with the settings, engine and working resolution it runs with."""

    model: object
    device: object
    settings: DetectSettings
    engine: str
    onnx_backbone: OnnxBackbone | None
    res_deg: float

    @classmethod
    def load(cls, checkpoint_or_model, settings: DetectSettings, device: str,
             local_rank: int | None) -> "ReadyDetector":
        """Load a checkpoint (or take a built detector) onto ``device``; ``settings`` get the detector's classes."""
        from marsdust.models import detector_classes, load_model

        torch_device = resolve_device(device, local_rank)
        model = checkpoint_or_model
        if isinstance(checkpoint_or_model, (str, os.PathLike)):
            model = load_model(checkpoint_or_model, map_location="cpu")
        model = model.to(torch_device).eval()
        settings = untiled_if_whole_map(model, dataclasses.replace(settings, classes=detector_classes(model)))
        engine = resolve_engine(model, torch_device, settings.engine)
        backbone = OnnxBackbone(model, settings.onnx_model) if engine == "onnx" else None
        log.info("detect: engine %s on %s", engine, torch_device)
        return cls(model, torch_device, settings, engine, backbone, float(model.config.map_res_deg))

    def run_batch(self, batch: list[PreparedMap]) -> list[tuple[PreparedMap, list[dict], float]]:
        """The batch step: the tiles of all ``batch`` maps through the model at once.

        Returns ``(map, its tiles' outputs, its share of the batch's seconds)`` for each map.
        """
        t0 = time.perf_counter()
        outputs = run_model(self.model, [t for p in batch for t in p.tensors], self.device,
                            self.settings.score_threshold, self.engine, self.onnx_backbone,
                            self.settings.mask_box_scale)
        share = (time.perf_counter() - t0) / len(batch)
        results, position = [], 0
        for prepared in batch:
            results.append((prepared, outputs[position:position + len(prepared.tensors)], share))
            position += len(prepared.tensors)
        return results


def map_history(detector: ReadyDetector, history_rows: list[dict]) -> MapHistory | None:
    """The history the detector's backgrounds come from (None for a detector without reference bands).

    Raises
    ------
    ValueError
        The detector's input bands are not the map's 3 plus its reference's; a table with maps
        without a Mars year and Ls for a detector that does not work without history.
    """
    reference = detector.model.config.reference_config
    in_channels = int(detector.model.config.in_channels)
    if in_channels != 3 + reference.n_bands:
        raise ValueError(f"the detector expects {in_channels} bands; detect feeds the map's 3"
                         f"{f' and {reference.n_bands} reference bands' if reference.enabled else ''}")
    if not reference.enabled:
        return None

    def load(path: str):
        image, _ = working_image(path, detector.res_deg)
        return image.rgb, image.valid

    return MapHistory.for_detector(detector.model, history_rows, load)


def with_background(prepared: PreparedMap, history: MapHistory, settings: DetectSettings) -> PreparedMap:
    """``prepared`` (a map read but not yet tiled) cut into tiles with its background bands, and whether it had
    history (``has_history``); the map joins the history."""
    t0 = time.perf_counter()
    image = prepared.image
    background = history.background(prepared.map_id, image.grid.shape)
    history.add(prepared.map_id, image.rgb, image.valid)
    ready = prepare_map(image, prepared.native_grid, settings, map_id=prepared.map_id, mars_year=prepared.mars_year,
                        ls=prepared.ls, in_channels=3 + background.shape[-1], extra_bands=background)
    ready.seconds = prepared.seconds + time.perf_counter() - t0
    ready.has_history = history.had_history(prepared.map_id)
    return ready


def prefetch(rows: list[dict], res_deg: float, settings: DetectSettings, lookahead: int, loaders: int,
             tiles: bool = True) -> Iterator:
    """Yield ``(row, prepared map or exception)`` in order, decoding up to ``lookahead`` maps ahead in threads.

    With ``tiles=False`` the maps are read but not cut into tensor tiles (a reference detector's
    input is stacked later, once its background is known: :func:`with_background`).
    """

    def load(row):
        t0 = time.perf_counter()
        try:
            image, native = working_image(row["path"], res_deg)
            if tiles:
                prepared = prepare_map(image, native, settings, map_id=row["map_id"], mars_year=row["mars_year"],
                                       ls=row["ls"])
            else:
                prepared = PreparedMap(map_id=row["map_id"], mars_year=int(row["mars_year"]), ls=float(row["ls"]),
                                       image=image, native_grid=native)
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


class PartWriter:
    """The write step: each map's outputs decoded and its part written in writer threads.

    Parameters
    ----------
    pool : ThreadPoolExecutor
        The writer threads.
    outputs : DetectOutputs
        Where and what to write.
    settings : DetectSettings
        The detector's settings (decoding).
    max_pending : int
        Maps that may wait for a writer before :meth:`submit` waits (bounds memory).
    bar : tqdm
        Advanced once per map written.
    """

    def __init__(self, pool: ThreadPoolExecutor, outputs: DetectOutputs, settings: DetectSettings, max_pending: int,
                 bar) -> None:
        self.pool, self.outputs, self.settings = pool, outputs, settings
        self.max_pending, self.bar = max_pending, bar
        self.pending: list[Future] = []
        self.n_errors = 0

    def submit(self, results: list[tuple[PreparedMap, list[dict], float]]) -> None:
        """Queue a batch's maps (:meth:`ReadyDetector.run_batch`) and collect the writes that are done."""
        for prepared, outputs, seconds in results:
            self.pending.append(self.pool.submit(_decode_and_write, prepared, outputs, self.settings, seconds,
                                                 self.outputs))
        while len(self.pending) > self.max_pending:  # bounded memory: wait for the writers to catch up
            self.pending.pop(0).result()
            self.bar.update(1)
        for future in [f for f in self.pending if f.done()]:
            future.result()  # re-raise write errors
            self.bar.update(1)
        self.pending = [f for f in self.pending if not f.done()]

    def write_error(self, row: dict, error: Exception) -> None:
        """The error part of an unreadable map (written at once)."""
        self.n_errors += 1
        log.error("%s: skipped, cannot read map %s: %s", row["map_id"], row["path"], error)
        write_json(part_path(self.outputs.out_dir, row["map_id"]), error_part(row, str(error), 0.0))
        self.bar.update(1)
        self.bar.set_postfix(errors=self.n_errors, refresh=False)

    def finish(self) -> None:
        """Wait for every queued write (re-raising its error)."""
        for future in self.pending:
            future.result()
            self.bar.update(1)
        self.pending = []


def _decode_and_write(prepared: PreparedMap, outputs: list[dict], settings: DetectSettings, infer_seconds: float,
                      destination: DetectOutputs) -> dict:
    result = decode_map(prepared, outputs, settings, seconds=infer_seconds)
    if not destination.quicklook:
        result.image = None
    return write_map_outputs(result, destination.out_dir, destination.geotiff, destination.quicklook)


def ready_maps(rows: list[dict], detector: ReadyDetector, history: MapHistory | None, writer: PartWriter, *,
               lookahead: int, loaders: int) -> Iterator[PreparedMap]:
    """The load step: each readable map of ``rows``, in order, cut into tiles (with its background bands for a
    detector with reference bands); an unreadable map gets its error part through ``writer``."""
    for row, loaded in prefetch(rows, detector.res_deg, detector.settings, lookahead, loaders,
                                tiles=history is None):
        if isinstance(loaded, Exception):
            writer.write_error(row, loaded)
            continue
        yield loaded if history is None else with_background(loaded, history, detector.settings)


def process_maps(checkpoint_or_model, rows: list[dict], history_rows: list[dict], settings: DetectSettings,
                 outputs: DetectOutputs, execution: DetectExecution, local_rank: int | None) -> int:
    """Detect on the maps of ``rows`` that have no part yet and write their parts; returns how many were processed.

    Parameters
    ----------
    checkpoint_or_model : path or MarsDustDetector
    rows : list of dict
        This process's maps (:func:`marsdust.detect.resolve_maps` records) in time order.
    history_rows : list of dict
        The maps reference backgrounds may be built from (:func:`marsdust.detect.inputs.history_maps`).
    settings, outputs, execution
        The run's options; ``execution.threads``, ``device``, ``batch_size`` and ``progress`` apply here.
    local_rank : int, optional
        The process's GPU on its node (``cuda`` means ``cuda:local_rank``).
    """
    todo = [row for row in rows if not part_path(outputs.out_dir, row["map_id"]).is_file()]
    if len(todo) < len(rows):
        log.info("%s: %d of %d maps already done (resuming)", outputs.out_dir, len(rows) - len(todo), len(rows))
    if not todo:
        return 0
    set_threads(execution.threads)
    detector = ReadyDetector.load(checkpoint_or_model, settings, execution.device, local_rank)
    history = map_history(detector, history_rows)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="detect", unit="map", disable=not execution.progress, dynamic_ncols=True)
    batch_size = execution.batch_size
    host_threads = _host_threads(detector.device, batch_size)
    if host_threads > 1:
        _ignore_rasterio_thread_race_warning()
    with ThreadPoolExecutor(max_workers=host_threads, thread_name_prefix="marsdust-write") as pool:
        writer = PartWriter(pool, outputs, detector.settings, max_pending=2 * batch_size, bar=bar)
        batch: list[PreparedMap] = []
        for prepared in ready_maps(todo, detector, history, writer, lookahead=max(2 * batch_size, host_threads) + 1,
                                   loaders=host_threads):
            batch.append(prepared)
            if len(batch) >= batch_size:
                writer.submit(detector.run_batch(batch))
                batch = []
        if batch:
            writer.submit(detector.run_batch(batch))
        writer.finish()
    bar.close()
    if history is not None:
        report_history(history)
    return len(todo)


def report_history(history: MapHistory) -> None:
    """Log how many maps were read as history only, and warn about the maps that had none in their window."""
    reference = history.reference
    log.info("reference: %d earlier maps read for the backgrounds (%s)", history.extra_reads, reference.describe())
    lacking = history.without_history
    if lacking:
        consequence = ("it was also trained without history, and finds fewer storms without one"
                       if history.works_without else
                       "the detector compares each map with its history and finds few storms without one")
        log.warning("reference: %d map(s) had no earlier map in the %d sols before them (e.g. %s): %s (the first "
                    "sols of an archive, after a gap; --history gives more)", len(lacking), reference.sols,
                    ", ".join(lacking[:3]), consequence)


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
    and post-processing (outlines) — docs/benchmark-notes.md has the figures. PIL and most numpy work
    release the GIL, so several threads of each pay; on CPU the cores belong to torch and one of
    each overlaps enough.
    """
    if device.type != "cuda":
        return 1
    return min(8, max(1, (os.cpu_count() or 1) // 2), batch_size)
