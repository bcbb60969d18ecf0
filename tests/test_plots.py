"""marsdust.plots: figures drawn where they should be, read back from the PNG's pixels."""

import numpy as np
from matplotlib.colors import to_rgb
from PIL import Image

from marsdust.grid import MapGrid
from marsdust.plots import CLASS_COLORS, plot_cloud_and_storm


def coloured_pixels(png, rgb: tuple, extent: tuple[float, float], tolerance: int = 40):
    """Data coordinates (x, y) of the pixels of one colour inside the axes' image, located as the block of the
    figure's uniform 50 % grey (the map drawn); ``extent`` is the image's size in data units (columns, rows)."""
    image = np.asarray(Image.open(png).convert("RGB")).astype(int)
    grey = (np.abs(image - 128) <= 1).all(axis=-1)
    rows = np.flatnonzero(grey.sum(axis=1) > grey.sum(axis=1).max() / 2)
    columns = np.flatnonzero(grey.sum(axis=0) > grey.sum(axis=0).max() / 2)
    top, bottom, left, right = rows.min(), rows.max() + 1, columns.min(), columns.max() + 1
    match = (np.abs(image[top:bottom, left:right] - np.array(rgb)) <= tolerance).all(axis=-1)
    row, column = np.nonzero(match)
    return -0.5 + (column + 0.5) / (right - left) * extent[0], -0.5 + (row + 0.5) / (bottom - top) * extent[1]


def test_cloud_and_storm_figure_draws_a_crop_across_180(tmp_path):
    grid = MapGrid.moc(1.6)
    rgb = np.full(grid.shape + (3,), 0.5)
    storm = np.zeros(grid.shape, bool)
    storm[30:40, 2:10] = True  # columns 2-9, just east of 180°W
    cloudy = np.zeros(grid.shape, bool)
    cloudy[30:40, -12:-4] = True  # columns W-12 .. W-5, just west of 180°E
    detections = [(storm, "dust", 0.9), (cloudy, "cloud", 0.8)]
    path = plot_cloud_and_storm(rgb, grid, storm[None], cloudy, detections, tmp_path / "fig.png", center_col=0,
                                half_width_px=20, title="side by side")
    assert path.is_file() and path.stat().st_size > 5000
    # the crop is map columns W-20 .. W-1 then 0 .. 19: the cloud at crop columns 8-15, the storm at 22-29,
    # rows 30-39; each detection's outline (contour between pixel centres) and its label just above it
    for name, (x0, x1) in (("cloud", (7.5, 15.5)), ("dust", (21.5, 29.5))):
        colour = tuple(int(255 * c) for c in to_rgb(CLASS_COLORS[name]))
        x, y = coloured_pixels(path, colour, extent=(40, grid.height))
        above_legend = y < 60
        x, y = x[above_legend], y[above_legend]
        assert len(x) > 50, name
        assert x0 - 1 <= x.min() and x.max() <= x1 + 1, (name, x.min(), x.max())
        assert 27.5 <= y.min() and y.max() <= 40.5, (name, y.min(), y.max())
