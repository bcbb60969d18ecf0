"""A second, independent synthetic Mars for testing whether detectors carry over (never for training).

Every detector of the project trains on :mod:`marsdust.synth`; a detector that only learned
that generator's quirks fails on other data. The second look draws Mars with other modelling
choices at every stage, so scores on it measure what carries over:

=================  ==================================================  ==========================================
stage              main generator (:mod:`marsdust.synth`)              second look (this package)
=================  ==================================================  ==========================================
ground             real albedo provinces, craters, power-law texture   Voronoi provinces/units with sharp steps,
                                                                       scarps, ridged value noise, wind streaks,
                                                                       seasonal frost caps (:mod:`.ground`)
storm weather      MDAD source regions, Ls windows, global event       polar-front storm tracks with a solsticial
                                                                       pause, local plumes following the sub-solar
                                                                       latitude, flushing chains (:mod:`.weather`)
storm shape        noise-warped ellipse, sharp front, thin skirt       curved frontal arcs (sharp lead, exponential
                                                                       trailing edge), unions of advected puffs
                                                                       (:mod:`.plumes`)
storm texture      |Gaussian noise| cells 40–250 km                    billow bands across the motion 70–140 km,
                                                                       clumps and grain (value noise)
dust light         Beer–Lambert e^-τ toward red dust, p-norm overlap   1 / (1 + kτ·airmass) toward yellow-brown
                                                                       dust, optical depths add (:mod:`.camera`)
clouds             textured belt, round orographic blobs, hoods         zonal streaks, lee-wave trains, wavy hoods;
                                                                       ice veils toward bluish white (:mod:`.sky`)
colour             green = 1/3 red + 2/3 blue, linear stretch           three modelled bands, gamma 0.85
mosaic             13 swaths, vertical seams, gain steps, gaps         12 slanted swaths, cross-track ramps, wedge
                                                                       gaps, partial dropouts, 2 pm terminator
noise, file        blocky Gaussian noise, lossless PNG                 column stripes + read noise, JPEG (q 70,
                                                                       4:2:0) round trip saved as PNG
confidence         storm vs ring contrast                              red contrast across the outline's edge
=================  ==================================================  ==========================================

:func:`synthesize_second_look` writes the same files as :func:`marsdust.synth.synthesize`, with
the same writers (:mod:`marsdust.synth.writer`, :class:`marsdust.formats.mdad_cube.MaskCubeWriter`,
:func:`marsdust.formats.mdad_cube.write_master_csv`, :func:`marsdust.formats.cloud_mask.write_cloud_mask`), so
``marsdust index``, ``catalog``, ``evaluate`` and ``detect`` read it like any synth output:

* ``OUT/archive/<SUBPHASE>/<subphase>_<sol>.png`` + ``list_ls.txt`` (subphases ``L01``, ``L02``, …);
* ``OUT/mdad/MDAD.csv`` (v1.0 table), ``OUT/mdad/MY<yy>/MDADMY<yy>.nc`` + ``MDAD_MY<yy>_master.csv``;
* ``OUT/truth/storms.csv`` (with ``polygon_wkt``, ``source`` = where the member formed: ``storm
  track north``/``south``, ``local`` or ``flushing``) and ``OUT/truth/maps.csv``;
* ``OUT/truth/split.csv``: a split manifest (:func:`marsdust.data.load_split`) with every map in
  ``test``: the second look is for testing only, so ``marsdust evaluate CKPT --data OUT
  --split-file OUT/truth/split.csv`` scores a detector on all of it;
* ``OUT/cloudmask/<SUBPHASE>/<map_id>.nc`` (cloudy where the drawn ice opacity exceeds 0.2).

Either layout: ``moc`` (60°S–60°N) or ``marci`` (global). The default archive is 60 maps at 0.4°
(30 pairs of consecutive sols over MY27 Ls 180° – MY28 Ls 121°, the default temporal split's test
period), about two catalogued storms per map, written in seconds.
``benchmarks/second_look_figure.py`` draws ``docs/img/second_look.png``: a main-generator map above
a second-look map, with their catalogue outlines.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd

from marsdust.grid import MapGrid
from marsdust.synth.second_look.scene import SolScene
from marsdust.synth.second_look.simulation import SecondLookConfig, SecondLookSimulation, layout_grid

CUBE_TITLE = "marsdust second-look synthetic Mars: MDAD v1.1 storm masks (the simulator's truth)"
CUBE_SOURCE = "marsdust.synth.second_look (independent synthetic Mars for testing; labels are the storms it drew)"
CLOUD_MASK_SOURCE = "marsdust.synth.second_look (the water-ice cloud opacity the second look drew)"


def write_cloud_mask_of(scene: SolScene, row: dict, grid: MapGrid, out: Path) -> Path:
    """Write one sol's cloud mask under ``out/cloudmask`` (:mod:`marsdust.cloudmask` layout and threshold)."""
    from marsdust.cloudmask import (CLOUD_MASK_DIR, CLOUD_MASK_RES_DEG, CLOUD_OPACITY_THRESHOLD, cloud_mask_path,
                                    cloud_mask_values)
    from marsdust.formats.cloud_mask import write_cloud_mask

    factor = max(1, int(round(CLOUD_MASK_RES_DEG / grid.res_deg)))
    values = cloud_mask_values(scene.cloud, scene.valid, factor)
    return write_cloud_mask(cloud_mask_path(out / CLOUD_MASK_DIR, row["subphase"], row["map_id"]), values,
                            grid.rescaled(factor), {"source": CLOUD_MASK_SOURCE,
                                                    "opacity_threshold": CLOUD_OPACITY_THRESHOLD})


def write_year(simulation: SecondLookSimulation, year: int, year_maps: pd.DataFrame, out: Path, bar) -> list[dict]:
    """Draw and write the maps of one Mars year (and its cube and master CSV); returns its catalog rows."""
    from marsdust.formats.mdad_cube import MaskCubeWriter, MaskStep, write_master_csv
    from marsdust.mdad_format import cube_path, master_csv_path
    from marsdust.synth.build import STORM_COLUMNS
    from marsdust.synth.writer import write_png

    config, grid = simulation.config, simulation.grid
    cube = (MaskCubeWriter(cube_path(out / "mdad", year), grid, title=CUBE_TITLE, complevel=1,
                           attributes={"source": CUBE_SOURCE}) if config.write_cubes else nullcontext())
    rows: list[dict] = []
    with cube:
        for row in year_maps.to_dict("records"):
            scene, storms, labels = simulation.draw(row)
            write_png(scene.rgb, Path(row["path"]))
            if config.write_cloud_masks:
                write_cloud_mask_of(scene, row, grid, out)
            if config.write_cubes:
                cube.append(MaskStep(row["subphase"], row["sol"], row["mars_year"], row["ls"],
                                     np.where(scene.valid, labels, 0), scene.valid, row["sol_of_year"]))
            rows += storms
            bar.update()
    if config.write_cubes:
        write_master_csv(pd.DataFrame(rows, columns=STORM_COLUMNS), master_csv_path(out / "mdad", year))
    return rows


def synthesize_second_look(out_dir, layout: str = "moc", n_maps: int = 60, res_deg: float = 0.4, seed: int = 0,
                           config: SecondLookConfig | None = None, overwrite: bool = False,
                           progress: bool = False) -> dict:
    """Write a second-look archive, its MDAD catalog, truth tables and cloud masks under ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Output folder (created); gets ``archive/``, ``mdad/``, ``truth/`` and ``cloudmask/``.
    layout : {"moc", "marci"}
        60°S–60°N maps (:meth:`MapGrid.moc`) or global maps (:meth:`MapGrid.marci`).
    n_maps : int
        Maps written: pairs of consecutive sols spread over the configuration's period.
    res_deg : float
        Map resolution, degrees per pixel (0.4 → 300 × 900 MOC maps).
    seed : int
        Planet and weather seed: the same seed writes identical files.
    config : SecondLookConfig, optional
        Period, weather and appearance (defaults: :class:`SecondLookConfig`).
    overwrite : bool
        Replace an earlier synthesis in ``out_dir`` (:func:`marsdust.synth.writer.prepare_output_dir`).
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict with DataFrames ``maps`` (``map_id, subphase, sol, mars_year, ls, path, haze_tau, day,
    sol_of_year``) and ``storms`` (the truth table, :data:`marsdust.synth.build.STORM_COLUMNS`).

    Raises
    ------
    ValueError
        Unknown layout, or more maps than the period holds.
    marsdust.synth.SynthOutputExistsError
        ``out_dir`` holds an earlier synthesis and ``overwrite`` is False (nothing is written).
    """
    from tqdm.auto import tqdm

    from marsdust.synth.build import STORM_COLUMNS
    from marsdust.fileio import write_csv_atomic
    from marsdust.formats.mdad_table import write_v10_table
    from marsdust.synth.writer import prepare_output_dir, write_list_ls

    grid = layout_grid(layout, res_deg)
    simulation = SecondLookSimulation(grid, n_maps, seed, config, out_dir=Path(out_dir))  # validates first
    out = prepare_output_dir(out_dir, overwrite)
    maps = simulation.maps
    rows: list[dict] = []
    with tqdm(total=len(maps), desc=f"second look {layout}", unit="map", disable=not progress) as bar:
        for year, year_maps in maps.groupby("mars_year", sort=False):
            rows += write_year(simulation, int(year), year_maps, out, bar)
    for subphase, sub_maps in maps.groupby("subphase", sort=False):
        write_list_ls(sub_maps, out / "archive" / subphase / "list_ls.txt")
    storms = pd.DataFrame(rows, columns=STORM_COLUMNS)
    write_v10_table(storms, out / "mdad" / "MDAD.csv")
    write_csv_atomic(storms, out / "truth" / "storms.csv")
    relative = maps.assign(path=[Path(p).relative_to(out).as_posix() for p in maps["path"]])
    write_csv_atomic(relative, out / "truth" / "maps.csv")
    write_csv_atomic(maps[["map_id", "mars_year", "ls"]].assign(split="test")[["map_id", "split", "mars_year", "ls"]],
                     out / "truth" / "split.csv")
    return {"maps": maps.reset_index(drop=True), "storms": storms}


__all__ = ["synthesize_second_look", "SecondLookConfig"]
