"""Archives of bright discs on a plain ground: storms whose place, outline and area are known exactly.

The synthetic Mars (:func:`marsdust.synth.synthesize`) draws realistic weather; for checks of the
detect stage that need an analytic answer instead (wrap across 180°, areas, resume after a kill),
:func:`write_disc_archive` draws each storm as a spherical cap of one bright colour on a uniform
background, in the MDGM layout (``ROOT/R18/<map_id>.png`` + ``list_ls.txt``).

>>> from marsdust.grid import MapGrid
>>> archive = write_disc_archive("archive", {"r18_001": (101.0, [(179.0, 20.0, 15.0)])}, grid=MapGrid.moc(0.8))
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from marsdust.grid import MapGrid
from marsdust.synth.writer import write_list_ls, write_png

BACKGROUND_RGB = (70, 60, 50)
"""The ground: dull and uniform."""

DISC_RGB = (255, 230, 200)
"""A storm: bright, red-dominant (what a detector of dust looks for)."""

DISC_MARS_YEAR = 25
"""The Mars year every map of :func:`write_disc_archive` is listed under."""


def cap_mask(grid: MapGrid, lon0: float, lat0: float, radius_deg: float) -> np.ndarray:
    """Pixels of ``grid`` whose centre lies within ``radius_deg`` of arc of (``lon0``, ``lat0``) on the sphere.

    Returns
    -------
    numpy.ndarray of bool, shape ``grid.shape``
    """
    lon = np.radians(grid.lon_centers_deg)[None, :]
    lat = np.radians(grid.lat_centers_deg)[:, None]
    cos_d = np.sin(lat) * math.sin(math.radians(lat0)) + np.cos(lat) * math.cos(math.radians(lat0)) * np.cos(
        lon - math.radians(lon0))
    return cos_d >= math.cos(math.radians(radius_deg))


def draw_disc_map(path: str | os.PathLike, discs=(), missing_cols: slice | None = None,
                  grid: MapGrid = MapGrid.moc(0.4)) -> Path:
    """Write one map: ``discs`` of :data:`DISC_RGB` on :data:`BACKGROUND_RGB`.

    Parameters
    ----------
    path : path
        The PNG to write (its folder is made).
    discs : iterable of (lon_deg, lat_deg, radius_deg)
        Storm centres (east-positive longitude) and angular radii.
    missing_cols : slice, optional
        Pixel columns set to black (missing data, as an MDGM's gaps).
    grid : MapGrid
        The map's grid (default: the MOC layout at 0.4°, 300 × 900 px).
    """
    rgb = np.empty(grid.shape + (3,), dtype=np.uint8)
    rgb[:] = BACKGROUND_RGB
    for lon0, lat0, radius in discs:
        rgb[cap_mask(grid, lon0, lat0, radius)] = DISC_RGB
    if missing_cols is not None:
        rgb[:, missing_cols] = 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(rgb, path)
    return path


def write_disc_archive(root: str | os.PathLike, maps: dict[str, tuple], grid: MapGrid = MapGrid.moc(0.4)) -> Path:
    """Write an MDGM archive of disc maps: ``ROOT/R18/<map_id>.png`` and ``ROOT/R18/list_ls.txt``.

    Parameters
    ----------
    root : path
        The archive folder.
    maps : dict
        ``{map_id: (ls_deg, discs)}`` with ``discs`` as in :func:`draw_disc_map`; every map is listed
        under Mars year :data:`DISC_MARS_YEAR`.
    grid : MapGrid

    Returns
    -------
    Path
        ``root``.
    """
    root = Path(root)
    folder = root / "R18"
    for map_id, (_, discs) in maps.items():
        draw_disc_map(folder / f"{map_id}.png", discs, grid=grid)
    rows = pd.DataFrame({"map_id": list(maps), "mars_year": DISC_MARS_YEAR, "ls": [ls for ls, _ in maps.values()]})
    write_list_ls(rows, folder / "list_ls.txt")
    return root
