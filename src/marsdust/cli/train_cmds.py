"""Commands of the train stage: ``marsdust train``, ``marsdust evaluate``, ``marsdust compare``.

Settings come, lowest priority first, from :class:`marsdust.train.TrainConfig` defaults, a YAML file
(``--config run.yaml``; a run's own ``RUN_DIR/config.yaml`` works) and the command-line options. ``train``
and ``compare`` take one option per TrainConfig setting, generated from the field's own description
(:mod:`marsdust.cli.config_options`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from marsdust.cli._app import app, fail, quiet_lightning, setup_logging, usage_error
from marsdust.cli.config_options import config_command, given_settings
from marsdust.cli.data_cmds import STRICT_HELP

def _build_config(config_file: Optional[Path], cli_values: dict):
    """TrainConfig from defaults < YAML file < command-line options that were given (not None)."""
    from marsdust.train import TrainConfig, load_config_yaml

    values = load_config_yaml(config_file) if config_file else {}
    values.update({k: v for k, v in cli_values.items() if v is not None})
    return TrainConfig.from_dict(values, source=str(config_file) if config_file else "command line")


def _quiet_if_asked(cli_values: dict) -> None:
    """``--quiet`` (``progress=False``): besides the progress bars, Lightning's INFO lines go ("GPU available: ...")."""
    if cli_values.get("progress") is False:
        quiet_lightning()


_DATA_HELP = "Folder holding archive/ (MDGM archive) and mdad/ (MDAD catalog), e.g. the output of marsdust synth."
_MASTER_HELP = "MDAD v1.1 master CSV for every cube of the catalog (default: found by its columns under it)."
_CONFIG_HELP = "YAML file of TrainConfig settings (command-line options override it)."


@app.command("train", cls=config_command())
def train_command(
    ctx: typer.Context,
    output: Path = typer.Option(..., "-o", "--output", help="Run folder (checkpoints/best.ckpt, checkpoints/last.ckpt, "
                                "metrics.csv, split.csv, config.yaml).", show_default=False),
    config_file: Optional[Path] = typer.Option(None, "--config", help=_CONFIG_HELP, show_default=False),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUTPUT from checkpoints/last.ckpt."),
) -> None:
    """Train a detector; the best checkpoint (validation mAP50) goes to OUTPUT/checkpoints/best.ckpt."""
    import logging

    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from marsdust.models import available_models
    from marsdust.train import train

    setup_logging(logging.WARNING, lightning=True)
    cli_values = given_settings(ctx)
    _quiet_if_asked(cli_values)
    try:
        config = _build_config(config_file, cli_values)
    except (ValueError, FileNotFoundError) as exc:
        usage_error(exc)
    if config.model not in available_models():
        usage_error(f"unknown detector {config.model!r}; available: {', '.join(available_models())}")
    try:
        summary = train(config, output, resume=resume)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        fail(exc)
    except MisconfigurationException as exc:
        fail(_trainer_setup_message(exc))
    if summary["global_rank"] != 0:  # under DDP each process returns here; rank 0 reports
        return
    best = summary["best_val_map50"]
    typer.echo(f"{summary['global_step']} steps ({summary['steps_per_second']:.3f} steps/s), best val mAP50 "
               f"{'n/a' if best is None else f'{best:.3f}'} -> {summary['best_checkpoint']}")


def _trainer_setup_message(error: Exception) -> str:
    return (f"Lightning cannot set up training as asked ({error}); check --accelerator, --devices, "
            "--trainer-strategy and --precision (or their YAML fields)")


@app.command("evaluate")
def evaluate_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (RUN_DIR/checkpoints/best.ckpt).", show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="Evaluation folder (metrics.json, per_map.csv, "
                                "figures/).", show_default=False),
    data: Optional[str] = typer.Option(None, "--data", help=_DATA_HELP + " (default: the run's)", show_default=False),
    archive: Optional[str] = typer.Option(None, "--archive", help="MDGM archive (instead of DATA/archive)."),
    catalog: Optional[str] = typer.Option(None, "--catalog", help="MDAD catalog (instead of DATA/mdad)."),
    master: Optional[str] = typer.Option(None, "--master", help=_MASTER_HELP),
    strict: bool = typer.Option(False, "--strict", help=STRICT_HELP),
    split: str = typer.Option("test", "--split", help="Maps to score: test, val or train."),
    split_file: Optional[str] = typer.Option(None, "--split-file", help="Split manifest (default: the run's "
                                             "split.csv next to the checkpoint, else recomputed)."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="Recompute the split with this strategy."),
    label_mode: Optional[str] = typer.Option(None, "--label-mode", help="Ground truth shape (default: the run's)."),
    score_threshold: float = typer.Option(0.05, "--score-threshold", min=0.0, max=1.0,
                                          help="Lowest detection score scored."),
    mask_threshold: float = typer.Option(0.5, "--mask-threshold", min=0.0, max=1.0,
                                         help="Mask probability at which a pixel belongs to a storm (as detect's "
                                         "--mask-threshold: score the outlines detect writes at it)."),
    mask_box_scale: Optional[float] = typer.Option(
        None, "--mask-box-scale", min=1.0, max=3.0, show_default=False,
        help="Outline each storm in a window this many times its box, as detect's --mask-box-scale (default: the "
        "detector's own)."),
    figures: int = typer.Option(4, "--figures", min=0, help="Maps drawn ground truth next to prediction."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    all_latitudes: bool = typer.Option(
        False, "--all-latitudes", help="Score detections centred beyond the latitudes of the detector's training "
        "maps too (default: dropped, as detect drops them)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Score a trained detector on a split: mAP25/50/75 (box, and mask where it has masks), breakdowns, dx/dy, time."""
    from marsdust.detect import ALL_LATITUDES
    from marsdust.evaluate import EvaluateOptions, evaluate_checkpoint
    from marsdust.evaluate.metrics import union_shares_text
    from marsdust.models import CheckpointError

    if split not in ("test", "val", "train"):
        usage_error(f"--split must be test, val or train, got {split!r}")
    try:
        options = EvaluateOptions(data=data, archive=archive, catalog=catalog, master=master, strict=strict,
                                  split=split, split_file=split_file, strategy=strategy, label_mode=label_mode,
                                  score_threshold=score_threshold, mask_threshold=mask_threshold,
                                  mask_box_scale=mask_box_scale,
                                  n_figures=figures, device=device,
                                  progress=not quiet, latitudes_deg=ALL_LATITUDES if all_latitudes else None)
    except ValueError as exc:
        usage_error(exc)
    try:
        metrics = evaluate_checkpoint(checkpoint, output, options)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        fail(exc)

    def pct(value):
        return "n/a" if value is None or value != value else f"{100 * value:.1f}"

    time_ms = metrics.get("time_ms_per_map")
    typer.echo(f"{metrics['n_maps']} {split} maps: mAP25 {pct(metrics['map25'])}  mAP50 {pct(metrics['map50'])}  "
               f"mAP75 {pct(metrics['map75'])} (box, %)"
               + (f", {time_ms:.0f} ms/map" if time_ms else "") + f" -> {output / 'metrics.json'}")
    if metrics["n_beyond_latitudes"]:
        from marsdust.detect.settings import latitude_range_text

        typer.echo(f"{metrics['n_beyond_latitudes']} detections centred beyond "
                   f"{latitude_range_text(metrics['latitudes_deg'])} (the detector's training latitudes) dropped "
                   "before scoring (--all-latitudes scores them)")
    pixel = metrics.get("pixel") or {}
    if pixel.get("n_maps") and pixel["iou"] == pixel["iou"]:
        typer.echo(f"dust pixels on the {pixel['n_maps']} maps with catalogued outlines, at score >= "
                   f"{pixel['threshold']:.2f}: IoU {pct(pixel['iou'])}%, Dice {pct(pixel['dice'])}%. "
                   + union_shares_text(pixel["union_shares"]))
    errors = metrics["error_analysis"]
    typer.echo(f"at score >= {errors['score_threshold']:g}: recall {pct(errors['recall'])}%, "
               f"{sum(errors['missed'].values())} missed, {errors['n_false_alarms']} false alarms "
               f"-> {output / 'error_analysis.md'}")


@app.command("compare", cls=config_command(exclude=("model", "strategy")))
def compare_command(
    ctx: typer.Context,
    output: Path = typer.Option(..., "-o", "--output", help="Comparison folder (table1.md/.csv, measures.md/.csv, runs/, eval/).",
                                show_default=False),
    config_file: Optional[Path] = typer.Option(None, "--config", help=_CONFIG_HELP + " All runs share it.",
                                               show_default=False),
    models: str = typer.Option("dustrcnn,maskrcnn,fasterrcnn,sppnet", "--models", help="Detectors, comma-separated."),
    strategies: str = typer.Option("temporal,random", "--strategies", help="Split strategies, comma-separated."),
    label: str = typer.Option("ours (synthetic)", "--label", help="Source label of our rows in the table."),
) -> None:
    """Train and evaluate each detector under each strategy with the same budget; write the paper's Table 1 layout.

    Every run takes the same settings (the options below), only --models and --strategies vary.
    Resumable: finished runs and evaluations are kept, interrupted runs continue from last.ckpt.
    """
    import logging

    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from marsdust.evaluate.compare import compare
    from marsdust.evaluate import comparison_markdown
    from marsdust.models import available_models

    setup_logging(logging.INFO, lightning=True)
    cli_values = given_settings(ctx)
    _quiet_if_asked(cli_values)
    model_names = [m.strip() for m in models.split(",") if m.strip()]
    strategy_names = [s.strip() for s in strategies.split(",") if s.strip()]
    unknown = [m for m in model_names if m not in available_models()]
    if unknown:
        usage_error(f"unknown detector(s) {unknown}; available: {', '.join(available_models())}")
    bad = [s for s in strategy_names if s not in ("temporal", "random")]
    if bad:
        usage_error(f"unknown strategy(ies) {bad}; use temporal and/or random")
    try:
        base = _build_config(config_file, cli_values)
    except (ValueError, FileNotFoundError) as exc:
        usage_error(exc)
    try:
        result = compare(output, base, model_names, strategy_names, our_label=label, progress=base.progress)
    except (ValueError, FileNotFoundError) as exc:
        fail(exc)
    except MisconfigurationException as exc:
        fail(_trainer_setup_message(exc))
    typer.echo(comparison_markdown(result["table"]))
    typer.echo(f"-> {result['markdown']}, {result['csv']}; every measure and recall per kind of storm: "
               f"{output / 'measures.md'}")
