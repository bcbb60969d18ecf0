"""One map made ready for the model: resampled to the working grid, wrap-padded across 180°, cut into tiles."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from marsdust.detect.settings import DetectSettings
from marsdust.grid import MapGrid
from marsdust.mdgm import MapImage, MapReadError, downsample, read_map_resampled_with_grid
from marsdust.reference import stack_bands


def working_image(map_image_or_path: MapImage | str | os.PathLike, res_deg: float) -> tuple[MapImage, MapGrid]:
    """The map at the working resolution ``res_deg`` (block average) and the map's native grid.

    Raises
    ------
    MapReadError
        Unreadable file, or a native resolution that ``res_deg`` is not a whole multiple of.
    """
    if isinstance(map_image_or_path, MapImage):
        native = map_image_or_path.grid
        ratio = res_deg / native.res_deg
        factor = int(round(ratio))
        if factor < 1 or abs(ratio - factor) > 1e-6:
            raise MapReadError(
                f"{map_image_or_path.path or 'map'}: a {native.res_deg}° map cannot be block-averaged to the "
                f"model's {res_deg}° working resolution (need a whole multiple)"
            )
        return downsample(map_image_or_path, factor), native
    return read_map_resampled_with_grid(map_image_or_path, res_deg)


def pad_columns(width_px: int, pad_deg: float, res_deg: float) -> int:
    """Columns copied across 180° on each side: ``pad_deg`` rounded up so ``width + 2 pad`` is a multiple of 32."""
    if pad_deg <= 0:
        return 0
    pad = int(math.ceil(pad_deg / res_deg - 1e-9))
    padded = width_px + 2 * pad
    padded = int(math.ceil(padded / 32.0)) * 32
    pad = (padded - width_px) // 2
    return min(pad, width_px)


def wrap_pad(image_chw, pad_px: int):
    """Pad a ``(C, H, W)`` tensor across 180°: last ``pad_px`` columns in front, first ones behind."""
    import torch

    if pad_px == 0:
        return image_chw
    return torch.cat([image_chw[..., -pad_px:], image_chw, image_chw[..., :pad_px]], dim=-1)


@dataclass
class Tile:
    """A window of the padded image and the core it owns detections in.

    Attributes
    ----------
    y0, y1, x0, x1 : int
        Rows ``[y0, y1)`` and columns ``[x0, x1)`` of the padded image (working-grid pixels).
    core_y, core_x : (float, float)
        The core: detections whose box centre lies in ``core_y × core_x`` (padded-image pixels,
        infinite at the image's edges) belong to this tile.
    """

    y0: int
    y1: int
    x0: int
    x1: int
    core_y: tuple[float, float]
    core_x: tuple[float, float]


def _axis_tiles(length: int, max_len: int, overlap: int) -> list[tuple[int, int, float, float]]:
    if length <= max_len:
        return [(0, length, -math.inf, math.inf)]
    overlap = min(overlap, max_len // 2)
    step = max_len - overlap
    n = int(math.ceil((length - overlap) / step))
    starts = [min(i * step, length - max_len) for i in range(n)]
    out = []
    for i, start in enumerate(starts):
        stop = start + max_len
        lo = -math.inf if i == 0 else (start + starts[i - 1] + max_len) / 2.0
        hi = math.inf if i == n - 1 else (stop + starts[i + 1]) / 2.0
        out.append((start, stop, lo, hi))
    return out


def plan_tiles(height: int, width: int, max_tile_px: int, overlap_px: int) -> list[Tile]:
    """Overlapping tiles covering a ``height x width`` image, each at most ``max_tile_px`` a side.

    Cores (where a tile owns detection centres) partition the image: the boundary between two
    neighbours lies in the middle of their overlap.
    """
    tiles = []
    for y0, y1, cy0, cy1 in _axis_tiles(height, max_tile_px, overlap_px):
        for x0, x1, cx0, cx1 in _axis_tiles(width, max_tile_px, overlap_px):
            tiles.append(Tile(y0=y0, y1=y1, x0=x0, x1=x1, core_y=(cy0, cy1), core_x=(cx0, cx1)))
    return tiles


@dataclass
class PreparedMap:
    """One map on its way through the model: read, then (:func:`prepare_map`) cut into tensor tiles.

    Attributes
    ----------
    map_id, mars_year, ls
        The map's identity in the records (Ls in degrees).
    image : MapImage
        The map at the working resolution.
    native_grid : MapGrid
        The grid of the map's file (boxes are written in its pixels).
    pad_px : int
        Columns copied across 180° on each side (:func:`pad_columns`).
    tiles : list of Tile
        Windows of the padded image (:func:`plan_tiles`); empty while the map is only read.
    tensors : list of torch.Tensor
        The ``(C, h, w)`` input of each tile.
    seconds : float
        Time spent on the map so far (reading and preparing), seconds.
    has_history : bool or None
        For a detector with reference bands, whether the map's background had an earlier map in its
        window (:meth:`marsdust.history.MapHistory.had_history`); None for a detector without them.
    """

    map_id: str
    mars_year: int
    ls: float
    image: MapImage
    native_grid: MapGrid
    pad_px: int = 0
    tiles: list[Tile] = field(default_factory=list)
    tensors: list = field(default_factory=list)
    seconds: float = 0.0
    has_history: bool | None = None


def prepare_map(image: MapImage, native_grid: MapGrid, settings: DetectSettings, *, map_id: str, mars_year: int,
                ls: float, in_channels: int = 3, seconds: float = 0.0,
                extra_bands: np.ndarray | None = None) -> PreparedMap:
    """Tensor tiles of a working-resolution map (wrap-padded), ready for the model.

    ``extra_bands`` (``(H, W, k)`` on the working grid, e.g. a reference background,
    :mod:`marsdust.reference`) follow the map's R, G, B; the detector must expect ``3 + k`` bands.
    """
    import torch

    given = 3 if extra_bands is None else 3 + extra_bands.shape[-1]
    if in_channels != given:
        raise ValueError(f"map {map_id}: the detector expects {in_channels} input bands but gets {given} "
                         f"(the map's R, G, B{'' if extra_bands is None else ' and its reference bands'})")
    chw = torch.from_numpy(np.ascontiguousarray(stack_bands(image.rgb, extra_bands))).permute(2, 0, 1)
    height, width = image.grid.shape
    pad = pad_columns(width, settings.pad_deg, image.grid.res_deg)
    padded = wrap_pad(chw, pad)
    if pad == 0:
        padded = padded.contiguous()
    overlap = settings.tile_overlap_px if settings.tile_overlap_px is not None else max(pad, 32)
    tiles = plan_tiles(height, width + 2 * pad, settings.max_tile_px, overlap)
    tensors = [padded[:, t.y0:t.y1, t.x0:t.x1] for t in tiles]
    if len(tiles) > 1:
        tensors = [t.contiguous() for t in tensors]
    return PreparedMap(map_id=map_id, mars_year=int(mars_year), ls=float(ls), image=image, native_grid=native_grid,
                       pad_px=pad, tiles=tiles, tensors=tensors, seconds=seconds)
