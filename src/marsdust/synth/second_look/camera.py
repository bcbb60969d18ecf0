"""The second look's camera: light through dust and ice, swath mosaic, noise, 8-bit colour, JPEG.

Modelling choices (unlike :mod:`marsdust.synth.imaging`: 13 swaths with constant gains per
swath and gaps at vertical seams, Beer–Lambert dust blending, blocky noise, linear stretch, a
green band synthesised as 1/3 red + 2/3 blue, lossless PNG):

* **Light**: dust veils the ground with a diffusive transmittance T = 1 / (1 + k·τ·airmass)
  (a slower fall-off than e^-τ), toward a yellow-brown dust colour (its own green); ice veils
  toward a bluish white. Airmass and a mild darkening follow the 2 pm solar zenith angle.
* **Mosaic**: :attr:`CameraConfig.swaths_per_sol` swaths whose seams are *slanted* (longitude
  shifts with latitude, as a ground track does); brightness ramps across each swath (a sawtooth
  at the seams, not steps); wedge-shaped gaps at some seams; partial-swath dropouts; a ragged
  night terminator from the 2 pm sun elevation.
* **Detector**: per-column gain stripes and white read noise on each band.
* **Colour and compression**: three separately stretched bands with a gamma, then a JPEG round
  trip (quality :attr:`CameraConfig.jpeg_quality`, 4:2:0 chroma) before the map is saved as PNG:
  8 × 8 blocks and chroma smearing, as in maps that were once JPEGs. Missing pixels are black
  (0, 0, 0) exactly; observed pixels never are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marsdust.grid import MapGrid
from marsdust.synth.imaging import subsolar_latitude_deg

LOCAL_HOUR_ANGLE_DEG = 30.0
"""Hour angle of the observations (2 pm local time)."""


@dataclass(frozen=True)
class CameraConfig:
    """How the second look's maps are imaged.

    Parameters
    ----------
    swaths_per_sol : int
        Swaths in one daily mosaic.
    seam_tilt : float
        Longitude shift of a seam per degree of latitude.
    swath_shift_deg_per_sol : float
        Longitude shift of the swath pattern from one sol to the next.
    swath_gain_std, cross_track_gain : float
        Std of each swath's brightness and the relative brightness ramp across a swath (± half).
    gap_probability : float
        Chance that a seam opens into a wedge-shaped gap (widest at the equator, closed at ±70°).
    gap_width_deg : (min, max)
        Equatorial gap width, degrees of longitude.
    dropout_probability : float
        Chance per sol that one swath loses a stretch of latitude.
    night_sun_elevation_deg : float
        Pixels where the 2 pm sun is lower than this (± a ragged 2°) are black.
    stripe_std, read_noise : float
        Std of per-column relative gain and of per-pixel noise (reflectance units).
    dust_rgb, ice_rgb : (red, green, blue)
        Reflectance of thick dust and of thick ice cloud.
    dust_transmittance_k : float
        k in the dust transmittance 1 / (1 + k·τ).
    ice_veil : float
        Fraction of the ground replaced by ice colour under an opaque cloud.
    ranges : ((low, high), (low, high), (low, high))
        Reflectances stretched to 1 … 255 in red, green and blue.
    gamma : float
        Exponent of the stretch (below 1 lifts dark tones).
    jpeg_quality : int
        JPEG quality of the round trip (1–95).
    """

    swaths_per_sol: int = 12
    seam_tilt: float = 0.14
    swath_shift_deg_per_sol: float = 31.7
    swath_gain_std: float = 0.02
    cross_track_gain: float = 0.05
    gap_probability: float = 0.18
    gap_width_deg: tuple[float, float] = (0.8, 3.0)
    dropout_probability: float = 0.25
    night_sun_elevation_deg: float = 7.0
    stripe_std: float = 0.006
    read_noise: float = 0.004
    dust_rgb: tuple[float, float, float] = (0.45, 0.32, 0.15)
    ice_rgb: tuple[float, float, float] = (0.20, 0.27, 0.36)
    dust_transmittance_k: float = 1.0
    ice_veil: float = 0.5
    ranges: tuple = ((0.03, 0.43), (0.02, 0.33), (0.0, 0.30))
    gamma: float = 0.85
    jpeg_quality: int = 70


def sun_cosine(grid: MapGrid, ls_deg: float) -> np.ndarray:
    """Cosine of the 2 pm solar zenith angle of each row (float32 (H, 1); negative at night)."""
    lat = np.radians(grid.lat_centers_deg)[:, None]
    declination = np.radians(subsolar_latitude_deg(ls_deg))
    cos_zenith = np.sin(lat) * np.sin(declination) + np.cos(lat) * np.cos(declination) * np.cos(
        np.radians(LOCAL_HOUR_ANGLE_DEG))
    return cos_zenith.astype(np.float32)


def veil(bands, dust_tau: np.ndarray, cloud: np.ndarray, cos_sun: np.ndarray, config: CameraConfig) -> list:
    """Reflectance seen through dust then ice: new red, green, blue arrays."""
    airmass = 1.0 / np.clip(cos_sun, 0.25, 1.0)
    transmit = 1.0 / (1.0 + np.float32(config.dust_transmittance_k) * dust_tau * airmass)
    shading = np.float32(0.85) + np.float32(0.15) * np.sqrt(np.clip(cos_sun, 0.0, 1.0))
    out = []
    for band, dust, ice in zip(bands, config.dust_rgb, config.ice_rgb):
        seen = band * transmit + np.float32(dust) * (1.0 - transmit)
        veiled = np.float32(config.ice_veil) * cloud
        out.append(((seen * (1.0 - veiled) + np.float32(ice) * veiled) * shading).astype(np.float32))
    return out


def coverage(grid: MapGrid, config: CameraConfig, day: int, cos_sun: np.ndarray, rng: np.random.Generator):
    """Observed pixels of one sol and the relative brightness of each pixel's swath.

    Returns
    -------
    valid : bool (H, W)
    gain : float32 (H, W)
    """
    lat = grid.lat_centers_deg.astype(np.float32)[:, None]
    lon = grid.lon_centers_deg.astype(np.float32)[None, :]
    width = 360.0 / config.swaths_per_sol
    phase = (day * config.swath_shift_deg_per_sol) % 360.0
    track = np.mod(lon - phase - config.seam_tilt * lat, 360.0)
    swath = (track // width).astype(np.int64) % config.swaths_per_sol
    across = track % width / width - 0.5
    gains = 1.0 + config.swath_gain_std * rng.standard_normal(config.swaths_per_sol)
    gain = (gains[swath] * (1.0 + config.cross_track_gain * across)).astype(np.float32)

    terminator = config.night_sun_elevation_deg + 2.0 * np.sin(np.radians(3 * lon) + rng.uniform(0, 2 * np.pi))
    valid = np.degrees(np.arcsin(np.clip(cos_sun, -1.0, 1.0))) >= terminator
    seam = np.rint(track / width).astype(np.int64) % config.swaths_per_sol
    from_seam = np.abs(track - np.rint(track / width) * width)
    opened = rng.random(config.swaths_per_sol) < config.gap_probability
    half_width = 0.5 * rng.uniform(*config.gap_width_deg, config.swaths_per_sol) * opened
    valid &= ~(from_seam < half_width[seam] * np.clip(1.0 - np.abs(lat) / 70.0, 0.0, 1.0))
    if rng.random() < config.dropout_probability:
        lost = int(rng.integers(config.swaths_per_sol))
        south = rng.uniform(-60.0, 40.0)
        rows = (lat >= south) & (lat < south + rng.uniform(10.0, 40.0))
        valid &= ~((swath == lost) & rows)
    return valid, gain


def expose(bands, valid: np.ndarray, gain: np.ndarray, config: CameraConfig, rng: np.random.Generator) -> np.ndarray:
    """8-bit RGB of reflectance bands: swath gain, column stripes, noise, stretch with gamma; black where invalid."""
    height, width = valid.shape
    rgb = np.zeros((height, width, 3), np.uint8)
    for channel, (band, (low, high)) in enumerate(zip(bands, config.ranges)):
        stripes = (1.0 + config.stripe_std * rng.standard_normal(width)).astype(np.float32)
        signal = band * gain * stripes + np.float32(config.read_noise) * rng.standard_normal(band.shape, np.float32)
        scaled = np.clip((signal - np.float32(low)) / np.float32(high - low), 0.0, 1.0) ** np.float32(config.gamma)
        rgb[..., channel] = np.rint(1.0 + 254.0 * scaled).astype(np.uint8)
    rgb[~valid] = 0
    return rgb
