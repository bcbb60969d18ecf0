"""Commands of the data stage: ``marsdust index`` (MDGM archive) and ``marsdust catalog`` (MDAD)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from marsdust.cli._app import app, fail, setup_logging, without_warnings_of

#: Help of ``--strict``, the option of every command that reads the MDAD (catalog, train, evaluate, compare).
STRICT_HELP = ("Stop on MDAD cube/master disagreements (rows without pixels, swathLs more than 0.5° from the day's "
               "median Ls, cube days with storms but no row) instead of one warning.")


def _years(values) -> str:
    years = sorted({int(y) for y in values})
    if not years:
        return "no Mars years"
    if len(years) == 1:
        return f"MY{years[0]}"
    return f"MY{years[0]}–MY{years[-1]}"


@app.command("index")
def index_command(
    archive: Path = typer.Argument(
        ...,
        help="The MDGM archive: a folder with one folder or .tar per mission subphase (e.g. R18/ or "
        "R18.tar, each with a list_ls.txt), a single subphase, a flat folder of maps (with --manifest), "
        "or an index CSV written earlier.",
        show_default=False,
    ),
    output: Path = typer.Option(
        Path("index.csv"), "-o", "--output",
        help="Where to write the index table (.csv, or .parquet). Columns: map_id, subphase, sol, "
        "mars_year, ls, path.",
    ),
    manifest: Optional[Path] = typer.Option(
        None, "--manifest",
        help="For a flat folder of maps: a CSV with columns map_id (or name/file), mars_year, ls.",
    ),
) -> None:
    """List every map of an MDGM archive with its Mars year and Ls, sorted in time.

    Maps listed in list_ls.txt but missing, and map files that are not listed, are reported as problems (they are not indexed).
    """
    import logging

    from marsdust.mdgm import MapReadError, index_archive, problems_table, save_index

    setup_logging(logging.WARNING)
    try:
        with without_warnings_of("marsdust.mdgm"):  # its warning is the problem count, printed below with the list
            index = index_archive(archive, manifest=manifest)
        save_index(index, output)
    except (MapReadError, ValueError, OSError) as exc:
        fail(exc)
    problems = problems_table(index)
    shown = 10
    for problem in problems.head(shown).itertuples():
        typer.echo(f"warning: {problem.where}: {problem.kind}: {problem.detail}", err=True)
    if len(problems) > shown:
        typer.echo(f"warning: … {len(problems) - shown} more problem(s) (mdgm.problems_table lists them all)", err=True)
    summary = f"{len(index)} maps, {_years(index['mars_year'])}, {len(problems)} problem(s) -> {output}"
    if len(problems):
        counts = problems["kind"].value_counts().sort_index()
        summary += " [" + ", ".join(f"{n} {kind}" for kind, n in counts.items()) + "]"
    typer.echo(summary)


@app.command("catalog")
def catalog_command(
    mdad_path: Path = typer.Argument(
        ...,
        help="The Mars Dust Activity Database: a v1.0 table (MDAD.csv or .xlsx), a v1.1 netCDF cube "
        "(MY25/MDADMY25.nc), or a folder holding them (the v1.1 head folder MY24/, MY25/, …). Master CSVs "
        "are found by their columns beside a cube, in the head folder or anywhere under it.",
        show_default=False,
    ),
    output: Path = typer.Option(
        Path("storms.csv"), "-o", "--output",
        help="Where to write the storm table (.csv, or .parquet). One row per storm per sol: map_id, "
        "subphase, sol, mars_year, ls, lon, lat, area_km2, confidence, member_id, sequence_id, polygon_wkt.",
    ),
    skip_bad: bool = typer.Option(
        False, "--skip-bad",
        help="Drop rows with bad values (with one warning listing them) instead of stopping at the first.",
    ),
    master: Optional[Path] = typer.Option(
        None, "--master",
        help="The MDAD v1.1 master CSV (columns subphase, sol, mem_ID, seq_ID, confidence_flag, area, swathLs, "
        "centroid_lon, centroid_lat) for every cube, when it is not under MDAD_PATH or there are several.",
    ),
    strict: bool = typer.Option(False, "--strict", help=STRICT_HELP),
) -> None:
    """Read the MDAD storm catalogue into one normalized storm table.

    Longitudes come out east-positive in [-180, 180); outlines (polygon_wkt) are filled from the v1.1 cubes where available.
    """
    import warnings

    from marsdust.mdad import read_catalog, save_catalog
    from marsdust.mdad_format import CatalogError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            storms = read_catalog(mdad_path, skip_bad=skip_bad, master=master, strict=strict)
        save_catalog(storms, output)
    except (CatalogError, ValueError, OSError) as exc:
        fail(exc)
    for line in storms.attrs.get("sources", []):
        typer.echo(f"source: {line}", err=True)
    for text in dict.fromkeys(' '.join(str(w.message).split()) for w in caught):
        typer.echo(f"warning: {text}", err=True)
    with_outline = int(storms["polygon_wkt"].notna().sum())
    typer.echo(
        f"{len(storms)} storms, {_years(storms['mars_year'])}, {with_outline} with outlines, "
        f"{len(caught)} warning(s) -> {output}"
    )
