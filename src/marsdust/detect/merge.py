"""The final products rebuilt from the parts: ``detections.csv`` / ``.geojson``, the mask cubes, ``maps.csv``.

The dust masks are written as MDAD v1.1 is (:data:`marsdust.detect.settings.MASK_GRIDS`): by default
one cube per Mars year on MDAD's 0.1° grid, ``OUT/mdad/MY{yy}/MDADMY{yy}.nc``, with its master CSV
``MDAD_MY{yy}_master.csv`` beside it (:func:`marsdust.mdad_format.cube_path`,
:func:`~marsdust.mdad_format.master_csv_path`),
so ``marsdust catalog OUT/mdad`` reads them as it reads MDAD; and (``mask_grid="both"``, the default, or
``"working"`` alone) the single ``OUT/masks.nc`` + ``OUT/masks_master.csv`` on the detector's working grid
that the command-line contract names (all years in one file, a few kB per map).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from marsdust.detect.parts import CLOUD_CHUNKS, NO_HISTORY, PARTS_DIR, part_path, read_part
from marsdust.detect.results import DetectSummary
from marsdust.fileio import write_table
from marsdust.formats.geojson import write_geojson
from marsdust.formats.mdad_cube import MDAD_RES_DEG, chunk_grid, merge_mask_chunks, write_master_csv
from marsdust.grid import MapGrid
from marsdust.mdad_format import MAX_STORM_LABEL, cube_path, format_member_id, master_csv_path, member_cube_value
from marsdust.naming import parse_map_name
from marsdust.outlines import detections_frame

log = logging.getLogger(__name__)


CLOUD_CUBE = "cloud_masks.nc"
"""The water-ice cloud detections' cube of a two-class detector (the MDAD v1.1 layout on the working grid, all
years, per-map numbers)."""

MDAD_DIR = "mdad"
"""The folder of the per-Mars-year MDAD cubes and master CSVs (``OUT/mdad/MY{yy}/MDADMY{yy}.nc``)."""

MAPS_COLUMNS = ["map_id", "mars_year", "ls", "valid_fraction", "n_detections", "seconds", "status", "error",
                "history", "n_beyond_latitudes"]
"""Columns of ``maps.csv`` (``history``: :func:`marsdust.detect.parts.history_cell`, empty in parts written
before it existed)."""


def merge_parts(out_dir: str | os.PathLike, rows: Sequence[dict], *, track: bool = True, table_format: str = "csv",
                progress: bool = True, mask_grid: str = "both") -> DetectSummary:
    """Build ``detections.csv`` / ``.geojson``, the mask cubes and ``maps.csv`` from the parts of ``rows``, atomically.

    Only dust detections are tracked and go to the mask cubes (which ones:
    :data:`marsdust.detect.settings.MASK_GRIDS`; ``mask_grid="mdad"`` the per-year 0.1° cubes under
    :data:`MDAD_DIR`, ``"working"`` ``masks.nc`` / ``masks_master.csv``); the water-ice clouds of a
    two-class detector follow the dust rows of ``detections.csv`` (without member or
    sequence) and have their own cube, :data:`CLOUD_CUBE`.

    Raises
    ------
    ValueError
        A map of ``rows`` has no part (the run is incomplete).
    """
    from marsdust.track import track as track_detections

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    missing = [row["map_id"] for row in rows if not part_path(out_dir, row["map_id"]).is_file()]
    if missing:
        raise ValueError(f"{out_dir}: {len(missing)} map(s) have no part yet (e.g. {missing[:3]}); run detect again")
    parts = [read_part(part_path(out_dir, row["map_id"])) for row in rows]
    maps_table = pd.DataFrame([p["map"] for p in parts], columns=MAPS_COLUMNS)
    maps_table["history"] = maps_table["history"].astype(object).fillna("")
    maps_table["n_beyond_latitudes"] = maps_table["n_beyond_latitudes"].fillna(0).astype("int64")  # parts of before
    records = [rec for p in parts for rec in _numbered_by_class(p["detections"])]
    detections = detections_frame(records)
    order_in_map = detections.pop("_order") if "_order" in detections.columns else pd.Series(dtype="int64")
    is_cloud = (detections["class"] == "cloud").to_numpy()
    clouds = detections[is_cloud]
    detections, order_in_map = detections[~is_cloud], order_in_map[~is_cloud]
    tracked = False
    if track and len(detections):
        if detections["ls"].isna().any():
            log.warning("%s: some maps have no Ls (no list_ls.txt / index); tracking skipped", out_dir)
        else:
            detections = track_detections(detections)
            tracked = True
    for column in ("member_id", "sequence_id"):  # the documented columns, also with 0 detections or no tracking
        if column not in detections.columns:
            detections[column] = pd.Series("", index=detections.index, dtype="object")
    table = pd.concat([detections, clouds.assign(member_id="", sequence_id="")], ignore_index=True) if len(clouds) \
        else detections
    paths: dict[str, Path] = {}
    paths["detections"] = write_table(table, out_dir / "detections.csv")
    if table_format == "parquet":
        paths["parquet"] = write_table(table, out_dir / "detections.parquet")
    paths["geojson"] = write_geojson(table, out_dir / "detections.geojson")
    if any(p.get("cloud_mask_chunk") for p in parts):
        paths["cloud_masks"] = _merge_masks(out_dir, parts, {}, progress, chunk_key="cloud_mask_chunk")
    in_cube = detections["sol"].notna().to_numpy()  # a map id naming no sol has no cube step, so no master row
    master = detections[in_cube].copy()
    if not tracked:  # label k+1 of a map is its (k+1)-th detection: name it like an MDAD member
        master["member_id"] = [_detection_member_id(m, int(k)) for m, k in zip(master["map_id"], order_in_map[in_cube])]
    luts = _label_tables(detections, order_in_map, tracked)
    if mask_grid in ("working", "both"):
        masks = _merge_masks(out_dir, parts, luts, progress)
        if masks is not None:
            paths["masks"] = masks
            paths["masks_master"] = write_master_csv(master, out_dir / "masks_master.csv")
    if mask_grid in ("mdad", "both"):
        paths.update(_merge_mdad_years(out_dir, parts, luts, master, progress))
    paths["maps"] = write_table(maps_table, out_dir / "maps.csv")
    n_errors = int((maps_table["status"] == "error").sum())
    if n_errors:
        bad = maps_table.loc[maps_table["status"] == "error", "map_id"].tolist()
        log.warning("%s: %d map(s) could not be read and were skipped: %s (see maps.csv)", out_dir, n_errors, bad[:10])
    seconds = time.perf_counter() - t0
    return DetectSummary(out_dir, len(rows), 0, n_errors, len(table), seconds, 0.0, paths,
                         n_without_history=int((maps_table["history"] == NO_HISTORY).sum()),
                         n_beyond_latitudes=int(maps_table["n_beyond_latitudes"].sum()))


def _numbered_by_class(records: list[dict]) -> list[dict]:
    """One map's records with ``_order``: the record's number among the map's records of its class
    (its label - 1 in that class's mask chunk); records of parts written before classes are dust."""
    counts: dict[str, int] = {}
    out = []
    for record in records:
        name = record.get("class", "dust")
        out.append(dict(record, _order=counts.get(name, 0)))
        out[-1]["class"] = name
        counts[name] = counts.get(name, 0) + 1
    return out


def _detection_member_id(map_id: str, k: int) -> str:
    try:
        subphase, _ = parse_map_name(map_id)
    except ValueError:
        return ""
    return format_member_id(subphase, k + 1)


def _sorted_chunks(out_dir: Path, parts: list[dict], chunk_key: str) -> list[tuple[dict, Path]]:
    """The maps' mask chunks ``(map row, chunk path)`` in time order (Mars year, Ls, map id)."""
    folder = "masks" if chunk_key == "mask_chunk" else CLOUD_CHUNKS
    chunks = [(p["map"], out_dir / PARTS_DIR / folder / p[chunk_key]) for p in parts if p.get(chunk_key)]
    return sorted(chunks, key=lambda chunk: (chunk[0]["mars_year"], chunk[0]["ls"], chunk[0]["map_id"]))


def _chunks_grid(out_dir: Path, chunks: list[tuple[dict, Path]], name: str) -> MapGrid | None:
    """The working grid of the chunks, or None (logged) where there are none or it fits no latitude band."""
    if not chunks:
        log.warning("%s: no map gave a mask-cube step; %s not written", out_dir, name)
        return None
    grid = chunk_grid(chunks[0][1])
    if grid is None:
        log.warning("%s: the grid of %s fits no latitude band; %s not written", out_dir, chunks[0][1].name, name)
    return grid


def _merge_masks(out_dir: Path, parts: list[dict], luts: dict[str, np.ndarray], progress: bool,
                 chunk_key: str = "mask_chunk") -> Path | None:
    """Concatenate the per-map mask chunks into ``masks.nc`` on the working grid (time-ordered), relabelled by ``luts``.

    ``chunk_key="cloud_mask_chunk"`` merges the cloud chunks into :data:`CLOUD_CUBE` instead.
    """
    name = "masks.nc" if chunk_key == "mask_chunk" else CLOUD_CUBE
    chunks = _sorted_chunks(out_dir, parts, chunk_key)
    grid = _chunks_grid(out_dir, chunks, name)
    if grid is None:
        return None
    title = "marsdust dust storm masks" if chunk_key == "mask_chunk" else "marsdust water-ice cloud masks"
    return merge_mask_chunks([(chunk, luts.get(info["map_id"])) for info, chunk in chunks], out_dir / name, grid,
                             title=title, progress=progress)


def _merge_mdad_years(out_dir: Path, parts: list[dict], luts: dict[str, np.ndarray], master: pd.DataFrame,
                      progress: bool) -> dict[str, Path]:
    """One MDAD v1.1 cube per Mars year on MDAD's 0.1° grid, each with its master CSV beside it.

    Returns the paths written, keyed ``mdad_MY{yy}`` and ``mdad_master_MY{yy}``.
    """
    chunks = _sorted_chunks(out_dir, parts, "mask_chunk")
    grid = _chunks_grid(out_dir, chunks, f"{MDAD_DIR}/")
    if grid is None:
        return {}
    mdad_grid = MapGrid.marci(MDAD_RES_DEG)
    paths: dict[str, Path] = {}
    for year in sorted({int(info["mars_year"]) for info, _ in chunks}):
        mine = [(chunk, luts.get(info["map_id"])) for info, chunk in chunks if int(info["mars_year"]) == year]
        paths[f"mdad_MY{year:02d}"] = merge_mask_chunks(
            mine, cube_path(out_dir / MDAD_DIR, year), grid, progress=progress, output_grid=mdad_grid)
        rows = master[master["mars_year"].astype(int) == year]
        paths[f"mdad_master_MY{year:02d}"] = write_master_csv(rows, master_csv_path(out_dir / MDAD_DIR, year))
    return paths


def _label_tables(detections: pd.DataFrame, order_in_map: pd.Series, tracked: bool) -> dict[str, np.ndarray]:
    """Per map: a 256-entry table from detection number (chunk label) to MDAD member number."""
    if not tracked or len(detections) == 0:
        return {}
    try:
        values = [member_cube_value(m) for m in detections["member_id"]]
    except ValueError as err:
        log.warning("the mask cubes keep per-map detection numbers: a member number does not fit the cube (%s)", err)
        return {}
    luts: dict[str, np.ndarray] = {}
    for map_id, k, value in zip(detections["map_id"], order_in_map, values):
        lut = luts.get(map_id)
        if lut is None:
            lut = luts[map_id] = np.arange(256, dtype=np.uint8)
        if int(k) + 1 <= MAX_STORM_LABEL:
            lut[int(k) + 1] = value
    return luts
