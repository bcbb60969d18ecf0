"""The second look's catalog: member ids, and each sol's visible storms measured on the drawn map.

A storm instance is catalogued on a sol when at least :data:`MIN_VISIBLE_FRACTION` of the pixels
it owns inside its outline (density ≥ :data:`~.plumes.OUTLINE_DENSITY`, the larger
``tau · density`` where outlines overlap) are observed and their area is at least
:data:`MIN_AREA_KM2`. Its outline is the pixel edges of those visible pixels
(:meth:`MapGrid.outline_of`), its area their area on the sphere, its centroid their area-weighted
mean (circular in longitude).

Confidence follows MDAD's meaning (how distinct the storm's edge is) rather than the main
generator's storm-versus-surroundings contrast: the red contrast, on the written 8-bit map,
between a band just inside the outline and a band just outside it (:data:`EDGE_BAND_KM` wide)
gives 100, 75 or 50 (:data:`EDGE_CONFIDENCE`).

Member ids follow MDAD: ``<SUBPHASE>_<nnn>`` with the smallest number free in every subphase the
member lives in (so numbers never clash on a map), sequences ``MY<yy>-<nn>`` numbered per Mars
year of their first member.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from marsdust.grid import MapGrid
from marsdust.mdad_format import MAX_MEMBER_NUMBER, format_member_id
from marsdust.synth.planet import KM_PER_DEG
from marsdust.synth.second_look.scene import SolScene
from marsdust.synth.second_look.weather import StormMember

MIN_AREA_KM2 = 3.0e4
"""Smallest catalogued visible storm area, km²."""
MIN_VISIBLE_FRACTION = 0.5
"""A storm mostly hidden by gaps or night is not catalogued."""
EDGE_BAND_KM = 70.0
"""Width of the bands inside and outside an outline whose red contrast sets the confidence."""
EDGE_CONFIDENCE = ((20.0, 100), (9.0, 75))
"""(red contrast across the edge in 8-bit counts, confidence): the first reached applies, else 50."""


@dataclass
class MemberIds:
    """MDAD ids by member key: ``member_id`` (``L03_007``), its ``number`` (7) and ``sequence_id``."""

    member_id: dict[int, str]
    number: dict[int, int]
    sequence_id: dict[int, str]


def number_members(members: list[StormMember], calendar: pd.DataFrame) -> MemberIds:
    """MDAD ids of the members that start within the calendar (members with no free number get none)."""
    subphase_of = calendar["subphase"].to_numpy()
    year_of = calendar["mars_year"].to_numpy()
    last_day = len(calendar) - 1
    taken: dict[str, set[int]] = {}
    ids = MemberIds({}, {}, {})
    sequence_names: dict[int, str] = {}
    per_year: dict[int, int] = {}
    for member in sorted(members, key=lambda m: (m.start_day, m.key)):
        if member.start_day > last_day:
            continue
        spans = {subphase_of[min(s.day, last_day)] for s in member.states}
        used = set().union(*(taken.get(sub, set()) for sub in spans))
        number = next((n for n in range(1, MAX_MEMBER_NUMBER + 1) if n not in used), None)
        if number is None:
            continue
        for sub in spans:
            taken.setdefault(sub, set()).add(number)
        ids.member_id[member.key] = format_member_id(subphase_of[member.start_day], number)
        ids.number[member.key] = number
        if member.sequence_key is not None:
            if member.sequence_key not in sequence_names:
                year = int(year_of[member.start_day])
                per_year[year] = per_year.get(year, 0) + 1
                sequence_names[member.sequence_key] = f"MY{year}-{per_year[year]:02d}"
            ids.sequence_id[member.key] = sequence_names[member.sequence_key]
    return ids


def edge_confidence(red: np.ndarray, storm: np.ndarray, any_storm: np.ndarray, valid: np.ndarray, band_px: int) -> int:
    """Confidence of one storm from the red contrast across its edge (boxes around the storm)."""
    from scipy.ndimage import binary_dilation, binary_erosion

    structure = np.ones((3, 3), bool)
    inner = storm & ~binary_erosion(storm, structure, iterations=band_px)
    outer = binary_dilation(storm, structure, iterations=band_px) & ~any_storm & valid
    if inner.sum() < 3 or outer.sum() < 3:
        return 50
    contrast = float(red[inner].mean() - red[outer].mean())
    return next((level for threshold, level in EDGE_CONFIDENCE if contrast >= threshold), 50)


def centroid_lonlat(visible: np.ndarray, rows: np.ndarray, cols: np.ndarray, grid: MapGrid) -> tuple[float, float]:
    """Area-weighted centroid (lon, lat) of a visible-pixel box (circular mean in longitude)."""
    weights = visible * grid.row_pixel_area_km2()[rows, None]
    lat = float((weights * grid.lat_centers_deg[rows, None]).sum() / weights.sum())
    lon_rad = np.radians(grid.lon_centers_deg[cols])[None, :]
    lon = float(np.degrees(np.arctan2((weights * np.sin(lon_rad)).sum(), (weights * np.cos(lon_rad)).sum())))
    return float((lon + 180.0) % 360.0 - 180.0), lat


@dataclass
class CatalogEntry:
    """One visible storm on one sol: its member key, visible pixels (in its box) and measures."""

    key: int
    rows: np.ndarray
    cols: np.ndarray
    visible: np.ndarray
    area_km2: float
    lon: float
    lat: float
    confidence: int


def visible_storm(scene: SolScene, index: int, grid: MapGrid) -> CatalogEntry | None:
    """The catalog entry of storm ``index`` of a scene, or None if it is not catalogued."""
    field, state = scene.fields[index], scene.states[index]
    if field is None:
        return None
    box = field.box
    owner = scene.owner[box.index]
    valid = scene.valid[box.index]
    owned = owner == index
    visible = owned & valid
    n_visible = int(visible.sum())
    if n_visible < 4 or n_visible < MIN_VISIBLE_FRACTION * int(owned.sum()):
        return None
    area = float(visible.sum(axis=1) @ grid.row_pixel_area_km2()[box.rows])
    if area < MIN_AREA_KM2:
        return None
    lon, lat = centroid_lonlat(visible, box.rows, box.cols, grid)
    band_px = max(1, int(round(EDGE_BAND_KM / (grid.res_deg * KM_PER_DEG))))
    red = scene.rgb[..., 0][box.index].astype(np.float32)
    confidence = edge_confidence(red, visible, owner >= 0, valid, band_px)
    return CatalogEntry(state.member_key, box.rows, box.cols, visible, area, lon, lat, confidence)


def entry_row(entry: CatalogEntry, ids: MemberIds, origin: str, tau: float, row: dict, grid: MapGrid) -> dict:
    """The truth-table row of a catalog entry on the map of ``row`` (a maps-table record)."""
    strip = np.zeros((entry.rows.size, grid.width), bool)
    strip[:, entry.cols] = entry.visible
    return {
        "map_id": row["map_id"], "subphase": row["subphase"], "sol": int(row["sol"]),
        "mars_year": int(row["mars_year"]), "ls": float(row["ls"]), "lon": round(entry.lon, 3),
        "lat": round(entry.lat, 3), "area_km2": round(entry.area_km2, 1), "confidence": entry.confidence,
        "member_id": ids.member_id[entry.key], "sequence_id": ids.sequence_id.get(entry.key, ""),
        "polygon_wkt": grid.outline_of(strip, int(entry.rows[0])).wkt, "source": origin,
        "member_key": entry.key, "tau": round(tau, 3),
    }


def sol_catalog(scene: SolScene, origins: dict[int, str], ids: MemberIds, row: dict,
                grid: MapGrid) -> tuple[list[dict], np.ndarray]:
    """Catalog rows of one drawn sol and its MDAD label image (uint8 (H, W); 255 where unobserved)."""
    labels = np.zeros(grid.shape, np.uint8)
    rows_out = []
    for index, state in enumerate(scene.states):
        if state.member_key not in ids.number:
            continue
        entry = visible_storm(scene, index, grid)
        if entry is None:
            continue
        index_box = np.ix_(entry.rows, entry.cols)
        labels[index_box] = np.where(entry.visible, np.uint8(ids.number[entry.key]), labels[index_box])
        rows_out.append(entry_row(entry, ids, origins[entry.key], state.tau, row, grid))
    labels[~scene.valid] = 255
    return rows_out, labels
