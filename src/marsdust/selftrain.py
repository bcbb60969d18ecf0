"""Self-training on an unlabeled archive: a detector's confident detections become the labels it is fine-tuned on.

The second test-time adaptation beside AdaBN (:mod:`marsdust.adapt`), for an archive that looks unlike the
maps a detector learnt from (another camera, another look) and has no catalogue. One round, in three steps:

1. **teacher** — the detector runs over the target archive (:func:`marsdust.detect.detect_archive`, at its
   stored score threshold, untracked): ``OUT/teacher/detections.csv``;
2. **pseudo-labels** — its dust detections scoring at least ``min_score`` become a storm table with their
   outlines (:func:`pseudo_catalog`), written as ``OUT/data/mdad/pseudo_labels.csv`` beside
   ``OUT/data/archive``, a link to the target archive (:func:`write_pseudo_data`). Maps without a
   confident detection stay in as maps without storms;
3. **student** — the same network, started from the teacher's weights (``TrainConfig.init_weights``),
   trains ``steps`` steps on those labels (every map, a tenth kept for one validation at the end:
   :func:`pseudo_split`) with the teacher's inputs (resolution, reference bands) and a fine-tuning
   learning rate (:func:`student_config`): ``OUT/run`` is an ordinary run folder, and
   ``OUT/run/checkpoints/last.ckpt`` the adapted detector.

Only the target maps' pixels and the teacher's own outputs are used: no catalogue of the target archive.
What it can fix is the look (colours, texture, seams a detector has not seen); it cannot add storms the
teacher never finds (the student learns the teacher's misses as background), hence a strict ``min_score``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from marsdust.mdad_format import STORM_COLUMNS, format_member_id

log = logging.getLogger(__name__)

PSEUDO_CONFIDENCE = 100
"""Catalogue confidence given to every pseudo-label (MDAD's levels are 50, 75, 100)."""
STUDENT_LR = 5e-4
"""Default learning rate of the student: a quarter of the schedule's 2e-3, as fine-tuning goes."""


def pseudo_catalog(detections: pd.DataFrame, maps: pd.DataFrame, min_score: float) -> pd.DataFrame:
    """The storm table (:data:`marsdust.mdad_format.STORM_COLUMNS`) of the confident dust detections.

    Parameters
    ----------
    detections : DataFrame
        ``detections.csv`` of :func:`marsdust.detect.detect_archive` (``map_id``, ``lon``, ``lat``,
        ``area_km2``, ``score``, ``polygon_wkt``, ``class``).
    maps : DataFrame
        The target archive's index (:func:`marsdust.mdgm.index_archive`): ``map_id``, ``subphase``,
        ``sol``, ``mars_year``, ``ls`` of each map.
    min_score : float
        Detections scoring below it are left out.

    Returns
    -------
    DataFrame
        One row per kept detection: its map's subphase, sol, Mars year and Ls, its centroid, area and
        outline, confidence :data:`PSEUDO_CONFIDENCE`, member ID ``<SUBPHASE>_<nnn>`` numbering the map's
        kept detections (:func:`marsdust.mdad_format.format_member_id`), no sequence ID.

    Raises
    ------
    ValueError
        A detection of a map the index does not hold, or ``min_score`` outside [0, 1].
    """
    if not 0.0 <= float(min_score) <= 1.0:
        raise ValueError(f"min_score must be a score in [0, 1], got {min_score}")
    kept = detections[(detections["score"] >= float(min_score))
                      & (detections.get("class", pd.Series("dust", index=detections.index)) == "dust")]
    unknown = sorted(set(kept["map_id"]) - set(maps["map_id"]))
    if unknown:
        raise ValueError(f"detections of maps the target archive does not hold: {', '.join(unknown[:5])}")
    table = kept[["map_id", "lon", "lat", "area_km2", "polygon_wkt"]].merge(
        maps[["map_id", "subphase", "sol", "mars_year", "ls"]], on="map_id", how="left")
    number = table.groupby("map_id").cumcount() + 1
    table["member_id"] = [format_member_id(subphase, k) for subphase, k in zip(table["subphase"], number)]
    table["confidence"] = PSEUDO_CONFIDENCE
    table["sequence_id"] = ""
    return table[STORM_COLUMNS].reset_index(drop=True)


def write_pseudo_data(catalog: pd.DataFrame, archive: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """A data folder for ``marsdust train``: ``out_dir/archive`` (a link to ``archive``) and
    ``out_dir/mdad/pseudo_labels.csv`` (``catalog``, written atomically). Returns ``out_dir``."""
    from marsdust.mdad import save_catalog

    out_dir = Path(out_dir)
    archive = Path(archive).resolve()
    if not archive.is_dir():
        raise FileNotFoundError(f"{archive}: the target archive must be a folder of maps")
    link = out_dir / "archive"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and link.resolve() != archive:
        link.unlink()
    if not link.exists():
        link.symlink_to(archive, target_is_directory=True)
    save_catalog(catalog, out_dir / "mdad" / "pseudo_labels.csv")
    return out_dir


def pseudo_split(maps: pd.DataFrame, val_fraction: float = 0.1, seed: int = 0, target_ids=None) -> pd.DataFrame:
    """The student's split manifest: every target map (``target_ids``; default all of ``maps``) trains, but a
    random ``val_fraction`` of them (at least one) kept for the validation at the end of the run; the other
    maps of the archive are ``unused`` (they still give the reference bands their history)."""
    import numpy as np

    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    target = np.ones(len(maps), bool) if target_ids is None else maps["map_id"].isin(set(target_ids)).to_numpy()
    positions = np.flatnonzero(target)
    n_val = min(len(positions), max(1, int(round(float(val_fraction) * len(positions)))))
    split = np.where(target, "train", "unused").astype(object)
    split[np.random.default_rng(seed).choice(positions, size=n_val, replace=False)] = "val"
    return maps[["map_id", "mars_year", "ls"]].assign(split=split).reset_index(drop=True)


def student_config(checkpoint: str | os.PathLike, data: str | os.PathLike, split_file: str | os.PathLike,
                   steps: int, *, lr: float = STUDENT_LR, **overrides):
    """The student's :class:`marsdust.train.TrainConfig`: the teacher's network and inputs, started from its
    weights, trained ``steps`` steps on the pseudo-labelled ``data`` with the split manifest ``split_file``
    (:func:`pseudo_split`) and one validation at the end. ``overrides`` are further TrainConfig fields."""
    from marsdust.models import checkpoint_metadata
    from marsdust.train import TrainConfig

    teacher = checkpoint_metadata(checkpoint)
    model_config = dict(teacher["model_config"])
    extra = teacher["extra"]
    reference = str(model_config.get("reference", "none"))
    values = dict(
        data=str(data), model=teacher["model_name"], model_preset=None, model_config=model_config,
        map_res_deg=float(model_config["map_res_deg"]), reference=reference,
        reference_dropout=float(extra.get("reference_dropout", 0.0)), label_mode="outline",
        classes=list(extra.get("classes", ["dust"])), init_weights=str(checkpoint), split_file=str(split_file),
        lr=lr, max_steps=int(steps), val_every_n_steps=int(steps))
    if reference != "none":
        values["reference_sols"] = int(model_config["reference_sols"])
    values.update(overrides)
    return TrainConfig(**values)


def self_train(checkpoint: str | os.PathLike, archive: str | os.PathLike, out_dir: str | os.PathLike, *,
               maps=None, steps: int = 150, min_score: float = 0.7, device: str = "cpu", progress: bool = True,
               **overrides) -> dict:
    """One round of self-training of ``checkpoint`` on the unlabeled ``archive`` (module docstring).

    Parameters
    ----------
    maps : list of paths, optional
        The target maps, a part of ``archive`` (e.g. a test period); default: all its maps. The rest of
        the archive only gives the reference bands their history.
    steps, min_score
        Training steps of the student; the score from which a detection becomes a label.
    overrides
        Further :class:`marsdust.train.TrainConfig` fields of the student (``lr``, ``seed``, ``threads``...).

    Returns
    -------
    dict
        ``checkpoint`` (the student's ``last.ckpt``), ``n_maps`` (target maps), ``n_pseudo_labels``,
        ``maps_with_labels``, ``min_score``, ``teacher_detections`` (path) and the training summary, ``train``.
    """
    from marsdust.data import save_split
    from marsdust.detect import DetectExecution, DetectOutputs, detect_archive
    from marsdust.mdgm import index_archive
    from marsdust.train import train

    out_dir = Path(out_dir)
    index = index_archive(archive)
    wanted = None if maps is None else {str(Path(m).resolve()) for m in maps}
    target = index if wanted is None else index[[str(Path(p).resolve()) in wanted for p in index["path"]]]
    if target.empty:
        raise ValueError(f"{archive}: none of the {len(maps)} target maps is in the archive")
    found = detect_archive(checkpoint, list(target["path"]),
                           DetectOutputs(out_dir / "teacher", track=False, mask_grid="working"),
                           execution=DetectExecution(device=device, progress=progress), history=str(archive))
    detections_csv = found.paths["detections"]
    catalog = pseudo_catalog(pd.read_csv(detections_csv), target, min_score)
    log.info("self-training: %d pseudo-labels (score >= %.2f) on %d of %d maps", len(catalog), min_score,
             catalog["map_id"].nunique(), len(target))
    data = write_pseudo_data(catalog, archive, out_dir / "data")
    split = pseudo_split(index, seed=int(overrides.get("seed", 0)), target_ids=target["map_id"])
    split_file = save_split(split, data / "split.csv")
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    config = student_config(checkpoint, data, split_file, steps, accelerator=accelerator, progress=progress,
                            **overrides)
    run_dir = out_dir / "run"
    summary = train(config, run_dir, resume=(run_dir / "checkpoints" / "last.ckpt").is_file())
    return {"checkpoint": str(run_dir / "checkpoints" / "last.ckpt"), "n_maps": len(target),
            "n_pseudo_labels": len(catalog), "maps_with_labels": int(catalog["map_id"].nunique()),
            "min_score": float(min_score), "teacher_detections": str(detections_csv),
            "train": summary}
