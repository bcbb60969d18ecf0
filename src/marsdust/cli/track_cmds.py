"""Commands of the track stage: ``marsdust track`` (members, sequences, scores) and ``marsdust climatology``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from marsdust.cli._app import app, fail

INPUT_HELP = ("A storm table (the output of `marsdust catalog`, or a synth truth/storms.csv; .csv or .parquet), "
              "a detections.csv of `marsdust detect`, or an MDAD table, cube or folder.")
TRUTH_HELP = ("The catalog to score against (same kinds of input as INPUT): its own member_id and sequence_id "
              "are the truth.")
MAPS_HELP = ("A CSV with a map_id column (e.g. the maps.csv of `marsdust detect`, or an index): the maps INPUT was "
             "made on; the truth is restricted to them. Default: the truth's maps from INPUT's first to its last map "
             "(Mars year and Ls).")


def _read(path: Path, what: str):
    from marsdust.track import read_instances

    try:
        return read_instances(path)
    except (ValueError, OSError) as exc:
        fail(f"{what}: {exc}")


def _truth_for(instances, truth_path: Path, maps_path: Optional[Path]):
    """The truth catalog restricted to the maps of ``instances`` (see :func:`marsdust.evaluate.tracking.catalog_for`)."""
    import pandas as pd

    from marsdust.evaluate.tracking import catalog_for

    truth = _read(truth_path, "--truth")
    map_ids = None
    if maps_path is not None:
        try:
            maps = pd.read_csv(maps_path)
        except (OSError, ValueError) as exc:
            fail(f"--maps {maps_path}: cannot read ({exc})")
        if "map_id" not in maps.columns:
            fail(f"--maps {maps_path}: no map_id column (columns: {', '.join(map(str, maps.columns))})")
        map_ids = maps["map_id"].astype(str)
    return catalog_for(instances, truth, map_ids)


def _write(writer, *args) -> None:
    """``writer(...)`` (an atomic writer of :mod:`marsdust.fileio`), an OSError ending in one error line."""
    try:
        writer(*args)
    except OSError as exc:
        target = next(a for a in args if isinstance(a, Path))
        fail(f"{target}: cannot write ({exc.strerror or exc})")


def _check_track_command(output: Path, members_path: Path, scores_path: Path, max_gap_sols, max_ls_gap_deg,
                         min_link_km, size_factor, min_sequence_sols, min_iou, max_center_km) -> None:
    """One error line for an option out of range or two outputs on one file (before anything is read)."""
    from marsdust.schema import check_option
    from marsdust.track import check_track_options

    names = {"max_gap_sols": "--max-gap-sols", "max_ls_gap_deg": "--max-ls-gap-deg", "min_link_km": "--min-link-km",
             "size_factor": "--size-factor", "min_sequence_sols": "--min-sequence-sols"}
    try:
        check_track_options(max_gap_sols, max_ls_gap_deg, min_link_km, size_factor, min_sequence_sols, names)
        check_option("--min-iou", min_iou, 0.0, 1.0, low_inclusive=False)
        check_option("--max-center-km", max_center_km, 0.0, low_inclusive=False)
    except ValueError as exc:
        fail(exc)
    paths = {"-o": output, "--members": members_path, "--scores": scores_path}
    for option, path in paths.items():
        if path.is_dir():
            fail(f"{option} {path}: is a folder; give a file name")
    seen: dict = {}
    for option, path in paths.items():
        key = path.resolve()
        if key in seen:
            fail(f"{option} {path}: the same file as {seen[key]}; give each output its own name")
        seen[key] = option


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(f"{path.stem}{suffix}")


@app.command("track")
def track_command(
    input_path: Path = typer.Argument(..., metavar="INPUT", help=INPUT_HELP, show_default=False),
    output: Path = typer.Option(
        Path("tracked.csv"), "-o", "--output",
        help="The same rows with member_id and sequence_id assigned by the tracker (existing ids replaced); "
        ".csv or .parquet."),
    members_path: Optional[Path] = typer.Option(
        None, "--members",
        help="The members table (one row per member: first/last map and sol, Ls span, duration in sols, "
        "instances, path length km, largest area km², sequence). Default: OUTPUT's name + _members."),
    truth: Optional[Path] = typer.Option(None, "--truth", help=TRUTH_HELP),
    maps_path: Optional[Path] = typer.Option(None, "--maps", help=MAPS_HELP),
    scores_path: Optional[Path] = typer.Option(
        None, "--scores", help="Where to write the scores (JSON) with --truth. Default: OUTPUT's name + _scores.json."),
    max_gap_sols: int = typer.Option(
        1, "--max-gap-sols", min=1,
        help="Largest sol gap a member may bridge: 1 links only consecutive sols; 2 also bridges one missing map."),
    max_ls_gap_deg: Optional[float] = typer.Option(
        None, "--max-ls-gap-deg",
        help="Largest Ls advance (degrees) between two maps whose sols are not comparable (different subphases, "
        "or map ids without sols). Default: 1° per --max-gap-sols (Mars moves 0.42–0.66° of Ls per sol)."),
    min_link_km: float = typer.Option(
        300.0, "--min-link-km", help="Centroid distance (km, great circle) always allowed between linked instances."),
    size_factor: float = typer.Option(
        1.5, "--size-factor",
        help="Extra allowed centroid distance per km of the larger storm's equivalent radius sqrt(area/pi): "
        "big storms may move their centroid further. Overlapping outlines are always allowed."),
    min_sequence_sols: int = typer.Option(
        3, "--min-sequence-sols", min=1,
        help="Distinct maps a group of members joined by merges and splits must cover to be a sequence "
        "(MDAD: 3)."),
    min_iou: float = typer.Option(
        0.1, "--min-iou",  # marsdust.evaluate.tracking.DEFAULT_MIN_IOU (not imported: --help stays instant)
        help="With --truth: outline IoU from which a tracked instance matches a catalogued one."),
    max_center_km: float = typer.Option(
        300.0, "--max-center-km",  # marsdust.evaluate.tracking.DEFAULT_MAX_CENTER_KM
        help="With --truth, on maps where outlines are missing: centroid distance (km) up to which instances match."),
) -> None:
    """Link storm instances from sol to sol into members and sequences; with --truth, score the result.

    An instance continues a member of a map that follows closely enough (--max-gap-sols) if their outlines overlap or their centroids are near (--min-link-km + --size-factor x radius); pairs are assigned one-to-one, overlaps and large storms first; the losing partners of a merge or split join the same sequence.

    The scores: pairwise link precision/recall/F1, member purity and completeness, IDF1, sequence precision/recall (definitions in marsdust.evaluate.tracking).
    """
    from marsdust.evaluate.tracking import format_scores, tracking_scores
    from marsdust.fileio import remove_stale_temp_files, write_table_atomic, write_text_atomic
    from marsdust.track import members_table, track

    members_path = members_path or _sibling(output, f"_members{output.suffix or '.csv'}")
    scores_path = scores_path or _sibling(output, "_scores.json")
    _check_track_command(output, members_path, scores_path, max_gap_sols, max_ls_gap_deg, min_link_km, size_factor,
                         min_sequence_sols, min_iou, max_center_km)
    instances = _read(input_path, "INPUT")
    try:
        tracked = track(instances.drop(columns=[c for c in ("member_id", "sequence_id") if c in instances.columns]),
                        max_gap_sols=max_gap_sols, max_ls_gap_deg=max_ls_gap_deg, min_link_km=min_link_km,
                        size_factor=size_factor, min_sequence_sols=min_sequence_sols)
    except ValueError as exc:
        fail(f"{input_path}: {exc}")
    members = members_table(tracked)
    for path in (output, members_path, scores_path):  # what a run killed while writing them left
        if path.parent.is_dir():
            remove_stale_temp_files(path.parent, path.name)
    _write(write_table_atomic, tracked, output)
    _write(write_table_atomic, members, members_path)
    n_sequences = tracked["sequence_id"].replace("", None).nunique() if len(tracked) else 0
    typer.echo(f"{len(tracked)} instances -> {len(members)} members, {n_sequences} sequences -> {output}, "
               f"{members_path}")
    if truth is None:
        return
    catalog = _truth_for(tracked, truth, maps_path)
    scores = tracking_scores(tracked, catalog, min_iou=min_iou, max_center_km=max_center_km)
    scores["parameters"] = {"max_gap_sols": max_gap_sols, "max_ls_gap_deg": max_ls_gap_deg,
                            "min_link_km": min_link_km, "size_factor": size_factor,
                            "min_sequence_sols": min_sequence_sols, "input": str(input_path), "truth": str(truth)}
    _write(write_text_atomic, scores_path, json.dumps(scores, indent=2) + "\n")
    typer.echo(format_scores(scores))
    typer.echo(f"scores -> {scores_path}")


@app.command("climatology")
def climatology_command(
    input_path: Path = typer.Argument(..., metavar="INPUT", help=INPUT_HELP, show_default=False),
    out_dir: Path = typer.Option(Path("climatology"), "-o", "--output",
                                 help="Folder for the figures (PNG) and tables (CSV)."),
    out_alias: Optional[Path] = typer.Option(None, "--out", hidden=True, help="Former name of --output."),
    truth: Optional[Path] = typer.Option(
        None, "--truth", help="A catalog to count INPUT's instances against per Ls bin (detected versus catalogued)."),
    maps_path: Optional[Path] = typer.Option(None, "--maps", help=MAPS_HELP),
    ls_bin_deg: float = typer.Option(15.0, "--ls-bin-deg", min=1.0, max=180.0, help="Ls bin width (degrees)."),
    label: str = typer.Option("", "--label", help="Prefix of the figure titles (e.g. 'MDAD' or 'detections')."),
) -> None:
    """The standard catalog figures, each a PNG with the CSV it is drawn from.

    Storm instances by Ls and latitude per Mars year, total storm area per sol, member lifetimes and areas, sequence paths; with --truth, detected versus catalogued instances per Ls bin. Instances without member ids are tracked first.
    """
    from marsdust.climatology import write_climatology

    out_dir = out_alias or out_dir
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"-o {out_dir}: is a file; give a folder for the figures and tables")
    instances = _read(input_path, "INPUT")
    catalog = _truth_for(instances, truth, maps_path) if truth is not None else None
    try:
        written = write_climatology(instances, out_dir, truth=catalog, ls_bin_deg=ls_bin_deg, label=label)
    except ValueError as exc:
        fail(f"{input_path}: {exc}")
    except OSError as exc:
        fail(f"{exc.filename or out_dir}: cannot write ({exc.strerror or exc})")
    typer.echo(f"{len(written)} figures ({', '.join(written)}) with their tables -> {out_dir}")
