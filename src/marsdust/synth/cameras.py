"""The cameras of the synthetic Mars (MGS MOC and MRO MARCI) and when each one images.

A :class:`Camera` is everything that differs between the two real archives of daily global maps:

================  =============================================  ==============================================
                  ``moc`` (MGS MOC, :func:`moc_camera`)           ``marci`` (MRO MARCI, :func:`marci_camera`)
================  =============================================  ==============================================
years             MY24 Ls 150 – MY28 Ls 121                       MY28 Ls ≈ 130 on (MY28 – MY32 in MDAD)
map band          60°S – 60°N (``MapGrid.moc``)                   90°S – 90°N (``MapGrid.marci``)
orbit             ~2 pm, 13 swaths a sol                          ~3 pm, ~13 swaths a sol, pole to pole
gaps              1–4° at the equator, closing by 25–55°          0.5–2°, closing by 15–40°
seams             2.5% swath-to-swath brightness steps            5% steps, stronger darkening at swath edges
polar night       rows where the noon sun is below 12°            rows where the 3 pm sun is below the horizon
bands             red, blue; green = 1/3 red + 2/3 blue           red, green, blue, each its own mix and stretch
artifacts         none                                            dropped and striped lines; JPEG compression
file              ``<SUBPHASE>/<subphase>_<sol:03d>.png``         ``<SUBPHASE>/<SUBPHASE>_day<NN>.jpg`` (q 90)
subphases         ``M01``…``S20`` (MGS)                           ``P01``…, ``B01``…, ``G01``…, ``D01``… (MRO)
================  =============================================  ==============================================

MARCI maps are named as MDAD v1.1 names them in its cubes' ``dayList`` (``B05_day03``): the archive
indexer reads that stem as subphase ``B05``, sol 3, map id ``b05_003``
(:func:`marsdust.naming.parse_map_name`), the same map id the catalog uses. The JPEG's 8 × 8 blocks
turn a black gap's edge into near-black noise; :func:`marsdust.mdgm.valid_mask` reads missing
pixels of lossy maps by a threshold instead of exact black.

A :class:`CameraEpoch` says when a camera images (a span of the calendar) and whether its years
get MDAD v1.1 cubes: ``SynthConfig.cameras`` lists the epochs of an archive (default: MOC over the
whole calendar, cubes for every year).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from marsdust.grid import MapGrid
from marsdust.mdad_format import day_list_entry
from marsdust.naming import make_map_id
from marsdust.synth.bands import ThreeBandResponse
from marsdust.synth.calendar import MOC_SUBPHASE_PLAN, MRO_SUBPHASE_PLAN
from marsdust.synth.imaging import SWATHS_PER_SOL, ImagingConfig

MARCI_JPEG_QUALITY = 90
"""JPEG quality of the synthetic MARCI maps (Pillow's scale; 4:2:0 chroma subsampling)."""


@dataclass(frozen=True)
class MapFormat:
    """How a camera's maps are stored: ``"png"`` (lossless) or ``"jpeg"`` at ``jpeg_quality``."""

    name: str = "png"
    jpeg_quality: int = MARCI_JPEG_QUALITY

    def __post_init__(self):
        if self.name not in ("png", "jpeg"):
            raise ValueError(f"map format must be 'png' or 'jpeg', got {self.name!r}")

    @property
    def extension(self) -> str:
        """File extension with its dot: ``.png`` or ``.jpg``."""
        return ".png" if self.name == "png" else ".jpg"

    def write(self, rgb: np.ndarray, path: Path) -> None:
        """Write an 8-bit RGB map (H, W, 3) atomically."""
        from marsdust.synth.writer import write_jpeg, write_png

        if self.name == "png":
            write_png(rgb, path)
        else:
            write_jpeg(rgb, path, self.jpeg_quality)


@dataclass(frozen=True)
class Camera:
    """One camera's maps: band, imaging, file format, file names and mission subphases.

    Parameters
    ----------
    name : str
        ``"moc"`` or ``"marci"`` (written in ``truth/maps.csv``'s ``camera`` column).
    lat_north_deg, lat_south_deg : float
        Latitude band of its maps.
    imaging : ImagingConfig
        Swaths, seams, gaps, polar night, artifacts, noise and band response.
    map_format : MapFormat
    subphase_plan : tuple of (letter, count)
        Its mission's subphase names (:func:`marsdust.synth.calendar.subphase_names`).
    day_names : bool
        Name map files as MDAD ``dayList`` entries (``B05_day03``) instead of map ids (``s20_023``).
    """

    name: str
    lat_north_deg: float
    lat_south_deg: float
    imaging: ImagingConfig = field(default_factory=ImagingConfig)
    map_format: MapFormat = field(default_factory=MapFormat)
    subphase_plan: tuple[tuple[str, int], ...] = MOC_SUBPHASE_PLAN
    day_names: bool = False

    def grid(self, res_deg: float) -> MapGrid:
        """The camera's map grid at ``res_deg`` degrees per pixel."""
        return MapGrid(self.lat_north_deg, self.lat_south_deg, res_deg)

    def map_file_name(self, subphase: str, sol: int) -> str:
        """File name of one map: ``s20_023.png`` (MOC) or ``B05_day03.jpg`` (MARCI)."""
        stem = day_list_entry(subphase, sol) if self.day_names else make_map_id(subphase, sol)
        return stem + self.map_format.extension


def moc_camera() -> Camera:
    """MGS MOC daily global maps: 60°S–60°N, ~2 pm, PNG (the imaging defaults of :class:`ImagingConfig`)."""
    return Camera("moc", 60.0, -60.0)


MARCI_BANDS = ThreeBandResponse(mix=((0.85, 0.15), (0.65, 0.35), (0.05, 0.95)),
                                ranges=((0.0, 0.33), (0.0, 0.36), (0.0, 0.36)))
"""MARCI's colour: its red filter sees some blue, its green band both, its blue almost only blue;
a warmer, more orange stretch than MOC's (average ground ≈ (149, 100, 71) against MOC's
(127, 96, 81)), with the darkest ground still ≈ 20–35 in every channel (luma ≈ 28), so a
threshold near black tells the missing pixels of a JPEG apart."""


def marci_camera() -> Camera:
    """MRO MARCI daily global maps: 90°S–90°N, ~3 pm, JPEG, seams, line artifacts, MRO subphases."""
    imaging = ImagingConfig(
        swath_shift_deg_per_sol=360.0 / SWATHS_PER_SOL * 0.95,
        seam_gain_std=0.05,
        swath_edge_falloff=0.10,
        gap_probability=0.10,
        gap_width_deg=(0.5, 2.0),
        gap_close_lat_deg=(15.0, 40.0),
        missing_swath_probability=0.02,
        swath_overlap_lat_deg=50.0,
        min_sun_elevation_deg=0.0,
        polar_night_local_time_h=15.0,
        line_dropouts_per_swath=0.15,
        line_stripes_per_swath=0.3,
        noise_std=0.004,
        bands=MARCI_BANDS,
    )
    return Camera("marci", 90.0, -90.0, imaging=imaging, map_format=MapFormat("jpeg"),
                  subphase_plan=MRO_SUBPHASE_PLAN, day_names=True)


CAMERAS = {"moc": moc_camera, "marci": marci_camera}
"""The cameras by name."""


@dataclass(frozen=True)
class CameraEpoch:
    """When one camera images: from (``start_mars_year``, ``start_ls_deg``) until (``end_mars_year``, ``end_ls_deg``).

    Sols outside every epoch get no map (their weather still happens). The subphases of an epoch
    are named by its camera's mission from its start until the next epoch's start.

    Parameters
    ----------
    camera : Camera
    start_mars_year : int or None
        None: from the calendar's first sol (the first epoch must start there).
    start_ls_deg : float
    end_mars_year : int or None
        None: to the calendar's last sol (else the first sol at or after the end gets no map).
    end_ls_deg : float
    write_cubes : bool
        Whether the maps of this epoch go into the MDAD v1.1 cubes (``SynthConfig.write_cubes``
        must be on too); the v1.0 table lists every epoch's storms.
    """

    camera: Camera = field(default_factory=moc_camera)
    start_mars_year: int | None = None
    start_ls_deg: float = 0.0
    end_mars_year: int | None = None
    end_ls_deg: float = 360.0
    write_cubes: bool = True

    @property
    def start(self) -> tuple[int, float] | None:
        """``(mars_year, ls_deg)`` of the first sol, or None for the calendar's first."""
        return None if self.start_mars_year is None else (self.start_mars_year, self.start_ls_deg)

    @property
    def end(self) -> tuple[int, float] | None:
        """``(mars_year, ls_deg)`` where imaging stops (that sol and later get no map), or None."""
        return None if self.end_mars_year is None else (self.end_mars_year, self.end_ls_deg)
