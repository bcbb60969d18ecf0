"""Named configurations of the synthetic Mars (see the package docstring for the reasoning)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from marsdust.synth.calendar import CalendarConfig
from marsdust.synth.cameras import CameraEpoch, marci_camera, moc_camera
from marsdust.synth.imaging import CloudConfig
from marsdust.synth.looks import LookRandomization
from marsdust.synth.planet import PlanetConfig
from marsdust.synth.storms import StormClimatology


@dataclass(frozen=True)
class SynthConfig:
    """Everything that defines a synthetic archive.

    Parameters
    ----------
    name : str
    res_deg : float
        Map resolution (0.1° = native MOC, 1200 × 3600, and MARCI, 1800 × 3600; at 0.4° a MOC
        map is 300 × 900).
    calendar : CalendarConfig
        The whole archive's calendar (the weather runs over all of it).
    cameras : tuple of CameraEpoch
        Which camera images when (:mod:`marsdust.synth.cameras`), in time order; default the
        MOC camera over the whole calendar.
    sol_stride, sols_per_run : int
        Which sols get a map: runs of ``sols_per_run`` consecutive sols every ``sol_stride``
        sols (consecutive sols keep members trackable in subsampled archives).
    missing_sol_fraction : float
        Fraction of selected sols without a map (the real archive has some).
    planet, storms, clouds : configs of each part
    write_cubes : bool
        Also write the MDAD v1.1 netCDF cubes + master CSVs (for the Mars years of the epochs
        whose ``write_cubes`` is on).
    write_cloud_masks : bool
        Also write each map's water-ice cloud mask (``cloudmask/<SUBPHASE>/<map_id>.nc``, see
        :mod:`marsdust.cloudmask`).
    look : LookRandomization or None
        Draw each map's camera and storm look (every map, or the randomization's ``share`` of them)
        around its camera's own (:mod:`marsdust.synth.looks`); None draws every map with the camera's
        look. The weather, swaths and catalogue are the same either way.
    """

    name: str = "custom"
    res_deg: float = 0.4
    calendar: CalendarConfig = field(default_factory=CalendarConfig)
    cameras: tuple[CameraEpoch, ...] = (CameraEpoch(),)
    sol_stride: int = 1
    sols_per_run: int = 1
    missing_sol_fraction: float = 0.0
    planet: PlanetConfig = field(default_factory=PlanetConfig)
    storms: StormClimatology = field(default_factory=StormClimatology)
    clouds: CloudConfig = field(default_factory=CloudConfig)
    write_cubes: bool = True
    write_cloud_masks: bool = True
    look: LookRandomization | None = None


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


TWO_CAMERA_CALENDAR = CalendarConfig(start_mars_year=24, start_ls_deg=150.0, end_mars_year=32, end_ls_deg=359.0)
"""MY24 Ls 150 – MY32 Ls 359: the MOC years, then the MARCI years of MDAD."""
MOC_END = (28, 121.0)
"""Where the MOC maps end (MY28 Ls 121)."""
MARCI_START = (28, 130.0)
"""Where the MARCI maps begin (MY28 Ls 130; MRO's science phase began near Ls 132)."""


def two_camera_epochs() -> tuple[CameraEpoch, ...]:
    """MOC maps until MY28 Ls 121 (no cubes, as in MDAD), MARCI maps from MY28 Ls 130 (cubes)."""
    return (CameraEpoch(moc_camera(), end_mars_year=MOC_END[0], end_ls_deg=MOC_END[1], write_cubes=False),
            CameraEpoch(marci_camera(), start_mars_year=MARCI_START[0], start_ls_deg=MARCI_START[1]))


def twocam_config() -> SynthConfig:
    """Both cameras, MY24 Ls150 – MY32 at 0.4°: pairs of consecutive sols every 45 sols (≈ 240 maps,
    about half MOC, half MARCI), storm rate as ``demo``, seasonal polar caps (the MARCI maps see
    the poles); v1.1 cubes for the MARCI years only."""
    return SynthConfig(name="twocam", res_deg=0.4, calendar=TWO_CAMERA_CALENDAR, cameras=two_camera_epochs(),
                       sol_stride=45, sols_per_run=2, storms=_dense_storms(), clouds=CloudConfig(polar_caps=True))


def twocam_ci_config() -> SynthConfig:
    """``twocam`` for tests: one sol every 90 sols at 0.4° (≈ 60 maps), storm rate as ``ci``."""
    return replace(twocam_config(), name="twocam_ci", sol_stride=90, sols_per_run=1, storms=ci_config().storms)


PRESETS = {"ci": ci_config, "demo": demo_config, "bench": bench_config, "full": full_config,
           "twocam": twocam_config, "twocam_ci": twocam_ci_config}
"""Named presets: name → function returning its :class:`SynthConfig`."""


def get_preset(name: str, random_look: float = 0.0) -> SynthConfig:
    """The configuration of a named preset (a key of :data:`PRESETS`).

    ``random_look`` (0–1; True = 1) is the share of maps whose look is drawn by the default
    :class:`~marsdust.synth.looks.LookRandomization` (name ``<name>_randlook``); 0 keeps every camera's look.
    """
    try:
        config = PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown synth preset {name!r}; expected one of {sorted(PRESETS)}") from None
    if not 0.0 <= float(random_look) <= 1.0:
        raise ValueError(f"random_look is the share of maps in a random look, 0 to 1; got {random_look}")
    if not random_look:
        return config
    return replace(config, name=f"{name}_randlook", look=LookRandomization(share=float(random_look)))


__all__ = ["SynthConfig", "PRESETS", "get_preset", "ci_config", "demo_config", "bench_config", "full_config",
           "twocam_config", "twocam_ci_config", "two_camera_epochs", "replace"]
