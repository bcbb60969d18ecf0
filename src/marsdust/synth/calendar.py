"""Mars calendar of the synthetic archive: Mars years, sols, solar longitude, mission subphases.

Subphases are named after the missions' own: MGS MOC ``M01``…``S20`` (:data:`MOC_SUBPHASE_PLAN`),
MRO ``P01``…, ``B01``…, ``G01``…, ``D01``… (:data:`MRO_SUBPHASE_PLAN`); a calendar imaged by
both names each part after its own mission (:func:`build_calendar`'s ``subphase_plans``).

Ls comes from the Kepler orbit of :mod:`marsdust.mdad_format` (eccentricity 0.0934, perihelion at
Ls 251°, 668.6 sols per Mars year, Ls 0 at sol 0 of each Mars year), the same orbit the MDAD
cube writer uses for its sol-of-year columns: accurate to a fraction of a degree against the
Allison & McEwen (2000) formula, which is all a synthetic archive needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from marsdust.mdad_format import (  # noqa: F401 - ORBIT_ECCENTRICITY, LS_PERIHELION_DEG: re-exported
    LS_PERIHELION_DEG,
    ORBIT_ECCENTRICITY,
    SOLS_PER_MARS_YEAR,
    ls_from_sol_of_year,
    sol_of_year_from_ls,
)

MOC_SUBPHASE_PLAN: tuple[tuple[str, int], ...] = (("M", 23), ("E", 23), ("R", 23), ("S", 20))
"""MOC-like mission subphases in order: letter and count (M01…M23, E01…E23, R01…R23, S01…S20)."""


MRO_SUBPHASE_PLAN: tuple[tuple[str, int], ...] = (("P", 22), ("B", 22), ("G", 22), ("D", 22), ("F", 22), ("J", 22))
"""MRO mission subphases in order (primary science phase P01…P22 from MY28 Ls ≈ 132, then the
extended missions B, G, D, F, J, 22 subphases of about one month each)."""


def subphase_names(plan: tuple[tuple[str, int], ...] = MOC_SUBPHASE_PLAN) -> list[str]:
    """Subphase names in mission order (``M01``, …, ``S20``); past the plan, ``X01``, ``X02``, …"""
    names = [f"{letter}{k:02d}" for letter, count in plan for k in range(1, count + 1)]
    return names + [f"X{k:02d}" for k in range(1, 100)]


@dataclass(frozen=True)
class CalendarConfig:
    """The mission calendar: from (start_mars_year, start_ls) to (end_mars_year, end_ls).

    Parameters
    ----------
    start_mars_year, start_ls_deg, end_mars_year, end_ls_deg
        First and last sol of the archive (Ls in degrees). The defaults are the MOC MDGM
        archive of the paper: MY24 Ls 150° to MY28 Ls 121°.
    subphase_sols : int
        Mean subphase length in sols (MOC subphases are about one Earth month, ~30 sols); each
        subphase draws its length from ``subphase_sols ± 2``.
    """

    start_mars_year: int = 24
    start_ls_deg: float = 150.0
    end_mars_year: int = 28
    end_ls_deg: float = 121.0
    subphase_sols: int = 30


def build_calendar(config: CalendarConfig, seed: int = 0,
                   subphase_plans: tuple = ((None, MOC_SUBPHASE_PLAN),)) -> pd.DataFrame:
    """Every sol of the mission, one row each.

    Parameters
    ----------
    config : CalendarConfig
    seed : int
        Seed of the subphase lengths.
    subphase_plans : tuple of (start, plan)
        From ``start`` (``(mars_year, ls_deg)``: the first sol at or after it; None for the first
        sol of the calendar, which the first plan must have) on, subphases are named by ``plan``
        from its first name (:func:`subphase_names`), until the next start. Default: the MOC
        plan throughout.

    Returns
    -------
    DataFrame
        Columns ``day`` (sols since the first sol), ``mars_year``, ``sol_of_year`` (integer sol
        of the Mars year, Ls 0 = sol 0), ``ls`` (degrees at the sol's middle), ``subphase``
        (``R18``) and ``sol`` (1-based sol within the subphase).
    """
    first = int(np.ceil(sol_of_year_from_ls(config.start_ls_deg)))
    last = int(np.floor(sol_of_year_from_ls(config.end_ls_deg)))
    year_len = int(np.floor(SOLS_PER_MARS_YEAR))
    years, sols = [], []
    year, sol = config.start_mars_year, first
    while (year, sol) <= (config.end_mars_year, last):
        years.append(year)
        sols.append(sol)
        sol += 1
        # a Mars year has 668 or 669 sols; start a new year once Ls wraps past 360°
        if sol > year_len or (sol == year_len and ls_from_sol_of_year(sol + 0.5) < 180.0):
            year, sol = year + 1, 0
    if not years:
        raise ValueError(f"calendar {config} is empty: its end comes before its start")
    sol_of_year = np.asarray(sols)
    table = pd.DataFrame(
        {
            "day": np.arange(len(sols)),
            "mars_year": np.asarray(years, dtype=int),
            "sol_of_year": sol_of_year,
            "ls": np.round(ls_from_sol_of_year(sol_of_year + 0.5), 3),
        }
    )
    rng = np.random.default_rng([seed, 7])
    starts = [first_day_at(table, start) for start, _ in subphase_plans]
    if not starts or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])):
        raise ValueError(f"subphase plans must start at the calendar's first sol and follow each other in time, got "
                         f"starts {[start for start, _ in subphase_plans]} (days {starts})")
    subphase, sol_in = [], []
    for (_, plan), first, stop in zip(subphase_plans, starts, starts[1:] + [len(table)]):
        names, k = subphase_names(plan), 0
        while len(subphase) < stop:
            n = int(config.subphase_sols + rng.integers(-2, 3))
            if k >= len(names):
                raise ValueError("calendar needs more subphases than the naming plan provides")
            subphase += [names[k]] * n
            sol_in += list(range(1, n + 1))
            k += 1
        del subphase[stop:], sol_in[stop:]
    table["subphase"] = subphase
    table["sol"] = sol_in
    return table


def first_day_at(calendar: pd.DataFrame, start: tuple[int, float] | None) -> int:
    """``day`` of the first sol at or after ``start`` = ``(mars_year, ls_deg)`` (None: the first sol).

    A start after the calendar's last sol gives ``len(calendar)``.
    """
    if start is None:
        return 0
    mars_year, ls_deg = start
    year = calendar["mars_year"].to_numpy()
    after = (year > mars_year) | ((year == mars_year) & (calendar["ls"].to_numpy() >= ls_deg))
    return int(np.argmax(after)) if after.any() else len(calendar)
