"""The run configuration of ``marsdust train``: :class:`TrainConfig`, its YAML file, the optimizer schedules,
and what a configuration resolves to (data paths, tables, split).

Schedules (``TrainConfig.schedule``)
------------------------------------
``paper``
    The paper's section 5.2: Adam, lr 1e-4, weight decay 1e-3, lr × 0.1 every 1000 iterations.
``warmup_cosine``
    For random-initialised backbones (no ImageNet weights here): AdamW, lr 1e-3, weight decay 1e-4,
    linear warm-up over ``warmup_steps`` (default 5 % of the run, at least 10 steps), then cosine
    decay to 5 % of the peak at ``max_steps``; gradients clipped at norm 10. It learns clearly faster
    than ``paper`` in a short run (see benchmarks/README.md, "Measurements behind defaults"), so it
    is the default; the paper's schedule is one flag away (``--schedule paper``).

Every field can also be set individually (``lr``, ``weight_decay``, ``warmup_steps``, ...): the
preset fills only what is left unset (None).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from marsdust.cloudmask import MAX_CLOUD_WIDTH_DEG
from marsdust.reference import DEFAULT_REFERENCE_SOLS, ReferenceConfig

SCHEDULES: dict[str, dict[str, Any]] = {
    "paper": {"optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-3, "warmup_steps": 0, "decay": "step",
              "decay_every_steps": 1000, "decay_factor": 0.1, "min_lr_ratio": 0.0, "clip_grad_norm": 0.0},
    "warmup_cosine": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "warmup_steps": -1, "decay": "cosine",
                      "decay_every_steps": 0, "decay_factor": 1.0, "min_lr_ratio": 0.05, "clip_grad_norm": 10.0},
}
"""Optimizer presets. ``warmup_steps = -1`` means 5 % of ``max_steps`` (at least 10)."""

DEFAULT_SCHEDULE = "warmup_cosine"

OPTIM_FIELDS = ("optimizer", "lr", "weight_decay", "warmup_steps", "decay", "decay_every_steps", "decay_factor",
                "min_lr_ratio", "clip_grad_norm")


def lr_factor(step: int, optim: dict[str, Any]) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based) of a schedule (see :data:`SCHEDULES`)."""
    warmup = int(optim.get("warmup_steps") or 0)
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    decay = optim.get("decay", "none")
    if decay == "step":
        every = int(optim.get("decay_every_steps") or 0)
        return float(optim.get("decay_factor", 0.1)) ** (step // every) if every > 0 else 1.0
    if decay == "cosine":
        total = max(1, int(optim["max_steps"]) - warmup)
        progress = min(1.0, max(0.0, (step - warmup) / total))
        floor = float(optim.get("min_lr_ratio", 0.0))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


@dataclass
class TrainConfig:
    """Everything a training run needs (written to ``RUN_DIR/config.yaml``).

    Attributes
    ----------
    data : str or None
        Folder holding ``archive/`` and ``mdad/`` (the layout ``marsdust synth`` writes).
    archive, catalog : str or None
        MDGM archive and MDAD path (override ``data``'s sub-folders).
    master : str or None
        MDAD v1.1 master CSV for every cube of the catalog (default: found by its columns under the
        catalog folder, :func:`marsdust.mdad.read_catalog`).
    strict : bool
        Stop on MDAD cube/master disagreements instead of one warning (``read_catalog(strict=True)``).
    model : str
        Registered detector (``dustrcnn``, ``maskrcnn``, ``fasterrcnn``, ``sppnet``).
    model_preset : str or None
        Named :class:`marsdust.models.DetectorConfig` overrides applied first
        (:data:`marsdust.models.MODEL_PRESETS`: ``compact``, ``small_cpu``, ``stock_like``);
        None = ``compact``, the default configuration.
    model_config : dict
        :class:`marsdust.models.DetectorConfig` fields to override (on top of ``model_preset``).
    backbone : str or None
        Shortcut for ``model_config["backbone"]``.
    map_res_deg : float
        Working resolution, degrees per pixel (also the detector's ``map_res_deg``).
    label_mode : {"fixed", "area", "outline"}
        Ground-truth shape (:mod:`marsdust.labels`). Default ``outline``: storms are learnt as the
        catalogue outlines them (the paper's 12° boxes are then drawn at each detection's outline
        centroid when scoring, see :func:`marsdust.evaluate.evaluate_checkpoint`); catalogue rows without an outline
        (MDAD v1.0 tables) get area-sized boxes.
    strategy : {"temporal", "random"}
        Split strategy (the paper's 1 and 2).
    train_period, test_period, random_period : str or None
        Period overrides like ``"MY25 0 - MY27 180"`` (Mars year, Ls in degrees; end excluded,
        ``"... ]"`` or ``"MY28 121]"`` keeps the end).
    val_fraction : float or None
        Temporal split: share of the training period used for validation (None: the paper's).
    split_file : str or None
        Use this split manifest instead of computing one.
    seed : int
        Seed of the split, the weights, the sampler and augmentation.
    schedule : {"paper", "warmup_cosine"}
        Optimizer preset; the fields below left at None take the preset's value.
    optimizer, lr, weight_decay, warmup_steps, decay, decay_every_steps, decay_factor, min_lr_ratio, clip_grad_norm
        See :data:`SCHEDULES`; ``lr`` per step, ``warmup_steps`` in optimizer steps.
    batch_size : int
        Maps per optimizer step per device. Default 4: with BatchNorm (model preset ``small_cpu``)
        two maps per batch gave far noisier statistics and learnt much less per map seen
        (benchmarks/README.md, "Training recipe").
    max_steps : int
        Optimizer steps in all.
    val_every_n_steps : int
        Validation (mAP50 on the val split) every this many steps (clipped to ``max_steps``).
    ckpt_every_n_steps : int or None
        ``last.ckpt`` every this many steps (default: ``val_every_n_steps``) and at the end.
    augment : bool
        Planet-respecting augmentation of training maps (:mod:`marsdust.data`).
    augment_preset : str
        Which augmentation (:data:`marsdust.data.AUGMENT_PRESETS`: ``basic``, ``strong``).
    reference : {"prior-median", "none"}
        Reference bands (:mod:`marsdust.reference`): ``prior-median`` (the default) gives the
        detector each map's clear-sky background from the archive's previous ``reference_sols``
        sols as three more bands; ``none``, the map alone. Stored in the detector's config, so
        ``detect`` and ``evaluate`` rebuild it. The default because the detector then compares a
        map with its own history instead of learning one planet's surface: on another synthetic
        planet it keeps its accuracy where the map-only detector loses about 12 points of 12°
        mAP50 (benchmarks/README.md, "Reference channels").
    reference_dropout : float
        Probability that a training map is shown without its background (as a map with no
        history: the first sols of an archive, a lone map), so a reference detector also works
        there (default 0.2; 0 = always with it, and then it finds almost nothing without history).
        The checkpoint records it, and ``detect`` gives a detector trained with it maps that
        have no Mars year and Ls.
    reference_sols : int
        Window of the ``prior-median`` background, sols.
    num_workers : int
        DataLoader worker processes (keep it modest: maps are small and cached).
    threads : int or None
        Torch CPU threads (None: torch's default).
    accelerator, devices, num_nodes, trainer_strategy, precision
        Passed to ``lightning.Trainer`` (``trainer_strategy`` is its ``strategy``: ``auto``,
        ``ddp``, ``ddp_spawn``, ...).
    progress : bool
        Show progress: Lightning's bar on a terminal, plain lines (step, loss, rate, ETA, validation
        mAP) when standard error is a file or pipe (CI logs, ``make demo > log``).
    classes : list of str
        Classes the detector learns: ``["dust"]`` (default) or ``["dust", "cloud"]`` (also written
        ``"dust,cloud"``); water-ice clouds (label 2) come from the maps' cloud masks
        (:mod:`marsdust.cloudmask`). The checkpoint records them.
    cloud_masks : str or None
        The cloud-mask tree (``<SUBPHASE>/<map_id>.nc``; default: ``cloudmask/`` beside the archive).
    cloud_max_width_deg : float or None
        Cloud regions wider than this in longitude (degrees; default
        :data:`marsdust.cloudmask.MAX_CLOUD_WIDTH_DEG`, 90) are no cloud instance (belts, polar
        hoods: :func:`marsdust.cloudmask.cloud_instances`); None or 360: no limit. ``evaluate``
        reads it from the run (runs from before it: no limit).
    """

    data: str | None = None
    archive: str | None = None
    catalog: str | None = None
    master: str | None = None
    strict: bool = False
    model: str = "dustrcnn"
    model_preset: str | None = None
    model_config: dict = field(default_factory=dict)
    backbone: str | None = None
    map_res_deg: float = 0.4
    label_mode: str = "outline"
    strategy: str = "temporal"
    train_period: str | None = None
    test_period: str | None = None
    random_period: str | None = None
    val_fraction: float | None = None
    split_file: str | None = None
    seed: int = 0
    schedule: str = DEFAULT_SCHEDULE
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    warmup_steps: int | None = None
    decay: str | None = None
    decay_every_steps: int | None = None
    decay_factor: float | None = None
    min_lr_ratio: float | None = None
    clip_grad_norm: float | None = None
    batch_size: int = 4
    max_steps: int = 300
    val_every_n_steps: int = 50
    ckpt_every_n_steps: int | None = None
    augment: bool = True
    augment_preset: str = "strong"
    reference: str = "prior-median"
    reference_sols: int = DEFAULT_REFERENCE_SOLS
    reference_dropout: float = 0.2
    num_workers: int = 2
    threads: int | None = None
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    trainer_strategy: str = "auto"
    precision: str = "32-true"
    progress: bool = True
    classes: list = field(default_factory=lambda: ["dust"])
    cloud_masks: str | None = None
    cloud_max_width_deg: float | None = MAX_CLOUD_WIDTH_DEG

    def __post_init__(self):
        from marsdust.cloudmask import parse_classes

        self.classes = list(parse_classes(self.classes))
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {self.schedule!r}")
        if self.strategy not in ("temporal", "random"):
            raise ValueError(f"strategy must be 'temporal' or 'random', got {self.strategy!r}")
        for name in ("batch_size", "max_steps", "val_every_n_steps", "num_nodes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if not 0.0 <= float(self.reference_dropout) <= 1.0:
            raise ValueError(f"reference_dropout must be a probability in [0, 1], got {self.reference_dropout}")
        if self.cloud_max_width_deg is not None and not 0 < float(self.cloud_max_width_deg) <= 360:
            raise ValueError(f"cloud_max_width_deg must be in (0, 360] degrees or None, got {self.cloud_max_width_deg}")
        from marsdust.data import augment_config
        from marsdust.models.config import preset_overrides

        preset_overrides(self.model_preset)  # an unknown name fails here, listing the valid ones
        augment_config(self.augment_preset)
        self.reference_config  # an unknown reference or a window under 1 sol fails here

    @property
    def reference_config(self) -> ReferenceConfig:
        """The run's reference bands (:class:`marsdust.reference.ReferenceConfig`)."""
        return ReferenceConfig(self.reference, int(self.reference_sols))

    def optim(self) -> dict[str, Any]:
        """The optimizer settings: the schedule preset with every explicitly set field on top."""
        values = dict(SCHEDULES[self.schedule])
        for name in OPTIM_FIELDS:
            if getattr(self, name) is not None:
                values[name] = getattr(self, name)
        if values["warmup_steps"] is None or values["warmup_steps"] < 0:
            values["warmup_steps"] = max(10, int(round(0.05 * self.max_steps)))
        values["max_steps"] = int(self.max_steps)
        if values["optimizer"] not in ("adam", "adamw", "sgd"):
            raise ValueError(f"optimizer must be adam, adamw or sgd, got {values['optimizer']!r}")
        if values["decay"] not in ("step", "cosine", "none"):
            raise ValueError(f"decay must be step, cosine or none, got {values['decay']!r}")
        return values

    def detector_overrides(self) -> dict[str, Any]:
        """DetectorConfig fields of this run: ``model_preset``, then ``model_config``, then the shortcuts."""
        from marsdust.models.config import preset_overrides

        overrides = preset_overrides(self.model_preset)
        overrides.update(self.model_config)
        overrides["map_res_deg"] = float(self.map_res_deg)
        if len(self.classes) > 1:  # a one-class run leaves num_classes to the preset (1)
            overrides["num_classes"] = len(self.classes)
        if self.backbone:
            overrides["backbone"] = self.backbone
        reference = self.reference_config
        if reference.enabled:  # without one the detector's config stays as it always was
            overrides.update(reference=reference.kind, reference_sols=reference.sols,
                             in_channels=3 + reference.n_bands)
        return overrides

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for YAML."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        """Build from a dict; unknown keys raise ``ValueError`` naming them and ``source``."""
        values = {k: v for k, v in values.items() if k != "resolved_optim"}  # written for reading only
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown training config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)


def load_config_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML run configuration (a mapping of :class:`TrainConfig` fields)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    with open(path, encoding="utf-8") as stream:
        values = yaml.safe_load(stream) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a YAML mapping of training settings, got {type(values).__name__}")
    return values


_PERIOD_RE = re.compile(
    r"^\s*MY\s*(\d+)\s*(?:Ls)?\s*([\d.]+)\s*°?\s*(?:-|–|to)\s*MY\s*(\d+)\s*(?:Ls)?\s*([\d.]+)\s*°?\s*(\])?\s*$",
    re.IGNORECASE)


def parse_period(text: str):
    """``"MY25 0 - MY27 180"`` (or ``"MY25 Ls0° – MY27 Ls180°"``; a trailing ``]`` keeps the end) → Period."""
    from marsdust.data import Period

    match = _PERIOD_RE.match(str(text))
    if not match:
        raise ValueError(f"period {text!r} not understood; write it like 'MY25 0 - MY27 180' (Mars year, Ls degrees)")
    start_my, start_ls, end_my, end_ls, inclusive = match.groups()
    return Period(int(start_my), float(start_ls), int(end_my), float(end_ls), end_inclusive=bool(inclusive))


def resolve_data_paths(config: TrainConfig) -> tuple[Path, Path]:
    """(archive, catalog) paths of a run: explicit ones, else ``data/archive`` and ``data/mdad``."""
    archive = Path(config.archive) if config.archive else (Path(config.data) / "archive" if config.data else None)
    catalog = Path(config.catalog) if config.catalog else (Path(config.data) / "mdad" if config.data else None)
    if archive is None or catalog is None:
        raise ValueError("give the data folder (holding archive/ and mdad/) or both the archive and the catalog")
    for what, path in (("archive", archive), ("catalog", catalog)):
        if not path.exists():
            raise FileNotFoundError(f"{what} {path} does not exist")
    return archive, catalog


def cloud_mask_root(config: TrainConfig) -> Path | None:
    """The cloud-mask tree of a two-class run (``cloud_masks``, else ``cloudmask/`` beside the archive);
    None for a dust-only run."""
    from marsdust.cloudmask import cloud_mask_root as beside_archive

    if "cloud" not in config.classes:
        return None
    return Path(config.cloud_masks) if config.cloud_masks else beside_archive(resolve_data_paths(config)[0])


def load_tables(config: TrainConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Archive index and storm table of a run."""
    from marsdust.mdad import read_catalog
    from marsdust.mdgm import index_archive

    archive, catalog = resolve_data_paths(config)
    index_df = index_archive(archive)
    if len(index_df) == 0:
        raise ValueError(f"archive {archive} holds no maps")
    storms_df = read_catalog(catalog, master=config.master, strict=config.strict)
    return index_df, storms_df


def split_for(config: TrainConfig, index_df: pd.DataFrame) -> pd.DataFrame:
    """The run's split: the manifest ``split_file`` or :func:`marsdust.data.make_split` with the overrides."""
    from marsdust.data import load_split, make_split

    if config.split_file:
        return load_split(config.split_file)
    overrides: dict[str, Any] = {"seed": int(config.seed)}
    for name in ("train_period", "test_period", "random_period"):
        if getattr(config, name):
            overrides[name] = parse_period(getattr(config, name))
    if config.val_fraction is not None:
        overrides["val_fraction"] = float(config.val_fraction)
    return make_split(index_df, config.strategy, **overrides)

