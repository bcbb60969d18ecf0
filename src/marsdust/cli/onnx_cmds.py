"""``marsdust export-onnx``: write a checkpoint's backbone + FPN as an ONNX model for ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import typer

from marsdust.cli._app import app


@app.command("export-onnx")
def export_onnx_command(
    checkpoint: Path = typer.Argument(..., exists=True, dir_okay=False, help="A marsdust checkpoint (.ckpt / .pt)."),
    output: Path = typer.Option(..., "-o", "--output", help="The .onnx file to write."),
    opset: int = typer.Option(17, "--opset", min=13, help="ONNX opset."),
    check: bool = typer.Option(True, "--check/--no-check",
                               help="Run one map-sized input through ONNX Runtime and PyTorch and compare."),
) -> None:
    """Export the detector's backbone + FPN + RPN head (the dense bulk of CPU inference time) to ONNX.

    Proposal selection, the RoI heads and post-processing stay in PyTorch. ``marsdust detect`` on CPU exports
    the same thing to a temporary file by itself; a saved file is used with
    ``detect_archive(..., settings=DetectSettings(onnx_model=FILE))``.
    """
    import torch

    from marsdust.cli._app import fail
    from marsdust.detect import OnnxBackbone, export_backbone_onnx
    from marsdust.models import CheckpointError, load_model

    try:
        model = load_model(checkpoint, map_location="cpu").eval()
    except (CheckpointError, OSError) as error:
        fail(error)
    try:
        path = export_backbone_onnx(model, output, opset=opset)
    except ValueError as error:  # a detector without a dense part to export (unet)
        fail(f"{checkpoint}: {error}")
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if check:
        images = torch.rand(1, int(model.config.in_channels), 320, 1024, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            reference = model.backbone(images)
        levels, _ = OnnxBackbone(model, path)(images)
        worst = max(float((levels[k] - reference[k]).abs().max()) for k in reference)
        typer.echo(f"max |ONNX Runtime - PyTorch| over the pyramid levels: {worst:.2e}")
        if worst > 1e-3:
            raise typer.Exit(code=1)
