"""The second look's dust weather: frontal storms, local plumes, flushing sequences, haze.

Modelling choices (unlike :mod:`marsdust.synth.storms`, which starts storms at MDAD's named
source regions in fixed Ls windows and draws each as a warped ellipse):

* **Frontal storms** form on the polar-front storm tracks (≈ 52°N in northern autumn–winter,
  ≈ 48°S in southern autumn–winter) with a *solsticial pause* (activity drops around the
  solstice), travel fast eastward and equatorward, and are drawn as curved arcs
  (:mod:`.plumes`).
* **Local plumes** start anywhere dust lifting is likely: latitudes follow the sub-solar
  latitude, longitudes a per-planet random lifting potential; they drift with the prevailing
  wind and are drawn as clusters of advected puffs.
* **Flushing sequences**: some frontal storms hand over to plumes that cross toward the equator,
  a chain of members of one MDAD sequence.
* **Haze**: a background dust optical depth peaking at perihelion season (Ls 250).

A member's state on each sol is a :class:`PlumeState`; members are drawn on every sol of the
calendar, whether or not that sol gets a map.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from marsdust.grid import lon_difference_deg, normalize_lon
from marsdust.synth.imaging import subsolar_latitude_deg
from marsdust.synth.planet import KM_PER_DEG
from marsdust.synth.second_look.ground import prevailing_wind_deg
from marsdust.synth.second_look.texture import SphereNoise

FRONT = "front"
"""Kind of a frontal storm (a curved arc with a sharp leading edge)."""
PUFFS = "puffs"
"""Kind of a plume of advected puffs."""


@dataclass(frozen=True)
class PlumeState:
    """One member on one sol.

    Lengths in km, angles in degrees from east (counter-clockwise). ``length_km`` runs along the
    front (arcs) or the plume's path (puffs), ``width_km`` across it; ``bend_km`` is the front's
    radius of curvature or the path's (signed); ``tau`` the peak dust optical depth; ``age`` the
    sol of the member's life (0 on its first sol).
    """

    member_key: int
    day: int
    kind: str
    lon_deg: float
    lat_deg: float
    heading_deg: float
    length_km: float
    width_km: float
    bend_km: float
    tau: float
    shape_seed: int
    age: int


@dataclass
class StormMember:
    """A member's track: its states on consecutive sols, where it formed, its sequence (or None)."""

    key: int
    origin: str
    start_day: int
    states: list[PlumeState] = field(default_factory=list)
    sequence_key: int | None = None


@dataclass(frozen=True)
class WeatherConfig:
    """When, where and how the second look's storms happen.

    Parameters
    ----------
    front_rate_per_sol, local_rate_per_sol : float
        New frontal storms (both hemispheres together) and local plumes per sol at full activity.
    quiet_activity : float
        Activity floor outside the seasons (fraction of the full rate).
    front_lat_deg : (north, south)
        Latitudes of the storm tracks.
    front_seasons : ((start, end), (start, end))
        Ls windows of frontal activity, north then south.
    pause_ls_deg, pause_depth : float
        Centre of the northern solsticial pause and how much activity it removes (0–1).
    front_speed_km_per_sol, front_length_km, front_width_km : (min, max)
    front_life_sols : (min, max)
    local_speed_km_per_sol, local_length_km, local_width_km : (min, max)
    local_life_mean_sols : float
        Mean life of a local plume (geometric, ≥ 1 sol).
    flushing_probability : float
        Chance that a frontal storm hands over to an equatorward flushing chain (a sequence).
    tau_range : (min, max)
        Peak dust optical depth of a member.
    haze_tau, haze_peak_tau : float
        Background dust optical depth all year and extra at perihelion season (Ls 250 ± 45).
    """

    front_rate_per_sol: float = 0.30
    local_rate_per_sol: float = 0.55
    quiet_activity: float = 0.45
    front_lat_deg: tuple[float, float] = (52.0, -48.0)
    front_seasons: tuple[tuple[float, float], tuple[float, float]] = ((180.0, 340.0), (15.0, 160.0))
    pause_ls_deg: float = 270.0
    pause_depth: float = 0.85
    front_speed_km_per_sol: tuple[float, float] = (350.0, 850.0)
    front_length_km: tuple[float, float] = (900.0, 2600.0)
    front_width_km: tuple[float, float] = (200.0, 480.0)
    front_life_sols: tuple[int, int] = (2, 5)
    local_speed_km_per_sol: tuple[float, float] = (120.0, 420.0)
    local_length_km: tuple[float, float] = (350.0, 1500.0)
    local_width_km: tuple[float, float] = (150.0, 380.0)
    local_life_mean_sols: float = 2.6
    flushing_probability: float = 0.35
    tau_range: tuple[float, float] = (0.6, 2.4)
    haze_tau: float = 0.08
    haze_peak_tau: float = 0.22


def tapered_window(ls_deg: float, window: tuple[float, float], taper_deg: float = 20.0) -> float:
    """1 inside an Ls window (wrapping through 0°), raised-cosine ramps of ``taper_deg`` at its ends, 0 outside."""
    start, end = window
    span = (end - start) % 360.0 or 360.0
    into = (ls_deg - start) % 360.0
    if into >= span:
        return 0.0
    edge = min(into, span - into)
    return 1.0 if edge >= taper_deg else float(0.5 - 0.5 * np.cos(np.pi * edge / taper_deg))


def front_activity(ls_deg: float, hemisphere: int, config: WeatherConfig) -> float:
    """Activity (0–1) of a hemisphere's storm track (+1 north, -1 south), with the solsticial pause in the north."""
    window = config.front_seasons[0 if hemisphere > 0 else 1]
    activity = tapered_window(ls_deg, window)
    if hemisphere > 0:
        from_pause = lon_difference_deg(ls_deg, config.pause_ls_deg) / 15.0
        activity *= 1.0 - config.pause_depth * float(np.exp(-(from_pause**2)))
    return max(activity, config.quiet_activity)


def local_activity(ls_deg: float, config: WeatherConfig) -> float:
    """Activity (0–1) of local dust lifting: peaks at perihelion season (Ls 250)."""
    peak = float(np.exp(-((lon_difference_deg(ls_deg, 250.0) / 55.0) ** 2)))
    return config.quiet_activity + (1.0 - config.quiet_activity) * peak


def haze_tau(ls_deg: float, config: WeatherConfig) -> float:
    """Background dust optical depth on a sol."""
    return config.haze_tau + config.haze_peak_tau * float(np.exp(-((lon_difference_deg(ls_deg, 250.0) / 45.0) ** 2)))


def step_position(lon_deg: float, lat_deg: float, heading_deg: float, distance_km: float) -> tuple[float, float]:
    """Position after moving ``distance_km`` toward ``heading_deg`` (flat local step; latitude kept within ±80°)."""
    heading = np.radians(heading_deg)
    lat = float(np.clip(lat_deg + distance_km * np.sin(heading) / KM_PER_DEG, -80.0, 80.0))
    cos_lat = max(np.cos(np.radians(0.5 * (lat + lat_deg))), 0.15)
    return float(normalize_lon(lon_deg + distance_km * np.cos(heading) / (KM_PER_DEG * cos_lat))), lat


def life_tau(peak_tau: float, age: int, life: int) -> float:
    """Optical depth of a member through its life: rises to ``peak_tau`` mid-life, never below 55% of it."""
    return float(peak_tau * (0.55 + 0.45 * np.sin(np.pi * (age + 0.5) / life)))


def front_track(key: int, day: int, lon: float, lat: float, hemisphere: int, config: WeatherConfig,
                rng: np.random.Generator) -> StormMember:
    """A frontal storm: a fast arc moving east and equatorward, growing as it goes."""
    life = int(rng.integers(config.front_life_sols[0], config.front_life_sols[1] + 1))
    speed = rng.uniform(*config.front_speed_km_per_sol)
    heading = -hemisphere * rng.uniform(10.0, 30.0)
    length, width = rng.uniform(*config.front_length_km), rng.uniform(*config.front_width_km)
    bend = length * rng.uniform(0.6, 1.5)
    peak, seed = rng.uniform(*config.tau_range), int(rng.integers(1 << 30))
    member = StormMember(key, "storm track north" if hemisphere > 0 else "storm track south", day)
    for age in range(life):
        member.states.append(PlumeState(key, day + age, FRONT, lon, lat, heading, length, width, bend,
                                        life_tau(peak, age, life), seed, age))
        lon, lat = step_position(lon, lat, heading, speed)
        heading -= hemisphere * rng.uniform(4.0, 12.0)
        length *= rng.uniform(1.0, 1.2)
        width *= rng.uniform(1.0, 1.12)
    return member


def plume_track(key: int, day: int, lon: float, lat: float, heading: float, life: int, origin: str,
                config: WeatherConfig, rng: np.random.Generator) -> StormMember:
    """A plume of puffs drifting toward ``heading``, lengthening as puffs are added upwind."""
    speed = rng.uniform(*config.local_speed_km_per_sol)
    length, width = rng.uniform(*config.local_length_km), rng.uniform(*config.local_width_km)
    bend = float(rng.choice([-1.0, 1.0]) * length * rng.uniform(0.8, 3.0))
    peak, seed = rng.uniform(*config.tau_range), int(rng.integers(1 << 30))
    member = StormMember(key, origin, day)
    for age in range(life):
        member.states.append(PlumeState(key, day + age, PUFFS, lon, lat, heading, length, width, bend,
                                        life_tau(peak, age, life), seed, age))
        lon, lat = step_position(lon, lat, heading, speed)
        heading += rng.normal(0.0, 10.0)
        length *= rng.uniform(1.05, 1.3)
        width *= rng.uniform(1.0, 1.1)
    return member


def flushing_chain(front: StormMember, first_key: int, config: WeatherConfig,
                   rng: np.random.Generator) -> list[StormMember]:
    """Two plumes that carry a frontal storm's dust toward the equator, one after the other."""
    last = front.states[-1]
    hemisphere = 1 if last.lat_deg > 0 else -1
    heading = -hemisphere * rng.uniform(65.0, 85.0)
    lon, lat = step_position(last.lon_deg, last.lat_deg, heading, 0.5 * last.width_km)
    chain = []
    day = last.day + 1
    for k in range(2):
        member = plume_track(first_key + k, day, lon, lat, heading, int(rng.integers(1, 3)), "flushing", config, rng)
        chain.append(member)
        end = member.states[-1]
        day = end.day + 1
        lon, lat = step_position(end.lon_deg, end.lat_deg, heading, 0.6 * end.length_km)
    return chain


def local_genesis(ls_deg: float, potential: SphereNoise, rng: np.random.Generator) -> tuple[float, float]:
    """Where a local plume starts: latitude near the sub-solar one, longitude where the lifting potential is high."""
    for _ in range(30):
        lat = float(np.clip(subsolar_latitude_deg(ls_deg) + rng.normal(0.0, 20.0), -70.0, 70.0))
        lon = float(rng.uniform(-180.0, 180.0))
        if rng.random() < 0.15 + 0.85 * (0.5 + 0.5 * float(potential.sample(lat, lon))):
            break
    return lon, lat


def draw_members(calendar: pd.DataFrame, config: WeatherConfig, seed: int = 0) -> list[StormMember]:
    """Every member over the calendar (``day``, ``ls`` columns), sequences marked by ``sequence_key``."""
    rng = np.random.default_rng([seed, 111])
    potential = SphereNoise.draw(25.0, 25.0, rng)
    members: list[StormMember] = []
    next_sequence = 0
    for day, ls in zip(calendar["day"].to_numpy(), calendar["ls"].to_numpy()):
        for hemisphere, lat0 in zip((1, -1), config.front_lat_deg):
            rate = 0.5 * config.front_rate_per_sol * front_activity(ls, hemisphere, config)
            for _ in range(rng.poisson(rate)):
                lat = lat0 + rng.normal(0.0, 3.0)
                front = front_track(len(members), int(day), float(rng.uniform(-180, 180)), lat, hemisphere, config, rng)
                members.append(front)
                if rng.random() < config.flushing_probability:
                    next_sequence += 1
                    front.sequence_key = next_sequence
                    for member in flushing_chain(front, len(members), config, rng):
                        member.sequence_key = next_sequence
                        members.append(member)
        for _ in range(rng.poisson(config.local_rate_per_sol * local_activity(ls, config))):
            lon, lat = local_genesis(ls, potential, rng)
            heading = prevailing_wind_deg(lat) + rng.normal(0.0, 25.0)
            life = int(rng.geometric(1.0 / config.local_life_mean_sols))
            members.append(plume_track(len(members), int(day), lon, lat, heading, life, "local", config, rng))
    return members
