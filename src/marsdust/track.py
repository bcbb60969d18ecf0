"""Link storm detections from sol to sol into members and sequences, as MDAD defines them.

Definitions (Battalio & Wang 2021, MDAD)
----------------------------------------
* *instance*: one storm on one map (one row of the detections table).
* *member*: one storm followed over consecutive sols (a chain of instances).
* *sequence*: storms on a coherent path over at least 3 sols — here, the members joined by
  merges and splits (or a single long-lived member) that together cover >= ``min_sequence_sols``
  maps.

How linking works (explainable on purpose)
------------------------------------------
1. Maps are ordered by (Mars year, Ls). Map B *follows* map A when B comes later and either both
   have sol numbers in the same subphase (parsed from ``map_id`` or given as ``subphase``/``sol``
   columns) with ``0 < sol_B - sol_A <= max_gap_sols``, or otherwise the Ls advance is in
   ``(0, max_ls_gap_deg]`` (default ``1° × max_gap_sols``: Mars moves 0.42–0.66° of Ls per sol,
   so 1° means one or two sols).
2. A storm on map B may continue a member whose last instance is on a map that B follows, if
   their outlines overlap (``polygon_wkt``; outlines are split at 180° the same way on every map,
   so overlap works across the antimeridian) or if their centroids are closer than
   ``min_link_km + size_factor * r_eq`` on the sphere, with ``r_eq = sqrt(area / pi)`` the
   equivalent radius of the larger of the two storms (big storms may move their centroid more).
   Centroid distances are great-circle distances, so 179°E and 179°W are 2° apart.
3. Candidate pairs are assigned one-to-one greedily: overlapping pairs first, then by descending
   product of the two areas, then by ascending distance. So when two storms merge, the merged
   storm continues the *larger* member and the smaller member ends; when a storm splits, the
   larger piece continues the member and the smaller piece starts a new one.
4. Every candidate pair that lost (the merge/split partners) joins the two members into the same
   sequence group; a group spanning at least ``min_sequence_sols`` distinct maps is a sequence.

Identifiers
-----------
* ``member_id`` = ``<SUBPHASE>_<nnn>``, numbered 1, 2, … within the subphase of the member's first
  map, in order of first appearance (then by longitude), like MDAD's ``R18_031``. When a map id
  has no subphase (``parse_map_name`` fails) the prefix is ``MY<yy>``.
* ``sequence_id`` = ``MY<yy>_S<nnn>``, numbered within the Mars year where the sequence starts
  (e.g. ``MY25_S001``); empty string for members that belong to no sequence.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from marsdust.grid import MARS_RADIUS_KM
from marsdust.naming import parse_map_name

REQUIRED_COLUMNS = ("map_id", "mars_year", "ls", "lon", "lat", "area_km2")


def great_circle_km(lon_a_deg, lat_a_deg, lon_b_deg, lat_b_deg, radius_km: float = MARS_RADIUS_KM):
    """Great-circle distance in km on the Mars sphere (haversine; wraps at 180° by construction)."""
    lon_a, lat_a, lon_b, lat_b = (np.radians(np.asarray(v, dtype=np.float64)) for v in (lon_a_deg, lat_a_deg, lon_b_deg, lat_b_deg))
    h = np.sin((lat_b - lat_a) / 2) ** 2 + np.cos(lat_a) * np.cos(lat_b) * np.sin((lon_b - lon_a) / 2) ** 2
    return 2.0 * radius_km * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


class _UnionFind:
    def __init__(self):
        self.parent: dict[int, int] = {}

    def add(self, item: int) -> None:
        self.parent.setdefault(item, item)

    def find(self, item: int) -> int:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)


def _map_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per map: map_id, mars_year, ls, subphase, sol (NaN if unknown), position in time order."""
    maps = df.groupby("map_id", sort=False).agg(mars_year=("mars_year", "first"), ls=("ls", "first")).reset_index()
    if "subphase" in df.columns and "sol" in df.columns:
        first = df.groupby("map_id", sort=False)[["subphase", "sol"]].first()
        maps["subphase"] = maps["map_id"].map(first["subphase"]).astype(str).str.upper()
        maps["sol"] = maps["map_id"].map(first["sol"]).astype(float)
    else:
        subphases, sols = [], []
        for map_id, year in zip(maps["map_id"], maps["mars_year"]):
            try:
                subphase, sol = parse_map_name(map_id)
            except ValueError:
                subphase, sol = f"MY{int(year):02d}", math.nan
            subphases.append(subphase)
            sols.append(float(sol))
        maps["subphase"], maps["sol"] = subphases, sols
    maps = maps.sort_values(["mars_year", "ls", "map_id"], kind="stable").reset_index(drop=True)
    maps["position"] = np.arange(len(maps))
    maps["time_deg"] = maps["mars_year"].astype(float) * 360.0 + maps["ls"].astype(float)
    return maps


def _follows(maps: pd.DataFrame, earlier: int, later: int, max_gap_sols: int, max_ls_gap_deg: float) -> bool:
    """Whether the map at position ``later`` follows the one at ``earlier`` closely enough to continue its storms."""
    sub_a, sub_b = maps["subphase"].iat[earlier], maps["subphase"].iat[later]
    sol_a, sol_b = maps["sol"].iat[earlier], maps["sol"].iat[later]
    if sub_a == sub_b and not (math.isnan(sol_a) or math.isnan(sol_b)):
        return 0 < sol_b - sol_a <= max_gap_sols
    return 0.0 < maps["time_deg"].iat[later] - maps["time_deg"].iat[earlier] <= max_ls_gap_deg


def _overlap_matrix(prev_wkt, new_wkt) -> np.ndarray:
    """Whether outlines overlap with positive area (False where an outline is missing)."""
    import shapely

    def parse(values):
        return np.array([shapely.from_wkt(v) if isinstance(v, str) and v.strip() else None for v in values], dtype=object)

    prev_geoms, new_geoms = parse(prev_wkt), parse(new_wkt)
    known = np.array([g is not None for g in prev_geoms])[:, None] & np.array([g is not None for g in new_geoms])[None, :]
    out = np.zeros(known.shape, dtype=bool)
    if known.any():
        i, j = np.nonzero(known)
        out[i, j] = shapely.area(shapely.intersection(prev_geoms[i], new_geoms[j])) > 0
    return out


def track(
    detections: pd.DataFrame,
    max_gap_sols: int = 1,
    max_ls_gap_deg: float | None = None,
    min_link_km: float = 300.0,
    size_factor: float = 1.5,
    min_sequence_sols: int = 3,
) -> pd.DataFrame:
    """Link detections into members and sequences (see the module docstring for the rules).

    Parameters
    ----------
    detections : DataFrame
        Columns ``map_id, mars_year, ls, lon, lat, area_km2`` (degrees, km²); ``polygon_wkt``
        (outline in lon/lat degrees) used when present; optional ``subphase``/``sol``.
    max_gap_sols : int
        Largest sol gap a member may bridge (1 = only the next sol).
    max_ls_gap_deg : float, optional
        Largest Ls advance (degrees) between maps whose sols are not comparable; default
        ``1.0 * max_gap_sols``.
    min_link_km : float
        Centroid distance (km) always allowed between linked instances.
    size_factor : float
        Extra allowed distance per km of the larger storm's equivalent radius.
    min_sequence_sols : int
        Distinct maps a group of linked members must cover to be a sequence (MDAD: 3).

    Returns
    -------
    DataFrame
        A copy of ``detections`` (same row order) with ``member_id`` and ``sequence_id`` (``""``
        when the member is in no sequence).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in detections.columns]
    if missing:
        raise ValueError(f"detections table lacks columns {missing}; expected at least {list(REQUIRED_COLUMNS)}")
    if max_gap_sols < 1:
        raise ValueError(f"max_gap_sols must be >= 1, got {max_gap_sols}")
    max_ls_gap_deg = 1.0 * max_gap_sols if max_ls_gap_deg is None else float(max_ls_gap_deg)
    out = detections.copy()
    if len(out) == 0:
        out["member_id"] = pd.Series(dtype="object")
        out["sequence_id"] = pd.Series(dtype="object")
        return out

    df = detections.reset_index(drop=True)
    maps = _map_table(df)
    position_of = dict(zip(maps["map_id"], maps["position"]))
    row_position = df["map_id"].map(position_of).to_numpy()
    lon = df["lon"].to_numpy(dtype=float)
    lat = df["lat"].to_numpy(dtype=float)
    area = df["area_km2"].to_numpy(dtype=float)
    wkt = df["polygon_wkt"].to_numpy(dtype=object) if "polygon_wkt" in df.columns else np.full(len(df), None, dtype=object)
    order = np.argsort(row_position, kind="stable")
    rows_by_position = np.split(order, np.searchsorted(row_position[order], np.arange(1, len(maps))))

    member_of_row = np.full(len(df), -1, dtype=np.int64)
    last_row_of_member: list[int] = []
    groups = _UnionFind()

    def start_member(row: int) -> None:
        member_of_row[row] = len(last_row_of_member)
        groups.add(len(last_row_of_member))
        last_row_of_member.append(row)

    time_deg = maps["time_deg"].to_numpy()
    # members still worth checking: last seen within a generous Ls window (keeps this linear in time)
    window_deg = max_ls_gap_deg + 2.0 * max_gap_sols
    recent: list[int] = []
    for position, new_rows in enumerate(rows_by_position):
        recent = [m for m in recent if time_deg[position] - time_deg[row_position[last_row_of_member[m]]] <= window_deg]
        active = [
            m for m in recent
            if row_position[last_row_of_member[m]] < position
            and _follows(maps, int(row_position[last_row_of_member[m]]), position, max_gap_sols, max_ls_gap_deg)
        ]
        n_before = len(last_row_of_member)
        if not active or len(new_rows) == 0:
            for row in new_rows:
                start_member(row)
            recent.extend(range(n_before, len(last_row_of_member)))
            continue
        prev_rows = np.array([last_row_of_member[m] for m in active])
        distance_km = great_circle_km(lon[prev_rows][:, None], lat[prev_rows][:, None], lon[new_rows][None, :], lat[new_rows][None, :])
        radius_km = np.sqrt(np.maximum(area[prev_rows][:, None], area[new_rows][None, :]) / np.pi)
        overlap = _overlap_matrix(wkt[prev_rows], wkt[new_rows])
        valid = overlap | (distance_km <= min_link_km + size_factor * radius_km)
        pairs = sorted(
            zip(*np.nonzero(valid)),
            key=lambda ij: (not overlap[ij], -area[prev_rows[ij[0]]] * area[new_rows[ij[1]]], distance_km[ij]),
        )
        used_prev, used_new, losers = set(), set(), []
        for i, j in pairs:
            if i in used_prev or j in used_new:
                losers.append((i, j))
                continue
            used_prev.add(i)
            used_new.add(j)
            member = active[i]
            member_of_row[new_rows[j]] = member
            last_row_of_member[member] = new_rows[j]
        for j, row in enumerate(new_rows):
            if j not in used_new:
                start_member(row)
        for i, j in losers:  # merge or split partners: same sequence group
            groups.union(active[i], int(member_of_row[new_rows[j]]))
        recent.extend(range(n_before, len(last_row_of_member)))

    return _assign_ids(out, df, maps, row_position, member_of_row, groups, min_sequence_sols)


def _assign_ids(out, df, maps, row_position, member_of_row, groups, min_sequence_sols) -> pd.DataFrame:
    """MDAD-style member ids per starting subphase and sequence ids per starting Mars year."""
    n_members = int(member_of_row.max()) + 1
    first_row = np.full(n_members, -1, dtype=np.int64)
    for row in np.lexsort((df["lon"].to_numpy(dtype=float), row_position)):
        if first_row[member_of_row[row]] < 0:
            first_row[member_of_row[row]] = row
    member_order = sorted(range(n_members), key=lambda m: (row_position[first_row[m]], df["lon"].iat[first_row[m]]))
    subphase_at = maps["subphase"].to_numpy()
    year_at = maps["mars_year"].to_numpy()
    counters: dict[str, int] = {}
    member_name = {}
    for member in member_order:
        subphase = str(subphase_at[row_position[first_row[member]]])
        counters[subphase] = counters.get(subphase, 0) + 1
        member_name[member] = f"{subphase}_{counters[subphase]:03d}"

    group_positions: dict[int, set] = {}
    for row, member in enumerate(member_of_row):
        group_positions.setdefault(groups.find(int(member)), set()).add(int(row_position[row]))
    sequence_name: dict[int, str] = {}
    year_counters: dict[int, int] = {}
    for group in sorted(group_positions, key=lambda g: min(group_positions[g])):
        positions = group_positions[group]
        if len(positions) < min_sequence_sols:
            continue
        year = int(year_at[min(positions)])
        year_counters[year] = year_counters.get(year, 0) + 1
        sequence_name[group] = f"MY{year:02d}_S{year_counters[year]:03d}"

    out["member_id"] = [member_name[int(m)] for m in member_of_row]
    out["sequence_id"] = [sequence_name.get(groups.find(int(m)), "") for m in member_of_row]
    return out
