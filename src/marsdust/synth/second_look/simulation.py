"""The second look over its calendar: which sols get maps, the weather, member ids, drawing a sol.

The calendar is the main generator's Mars calendar (:func:`marsdust.synth.calendar.build_calendar`)
over :attr:`SecondLookConfig.period`, its subphases renamed ``<letter>01``, ``<letter>02``, …
(default ``L``: map ids never collide with the main generator's ``M``/``E``/``R``/``S``/``X``).
The default period is the test period of the training engine's default temporal split
(MY27 Ls 180° – MY28 Ls 121°): the seasons on which detectors are tested in the main archive.
Maps come in pairs of consecutive sols spread evenly over the period (tracking can link them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from marsdust.grid import MapGrid
from marsdust.naming import make_map_id
from marsdust.synth.calendar import CalendarConfig, build_calendar
from marsdust.synth.second_look.scene import AppearanceConfig, SecondLookWorld, SolScene, render_sol
from marsdust.synth.second_look.truth import number_members, sol_catalog
from marsdust.synth.second_look.weather import WeatherConfig, draw_members, haze_tau

LAYOUTS = ("moc", "marci")
"""Map layouts: ``moc`` (60°S–60°N, :meth:`MapGrid.moc`) and ``marci`` (global, :meth:`MapGrid.marci`)."""


def layout_grid(layout: str, res_deg: float) -> MapGrid:
    """The map grid of a layout name at ``res_deg``."""
    if layout not in LAYOUTS:
        raise ValueError(f"second-look layout must be one of {LAYOUTS}, got {layout!r}")
    return MapGrid.moc(res_deg) if layout == "moc" else MapGrid.marci(res_deg)


@dataclass(frozen=True)
class SecondLookConfig:
    """Everything that defines a second-look archive besides its grid, size and seed.

    Parameters
    ----------
    period : (start_mars_year, start_ls_deg, end_mars_year, end_ls_deg)
        The calendar the maps are spread over.
    subphase_letter : str
        Letter of the subphase names (``L`` → ``L01``, ``L02``, …).
    weather : WeatherConfig
    appearance : AppearanceConfig
    write_cubes, write_cloud_masks : bool
        Also write the MDAD v1.1 cubes + master CSVs, and the per-map cloud masks.
    """

    period: tuple[int, float, int, float] = (27, 180.0, 28, 121.0)
    subphase_letter: str = "L"
    weather: WeatherConfig = field(default_factory=WeatherConfig)
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    write_cubes: bool = True
    write_cloud_masks: bool = True


def second_look_calendar(config: SecondLookConfig, seed: int) -> pd.DataFrame:
    """Every sol of the period (``build_calendar``'s columns), subphases renamed with ``subphase_letter``."""
    start_year, start_ls, end_year, end_ls = config.period
    calendar = build_calendar(CalendarConfig(start_year, start_ls, end_year, end_ls), seed)
    names = {old: f"{config.subphase_letter}{k:02d}" for k, old in enumerate(pd.unique(calendar["subphase"]), start=1)}
    return calendar.assign(subphase=calendar["subphase"].map(names))


def map_days(n_days: int, n_maps: int) -> np.ndarray:
    """``n_maps`` days out of ``n_days``: pairs of consecutive sols spread evenly (an odd count ends with one sol)."""
    if n_maps < 1:
        raise ValueError(f"n_maps must be at least 1, got {n_maps}")
    n_pairs = -(-n_maps // 2)
    stride = (n_days - 1) // n_pairs
    if stride < 2:
        raise ValueError(f"{n_maps} maps (pairs of consecutive sols) do not fit in a period of {n_days} sols")
    starts = np.arange(n_pairs) * stride
    return np.stack([starts, starts + 1], axis=1).ravel()[:n_maps]


class SecondLookSimulation:
    """The second look of one configuration and seed on one grid.

    ``maps`` lists the sols that get a map (``map_id, subphase, sol, mars_year, ls, path,
    haze_tau, day, sol_of_year``); :meth:`draw` draws and catalogues one of them.
    """

    def __init__(self, grid: MapGrid, n_maps: int, seed: int = 0, config: SecondLookConfig | None = None,
                 out_dir=None):
        self.grid, self.seed = grid, seed
        self.config = config or SecondLookConfig()
        self.calendar = second_look_calendar(self.config, seed)
        self.members = draw_members(self.calendar, self.config.weather, seed)
        self.ids = number_members(self.members, self.calendar)
        self.origins = {m.key: m.origin for m in self.members}
        self.alive: dict[int, list] = {}
        for member in self.members:
            for state in member.states:
                self.alive.setdefault(state.day, []).append(state)
        self.world = SecondLookWorld.build(grid, self.config.appearance, seed)
        maps = self.calendar.iloc[map_days(len(self.calendar), n_maps)].copy()
        maps["map_id"] = [make_map_id(s, n) for s, n in zip(maps["subphase"], maps["sol"])]
        out = Path(out_dir) if out_dir is not None else Path(".")
        maps["path"] = [str(out / "archive" / s / f"{m}.png") for s, m in zip(maps["subphase"], maps["map_id"])]
        maps["haze_tau"] = [round(haze_tau(ls, self.config.weather), 4) for ls in maps["ls"]]
        self.maps = maps[["map_id", "subphase", "sol", "mars_year", "ls", "path", "haze_tau", "day", "sol_of_year"]]

    def draw(self, row: dict) -> tuple[SolScene, list[dict], np.ndarray]:
        """The scene, catalog rows and MDAD label image of one ``maps`` row (a dict)."""
        scene = render_sol(self.world, self.alive.get(row["day"], []), row["day"], row["ls"], row["haze_tau"])
        storms, labels = sol_catalog(scene, self.origins, self.ids, row, self.grid)
        return scene, storms, labels
