"""Imaging of the synthetic Mars: swaths, seams, gaps, polar night, clouds, noise, RGB.

A MOC daily global map is a mosaic of 13 swaths taken around 2 pm local time; its red band
(575–625 nm) shows dust, its blue band (400–450 nm) water-ice clouds, and its green band is
synthesized as 1/3 red + 2/3 blue, linearly stretched. Missing observations (gaps between
swaths, missing swaths, polar night) are black (0, 0, 0). :func:`render_sol` does all of this for
one sol and returns the map and the storms' visible outlines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from marsdust.grid import MapGrid, lon_difference_deg
from marsdust.synth.noise import resize_periodic, spectral_field
from marsdust.synth.planet import VOLCANOES, Planet
from marsdust.synth.storms import StormField, StormState, StormTiles, storm_field

SWATHS_PER_SOL = 13
OBLIQUITY_DEG = 25.19


@dataclass(frozen=True)
class ImagingConfig:
    """How a daily map is assembled.

    Parameters
    ----------
    swath_shift_deg_per_sol : float
        Longitude shift of the swath pattern from one sol to the next (about one swath width,
        360°/13 ≈ 27.7°, plus a drift so seams move).
    seam_gain_std : float
        Std of the relative brightness of each swath (brightness steps at seams).
    gap_probability : float
        Chance that a seam opens into a black gap (widest at the equator).
    gap_width_deg : (min, max)
        Equatorial width of a gap, degrees of longitude.
    missing_swath_probability : float
        Chance that a whole swath is missing (black).
    min_sun_elevation_deg : float
        Rows where the noon sun is lower than this are black (polar night moves with season).
    noise_std : float
        Std of detector noise (reflectance units).
    dust_red, dust_blue : float
        Reflectance of optically thick dust in red and blue.
    cloud_red, cloud_blue : float
        Reflectance added by an optically thick water-ice cloud (brighter in blue).
    red_range, blue_range : (low, high)
        Linear stretch of the red and blue reflectances to 0–255.
    """

    swath_shift_deg_per_sol: float = 360.0 / SWATHS_PER_SOL * 1.07
    seam_gain_std: float = 0.025
    gap_probability: float = 0.12
    gap_width_deg: tuple[float, float] = (1.0, 4.0)
    missing_swath_probability: float = 0.012
    min_sun_elevation_deg: float = 12.0
    noise_std: float = 0.003
    dust_red: float = 0.40
    dust_blue: float = 0.15
    cloud_red: float = 0.10
    cloud_blue: float = 0.22
    red_range: tuple[float, float] = (0.02, 0.40)
    blue_range: tuple[float, float] = (0.0, 0.30)


@dataclass(frozen=True)
class CloudConfig:
    """Water-ice clouds: the aphelion belt, orographic clouds, polar hoods.

    Parameters
    ----------
    belt_ls : (start, end)
        Aphelion cloud belt season (optical strength peaks mid-way).
    belt_lat_deg : (south, north)
        Latitude band of the belt.
    belt_strength : float
        Peak cloud opacity (0–1) of the belt.
    orographic_strength : float
        Peak opacity of clouds over the big volcanoes (strongest in northern spring–summer).
    hood_strength : float
        Peak opacity of polar hoods (north: Ls 150–30, south: Ls 10–150) poleward of
        ``hood_edge_lat_deg``.
    """

    belt_ls: tuple[float, float] = (40.0, 140.0)
    belt_lat_deg: tuple[float, float] = (-10.0, 30.0)
    belt_strength: float = 0.55
    orographic_strength: float = 0.8
    hood_strength: float = 0.7
    hood_edge_lat_deg: float = 42.0
    volcanoes: dict = field(default_factory=lambda: dict(VOLCANOES))


def subsolar_latitude_deg(ls_deg: float) -> float:
    """Latitude of the sub-solar point (solar declination) at Ls, degrees."""
    return float(np.degrees(np.arcsin(np.sin(np.radians(OBLIQUITY_DEG)) * np.sin(np.radians(ls_deg)))))


def season_bump(ls_deg: float, window: tuple[float, float]) -> float:
    """0 outside a Ls window, rising to 1 in its middle (sine-squared shape)."""
    start, end = window
    span = (end - start) % 360.0 or 360.0
    phase = ((ls_deg - start) % 360.0) / span
    return float(np.sin(np.pi * phase) ** 2) if phase < 1.0 else 0.0


NOISE_BLOCK_DEG = 0.2
"""Detector noise is drawn per block of about this size (2 × 2 pixels at 0.1°, single pixels at
0.2° and coarser): native maps stay compressible (PNG) while the noise still looks like noise."""
FINE_TEXTURE_MIN_WAVELENGTH_DEG = 0.8
"""Shortest wavelength of cloud texture (at least two pixels)."""


@dataclass
class Instruments:
    """Per-planet precomputed fields reused every sol (drawn once: rendering stays fast).

    ``noise`` is a (H + 64, W + 512) detector-noise tile (constant on blocks of
    :data:`NOISE_BLOCK_DEG`) from which each sol takes an offset window; ``clouds`` a (H, W) cloud
    texture rolled in longitude each sol; ``tiles`` the storms' shared noise.
    """

    noise: np.ndarray
    clouds: np.ndarray
    tiles: StormTiles

    @classmethod
    def draw(cls, grid: MapGrid, seed: int) -> "Instruments":
        rng = np.random.default_rng([seed, 31])
        block = max(1, int(round(NOISE_BLOCK_DEG / grid.res_deg)))
        shape = (grid.height + 64, grid.width + 512)
        coarse = rng.standard_normal((-(-shape[0] // block), -(-shape[1] // block)), dtype=np.float32)
        noise = np.repeat(np.repeat(coarse, block, axis=0), block, axis=1)[: shape[0], : shape[1]]
        coarse_shape = (max(int(round((grid.lat_north_deg - grid.lat_south_deg) / 0.5)), 8), 720)
        clouds = spectral_field(coarse_shape, 0.5, rng, slope=2.5, min_wavelength_deg=1.5, max_wavelength_deg=30.0)
        clouds = resize_periodic(clouds, grid.shape)
        clouds += 0.5 * spectral_field(grid.shape, grid.res_deg, rng, slope=2.0,
                                       min_wavelength_deg=max(2 * grid.res_deg, FINE_TEXTURE_MIN_WAVELENGTH_DEG),
                                       max_wavelength_deg=3.0)
        clouds = np.clip(0.5 + 0.35 * clouds, 0.0, 1.0).astype(np.float32)
        return cls(noise=np.ascontiguousarray(noise), clouds=clouds, tiles=StormTiles.draw(grid, seed))


@dataclass
class SolView:
    """What one sol's imaging produced.

    Attributes
    ----------
    rgb : uint8 (H, W, 3)
        The map; (0, 0, 0) exactly where ``valid`` is False.
    valid : bool (H, W)
    owner : int32 (H, W)
        Index into ``states`` of the storm that dominates each pixel's dust (-1: none), inside
        storm outlines only; missing pixels included (check ``valid``). Where outlines overlap,
        the storm with the larger smooth optical depth (without cell texture) owns the pixel, so
        shared edges are smooth curves.
    states : list of StormState
        The storms drawn on this sol.
    fields : list of StormField or None
        Their drawn fields (None when outside the map).
    cloud : float32 (H, W) or None
        The water-ice cloud opacity drawn (0–1, :func:`cloud_opacity`), missing pixels included.
    """

    rgb: np.ndarray
    valid: np.ndarray
    owner: np.ndarray
    states: list
    fields: list
    cloud: np.ndarray | None = None


def valid_mask(grid: MapGrid, config: ImagingConfig, day: int, ls_deg: float, rng: np.random.Generator):
    """Observed pixels of one sol and each column's swath gain.

    Returns
    -------
    valid : bool (H, W)
    gain : float32 (W,)
        Relative brightness of the swath covering each column (steps at the seams).
    """
    lon = grid.lon_centers_deg
    lat = grid.lat_centers_deg
    width = 360.0 / SWATHS_PER_SOL
    phase = (day * config.swath_shift_deg_per_sol) % 360.0
    offset = np.mod(lon - phase + width / 2, 360.0)
    swath = (offset // width).astype(int) % SWATHS_PER_SOL
    within = offset % width / width - 0.5  # -0.5..0.5 across the swath
    swath_gain = 1.0 + config.seam_gain_std * rng.standard_normal(SWATHS_PER_SOL)
    gain = (swath_gain[swath] * (1.0 - 0.03 * within**2)).astype(np.float32)

    valid = np.ones(grid.shape, dtype=bool)
    declination = subsolar_latitude_deg(ls_deg)
    noon_elevation = 90.0 - np.abs(lat - declination)
    valid[noon_elevation < config.min_sun_elevation_deg, :] = False

    abs_lat = np.abs(lat)[:, None]
    for k in range(SWATHS_PER_SOL):
        center = phase + k * width
        if rng.random() < config.missing_swath_probability:
            half = width / 2 * (1.0 - 0.45 * (abs_lat / 60.0) ** 2)  # neighbours overlap toward the poles
            valid &= ~(np.abs(lon_difference_deg(lon[None, :], center)) < half)
        if rng.random() < config.gap_probability:
            seam = center + width / 2
            half0 = rng.uniform(*config.gap_width_deg) / 2
            close_lat = rng.uniform(25.0, 55.0)
            half = half0 * np.clip(1.0 - abs_lat / close_lat, 0.0, 1.0)
            cols = np.nonzero(np.abs(lon_difference_deg(lon, seam)) < half0 + grid.res_deg)[0]
            if cols.size:
                near = np.abs(lon_difference_deg(lon[cols], seam))[None, :] < half
                valid[:, cols] &= ~near
    return valid, gain


def cloud_opacity(grid: MapGrid, config: CloudConfig, instruments: Instruments, ls_deg: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Water-ice cloud opacity (0–1) of one sol: aphelion belt, orographic clouds, polar hoods."""
    lat = grid.lat_centers_deg
    texture = np.roll(instruments.clouds, int(rng.integers(grid.width)), axis=1)
    opacity = np.zeros(grid.shape, np.float32)
    belt = config.belt_strength * season_bump(ls_deg, config.belt_ls)
    if belt > 0.01:
        south, north = config.belt_lat_deg
        middle, half = (south + north) / 2, (north - south) / 2
        profile = np.exp(-0.5 * ((lat - middle) / (0.6 * half)) ** 4).astype(np.float32)
        rows = profile > 0.01
        opacity[rows] += belt * profile[rows, None] * np.clip(texture[rows] * 1.6 - 0.45, 0.0, 1.0)
    orographic = config.orographic_strength * (0.3 + 0.7 * season_bump(ls_deg, (0.0, 220.0)))
    for lon0, lat0, radius in config.volcanoes.values():
        amplitude = orographic * rng.uniform(0.3, 1.0)
        boxes = grid.lonlat_box_to_pixel_boxes(lon0 - 3 * radius, lon0 + 3 * radius, lat0 - 3 * radius,
                                               lat0 + 3 * radius)
        for x0, y0, x1, y1 in boxes.astype(int):
            sub_lat = lat[y0:y1, None]
            sub_lon = grid.lon_centers_deg[None, x0:x1]
            r2 = (lon_difference_deg(sub_lon, lon0 - 0.5 * radius) ** 2 + (sub_lat - lat0) ** 2) / (1.3 * radius) ** 2
            opacity[y0:y1, x0:x1] += amplitude * np.exp(-r2) * (0.6 + 0.4 * texture[y0:y1, x0:x1])
    for hemisphere, window in ((1.0, (150.0, 390.0)), (-1.0, (10.0, 150.0))):
        strength = config.hood_strength * season_bump(ls_deg % 360.0 if ls_deg >= window[0] - 360 else ls_deg,
                                                      (window[0] % 360.0, window[1] % 360.0))
        if strength <= 0.01:
            continue
        poleward = hemisphere * lat - config.hood_edge_lat_deg
        rows = poleward > -5.0
        ramp = np.clip((poleward[rows] + 5.0) / 12.0, 0.0, 1.0)[:, None]
        opacity[rows] += strength * ramp * (0.5 + 0.5 * texture[rows])
    return np.clip(opacity, 0.0, 1.0)


def _blend_dust(red, blue, tau, config: ImagingConfig):
    """Dust veils the ground: I = I_ground·e^-τ + I_dust·(1 − e^-τ), in place."""
    transmit = np.exp(-tau)
    red *= transmit
    red += config.dust_red * (1.0 - transmit)
    blue *= transmit
    blue += config.dust_blue * (1.0 - transmit)


STORM_BLEND_POWER = 4
"""Overlapping storms combine their optical depths as a p-norm (a smooth maximum): a thick storm
over a thin one looks like the thick one, two equal storms like one 2^(1/p) times thicker."""


def combine_storms(grid: MapGrid, tiles: StormTiles, states: list[StormState]):
    """Draw the storms of one sol and combine them.

    Returns
    -------
    tau : float32 (H, W)
        Storm dust optical depth (smooth maximum over storms, :data:`STORM_BLEND_POWER`).
    owner : int32 (H, W)
        Index of the storm owning each pixel inside outlines (-1: none), by largest smooth tau.
    fields : list of StormField or None
    """
    tau_power = np.zeros(grid.shape, np.float32)
    owner = np.full(grid.shape, -1, np.int32)
    best = np.zeros(grid.shape, np.float32)
    fields: list[StormField | None] = []
    for index, state in enumerate(states):
        f = storm_field(state, grid, tiles)
        fields.append(f)
        if f is None:
            continue
        rows = slice(f.row0, f.row1)
        power = f.tau * f.tau
        power *= power  # tau ** 4
        for map_cols, box_cols in f.column_runs(grid.width):
            tau_power[rows, map_cols] += power[:, box_cols]
            sub_best = best[rows, map_cols]
            smooth = f.smooth_tau[:, box_cols]
            wins = smooth > sub_best  # smooth_tau is 0 outside the outline
            owner[rows, map_cols][wins] = index
            np.maximum(sub_best, smooth, out=sub_best)
    np.sqrt(tau_power, out=tau_power)
    np.sqrt(tau_power, out=tau_power)  # (sum of tau ** 4) ** (1 / 4)
    return tau_power, owner, fields


def to_rgb8(red: np.ndarray, blue: np.ndarray, valid: np.ndarray, config: ImagingConfig) -> np.ndarray:
    """Stretch red and blue reflectances to 8 bits; green = 1/3 red + 2/3 blue; black where invalid."""
    rgb = np.empty(red.shape + (3,), np.uint8)
    r8 = np.clip((red - config.red_range[0]) * (255.0 / (config.red_range[1] - config.red_range[0])), 1.0, 255.0)
    b8 = np.clip((blue - config.blue_range[0]) * (255.0 / (config.blue_range[1] - config.blue_range[0])), 1.0, 255.0)
    rgb[..., 0] = r8
    rgb[..., 2] = b8
    r8 *= 1.0 / 3.0
    b8 *= 2.0 / 3.0
    r8 += b8
    rgb[..., 1] = r8
    rgb[~valid] = 0
    return rgb


def render_sol(planet: Planet, instruments: Instruments, states: list[StormState], day: int, ls_deg: float,
               haze_tau: float, imaging: ImagingConfig, clouds: CloudConfig, seed: int) -> SolView:
    """Draw one sol's map: ground, haze, storms, clouds, swaths, gaps, polar night, noise.

    Parameters
    ----------
    states : list of StormState
        The storms alive on this sol.
    day : int
        Sol index since the calendar's start (sets the swath pattern).
    ls_deg : float
        Solar longitude (seasons of clouds and polar night).
    haze_tau : float
        Planet-wide background dust optical depth.
    seed : int
        Planet seed; the sol's own randomness derives from (seed, day).
    """
    grid = planet.grid
    rng = np.random.default_rng([seed, 41, day])
    storm_tau, owner, fields = combine_storms(grid, instruments.tiles, states)
    storm_tau += np.float32(haze_tau)
    red = planet.red.copy()
    blue = planet.blue.copy()
    _blend_dust(red, blue, storm_tau, imaging)
    del storm_tau

    cloud = cloud_opacity(grid, clouds, instruments, ls_deg, rng)
    red += imaging.cloud_red * cloud
    blue += imaging.cloud_blue * cloud

    valid, gain = valid_mask(grid, imaging, day, ls_deg, rng)
    red *= gain[None, :]
    blue *= gain[None, :]
    rows_off, cols_off = rng.integers(0, 64), rng.integers(0, 512)
    red += imaging.noise_std * instruments.noise[rows_off:rows_off + grid.height, cols_off:cols_off + grid.width]
    rows_off, cols_off = rng.integers(0, 64), rng.integers(0, 512)
    blue += imaging.noise_std * instruments.noise[rows_off:rows_off + grid.height, cols_off:cols_off + grid.width]
    rgb = to_rgb8(red, blue, valid, imaging)
    return SolView(rgb=rgb, valid=valid, owner=owner, states=list(states), fields=fields, cloud=cloud)
