"""marsdust.formats.quicklook: quick-look PNGs with storm outlines, both halves of a storm across 180°."""

from __future__ import annotations

import numpy as np

from marsdust.formats.quicklook import write_quicklook_png
from marsdust.grid import MapGrid
from marsdust.outlines import detection_records

from disk_masks import disk_mask

GRID = MapGrid.moc(0.5)  # 240 x 720: small and fast, same geometry as the real 0.1° grid


def test_quicklook_png_draws_outlines(tmp_path):
    from PIL import Image

    rgb = np.full(GRID.shape + (3,), 0.3, dtype=np.float32)
    records = detection_records("r18_040", 25, 100.0, GRID, [disk_mask(GRID, 179.0, 0.0, 6.0)], [0.9])
    path = write_quicklook_png(tmp_path / "q.png", rgb, [r["polygon_wkt"] for r in records], GRID,
                                      max_width_px=360, title="r18_040")
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (120, 360, 3)
    yellow = (image[..., 0] > 200) & (image[..., 1] > 200) & (image[..., 2] < 50)
    assert yellow[:, :20].any() and yellow[:, -20:].any()  # both halves of the storm across 180°
