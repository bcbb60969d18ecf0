"""Figures of marsdust (matplotlib; imported lazily by the command line)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from marsdust.evaluate.matching import outline_matches
from marsdust.fileio import atomic_output
from marsdust.grid import MapGrid, wrapped_columns


def _outline_lines(wkt: str):
    """Lon/lat vertex arrays of every ring of a WKT (Multi)Polygon."""
    from shapely import wkt as shapely_wkt

    geometry = shapely_wkt.loads(wkt)
    polygons = getattr(geometry, "geoms", [geometry])
    for polygon in polygons:
        yield np.asarray(polygon.exterior.coords)


def _draw_outlines(ax, rows: pd.DataFrame, colors, labels, styles=None) -> None:
    """Outlines of storm rows (a centroid marker where there is none), each in its colour and line style."""
    styles = ["-"] * len(rows) if styles is None else styles
    for storm, color, label, style in zip(rows.itertuples(), colors, labels, styles):
        wkt = getattr(storm, "polygon_wkt", None)
        if isinstance(wkt, str) and wkt:
            for ring in _outline_lines(wkt):
                ax.plot(ring[:, 0], ring[:, 1], color=color, lw=0.9, ls=style)
        else:
            ax.plot(storm.lon, storm.lat, marker="+", color=color, ms=10)
        if label:
            ax.text(storm.lon, storm.lat, label, color="white", fontsize=7, ha="center", va="center")


def plot_maps_with_outlines(maps: pd.DataFrame, storms: pd.DataFrame, out_png, max_width_px: int = 1800,
                            dpi: int = 100, what: str = "catalog storms",
                            detections: pd.DataFrame | None = None) -> Path:
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
    what : str
        What the outlines are, for the panel titles (e.g. ``"detected storms"``).
    detections : DataFrame, optional
        A detections table (``map_id``, ``lon``, ``lat``, ``score``, ``polygon_wkt``) to draw over the
        catalogue's storms: hits, misses and false alarms in their own colours
        (:func:`marsdust.evaluate.matching.outline_matches`, IoU ≥ 0.5): catalogued storms found in
        cyan, missed in red (dashed); detections that found a storm in yellow, false alarms in blue,
        labelled with their score in percent.

    Returns
    -------
    Path of the written figure.
    """
    if len(maps) == 0:
        raise ValueError("plot_maps_with_outlines: no maps to draw")
    plt = load_pyplot()
    images, grids = _map_thumbnails(maps, max_width_px)
    aspect = images[0].shape[0] / images[0].shape[1]
    width_in = 12.0
    fig, axes = plt.subplots(len(images), 1, figsize=(width_in, len(images) * (width_in * aspect + 0.45)),
                             squeeze=False)
    for ax, row, rgb, grid in zip(axes[:, 0], maps.itertuples(), images, grids):
        ax.imshow(rgb, extent=(-180, 180, grid.lat_south_deg, grid.lat_north_deg), interpolation="nearest")
        on_map = storms[storms["map_id"] == row.map_id]
        if detections is None:
            _draw_outlines(ax, on_map, ["cyan"] * len(on_map), [f"{c:.0f}" for c in on_map["confidence"]])
            title = f"{len(on_map)} {what}"
        else:
            title = _draw_found_and_missed(ax, on_map, detections[detections["map_id"] == row.map_id])
        _frame_map_panel(ax, grid, f"{row.map_id}  MY{int(row.mars_year)}  Ls {row.ls:.1f}°  —  {title}")
    if detections is not None:
        _add_found_and_missed_legend(fig)
    else:
        fig.tight_layout()
    return _save_map_figure(fig, out_png, dpi, palette=detections is None)


def _map_thumbnails(maps: pd.DataFrame, max_width_px: int) -> tuple[list[np.ndarray], list[MapGrid]]:
    """Each map of ``maps`` read and subsampled to at most ``max_width_px`` columns, with its native grid."""
    from marsdust.mdgm import read_map_array

    images, grids = [], []
    for row in maps.itertuples():
        rgb = read_map_array(row.path)
        grids.append(MapGrid.from_shape(rgb.shape[0], rgb.shape[1]))
        step = max(1, int(np.ceil(rgb.shape[1] / max_width_px)))
        images.append(rgb[::step, ::step])
    return images, grids


def _draw_found_and_missed(ax, on_map: pd.DataFrame, found_here: pd.DataFrame) -> str:
    """One map's catalogued storms (found / missed) and detections (hit / false alarm); returns the panel's counts."""
    found, hit = outline_matches(on_map, found_here)
    _draw_outlines(ax, on_map, np.where(found, "cyan", "red"), [""] * len(on_map), styles=np.where(found, "-", "--"))
    _draw_outlines(ax, found_here, np.where(hit, "yellow", "#2f5bff"), [f"{100 * s:.0f}" for s in found_here["score"]])
    return (f"{len(on_map)} catalogued ({int(found.sum())} found, {int((~found).sum())} missed); "
            f"{len(found_here)} detected ({int((~hit).sum())} false alarms)")


def _frame_map_panel(ax, grid: MapGrid, title: str) -> None:
    """Whole-map limits, 60° / 30° ticks and the title of one panel."""
    ax.set_xlim(-180, 180)
    ax.set_ylim(grid.lat_south_deg, grid.lat_north_deg)
    ax.set_xticks(range(-180, 181, 60))
    ax.set_yticks(range(int(np.ceil(grid.lat_south_deg / 30)) * 30, int(grid.lat_north_deg) + 1, 30))
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=9)


def _add_found_and_missed_legend(fig) -> None:
    """The legend of the found / missed / false-alarm colours above the panels, and the layout under it."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, ls=ls, lw=1.5, label=t) for c, ls, t in (
        ("cyan", "-", "catalogued, found"), ("red", "--", "catalogued, missed"),
        ("yellow", "-", "detected, found a catalogued storm (score %)"), ("#2f5bff", "-", "false alarm (score %)"))]
    fig.legend(handles=handles, loc="upper center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))


def _save_map_figure(fig, out_png, dpi: int, palette: bool) -> Path:
    """Save atomically and close; with ``palette`` as a 256-colour PNG (a noisy map figure shrinks ~3x; not with
    detections: it merges their few blue pixels into cyan)."""
    from PIL import Image

    plt = load_pyplot()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:
        fig.savefig(tmp, dpi=dpi)
        plt.close(fig)
        if palette:
            with Image.open(tmp) as image:
                quantized = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
            quantized.save(tmp, format="PNG", optimize=True)
    return out


# --- shared by every figure ------------------------------------------------------------------------
def load_pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_png, dpi: int = 100) -> Path:
    """Save a matplotlib figure atomically (temp file in the same folder, then rename) and close it."""
    plt = load_pyplot()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return out


# --- evaluation figures (marsdust evaluate) --------------------------------------------------------
def plot_pr_curves(pr_curves: dict, out_png, title: str = "") -> Path:
    """Precision–recall curves at each IoU threshold (the ``pr_curves`` entry of ``metrics.json``).

    Parameters
    ----------
    pr_curves : dict
        ``recall`` (list of recall points) and ``precision`` (dict IoU threshold -> list, None
        where undefined), as :func:`marsdust.evaluate.evaluate_detections` returns them.
    out_png : path
    title : str
    """
    plt = load_pyplot()
    recall = np.asarray(pr_curves["recall"], dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for threshold, values in pr_curves["precision"].items():
        precision = np.array([np.nan if v is None else v for v in values], dtype=float)
        defined = precision[np.isfinite(precision)]
        ap = float(defined.mean()) if defined.size else float("nan")
        ax.plot(recall, precision, label=f"IoU {float(threshold):.2f}  (AP {100 * ap:.1f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title or "precision–recall (COCO, 101 recall points)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_png)


def plot_center_deviations(deviations: pd.DataFrame, out_png, title: str = "") -> Path:
    """Histograms of the centre deviations dx, dy (pixels, top) and dlon, dlat (degrees, bottom), like the paper's Fig. 7.

    Parameters
    ----------
    deviations : DataFrame
        :func:`marsdust.evaluate.center_deviations` output (``dx_px, dy_px, dlon_deg, dlat_deg``).
    out_png : path
    title : str
    """
    plt = load_pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(8, 6))
    panels = (("dx_px", "dx (px, + east)"), ("dy_px", "dy (px, + south)"),
              ("dlon_deg", "Δlon (deg, + east)"), ("dlat_deg", "Δlat (deg, + north)"))
    for ax, (column, label) in zip(axes.ravel(), panels):
        values = deviations[column].to_numpy(float) if len(deviations) else np.zeros(0)
        if values.size:
            bins = max(5, min(40, int(np.sqrt(values.size)) * 2))
            ax.hist(values, bins=bins, color="tab:orange", edgecolor="black", lw=0.4)
            ax.axvline(0, color="black", lw=0.8)
            ax.set_title(f"{label}: median {np.median(values):.2f}, n={values.size}", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no matched detections", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(label, fontsize=8)
        ax.set_xlabel(label, fontsize=8)
        ax.set_ylabel("count", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title or "centre deviation of matched detections from the catalogue", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_png)


def _draw_boxes(ax, boxes, width_px: int, res_deg: float, north_deg: float, color: str, labels=None) -> None:
    """Draw xyxy pixel boxes in lon/lat axes, with their copy across 180° when they wrap."""
    from matplotlib.patches import Rectangle

    for k, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=float).reshape(-1, 4)):
        for shift in (0, -width_px, width_px):
            if x1 + shift <= 0 or x0 + shift >= width_px:
                continue
            lon0 = -180.0 + (x0 + shift) * res_deg
            lat_top = north_deg - y0 * res_deg
            ax.add_patch(Rectangle((lon0, lat_top - (y1 - y0) * res_deg), (x1 - x0) * res_deg, (y1 - y0) * res_deg,
                                   fill=False, edgecolor=color, lw=1.0))
            if labels is not None:
                ax.text(lon0, lat_top, labels[k], color=color, fontsize=6, va="bottom")


def plot_truth_vs_prediction(rgb: np.ndarray, res_deg: float, north_deg: float, gt_boxes, pred_boxes, pred_scores,
                             out_png, title: str = "", gt_labels=None, pred_masks=None) -> Path:
    """Ground truth (left) next to the prediction (right) on one map, like the paper's Figs 3–6.

    Parameters
    ----------
    rgb : ndarray (H, W, 3) in [0, 1]
        The map at the grid the boxes are on.
    res_deg, north_deg : float
        Pixel size and northern edge of that grid, degrees.
    gt_boxes, pred_boxes : array (n, 4)
        xyxy pixel boxes (a box across 180° may run past the map edge).
    pred_scores : array (n,)
    out_png : path
    title : str
    gt_labels : list of str, optional
        Text next to each ground-truth box (e.g. its confidence level).
    pred_masks : array (n, H, W) of bool, optional
        Predicted storm masks, drawn as a translucent overlay.
    """
    plt = load_pyplot()
    height, width = rgb.shape[:2]
    extent = (-180.0, 180.0, north_deg - height * res_deg, north_deg)
    fig, axes = plt.subplots(1, 2, figsize=(14, 14 * height / width / 2 + 0.8))
    for ax, name in zip(axes, ("ground truth (catalogue)", "prediction")):
        ax.imshow(np.clip(rgb, 0, 1), extent=extent, interpolation="nearest")
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.tick_params(labelsize=7)
        ax.set_title(f"{title}  {name}" if title else name, fontsize=8)
    _draw_boxes(axes[0], gt_boxes, width, res_deg, north_deg, "cyan", gt_labels)
    scores = np.asarray(pred_scores, dtype=float).reshape(-1)
    if pred_masks is not None and len(pred_masks):
        overlay = np.zeros((height, width, 4), dtype=float)
        overlay[np.asarray(pred_masks, bool).any(axis=0)] = (1.0, 0.3, 0.0, 0.35)
        axes[1].imshow(overlay, extent=extent, interpolation="nearest")
    _draw_boxes(axes[1], pred_boxes, width, res_deg, north_deg, "yellow", [f"{s:.2f}" for s in scores])
    fig.tight_layout()
    return save_figure(fig, out_png)


def _draw_pixel_boxes(ax, boxes, color: str, lw: float = 1.0, ls: str = "-", labels=None) -> None:
    """Draw xyxy boxes given in the axes' pixel coordinates."""
    from matplotlib.patches import Rectangle

    for k, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=float).reshape(-1, 4)):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, lw=lw, ls=ls))
        if labels is not None:
            ax.text(x0, y0, labels[k], color=color, fontsize=6, va="bottom", clip_on=True)


GALLERY_COLORS = {"catalog": "cyan", "detection": "yellow", "low_score": "orange", "subject": "red"}
"""Colours of the error galleries: catalogue storms, detections at or above / below the threshold, the case shown."""


def plot_error_gallery(panels: list[dict], out_png, title: str = "", score_threshold: float = 0.5,
                       n_columns: int = 4) -> Path:
    """A grid of map crops, each around one missed storm or false alarm, with catalogue and detections drawn.

    Parameters
    ----------
    panels : list of dict
        As :func:`marsdust.evaluate.errors.gallery_panels` builds them: ``rgb`` (h, w, 3) crop in [0, 1];
        ``catalog_boxes``, ``detection_boxes`` (n, 4) xyxy in crop pixels; ``detection_scores``
        (n,); ``subject_box`` (4,) the storm or detection the panel is about; ``title``.
    out_png : path
    title : str
        Figure title.
    score_threshold : float
        Detections below it are drawn dashed in another colour.
    n_columns : int
        Panels per row.
    """
    from matplotlib.lines import Line2D

    plt = load_pyplot()
    n_columns = max(1, min(n_columns, len(panels)))
    n_rows = max(1, -(-len(panels) // n_columns))
    fig, axes = plt.subplots(n_rows, n_columns, figsize=(3.6 * n_columns, 3.6 * n_rows + 0.9), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    if not panels:
        axes[0, 0].text(0.5, 0.5, "none", ha="center", va="center", transform=axes[0, 0].transAxes)
    for ax, panel in zip(axes.ravel(), panels):
        height, width = panel["rgb"].shape[:2]
        ax.imshow(panel["rgb"], interpolation="nearest")
        scores = np.asarray(panel["detection_scores"], dtype=float).reshape(-1)
        kept = scores >= score_threshold
        boxes = np.asarray(panel["detection_boxes"], dtype=float).reshape(-1, 4)
        _draw_pixel_boxes(ax, panel["subject_box"], GALLERY_COLORS["subject"], lw=3.0)
        _draw_pixel_boxes(ax, panel["catalog_boxes"], GALLERY_COLORS["catalog"], lw=1.2)
        _draw_pixel_boxes(ax, boxes[~kept], GALLERY_COLORS["low_score"], lw=0.8, ls="--",
                          labels=[f"{s:.2f}" for s in scores[~kept]])
        _draw_pixel_boxes(ax, boxes[kept], GALLERY_COLORS["detection"], lw=1.2, labels=[f"{s:.2f}" for s in scores[kept]])
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_title(panel["title"], fontsize=7)
    handles = [Line2D([], [], color=GALLERY_COLORS["subject"], lw=3, label="this case"),
               Line2D([], [], color=GALLERY_COLORS["catalog"], lw=1.2, label="catalogue storm"),
               Line2D([], [], color=GALLERY_COLORS["detection"], lw=1.2, label=f"detection ≥ {score_threshold:g}"),
               Line2D([], [], color=GALLERY_COLORS["low_score"], lw=0.8, ls="--", label=f"detection < {score_threshold:g}")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return save_figure(fig, out_png)


CLASS_COLORS = {"dust": "orange", "cloud": "deepskyblue"}
"""Colours of detections by class in :func:`plot_cloud_and_storm`."""


def plot_cloud_and_storm(rgb: np.ndarray, grid: MapGrid, storm_masks, cloudy: np.ndarray, detections: list[tuple],
                         out_png, center_col: int, half_width_px: int, title: str = "") -> Path:
    """A map crop where a water-ice cloud and a dust storm sit side by side: the catalogue's storm
    outlines (cyan), the cloud mask's outline (white, dashed) and the detections' outlines coloured
    by class (:data:`CLASS_COLORS`).

    Parameters
    ----------
    rgb : ndarray (H, W, 3) in [0, 1]
        The map on ``grid`` (the working grid).
    grid : MapGrid
    storm_masks : array (n, H, W)
        The catalogued storms' outlines rasterized on ``grid``.
    cloudy : bool ndarray (H, W)
        The map's cloud mask on ``grid``.
    detections : list of (mask (H, W), class name, score)
    out_png : path
    center_col, half_width_px : int
        The crop: columns ``center_col ± half_width_px``, across 180° where it reaches the map edge.
    """
    from matplotlib.lines import Line2D

    plt = load_pyplot()
    half = min(int(half_width_px), grid.width // 2)
    columns = wrapped_columns(int(center_col) - half, int(center_col) + half, grid.width)

    def crop(array):
        return np.asarray(array)[:, columns]

    height = rgb.shape[0]
    fig, ax = plt.subplots(figsize=(min(12.0, 3 + 2 * half * 8 / height), 6))
    ax.imshow(np.clip(crop(rgb), 0, 1), interpolation="nearest")
    for mask in storm_masks:
        ax.contour(crop(mask).astype(float), levels=[0.5], colors="cyan", linewidths=1.2)
    if np.asarray(cloudy).any():
        ax.contour(crop(cloudy).astype(float), levels=[0.5], colors="white", linewidths=1.0, linestyles="--")
    for mask, name, score in detections:
        part = crop(mask)
        if not part.any():
            continue
        color = CLASS_COLORS.get(name, "magenta")
        ax.contour(part.astype(float), levels=[0.5], colors=color, linewidths=1.5)
        rows, cols = np.nonzero(part)
        ax.text(cols.min(), rows.min(), f"{name} {score:.2f}", color=color, fontsize=7, va="bottom", clip_on=True)
    left_lon = -180.0 + columns[0] * grid.res_deg
    ax.set_xlabel(f"pixels from {left_lon:.1f}° E ({grid.res_deg:g}° per pixel)", fontsize=8)
    ax.tick_params(labelsize=7)
    handles = [Line2D([], [], color="cyan", label="catalogue dust"),
               Line2D([], [], color="white", ls="--", label="cloud mask"),
               *(Line2D([], [], color=c, label=f"detected {n}") for n, c in CLASS_COLORS.items())]
    ax.legend(handles=handles, loc="lower right", fontsize=7, facecolor="0.3", labelcolor="white")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_png)
