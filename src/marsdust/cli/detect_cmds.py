"""Commands of the detect stage: ``marsdust detect`` (full-map inference over an archive)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from marsdust.cli._app import app, fail, setup_logging, usage_error

EXIT_WITHOUT_HISTORY = 3
"""Exit status of a detect run whose detector needs history when every map of the run had none (the products
are written but meaningless: :attr:`marsdust.detect.DetectSummary.all_without_history`)."""


@app.command("detect")
def detect_command(
    checkpoint: Path = typer.Argument(..., help="Trained detector (.ckpt from marsdust train, or a marsdust checkpoint).",
                                      show_default=False),
    maps: List[str] = typer.Argument(
        ..., show_default=False,
        help="Maps to process: an archive folder (one folder or .tar per subphase with list_ls.txt), a subphase "
        "folder or tar, an index CSV (marsdust index), map files, or glob patterns (quote them).",
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder (detections.csv, detections.geojson, "
                                "mdad/MY??/MDADMY??.nc, maps.csv; parts/ while incomplete).", show_default=False),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Maps given to the model at once (useful on a GPU)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (cuda:N; under torchrun cuda = cuda:LOCAL_RANK)."),
    score_threshold: Optional[float] = typer.Option(
        None, "--score-threshold", min=0.0, max=1.0, show_default=False,
        help="Drop detections scoring below this (default: the threshold chosen on validation maps when the model "
        "was trained, stored in the checkpoint; 0.5 for a checkpoint without one)."),
    mask_threshold: float = typer.Option(0.5, "--mask-threshold", min=0.0, max=1.0,
                                         help="Mask probability at which a pixel belongs to a storm."),
    mask_box_scale: Optional[float] = typer.Option(
        None, "--mask-box-scale", min=1.0, max=3.0, show_default=False,
        help="Outline each storm in a window this many times its box (default: the detector's own, 1.3 for "
        "small_cpu; 1 keeps outlines inside their boxes)."),
    pad_deg: float = typer.Option(25.0, "--pad-deg", min=0.0, max=180.0,
                                  help="Longitude copied across 180° on each side (degrees)."),
    max_tile_px: int = typer.Option(2048, "--max-tile-px", min=64,
                                    help="Tile larger working-resolution maps into tiles of at most this many pixels."),
    geotiff: bool = typer.Option(False, "--geotiff", help="Also write OUT/geotiff/<map_id>.tif storm probability rasters."),
    quicklook: bool = typer.Option(False, "--quicklook", help="Also write OUT/quicklook/<map_id>.png with outlines."),
    no_track: bool = typer.Option(False, "--no-track", help="Do not link detections into members and sequences."),
    workers: int = typer.Option(1, "--workers", min=1, help="Local worker processes (without torchrun)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Torch CPU threads (default: all cores)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start afresh (delete earlier parts and products)."),
    table_format: str = typer.Option("csv", "--format", help="csv, or parquet (also writes detections.parquet)."),
    mask_grid: str = typer.Option(
        "both", "--mask-grid", help="mdad: one MDAD v1.1 cube per Mars year at 0.1° (OUT/mdad/MY??/MDADMY??.nc, "
        "read by marsdust catalog and MDAD's readers); working: OUT/masks.nc + masks_master.csv on the detector's "
        "working grid, all years in one file (small); both (default): the two."),
    engine: Optional[str] = typer.Option(
        None, "--engine", help="Inference engine: auto (ONNX Runtime on CPU, PyTorch on GPU), onnx, torch, or plain "
        "(the model's own forward). Default: auto, or MARSDUST_DETECT_ENGINE."),
    onnx_model: Optional[Path] = typer.Option(None, "--onnx-model",
                                              help="A backbone exported with marsdust export-onnx (skips the export)."),
    history: Optional[str] = typer.Option(
        None, "--history", metavar="MAPS",
        help="For a checkpoint with reference bands (train --reference): maps the backgrounds may be built from, "
        "e.g. the whole archive when MAPS is its test sols (default: MAPS themselves)."),
    all_latitudes: bool = typer.Option(
        False, "--all-latitudes",
        help="Keep detections centred beyond the latitudes of the detector's training maps (default: dropped and "
        "counted in maps.csv's n_beyond_latitudes; a detector learnt on MOC's 60°S–60°N never saw a polar cap)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Detect, outline, measure and track dust storms on every map of an archive.

    Resumable: run the same command again after an interruption and only the missing maps are processed.
    Under torchrun (RANK/WORLD_SIZE set) each rank takes one of WORLD_SIZE consecutive stretches of the maps in
    time order, and rank 0 merges. A checkpoint trained with reference bands gets each map's background built
    from the earlier maps (MAPS, and --history) in time order; when it needs them and no map had an earlier
    one, the products are written and the command exits 3.
    """
    import logging

    from marsdust.detect import DetectExecution, DetectOutputs, DetectSettings, detect_archive
    from marsdust.detect.settings import ALL_LATITUDES, resolve_latitudes
    from marsdust.mdgm import MapReadError
    from marsdust.models import CheckpointError

    setup_logging(logging.WARNING)
    if table_format not in ("csv", "parquet"):
        usage_error(f"--format must be csv or parquet, got {table_format!r}")
    if mask_grid not in ("both", "mdad", "working"):
        usage_error(f"--mask-grid must be both, mdad or working, got {mask_grid!r}")
    from marsdust.detect import ENGINES

    if engine is not None and engine not in ENGINES:
        usage_error(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if not checkpoint.is_file():
        fail(f"{checkpoint}: no such checkpoint file")
    try:
        from marsdust.models import resolve_score_threshold, stored_outline_threshold

        score_threshold, threshold_source = resolve_score_threshold(checkpoint, score_threshold)
        outline_threshold = stored_outline_threshold(checkpoint)
        settings = DetectSettings(score_threshold, mask_threshold, pad_deg, max_tile_px, engine=engine,
                                  onnx_model=None if onnx_model is None else str(onnx_model),
                                  latitudes_deg=ALL_LATITUDES if all_latitudes else None,
                                  mask_box_scale=mask_box_scale)
        settings, latitude_source = resolve_latitudes(checkpoint, settings)
        outputs = DetectOutputs(output, table_format, geotiff=geotiff, quicklook=quicklook, track=not no_track,
                                overwrite=overwrite, mask_grid=mask_grid)
        execution = DetectExecution(device, batch_size, workers, threads, progress=not quiet)
        summary = detect_archive(checkpoint, maps if len(maps) > 1 else maps[0], outputs, settings=settings,
                                 execution=execution, history=history)
    except (CheckpointError, MapReadError, ValueError, FileNotFoundError, OSError) as exc:
        fail(exc)
    if not summary.paths:  # a torchrun rank other than 0: rank 0 reports
        return
    products = ", ".join(str(p) for key, p in summary.paths.items())
    typer.echo(
        f"{summary.n_maps} maps ({summary.n_processed} processed now, {summary.n_errors} unreadable), "
        f"{summary.n_detections} storms{_without_history_note(summary)}, {summary.maps_per_second:.2f} maps/s "
        f"-> {products}"
    )
    typer.echo(f"score threshold {score_threshold:.3g}: {threshold_source}")
    if outline_threshold is not None and abs(outline_threshold - score_threshold) > 1e-9:
        typer.echo(f"outline threshold {outline_threshold:.3g}: the score from which the detector's masks overlapped "
                   f"the catalogued outlines best on its validation maps (pixel IoU); --score-threshold "
                   f"{outline_threshold:.3g} writes the dust masks of that choice")
    typer.echo(_latitudes_line(settings.latitudes_deg, "--all-latitudes" if all_latitudes else latitude_source,
                               summary.n_beyond_latitudes))
    if summary.all_without_history:
        typer.echo("error: no map of the run had an earlier map in the detector's reference window, so every map "
                   "was detected without history and the results are meaningless; give --history ARCHIVE (maps "
                   "before these) or detect a longer stretch of the archive", err=True)
        raise typer.Exit(code=EXIT_WITHOUT_HISTORY)


def _latitudes_line(latitudes_deg, source: str, n_dropped: int) -> str:
    """The summary's latitude line: the range kept, why, and how many detections lay beyond it."""
    from marsdust.detect.settings import ALL_LATITUDES, latitude_range_text

    if tuple(latitudes_deg) == ALL_LATITUDES:
        return f"latitudes: all ({source})"
    plural = "s" if n_dropped != 1 else ""
    return (f"latitudes {latitude_range_text(latitudes_deg)}: {source}; {n_dropped} detection{plural} centred beyond "
            "them dropped (--all-latitudes keeps them)")


def _without_history_note(summary) -> str:
    """``, N maps without history (...)`` for the summary line, or empty when every map had history."""
    count = summary.n_without_history
    if not count:
        return ""
    if summary.needs_history:
        return (f", {count} map{'s' if count != 1 else ''} without history (the detector compares each map with "
                "the earlier ones: give --history ARCHIVE)")
    return (f", {count} map{'s' if count != 1 else ''} without history (detected as the detector also learnt to, "
            "with fewer storms found)")
