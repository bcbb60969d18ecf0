"""Named configurations of the synthetic Mars (see the package docstring for the reasoning)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from marsdust.synth.calendar import CalendarConfig
from marsdust.synth.imaging import CloudConfig, ImagingConfig
from marsdust.synth.planet import PlanetConfig
from marsdust.synth.storms import StormClimatology


@dataclass(frozen=True)
class SynthConfig:
    """Everything that defines a synthetic archive.

    Parameters
    ----------
    name : str
    res_deg : float
        Map resolution (0.1° = native MOC, 1200 × 3600; 0.4° = 300 × 900).
    calendar : CalendarConfig
    sol_stride, sols_per_run : int
        Which sols get a map: runs of ``sols_per_run`` consecutive sols every ``sol_stride``
        sols (consecutive sols keep members trackable in subsampled archives).
    missing_sol_fraction : float
        Fraction of selected sols without a map (the real archive has some).
    planet, storms, imaging, clouds : configs of each part
    write_cubes : bool
        Also write the MDAD v1.1 netCDF cubes + master CSVs.
    write_cloud_masks : bool
        Also write each map's water-ice cloud mask (``cloudmask/<SUBPHASE>/<map_id>.nc``, see
        :mod:`marsdust.cloudmask`).
    """

    name: str = "custom"
    res_deg: float = 0.4
    calendar: CalendarConfig = field(default_factory=CalendarConfig)
    sol_stride: int = 1
    sols_per_run: int = 1
    missing_sol_fraction: float = 0.0
    planet: PlanetConfig = field(default_factory=PlanetConfig)
    storms: StormClimatology = field(default_factory=StormClimatology)
    imaging: ImagingConfig = field(default_factory=ImagingConfig)
    clouds: CloudConfig = field(default_factory=CloudConfig)
    write_cubes: bool = True
    write_cloud_masks: bool = True


def _dense_storms() -> StormClimatology:
    """The storm rate of ``demo`` and ``bench``: ~5× ``full``, ≈ 2–3 storms per map."""
    return StormClimatology(genesis_per_sol=1.0, off_season_fraction=0.3, sequence_probability=0.2)


def ci_config() -> SynthConfig:
    """≈ 61 single maps at 0.4° on the paper's calendar (MY24 Ls150 – MY28 Ls121), one every 43 sols,
    storm rate boosted ~8× (the default temporal split gets ≈ 26 train / 13 val / 13 test maps)."""
    return SynthConfig(
        name="ci",
        res_deg=0.4,
        sol_stride=43,
        sols_per_run=1,
        storms=StormClimatology(genesis_per_sol=1.5, off_season_fraction=0.35, sequence_probability=0.2),
    )


def demo_config() -> SynthConfig:
    """≈ 142 maps at 0.4° on the paper's calendar: pairs of consecutive sols every 37 sols, storm rate
    boosted ~5× (the default temporal split gets ≈ 62 train / 30 val / 30 test maps)."""
    return SynthConfig(
        name="demo",
        res_deg=0.4,
        sol_stride=37,
        sols_per_run=2,
        storms=_dense_storms(),
    )


def bench_config() -> SynthConfig:
    """The paper's MOC calendar (MY24 Ls150 – MY28 Ls121), pairs of sols every 10 sols, 0.4°.

    Storm rate as ``demo`` (~5× ``full``, ≈ 2–3 storms per map, close to the whole MDAD's
    14,974 instances over ≈ 5,000 MOC + MARCI maps): with ``full``'s sparse weather a CPU
    training budget of minutes per detector sees too few storms to learn anything.
    """
    return SynthConfig(name="bench", res_deg=0.4, sol_stride=10, sols_per_run=2,
                       storms=_dense_storms())


def full_config() -> SynthConfig:
    """The MOC archive at native 0.1°: every sol MY24 Ls150 – MY28 Ls121 less ~3% (≈ 2,540 maps)."""
    return SynthConfig(name="full", res_deg=0.1, missing_sol_fraction=0.03)


PRESETS = {"ci": ci_config, "demo": demo_config, "bench": bench_config, "full": full_config}


def get_preset(name: str) -> SynthConfig:
    """The configuration of a named preset (``ci``, ``demo``, ``bench``, ``full``)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown synth preset {name!r}; expected one of {sorted(PRESETS)}") from None


__all__ = ["SynthConfig", "PRESETS", "get_preset", "ci_config", "demo_config", "bench_config", "full_config", "replace"]
