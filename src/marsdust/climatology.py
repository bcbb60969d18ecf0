"""The standard figures scientists make from a dust-storm catalog, with the tables behind them.

:func:`write_climatology` takes a storm table (a catalog, or ``detections.csv``) and writes, for
each figure, a PNG and the CSV it is drawn from:

* ``ls_lat`` — storm instances by Ls and latitude, one panel per Mars year (the classic MDAD
  figure; marker size and colour from the storm's area);
* ``area_per_sol`` — total storm area (km²) on each map over Ls, one line per Mars year;
* ``members`` — histograms of member duration (sols) and largest area (km²), with the members
  table (:func:`marsdust.track.members_table`) as CSV;
* ``sequence_paths`` — the centroid path of every sequence on a longitude–latitude map (paths
  are cut where they cross 180°, not drawn across the map);
* ``detected_vs_catalogued`` (with a truth catalog) — instances per Ls bin and Mars year, found
  against catalogued. A run without a truth catalog removes this figure and its table where an
  earlier run into the same folder left them (no other file of the folder is touched), so the
  folder never shows a comparison the run did not make.

Instances without ``member_id`` are tracked first (:func:`marsdust.track.track` with its defaults).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from marsdust.fileio import remove_stale_temp_files, write_csv_atomic
from marsdust.plots import load_pyplot, save_figure
from marsdust.track import id_strings, members_table, track

INSTANCE_COLUMNS = ["map_id", "mars_year", "ls", "lon", "lat", "area_km2", "member_id", "sequence_id"]
DEFAULT_LS_BIN_DEG = 15.0
TRUTH_FIGURE = "detected_vs_catalogued"
"""The figure (``.png``) and table (``.csv``) only a run with a truth catalog writes."""
FIGURES = ("ls_lat", "area_per_sol", "members", "sequence_paths", TRUTH_FIGURE)
"""Every figure :func:`write_climatology` may write (``<name>.png`` and ``<name>.csv``)."""


def _with_tracks(instances: pd.DataFrame) -> pd.DataFrame:
    """The instances with ``member_id`` and ``sequence_id`` (tracked here when missing), time-ordered."""
    table = instances.copy()
    if "member_id" not in table.columns or (id_strings(table["member_id"]).str.strip() == "").any():
        table = track(table.drop(columns=[c for c in ("member_id", "sequence_id") if c in table.columns]))
    if "sequence_id" not in table.columns:
        table["sequence_id"] = ""
    table["member_id"] = id_strings(table["member_id"]).to_numpy()
    table["sequence_id"] = id_strings(table["sequence_id"]).to_numpy()
    return table.sort_values(["mars_year", "ls", "map_id", "lon"], kind="stable").reset_index(drop=True)


def area_per_map(instances: pd.DataFrame) -> pd.DataFrame:
    """Total storm area per map: ``map_id, mars_year, ls, n_storms, total_area_km2`` in time order.

    Only maps with at least one storm appear (the storm table does not list the others).
    """
    if len(instances) == 0:
        return pd.DataFrame({"map_id": pd.Series(dtype=object), "mars_year": pd.Series(dtype="int64"),
                             "ls": pd.Series(dtype=float), "n_storms": pd.Series(dtype="int64"),
                             "total_area_km2": pd.Series(dtype=float)})
    per_map = instances.groupby("map_id", sort=False).agg(
        mars_year=("mars_year", "first"), ls=("ls", "first"), n_storms=("area_km2", "size"),
        total_area_km2=("area_km2", "sum")).reset_index()
    return per_map.sort_values(["mars_year", "ls", "map_id"], kind="stable").reset_index(drop=True)


def sequence_paths(instances: pd.DataFrame) -> pd.DataFrame:
    """The instances of every sequence in time order: :data:`INSTANCE_COLUMNS` (sequence_id non-empty)."""
    table = _with_tracks(instances)
    return table.loc[table["sequence_id"] != "", INSTANCE_COLUMNS].sort_values(
        ["sequence_id", "mars_year", "ls", "lon"], kind="stable").reset_index(drop=True)


def counts_per_ls_bin(found: pd.DataFrame, catalogued: pd.DataFrame, ls_bin_deg: float = DEFAULT_LS_BIN_DEG) -> pd.DataFrame:
    """Instances per Mars year and Ls bin in two tables: ``mars_year, ls_start_deg, ls_end_deg, n_found, n_catalogued``.

    Every bin from the first to the last one holding an instance of either table is listed
    (zeros included), so gaps show.
    """
    columns = ["mars_year", "ls_start_deg", "ls_end_deg", "n_found", "n_catalogued"]
    if len(found) == 0 and len(catalogued) == 0:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in columns})

    def binned(table: pd.DataFrame) -> pd.Series:
        ls_start = np.floor(table["ls"].to_numpy(dtype=float) / ls_bin_deg) * ls_bin_deg
        return pd.Series(list(zip(table["mars_year"].astype(int), ls_start)), dtype=object).value_counts()

    found_counts, catalogued_counts = binned(found), binned(catalogued)
    present = sorted(set(found_counts.index) | set(catalogued_counts.index))
    all_bins = [(year, start) for year in range(present[0][0], present[-1][0] + 1)
                for start in np.arange(0.0, 360.0, ls_bin_deg) if present[0] <= (year, start) <= present[-1]]
    return pd.DataFrame({
        "mars_year": [year for year, _ in all_bins], "ls_start_deg": [start for _, start in all_bins],
        "ls_end_deg": [min(start + ls_bin_deg, 360.0) for _, start in all_bins],
        "n_found": [int(found_counts.get(b, 0)) for b in all_bins],
        "n_catalogued": [int(catalogued_counts.get(b, 0)) for b in all_bins],
    }, columns=columns)


# --- figures ------------------------------------------------------------------------------------------
def _no_data(ax, text: str = "no storms") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


def _year_colors(years) -> dict:
    cmap = load_pyplot().get_cmap("tab10")
    return {year: cmap(k % 10) for k, year in enumerate(sorted(years))}


def plot_ls_lat(table: pd.DataFrame, out_png, title: str = "") -> Path:
    """Storm instances by Ls (x) and latitude (y), one panel per Mars year; size and colour by area."""
    plt = load_pyplot()
    years = sorted(int(y) for y in table["mars_year"].unique()) or [None]
    fig, axes = plt.subplots(len(years), 1, figsize=(9, 1.0 + 2.0 * len(years)), sharex=True, squeeze=False,
                             layout="constrained")
    log_area = np.log10(table["area_km2"].clip(lower=1.0).to_numpy(dtype=float))
    norm = plt.Normalize(vmin=4.5, vmax=7.5)
    scatter = None
    for ax, year in zip(axes[:, 0], years):
        rows = (table["mars_year"] == year).to_numpy() if year is not None else np.zeros(len(table), bool)
        if rows.any():
            scatter = ax.scatter(table["ls"].to_numpy()[rows], table["lat"].to_numpy()[rows], c=log_area[rows],
                                 s=4 + 30 * (log_area[rows] - 4.5).clip(0, 3), cmap="YlOrBr", norm=norm,
                                 edgecolors="black", linewidths=0.2)
        else:
            _no_data(ax)
        ax.set_ylim(-90, 90)
        ax.set_yticks(range(-60, 61, 30))
        ax.set_ylabel(f"MY{year}\nlatitude (°N)" if year is not None else "latitude (°N)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlim(0, 360)
    axes[-1, 0].set_xticks(range(0, 361, 30))
    axes[-1, 0].set_xlabel("Ls (°)")
    if scatter is not None:
        bar = fig.colorbar(scatter, ax=axes[:, 0].tolist(), shrink=0.6, pad=0.01)
        bar.set_label("log10 area (km²)", fontsize=8)
    fig.suptitle(title or f"storm instances by Ls and latitude ({len(table)} instances)", fontsize=9)
    return save_figure(fig, out_png)


def plot_area_per_sol(per_map: pd.DataFrame, out_png, title: str = "") -> Path:
    """Total storm area per map (10⁶ km²) over Ls, one line per Mars year."""
    plt = load_pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.8))
    colors = _year_colors(per_map["mars_year"].unique())
    for year, rows in per_map.groupby("mars_year"):
        ax.plot(rows["ls"], rows["total_area_km2"] / 1e6, marker=".", ms=3, lw=0.7, color=colors[year],
                label=f"MY{int(year)}")
    if len(per_map):
        ax.legend(fontsize=7, ncol=min(len(colors), 6))
    else:
        _no_data(ax)
    ax.set_xlim(0, 360)
    ax.set_xticks(range(0, 361, 30))
    ax.set_xlabel("Ls (°)")
    ax.set_ylabel("total storm area (10⁶ km²)")
    ax.grid(alpha=0.3)
    ax.set_title(title or "total storm area per sol (maps with storms)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_png)


def plot_member_histograms(members: pd.DataFrame, out_png, title: str = "") -> Path:
    """Histograms of member duration (sols) and largest area (km², log bins)."""
    plt = load_pyplot()
    fig, (ax_life, ax_area) = plt.subplots(1, 2, figsize=(9, 3.6))
    if len(members):
        durations = members["duration_sols"].to_numpy(dtype=int)
        ax_life.hist(durations, bins=np.arange(0.5, durations.max() + 1.5), color="tab:orange", edgecolor="black",
                     lw=0.4)
        areas = members["max_area_km2"].to_numpy(dtype=float)
        edges = np.logspace(np.floor(np.log10(areas.min())), np.ceil(np.log10(areas.max())) + 1e-9, 16)
        ax_area.hist(areas, bins=edges, color="tab:brown", edgecolor="black", lw=0.4)
        ax_area.set_xscale("log")
    else:
        _no_data(ax_life, "no members")
        _no_data(ax_area, "no members")
    ax_life.set_xlabel("duration (sols, first to last instance)")
    ax_area.set_xlabel("largest area (km²)")
    for ax in (ax_life, ax_area):
        ax.set_ylabel("members")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    fig.suptitle(title or f"member lifetimes and sizes ({len(members)} members)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_png)


def _path_segments(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat with NaN breaks where consecutive points are more than 180° of longitude apart (the seam)."""
    if lon.size < 2:
        return lon, lat
    jumps = np.flatnonzero(np.abs(np.diff(lon)) > 180.0) + 1
    return np.insert(lon.astype(float), jumps, np.nan), np.insert(lat.astype(float), jumps, np.nan)


def plot_sequence_paths(paths: pd.DataFrame, out_png, title: str = "") -> Path:
    """The centroid path of every sequence on a lon/lat map (start marked with a circle)."""
    plt = load_pyplot()
    fig, ax = plt.subplots(figsize=(10, 5.2))
    cmap = plt.get_cmap("tab20")
    for k, (sequence_id, rows) in enumerate(paths.groupby("sequence_id", sort=False)):
        lon, lat = _path_segments(rows["lon"].to_numpy(float), rows["lat"].to_numpy(float))
        color = cmap(k % 20)
        ax.plot(lon, lat, lw=1.0, color=color)
        ax.plot(rows["lon"].iloc[0], rows["lat"].iloc[0], "o", ms=3.5, color=color)
    if len(paths) == 0:
        _no_data(ax, "no sequences")
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.set_xticks(range(-180, 181, 30))
    ax.set_yticks(range(-90, 91, 30))
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    ax.grid(alpha=0.3)
    ax.set_aspect("equal")
    n_sequences = paths["sequence_id"].nunique() if len(paths) else 0
    ax.set_title(title or f"sequence paths ({n_sequences} sequences; circle = first instance)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_png)


def plot_counts_per_ls_bin(counts: pd.DataFrame, out_png, title: str = "") -> Path:
    """Found and catalogued instances per Ls bin, one panel per Mars year."""
    plt = load_pyplot()
    years = sorted(int(y) for y in counts["mars_year"].unique()) or [None]
    fig, axes = plt.subplots(len(years), 1, figsize=(9, 1.2 + 1.9 * len(years)), sharex=True, squeeze=False)
    for ax, year in zip(axes[:, 0], years):
        rows = counts[counts["mars_year"] == year]
        if len(rows):
            width = float((rows["ls_end_deg"] - rows["ls_start_deg"]).max())
            ax.bar(rows["ls_start_deg"] + 0.3 * width, rows["n_catalogued"], width=0.4 * width, color="tab:blue",
                   label="catalogued")
            ax.bar(rows["ls_start_deg"] + 0.7 * width, rows["n_found"], width=0.4 * width, color="tab:orange",
                   label="detected")
        else:
            _no_data(ax)
        ax.set_ylabel(f"MY{year}\ninstances" if year is not None else "instances", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlim(0, 360)
    axes[-1, 0].set_xticks(range(0, 361, 30))
    axes[-1, 0].set_xlabel("Ls (°)")
    fig.suptitle(title or "detected versus catalogued storm instances per Ls bin", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_png)


def write_climatology(instances: pd.DataFrame, out_dir, *, truth: pd.DataFrame | None = None,
                      ls_bin_deg: float = DEFAULT_LS_BIN_DEG, label: str = "") -> dict[str, tuple[Path, Path]]:
    """Write every climatology figure (PNG) and the table behind it (CSV) into ``out_dir``.

    Parameters
    ----------
    instances : DataFrame
        A storm table or detections (``map_id, mars_year, ls, lon, lat, area_km2``; tracked here
        when ``member_id`` is missing or empty).
    out_dir : path
        Gets ``<name>.png`` and ``<name>.csv`` for each figure; without ``truth``, the
        :data:`TRUTH_FIGURE` files an earlier run left are removed, and so are the temporary files
        of these figures that a killed run left.
    truth : DataFrame, optional
        The catalog to count against (``detected_vs_catalogued``); restrict it beforehand to the
        maps the detections were made on.
    ls_bin_deg : float
        Width of the Ls bins of ``detected_vs_catalogued`` (degrees).
    label : str
        Prefix of the figure titles (e.g. ``"catalog"`` or ``"detections"``).

    Returns
    -------
    dict
        Figure name -> (PNG path, CSV path).
    """
    out_dir = Path(out_dir)
    if out_dir.is_dir():  # the temporary files of a run killed while writing these figures
        for name in FIGURES:
            for suffix in (".csv", ".png"):
                remove_stale_temp_files(out_dir, f"{name}{suffix}")
    tracked = _with_tracks(instances)
    prefix = f"{label}: " if label else ""
    written: dict[str, tuple[Path, Path]] = {}

    def save(name: str, table: pd.DataFrame, plot, title: str) -> None:
        csv = write_csv_atomic(table, out_dir / f"{name}.csv")
        written[name] = (plot(table, out_dir / f"{name}.png", title=prefix + title), csv)

    ls_lat = tracked[INSTANCE_COLUMNS]
    save("ls_lat", ls_lat, plot_ls_lat, f"storm instances by Ls and latitude ({len(ls_lat)} instances)")
    save("area_per_sol", area_per_map(tracked), plot_area_per_sol, "total storm area per sol (maps with storms)")
    members = members_table(tracked)
    save("members", members, plot_member_histograms, f"member lifetimes and sizes ({len(members)} members)")
    paths = sequence_paths(tracked)
    n_sequences = paths["sequence_id"].nunique() if len(paths) else 0
    save("sequence_paths", paths, plot_sequence_paths, f"sequence paths ({n_sequences}; circle = first instance)")
    if truth is not None:
        counts = counts_per_ls_bin(tracked, truth, ls_bin_deg)
        save(TRUTH_FIGURE, counts, plot_counts_per_ls_bin,
             f"detected ({len(tracked)}) versus catalogued ({len(truth)}) instances per {ls_bin_deg:g}° of Ls")
    else:  # an earlier run's comparison would read as this run's
        for stale in (out_dir / f"{TRUTH_FIGURE}.csv", out_dir / f"{TRUTH_FIGURE}.png"):
            if stale.is_symlink() or stale.is_file():
                stale.unlink()
    return written
