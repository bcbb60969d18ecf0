"""Synthetic Mars: the built-in dataset every test, benchmark and demo of marsdust runs on.

:func:`synthesize` writes, under ``OUT`` (refusing an ``OUT`` that already holds an earlier
synthesis unless ``overwrite=True``, which replaces just these four folders):

* ``OUT/archive/<SUBPHASE>/<subphase>_<sol>.png`` — one 8-bit RGB MOC-like daily global map per
  sol (60°S–60°N, simple cylindrical) plus ``list_ls.txt`` per subphase; in the MARCI years of a
  two-camera preset, ``OUT/archive/<SUBPHASE>/<SUBPHASE>_day<NN>.jpg`` — MARCI-like global maps
  (90°S–90°N, JPEG; :mod:`marsdust.synth.cameras` says what differs);
* ``OUT/mdad/MDAD.csv`` — the MDAD v1.0 table (all years) and ``OUT/mdad/MY<yy>/MDADMY<yy>.nc``
  + ``MDAD_MY<yy>_master.csv`` — the v1.1 cubes (outlines) for every Mars year (two-camera
  presets: the MARCI years only, as the real MDAD);
* ``OUT/truth/storms.csv`` (the storm table with ``polygon_wkt``, the member's source region and
  optical depth) and ``OUT/truth/maps.csv`` (the written maps with their haze optical depth, and
  the ``camera`` of each in a two-camera archive);
* ``OUT/cloudmask/<SUBPHASE>/<map_id>.nc`` — each map's water-ice cloud mask in the MARCI
  cloud-mask format (:mod:`marsdust.cloudmask`): cloudy where the drawn cloud opacity exceeds
  0.2, at 0.8°, -999 where the map has no observation (``SynthConfig.write_cloud_masks``).

The catalog is the truth the simulator drew: every storm instance visible on a written sol, its
area measured on the visible pixels of its drawn outline (``MapGrid.mask_area_km2``), its centroid
(area-weighted, circular in longitude), its confidence from its red contrast against a ring
around it (100 / 75 / 50). A storm mostly hidden by gaps or polar night is not catalogued.

Presets
-------
``ci``
    61 maps at 0.4° (300 × 900): one sol every 43 sols over the paper's calendar MY24 Ls150 –
    MY28 Ls121, so both of the training engine's default splits exist: temporal (train MY25 Ls0 –
    MY27 Ls180 → ≈ 26 train + 13 val, test MY27 Ls180 – MY28 Ls121 → ≈ 13 maps) and random
    52/24/24 of MY25 – MY28. Storm genesis is boosted 7.5× over ``full`` and the off-season keeps
    35% of the activity, so nearly every map has storms and every split has storm maps. Written in
    a few seconds.
``demo``
    142 maps at 0.4° on the same calendar: pairs of consecutive sols every 37 sols (temporal
    split ≈ 62 train / 30 val / 30 test maps), storm rate ~5× ``full`` (≈ 80% of maps with
    storms). Data for an end-to-end demo that trains for minutes on a 2-core CPU; written in
    ~10 s.
``bench``
    The paper's calendar MY24 Ls150 – MY28 Ls121 (four Mars years: train on early years, test
    on later ones, or split at random), pairs of consecutive sols every 10 sols (≈ 520 maps) at
    0.4°: at this resolution a compact detector trains and evaluates on a 2-core CPU well under
    an hour while the smallest storms (1e5 km², ~6° across) still span ~15 pixels. Storm rate
    as ``demo`` (~5× ``full``; seed 0: 1,085 storm instances, 84% of maps with storms, about the
    density of the whole MDAD, 14,974 instances over ≈ 5,000 maps), so a CPU budget of minutes
    per detector sees enough storms to learn.
``full``
    The MOC archive at native 0.1° (1200 × 3600): every sol MY24 Ls150 – MY28 Ls121 less ~3%
    missing sols (≈ 2,530 maps), with the real data's proportion of storm maps (MOC: 607 of
    2484): ``genesis_per_sol = 0.20`` gives 24.8% of maps with a catalogued storm (mean of seeds
    0–3, 21–27% per seed; seed 0: 575 of 2533 maps, 22.7%), measured with
    :func:`marsdust.synth.build.draw_catalog` (same weather, drawn on a coarse grid without
    writing images: the fraction is the same at 0.8° and 0.4°). The MY25 global dust event
    starts at Ls 185 from Hellas. A native map draws in ~0.2 s and is a ~4.6 MB PNG (≈ 12 GB in
    all); ``benchmarks/bench_synth.py`` measures both.
``twocam``
    Both cameras on one planet and one weather, MY24 Ls150 – MY32 Ls359 at 0.4°: MOC maps (PNG,
    60°S–60°N, 300 × 900) until MY28 Ls121, MARCI maps (JPEG, 90°S–90°N, 450 × 900) from MY28
    Ls130, pairs of consecutive sols every 45 sols (≈ 250 maps, about half of each camera), storm
    rate as ``demo``, seasonal polar caps. The v1.0 table lists the storms of every year; v1.1
    cubes exist for MY28–MY32 only (their MARCI maps). Data for training on one camera and
    testing on the other: ``marsdust train --data OUT --train-period 'MY25 0 - MY28 121]'
    --test-period 'MY29 0 - MY32 360]'`` trains on MOC maps and tests on MARCI maps (the default
    splits cover the MOC years only). Written in ≈ 40 s.
``twocam_ci``
    ``twocam`` for tests: one sol every 90 sols (≈ 64 maps), storm rate as ``ci``; a few seconds.

Any of these with ``random_look`` (``marsdust synth --random-look``) draws every map's camera and
storm look around its camera's (:mod:`marsdust.synth.looks`): the same weather, maps and catalogue,
other pixels. It is for training a detector meant to carry over to maps that look otherwise.

``draw_catalog(config, seed, res_deg=0.8, every=1)`` returns the maps and storm catalog a preset
would write without writing anything (seconds for ``full``).
"""

from __future__ import annotations

from marsdust.synth.presets import PRESETS, SynthConfig, get_preset
from marsdust.synth.writer import SYNTH_OUTPUT_DIRS, SynthOutputExistsError

SECOND_LOOK_PRESETS = {"look2": "moc", "look2_marci": "marci"}
"""Test-only archives drawn by the independently modelled second look (:mod:`marsdust.synth.second_look`):
preset name → map layout. Never train on them: they measure whether a detector carries over to a look it
has not seen."""


def synthesize(out_dir, preset: str | SynthConfig = "ci", seed: int = 0, progress: bool = True,
               overwrite: bool = False, random_look: float = 0.0) -> dict:
    """Write a synthetic MDGM archive and its MDAD catalog under ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Output folder (created); gets ``archive/``, ``mdad/``, ``truth/`` and ``cloudmask/``.
    preset : {"ci", "demo", "bench", "full", "twocam", "twocam_ci", "look2", "look2_marci"} or SynthConfig
        A named preset or a custom configuration; ``look2*`` write the second look's test archive
        (:data:`SECOND_LOOK_PRESETS`).
    seed : int
        Planet and weather seed: the same seed writes identical files.
    progress : bool
        Show a progress bar.
    overwrite : bool
        Replace an earlier synthesis in ``out_dir``: remove its ``archive/``, ``mdad/``,
        ``truth/`` and ``cloudmask/`` (and nothing else) before writing.
    random_look : float or bool
        Share of maps (0–1; True = every map) whose camera and storm look is drawn around their
        camera's (:mod:`marsdust.synth.looks`), for training that carries over to other looks; same
        weather, maps and catalogue (but its confidence levels). For a named preset of the main
        generator only.

    Returns
    -------
    dict with DataFrames ``maps`` and ``storms`` (the truth tables also written to ``truth/``).

    Raises
    ------
    SynthOutputExistsError
        (a :class:`FileExistsError`) ``out_dir`` already holds ``archive/``, ``mdad/``,
        ``truth/`` or ``cloudmask/`` and ``overwrite`` is False: the old maps would stay behind, unlisted, among
        the new ones. Nothing is written or removed.
    ValueError
        Unknown preset name; ``random_look`` outside [0, 1], or with a second-look preset or a SynthConfig.
    """
    from marsdust.synth.build import synthesize_config

    if random_look and not (isinstance(preset, str) and preset in PRESETS):
        raise ValueError(f"random_look applies to the main generator's named presets ({sorted(PRESETS)}), "
                         f"not to {preset if isinstance(preset, str) else 'a SynthConfig'!r}; set SynthConfig.look "
                         "for a custom configuration")
    if isinstance(preset, str) and preset in SECOND_LOOK_PRESETS:
        from marsdust.synth.second_look import synthesize_second_look

        return synthesize_second_look(out_dir, layout=SECOND_LOOK_PRESETS[preset], seed=seed, progress=progress,
                                      overwrite=overwrite)
    if isinstance(preset, str) and preset not in PRESETS:
        raise ValueError(f"unknown synth preset {preset!r}; expected one of {sorted([*PRESETS, *SECOND_LOOK_PRESETS])}")
    config = get_preset(preset, random_look) if isinstance(preset, str) else preset
    return synthesize_config(config, out_dir, seed=seed, progress=progress, overwrite=overwrite)


__all__ = ["synthesize", "SynthConfig", "get_preset", "PRESETS", "SECOND_LOOK_PRESETS", "SynthOutputExistsError", "SYNTH_OUTPUT_DIRS"]
