"""Dust-storm weather of the synthetic Mars: climatology, members, sequences, the global event.

Vocabulary follows MDAD (Battalio & Wang 2021): an *instance* is one storm on one sol, a
*member* is one storm tracked over consecutive sols, a *sequence* is a chain of members on a
coherent path over ≥ 3 sols (e.g. a "flushing" storm that crosses the equator).

The climatology (:class:`StormClimatology`) is MDAD's: a primary season Ls 140–250 in both
hemispheres, a secondary season Ls 300–360 in the north and Ls 10–70 in the south, origins in
Acidalia, Utopia, Arcadia, Aonia–Solis–Valles Marineris and Hellas, plus storms along the
retreating polar-cap edges. Everything here is bookkeeping on member tracks; drawing a storm's
dust field on a map is :func:`storm_field`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from marsdust.grid import MapGrid, lon_difference_deg, normalize_lon
from marsdust.synth.planet import KM_PER_DEG


@dataclass(frozen=True)
class StormSource:
    """A region where storms start.

    Parameters
    ----------
    name : str
    lon_deg, lat_deg : float
        Centre of the genesis region (east-positive, north).
    spread_deg : float
        Std of genesis positions around the centre (degrees of great circle).
    seasons : tuple of (ls_start, ls_end)
        Ls windows (degrees; ``start > end`` wraps through 0°) when this source is active.
    weight : float
        Relative genesis rate while active.
    drift_deg_per_sol : (dlon, dlat)
        Typical motion of storms from here (degrees per sol); sequences follow it.
    """

    name: str
    lon_deg: float
    lat_deg: float
    spread_deg: float
    seasons: tuple[tuple[float, float], ...]
    weight: float
    drift_deg_per_sol: tuple[float, float] = (4.0, 0.0)


PRIMARY = (140.0, 250.0)
SECONDARY_NORTH = (300.0, 360.0)
SECONDARY_SOUTH = (10.0, 70.0)

MDAD_SOURCES: tuple[StormSource, ...] = (
    StormSource("Acidalia", -30.0, 45.0, 7.0, (PRIMARY, SECONDARY_NORTH), 1.0, (-1.5, -6.0)),
    StormSource("Utopia", 110.0, 45.0, 7.0, (PRIMARY, SECONDARY_NORTH), 0.8, (3.0, -5.0)),
    StormSource("Arcadia", -176.0, 45.0, 7.0, (PRIMARY, SECONDARY_NORTH), 0.8, (5.0, -5.0)),
    StormSource("Aonia-Solis-Valles Marineris", -80.0, -28.0, 9.0, (PRIMARY, SECONDARY_SOUTH), 0.9, (4.0, 2.5)),
    StormSource("Hellas", 67.0, -42.0, 6.0, (PRIMARY, SECONDARY_SOUTH), 0.9, (7.0, 1.0)),
    StormSource("north cap edge", 0.0, 57.0, 0.0, ((0.0, 90.0),), 0.35, (8.0, 0.0)),
    StormSource("south cap edge", 0.0, -57.0, 0.0, ((180.0, 270.0),), 0.35, (-8.0, 0.0)),
)
"""MDAD's storm origins and seasons. Cap-edge sources (``spread_deg = 0``) draw longitudes
uniformly around the planet at the cap-edge latitude."""


@dataclass(frozen=True)
class GlobalEvent:
    """A planet-encircling dust event (MY25's began at Ls ~185 from Hellas).

    The background dust optical depth rises from ``ls_onset`` to ``haze_tau_peak`` at
    ``ls_peak`` and decays linearly to zero at ``ls_end``; during onset, big storms start at
    the ``onset_sources`` every sol.
    """

    mars_year: int = 25
    ls_onset: float = 185.0
    ls_peak: float = 200.0
    ls_end: float = 290.0
    haze_tau_peak: float = 1.3
    onset_sources: tuple[str, ...] = ("Hellas", "Aonia-Solis-Valles Marineris")
    onset_members_per_sol: float = 1.0


@dataclass(frozen=True)
class StormClimatology:
    """When, where and how storms happen.

    Parameters
    ----------
    sources : tuple of StormSource
    genesis_per_sol : float
        Mean number of new members per sol summed over all sources at full activity
        (each source contributes ``weight / sum(weights)`` of it).
    off_season_fraction : float
        Activity of a source outside its seasons (0 = none).
    sequence_probability : float
        Chance that a genesis starts a sequence instead of a lone member.
    sequence_members : (min, max)
        Members per sequence (each lasts 1–3 sols, the next starts where it ended).
    member_sols_mean : float
        Mean life of a lone member in sols (geometric distribution, ≥ 1).
    area_km2_range : (min, max)
        Storm areas are drawn from a power law ``p(A) ∝ A^-area_power`` in this range and
        grow or shrink from sol to sol, staying inside it.
    area_power : float
    tau_range : (min, max)
        Peak dust optical depth of a storm (sets its contrast, hence its confidence).
    background_tau_by_season : float
        Regional haze optical depth added during the primary season (peaks at Ls 220).
    global_event : GlobalEvent or None
    """

    sources: tuple[StormSource, ...] = MDAD_SOURCES
    genesis_per_sol: float = 0.20
    off_season_fraction: float = 0.08
    sequence_probability: float = 0.12
    sequence_members: tuple[int, int] = (3, 6)
    member_sols_mean: float = 2.2
    area_km2_range: tuple[float, float] = (1.0e5, 1.0e7)
    area_power: float = 1.8
    tau_range: tuple[float, float] = (0.35, 2.0)
    background_tau_by_season: float = 0.12
    global_event: GlobalEvent | None = field(default_factory=GlobalEvent)


def in_ls_window(ls_deg, window: tuple[float, float]):
    """Whether Ls (degrees) falls in ``[start, end)``; windows with start > end wrap through 0°."""
    ls = np.mod(np.asarray(ls_deg, float), 360.0)
    start, end = window
    if end - start >= 360.0:
        return np.ones_like(ls, dtype=bool)
    start, end = start % 360.0, end % 360.0 if end % 360.0 != 0 else 360.0
    return (ls >= start) & (ls < end) if start < end else (ls >= start) | (ls < end)


def source_activity(source: StormSource, ls_deg, off_season_fraction: float):
    """Relative activity (0–1) of a source at Ls: 1 in its seasons, ``off_season_fraction`` else."""
    active = np.zeros(np.shape(ls_deg), dtype=bool)
    for window in source.seasons:
        active |= in_ls_window(ls_deg, window)
    return np.where(active, 1.0, off_season_fraction)


def background_tau(climatology: StormClimatology, mars_year: int, ls_deg: float) -> float:
    """Planet-wide haze optical depth on a sol (seasonal dust plus a global event's)."""
    tau = climatology.background_tau_by_season * float(np.exp(-0.5 * ((lon_difference_deg(ls_deg, 220.0)) / 35.0) ** 2))
    event = climatology.global_event
    if event is not None and mars_year == event.mars_year and event.ls_onset <= ls_deg < event.ls_end:
        if ls_deg < event.ls_peak:
            tau += event.haze_tau_peak * (ls_deg - event.ls_onset) / (event.ls_peak - event.ls_onset)
        else:
            tau += event.haze_tau_peak * (event.ls_end - ls_deg) / (event.ls_end - event.ls_peak)
    return tau


@dataclass
class StormState:
    """One member on one sol, as the simulator draws it.

    Angles in degrees, lengths in km; ``semi_major_km``/``semi_minor_km`` of the base ellipse
    (π·a·b = nominal area), ``orientation_deg`` of the major axis from east, ``heading_deg``
    the direction of motion from east (the sharp front faces it).
    """

    member_key: int
    day: int
    lon_deg: float
    lat_deg: float
    area_km2: float
    semi_major_km: float
    semi_minor_km: float
    orientation_deg: float
    heading_deg: float
    tau: float
    shape_seed: int


@dataclass
class Member:
    """A member's track: its states on consecutive days, its source and sequence."""

    key: int
    source: str
    start_day: int
    states: list[StormState]
    sequence_key: int | None = None


def _power_law(rng, low, high, power, size=None):
    """Draw from p(x) ∝ x^-power on [low, high]."""
    u = rng.random(size)
    a = 1.0 - power
    return (low**a + u * (high**a - low**a)) ** (1.0 / a)


def _genesis_position(source: StormSource, rng) -> tuple[float, float]:
    if source.spread_deg <= 0:
        return float(rng.uniform(-180, 180)), source.lat_deg + float(rng.normal(0, 1.5))
    lat = source.lat_deg + rng.normal(0, source.spread_deg)
    lon = source.lon_deg + rng.normal(0, source.spread_deg) / max(np.cos(np.radians(source.lat_deg)), 0.3)
    return float(normalize_lon(lon)), float(np.clip(lat, -75, 75))


def _make_track(key, source, start_day, n_sols, lon, lat, area, velocity, rng, clim, shape_seed) -> Member:
    low, high = clim.area_km2_range
    aspect = rng.uniform(1.0, 2.2)
    tau = float(rng.uniform(*clim.tau_range))
    orientation = rng.uniform(0, 180)
    growth = rng.uniform(0.9, 1.6)
    states = []
    vlon, vlat = velocity
    heading = float(np.degrees(np.arctan2(vlat, vlon)))
    for i in range(n_sols):
        a_km = np.sqrt(area * aspect / np.pi)
        states.append(
            StormState(key, start_day + i, float(normalize_lon(lon)), float(lat), float(area), float(a_km),
                       float(a_km / aspect), float(orientation), heading, tau, shape_seed)
        )
        lon += vlon + rng.normal(0, 1.0)
        lat = float(np.clip(lat + vlat + rng.normal(0, 0.7), -78, 78))
        area = float(np.clip(area * growth * rng.uniform(0.85, 1.15), low, high))
        growth = growth * rng.uniform(0.75, 0.95)  # growth slows, then the storm decays
        orientation += rng.normal(0, 8)
    return Member(key, source.name, start_day, states)


def draw_storm_members(calendar: pd.DataFrame, clim: StormClimatology, seed: int = 0) -> list[Member]:
    """Draw every member (lone or in a sequence) over the whole calendar.

    Members are drawn on every sol of the calendar, whether or not that sol's map is written,
    so subsampled archives see the same weather as the full one.

    Returns
    -------
    list of Member
        With ``sequence_key`` set for members of sequences (numbered per Mars year in
        :func:`assign_ids`).
    """
    rng = np.random.default_rng([seed, 11])
    weights = np.array([s.weight for s in clim.sources], float)
    weights = weights / weights.sum()
    sources_by_name = {s.name: s for s in clim.sources}
    low, high = clim.area_km2_range
    members: list[Member] = []
    next_seq = 0
    days = calendar["day"].to_numpy()
    ls_all = calendar["ls"].to_numpy()
    years = calendar["mars_year"].to_numpy()
    for day, ls, year in zip(days, ls_all, years):
        for source, w in zip(clim.sources, weights):
            rate = clim.genesis_per_sol * w * float(source_activity(source, ls, clim.off_season_fraction))
            for _ in range(rng.poisson(rate)):
                lon, lat = _genesis_position(source, rng)
                if rng.random() < clim.sequence_probability:
                    next_seq += 1
                    members += _draw_sequence(len(members), next_seq, source, int(day), lon, lat, rng, clim)
                else:
                    n_sols = int(rng.geometric(1.0 / clim.member_sols_mean))
                    area = float(_power_law(rng, low, high / 3, clim.area_power))
                    v = np.array(source.drift_deg_per_sol) * rng.uniform(0.0, 0.6) + rng.normal(0, 1.5, 2)
                    members.append(_make_track(len(members), source, int(day), n_sols, lon, lat, area, v, rng,
                                               clim, int(rng.integers(1 << 30))))
        event = clim.global_event
        if event is not None and year == event.mars_year and event.ls_onset <= ls < event.ls_peak:
            for _ in range(rng.poisson(event.onset_members_per_sol)):
                source = sources_by_name[event.onset_sources[rng.integers(len(event.onset_sources))]]
                lon, lat = _genesis_position(source, rng)
                area = float(rng.uniform(2e6, high / 1.5))
                v = np.array(source.drift_deg_per_sol) * 0.5
                member = _make_track(len(members), source, int(day), int(rng.integers(2, 5)), lon, lat, area, v,
                                     rng, clim, int(rng.integers(1 << 30)))
                member.states = [replace(s, tau=max(s.tau, 1.6)) for s in member.states]
                members.append(member)
    return members


def _draw_sequence(first_key, seq_key, source, day, lon, lat, rng, clim) -> list[Member]:
    low, high = clim.area_km2_range
    n_members = int(rng.integers(clim.sequence_members[0], clim.sequence_members[1] + 1))
    velocity = np.array(source.drift_deg_per_sol) * rng.uniform(0.8, 1.3)
    area = float(_power_law(rng, 3e5, high / 4, 1.3))
    out = []
    for k in range(n_members):
        n_sols = int(rng.integers(1, 4))
        member = _make_track(first_key + k, source, day, n_sols, lon, lat, area, velocity, rng, clim,
                             int(rng.integers(1 << 30)))
        member.sequence_key = seq_key
        out.append(member)
        last = member.states[-1]
        day = last.day + 1
        lon, lat = last.lon_deg + velocity[0], float(np.clip(last.lat_deg + velocity[1], -78, 78))
        area = float(np.clip(last.area_km2 * rng.uniform(0.8, 1.5), low, high))
    return out


# --- drawing one storm ---------------------------------------------------------------------------

CELL_WAVELENGTH_KM = (40.0, 250.0)
"""Wavelengths of the convective-cell texture inside storms, km."""


@dataclass
class StormTiles:
    """Noise shared by all storms of a planet on one grid (drawn once per run: drawing stays fast).

    ``shape`` (256², unit-free, periodic) warps outlines: a storm's radius spans 40 tile pixels.
    ``cells`` (the map's shape, periodic on both axes, float32, mean 0 std 1) is the convective
    texture (cells 40–250 km) in map pixels: a storm reads the window under its box, shifted by a
    per-storm offset and by the day, so no per-pixel resampling is needed at full resolution.
    """

    shape: np.ndarray
    cells: np.ndarray

    @classmethod
    def draw(cls, grid: MapGrid, seed: int) -> "StormTiles":
        from marsdust.synth.noise import spectral_field

        rng = np.random.default_rng([seed, 21])
        shape = spectral_field((256, 256), 1.0, rng, slope=3.0, min_wavelength_deg=12.0, max_wavelength_deg=160.0)
        low_deg, high_deg = (w / KM_PER_DEG for w in CELL_WAVELENGTH_KM)
        cells = spectral_field(grid.shape, grid.res_deg, rng, slope=2.0,
                               min_wavelength_deg=max(low_deg, 2.5 * grid.res_deg), max_wavelength_deg=high_deg)
        cells = np.abs(cells)  # billowy, cellular look
        cells = (cells - cells.mean()) / cells.std()
        return cls(shape=shape.astype(np.float32), cells=cells.astype(np.float32))


SHAPE_TILE_PX_PER_RADIUS = 40.0
WARP_STRENGTH = 0.28
CELL_DRIFT_DEG_PER_SOL = 0.7
MAX_EXTENT = 2.0  # bounding box half-size in units of the semi-major axis
TRIM_DISTANCE = 1.8
"""Beyond this warped distance (in outline radii) the skirt is below 0.1% of the storm's optical
depth: the box is cut to where the distance is smaller."""
COARSE_SAMPLES_PER_SEMI_MAJOR = 24.0
"""The smooth parts of a storm (warped outline distance, front sharpness, skirt) are computed on a
grid with this many samples per semi-major axis and upsampled bilinearly; the outline threshold,
the front ramp and the cell texture are applied at full resolution."""


@dataclass
class StormField:
    """A storm drawn on a map: rows ``row0:row1`` and (wrapped) columns ``cols``.

    ``tau`` is the dust optical depth in that box; ``inside`` the storm's outline (the pixels a
    human would outline, where the catalog measures area); ``smooth_tau`` the optical depth
    without the cell texture inside the outline (0 outside): overlapping storms share pixels by
    it, so the boundary between two storms is a smooth curve.
    """

    row0: int
    row1: int
    cols: np.ndarray
    tau: np.ndarray
    inside: np.ndarray
    smooth_tau: np.ndarray

    def column_runs(self, width: int) -> list[tuple[slice, slice]]:
        """(map columns, box columns) slice pairs: one run, or two when the box wraps past 180°."""
        n = self.cols.size
        first = int(self.cols[0])
        if first + n <= width:
            return [(slice(first, first + n), slice(0, n))]
        split = width - first
        return [(slice(first, width), slice(0, split)), (slice(0, n - split), slice(split, n))]


def _upsample(field: np.ndarray, step: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling (pixel-centre aligned) of a coarse field by ``step``, cropped to ``shape``."""
    if step == 1:
        return field[: shape[0], : shape[1]]
    from PIL import Image

    rows, cols = field.shape
    big = Image.fromarray(np.ascontiguousarray(field, dtype=np.float32)).resize((cols * step, rows * step),
                                                                                Image.BILINEAR)
    return np.asarray(big)[: shape[0], : shape[1]]


def _index_range(flags: np.ndarray) -> tuple[int, int]:
    """[first, last + 1) of the True entries of a 1-D mask, widened by one on each side."""
    hits = np.flatnonzero(flags)
    return max(int(hits[0]) - 1, 0), min(int(hits[-1]) + 2, flags.size)


def _storm_box(state: StormState, grid: MapGrid):
    """Rows ``row0:row1`` and first column / column count of a storm's bounding box, or None."""
    half_lat = MAX_EXTENT * state.semi_major_km / KM_PER_DEG
    lat_hi, lat_lo = state.lat_deg + half_lat, state.lat_deg - half_lat
    if lat_lo >= grid.lat_north_deg or lat_hi <= grid.lat_south_deg:
        return None
    cos_lat = max(np.cos(np.radians(min(abs(lat_lo), abs(lat_hi), 89.0) if lat_lo * lat_hi > 0 else 0.0)), 0.05)
    cos_edge = max(np.cos(np.radians(min(max(abs(lat_lo), abs(lat_hi)), 85.0))), 0.08)
    half_lon = min(180.0, half_lat / min(cos_lat, cos_edge))
    row0 = max(int(np.floor((grid.lat_north_deg - lat_hi) / grid.res_deg)), 0)
    row1 = min(int(np.ceil((grid.lat_north_deg - lat_lo) / grid.res_deg)), grid.height)
    x_center = (state.lon_deg + 180.0) / grid.res_deg
    n_cols = min(int(np.ceil(2 * half_lon / grid.res_deg)) + 1, grid.width)
    col_start = int(np.floor(x_center - n_cols / 2)) % grid.width
    return row0, row1, col_start, n_cols


def _smooth_parts(state: StormState, grid: MapGrid, tiles: StormTiles, row_px: np.ndarray, col_px: np.ndarray):
    """Warped outline distance, front edge width and skirt optical depth at (fractional) pixel positions.

    ``row_px`` (n,) and ``col_px`` (m,) are pixel-centre coordinates on ``grid`` (columns may run
    past the map edge: longitudes wrap). Returns three float32 (n, m) arrays.
    """
    lat = (grid.lat_north_deg - (row_px + 0.5) * grid.res_deg).astype(np.float32)[:, None]
    lon = -180.0 + (col_px + 0.5) * grid.res_deg
    dlon = lon_difference_deg(lon, state.lon_deg).astype(np.float32)[None, :]
    x_km = dlon * np.cos(np.radians(lat)) * np.float32(KM_PER_DEG)
    y_km = np.broadcast_to((lat - np.float32(state.lat_deg)) * np.float32(KM_PER_DEG), x_km.shape)
    theta = np.radians(state.orientation_deg)
    xr = x_km * np.float32(np.cos(theta)) + y_km * np.float32(np.sin(theta))
    yr = -x_km * np.float32(np.sin(theta)) + y_km * np.float32(np.cos(theta))
    distance = np.sqrt((xr / np.float32(state.semi_major_km)) ** 2 + (yr / np.float32(state.semi_minor_km)) ** 2)

    rng = np.random.default_rng(state.shape_seed)
    off = rng.integers(0, 4096, 2)
    scale = SHAPE_TILE_PX_PER_RADIUS / state.semi_major_km
    drift = (state.day * 3) % 256  # the outline changes slowly from sol to sol
    from scipy.ndimage import map_coordinates

    coords = np.stack([y_km * scale + off[1], x_km * scale + off[0] + drift])
    warp = map_coordinates(tiles.shape, coords, order=1, mode="grid-wrap")
    d_eff = distance * np.exp(WARP_STRENGTH * np.clip(warp, -2.0, 3.0))

    heading = np.radians(state.heading_deg)
    along = (x_km * np.cos(heading) + y_km * np.sin(heading)) / np.maximum(distance * state.semi_major_km, 1.0)
    leading = np.clip(along, 0.0, 1.0)  # 1 on the side facing the motion
    edge_width = 0.35 - 0.29 * leading
    skirt = state.tau * 0.22 * (1.0 - leading) * np.exp(-np.maximum(d_eff - 1.0, 0.0) / 0.12)
    return d_eff.astype(np.float32), edge_width.astype(np.float32), skirt.astype(np.float32)


def storm_field(state: StormState, grid: MapGrid, tiles: StormTiles) -> StormField | None:
    """Dust optical depth of one storm on one sol, inside its bounding box only.

    The outline is an ellipse warped by low-frequency noise; optical depth rises steeply
    behind the leading edge (a sharp front facing the direction of motion) and slowly on the
    trailing side, which also trails a thin haze skirt outside the outline; a cellular texture
    modulates it (convective cells). The smooth parts are computed on a coarse grid (about
    :data:`COARSE_SAMPLES_PER_SEMI_MAJOR` samples per semi-major axis) and upsampled; the outline,
    the front and the texture are applied at full resolution, so big storms cost little more
    than their pixel count. Returns None when the storm lies outside the map's band.
    """
    box = _storm_box(state, grid)
    if box is None:
        return None
    row0, row1, col_start, n_cols = box
    n_rows = row1 - row0
    semi_major_px = state.semi_major_km / (KM_PER_DEG * grid.res_deg)
    step = max(1, int(semi_major_px // COARSE_SAMPLES_PER_SEMI_MAJOR))
    offset = (step - 1) / 2.0  # coarse samples sit at the centres of step × step blocks
    row_px = row0 + offset + step * np.arange(-(-n_rows // step))
    col_px = col_start + offset + step * np.arange(-(-n_cols // step))
    d_coarse, edge_coarse, skirt_coarse = _smooth_parts(state, grid, tiles, row_px, col_px)
    near = d_coarse < TRIM_DISTANCE
    if not near.any():
        return None
    # keep only the part of the box where the storm or its skirt shows (+ one coarse sample)
    r0, r1 = _index_range(near.any(axis=1))
    c0, c1 = _index_range(near.any(axis=0))
    d_coarse, edge_coarse, skirt_coarse = (a[r0:r1, c0:c1] for a in (d_coarse, edge_coarse, skirt_coarse))
    row0, row1 = row0 + r0 * step, min(row0 + r1 * step, row1)
    col_start, n_cols = (col_start + c0 * step) % grid.width, min(n_cols - c0 * step, (c1 - c0) * step)
    shape = (row1 - row0, n_cols)
    d_eff = _upsample(d_coarse, step, shape)
    edge_width = _upsample(edge_coarse, step, shape)
    skirt = _upsample(skirt_coarse, step, shape)

    inside = d_eff < 1.0
    ramp = np.clip((1.0 - d_eff) / edge_width, 0.0, 1.0)
    smooth_tau = np.float32(state.tau) * (0.4 + 0.6 * ramp)
    cols = (col_start + np.arange(n_cols)) % grid.width
    drift_px = int(round(state.day * CELL_DRIFT_DEG_PER_SOL / grid.res_deg))
    cells = _cells_window(tiles.cells, state, row0, row1, cols, drift_px)
    tau_inside = np.maximum(smooth_tau * (1.0 + 0.22 * cells), np.float32(0.25 * state.tau))
    tau = np.where(inside, tau_inside, skirt)
    smooth_tau[~inside] = 0.0
    return StormField(row0, row1, cols, tau, inside, smooth_tau)


def _cells_window(cells: np.ndarray, state: StormState, row0: int, row1: int, cols: np.ndarray,
                  drift_px: int) -> np.ndarray:
    """The cell texture under a storm's box, at a per-storm offset that drifts with the day."""
    height, width = cells.shape
    rng = np.random.default_rng([state.shape_seed, 1])
    row_off, col_off = (int(v) for v in rng.integers(0, 1 << 20, 2))
    rows = (np.arange(row0, row1) + row_off) % height
    texture_cols = (cols + col_off - drift_px) % width
    return cells[rows[:, None], texture_cols[None, :]]
