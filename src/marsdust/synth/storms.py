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
    genesis_per_sol: float = 0.18
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

@dataclass
class StormTiles:
    """Periodic noise tiles shared by all storms of a planet (drawn once per seed).

    ``shape`` (256², unit-free) warps outlines: a storm's radius spans 40 tile pixels;
    ``cells`` (512² at 10 km per pixel) is the convective texture (cells 40–250 km).
    """

    shape: np.ndarray
    cells: np.ndarray

    @classmethod
    def draw(cls, seed: int) -> "StormTiles":
        from marsdust.synth.noise import spectral_field

        rng = np.random.default_rng([seed, 21])
        shape = spectral_field((256, 256), 1.0, rng, slope=3.0, min_wavelength_deg=12.0, max_wavelength_deg=160.0)
        cells = spectral_field((512, 512), 1.0, rng, slope=2.0, min_wavelength_deg=4.0, max_wavelength_deg=25.0)
        cells = np.abs(cells)  # billowy, cellular look
        cells = (cells - cells.mean()) / cells.std()
        return cls(shape=shape.astype(np.float32), cells=cells.astype(np.float32))


SHAPE_TILE_PX_PER_RADIUS = 40.0
CELL_KM_PER_PX = 10.0
WARP_STRENGTH = 0.28
MAX_EXTENT = 2.0  # bounding box half-size in units of the semi-major axis


@dataclass
class StormField:
    """A storm drawn on a map: rows ``row0:row1`` and (wrapped) columns ``cols``.

    ``tau`` is the dust optical depth in that box; ``inside`` the storm's outline (the pixels a
    human would outline, where the catalog measures area).
    """

    row0: int
    row1: int
    cols: np.ndarray
    tau: np.ndarray
    inside: np.ndarray


def storm_field(state: StormState, grid: MapGrid, tiles: StormTiles) -> StormField | None:
    """Dust optical depth of one storm on one sol, inside its bounding box only.

    The outline is an ellipse warped by low-frequency noise; optical depth rises steeply
    behind the leading edge (a sharp front facing the direction of motion) and slowly on the
    trailing side, which also trails a thin haze skirt outside the outline; a cellular texture
    modulates it (convective cells). Returns None when the storm lies outside the map's band.
    """
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
    col_start = int(np.floor(x_center - n_cols / 2))
    cols = np.mod(col_start + np.arange(n_cols), grid.width)

    lat = grid.lat_centers_deg[row0:row1, None].astype(np.float32)
    dlon = lon_difference_deg(grid.lon_centers_deg[cols], state.lon_deg).astype(np.float32)[None, :]
    x_km = dlon * np.cos(np.radians(lat)) * KM_PER_DEG
    y_km = np.broadcast_to((lat - state.lat_deg) * KM_PER_DEG, x_km.shape)
    theta = np.radians(state.orientation_deg)
    xr = x_km * np.cos(theta) + y_km * np.sin(theta)
    yr = -x_km * np.sin(theta) + y_km * np.cos(theta)
    distance = np.sqrt((xr / state.semi_major_km) ** 2 + (yr / state.semi_minor_km) ** 2)

    rng = np.random.default_rng(state.shape_seed)
    off = rng.integers(0, 4096, 4)
    scale = SHAPE_TILE_PX_PER_RADIUS / state.semi_major_km
    from marsdust.synth.noise import sample_tile

    # the outline changes slowly from sol to sol: shift the noise with the day
    drift = (state.day * 3) % 256
    from scipy.ndimage import map_coordinates

    coords = np.stack([y_km * scale + off[1], x_km * scale + off[0] + drift])
    warp = map_coordinates(tiles.shape, coords, order=1, mode="grid-wrap")
    d_eff = distance * np.exp(WARP_STRENGTH * np.clip(warp, -2.0, 3.0))

    heading = np.radians(state.heading_deg)
    along = (x_km * np.cos(heading) + y_km * np.sin(heading)) / np.maximum(distance * state.semi_major_km, 1.0)
    leading = np.clip(along, 0.0, 1.0)  # 1 on the side facing the motion
    edge_width = 0.35 - 0.29 * leading
    ramp = np.clip((1.0 - d_eff) / edge_width, 0.0, 1.0)
    cells = sample_tile(tiles.cells, x_km / CELL_KM_PER_PX + off[2] - state.day * 7, y_km / CELL_KM_PER_PX + off[3])
    inside = d_eff < 1.0
    tau_inside = state.tau * (0.4 + 0.6 * ramp) * (1.0 + 0.22 * cells)
    skirt = state.tau * 0.22 * (1.0 - leading) * np.exp(-np.maximum(d_eff - 1.0, 0.0) / 0.12)
    tau = np.where(inside, np.maximum(tau_inside, 0.25 * state.tau), skirt).astype(np.float32)
    return StormField(row0, row1, cols, tau, inside)
