"""Commands of test-time adaptation: ``marsdust adapt`` re-estimates a detector's BatchNorm statistics (AdaBN)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from marsdust.cli._app import app, fail


@app.command("adapt")
def adapt_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint to adapt (a detector with norm 'batch', e.g. model "
                                      "preset small_cpu).", show_default=False),
    target: str = typer.Argument(..., help="Unlabeled target maps: archive folder or tar, index, glob or map files.",
                                 show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="Adapted checkpoint to write.", show_default=False),
    maps: Optional[int] = typer.Option(None, "--maps", min=1, help="Use N target maps spread evenly in time "
                                       "(default: all)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Adapt a detector to an archive that looks different: re-estimate its BatchNorm statistics on the target maps."""
    from marsdust.adapt import adapt_checkpoint
    from marsdust.models import CheckpointError, checkpoint_metadata

    try:
        path = adapt_checkpoint(checkpoint, target, output, n_maps=maps, device=device, progress=not quiet)
        record = checkpoint_metadata(path)["extra"]["adaptation"]
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        fail(exc)
    typer.echo(f"adapted on {record['n_maps']} maps of {record['target_archive']} -> {path}")


@app.command("self-train")
def self_train_command(
    checkpoint: Path = typer.Argument(..., help="The teacher: a trained detector.", show_default=False),
    target: Path = typer.Argument(..., help="Unlabeled target archive (a folder of maps).", show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the teacher's detections, the pseudo-labels "
                                "and the student's run.", show_default=False),
    steps: int = typer.Option(150, "--steps", min=1, help="Training steps of the student."),
    min_score: float = typer.Option(0.7, "--min-score", min=0.0, max=1.0,
                                    help="Detections scoring at least this become labels."),
    lr: float = typer.Option(5e-4, "--lr", min=0.0, help="Learning rate of the student (fine-tuning)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress."),
) -> None:
    """Adapt a detector to an archive without a catalogue: fine-tune it on its own confident detections there."""
    from marsdust.models import CheckpointError
    from marsdust.selftrain import self_train

    try:
        result = self_train(checkpoint, target, output, steps=steps, min_score=min_score, lr=lr, device=device,
                            progress=not quiet)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        fail(exc)
    typer.echo(f"{result['n_pseudo_labels']} pseudo-labels (score >= {min_score}) on {result['maps_with_labels']} "
               f"of {result['n_maps']} maps; student after {steps} steps -> {result['checkpoint']}")
