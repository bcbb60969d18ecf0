"""Test helper (not a test module): a stand-in for ``detect_map`` that returns the catalogue's own storms."""

from __future__ import annotations

import marsdust.detect as detect
from marsdust.labels import map_targets


def catalogue_detect_map(catalog, label_mode: str, *, clip_to_observed: bool = False):
    """A ``detect_map`` whose records and masks are the catalogue rows of each map (score 0.9), as
    :func:`marsdust.labels.map_targets` labels them in ``label_mode``, on the native grid as the real one
    reports them; with ``clip_to_observed`` the masks keep only observed pixels. Monkeypatch it over
    ``marsdust.evaluate.runner.detect_map`` to check the evaluate path's bookkeeping."""
    real_detect_map = detect.detect_map

    def oracle_detect_map(model, image, *, map_id=None, mars_year=0, ls=float("nan"), settings=None, device=None,
                          background=None):
        result = real_detect_map(model, image, map_id=map_id, mars_year=mars_year, ls=ls,
                                 settings=detect.DetectSettings(score_threshold=1.0))
        target = map_targets(catalog[catalog["map_id"] == map_id], result.grid, label_mode)
        factor = result.native_grid.width / result.grid.width
        result.records = [{"x0": b[0] * factor, "y0": b[1] * factor, "x1": b[2] * factor, "y1": b[3] * factor,
                           "score": 0.9, "lon": lon, "lat": lat, "area_km2": area}
                          for b, lon, lat, area in zip(target["boxes"], target["lon"], target["lat"],
                                                       target["area_km2"])]
        result.masks = [m.astype(bool) & result.valid if clip_to_observed else m.astype(bool)
                        for m in target["masks"]]
        return result

    return oracle_detect_map
