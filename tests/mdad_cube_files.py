"""Test helper (not a test module): MDAD v1.1 cubes written by hand with netCDF4, laid out as the real
files are (not by marsdust's writer), on a 4° global grid, with a matching master CSV."""

from __future__ import annotations

import netCDF4
import numpy as np
import pandas as pd

from marsdust.grid import MapGrid

RES = 4.0
GRID = MapGrid.marci(RES)  # 45 x 90


def write_cube(path, day_names, label_maps, lat_values=None, dims=("time", "longitude", "latitude"),
               coordinates=True, ls_values=None):
    """Write an MDAD v1.1 cube: map row i goes to the latitude point at its northern edge.

    ``timeList`` columns 4-7 (Ls start, end, mean, median) hold ``ls_values`` (default: 10°, 20°, …).
    """
    height, width = GRID.shape
    lat = np.linspace(-90.0, 90.0, height + 1) if lat_values is None else lat_values
    lon = GRID.lon_centers_deg
    path.parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension(dims[0], len(day_names))
        ds.createDimension(dims[1], width)
        ds.createDimension(dims[2], lat.size)
        ds.createDimension("stat", 8)
        if coordinates:
            ds.createVariable(dims[1], "f8", (dims[1],))[:] = lon
            ds.createVariable(dims[2], "f8", (dims[2],))[:] = lat
        cube = ds.createVariable("MDAD", "u1", dims)
        for t, labels in enumerate(label_maps):
            slab = np.full((width, lat.size), 255, np.uint8)
            if lat.size == height + 1:
                # point k (lat -90 + k*res) is the northern edge of map row height - k
                slab[:, 1:] = labels[::-1].T
            else:
                slab[:] = labels[::-1].T
            cube[t] = slab
        names = ds.createVariable("dayList", str, (dims[0],))
        for t, name in enumerate(day_names):
            names[t] = name
        ls = 10.0 * (np.arange(len(day_names)) + 1) if ls_values is None else np.asarray(ls_values, float)
        times = np.zeros((len(day_names), 8))
        times[:, 4:] = ls[:, None]
        ds.createVariable("timeList", "f8", (dims[0], "stat"))[:] = times


def cube_days():
    """Two days: D01 sol 5 (storm across 180°, split 'b' member, merged member) and P09 sol 10."""
    day0 = np.zeros(GRID.shape, np.uint8)
    day0[:8] = 255  # missing polar strip
    day0[10:13, 0:3] = 31  # west edge ...
    day0[10:13, 88:90] = 31  # ... and east edge: one storm across 180°
    day0[20:22, 40:45] = 31 + 133  # split member D01_031b
    day0[30, 30] = 5
    day0[30, 32] = 6  # merged D01_005+006
    day1 = np.zeros(GRID.shape, np.uint8)
    day1[15:18, 50:55] = 10
    day1[15:18, 56:58] = 11
    day1[15:18, 60:61] = 33  # P08_033+P09_010+011 on a P09 day: the first member's value is its outline
    return ["D01_day05", "P09_day10"], [day0, day1]


def master_frame():
    return pd.DataFrame({
        "subphase": ["D01", "D01", "D01", "P09"],
        "sol": [5, 5, 5, 10],
        "mem_ID": ["D01_031", "D01_031b", "D01_005+006", "P08_033+P09_010+011"],
        "seq_ID": ["S1", "", "", "S2"],
        "confidence_flag": [100, 75, 50, 100],
        "area": [6.05e5, 5.59e5, 3e4, 1e5],  # single members: their mask's area and centroid (4° grid)
        "swathLs": [10.0, 10.0, 10.0, 20.0],
        "centroid_lon": [-178.0, -10.0, -40.0, 30.0],
        "centroid_lat": [43.8, 6.0, -30.0, -10.0],
    })


def write_cube_dir(folder):
    """Write ``folder/MDADMY30.nc`` (:func:`cube_days`) and ``folder/MDAD_MY30_master.csv`` (:func:`master_frame`).

    Returns ``folder``."""
    days, maps = cube_days()
    write_cube(folder / "MDADMY30.nc", days, maps)
    master_frame().to_csv(folder / "MDAD_MY30_master.csv", index=False)
    return folder
