"""Commands of the synth stage: ``marsdust synth`` and ``marsdust show``."""

from pathlib import Path
from typing import Optional

import typer

from marsdust.cli._app import app, fail, usage_error


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Output folder: gets archive/, mdad/, truth/ and cloudmask/."),
    preset: str = typer.Option("ci", "--preset", help="ci, demo, bench, full, twocam or twocam_ci (the keys of "
                                                      "`marsdust.synth.presets.PRESETS`; see `marsdust.synth`), "
                                                      "or look2 / look2_marci: the independently modelled second "
                                                      "look, MOC or global MARCI layout, for testing only."),
    seed: int = typer.Option(0, "--seed", help="Planet and weather seed (same seed, same files)."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an earlier synthesis in OUT (removes OUT/archive, OUT/mdad, OUT/truth and "
                                   "OUT/cloudmask only; other files in OUT stay)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    random_look: bool = typer.Option(
        False, "--random-look", help="Draw every map's look (dust colour and light, storm edge profile, cloud "
                                     "colour, noise, seams, channel gains and gammas, JPEG compression) around its "
                                     "camera's: training data that carries over to other looks. Same weather, maps "
                                     "and catalogue as without. Main-generator presets only."),
    random_look_share: float = typer.Option(
        1.0, "--random-look-share", min=0.0, max=1.0,
        help="With --random-look: the share of maps drawn in a random look (the others keep their camera's)."),
) -> None:
    """Write a synthetic MDGM archive, its MDAD catalog (v1.0 table + v1.1 cubes) and its cloud masks.

    An OUT that already holds archive/, mdad/, truth/ or cloudmask/ is refused unless --overwrite.
    """
    from marsdust.synth import SECOND_LOOK_PRESETS, SynthOutputExistsError, synthesize

    if random_look and preset in SECOND_LOOK_PRESETS:
        usage_error(f"--random-look draws the main generator's maps in other looks; {preset} is the second look, "
                    "kept as it is for testing only")
    try:
        result = synthesize(out, preset=preset, seed=seed, progress=not quiet, overwrite=overwrite,
                            random_look=random_look_share if random_look else 0.0)
    except SynthOutputExistsError as error:
        fail(error)
    except ValueError as error:  # an unknown preset
        usage_error(error)
    maps, storms = result["maps"], result["storms"]
    with_storms = storms["map_id"].nunique() if len(storms) else 0
    typer.echo(
        f"wrote {len(maps)} maps to {out / 'archive'} and {len(storms)} storm instances "
        f"({storms['member_id'].nunique() if len(storms) else 0} members) to {out / 'mdad'}; "
        f"{with_storms / max(len(maps), 1):.0%} of maps have storms"
    )


@app.command()
def show(
    data: Path = typer.Argument(..., help="A synth output folder (archive/ + truth/ or mdad/) or an archive folder."),
    catalog: Optional[Path] = typer.Option(None, "--catalog", help="MDAD table/netCDF/folder or storm CSV."),
    output: Path = typer.Option(Path("maps.png"), "-o", "--output", help="Output PNG."),
    maps: int = typer.Option(3, "--maps", help="How many maps to draw (those with the most storms)."),
    map_ids: Optional[str] = typer.Option(None, "--map-ids", help="Comma-separated map ids to draw instead."),
    max_width: int = typer.Option(1800, "--max-width", help="Maps are downsampled to at most this width (px)."),
    dpi: int = typer.Option(100, "--dpi", help="Figure resolution (12 inches wide)."),
) -> None:
    """Draw maps with their catalog storm outlines (e.g. the README picture)."""
    try:
        path = _draw_maps(data, catalog, output, maps, map_ids, max_width, dpi)
    except (OSError, ValueError, KeyError) as error:  # a missing folder, an unreadable catalog or map
        fail(error)
    typer.echo(f"wrote {path}")


def _draw_maps(data: Path, catalog: Optional[Path], output: Path, maps: int, map_ids: Optional[str],
               max_width: int, dpi: int) -> Path:
    """What ``show`` draws: the archive under ``data``, its storms, the chosen maps; returns the PNG's path."""
    import pandas as pd

    from marsdust.mdgm import index_archive
    from marsdust.plots import plot_maps_with_outlines

    archive = data / "archive" if (data / "archive").is_dir() else data
    index = index_archive(archive)
    if catalog is None:
        catalog = data / "truth" / "storms.csv" if (data / "truth" / "storms.csv").exists() else data / "mdad"
    if catalog.suffix == ".csv" and "storms" in catalog.stem:
        storms = pd.read_csv(catalog, keep_default_na=False)
    else:
        from marsdust.mdad import read_catalog

        storms = read_catalog(catalog)
    if map_ids:
        chosen = [m.strip() for m in map_ids.split(",")]
        missing = sorted(set(chosen) - set(index["map_id"]))
        if missing:
            raise ValueError(f"map ids not in {archive}: {', '.join(missing)}")
    else:
        counts = storms.groupby("map_id").size().sort_values(ascending=False, kind="stable")
        chosen = [m for m in counts.index if m in set(index["map_id"])][:maps] or list(index["map_id"][:maps])
    rows = index.set_index("map_id").loc[chosen].reset_index()
    return plot_maps_with_outlines(rows, storms, output, max_width_px=max_width, dpi=dpi)
