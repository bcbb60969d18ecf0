"""Test helper (not a test module): storms as spherical caps on a map grid, and their exact areas."""

from __future__ import annotations

import numpy as np

from marsdust.grid import MARS_RADIUS_KM, MapGrid


def disk_mask(grid: MapGrid, lon0_deg: float, lat0_deg: float, radius_deg: float) -> np.ndarray:
    """Pixels whose centres lie within ``radius_deg`` of arc from the centre (a spherical cap)."""
    lat = np.radians(grid.lat_centers_deg)[:, None]
    lon = np.radians(grid.lon_centers_deg)[None, :]
    lat0, lon0 = np.radians(lat0_deg), np.radians(lon0_deg)
    cos_arc = np.sin(lat) * np.sin(lat0) + np.cos(lat) * np.cos(lat0) * np.cos(lon - lon0)
    return np.degrees(np.arccos(np.clip(cos_arc, -1, 1))) <= radius_deg


def cap_area_km2(radius_deg: float) -> float:
    """Area of a spherical cap of ``radius_deg`` of arc on Mars, km²."""
    return 2 * np.pi * MARS_RADIUS_KM**2 * (1 - np.cos(np.radians(radius_deg)))
