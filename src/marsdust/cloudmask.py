"""Water-ice cloud masks beside an MDGM archive: layout, synthetic mask values, cloud instances.

Water-ice clouds (aphelion cloud belt, orographic clouds over the volcanoes, polar hoods) are bright,
lobate and seasonal like dust storms. A detector learns to tell them apart when it is trained on a
second class, ``cloud`` (label :data:`CLOUD_LABEL` = 2, dust = 1), whose instances come from cloud
masks in the MARCI cloud-mask format (Wang & Gonzalez Abad: variable ``cloudmask`` with -999 where
there is no observation, 0 clear, > 0 cloudy, 1-D ``longitude`` / ``latitude``). The files are
read and written by :mod:`marsdust.formats.cloud_mask`.

Layout
------
One file per map, in a folder tree that mirrors the archive's subphase folders::

    DATA/archive/R18/r18_040.png        the map
    DATA/cloudmask/R18/r18_040.nc       its cloud mask (the map id as file stem)

:func:`cloud_mask_root` gives ``DATA/cloudmask`` for an archive ``DATA/archive`` (any other folder
can be given instead) and :func:`find_cloud_mask` the file of one map, or None where the map has no
mask (e.g. the MOC years, which have no MARCI masks). The tree lies outside the archive, so the
archive indexer never sees it.

The synthetic Mars (:mod:`marsdust.synth`) writes the mask of the clouds it drew
(:func:`cloud_mask_values`): a pixel is cloudy where the drawn cloud opacity exceeds
:data:`CLOUD_OPACITY_THRESHOLD`; the mask is written at :data:`CLOUD_MASK_RES_DEG` (coarser than
the maps, as real MARCI masks are) by majority over the valid pixels of each block, -999 where
fewer than half of a block's pixels were observed.

A map's mask is read onto its working grid by
:func:`marsdust.formats.cloud_mask.read_cloud_mask_on` (:meth:`CloudMasks.cloudy`), which checks
that it covers the map and resamples it.

Cloud instances (:func:`cloud_instances`) are the connected cloudy regions (4-connected, connected
across 180°) of at least :data:`MIN_CLOUD_AREA_KM2`, as boxes and masks in the conventions of
:mod:`marsdust.labels` (a box across 180° is kept whole). Optionally (``max_width_deg``, the
run setting ``cloud_max_width_deg``) regions wider than a limit in longitude are no instance: a
cloud belt or polar hood around the planet has no box a detector can regress to; its pixels stay
cloudy for the dust-false-alarm test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from marsdust.formats.cloud_mask import INVALID, block_majority, read_cloud_mask_on
from marsdust.grid import MapGrid
from marsdust.mdgm import working_grid
from marsdust.outlines import mask_centroid_lonlat

CLOUD_LABEL = 2
"""Class index of a water-ice cloud (dust storms are 1, torchvision's background 0)."""
CLASSES = ("dust", "cloud")
"""Class names by class index - 1: what ``--classes`` accepts, in the order their labels run."""
CLOUD_OPACITY_THRESHOLD = 0.2
"""Drawn cloud opacity (0–1) above which a synthetic pixel is cloudy (its blue rises by ≥ 0.044 reflectance)."""
CLOUD_MASK_RES_DEG = 0.8
"""Resolution at which the synthetic Mars writes cloud masks (degrees per cell; maps coarser than this keep theirs)."""
MIN_CLOUD_AREA_KM2 = 1.0e5
"""Smallest cloud instance trained on, km² (about the smallest catalogued dust storm)."""
MAX_CLOUD_WIDTH_DEG = 90.0
"""Widest cloud instance a two-class run trains on by default, degrees of longitude (``cloud_max_width_deg``):
wider regions are belts and hoods around the planet, which no anchor box regresses to (measured in
docs/benchmark-notes.md)."""
CLOUD_MASK_DIR = "cloudmask"
"""Name of the cloud-mask tree beside an archive (``DATA/cloudmask`` for ``DATA/archive``)."""


def parse_classes(classes) -> tuple[str, ...]:
    """Class names of a run from ``"dust,cloud"`` or a list; ``dust`` must come first.

    Raises
    ------
    ValueError
        An unknown or repeated name, or a list that does not start with ``dust``.
    """
    names = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else [str(c).strip() for c in classes]
    names = [n for n in names if n]
    if names != list(CLASSES[: len(names)]) or not names:
        raise ValueError(f"classes must be 'dust' or 'dust,cloud' (in that order), got {classes!r}")
    return tuple(names)


# --- layout -----------------------------------------------------------------------------------------
def cloud_mask_root(archive) -> Path:
    """``DATA/cloudmask`` for an archive folder ``DATA/archive`` (or a tar / manifest file in ``DATA``)."""
    archive = Path(archive)
    return archive.parent / CLOUD_MASK_DIR


def cloud_mask_path(root, subphase: str, map_id: str) -> Path:
    """Where the cloud mask of one map lives: ``ROOT/<SUBPHASE>/<map_id>.nc``."""
    return Path(root) / str(subphase).upper() / f"{map_id}.nc"


def find_cloud_mask(root, row) -> Path | None:
    """The cloud-mask file of an archive-index row (``subphase``, ``map_id``), or None if it has none."""
    if root is None:
        return None
    path = cloud_mask_path(root, row["subphase"], row["map_id"])
    return path if path.is_file() else None


# --- synthetic masks --------------------------------------------------------------------------------
def cloud_mask_values(opacity: np.ndarray, valid: np.ndarray, factor: int,
                      threshold: float = CLOUD_OPACITY_THRESHOLD) -> np.ndarray:
    """MARCI-style ``cloudmask`` values of a drawn cloud opacity, ``factor`` times coarser.

    A pixel is cloudy where it is valid and its opacity is above ``threshold``; blocks follow
    :func:`marsdust.formats.cloud_mask.block_majority`: cloudy (1) where at least half of a
    block's valid pixels are cloudy, clear (0) otherwise, and :data:`~marsdust.formats.cloud_mask.INVALID`
    where fewer than half of its pixels are valid. ``factor`` must divide both sides.

    Returns
    -------
    int16 ndarray (H / factor, W / factor), north first.
    """
    cloudy, block_valid = block_majority((np.asarray(opacity) > threshold) & valid, valid, factor)
    return np.where(block_valid, cloudy, INVALID).astype(np.int16)


# --- cloud instances ------------------------------------------------------------------------------
def cloud_components(cloudy: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected cloudy regions, 4-connected and connected across 180° (first and last columns).

    Returns
    -------
    labels : int32 ndarray (H, W)
        0 clear, 1..n one region each.
    n : int
    """
    from scipy.ndimage import label
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pieces, n_pieces = label(np.asarray(cloudy, bool))
    if n_pieces == 0:
        return pieces.astype(np.int32), 0
    west, east = pieces[:, 0], pieces[:, -1]
    across = (west > 0) & (east > 0)
    links = coo_matrix((np.ones(int(across.sum())), (west[across], east[across])), shape=(n_pieces + 1, n_pieces + 1))
    _, component = connected_components(links, directed=False)
    # component numbers of the pieces 1..n, renumbered 1..m in order of first appearance
    _, first = np.unique(component[1:], return_inverse=True)
    lookup = np.concatenate([[0], first + 1]).astype(np.int32)
    return lookup[pieces], int(first.max()) + 1


def cloud_instances(cloudy: np.ndarray, grid: MapGrid, min_area_km2: float = MIN_CLOUD_AREA_KM2,
                    max_width_deg: float | None = None) -> dict:
    """Detection targets of a map's clouds: one per connected cloudy region of at least ``min_area_km2``
    (and, with ``max_width_deg``, at most that wide in longitude).

    Returns
    -------
    dict of ndarray
        The keys of :func:`marsdust.labels.map_targets`: ``boxes`` (n, 4) float32 xyxy pixels (as
        :func:`marsdust.labels.mask_bounding_box` gives outlines theirs: a box across 180° keeps
        ``x1 > W``; one as wide as the map is ``[0, W]``), ``labels`` all
        :data:`CLOUD_LABEL`, ``masks`` (n, H, W) uint8, ``area_km2``, centroid ``lon`` / ``lat``,
        ``confidence`` 0, ``member_id`` "", ``has_outline`` True.
    """
    from marsdust.labels import empty_target, mask_bounding_box

    components, n = cloud_components(cloudy)
    row_area = grid.row_pixel_area_km2()
    instances = []
    for k in range(1, n + 1):
        mask = components == k
        area = float(mask.sum(axis=1) @ row_area)
        if area < min_area_km2:
            continue
        x0, y0, x1, y1 = mask_bounding_box(mask)
        if max_width_deg is not None and (x1 - x0) * grid.res_deg > max_width_deg + 1e-9:
            continue
        if x1 - x0 >= grid.width:
            x0, x1 = 0, grid.width
        lon, lat = mask_centroid_lonlat(mask, grid)
        instances.append((np.array([x0, y0, x1, y1], np.float32), mask, area, lon, lat))
    if not instances:
        return empty_target(grid)
    count = len(instances)
    return {
        "boxes": np.stack([i[0] for i in instances]),
        "labels": np.full(count, CLOUD_LABEL, dtype=np.int64),
        "confidence": np.zeros(count, dtype=np.int64),
        "area_km2": np.array([i[2] for i in instances], dtype=np.float64),
        "lon": np.array([i[3] for i in instances], dtype=np.float64),
        "lat": np.array([i[4] for i in instances], dtype=np.float64),
        "member_id": np.full(count, "", dtype=object),
        "has_outline": np.ones(count, dtype=bool),
        "masks": np.stack([i[1] for i in instances]).astype(np.uint8),
    }


def with_clouds(target: dict, clouds: dict) -> dict:
    """A map's dust target followed by its cloud instances (every per-instance array concatenated)."""
    out = dict(target)
    for key, value in clouds.items():
        out[key] = np.concatenate([target[key], value]) if key in target else value
    return out


class CloudMasks:
    """The cloud masks of an archive's maps on the working grid (one :meth:`target` per map).

    Parameters
    ----------
    root : path or None
        The cloud-mask tree (:func:`cloud_mask_root`); None: no map has a mask.
    min_area_km2 : float
        Smallest cloud instance.
    max_width_deg : float, optional
        Widest cloud instance in longitude (None: no limit).
    """

    def __init__(self, root, min_area_km2: float = MIN_CLOUD_AREA_KM2, max_width_deg: float | None = None):
        self.root = None if root is None else Path(root)
        self.min_area_km2 = float(min_area_km2)
        self.max_width_deg = None if max_width_deg is None else float(max_width_deg)

    def path_of(self, row) -> Path | None:
        """The mask file of an index row, or None."""
        return find_cloud_mask(self.root, row)

    def count(self, index_df: pd.DataFrame) -> int:
        """How many maps of an index table have a cloud mask."""
        return sum(self.path_of(row) is not None for _, row in index_df.iterrows())

    def check(self, index_df: pd.DataFrame, res_deg: float) -> int:
        """Read the mask of every map of an index table onto the map's working grid, as training will.

        Run before training starts, so that a bad mask is found before the first step rather than
        mid-run in a data-loader worker.

        Parameters
        ----------
        index_df : DataFrame
            Archive index rows (``map_id``, ``subphase``, ``path``).
        res_deg : float
            The working resolution, degrees per pixel (each map's grid from its header,
            :func:`marsdust.mdgm.working_grid`).

        Returns
        -------
        int
            How many of the maps have a mask.

        Raises
        ------
        marsdust.mdad_format.CatalogError, CloudMaskGridError
            The first mask (in the table's order) that is not readable, lacks ``cloudmask``,
            declares more than a mask holds, holds values out of range or does not fit its map,
            naming it.
        marsdust.mdgm.MapReadError
            The header of a map with a mask cannot be read.
        """
        found = 0
        for _, row in index_df.iterrows():
            path = self.path_of(row)
            if path is not None:
                read_cloud_mask_on(path, working_grid(row["path"], res_deg), row["path"])
                found += 1
        return found

    def cloudy(self, row, grid: MapGrid) -> np.ndarray | None:
        """The map's cloudy pixels on ``grid`` (False where the mask has no observation), or None without a mask."""
        path = self.path_of(row)
        if path is None:
            return None
        cloudy, _ = read_cloud_mask_on(path, grid, row.get("path") if hasattr(row, "get") else None)
        return cloudy

    def instances(self, row, grid: MapGrid) -> dict | None:
        """The map's cloud instances (:func:`cloud_instances`), or None without a mask."""
        cloudy = self.cloudy(row, grid)
        return None if cloudy is None else self.instances_in(cloudy, grid)

    def instances_in(self, cloudy: np.ndarray, grid: MapGrid) -> dict:
        """The cloud instances of cloudy pixels already read (:meth:`cloudy`), by these masks' size rules."""
        return cloud_instances(cloudy, grid, self.min_area_km2, self.max_width_deg)

