"""marsdust.formats.geotiff: rasters on the Mars CRS with the grid's geotransform."""

from __future__ import annotations

import numpy as np

from marsdust.formats.geotiff import write_geotiff
from marsdust.grid import MapGrid

from disk_masks import disk_mask

GRID = MapGrid.moc(0.5)  # 240 x 720: small and fast, same geometry as the real 0.1° grid


def test_geotiff_has_mars_crs_and_grid_transform(tmp_path):
    import rasterio

    prob = np.zeros(GRID.shape, dtype=np.float32)
    prob[disk_mask(GRID, 10.0, 10.0, 5.0)] = 0.75
    valid = np.ones(GRID.shape, dtype=bool)
    valid[0] = False
    crs_source = write_geotiff(tmp_path / "p.tif", prob, GRID, valid=valid)
    assert crs_source == "IAU_2015:49900"
    with rasterio.open(tmp_path / "p.tif") as src:
        assert (src.height, src.width) == GRID.shape
        assert src.transform == GRID.affine
        assert src.transform.c == -180.0 and src.transform.f == 60.0 and src.transform.a == 0.5
        assert src.crs.to_string() == "IAU_2015:49900"
        data = src.read(1)
    assert np.isnan(data[0]).all()
    np.testing.assert_array_equal(data[1:], prob[1:])
    write_geotiff(tmp_path / "m.tif", prob > 0, GRID)
    with rasterio.open(tmp_path / "m.tif") as src:
        assert src.dtypes[0] == "uint8" and src.read(1).sum() == (prob > 0).sum()
