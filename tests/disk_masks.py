"""Test helper (not a test module): storms as spherical caps on a map grid, and their exact areas."""

from __future__ import annotations

import numpy as np

from marsdust.grid import MARS_RADIUS_KM
from marsdust.synth.discs import cap_mask as disk_mask  # noqa: F401  (the synthetic discs' own cap test)


def cap_area_km2(radius_deg: float) -> float:
    """Area of a spherical cap of ``radius_deg`` of arc on Mars, km²."""
    return 2 * np.pi * MARS_RADIUS_KM**2 * (1 - np.cos(np.radians(radius_deg)))
