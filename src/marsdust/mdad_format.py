"""The MDAD file format in one place: the rules its readers and writers share.

The format modules :mod:`marsdust.formats.mdad_table` and :mod:`marsdust.formats.mdad_cube` read and
write MDAD (the catalog front door :mod:`marsdust.mdad` and :mod:`marsdust.synth` go through them).
Both sides take every rule of the format from here, so what is written reads back by construction.

Contents
--------
* Member ids (``D01_031``, ``D16_001b``, ``D01_031+032``): :func:`parse_member_id` →
  :class:`MemberId` (decode), :func:`format_member_id` (encode), and their cube values
  (:func:`member_cube_value`, :func:`cube_value_member`): 1–133 a member number, 134–250 a split
  member "b" (number + :data:`SPLIT_OFFSET`), 255 a missing pixel.
* Names: the ``dayList`` entry of a map (:func:`day_list_entry`), where a Mars year's cube and
  master CSV live (:func:`cube_path`, :func:`master_csv_path`, :func:`mars_year_from_name`), the
  columns of the storm table the readers give (:data:`STORM_COLUMNS`), of the v1.1 master CSV
  (:data:`MASTER_COLUMNS`) and of the v1.0 table (:data:`V10_COLUMNS`).
* The v1.1 netCDF cube layout: variable and dimension names, the ``timeList`` columns
  (:func:`time_list_row`) and the latitude registration of map rows on the cube's
  point-registered latitudes (:func:`grid_labels_to_cube` writes it, :func:`cube_grid` places a
  cube's pixels on a map grid when reading, :func:`cube_to_grid_labels` inverts the writer).
* The Mars calendar of ``timeList``'s sol-of-year columns: :func:`sol_of_year_from_ls` and
  :func:`ls_from_sol_of_year` (one Kepler orbit).

Cube pixel placement. ``longitude`` holds cell centres; ``latitude`` holds ``180/res + 1``
point-registered values -90 … 90 (1801 at 0.1°). Map row ``i`` (row 0 north) is stored at the
cube latitude point at its *northern edge* (``90 - i * res`` on a global map). Points that carry
no map row (the -90° point, and every point whose cell lies outside a MOC map's band) hold 255.
Cubes whose latitudes are cell centres (``180/res`` values) are also read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marsdust.grid import MapGrid, normalize_lon


class CatalogError(ValueError):
    """An MDAD file cannot be read as documented; the message names file, row and column."""


# ---------------------------------------------------------------------------------------------
# cube values and member ids
# ---------------------------------------------------------------------------------------------
CONFIDENCE_LEVELS = (50, 75, 100)
"""MDAD confidence levels (how distinct the storm edge is), percent."""

MAX_MEMBER_NUMBER = 133
"""Largest member number within a subphase (cube values 1–133)."""

SPLIT_OFFSET = 133
"""Cube value of a split member "b" is its number + 133 (134–250): ``R18_031b`` → 164."""

MAX_STORM_LABEL = 250
"""Largest storm value a cube can hold (1–133 members, 134–250 split members "b")."""

MAX_SPLIT_NUMBER = MAX_STORM_LABEL - SPLIT_OFFSET
"""Largest number of a split member "b" (117, cube value 250)."""

MISSING_VALUE = 255
"""Cube value of a missing MDGM pixel (and everything outside a MOC map's band)."""


@dataclass(frozen=True)
class MemberId:
    """A parsed MDAD member ID.

    Attributes
    ----------
    text : str
        The ID as MDAD writes it (``D01_031``, ``D16_001b``, ``D01_031+032``,
        ``G13_001b+002+017``, ``P08_033+P09_010+011+013``), spaces removed.
    members : tuple of (subphase, number, split)
        Every member joined in the ID, in order (``P08_033+P09_010`` →
        ``(("P08", 33, False), ("P09", 10, False))``); ``split`` marks a split member "b".

    Notes
    -----
    MDAD v1.1 stores one value per instance in its cube: that of the *first* member (its number,
    + 133 for a split member "b"), whatever the day's subphase. ``D01_031+032`` → 31,
    ``D16_001b`` → 134, ``G13_001b+002+017`` → 134, ``P08_033+P09_010+011+013`` → 33.
    """

    text: str
    members: tuple[tuple[str, int, bool], ...]

    @property
    def subphase(self) -> str:
        """Subphase of the first member."""
        return self.members[0][0]

    @property
    def split(self) -> bool:
        """True if the first member is a split member "b" (its cube value is number + 133)."""
        return self.members[0][2]

    @property
    def groups(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """Member numbers per subphase, in order (``(("P08", (33,)), ("P09", (10, 11, 13)))``)."""
        groups: list[tuple[str, list[int]]] = []
        for subphase, number, _ in self.members:
            if not groups or groups[-1][0] != subphase:
                groups.append((subphase, []))
            groups[-1][1].append(number)
        return tuple((sp, tuple(nums)) for sp, nums in groups)

    @property
    def numbers(self) -> tuple[int, ...]:
        """Every member number of the ID, in order (split members without the +133)."""
        return tuple(number for _, number, _ in self.members)

    @property
    def mask_value(self) -> int:
        """The cube value of this instance: the first member's number (+ 133 if split "b")."""
        _, number, split = self.members[0]
        return number + SPLIT_OFFSET if split else number

    def cube_values(self, subphase: str | None = None) -> tuple[int, ...]:
        """Cube values of this instance: ``(mask_value,)`` on a day of any subphase (first-member rule)."""
        return (self.mask_value,)


_MEMBER_PART = re.compile(r"^(?:([A-Za-z]+\d+)_)?(\d+)([bB]?)$")


def parse_member_id(text) -> MemberId:
    """Parse an MDAD member ID (the one parser of member IDs, for readers and writers alike).

    Accepted forms: ``D01_031``, ``D16_001b`` (split member), ``D01_031+032`` (joined),
    ``G13_001b+002+017`` (joined, first one split), ``P08_033+P09_010+011+013`` (joined across
    subphases: a number without a subphase belongs to the subphase before it).
    Case-insensitive, spaces ignored.

    Raises
    ------
    ValueError
        If ``text`` is not of these forms or a number is outside 1–133 (split: 1–117).
    """
    raw = "" if text is None else str(text)
    cleaned = re.sub(r"\s+", "", raw)
    members: list[tuple[str, int, bool]] = []
    for part in cleaned.split("+") if cleaned else [""]:
        match = _MEMBER_PART.match(part)
        if not match or (match.group(1) is None and not members):
            members = []
            break
        subphase = match.group(1).upper() if match.group(1) else members[-1][0]
        members.append((subphase, int(match.group(2)), bool(match.group(3))))
    if not members:
        raise ValueError(
            f"member ID {raw!r} is not of the form SUBPHASE_NNN[b] (e.g. 'D01_031', 'D16_001b', "
            "'D01_031+032', 'P08_033+P09_010+011+013')"
        )
    for _, number, split in members:
        limit = MAX_SPLIT_NUMBER if split else MAX_MEMBER_NUMBER
        if not 1 <= number <= limit:
            raise ValueError(f"member ID {raw!r}: member number {number} outside 1–{limit}")
    return MemberId(cleaned, tuple(members))


def format_member_id(subphase: str, number: int, split: bool = False) -> str:
    """The member ID of one member, as MDAD writes it: ``("R18", 31)`` → ``"R18_031"``, split → ``"R18_031b"``.

    The inverse of :func:`parse_member_id` for a single member (joined IDs are ``+``-joined
    single IDs, the later ones without their subphase when it repeats). Numbers are not checked
    here: :func:`parse_member_id` rejects those outside 1–133 (split: 1–117).
    """
    return f"{subphase}_{int(number):03d}{'b' if split else ''}"


def member_cube_value(member_id: str) -> int:
    """Cube value of an MDAD member id: ``"R18_031"`` → 31, ``"R18_031b"`` → 164, ``"R18_031+032"`` → 31."""
    return parse_member_id(member_id).mask_value


def cube_value_member(value: int) -> tuple[int, bool]:
    """Member number and split flag of a storm cube value: 31 → ``(31, False)``, 164 → ``(31, True)``.

    Raises
    ------
    ValueError
        If ``value`` is not a storm value (1–250).
    """
    value = int(value)
    if not 1 <= value <= MAX_STORM_LABEL:
        raise ValueError(f"cube value {value} is not a storm value (1–{MAX_STORM_LABEL})")
    return (value - SPLIT_OFFSET, True) if value > SPLIT_OFFSET else (value, False)


# ---------------------------------------------------------------------------------------------
# names and table columns
# ---------------------------------------------------------------------------------------------
STORM_COLUMNS = [
    "map_id", "subphase", "sol", "mars_year", "ls", "lon", "lat", "area_km2",
    "confidence", "member_id", "sequence_id", "polygon_wkt",
]
"""Columns of the storm table every MDAD reader gives, in order (``polygon_wkt`` is missing (None / NaN: test
with ``pd.isna``) where no outline is known)."""

MASTER_COLUMNS = ("subphase", "sol", "mem_ID", "seq_ID", "confidence_flag", "area", "swathLs", "centroid_lon",
                  "centroid_lat")
"""Columns of an MDAD v1.1 master CSV (one row per storm instance; no Mars year: it comes from the cube)."""

V10_COLUMNS = {
    "mars_year": "Mars Year", "subphase": "Mission subphase", "sol": "Sol", "ls": "Ls",
    "lon": "Centroid longitude", "lat": "Centroid latitude", "area_km2": "Area (square km)",
    "confidence": "Confidence interval", "member_id": "Member ID", "sequence_id": "Sequence ID",
}
"""Storm-table column → header of the MDAD v1.0 table (the real catalogue's spelling)."""


def day_list_entry(subphase: str, sol: int) -> str:
    """The ``dayList`` entry of a map: ``("R18", 40)`` → ``"R18_day40"`` (read back by :func:`marsdust.naming.parse_map_name`)."""
    return f"{subphase.upper()}_day{int(sol):02d}"


def cube_path(out_dir: str | os.PathLike, mars_year: int) -> Path:
    """Where MDAD v1.1 keeps a Mars year's cube: ``OUT/MY25/MDADMY25.nc``."""
    return Path(out_dir) / f"MY{int(mars_year):02d}" / f"MDADMY{int(mars_year):02d}.nc"


def master_csv_path(out_dir: str | os.PathLike, mars_year: int) -> Path:
    """Where a Mars year's master CSV is written, beside its cube: ``OUT/MY25/MDAD_MY25_master.csv``."""
    return cube_path(out_dir, mars_year).parent / f"MDAD_MY{int(mars_year):02d}_master.csv"


def mars_year_from_name(path: str | os.PathLike) -> int | None:
    """The Mars year in a cube's or master's file or folder name (``MY25/MDADMY25.nc`` → 25), or None."""
    path = Path(path)
    for text in (path.stem, path.parent.name):
        match = re.search(r"MY_?(\d+)", text, re.IGNORECASE)
        if match:
            return int(match.group(1))
    return None


# ---------------------------------------------------------------------------------------------
# the v1.1 netCDF cube
# ---------------------------------------------------------------------------------------------
LABELS_VARIABLE = "MDAD"
"""The label variable, ``MDAD(time, longitude, latitude)`` uint8."""
DAY_LIST_VARIABLE = "dayList"
"""``dayList(time)``: :func:`day_list_entry` of each time step."""
TIME_LIST_VARIABLE = "timeList"
"""``timeList(time, 8)``: :func:`time_list_row` of each time step."""
SOL_OF_YEAR_VARIABLE = "soy"
"""``soy(time)``: the median sol of the Mars year (``timeList`` column :data:`TIME_LIST_MEDIAN_SOL`)."""
MARS_YEAR_VARIABLE = "marsYear"
"""``marsYear(time)``: marsdust's extra variable, the Mars year of each step."""
TIME_DIM, LON_DIM, LAT_DIM, TIME_STAT_DIM = "time", "longitude", "latitude", "timeStat"
"""Dimension names of a cube."""

TIME_LIST_COLUMNS = 8
"""``timeList`` columns: start, end, mean, median sol of the year (0–3), then the same of Ls (4–7)."""
TIME_LIST_MEDIAN_SOL = 3
TIME_LIST_START_LS = 4
TIME_LIST_MEDIAN_LS = 7


def time_list_row(sol_of_year: float, ls_deg: float) -> np.ndarray:
    """The ``timeList`` row of a one-map time step: its sol of the year four times, then its Ls four times."""
    return np.array([float(sol_of_year)] * 4 + [float(ls_deg)] * 4)


def cube_latitudes_deg(res_deg: float) -> np.ndarray:
    """Point-registered cube latitudes -90 … 90 ascending (180/res + 1 values), as MDAD v1.1 has."""
    n = int(round(180.0 / res_deg))
    return -90.0 + np.arange(n + 1) * res_deg


def _cube_rows_for_grid(grid: MapGrid) -> tuple[np.ndarray, np.ndarray]:
    """For each cube latitude point: whether it carries a grid row, and which row it samples.

    A latitude point ``L`` carries the grid row whose *northern edge* is ``L`` (the cell
    ``[L - res, L]``, the row just south of it), which is how :func:`cube_grid` reads it back.
    Points with no such row in the band are missing (255): those north of the band, and those on
    or south of its southern edge (for a MOC map the -60° point, whose cell [-60.4°, -60°] at 0.4°
    lies outside the map; a copy of the last row there would read back as a storm one row beyond
    the band).
    """
    lat = cube_latitudes_deg(grid.res_deg)
    rows = np.floor((grid.lat_north_deg - lat) / grid.res_deg + 1e-6).astype(np.int64)
    in_band = (rows >= 0) & (rows < grid.height)
    return in_band, np.clip(rows, 0, grid.height - 1)


def grid_labels_to_cube(labels: np.ndarray, grid: MapGrid, valid: np.ndarray | None = None) -> np.ndarray:
    """A ``(height, width)`` label image on ``grid`` → one cube slice ``(longitude, latitude)`` uint8.

    Pixels where ``valid`` is False, and latitude points that carry no row of ``grid``, get
    :data:`MISSING_VALUE`.
    """
    labels = np.asarray(labels)
    if labels.shape != grid.shape:
        raise ValueError(f"labels shape {labels.shape} does not match the grid's {grid.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > MAX_STORM_LABEL):
        raise ValueError(f"labels must be in 0..{MAX_STORM_LABEL}, got {labels.min()}..{labels.max()}")
    out = labels.astype(np.uint8)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != grid.shape:
            raise ValueError(f"valid mask shape {valid.shape} does not match the grid's {grid.shape}")
        out = np.where(valid, out, np.uint8(MISSING_VALUE)).astype(np.uint8)
    in_band, rows = _cube_rows_for_grid(grid)
    cube_lat_lon = np.full((rows.size, grid.width), MISSING_VALUE, dtype=np.uint8)
    cube_lat_lon[in_band] = out[rows[in_band]]
    return np.ascontiguousarray(cube_lat_lon.T)


def cube_to_grid_labels(cube_slice: np.ndarray, grid: MapGrid) -> np.ndarray:
    """Inverse of :func:`grid_labels_to_cube`: a ``(longitude, latitude)`` slice → ``(height, width)`` on ``grid``.

    Row ``i`` takes the cube latitude point at its northern edge.
    """
    lat = cube_latitudes_deg(grid.res_deg)
    if cube_slice.shape != (grid.width, lat.size):
        raise ValueError(f"cube slice shape {cube_slice.shape} does not match ({grid.width}, {lat.size})")
    north_edges = grid.lat_north_deg - np.arange(grid.height) * grid.res_deg
    points = np.rint((north_edges + 90.0) / grid.res_deg).astype(np.int64)
    return np.ascontiguousarray(np.asarray(cube_slice)[:, points].T)


def cube_grid(lon_deg: np.ndarray, lat_deg: np.ndarray, source: str = "cube") -> tuple[MapGrid, np.ndarray, np.ndarray]:
    """Place cube pixels on a global map grid (the reader's side of the latitude registration).

    Parameters
    ----------
    lon_deg : ndarray
        Cube longitudes (cell centres, any convention: normalized to [-180, 180)).
    lat_deg : ndarray
        Cube latitudes: ``180/res + 1`` point-registered values (-90 … 90) or ``180/res`` cell centres.
    source : str
        Name of the cube in error messages.

    Returns
    -------
    grid : MapGrid
        :meth:`MapGrid.marci` at the cube's resolution.
    column_order : ndarray of int
        Cube longitude index of each map column (west to east).
    row_index : ndarray of int
        Cube latitude index of each map row (north to south).

    Raises
    ------
    CatalogError
        Axes that are not evenly spaced and global.
    """
    lon = normalize_lon(np.asarray(lon_deg, dtype=np.float64))
    n_lon = lon.size
    if n_lon < 2:
        raise CatalogError(f"{source}: longitude axis has {n_lon} value(s)")
    grid = MapGrid.from_width(n_lon)
    res = grid.res_deg
    columns = np.floor((lon + 180.0) / res + 1e-6).astype(np.int64)
    if not np.array_equal(np.sort(columns), np.arange(n_lon)):
        raise CatalogError(f"{source}: longitudes are not {n_lon} evenly spaced cell centres covering 360°")
    column_order = np.empty(n_lon, dtype=np.int64)
    column_order[columns] = np.arange(n_lon)
    lat = np.asarray(lat_deg, dtype=np.float64)
    if lat.size == grid.height + 1:
        # point-registered: map row i is read from the point at its northern edge (90 - i * res);
        # the -90° point (row index = height) belongs to no row
        rows = np.round((grid.lat_north_deg - lat) / res).astype(np.int64)
    elif lat.size == grid.height:
        rows = np.floor((grid.lat_north_deg - lat) / res).astype(np.int64)
    else:
        raise CatalogError(
            f"{source}: latitude axis has {lat.size} values; expected {grid.height + 1} point-registered "
            f"(-90 … 90) or {grid.height} cell centres for {n_lon} longitudes ({res}°)"
        )
    row_index = np.full(grid.height, -1, dtype=np.int64)
    inside = (rows >= 0) & (rows < grid.height)
    row_index[rows[inside]] = np.nonzero(inside)[0]
    if (row_index < 0).any():
        raise CatalogError(f"{source}: latitudes do not cover -90 … 90 at {res}° spacing")
    return grid, column_order, row_index


# ---------------------------------------------------------------------------------------------
# Mars calendar: sol of the year <-> solar longitude
# ---------------------------------------------------------------------------------------------
SOLS_PER_MARS_YEAR = 668.6
"""Mean length of a Mars year in sols."""
ORBIT_ECCENTRICITY = 0.0934
"""Eccentricity of Mars' orbit."""
LS_PERIHELION_DEG = 251.0
"""Solar longitude of perihelion, degrees."""


def _mean_anomaly_rad(ls_deg):
    """Mean anomaly (radians) of Mars at solar longitude ``ls_deg``."""
    e = ORBIT_ECCENTRICITY
    true_anomaly = np.radians(np.asarray(ls_deg, float) - LS_PERIHELION_DEG)
    eccentric = 2.0 * np.arctan(np.sqrt((1 - e) / (1 + e)) * np.tan(true_anomaly / 2.0))
    return eccentric - e * np.sin(eccentric)


_MEAN_ANOMALY_AT_LS0 = float(_mean_anomaly_rad(0.0))


def ls_from_sol_of_year(sol_of_year):
    """Solar longitude (degrees in [0, 360)) of a (fractional) sol of the Mars year.

    Kepler orbit: eccentricity 0.0934, perihelion at Ls 251°, 668.6 sols per Mars year, Ls 0 at
    sol 0; accurate to a fraction of a degree against Allison & McEwen (2000).

    Parameters
    ----------
    sol_of_year : float or array_like
        Sols since Ls 0 of the same Mars year (0 ≤ sol < 668.6).
    """
    e = ORBIT_ECCENTRICITY
    mean = _MEAN_ANOMALY_AT_LS0 + 2.0 * np.pi * np.asarray(sol_of_year, float) / SOLS_PER_MARS_YEAR
    eccentric = mean.copy()
    for _ in range(8):  # Newton on Kepler's equation
        eccentric = eccentric - (eccentric - e * np.sin(eccentric) - mean) / (1 - e * np.cos(eccentric))
    true_anomaly = 2.0 * np.arctan2(np.sqrt(1 + e) * np.sin(eccentric / 2), np.sqrt(1 - e) * np.cos(eccentric / 2))
    ls = np.mod(np.degrees(true_anomaly) + LS_PERIHELION_DEG, 360.0)
    return float(ls) if ls.ndim == 0 else ls


def sol_of_year_from_ls(ls_deg):
    """Sol of the Mars year (float, in [0, 668.6)) at which Ls reaches ``ls_deg`` (same orbit as :func:`ls_from_sol_of_year`)."""
    mean = _mean_anomaly_rad(ls_deg)
    sol = np.mod((mean - _MEAN_ANOMALY_AT_LS0) / (2 * np.pi), 1.0) * SOLS_PER_MARS_YEAR
    return float(sol) if np.ndim(sol) == 0 else sol


def mars_time_sols(mars_year, ls_deg) -> np.ndarray:
    """Sols since Ls 0 of Mars year 0 (float): a time axis that runs on across Mars-year boundaries.

    Uses the Kepler orbit of :func:`sol_of_year_from_ls` (668.6 sols per
    Mars year; a fraction of a degree of Ls from Allison & McEwen 2000).
    """
    year = np.asarray(mars_year, dtype=float)
    return year * SOLS_PER_MARS_YEAR + np.asarray(sol_of_year_from_ls(np.asarray(ls_deg, dtype=float)), dtype=float)
