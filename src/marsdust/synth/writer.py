"""Writers of the synthetic archive (MDGM folders + list_ls.txt) and MDAD (v1.0 table, v1.1 cubes).

Files follow /work/briefs/formats.md (the project's format contract) and are written atomically
(temporary file in the same folder, then ``os.replace``).

MDAD v1.1 cube registration: ``longitude`` holds cell centres (-180 + res/2 …); ``latitude``
holds the 180/res + 1 point values -90 … 90, and latitude point ``lat_j`` carries the map cell
whose northern edge is ``lat_j`` (the cell [lat_j - res, lat_j], as ``marsdust.mdad.cube_grid``
reads it); the first point (-90°) and every point outside a MOC map's 60°S–60°N band are 255.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from marsdust.fileio import atomic_output, temp_path_beside, write_csv_atomic, write_text_atomic
from marsdust.grid import MapGrid

MDAD_V10_COLUMNS = {
    "mars_year": "Mars Year", "subphase": "Mission subphase", "sol": "Sol", "ls": "Ls",
    "lon": "Centroid longitude", "lat": "Centroid latitude", "area_km2": "Area (square km)",
    "confidence": "Confidence interval", "member_id": "Member ID", "sequence_id": "Sequence ID",
}
MASTER_COLUMNS = ["subphase", "sol", "mem_ID", "seq_ID", "confidence_flag", "area", "swathLs", "centroid_lon",
                  "centroid_lat"]


def write_png(rgb: np.ndarray, path: Path, compress_level: int = 1) -> None:
    """Write an 8-bit RGB map as PNG.

    zlib level 1 with the run-length strategy (``Z_RLE``): on these maps (smooth ground, fine
    noise; Pillow picks the Paeth filter) it is about as small as level 6 and 4–5× faster.
    """
    import zlib

    from PIL import Image

    with atomic_output(path) as tmp:
        Image.fromarray(rgb, mode="RGB").save(tmp, format="PNG", compress_level=compress_level,
                                              compress_type=zlib.Z_RLE)


def write_list_ls(rows: pd.DataFrame, path: Path) -> None:
    """``list_ls.txt``: header, then ``name  mars_year  ls`` per map (name = file stem)."""
    lines = ["# name mars_year ls"] + [f"{r.map_id}  {int(r.mars_year)}  {r.ls:.3f}" for r in rows.itertuples()]
    write_text_atomic(path, "\n".join(lines) + "\n")


def write_mdad_v10(storms: pd.DataFrame, path: Path) -> None:
    """MDAD v1.0 table with the real catalogue's headers (longitudes east-positive, area km²)."""
    table = storms[list(MDAD_V10_COLUMNS)].rename(columns=MDAD_V10_COLUMNS)
    write_csv_atomic(table, path)


def write_master_csv(storms: pd.DataFrame, path: Path) -> None:
    """The v1.1 master CSV of one Mars year."""
    table = pd.DataFrame({
        "subphase": storms["subphase"], "sol": storms["sol"], "mem_ID": storms["member_id"],
        "seq_ID": storms["sequence_id"], "confidence_flag": storms["confidence"], "area": storms["area_km2"],
        "swathLs": storms["ls"], "centroid_lon": storms["lon"], "centroid_lat": storms["lat"],
    }, columns=MASTER_COLUMNS)
    write_csv_atomic(table, path)


class CubeWriter:
    """Streams one Mars year's MDAD v1.1 cube (``MDAD(time, longitude, latitude)`` uint8) to netCDF.

    Call :meth:`add` once per map in time order, then :meth:`close`.
    """

    def __init__(self, path: Path, grid: MapGrid, n_times: int):
        import netCDF4

        self.path = Path(path)
        self.grid = grid
        self.tmp = temp_path_beside(self.path)
        self.ds = netCDF4.Dataset(self.tmp, "w", format="NETCDF4")
        n_lat = int(round(180.0 / grid.res_deg)) + 1
        self.lat_points = np.round(-90.0 + np.arange(n_lat) * grid.res_deg, 6)
        self.ds.createDimension("time", n_times)
        self.ds.createDimension("longitude", grid.width)
        self.ds.createDimension("latitude", n_lat)
        self.ds.createDimension("nchar", 16)
        self.ds.createDimension("stats", 8)
        lon = self.ds.createVariable("longitude", "f8", ("longitude",))
        lon[:] = np.round(grid.lon_centers_deg, 6)
        lon.units = "degrees_east"
        lat = self.ds.createVariable("latitude", "f8", ("latitude",))
        lat[:] = self.lat_points
        lat.units = "degrees_north"
        lat.comment = "point lat_j carries the map cell [lat_j - res, lat_j]"
        self.mdad = self.ds.createVariable("MDAD", "u1", ("time", "longitude", "latitude"), zlib=True, complevel=1,
                                           chunksizes=(1, grid.width, n_lat))
        self.mdad.comment = "0 no dust; 1-133 member number; 134-250 split member b (value-133); 255 missing"
        self.day_list = self.ds.createVariable("dayList", str, ("time",))
        self.time_list = self.ds.createVariable("timeList", "f8", ("time", "stats"))
        self.time_list.comment = "start, end, mean, median sol-of-year; start, end, mean, median Ls"
        # rows of the cube's latitude points that fall on map rows
        row = np.round((grid.lat_north_deg - self.lat_points) / grid.res_deg).astype(int)
        inside = (row >= 0) & (row < grid.height)
        self.lat_index = np.nonzero(inside)[0]
        self.map_rows = row[inside]
        self.n = 0

    def add(self, labels: np.ndarray, day_name: str, sol_of_year: float, ls_deg: float) -> None:
        """Append one map's labels (uint8 (H, W) on the map grid: 0, member numbers, 255 missing)."""
        step = np.full((self.grid.width, self.lat_points.size), 255, np.uint8)
        step[:, self.lat_index] = labels[self.map_rows].T
        self.mdad[self.n] = step
        self.day_list[self.n] = day_name
        self.time_list[self.n] = [sol_of_year] * 4 + [ls_deg] * 4
        self.n += 1

    def close(self) -> None:
        self.ds.close()
        os.replace(self.tmp, self.path)
