"""``marsdust demo``: the main job on the built-in default, end to end."""

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import typer

from marsdust.cli._app import app, quiet_lightning, usage_error


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("demo_out"), "-o", "--output",
                                 help="Output folder: data/, run/, model.ckpt, report/."),
    out_alias: Optional[Path] = typer.Option(None, "--out", hidden=True, help="Former name of --output."),
    preset: str = typer.Option(None, help="Synthetic-data preset. Default twocam: both cameras, the catalogue shaped "
                               "like MDAD's (outlines for the MARCI years only). demo: the paper's setting, MOC years "
                               "only. ci: a quicker, rougher run."),
    max_steps: int = typer.Option(None, help="Training steps (default: the demo's budget, minutes on 2 CPU cores)."),
    seed: int = typer.Option(0, help="Seed of the planet, the split and the training."),
    reference: str = typer.Option(None, "--reference", metavar="KIND",
                                  help="Reference bands: none or prior-median (each map's clear-sky background from the "
                                  "previous --reference-sols sols as three more input bands). Default: "
                                  "prior-median."),
    reference_sols: int = typer.Option(None, "--reference-sols", metavar="N", min=1,
                                       help="Window of the prior-median background, sols. Default: 60, since the "
                                       "demo archives hold pairs of sols 37-45 sols apart (train's: 20)."),
    reference_dropout: float = typer.Option(None, "--reference-dropout", metavar="P", min=0.0, max=1.0,
                                            help="Probability that a training map is shown without its background, "
                                            "so the detector also works without history. Default: 0 (train's: "
                                            "0.2; the demo's short training does not learn both)."),
    precision: str = typer.Option("auto", "--precision", help="Training precision: auto (bf16 autocast on a CPU with "
                                  "avx512_bf16, else fp32), 32, or a Lightning precision such as bf16-mixed."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Synthesize a small archive, train a compact DustRCNN, detect and evaluate on held-out sols, report.

    Leaves the trained detector at OUT/model.ckpt and the report at OUT/report/ (summary.md, figures,
    catalog files). Started again with the same OUT, it continues where it stopped.
    """
    from marsdust.demo import DEMO_MAX_STEPS, DEMO_PRESET, demo_reference, run_demo

    quiet_lightning()  # the demo's own lines say what happens
    try:
        demo_reference(reference, reference_sols, reference_dropout)  # a bad setting stops before any work
    except ValueError as exc:
        usage_error(exc)
    out_dir = out_alias or out_dir
    with _info_lines_on_stderr("marsdust"):
        result = run_demo(out_dir, preset=preset or DEMO_PRESET, max_steps=max_steps or DEMO_MAX_STEPS, seed=seed,
                          progress=not quiet, reference=reference, reference_sols=reference_sols,
                          reference_dropout=reference_dropout, precision=precision)
    metrics = result.metrics

    def pct(value):
        return "n/a" if value is None else f"{100 * value:.1f}%"

    typer.echo("")
    typer.echo(f"marsdust demo finished in {result.seconds:.0f} s")
    typer.echo(f"  test maps {result.n_test_maps}: {result.n_catalog_storms} catalogued storms, "
               f"{result.n_detected_storms} detected")
    typer.echo(f"  box mAP25 {pct(metrics.get('map25'))}  mAP50 {pct(metrics.get('map50'))}  "
               f"mAP75 {pct(metrics.get('map75'))}  ({metrics.get('label_mode', 'fixed')} labels)")
    paper, masks = metrics.get("paper_boxes") or {}, metrics.get("segm") or {}
    if paper:
        typer.echo(f"  the paper's 12° boxes mAP50 {pct(paper.get('map50'))}  mAP75 {pct(paper.get('map75'))}; "
                   f"masks mAP50 {pct(masks.get('map50'))}")
    typer.echo(f"  trained detector: {result.model_path}")
    typer.echo(f"  report:           {result.summary_path}  (open it; figures in {result.report_dir})")


@contextlib.contextmanager
def _info_lines_on_stderr(logger_name: str) -> Iterator[None]:
    """Within the block, print logger ``logger_name``'s INFO lines (and up) on stderr as bare messages.

    The handler is bound to the ``sys.stderr`` of the block and removed after it, so no later line is
    written to a stream its owner has closed (a test runner's capture).
    """
    logger = logging.getLogger(logger_name)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
