"""Figures of marsdust (matplotlib; imported lazily by the command line)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd


def _outline_lines(wkt: str):
    """Lon/lat vertex arrays of every ring of a WKT (Multi)Polygon."""
    from shapely import wkt as shapely_wkt

    geometry = shapely_wkt.loads(wkt)
    polygons = getattr(geometry, "geoms", [geometry])
    for polygon in polygons:
        yield np.asarray(polygon.exterior.coords)


def plot_maps_with_outlines(maps: pd.DataFrame, storms: pd.DataFrame, out_png, max_width_px: int = 1800,
                            dpi: int = 100) -> Path:
    """Draw maps stacked vertically with their catalog storm outlines and labels.

    Parameters
    ----------
    maps : DataFrame
        Rows with ``map_id``, ``path`` (a readable map file), ``mars_year``, ``ls``.
    storms : DataFrame
        Storm table (``map_id``, ``lon``, ``lat``, ``area_km2``, ``confidence``, optional
        ``polygon_wkt``); storms without an outline get a marker at their centroid.
    out_png : path
        Output PNG (written atomically).
    max_width_px : int
        Maps are block-averaged to at most this many pixels wide (keeps the file small).

    Returns
    -------
    Path of the written figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from marsdust.mdgm import read_map_array

    if len(maps) == 0:
        raise ValueError("plot_maps_with_outlines: no maps to draw")
    images = []
    for row in maps.itertuples():
        rgb = read_map_array(row.path)
        step = max(1, int(np.ceil(rgb.shape[1] / max_width_px)))
        images.append(rgb[::step, ::step])
    aspect = images[0].shape[0] / images[0].shape[1]
    width_in = 12.0
    fig, axes = plt.subplots(len(images), 1, figsize=(width_in, len(images) * (width_in * aspect + 0.45)),
                             squeeze=False)
    for ax, row, rgb in zip(axes[:, 0], maps.itertuples(), images):
        north = 60.0 if rgb.shape[0] * 3 == rgb.shape[1] else 90.0
        ax.imshow(rgb, extent=(-180, 180, -north, north), interpolation="nearest")
        on_map = storms[storms["map_id"] == row.map_id]
        for storm in on_map.itertuples():
            wkt = getattr(storm, "polygon_wkt", None)
            if isinstance(wkt, str) and wkt:
                for ring in _outline_lines(wkt):
                    ax.plot(ring[:, 0], ring[:, 1], color="cyan", lw=0.9)
            else:
                ax.plot(storm.lon, storm.lat, marker="+", color="cyan", ms=10)
            ax.text(storm.lon, storm.lat, f"{storm.confidence:.0f}", color="white", fontsize=7, ha="center",
                    va="center")
        ax.set_xlim(-180, 180)
        ax.set_ylim(-north, north)
        ax.set_xticks(range(-180, 181, 60))
        ax.set_yticks(range(-int(north) // 30 * 30, int(north) + 1, 30))
        ax.tick_params(labelsize=7)
        ax.set_title(f"{row.map_id}  MY{int(row.mars_year)}  Ls {row.ls:.1f}°  —  {len(on_map)} catalog storms",
                     fontsize=9)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    from PIL import Image

    with Image.open(tmp) as image:  # 256-colour palette: a noisy map figure shrinks ~3x
        quantized = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    quantized.save(tmp, format="PNG", optimize=True)
    os.replace(tmp, out)
    return out
