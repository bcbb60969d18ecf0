"""Imaging of the synthetic Mars: swaths, seams, gaps, polar night, clouds, noise, RGB.

A daily global map is a mosaic of about 13 swaths (one per orbit) taken at one local time; its
red band shows dust, its blue band water-ice clouds (:mod:`marsdust.synth.bands` turns them into
8-bit RGB, each camera its own way). Missing observations (gaps between swaths, missing swaths,
polar night, dropped lines) are black (0, 0, 0). :class:`ImagingConfig` holds one camera's
imaging (:mod:`marsdust.synth.cameras`: the MOC and MARCI values); :func:`render_sol` draws one
sol with it and returns the map and the storms' visible outlines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from marsdust.grid import MapGrid, lon_difference_deg
from marsdust.synth.bands import ThreeBandResponse, TwoBandStretch
from marsdust.synth.noise import resize_periodic, spectral_field
from marsdust.synth.planet import VOLCANOES, Planet
from marsdust.synth.storms import StormField, StormState, StormTiles, storm_field

SWATHS_PER_SOL = 13
OBLIQUITY_DEG = 25.19


@dataclass(frozen=True)
class ImagingConfig:
    """How one camera assembles a daily map (defaults: the MGS MOC maps).

    Parameters
    ----------
    swaths_per_sol : int
        Swaths (orbits) per map; each covers ``360° / swaths_per_sol`` of longitude.
    swath_shift_deg_per_sol : float
        Longitude shift of the swath pattern from one sol to the next (about one swath width,
        360°/13 ≈ 27.7°, plus a drift so seams move).
    seam_gain_std : float
        Std of the relative brightness of each swath (brightness steps at seams).
    swath_edge_falloff : float
        Relative darkening toward a swath's edges: gain × (1 − falloff · x²), x = −0.5…0.5 across it.
    gap_probability : float
        Chance that a seam opens into a black gap (widest at the equator).
    gap_width_deg : (min, max)
        Equatorial width of a gap, degrees of longitude.
    gap_close_lat_deg : (min, max)
        A gap narrows linearly poleward and closes at a latitude drawn from this range.
    missing_swath_probability : float
        Chance that a whole swath is missing (black).
    swath_overlap_lat_deg : float
        A missing swath's hole narrows poleward as its neighbours overlap: half its width ×
        (1 − 0.45 (|lat| / this)²), closed from 1.49 × this latitude on.
    min_sun_elevation_deg : float
        Rows where the sun, at ``polar_night_local_time_h``, is lower than this are black
        (polar night moves with the season).
    polar_night_local_time_h : float
        Local solar time (hours) at which the polar-night rule evaluates the sun: MOC's maps are
        cut where the noon sun is lower than 12°, MARCI's where its 3 pm sun is below the horizon.
    line_dropouts_per_swath, line_stripes_per_swath : float
        Mean number of dropped image lines (black bands across one swath) and of striped lines
        (bands across one swath a few percent brighter or darker) per swath and sol (MARCI).
    noise_std : float
        Std of detector noise (reflectance units).
    dust_red, dust_blue : float
        Reflectance of optically thick dust in red and blue.
    dust_light_saturation : float
        Weight (0–1) of the saturating transmission 1 / (1 + τ) mixed into Beer–Lambert's e^-τ
        when dust veils the ground (0: Beer–Lambert alone; :mod:`marsdust.synth.looks` draws it).
    storm_tau_gamma : float
        Storm optical depths are drawn as τ^gamma (1: as the storm model made them; above 1 thin
        skirts fade and thick cores thicken, below 1 the reverse).
    cloud_red, cloud_blue : float
        Reflectance added by an optically thick water-ice cloud (brighter in blue).
    bands : TwoBandStretch or ThreeBandResponse
        From red and blue reflectances to 8-bit RGB (:mod:`marsdust.synth.bands`).
    """

    swaths_per_sol: int = SWATHS_PER_SOL
    swath_shift_deg_per_sol: float = 360.0 / SWATHS_PER_SOL * 1.07
    seam_gain_std: float = 0.025
    swath_edge_falloff: float = 0.03
    gap_probability: float = 0.12
    gap_width_deg: tuple[float, float] = (1.0, 4.0)
    gap_close_lat_deg: tuple[float, float] = (25.0, 55.0)
    missing_swath_probability: float = 0.012
    swath_overlap_lat_deg: float = 60.0
    min_sun_elevation_deg: float = 12.0
    polar_night_local_time_h: float = 12.0
    line_dropouts_per_swath: float = 0.0
    line_stripes_per_swath: float = 0.0
    noise_std: float = 0.003
    dust_red: float = 0.40
    dust_blue: float = 0.15
    dust_light_saturation: float = 0.0
    storm_tau_gamma: float = 1.0
    cloud_red: float = 0.10
    cloud_blue: float = 0.22
    bands: TwoBandStretch | ThreeBandResponse = field(default_factory=TwoBandStretch)


@dataclass(frozen=True)
class CloudConfig:
    """Seasonal ice: water-ice clouds (the aphelion belt, orographic clouds, polar hoods) and the polar caps.

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
    polar_caps : bool
        Draw the seasonal polar caps (:func:`add_polar_caps`): bright ice poleward of an edge that
        follows the season. Off by default: the MOC-only presets' 60°S–60°N maps are drawn without.
    cap_red, cap_blue : float
        Reflectance of the caps' ice in red and blue.
    """

    belt_ls: tuple[float, float] = (40.0, 140.0)
    belt_lat_deg: tuple[float, float] = (-10.0, 30.0)
    belt_strength: float = 0.55
    orographic_strength: float = 0.8
    hood_strength: float = 0.7
    hood_edge_lat_deg: float = 42.0
    volcanoes: dict = field(default_factory=lambda: dict(VOLCANOES))
    polar_caps: bool = False
    cap_red: float = 0.30
    cap_blue: float = 0.29


def subsolar_latitude_deg(ls_deg: float) -> float:
    """Latitude of the sub-solar point (solar declination) at Ls, degrees."""
    return float(np.degrees(np.arcsin(np.sin(np.radians(OBLIQUITY_DEG)) * np.sin(np.radians(ls_deg)))))


def sun_elevation_deg(lat_deg, declination_deg: float, local_time_h: float) -> np.ndarray:
    """Elevation of the sun (degrees) at latitudes ``lat_deg`` at a local solar time (hours, 12 = noon)."""
    lat, dec = np.radians(lat_deg), np.radians(declination_deg)
    hour_angle = np.radians(15.0 * (local_time_h - 12.0))
    sine = np.sin(lat) * np.sin(dec) + np.cos(lat) * np.cos(dec) * np.cos(hour_angle)
    return np.degrees(np.arcsin(np.clip(sine, -1.0, 1.0)))


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


def swath_layout(grid: MapGrid, config: ImagingConfig, day: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Which swath covers each column of one sol's map.

    Returns
    -------
    swath : int (W,)
        Swath index (0 … ``swaths_per_sol`` − 1) of each column.
    within : float (W,)
        Position across the swath, −0.5 (western edge) … 0.5 (eastern edge).
    phase : float
        Centre longitude of swath 0, degrees (swath ``k`` is centred ``k`` swath widths east).
    """
    width = 360.0 / config.swaths_per_sol
    phase = (day * config.swath_shift_deg_per_sol) % 360.0
    offset = np.mod(grid.lon_centers_deg - phase + width / 2, 360.0)
    swath = (offset // width).astype(int) % config.swaths_per_sol
    return swath, offset % width / width - 0.5, phase


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
    width = 360.0 / config.swaths_per_sol
    swath, within, phase = swath_layout(grid, config, day)
    swath_gain = 1.0 + config.seam_gain_std * rng.standard_normal(config.swaths_per_sol)
    gain = (swath_gain[swath] * (1.0 - config.swath_edge_falloff * within**2)).astype(np.float32)

    valid = np.ones(grid.shape, dtype=bool)
    elevation = sun_elevation_deg(lat, subsolar_latitude_deg(ls_deg), config.polar_night_local_time_h)
    valid[elevation < config.min_sun_elevation_deg, :] = False

    abs_lat = np.abs(lat)[:, None]
    for k in range(config.swaths_per_sol):
        center = phase + k * width
        if rng.random() < config.missing_swath_probability:
            # neighbours overlap toward the poles
            half = width / 2 * (1.0 - 0.45 * (abs_lat / config.swath_overlap_lat_deg) ** 2)
            valid &= ~(np.abs(lon_difference_deg(lon[None, :], center)) < half)
        if rng.random() < config.gap_probability:
            seam = center + width / 2
            half0 = rng.uniform(*config.gap_width_deg) / 2
            close_lat = rng.uniform(*config.gap_close_lat_deg)
            half = half0 * np.clip(1.0 - abs_lat / close_lat, 0.0, 1.0)
            cols = np.nonzero(np.abs(lon_difference_deg(lon, seam)) < half0 + grid.res_deg)[0]
            if cols.size:
                near = np.abs(lon_difference_deg(lon[cols], seam))[None, :] < half
                valid[:, cols] &= ~near
    return valid, gain


LINE_BAND_DEG = (0.2, 1.0)
"""Height of a dropped or striped band of image lines, degrees of latitude (at least one pixel)."""
STRIPE_GAIN = (0.04, 0.12)
"""Relative brightness change of a striped band (brighter or darker, equally likely)."""


def add_line_artifacts(red: np.ndarray, blue: np.ndarray, valid: np.ndarray, grid: MapGrid, config: ImagingConfig,
                       day: int, rng: np.random.Generator) -> None:
    """Dropped lines (black) and striped lines (a brightness step) across single swaths, in place.

    Each swath gets Poisson(``line_dropouts_per_swath``) dropped bands and
    Poisson(``line_stripes_per_swath``) striped bands of :data:`LINE_BAND_DEG` rows at random
    latitudes; a band spans the whole swath, as a line of a push-broom image does.
    """
    swath, _, _ = swath_layout(grid, config, day)
    for k in range(config.swaths_per_sol):
        cols = np.flatnonzero(swath == k)
        for _ in range(rng.poisson(config.line_dropouts_per_swath)):
            row0, row1 = _line_band(grid, rng)
            valid[row0:row1, cols] = False
        for _ in range(rng.poisson(config.line_stripes_per_swath)):
            row0, row1 = _line_band(grid, rng)
            factor = np.float32(1.0 + rng.choice((-1.0, 1.0)) * rng.uniform(*STRIPE_GAIN))
            red[row0:row1, cols] *= factor
            blue[row0:row1, cols] *= factor


def _line_band(grid: MapGrid, rng: np.random.Generator) -> tuple[int, int]:
    rows = max(1, int(round(rng.uniform(*LINE_BAND_DEG) / grid.res_deg)))
    row0 = int(rng.integers(0, grid.height - rows + 1))
    return row0, row0 + rows


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


CAP_EDGE_LAT_DEG = {
    1.0: ((0.0, 60.0), (30.0, 65.0), (60.0, 75.0), (90.0, 83.0), (180.0, 84.0), (220.0, 75.0), (300.0, 58.0),
          (360.0, 60.0)),
    -1.0: ((0.0, 84.0), (40.0, 75.0), (120.0, 60.0), (180.0, 57.0), (230.0, 70.0), (270.0, 82.0), (300.0, 86.0),
           (360.0, 84.0)),
}
"""Latitude (degrees from the equator) of each cap's edge through the year, (Ls, |lat|) points joined
linearly, for the north (1.0) and south (-1.0) caps: widest at the end of winter (≈ 57°), the
residual cap (≈ 84°) in summer."""
CAP_EDGE_WIDTH_DEG = 3.0
"""Width of the ramp from bare ground to full ice at a cap's edge, degrees of latitude."""


def add_polar_caps(red: np.ndarray, blue: np.ndarray, grid: MapGrid, config: CloudConfig, texture: np.ndarray,
                   ls_deg: float) -> None:
    """Cover the ground poleward of each cap's edge (:data:`CAP_EDGE_LAT_DEG`) with ice, in place.

    The edge is ragged (±2° by ``texture``, a fixed (H, W) field in 0–1) and ramps over
    :data:`CAP_EDGE_WIDTH_DEG`; drawn before dust and clouds, which veil it.
    """
    lat = grid.lat_centers_deg
    for hemisphere, points in CAP_EDGE_LAT_DEG.items():
        edge = float(np.interp(ls_deg % 360.0, *zip(*points)))
        rows = np.flatnonzero(hemisphere * lat > edge - CAP_EDGE_WIDTH_DEG - 2.0)
        if rows.size == 0:
            continue
        poleward = hemisphere * lat[rows, None] - edge + 4.0 * (texture[rows] - 0.5)
        ice = np.clip(poleward / CAP_EDGE_WIDTH_DEG + 0.5, 0.0, 1.0).astype(np.float32)
        red[rows] += ice * (np.float32(config.cap_red) - red[rows])
        blue[rows] += ice * (np.float32(config.cap_blue) - blue[rows])


def _blend_dust(red, blue, tau, config: ImagingConfig):
    """Dust veils the ground: I = I_ground·t + I_dust·(1 − t), in place, with t = e^-τ (mixed with
    1 / (1 + τ) by ``dust_light_saturation``)."""
    transmit = np.exp(-tau)
    if config.dust_light_saturation > 0:
        transmit *= np.float32(1.0 - config.dust_light_saturation)
        transmit += np.float32(config.dust_light_saturation) / (1.0 + tau)
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


def render_sol(planet: Planet, instruments: Instruments, states: list[StormState], day: int, ls_deg: float,
               haze_tau: float, imaging: ImagingConfig, clouds: CloudConfig, seed: int) -> SolView:
    """Draw one sol's map: ground, polar caps, haze, storms, clouds, swaths, gaps, polar night, line artifacts, noise.

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
    if imaging.storm_tau_gamma != 1.0:
        np.power(storm_tau, np.float32(imaging.storm_tau_gamma), out=storm_tau)
    storm_tau += np.float32(haze_tau)
    red = planet.red.copy()
    blue = planet.blue.copy()
    if clouds.polar_caps:
        add_polar_caps(red, blue, grid, clouds, instruments.clouds, ls_deg)
    _blend_dust(red, blue, storm_tau, imaging)
    del storm_tau

    cloud = cloud_opacity(grid, clouds, instruments, ls_deg, rng)
    red += imaging.cloud_red * cloud
    blue += imaging.cloud_blue * cloud

    valid, gain = valid_mask(grid, imaging, day, ls_deg, rng)
    red *= gain[None, :]
    blue *= gain[None, :]
    if imaging.line_dropouts_per_swath > 0 or imaging.line_stripes_per_swath > 0:
        add_line_artifacts(red, blue, valid, grid, imaging, day, np.random.default_rng([seed, 43, day]))
    rows_off, cols_off = rng.integers(0, 64), rng.integers(0, 512)
    red += imaging.noise_std * instruments.noise[rows_off:rows_off + grid.height, cols_off:cols_off + grid.width]
    rows_off, cols_off = rng.integers(0, 64), rng.integers(0, 512)
    blue += imaging.noise_std * instruments.noise[rows_off:rows_off + grid.height, cols_off:cols_off + grid.width]
    rgb = imaging.bands.to_rgb8(red, blue, valid)
    return SolView(rgb=rgb, valid=valid, owner=owner, states=list(states), fields=fields, cloud=cloud)
