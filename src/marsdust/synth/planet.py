"""The synthetic planet's ground: one fixed albedo map per planet seed, the same every sol.

The ground has Mars's large bright and dark provinces at their real places (bright Tharsis,
Arabia Terra, Hellas, Elysium, Amazonis, Argyre; dark Syrtis Major, Acidalia, Mare Erythraeum,
Meridiani, Tyrrhenum, Cimmerium, Sirenum, Utopia), the big volcanoes, craters with dark floors
and bright rims, and fine texture. Bright provinces matter: there a detector can confuse bright
ground with dust.

Reflectances are in arbitrary "I/F-like" units: red band 0.1–0.35; the blue band is darker
(Mars is red) and relatively brighter over dark provinces (greyer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from marsdust.grid import MapGrid
from marsdust.synth.noise import resize_periodic, spectral_field

KM_PER_DEG = np.radians(1.0) * 3396.19
"""Length of one degree of a great circle on Mars, km (59.27 km)."""


@dataclass(frozen=True)
class Province:
    """A bright (``albedo_delta > 0``) or dark region of the ground.

    ``lon_deg``/``lat_deg``: centre (east-positive, north); ``radius_deg``: angular radius;
    ``albedo_delta``: change of red-band reflectance at its centre.
    """

    name: str
    lon_deg: float
    lat_deg: float
    radius_deg: float
    albedo_delta: float


REAL_PROVINCES: tuple[Province, ...] = (
    Province("Tharsis", -110.0, 5.0, 28.0, 0.075),
    Province("Arabia Terra", 15.0, 20.0, 24.0, 0.075),
    Province("Hellas", 67.0, -42.0, 14.0, 0.09),
    Province("Elysium", 150.0, 20.0, 14.0, 0.05),
    Province("Amazonis", -157.0, 10.0, 16.0, 0.06),
    Province("Argyre", -43.0, -50.0, 10.0, 0.05),
    Province("Isidis", 88.0, 13.0, 7.0, 0.03),
    Province("Syrtis Major", 68.0, 8.0, 10.0, -0.085),
    Province("Acidalia", -25.0, 47.0, 14.0, -0.07),
    Province("Mare Erythraeum", -40.0, -25.0, 18.0, -0.065),
    Province("Meridiani", 0.0, -3.0, 8.0, -0.05),
    Province("Mare Tyrrhenum", 105.0, -18.0, 15.0, -0.065),
    Province("Mare Cimmerium", 145.0, -25.0, 16.0, -0.065),
    Province("Mare Sirenum", -150.0, -32.0, 14.0, -0.055),
    Province("Utopia", 115.0, 47.0, 14.0, -0.035),
    Province("Solis Lacus", -87.0, -26.0, 6.0, -0.04),
)
"""Albedo provinces of Mars at their real longitudes/latitudes (sizes and contrasts simplified)."""

VOLCANOES: dict[str, tuple[float, float, float]] = {
    "Olympus Mons": (-133.8, 18.65, 3.5),
    "Ascraeus Mons": (-104.5, 11.9, 2.0),
    "Pavonis Mons": (-113.0, 1.5, 1.8),
    "Arsia Mons": (-120.5, -8.3, 2.0),
    "Elysium Mons": (146.9, 24.8, 1.6),
}
"""Big volcanoes: (lon°E, lat°N, shield radius °); orographic clouds form over them."""


@dataclass(frozen=True)
class PlanetConfig:
    """How the ground is drawn.

    Parameters
    ----------
    base_albedo : float
        Mean red-band reflectance of average ground.
    provinces : tuple of Province
        Large bright and dark regions.
    large_scale_amplitude : float
        Std of random large-scale albedo variation (wavelengths 3°–60°).
    texture_amplitude : float
        Std of fine texture (wavelengths 4° down to ``texture_min_wavelength_deg``).
    texture_min_wavelength_deg : float
        Shortest wavelength of the fine texture (at least two pixels). Texture finer than ~0.8°
        would make native 0.1° maps incompressible (PNG) without helping a detector.
    craters_per_hemisphere_area : int
        Number of craters drawn (radius 5–250 km, power law); those smaller than ~1.5 pixels
        are skipped at coarse resolution.
    blue_ratio_bright, blue_ratio_dark : float
        Blue/red reflectance ratio of bright (reddish) and dark (greyish) ground.
    """

    base_albedo: float = 0.21
    provinces: tuple[Province, ...] = REAL_PROVINCES
    large_scale_amplitude: float = 0.022
    texture_amplitude: float = 0.008
    texture_min_wavelength_deg: float = 0.8
    crater_count: int = 2500
    blue_ratio_bright: float = 0.36
    blue_ratio_dark: float = 0.55
    volcanoes: dict = field(default_factory=lambda: dict(VOLCANOES))


def angular_distance_deg(lon_deg, lat_deg, lon0_deg: float, lat0_deg: float) -> np.ndarray:
    """Great-circle angular distance (degrees) from (lon0, lat0); broadcasts lon and lat."""
    lat, lon = np.radians(lat_deg), np.radians(lon_deg)
    lat0, lon0 = np.radians(lat0_deg), np.radians(lon0_deg)
    cos_d = np.sin(lat) * np.sin(lat0) + np.cos(lat) * np.cos(lat0) * np.cos(lon - lon0)
    return np.degrees(np.arccos(np.clip(cos_d, -1.0, 1.0))).astype(np.float32)


@dataclass
class Planet:
    """The ground of one planet seed on one grid.

    Attributes
    ----------
    grid : MapGrid
    red, blue : ndarray float32 (H, W)
        Surface reflectance in the red and blue bands.
    albedo : ndarray float32 (H, W)
        Red-band reflectance (same as ``red``), kept for clarity in tests.
    """

    grid: MapGrid
    red: np.ndarray
    blue: np.ndarray

    @property
    def albedo(self) -> np.ndarray:
        return self.red


def _province_field(grid: MapGrid, config: PlanetConfig, warp: np.ndarray) -> np.ndarray:
    lon = grid.lon_centers_deg[None, :]
    lat = grid.lat_centers_deg[:, None]
    total = np.zeros(grid.shape, np.float32)
    for province in config.provinces:
        distance = angular_distance_deg(lon, lat, province.lon_deg, province.lat_deg) / province.radius_deg
        distance = distance + 0.35 * warp  # ragged, natural-looking edges
        weight = 1.0 / (1.0 + np.exp(np.minimum((distance - 1.0) / 0.12, 50.0)))
        total += province.albedo_delta * weight.astype(np.float32)
    return total


def _crater_profile(r: np.ndarray) -> np.ndarray:
    """Albedo change of a crater at normalized radius r (dark floor, bright rim, faint ejecta)."""
    out = np.zeros_like(r)
    out = np.where(r < 0.8, -0.6 + 0.3 * r, out)
    out = np.where((r >= 0.8) & (r < 1.05), 1.0, out)
    out = np.where((r >= 1.05) & (r < 1.7), 0.35 * (1.7 - r) / 0.65, out)
    return out


def _add_craters(albedo: np.ndarray, grid: MapGrid, config: PlanetConfig, rng: np.random.Generator) -> None:
    n = config.crater_count
    # power-law radii: many small, few large (cumulative N(>r) ∝ r^-1.6)
    radius_km = 5.0 * (1.0 - rng.random(n)) ** (-1.0 / 1.6)
    radius_km = np.minimum(radius_km, 250.0)
    lon_c = rng.uniform(-180, 180, n)
    lat_c = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    strength = rng.uniform(0.015, 0.04, n)
    for lon0, lat0, r_km, amp in zip(lon_c, lat_c, radius_km, strength):
        r_deg = r_km / KM_PER_DEG
        if r_deg / grid.res_deg < 1.5 or not grid.contains_lat(lat0):
            continue
        half_lat = 1.8 * r_deg
        half_lon = min(179.0, half_lat / max(np.cos(np.radians(lat0)), 0.2))
        x0, y0 = grid.lonlat_to_pixel(lon0 - half_lon, lat0 + half_lat)
        x1, y1 = grid.lonlat_to_pixel(lon0 + half_lon, lat0 - half_lat)
        row0, row1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), grid.height)
        if row1 <= row0:
            continue
        width_px = int(np.ceil(2 * half_lon / grid.res_deg)) + 1
        cols = (int(np.floor(x0)) + np.arange(width_px)) % grid.width
        lat = grid.lat_centers_deg[row0:row1, None]
        lon = grid.lon_centers_deg[cols][None, :]
        r = angular_distance_deg(lon, lat, lon0, lat0) / r_deg
        albedo[row0:row1, cols] += amp * _crater_profile(r)


def build_planet(grid: MapGrid, config: PlanetConfig = PlanetConfig(), seed: int = 0) -> Planet:
    """Draw the ground of planet ``seed`` on ``grid``.

    The large-scale pattern (provinces, their ragged edges, large-scale noise, craters) depends
    only on the seed, not on the resolution; fine texture is drawn at the grid's resolution.
    """
    rng = np.random.default_rng([seed, 1])
    coarse_res = 0.5
    global_rows = int(round(180 / coarse_res))
    coarse = MapGrid(90.0, -90.0, coarse_res)
    warp = spectral_field((global_rows, 2 * global_rows), coarse_res, rng, slope=3.0, min_wavelength_deg=2.0)
    large = spectral_field((global_rows, 2 * global_rows), coarse_res, rng, slope=3.0, min_wavelength_deg=3.0,
                           max_wavelength_deg=60.0)
    rows = coarse.crop_rows(grid.lat_north_deg, grid.lat_south_deg)
    warp_g = resize_periodic(warp[rows], grid.shape)
    large_g = resize_periodic(large[rows], grid.shape)

    albedo = config.base_albedo + _province_field(grid, config, warp_g) + config.large_scale_amplitude * large_g
    _add_craters(albedo, grid, config, np.random.default_rng([seed, 2]))
    for lon0, lat0, radius in config.volcanoes.values():  # dark shields with a bright caldera rim
        r = angular_distance_deg(grid.lon_centers_deg[None, :], grid.lat_centers_deg[:, None], lon0, lat0) / radius
        albedo += (-0.04 * np.exp(-(r**2)) + 0.03 * np.exp(-(((r - 0.15) / 0.05) ** 2))).astype(np.float32)
    texture = spectral_field(grid.shape, grid.res_deg, np.random.default_rng([seed, 3]), slope=2.0,
                             min_wavelength_deg=max(2 * grid.res_deg, config.texture_min_wavelength_deg),
                             max_wavelength_deg=4.0)
    albedo = np.clip(albedo + config.texture_amplitude * texture, 0.05, 0.45).astype(np.float32)

    brightness = np.clip((albedo - 0.14) / 0.16, 0.0, 1.0)
    ratio = config.blue_ratio_dark + (config.blue_ratio_bright - config.blue_ratio_dark) * brightness
    blue = (albedo * ratio).astype(np.float32)
    return Planet(grid=grid, red=albedo, blue=blue)
