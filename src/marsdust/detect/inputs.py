"""The maps of a run: files, globs, archive folders / tars and index tables → one table
``map_id, mars_year, ls, path`` (:func:`resolve_maps`); with ``--history``, the maps its
reference backgrounds may be built from (:func:`history_maps`)."""

from __future__ import annotations

import glob as globlib
import logging
import os
from pathlib import Path
from typing import Iterable

import pandas as pd

from marsdust.mdgm import index_archive, parse_list_ls, read_list_ls_file
from marsdust.naming import make_map_id, parse_map_name, printable

log = logging.getLogger(__name__)


def map_id_from_stem(stem: str) -> str:
    """The map id of a file stem (``<subphase>_<sol>``, :func:`marsdust.naming.make_map_id`), else the stem itself."""
    try:
        return make_map_id(*parse_map_name(stem))
    except ValueError:
        return stem


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _single_map_rows(paths: Iterable[str]) -> list[dict]:
    """Rows for loose map files; Mars year and Ls from a ``list_ls.txt`` beside them when there is one."""
    listed: dict[str, dict[str, tuple[int, float]]] = {}
    rows = []
    for path in paths:
        if printable(path) != path:
            log.warning("%s: left out: its file name is not UTF-8 (no table or product could name it); rename it "
                        "to process the map", printable(path))
            continue
        path = str(Path(path).resolve())
        folder = str(Path(path).parent)
        if folder not in listed:
            entries: dict[str, tuple[int, float]] = {}
            list_file = Path(folder) / "list_ls.txt"
            if list_file.is_file():
                parsed, _ = parse_list_ls(read_list_ls_file(list_file), str(list_file))
                entries = {stem.lower(): (year, ls) for stem, year, ls in parsed}
            listed[folder] = entries
        stem = Path(path).name.rsplit(".", 1)[0]
        year, ls = listed[folder].get(stem.lower(), (0, float("nan")))
        rows.append({"map_id": map_id_from_stem(stem), "mars_year": int(year), "ls": float(ls), "path": path})
    return rows


def resolve_maps(maps) -> pd.DataFrame:
    """The maps of a run as a table ``map_id, mars_year, ls, path`` (sorted in time, unique ids).

    Parameters
    ----------
    maps : path, glob pattern, or list of them
        A map file; a glob (``"ARCHIVE/R18/*.png"``); an archive folder, subphase folder or tar, or a
        saved index CSV/Parquet (:func:`marsdust.mdgm.index_archive`); a flat folder of maps; or a
        list mixing these. Loose maps take Mars year and Ls from a ``list_ls.txt`` beside them, or
        year 0 and Ls NaN (then tracking is skipped). A map whose file name is not UTF-8 is left
        out with a warning naming it (an archive's: a problem of its index).

    Raises
    ------
    FileNotFoundError
        A path or pattern that matches nothing.
    ValueError
        Two different files with the same map id.
    """
    items = [maps] if isinstance(maps, (str, os.PathLike)) else list(maps)
    frames = []
    for item in items:
        text = os.fspath(item)
        if _is_glob(text) and not Path(text).exists():
            found = sorted(globlib.glob(text, recursive=True))
            if not found:
                raise FileNotFoundError(f"{text}: no map file matches this pattern")
            frames.append(pd.DataFrame(_single_map_rows(found)))
            continue
        path = Path(text)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such map, archive or index")
        lower = path.name.lower()
        if path.is_file() and lower.endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff")):
            frames.append(pd.DataFrame(_single_map_rows([text])))
            continue
        index = index_archive(path)
        if len(index) == 0 and path.is_dir():
            loose = sorted(str(p) for p in path.iterdir()
                           if p.is_file() and p.name.lower().endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff")))
            if loose:
                frames.append(pd.DataFrame(_single_map_rows(loose)))
                continue
        frames.append(index[["map_id", "mars_year", "ls", "path"]])
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["map_id", "mars_year", "ls", "path"])
    table = table.drop_duplicates(["map_id", "path"])
    clash = table["map_id"].duplicated(keep=False)
    if clash.any():
        first = table.loc[clash].iloc[:2]
        raise ValueError(f"map id {first['map_id'].iloc[0]!r} names two files: {list(first['path'])}")
    table = table.astype({"mars_year": "int64", "ls": "float64"})
    return table.sort_values(["mars_year", "ls", "map_id"], kind="stable").reset_index(drop=True)


def history_maps(rows: list[dict], history=None) -> list[dict]:
    """The maps a reference background may be built from: those of ``history`` and ``rows``, once each.

    Parameters
    ----------
    rows : list of dict
        The run's maps (:func:`resolve_maps` records); they win over a ``history`` map of the same id.
    history : path, glob or list, optional
        More maps, as :func:`resolve_maps` takes them (e.g. the whole archive when ``rows`` are its
        test sols). None: ``rows`` alone.

    Returns
    -------
    list of dict
        ``map_id, mars_year, ls, path`` records (:class:`marsdust.history.MapHistory` orders them in time).
    """
    if history is None:
        return rows
    table = pd.concat([resolve_maps(history), pd.DataFrame(rows)], ignore_index=True)
    return table.drop_duplicates("map_id", keep="last").to_dict("records")
