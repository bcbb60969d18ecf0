"""Lattice (value) noise, its fractal sums and local tangent-plane boxes of the second look.

The main synthetic Mars builds every texture from Fourier-filtered Gaussian noise with a power-law
spectrum (:mod:`marsdust.synth.noise`). The second look never does: its textures are *value noise*
(uniform random values on a lattice, interpolated with Perlin's quintic fade curve), summed over
octaves as fractal Brownian motion (:func:`fbm`) or as a ridged multifractal (:func:`ridged`).
Value noise has a lattice-shaped spectrum (a bump at the lattice spacing, not a power law), so
its maps have other texture statistics by construction.

Storms, streaks and lee waves are drawn in a :class:`LocalBox`: the map pixels around a point
with their east/north distances in km on the local tangent plane.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marsdust.grid import MapGrid, lon_difference_deg
from marsdust.synth.planet import KM_PER_DEG


def quintic_fade(t: np.ndarray) -> np.ndarray:
    """Perlin's fade curve 6t⁵ − 15t⁴ + 10t³ (flat first and second derivatives at 0 and 1)."""
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


@dataclass(frozen=True)
class ValueNoise:
    """Uniform random values in [-1, 1] on a lattice that wraps on both axes.

    ``sample(y, x)`` takes lattice coordinates (1 = one lattice spacing; any real values, they
    wrap) and interpolates the four surrounding values with :func:`quintic_fade` weights.
    """

    table: np.ndarray

    @classmethod
    def draw(cls, rows: int, cols: int, rng: np.random.Generator) -> "ValueNoise":
        """A ``rows`` × ``cols`` lattice."""
        return cls(rng.uniform(-1.0, 1.0, (max(int(rows), 2), max(int(cols), 2))).astype(np.float32))

    def sample(self, y, x) -> np.ndarray:
        """Noise at lattice coordinates ``y`` (rows) and ``x`` (columns); they broadcast together."""
        rows, cols = self.table.shape
        y = np.asarray(y, np.float32)
        x = np.asarray(x, np.float32)
        y0, x0 = np.floor(y), np.floor(x)
        wy, wx = quintic_fade(y - y0), quintic_fade(x - x0)
        i0 = y0.astype(np.int64) % rows
        j0 = x0.astype(np.int64) % cols
        i1, j1 = (i0 + 1) % rows, (j0 + 1) % cols
        t = self.table
        top = t[i0, j0] + wx * (t[i0, j1] - t[i0, j0])
        bottom = t[i1, j0] + wx * (t[i1, j1] - t[i1, j0])
        return (top + wy * (bottom - top)).astype(np.float32)


@dataclass(frozen=True)
class SphereNoise:
    """Value noise over the whole planet: a lattice ``lat_spacing_deg`` × ``lon_spacing_deg``.

    Different spacings in latitude and longitude give streaky (anisotropic) noise.
    """

    noise: ValueNoise
    lat_spacing_deg: float
    lon_spacing_deg: float

    @classmethod
    def draw(cls, lat_spacing_deg: float, lon_spacing_deg: float, rng: np.random.Generator) -> "SphereNoise":
        cols = max(int(round(360.0 / lon_spacing_deg)), 2)
        rows = int(np.ceil(180.0 / lat_spacing_deg)) + 2
        return cls(ValueNoise.draw(rows, cols, rng), float(lat_spacing_deg), 360.0 / cols)

    def sample(self, lat_deg, lon_deg) -> np.ndarray:
        """Noise at latitudes and longitudes (degrees, broadcasting; longitudes wrap)."""
        y = (90.0 - np.asarray(lat_deg, np.float32)) / np.float32(self.lat_spacing_deg)
        x = (np.asarray(lon_deg, np.float32) + 180.0) / np.float32(self.lon_spacing_deg)
        return self.noise.sample(y, x)


def octave_noises(largest_deg: float, smallest_deg: float, rng: np.random.Generator,
                  stretch: float = 1.0) -> list[SphereNoise]:
    """Sphere noises of wavelengths ``largest_deg``, ``largest_deg / 2``, … down to ``smallest_deg``.

    ``stretch`` > 1 makes each octave's longitude spacing that many times its latitude spacing.
    """
    count = max(int(np.floor(np.log2(largest_deg / smallest_deg))) + 1, 1)
    return [SphereNoise.draw(largest_deg / 2**k, stretch * largest_deg / 2**k, rng) for k in range(count)]


def fbm(noises: list[SphereNoise], lat_deg, lon_deg, gain: float = 0.55) -> np.ndarray:
    """Fractal Brownian motion: Σ gainᵏ · noiseₖ, normalised by Σ gainᵏ (values in [-1, 1])."""
    total, norm = 0.0, 0.0
    for k, noise in enumerate(noises):
        total = total + gain**k * noise.sample(lat_deg, lon_deg)
        norm += gain**k
    return (total / norm).astype(np.float32)


def ridged(noises: list[SphereNoise], lat_deg, lon_deg, gain: float = 0.5) -> np.ndarray:
    """Ridged multifractal (Musgrave): octaves of (1 − |noise|)², each weighted by the previous one.

    Sharp crests where the noise crosses zero, wide troughs elsewhere; values in [0, 1].
    """
    total, norm, weight = 0.0, 0.0, 1.0
    for k, noise in enumerate(noises):
        signal = (1.0 - np.abs(noise.sample(lat_deg, lon_deg))) ** 2
        total = total + gain**k * weight * signal
        norm += gain**k
        weight = np.clip(signal * 1.6, 0.0, 1.0)
    return (total / norm).astype(np.float32)


@dataclass
class LocalBox:
    """Map pixels around a point, with their tangent-plane coordinates.

    Attributes
    ----------
    rows : ndarray of int (n,)
        Map rows (consecutive).
    cols : ndarray of int (m,)
        Map columns (consecutive modulo the width: a box may wrap across 180°; no column twice).
    x_km, y_km : float32 (n, m)
        East and north distance of each pixel centre from the point, km.
    """

    rows: np.ndarray
    cols: np.ndarray
    x_km: np.ndarray
    y_km: np.ndarray

    @property
    def index(self):
        """Index of the box in a map array: ``field[box.index]``."""
        return np.ix_(self.rows, self.cols)


def local_box(grid: MapGrid, lon_deg: float, lat_deg: float, radius_km: float) -> LocalBox | None:
    """The pixels within ``radius_km`` (a lat/lon box around it) of a point, or None off the map."""
    half_lat = radius_km / KM_PER_DEG
    north, south = min(lat_deg + half_lat, grid.lat_north_deg), max(lat_deg - half_lat, grid.lat_south_deg)
    if north <= south:
        return None
    row0 = int(np.floor((grid.lat_north_deg - north) / grid.res_deg))
    row1 = int(np.ceil((grid.lat_north_deg - south) / grid.res_deg))
    rows = np.arange(max(row0, 0), min(row1, grid.height))
    if rows.size == 0:
        return None
    widest = max(abs(north), abs(south)) if north * south > 0 else min(abs(north), abs(south))
    half_lon = min(180.0, half_lat / max(np.cos(np.radians(min(widest, 89.0))), 0.02))
    n_cols = min(int(np.ceil(2 * half_lon / grid.res_deg)) + 2, grid.width)
    col0 = int(np.floor((lon_deg + 180.0 - half_lon) / grid.res_deg)) - 1
    cols = (col0 + np.arange(n_cols)) % grid.width
    lat = grid.lat_centers_deg[rows].astype(np.float32)[:, None]
    dlon = lon_difference_deg(grid.lon_centers_deg[cols], lon_deg).astype(np.float32)[None, :]
    x_km = dlon * np.cos(np.radians(lat)) * np.float32(KM_PER_DEG)
    y_km = np.broadcast_to((lat - np.float32(lat_deg)) * np.float32(KM_PER_DEG), x_km.shape)
    return LocalBox(rows, cols, x_km.astype(np.float32), np.ascontiguousarray(y_km, dtype=np.float32))


def rotate(x_km: np.ndarray, y_km: np.ndarray, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates along and across a direction ``angle_deg`` (from east, counter-clockwise)."""
    c, s = np.float32(np.cos(np.radians(angle_deg))), np.float32(np.sin(np.radians(angle_deg)))
    return x_km * c + y_km * s, -x_km * s + y_km * c
