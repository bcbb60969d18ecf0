"""The second look's ground: geologic units, ridges, wind streaks and seasonal frost caps.

Modelling choices (each unlike :mod:`marsdust.synth.planet`, which draws Mars's real albedo
provinces with smooth logistic edges, craters and power-law spectral texture):

* **Geologic provinces and units**: two Voronoi tessellations of the sphere (random nuclei;
  boundaries roughened by fractal domain warps). Each province is either dust-mantled (bright,
  reddish) or dark basaltic (greyish) with its own colour ratios; each smaller unit shifts the
  albedo by a small step. Albedo changes in sharp steps at boundaries, darkened along unit
  boundaries like scarps.
* **Ridges**: a ridged multifractal of value noise (:func:`~.texture.ridged`), stronger in the
  southern highlands than in the northern plains.
* **Wind streaks**: bright and dark tails downwind of point obstacles, aligned with a latitude-
  dependent prevailing wind (trade winds in the tropics, westerlies at mid-latitudes).
* **Seasonal frost**: CO₂ caps whose edges advance and retreat with Ls (seen in the MARCI
  layout; the MOC band reaches them only near 60°).

Reflectances are in the same I/F-like units as the rest of the second look, for three bands
(red, green, blue); the bands are modelled separately (the main generator's green is a fixed
mix of its red and blue).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marsdust.grid import MapGrid
from marsdust.synth.second_look.texture import SphereNoise, fbm, local_box, octave_noises, ridged, rotate

ROW_CHUNK = 256
"""Rows of pixels located among the geologic units at a time (bounds the memory of the search)."""


@dataclass(frozen=True)
class GroundConfig:
    """How the second look's ground is drawn.

    Parameters
    ----------
    province_count, unit_count : int
        Two levels of Voronoi cells on the whole sphere: large provinces (bright dust-mantled or
        dark basaltic) and smaller geologic units inside them (each a small albedo step).
    bright_albedo, dark_albedo : (mean, std)
        Red reflectance of dust-mantled and of dark provinces.
    bright_fraction : float
        Share of bright provinces at the equator; ``north_bias`` adds (north) or removes (south)
        up to that much with latitude.
    unit_albedo_std : float
        Std of each unit's red reflectance step within its province.
    warp_deg : (provinces, units)
        Amplitude of the fractal displacement of each level's boundaries, degrees.
    scarp_depth, scarp_width_deg : float
        Darkening (red reflectance) along unit boundaries and its e-folding width, degrees.
    ridge_amplitude : float
        Std of the red reflectance of the ridged multifractal in the southern highlands (half
        of it in the northern plains).
    ridge_wavelengths_deg : (largest, smallest)
        Octaves of the ridges.
    streak_count : int
        Wind streaks drawn over the whole sphere (65% bright, 35% dark).
    streak_amplitude : float
        Red reflectance change at a streak's head.
    streak_length_km, streak_width_km : (min, max)
    green_ratio_bright, green_ratio_dark, blue_ratio_bright, blue_ratio_dark : (min, max)
        Green/red and blue/red reflectance ratios drawn per province.
    frost_rgb : (red, green, blue)
        Reflectance of seasonal CO₂ frost.
    """

    province_count: int = 40
    unit_count: int = 480
    bright_albedo: tuple[float, float] = (0.265, 0.02)
    dark_albedo: tuple[float, float] = (0.165, 0.02)
    bright_fraction: float = 0.5
    north_bias: float = 0.2
    unit_albedo_std: float = 0.016
    warp_deg: tuple[float, float] = (7.0, 2.0)
    scarp_depth: float = 0.018
    scarp_width_deg: float = 0.3
    ridge_amplitude: float = 0.012
    ridge_wavelengths_deg: tuple[float, float] = (12.0, 0.6)
    streak_count: int = 450
    streak_amplitude: float = 0.03
    streak_length_km: tuple[float, float] = (150.0, 550.0)
    streak_width_km: tuple[float, float] = (35.0, 110.0)
    green_ratio_bright: tuple[float, float] = (0.50, 0.57)
    green_ratio_dark: tuple[float, float] = (0.55, 0.62)
    blue_ratio_bright: tuple[float, float] = (0.30, 0.37)
    blue_ratio_dark: tuple[float, float] = (0.40, 0.50)
    frost_rgb: tuple[float, float, float] = (0.40, 0.40, 0.42)


@dataclass
class Ground:
    """The ground of one planet seed on one grid: red, green, blue reflectance, float32 (H, W).

    ``frost_edge`` is the noise that roughens the seasonal caps' edges (:func:`with_frost`).
    """

    grid: MapGrid
    red: np.ndarray
    green: np.ndarray
    blue: np.ndarray
    frost_edge: SphereNoise


def random_unit_vectors(count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` points uniform on the unit sphere, (count, 3)."""
    z = rng.uniform(-1.0, 1.0, count)
    phi = rng.uniform(0.0, 2 * np.pi, count)
    r = np.sqrt(1.0 - z * z)
    return np.column_stack([r * np.cos(phi), r * np.sin(phi), z])


def lonlat_to_vectors(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Unit vectors (…, 3) of latitudes and longitudes in degrees (same shapes)."""
    lat, lon = np.radians(lat_deg), np.radians(lon_deg)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def nearest_units(nuclei: np.ndarray, lat_deg: np.ndarray, lon_deg: np.ndarray):
    """Index of the nearest nucleus of each point and its distance to the unit boundary.

    Returns
    -------
    unit : int64 array, shape of ``lat_deg``
    edge_deg : float32 array
        Half the difference of the angular distances to the second and first nearest nuclei,
        degrees (≈ the distance to the boundary between them).
    """
    from scipy.spatial import cKDTree

    tree = cKDTree(nuclei)
    unit = np.empty(lat_deg.shape, np.int64)
    edge = np.empty(lat_deg.shape, np.float32)
    for start in range(0, lat_deg.shape[0], ROW_CHUNK):
        rows = slice(start, start + ROW_CHUNK)
        chord, index = tree.query(lonlat_to_vectors(lat_deg[rows], lon_deg[rows]), k=2)
        angle = 2.0 * np.degrees(np.arcsin(np.clip(chord / 2.0, 0.0, 1.0)))
        unit[rows] = index[..., 0]
        edge[rows] = 0.5 * (angle[..., 1] - angle[..., 0])
    return unit, edge


@dataclass(frozen=True)
class ProvinceProperties:
    """Per-province red reflectance and green/red, blue/red ratios (arrays of ``province_count``)."""

    albedo: np.ndarray
    green_ratio: np.ndarray
    blue_ratio: np.ndarray

    @classmethod
    def draw(cls, nuclei: np.ndarray, config: GroundConfig, rng: np.random.Generator) -> "ProvinceProperties":
        lat = np.degrees(np.arcsin(nuclei[:, 2]))
        p_bright = np.clip(config.bright_fraction + config.north_bias * np.tanh(lat / 25.0), 0.05, 0.95)
        bright = rng.random(len(nuclei)) < p_bright
        albedo = np.where(bright, rng.normal(*config.bright_albedo, len(nuclei)),
                          rng.normal(*config.dark_albedo, len(nuclei)))
        green = np.where(bright, rng.uniform(*config.green_ratio_bright, len(nuclei)),
                         rng.uniform(*config.green_ratio_dark, len(nuclei)))
        blue = np.where(bright, rng.uniform(*config.blue_ratio_bright, len(nuclei)),
                        rng.uniform(*config.blue_ratio_dark, len(nuclei)))
        return cls(albedo.astype(np.float32), green.astype(np.float32), blue.astype(np.float32))


def prevailing_wind_deg(lat_deg: float) -> float:
    """Direction the near-surface wind blows toward (degrees from east, counter-clockwise).

    Trade winds toward the west and the equator within 25° of it, westerlies (toward the east,
    slightly poleward) beyond.
    """
    if abs(lat_deg) < 25.0:
        return 180.0 + 30.0 * np.sign(lat_deg)
    return 15.0 * np.sign(lat_deg)


def add_wind_streaks(red: np.ndarray, grid: MapGrid, config: GroundConfig, rng: np.random.Generator) -> None:
    """Add bright and dark wind streaks to a red reflectance map, in place."""
    points = random_unit_vectors(config.streak_count, rng)
    lats = np.degrees(np.arcsin(points[:, 2]))
    lons = np.degrees(np.arctan2(points[:, 1], points[:, 0]))
    for lat0, lon0 in zip(lats, lons):
        length = rng.uniform(*config.streak_length_km)
        width = rng.uniform(*config.streak_width_km)
        sign = 1.0 if rng.random() < 0.65 else -1.0
        direction = prevailing_wind_deg(lat0) + rng.normal(0.0, 15.0)
        box = local_box(grid, lon0, lat0, 2.5 * length)
        if box is None:
            continue
        along, across = rotate(box.x_km, box.y_km, direction)
        spread = width * (1.0 + 0.6 * np.clip(along / length, 0.0, 2.0))
        tail = np.where(along > 0, np.exp(-along / length), np.exp(-((along / (0.5 * width)) ** 2)))
        red[box.index] += np.float32(sign * config.streak_amplitude) * tail * np.exp(-((across / spread) ** 2))


def warped_cells(nuclei: np.ndarray, lat: np.ndarray, lon: np.ndarray, warp_deg: float,
                 rng: np.random.Generator):
    """:func:`nearest_units` of points displaced by a fractal warp of amplitude ``warp_deg``."""
    warp_lat, warp_lon = octave_noises(4 * warp_deg, warp_deg / 3, rng), octave_noises(4 * warp_deg, warp_deg / 3, rng)
    shift_lat = warp_deg * fbm(warp_lat, lat, lon)
    shift_lon = warp_deg * fbm(warp_lon, lat, lon) / np.maximum(np.cos(np.radians(lat)), 0.1)
    lat_b, lon_b = np.broadcast_arrays(np.clip(lat + shift_lat, -90.0, 90.0), lon + shift_lon)
    return nearest_units(nuclei, lat_b, lon_b)


def build_ground(grid: MapGrid, config: GroundConfig = GroundConfig(), seed: int = 0) -> Ground:
    """Draw the ground of planet ``seed`` on ``grid``.

    Cells, warps, ridges and streaks depend on the seed only (they are functions of latitude and
    longitude), so the same seed draws the same planet at any resolution and in either layout.
    """
    rng = np.random.default_rng([seed, 101])
    province_nuclei = random_unit_vectors(config.province_count, rng)
    provinces = ProvinceProperties.draw(province_nuclei, config, rng)
    unit_nuclei = random_unit_vectors(config.unit_count, rng)
    unit_step = rng.normal(0.0, config.unit_albedo_std, config.unit_count).astype(np.float32)
    lat = grid.lat_centers_deg.astype(np.float32)[:, None]
    lon = grid.lon_centers_deg.astype(np.float32)[None, :]
    province, _ = warped_cells(province_nuclei, lat, lon, config.warp_deg[0], rng)
    unit, edge = warped_cells(unit_nuclei, lat, lon, config.warp_deg[1], rng)

    red = provinces.albedo[province] + unit_step[unit]
    red -= np.float32(config.scarp_depth) * np.exp(-edge / np.float32(config.scarp_width_deg))
    highland = np.float32(0.75) - np.float32(0.25) * np.tanh(lat / np.float32(15.0))
    crests = ridged(octave_noises(*config.ridge_wavelengths_deg, rng), lat, lon)
    crests = (crests - np.float32(crests.mean())) / np.float32(max(float(crests.std()), 1e-6))
    red += np.float32(config.ridge_amplitude) * highland * crests
    add_wind_streaks(red, grid, config, np.random.default_rng([seed, 102]))
    red = np.clip(red, 0.05, 0.45).astype(np.float32)
    green = (red * provinces.green_ratio[province]).astype(np.float32)
    blue = (red * provinces.blue_ratio[province]).astype(np.float32)
    return Ground(grid, red, green, blue, SphereNoise.draw(3.0, 6.0, rng))


NORTH_CAP_EDGE = ((0.0, 80.0, 180.0, 270.0, 360.0), (56.0, 80.0, 84.0, 62.0, 56.0))
"""(Ls knots, latitude of the northern seasonal cap's edge): retreat in spring, residual cap in
summer, advance in autumn."""
SOUTH_CAP_EDGE = ((0.0, 90.0, 180.0, 260.0, 320.0, 360.0), (-66.0, -56.0, -57.0, -80.0, -86.0, -66.0))
"""(Ls knots, latitude of the southern seasonal cap's edge)."""


def frost_cover(grid: MapGrid, ls_deg: float, edge_noise: SphereNoise) -> np.ndarray:
    """Seasonal CO₂ frost cover (0–1, float32 (H, W)): poleward of each cap's ragged edge."""
    lat = grid.lat_centers_deg.astype(np.float32)[:, None]
    lon = grid.lon_centers_deg.astype(np.float32)[None, :]
    ls = float(ls_deg) % 360.0
    north = float(np.interp(ls, *NORTH_CAP_EDGE))
    south = float(np.interp(ls, *SOUTH_CAP_EDGE))
    cover = np.zeros(grid.shape, np.float32)
    near = (lat[:, 0] > north - 6.0) | (lat[:, 0] < south + 6.0)
    if not near.any():
        return cover
    ragged = 2.5 * edge_noise.sample(lat[near], lon)
    depth = np.maximum(lat[near] - north, south - lat[near]) + ragged
    cover[near] = np.clip(depth / 2.0 + 0.5, 0.0, 1.0)
    return cover


def with_frost(ground: Ground, ls_deg: float, config: GroundConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Red, green and blue reflectance of the ground on a sol (copies, frost blended in)."""
    cover = frost_cover(ground.grid, ls_deg, ground.frost_edge)
    bands = []
    for band, frost in zip((ground.red, ground.green, ground.blue), config.frost_rgb):
        bands.append(band + cover * (np.float32(frost) - band))
    return bands[0], bands[1], bands[2]
