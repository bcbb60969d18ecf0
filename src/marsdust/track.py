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
   their outlines overlap (``polygon_wkt``: outline IoU above 0,
   :func:`marsdust.evaluate.matching.outline_iou`; outlines are split at 180° the same way on
   every map, so overlap works across the antimeridian) or if their centroids are closer than
   ``min_link_km + size_factor * r_eq`` on the sphere, with ``r_eq = sqrt(area / pi)`` the
   equivalent radius of the larger of the two storms (big storms may move their centroid more).
   Centroid distances are great-circle distances, so 179°E and 179°W are 2° apart.
   Candidate pairs are found with spatial indexes (a k-d tree of the centroids on the unit sphere
   queried with each storm's own reach ``min_link_km + size_factor * r_eq``, and an R-tree of
   the outlines queried for intersecting ones), so memory and time grow with the number of
   storms per map and the pairs within reach, not with their product.
3. Candidate pairs are assigned one-to-one greedily: overlapping pairs first, then by descending
   product of the two areas, then by ascending distance. So when two storms merge, the merged
   storm continues the *larger* member and the smaller member ends; when a storm splits, the
   larger piece continues the member and the smaller piece starts a new one.
4. Every candidate pair that lost (the merge/split partners) joins the two members into the same
   sequence group (connected components of the member graph whose edges are those pairs); a
   group spanning at least ``min_sequence_sols`` distinct maps is a sequence.

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

from marsdust.evaluate.matching import has_outline
from marsdust.grid import MARS_RADIUS_KM
from marsdust.mdad_format import format_member_id, mars_time_sols
from marsdust.naming import parse_map_name
from marsdust.schema import check_option, check_table

REQUIRED_COLUMNS = ("map_id", "mars_year", "ls", "lon", "lat", "area_km2")


def great_circle_km(lon_a_deg, lat_a_deg, lon_b_deg, lat_b_deg, radius_km: float = MARS_RADIUS_KM):
    """Great-circle distance in km on the Mars sphere (haversine; wraps at 180° by construction)."""
    lon_a, lat_a, lon_b, lat_b = (np.radians(np.asarray(v, dtype=np.float64)) for v in (lon_a_deg, lat_a_deg, lon_b_deg, lat_b_deg))
    h = np.sin((lat_b - lat_a) / 2) ** 2 + np.cos(lat_a) * np.cos(lat_b) * np.sin((lon_b - lon_a) / 2) ** 2
    return 2.0 * radius_km * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def unit_vectors(lon_deg, lat_deg) -> np.ndarray:
    """Points of the unit sphere, ``(n, 3)``, for east longitudes and latitudes in degrees."""
    lon, lat = np.radians(np.asarray(lon_deg, dtype=np.float64)), np.radians(np.asarray(lat_deg, dtype=np.float64))
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def pairs_within_reach(points_a: np.ndarray, points_b: np.ndarray, reach_km: np.ndarray,
                       radius_km: float = MARS_RADIUS_KM) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``(i, j)`` whose great-circle distance is at most ``reach_km[i]`` (and a hair more).

    Parameters
    ----------
    points_a, points_b : ndarray (n, 3), (m, 3)
        :func:`unit_vectors`.
    reach_km : ndarray (n,)
        How far each point of ``a`` reaches, km.

    Returns
    -------
    (i, j) : int arrays
        A superset of the pairs within reach (the chord radius is widened by one part in 10⁹); the
        caller decides each pair on :func:`great_circle_km`.
    """
    from scipy.spatial import cKDTree

    if len(points_a) == 0 or len(points_b) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    half_angle = np.minimum(np.asarray(reach_km, dtype=np.float64) / (2.0 * radius_km), np.pi / 2)
    chord = 2.0 * np.sin(half_angle) * (1.0 + 1e-9) + 1e-12
    found = cKDTree(points_b).query_ball_point(points_a, r=chord)
    counts = np.fromiter((len(f) for f in found), dtype=np.int64, count=len(found))
    i = np.repeat(np.arange(len(points_a), dtype=np.int64), counts)
    j = np.fromiter((k for f in found for k in f), dtype=np.int64, count=int(counts.sum()))
    return i, j


def overlapping_outlines(geoms_a: np.ndarray, geoms_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``(i, j)`` of outlines whose intersection has an area (their outline IoU is above 0).

    Parameters
    ----------
    geoms_a, geoms_b : object ndarray of shapely geometries, None where a storm has no outline

    Returns
    -------
    (i, j) : int arrays, the pairs an R-tree (:class:`shapely.STRtree`) finds intersecting whose IoU
    (as :func:`marsdust.evaluate.matching.outline_iou` computes it) is above 0.
    """
    import shapely

    known_a = np.nonzero(np.not_equal(geoms_a, None))[0]
    known_b = np.nonzero(np.not_equal(geoms_b, None))[0]
    if known_a.size == 0 or known_b.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    query, tree = shapely.STRtree(geoms_b[known_b]).query(geoms_a[known_a], predicate="intersects")
    i, j = known_a[query], known_b[tree]
    a, b = geoms_a[i], geoms_b[j]
    inter = shapely.area(shapely.intersection(a, b))
    union = shapely.area(a) + shapely.area(b) - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return i[iou > 0], j[iou > 0]


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
    check_track_options(max_gap_sols, max_ls_gap_deg, min_link_km, size_factor, min_sequence_sols)
    max_ls_gap_deg = 1.0 * max_gap_sols if max_ls_gap_deg is None else float(max_ls_gap_deg)
    out = detections.copy()
    if len(out) == 0:
        out["member_id"] = pd.Series(dtype="object")
        out["sequence_id"] = pd.Series(dtype="object")
        return out

    df = detections.reset_index(drop=True)
    maps = _map_table(df)
    linker = _Linker(df, maps, max_gap_sols, max_ls_gap_deg, min_link_km, size_factor)
    linker.link_maps()
    group_of_member = _sequence_groups(len(linker.last_row_of_member), linker.partner_edges)
    return _assign_ids(out, df, maps, linker.row_position, linker.member_of_row, group_of_member, min_sequence_sols)


def check_track_options(max_gap_sols: int = 1, max_ls_gap_deg: float | None = None, min_link_km: float = 300.0,
                        size_factor: float = 1.5, min_sequence_sols: int = 3, names: dict | None = None) -> None:
    """Refuse tracking options that are not finite or outside their range (:func:`marsdust.schema.check_option`).

    ``max_gap_sols`` and ``min_sequence_sols`` >= 1, ``max_ls_gap_deg`` in (0, 360] degrees (None: the
    default), ``min_link_km`` and ``size_factor`` >= 0. ``names`` maps a parameter to the name the message
    uses (e.g. ``{"min_link_km": "--min-link-km"}``).
    """
    names = names or {}
    for name, value, low, high, strict in (("max_gap_sols", max_gap_sols, 1, math.inf, False),
                                           ("max_ls_gap_deg", max_ls_gap_deg, 0.0, 360.0, True),
                                           ("min_link_km", min_link_km, 0.0, math.inf, False),
                                           ("size_factor", size_factor, 0.0, math.inf, False),
                                           ("min_sequence_sols", min_sequence_sols, 1, math.inf, False)):
        check_option(names.get(name, name), value, low, high, low_inclusive=not strict)


class _Linker:
    """Steps 2–4 of the module docstring over the maps in time order: which instance continues which member."""

    def __init__(self, df: pd.DataFrame, maps: pd.DataFrame, max_gap_sols: int, max_ls_gap_deg: float,
                 min_link_km: float, size_factor: float):
        self.maps, self.max_gap_sols, self.max_ls_gap_deg = maps, max_gap_sols, max_ls_gap_deg
        self.min_link_km, self.size_factor = min_link_km, size_factor
        position_of = dict(zip(maps["map_id"], maps["position"]))
        self.row_position = df["map_id"].map(position_of).to_numpy()
        self.lon = df["lon"].to_numpy(dtype=float)
        self.lat = df["lat"].to_numpy(dtype=float)
        self.area = df["area_km2"].to_numpy(dtype=float)
        self.points = unit_vectors(self.lon, self.lat)
        self.reach_km = min_link_km + size_factor * np.sqrt(self.area / np.pi)  # with the storm's own radius
        self.geoms = _outlines(df)
        order = np.argsort(self.row_position, kind="stable")
        self.rows_by_position = np.split(order, np.searchsorted(self.row_position[order], np.arange(1, len(maps))))
        self.member_of_row = np.full(len(df), -1, dtype=np.int64)
        self.last_row_of_member: list[int] = []
        self.partner_edges: list[tuple[int, int]] = []  # (member, member) joined by a merge or a split

    def start_member(self, row: int) -> None:
        self.member_of_row[row] = len(self.last_row_of_member)
        self.last_row_of_member.append(row)

    def link_maps(self) -> None:
        """Each map's instances continue the members of the maps it follows, or start members."""
        time_deg = self.maps["time_deg"].to_numpy()
        # members still worth checking: last seen within a generous Ls window (keeps this linear in time)
        window_deg = self.max_ls_gap_deg + 2.0 * self.max_gap_sols
        recent: list[int] = []
        for position, new_rows in enumerate(self.rows_by_position):
            recent = [m for m in recent
                      if time_deg[position] - time_deg[self.row_position[self.last_row_of_member[m]]] <= window_deg]
            n_before = len(self.last_row_of_member)
            self.link_map(position, new_rows, recent)
            recent.extend(range(n_before, len(self.last_row_of_member)))

    def link_map(self, position: int, new_rows: np.ndarray, recent: list[int]) -> None:
        """The instances of the map at ``position``: continue an active member (steps 2–3) or start one."""
        last_position = [int(self.row_position[self.last_row_of_member[m]]) for m in recent]
        follows = {last: last < position and _follows(self.maps, last, position, self.max_gap_sols,
                                                       self.max_ls_gap_deg) for last in set(last_position)}
        active = [m for m, last in zip(recent, last_position) if follows[last]]
        if not active or len(new_rows) == 0:
            for row in new_rows:
                self.start_member(row)
            return
        pairs, losers = self.assign(active, new_rows)
        for i, j in pairs:
            member = active[i]
            self.member_of_row[new_rows[j]] = member
            self.last_row_of_member[member] = new_rows[j]
        used_new = {j for _, j in pairs}
        for j, row in enumerate(new_rows):
            if j not in used_new:
                self.start_member(row)
        for i, j in losers:  # merge or split partners: same sequence group
            self.partner_edges.append((active[i], int(self.member_of_row[new_rows[j]])))

    def candidate_pairs(self, prev_rows: np.ndarray, new_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(i, j, overlap)``: the pairs (index into ``prev_rows``, into ``new_rows``) that may link, in
        row-major order without repeats, and whether their outlines overlap.

        A pair may link when one of its storms reaches the other (step 2 allows the larger storm's
        reach) or their outlines overlap; each is found with a spatial index.
        """
        forward = pairs_within_reach(self.points[prev_rows], self.points[new_rows], self.reach_km[prev_rows])
        new_j, prev_i = pairs_within_reach(self.points[new_rows], self.points[prev_rows], self.reach_km[new_rows])
        overlap_i, overlap_j = overlapping_outlines(self.geoms[prev_rows], self.geoms[new_rows])
        n_new = len(new_rows)
        overlap_keys = overlap_i * n_new + overlap_j
        keys = np.unique(np.concatenate([forward[0] * n_new + forward[1], prev_i * n_new + new_j, overlap_keys]))
        return keys // n_new, keys % n_new, np.isin(keys, overlap_keys)

    def assign(self, active: list[int], new_rows: np.ndarray) -> tuple[list, list]:
        """``(pairs, losers)``: the one-to-one links (active member index, new instance index) of step 3 and
        the candidate pairs that lost (step 4)."""
        prev_rows = np.array([self.last_row_of_member[m] for m in active])
        i, j, overlap = self.candidate_pairs(prev_rows, new_rows)
        prev, new = prev_rows[i], new_rows[j]
        distance_km = great_circle_km(self.lon[prev], self.lat[prev], self.lon[new], self.lat[new])
        radius_km = np.sqrt(np.maximum(self.area[prev], self.area[new]) / np.pi)
        valid = overlap | (distance_km <= self.min_link_km + self.size_factor * radius_km)
        i, j, overlap, distance_km = i[valid], j[valid], overlap[valid], distance_km[valid]
        # overlapping first, then larger area products, then shorter distances; ties stay in row-major order
        order = np.lexsort((distance_km, -(self.area[prev_rows[i]] * self.area[new_rows[j]]), ~overlap))
        used_prev, used_new, pairs, losers = set(), set(), [], []
        for pair in zip(i[order].tolist(), j[order].tolist()):
            if pair[0] in used_prev or pair[1] in used_new:
                losers.append(pair)
                continue
            used_prev.add(pair[0])
            used_new.add(pair[1])
            pairs.append(pair)
        return pairs, losers


def _outlines(df: pd.DataFrame) -> np.ndarray:
    """The outline of each row as a shapely geometry (``polygon_wkt``), None where it has none; parsed once."""
    import shapely

    if "polygon_wkt" not in df.columns:
        return np.full(len(df), None, dtype=object)
    values = df["polygon_wkt"].to_numpy(dtype=object)
    known = has_outline(values)
    geoms = np.full(len(df), None, dtype=object)
    geoms[known] = shapely.from_wkt(values[known])
    return geoms


def _sequence_groups(n_members: int, partner_edges: list[tuple[int, int]]) -> np.ndarray:
    """Group number of each member: connected components of the merge/split partner graph."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = np.asarray(partner_edges, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n_members, n_members))
    return connected_components(graph, directed=False)[1]


def _assign_ids(out, df, maps, row_position, member_of_row, group_of_member, min_sequence_sols) -> pd.DataFrame:
    """MDAD-style member ids per starting subphase and sequence ids per starting Mars year."""
    n_members = len(group_of_member)
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
        member_name[member] = format_member_id(subphase, counters[subphase])

    group_positions: dict[int, set] = {}
    for row, member in enumerate(member_of_row):
        group_positions.setdefault(int(group_of_member[member]), set()).add(int(row_position[row]))
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
    out["sequence_id"] = [sequence_name.get(int(group_of_member[m]), "") for m in member_of_row]
    return out


# --- tables of tracked storms ----------------------------------------------------------------------
MEMBER_COLUMNS = ["member_id", "sequence_id", "first_map_id", "last_map_id", "first_mars_year", "first_sol",
                  "last_sol", "ls_first_deg", "ls_last_deg", "ls_span_deg", "duration_sols", "n_instances", "n_maps",
                  "path_length_km", "max_area_km2"]
"""Columns of :func:`members_table`."""


def id_strings(values) -> pd.Series:
    """Member or sequence ids as strings, ``""`` where missing (NaN, None) — as read from a CSV."""
    return pd.Series(values, dtype=object).fillna("").astype(str)


def members_table(tracked: pd.DataFrame) -> pd.DataFrame:
    """One row per member of a tracked storm table (the output of :func:`track`, or a catalog).

    Parameters
    ----------
    tracked : DataFrame
        ``map_id, mars_year, ls, lon, lat, area_km2, member_id`` (``sequence_id`` and ``sol``
        used when present).

    Returns
    -------
    DataFrame
        :data:`MEMBER_COLUMNS`, in order of first appearance: first and last map, Mars year of the
        first, first and last ``sol`` (the map's sol number within its subphase, -1 if unknown),
        first and last Ls (degrees), ``ls_span_deg`` (Ls advance, continuing across Mars years),
        ``duration_sols`` (sols from the first to the last instance plus one, from Mars year and
        Ls), ``n_instances``, ``n_maps`` (distinct maps), ``path_length_km`` (great-circle length
        of the centroid path through the member's maps in time order; a map with several
        instances of the member contributes their area-weighted mean position) and
        ``max_area_km2``.
    """
    if len(tracked) == 0:
        return pd.DataFrame({c: pd.Series(dtype="object" if c in ("member_id", "sequence_id", "first_map_id",
                                                                   "last_map_id") else "float64")
                             for c in MEMBER_COLUMNS})
    df = tracked.reset_index(drop=True).copy()
    df["_ls_continued_deg"] = df["mars_year"].astype(float) * 360.0 + df["ls"].astype(float)  # for ls_span_deg
    df["_time_sols"] = mars_time_sols(df["mars_year"], df["ls"])
    df["_sol"] = df["sol"].astype(float) if "sol" in df.columns else -1.0
    df["_sequence"] = id_strings(df["sequence_id"]).to_numpy() if "sequence_id" in df.columns else ""
    df = df.sort_values(["_time_sols", "map_id", "lon"], kind="stable")
    rows = [_member_row(member_id, member) for member_id, member in df.groupby("member_id", sort=False)]
    return pd.DataFrame(rows, columns=MEMBER_COLUMNS)


def _member_row(member_id, member: pd.DataFrame) -> dict:
    """The :func:`members_table` row of one member (its instances in time order)."""
    per_map = member.assign(_w=member["area_km2"].clip(lower=1e-9)).groupby("map_id", sort=False).apply(
        _weighted_position, include_groups=False)
    steps_km = great_circle_km(per_map["lon"].to_numpy()[:-1], per_map["lat"].to_numpy()[:-1],
                               per_map["lon"].to_numpy()[1:], per_map["lat"].to_numpy()[1:])
    first, last = member.iloc[0], member.iloc[-1]
    sequences = [s for s in member["_sequence"].unique() if s]
    return {
        "member_id": member_id, "sequence_id": sequences[0] if sequences else "",
        "first_map_id": first["map_id"], "last_map_id": last["map_id"], "first_mars_year": int(first["mars_year"]),
        "first_sol": int(first["_sol"]), "last_sol": int(last["_sol"]),
        "ls_first_deg": float(first["ls"]), "ls_last_deg": float(last["ls"]),
        "ls_span_deg": round(float(last["_ls_continued_deg"] - first["_ls_continued_deg"]), 4),
        "duration_sols": int(round(float(last["_time_sols"] - first["_time_sols"]))) + 1,
        "n_instances": len(member), "n_maps": int(member["map_id"].nunique()),
        "path_length_km": round(float(steps_km.sum()), 1), "max_area_km2": float(member["area_km2"].max()),
    }


def _weighted_position(instances: pd.DataFrame) -> pd.Series:
    """Area-weighted centroid (lon circular) of the instances of one member on one map."""
    weights = instances["_w"].to_numpy(dtype=float)
    lon = np.radians(instances["lon"].to_numpy(dtype=float))
    mean_lon = np.degrees(np.arctan2((weights * np.sin(lon)).sum(), (weights * np.cos(lon)).sum()))
    mean_lat = float((weights * instances["lat"].to_numpy(dtype=float)).sum() / weights.sum())
    return pd.Series({"lon": float(mean_lon), "lat": mean_lat})


def read_instances(path) -> pd.DataFrame:
    """Read a storm table (``marsdust catalog`` output, ``truth/storms.csv``) or ``detections.csv``.

    A CSV or Parquet file that has the columns :data:`REQUIRED_COLUMNS` is read as it is; anything
    else (an MDAD v1.0 table, a v1.1 cube, a folder) goes through :func:`marsdust.mdad.read_catalog`.
    ``member_id`` and ``sequence_id``, when present, come back as strings (``""`` when empty).

    Raises
    ------
    ValueError
        The file cannot be read, lacks a required column, or holds a value outside its range
        (:data:`marsdust.schema.STORM_TABLE_RULES`: the message names file, row and column).
    FileNotFoundError
        ``path`` does not exist.
    """
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: storm table not found")
    table = None
    if path.is_file() and path.suffix.lower() in (".csv", ".parquet", ".pq"):
        try:
            table = pd.read_parquet(path) if path.suffix.lower() != ".csv" else pd.read_csv(path)
        except Exception as exc:  # pandas and pyarrow raise many kinds
            raise ValueError(f"{path}: cannot read table ({type(exc).__name__}: {exc})") from exc
        if not set(REQUIRED_COLUMNS) <= set(table.columns):
            table = None
    if table is None:
        from marsdust.mdad import read_catalog

        table = read_catalog(path)
    for column in ("member_id", "sequence_id"):
        if column in table.columns:
            table[column] = id_strings(table[column]).to_numpy()
    check_table(table, str(path))
    return table
