"""Quick-look PNGs: a map, downscaled, with its storm outlines drawn on it (PIL; fast).

Only written (one per map with ``detect --quicklook``), for a person to look at.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from marsdust.fileio import atomic_output
from marsdust.grid import MapGrid


def _outline_rings(geometry):
    geoms = getattr(geometry, "geoms", [geometry])
    for polygon in geoms:
        if polygon.is_empty:
            continue
        yield np.asarray(polygon.exterior.coords)
        for interior in polygon.interiors:
            yield np.asarray(interior.coords)


def write_quicklook_png(path: str | os.PathLike, rgb: np.ndarray, outlines: Iterable, grid: MapGrid | None = None,
                        max_width_px: int = 1200, color: tuple[int, int, int] = (255, 255, 0),
                        line_width_px: int = 2, title: str | None = None) -> Path:
    """A small quick-look PNG of a map with storm outlines drawn on it (PIL; fast), atomically.

    Parameters
    ----------
    rgb : ndarray (H, W, 3)
        The map, float in [0, 1] or uint8.
    outlines : iterable of shapely geometries or WKT strings
        Outlines in lon/lat degrees (e.g. the ``polygon_wkt`` column).
    grid : MapGrid, optional
        The map's grid (default ``MapGrid.from_shape(H, W)``).
    max_width_px : int
        The image is downscaled to at most this width.
    title : str, optional
        Text drawn in the top-left corner (e.g. the map id).
    """
    import shapely
    from PIL import Image, ImageDraw

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{path}: quick-look image must be (H, W, 3), got {rgb.shape}")
    grid = grid or MapGrid.from_shape(rgb.shape[0], rgb.shape[1])
    if rgb.shape[:2] != grid.shape:
        raise ValueError(f"{path}: image shape {rgb.shape[:2]} does not match the grid's {grid.shape}")
    if np.issubdtype(rgb.dtype, np.floating):
        rgb = np.clip(np.nan_to_num(rgb) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    image = Image.fromarray(rgb.astype(np.uint8), "RGB")
    scale = min(1.0, max_width_px / grid.width)
    if scale < 1.0:
        image = image.resize((max(1, round(grid.width * scale)), max(1, round(grid.height * scale))), Image.BILINEAR)
    draw = ImageDraw.Draw(image)
    for outline in outlines:
        if outline is None or (isinstance(outline, float) and np.isnan(outline)):
            continue
        geometry = shapely.from_wkt(outline) if isinstance(outline, str) else outline
        for ring in _outline_rings(geometry):
            # no longitude wrapping here: a vertex at +180 must land on the eastern edge
            x = (ring[:, 0] + 180.0) / grid.res_deg * scale
            y = (grid.lat_north_deg - ring[:, 1]) / grid.res_deg * scale
            draw.line(list(zip(x.tolist(), y.tolist())), fill=tuple(color), width=line_width_px)
    if title:
        draw.text((4, 2), str(title), fill=tuple(color))
    path = Path(path)
    with atomic_output(path) as tmp:
        image.save(tmp, format="PNG")
    return path
