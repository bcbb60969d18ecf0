"""Commands of the train stage: ``marsdust train``, ``marsdust evaluate``, ``marsdust compare``.

Settings come, lowest priority first, from :class:`marsdust.train.TrainConfig` defaults, a YAML file
(``--config run.yaml``; a run's own ``RUN_DIR/config.yaml`` works) and the command-line options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from marsdust.cli._app import app, fail, quiet_lightning, setup_logging
from marsdust.cli.data_cmds import STRICT_HELP


def _devices(text: Optional[str]):
    if text is None:
        return None
    text = text.strip()
    if text.isdigit() or (text.startswith("-") and text[1:].isdigit()):
        return int(text)
    return text


def _build_config(config_file: Optional[Path], cli_values: dict):
    """TrainConfig from defaults < YAML file < command-line options that were given (not None)."""
    from marsdust.train import TrainConfig, load_config_yaml

    values = load_config_yaml(config_file) if config_file else {}
    values.update({k: v for k, v in cli_values.items() if v is not None})
    return TrainConfig.from_dict(values, source=str(config_file) if config_file else "command line")


# options shared by train and compare -------------------------------------------------------------------
_DATA_HELP = "Folder holding archive/ (MDGM archive) and mdad/ (MDAD catalog), e.g. the output of marsdust synth."
_MASTER_HELP = "MDAD v1.1 master CSV for every cube of the catalog (default: found by its columns under it)."
_REFERENCE_HELP = ("Reference bands: prior-median (the default: each map's clear-sky background, the median of the "
                   "archive's previous --reference-sols sols, as three more input bands; the checkpoint records it, so "
                   "detect and evaluate rebuild it), or none (the map alone).")
_REFERENCE_SOLS_HELP = "Window of the prior-median background in sols (default: 20)."
_REFERENCE_DROPOUT_HELP = ("Probability that a training map is shown without its background, so the detector also "
                           "works on maps with no history: a lone map, the first sols of an archive (default: 0.2; "
                           "a prior-median detector trained with 0 finds almost nothing without history).")
_CLASSES_HELP = ("Classes to learn: dust (default) or dust,cloud (water-ice clouds from each map's cloud mask, "
                 "cloudmask/<SUBPHASE>/<map_id>.nc beside the archive; maps without one train dust only).")
_MODEL_PRESET_HELP = ("Named detector configuration: compact (the default), small_cpu or stock_like (marsdust models "
                      "lists them); model_config fields of --config override it.")


@app.command("train")
def train_command(
    output: Path = typer.Option(..., "-o", "--output", help="Run folder (checkpoints/best.ckpt, checkpoints/last.ckpt, "
                                "metrics.csv, split.csv, config.yaml).", show_default=False),
    data: Optional[str] = typer.Option(None, "--data", help=_DATA_HELP, show_default=False),
    archive: Optional[str] = typer.Option(None, "--archive", help="MDGM archive (instead of DATA/archive).",
                                          show_default=False),
    catalog: Optional[str] = typer.Option(None, "--catalog", help="MDAD table/netCDF/folder (instead of DATA/mdad).",
                                          show_default=False),
    master: Optional[str] = typer.Option(None, "--master", help=_MASTER_HELP, show_default=False),
    strict: bool = typer.Option(False, "--strict", help=STRICT_HELP),
    config_file: Optional[Path] = typer.Option(None, "--config", help="YAML file of TrainConfig settings "
                                               "(command-line options override it).", show_default=False),
    model: Optional[str] = typer.Option(None, "--model", help="Detector: dustrcnn, maskrcnn, fasterrcnn, sppnet "
                                        "(default: dustrcnn)."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="Split: temporal (paper's strategy 1) or random "
                                           "(strategy 2); default: temporal."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Optimizer steps (default: 300)."),
    label_mode: Optional[str] = typer.Option(None, "--label-mode", help="Ground truth: outline (catalogue outlines; "
                                             "the default), fixed (paper's 12° boxes) or area (area-sized boxes)."),
    classes: Optional[str] = typer.Option(None, "--classes", help=_CLASSES_HELP),
    cloud_masks: Optional[str] = typer.Option(None, "--cloud-masks", help="Cloud-mask folder (<SUBPHASE>/<map_id>.nc; "
                                              "default: cloudmask/ beside the archive).", show_default=False),
    cloud_max_width_deg: Optional[float] = typer.Option(None, "--cloud-max-width-deg", help="Cloud regions wider "
                                                        "than this (degrees of longitude: belts, polar hoods) are no "
                                                        "cloud instance (default: 90; 360: no limit).", show_default=False),
    schedule: Optional[str] = typer.Option(None, "--schedule", help="Optimizer preset: warmup_cosine (AdamW 1e-3, "
                                           "warm-up + cosine; default) or paper (Adam 1e-4, x0.1 every 1000 steps)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (overrides the schedule's)."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="Weight decay (overrides the schedule's)."),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps", help="Linear warm-up steps."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Maps per step per device (default: 4)."),
    map_res_deg: Optional[float] = typer.Option(None, "--map-res-deg", help="Working resolution, degrees per pixel "
                                                "(default: 0.4)."),
    model_preset: Optional[str] = typer.Option(None, "--model-preset", metavar="NAME", help=_MODEL_PRESET_HELP),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="resnet18, resnet34 or resnet50."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of split, weights, order and augmentation (default: 0)."),
    train_period: Optional[str] = typer.Option(None, "--train-period", help="Temporal split training period, e.g. "
                                               "'MY25 0 - MY27 180'."),
    test_period: Optional[str] = typer.Option(None, "--test-period", help="Temporal split test period, e.g. "
                                              "'MY27 180 - MY28 121]' (']' keeps the end)."),
    random_period: Optional[str] = typer.Option(None, "--random-period", help="Random split: the maps shuffled."),
    val_fraction: Optional[float] = typer.Option(None, "--val-fraction", help="Temporal split: share of the training "
                                                 "period used for validation."),
    split_file: Optional[str] = typer.Option(None, "--split-file", help="Use this split.csv instead of computing one."),
    val_every: Optional[int] = typer.Option(None, "--val-every", min=1, help="Validate (mAP50) every N steps "
                                            "(default: 50)."),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", min=0, help="DataLoader workers (default: 2)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Torch CPU threads."),
    accelerator: Optional[str] = typer.Option(None, "--accelerator", help="Lightning accelerator: auto, cpu, gpu."),
    devices: Optional[str] = typer.Option(None, "--devices", help="Lightning devices: auto, N, or a list like 0,1."),
    num_nodes: Optional[int] = typer.Option(None, "--num-nodes", min=1, help="Nodes (multi-node DDP)."),
    trainer_strategy: Optional[str] = typer.Option(None, "--trainer-strategy", "--ddp-strategy",
                                                   help="Lightning strategy: auto, ddp, ddp_spawn, ... (--strategy is "
                                                   "the split)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="Lightning precision, e.g. 32-true, bf16-mixed."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Train without augmentation."),
    augment: Optional[str] = typer.Option(None, "--augment", metavar="NAME",
                                          help="Augmentation: strong (default: longitude roll and flip, brightness, "
                                          "contrast, colour balance, gamma, blur, noise, swath steps) or basic (roll, "
                                          "flip, brightness, contrast)."),
    reference: Optional[str] = typer.Option(None, "--reference", metavar="KIND", help=_REFERENCE_HELP),
    reference_sols: Optional[int] = typer.Option(None, "--reference-sols", metavar="N", min=1,
                                                 help=_REFERENCE_SOLS_HELP),
    reference_dropout: Optional[float] = typer.Option(None, "--reference-dropout", metavar="P", min=0.0, max=1.0,
                                                      help=_REFERENCE_DROPOUT_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUTPUT from checkpoints/last.ckpt."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar, no Lightning INFO lines."),
) -> None:
    """Train a detector; the best checkpoint (validation mAP50) goes to OUTPUT/checkpoints/best.ckpt."""
    import logging

    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from marsdust.models import available_models
    from marsdust.train import train

    setup_logging(logging.WARNING, lightning=True)
    if quiet:
        quiet_lightning()  # "GPU available: ...", "TPU available: ...": Lightning's INFO lines
    cli_values = dict(
        data=data, archive=archive, catalog=catalog, master=master, strict=strict or None, model=model,
        strategy=strategy, max_steps=max_steps,
        label_mode=label_mode, schedule=schedule, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
        batch_size=batch_size, map_res_deg=map_res_deg, model_preset=model_preset, backbone=backbone, seed=seed,
        train_period=train_period, test_period=test_period, random_period=random_period, val_fraction=val_fraction,
        split_file=split_file, val_every_n_steps=val_every, num_workers=num_workers, threads=threads,
        accelerator=accelerator, devices=_devices(devices), num_nodes=num_nodes, trainer_strategy=trainer_strategy,
        precision=precision, augment=False if no_augment else None, augment_preset=augment, progress=False if quiet else None,
        reference=reference, reference_sols=reference_sols, reference_dropout=reference_dropout,
        classes=classes, cloud_masks=cloud_masks,
        cloud_max_width_deg=cloud_max_width_deg,
    )
    try:
        config = _build_config(config_file, cli_values)
        if config.model not in available_models():
            raise ValueError(f"unknown detector {config.model!r}; available: {', '.join(available_models())}")
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
    figures: int = typer.Option(4, "--figures", min=0, help="Maps drawn ground truth next to prediction."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Score a trained detector on a split: mAP25/50/75 (box, and mask where it has masks), breakdowns, dx/dy, time."""
    from marsdust.evaluate import evaluate_checkpoint
    from marsdust.models import CheckpointError

    if split not in ("test", "val", "train"):
        fail(f"--split must be test, val or train, got {split!r}")
    try:
        metrics = evaluate_checkpoint(checkpoint, output, data=data, archive=archive, catalog=catalog, master=master,
                                      strict=strict, split=split,
                                      split_file=split_file, strategy=strategy, label_mode=label_mode,
                                      score_threshold=score_threshold, n_figures=figures, device=device,
                                      progress=not quiet)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        fail(exc)

    def pct(value):
        return "n/a" if value is None or value != value else f"{100 * value:.1f}"

    time_ms = metrics.get("time_ms_per_map")
    typer.echo(f"{metrics['n_maps']} {split} maps: mAP25 {pct(metrics['map25'])}  mAP50 {pct(metrics['map50'])}  "
               f"mAP75 {pct(metrics['map75'])} (box, %)"
               + (f", {time_ms:.0f} ms/map" if time_ms else "") + f" -> {output / 'metrics.json'}")
    errors = metrics["error_analysis"]
    typer.echo(f"at score >= {errors['score_threshold']:g}: recall {pct(errors['recall'])}%, "
               f"{sum(errors['missed'].values())} missed, {errors['n_false_alarms']} false alarms "
               f"-> {output / 'error_analysis.md'}")


@app.command("compare")
def compare_command(
    output: Path = typer.Option(..., "-o", "--output", help="Comparison folder (table1.md, table1.csv, runs/, eval/).",
                                show_default=False),
    data: Optional[str] = typer.Option(None, "--data", help=_DATA_HELP, show_default=False),
    archive: Optional[str] = typer.Option(None, "--archive", help="MDGM archive (instead of DATA/archive)."),
    catalog: Optional[str] = typer.Option(None, "--catalog", help="MDAD catalog (instead of DATA/mdad)."),
    master: Optional[str] = typer.Option(None, "--master", help=_MASTER_HELP),
    strict: bool = typer.Option(False, "--strict", help=STRICT_HELP),
    models: str = typer.Option("dustrcnn,maskrcnn,fasterrcnn,sppnet", "--models", help="Detectors, comma-separated."),
    strategies: str = typer.Option("temporal,random", "--strategies", help="Split strategies, comma-separated."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Steps per run (same for all)."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="YAML TrainConfig settings shared by all runs."),
    model_preset: Optional[str] = typer.Option(None, "--model-preset", metavar="NAME", help=_MODEL_PRESET_HELP),
    schedule: Optional[str] = typer.Option(None, "--schedule", help="Optimizer preset (warmup_cosine or paper)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    val_every: Optional[int] = typer.Option(None, "--val-every", min=1, help="Validate every N steps."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    reference: Optional[str] = typer.Option(None, "--reference", metavar="KIND", help=_REFERENCE_HELP),
    reference_sols: Optional[int] = typer.Option(None, "--reference-sols", metavar="N", min=1,
                                                 help=_REFERENCE_SOLS_HELP),
    reference_dropout: Optional[float] = typer.Option(None, "--reference-dropout", metavar="P", min=0.0, max=1.0,
                                                      help=_REFERENCE_DROPOUT_HELP),
    classes: Optional[str] = typer.Option(None, "--classes", help=_CLASSES_HELP),
    label: str = typer.Option("ours (synthetic)", "--label", help="Source label of our rows in the table."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Train and evaluate each detector under each strategy with the same budget; write the paper's Table 1 layout.

    Resumable: finished runs and evaluations are kept, interrupted runs continue from last.ckpt.
    """
    import logging

    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from marsdust.evaluate.compare import compare
    from marsdust.evaluate import comparison_markdown
    from marsdust.models import available_models

    setup_logging(logging.INFO, lightning=True)
    model_names = [m.strip() for m in models.split(",") if m.strip()]
    strategy_names = [s.strip() for s in strategies.split(",") if s.strip()]
    unknown = [m for m in model_names if m not in available_models()]
    if unknown:
        fail(f"unknown detector(s) {unknown}; available: {', '.join(available_models())}")
    bad = [s for s in strategy_names if s not in ("temporal", "random")]
    if bad:
        fail(f"unknown strategy(ies) {bad}; use temporal and/or random")
    try:
        base = _build_config(config_file, dict(data=data, archive=archive, catalog=catalog, master=master,
                                               strict=strict or None, max_steps=max_steps,
                                               model_preset=model_preset, schedule=schedule, batch_size=batch_size,
                                               val_every_n_steps=val_every, seed=seed, reference=reference,
                                               reference_sols=reference_sols, reference_dropout=reference_dropout,
                                               classes=classes,
                                               progress=False if quiet else None))
        result = compare(output, base, model_names, strategy_names, our_label=label, progress=base.progress)
    except (ValueError, FileNotFoundError) as exc:
        fail(exc)
    except MisconfigurationException as exc:
        fail(_trainer_setup_message(exc))
    typer.echo(comparison_markdown(result["table"]))
    typer.echo(f"-> {result['markdown']}, {result['csv']}")
