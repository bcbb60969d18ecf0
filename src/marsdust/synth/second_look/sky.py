"""The second look's water-ice clouds: a streaky aphelion belt, lee-wave trains, polar hoods.

Modelling choices (unlike :func:`marsdust.synth.imaging.cloud_opacity`, a band-limited texture
under a quartic latitude profile, round orographic blobs over Mars's volcanoes and polar hoods
ramping from a fixed latitude):

* **Aphelion belt**: zonally stretched fractal streaks (lattice 4× longer in longitude than in
  latitude) under a Gaussian latitude profile, strength Gaussian in Ls around Ls 95, drifting
  westward from sol to sol.
* **Lee waves**: trains of parallel bands (crests across the wind, slightly bowed) downwind of
  per-planet random mountains, widening and fading downwind; likeliest in northern spring and
  summer.
* **Polar hoods**: cloud poleward of a wavy edge (zonal wavenumber 3–5, moving with the sol)
  with a streaky texture.

Opacity is 0–1 (it veils the ground in :mod:`.camera`); the cloud masks written beside the maps
threshold it like the main generator's (:data:`marsdust.cloudmask.CLOUD_OPACITY_THRESHOLD`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marsdust.grid import MapGrid, lon_difference_deg
from marsdust.synth.second_look.ground import prevailing_wind_deg
from marsdust.synth.second_look.texture import fbm, local_box, octave_noises, rotate
from marsdust.synth.second_look.weather import tapered_window


@dataclass(frozen=True)
class SkyConfig:
    """Water-ice clouds of the second look.

    Parameters
    ----------
    belt_strength : float
        Peak opacity of the aphelion belt.
    belt_peak_ls, belt_ls_width : float
        Ls of the belt's peak and the Gaussian width of its season.
    belt_lat_deg, belt_half_width_deg : float
        Centre and Gaussian half-width of the belt in latitude.
    belt_drift_deg_per_sol : float
        Westward drift of the belt's streaks.
    mountain_count : int
        Lee-wave sources per planet (random places within ±50° latitude).
    wave_strength : float
        Peak opacity of a lee-wave train.
    wave_length_km : (min, max)
        Length of a train downwind.
    wave_spacing_km : (min, max)
        Distance between crests.
    wave_season : (start, end)
        Ls window when trains are likeliest (probability 0.75 inside, 0.2 outside).
    hood_strength : float
        Peak opacity of a polar hood.
    hood_edge_lat_deg : float
        Mean latitude of a hood's edge (|latitude|).
    hood_seasons : ((start, end), (start, end))
        Ls windows of the northern and southern hoods.
    """

    belt_strength: float = 0.65
    belt_peak_ls: float = 95.0
    belt_ls_width: float = 38.0
    belt_lat_deg: float = 14.0
    belt_half_width_deg: float = 12.0
    belt_drift_deg_per_sol: float = 9.0
    mountain_count: int = 16
    wave_strength: float = 0.7
    wave_length_km: tuple[float, float] = (350.0, 900.0)
    wave_spacing_km: tuple[float, float] = (50.0, 95.0)
    wave_season: tuple[float, float] = (20.0, 165.0)
    hood_strength: float = 0.75
    hood_edge_lat_deg: float = 50.0
    hood_seasons: tuple[tuple[float, float], tuple[float, float]] = ((165.0, 30.0), (10.0, 165.0))


@dataclass(frozen=True)
class SkyTextures:
    """Per-planet cloud textures on the map grid and lee-wave sources (drawn once per seed and grid).

    ``belt`` (zonal streaks, lattice 4× longer in longitude) and ``hood`` (3×) are fractal value
    noise in [-1, 1], float32 (H, W), rolled in longitude from sol to sol; ``mountains`` is
    (count, 2): longitude, latitude.
    """

    belt: np.ndarray
    hood: np.ndarray
    mountains: np.ndarray

    @classmethod
    def draw(cls, grid: MapGrid, config: SkyConfig, seed: int) -> "SkyTextures":
        rng = np.random.default_rng([seed, 131])
        lat = grid.lat_centers_deg.astype(np.float32)[:, None]
        lon = grid.lon_centers_deg.astype(np.float32)[None, :]
        belt = fbm(octave_noises(16.0, 1.0, rng, stretch=4.0), lat, lon)
        hood = fbm(octave_noises(12.0, 1.5, rng, stretch=3.0), lat, lon)
        mountains = np.column_stack([rng.uniform(-180, 180, config.mountain_count),
                                     rng.uniform(-50, 50, config.mountain_count)])
        return cls(belt, hood, mountains)


def drifted(texture: np.ndarray, grid: MapGrid, drift_deg: float) -> np.ndarray:
    """A texture moved ``drift_deg`` eastward (negative: westward), wrapping in longitude."""
    return np.roll(texture, int(round(drift_deg / grid.res_deg)) % grid.width, axis=1)


def belt_opacity(opacity: np.ndarray, grid: MapGrid, config: SkyConfig, textures: SkyTextures, ls_deg: float,
                 day: int) -> None:
    """Add the aphelion belt to an opacity map, in place."""
    season = float(np.exp(-((lon_difference_deg(ls_deg, config.belt_peak_ls) / config.belt_ls_width) ** 2)))
    lat = grid.lat_centers_deg.astype(np.float32)
    profile = np.exp(-(((lat - config.belt_lat_deg) / config.belt_half_width_deg) ** 2))
    rows = profile > 0.01
    if season * config.belt_strength < 0.01 or not rows.any():
        return
    streaks = drifted(textures.belt[rows], grid, -config.belt_drift_deg_per_sol * day)
    opacity[rows] += config.belt_strength * season * profile[rows, None] * np.clip(1.8 * streaks + 0.25, 0.0, 1.0)


def lee_wave_opacity(opacity: np.ndarray, grid: MapGrid, config: SkyConfig, textures: SkyTextures, ls_deg: float,
                     rng: np.random.Generator) -> None:
    """Add the sol's lee-wave trains to an opacity map, in place."""
    likely = 0.75 if tapered_window(ls_deg, config.wave_season) > 0.5 else 0.2
    for lon0, lat0 in textures.mountains:
        if rng.random() >= likely:
            continue
        length, spacing = rng.uniform(*config.wave_length_km), rng.uniform(*config.wave_spacing_km)
        strength = config.wave_strength * rng.uniform(0.5, 1.0)
        wind = prevailing_wind_deg(lat0) + rng.normal(0.0, 20.0)
        box = local_box(grid, lon0, lat0, 1.3 * length)
        if box is None:
            continue
        along, across = rotate(box.x_km, box.y_km, wind)
        spread = 60.0 + 0.35 * np.maximum(along, 0.0)
        envelope = np.where(along > 0, np.exp(-along / length) * (1.0 - np.exp(-along / 60.0)), 0.0)
        envelope = envelope * np.exp(-((across / spread) ** 2))
        crests = np.cos(np.pi * (along + 0.0015 * across**2) / spacing) ** 2
        opacity[box.index] += (strength * envelope * crests).astype(np.float32)


def hood_opacity(opacity: np.ndarray, grid: MapGrid, config: SkyConfig, textures: SkyTextures, ls_deg: float,
                 day: int) -> None:
    """Add the polar hoods active at ``ls_deg`` to an opacity map, in place."""
    lat = grid.lat_centers_deg.astype(np.float32)
    lon = grid.lon_centers_deg.astype(np.float32)[None, :]
    for hemisphere, window in zip((1.0, -1.0), config.hood_seasons):
        strength = config.hood_strength * tapered_window(ls_deg, window, 25.0)
        rows = hemisphere * lat > config.hood_edge_lat_deg - 12.0
        if strength < 0.01 or not rows.any():
            continue
        wavenumber = 3 + (day // 7 + int(hemisphere > 0)) % 3
        edge = config.hood_edge_lat_deg + 4.0 * np.sin(np.radians(wavenumber * lon) + 0.4 * day)
        ramp = np.clip((hemisphere * lat[rows, None] - edge) / 9.0, 0.0, 1.0)
        texture = 0.65 + 0.35 * drifted(textures.hood[rows], grid, 4.0 * day)
        opacity[rows] += (strength * ramp * texture).astype(np.float32)


def cloud_opacity(grid: MapGrid, config: SkyConfig, textures: SkyTextures, ls_deg: float, day: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Water-ice cloud opacity (0–1, float32 (H, W)) of one sol."""
    opacity = np.zeros(grid.shape, np.float32)
    belt_opacity(opacity, grid, config, textures, ls_deg, day)
    lee_wave_opacity(opacity, grid, config, textures, ls_deg, rng)
    hood_opacity(opacity, grid, config, textures, ls_deg, day)
    return np.clip(opacity, 0.0, 1.0)
