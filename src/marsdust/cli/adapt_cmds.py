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
    from marsdust.models import CheckpointError, read_checkpoint

    try:
        path = adapt_checkpoint(checkpoint, target, output, n_maps=maps, device=device, progress=not quiet)
        record = read_checkpoint(path)["extra"]["adaptation"]
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        fail(exc)
    typer.echo(f"adapted on {record['n_maps']} maps of {record['target_archive']} -> {path}")
