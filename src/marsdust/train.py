"""Training on PyTorch Lightning: any registered detector, either split strategy, exact resume, DDP.

Run folder (``RUN_DIR``)
------------------------
* ``config.yaml`` — the resolved :class:`TrainConfig` (re-run with ``--config RUN_DIR/config.yaml``);
* ``split.csv`` — the split manifest (:func:`marsdust.data.save_split`), read back by ``evaluate``;
* ``metrics.csv`` — Lightning's CSVLogger (``train_loss``, each loss term, ``lr``, ``val_map25/50/75``
  by ``step``) plus ``hparams.yaml``;
* ``checkpoints/best.ckpt`` (highest validation mAP50) and ``checkpoints/last.ckpt`` (the latest
  state, saved every ``ckpt_every_n_steps`` and at the last step) — Lightning checkpoints whose
  ``hyper_parameters`` hold ``model_name`` and ``model_config`` (every DetectorConfig field, resolved
  from ``model_preset`` and the overrides), so :func:`marsdust.models.load_model` rebuilds the detector
  from either file without the preset table;
* ``done.json`` — written when a run reaches ``max_steps`` (``marsdust compare`` skips such runs).

Schedules (``TrainConfig.schedule``)
------------------------------------
``paper``
    The paper's section 5.2: Adam, lr 1e-4, weight decay 1e-3, lr × 0.1 every 1000 iterations.
``warmup_cosine``
    For random-initialised backbones (no ImageNet weights here): AdamW, lr 1e-3, weight decay 1e-4,
    linear warm-up over ``warmup_steps`` (default 5 % of the run, at least 10 steps), then cosine
    decay to 5 % of the peak at ``max_steps``; gradients clipped at norm 10. Measured on the ``ci``
    preset (see :data:`SCHEDULE_MEASUREMENTS`) it learns clearly faster than ``paper`` in a short
    run, so it is the default; the paper's schedule is one flag away (``--schedule paper``).

Every field can also be set individually (``lr``, ``weight_decay``, ``warmup_steps``, ...): the
preset fills only what is left unset (None).

Exact resume
------------
``resume=True`` continues from ``checkpoints/last.ckpt`` (Lightning ``ckpt_path="last"``) and
reaches the same weights as an uninterrupted run because (a) the training sampler's order is a
pure function of (seed, epoch) and it skips the batches Lightning already consumed in the
interrupted epoch, (b) augmentation of a map is seeded by (seed, epoch, map index), (c) the
global torch / numpy / Python RNG states (used by the RPN and RoI samplers) are stored in the
checkpoint and restored, and (d) the DataLoader draws its worker seeds from its own generator.

Distributed
-----------
``accelerator``, ``devices``, ``num_nodes`` and ``trainer_strategy`` go to ``lightning.Trainer``
unchanged (e.g. ``devices=4, trainer_strategy="ddp"``; several nodes under SLURM or torchrun).
Each rank trains on its own shard of every epoch's permutation; validation predictions are
gathered from all ranks before the COCO evaluation, so every rank logs the same mAP.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch
import yaml

from marsdust.fileio import write_table_atomic, write_text_atomic
from marsdust.mdgm import MapImage

log = logging.getLogger(__name__)


class _DropAdvertisingTips(logging.Filter):
    """Drops Lightning's "Tip: ... install litlogger" line: an advertisement, not news about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


_LIGHTNING_TIPS = _DropAdvertisingTips()

SCHEDULES: dict[str, dict[str, Any]] = {
    "paper": {"optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-3, "warmup_steps": 0, "decay": "step",
              "decay_every_steps": 1000, "decay_factor": 0.1, "min_lr_ratio": 0.0, "clip_grad_norm": 0.0},
    "warmup_cosine": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "warmup_steps": -1, "decay": "cosine",
                      "decay_every_steps": 0, "decay_factor": 1.0, "min_lr_ratio": 0.05, "clip_grad_norm": 10.0},
}
"""Optimizer presets. ``warmup_steps = -1`` means 5 % of ``max_steps`` (at least 10)."""

DEFAULT_SCHEDULE = "warmup_cosine"

SCHEDULE_MEASUREMENTS = """\
ci preset (61 maps), temporal split (26 train / 13 val maps), seed 0, tiny dustrcnn (ResNet-18, FPN 32 ch,
BatchNorm, random init) at 0.8 deg (150 x 450 px), batch 2, 2 CPU cores shared with other jobs;
validation box mAP25 / mAP50 (fractions):
    step            20             40             60             80
    warmup_cosine   0.002/0.000    0.030/0.030    0.045/0.030    0.076/0.030
    paper           0.000/0.000    0.004/0.000    0.005/0.000    0.023/0.000
The paper's lr 1e-4 barely moves a random-init network in a short run; warm-up to 1e-3 and cosine decay
does (the paper fine-tuned from pretrained weights for many thousand iterations).
"""

OPTIM_FIELDS = ("optimizer", "lr", "weight_decay", "warmup_steps", "decay", "decay_every_steps", "decay_factor",
                "min_lr_ratio", "clip_grad_norm")


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------
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
        centroid when scoring, see :func:`evaluate_checkpoint`); catalogue rows without an outline
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
    num_workers: int = 2
    threads: int | None = None
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    trainer_strategy: str = "auto"
    precision: str = "32-true"
    progress: bool = True

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {self.schedule!r}")
        if self.strategy not in ("temporal", "random"):
            raise ValueError(f"strategy must be 'temporal' or 'random', got {self.strategy!r}")
        for name in ("batch_size", "max_steps", "val_every_n_steps", "num_nodes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        from marsdust.data import augment_config
        from marsdust.models.config import preset_overrides

        preset_overrides(self.model_preset)  # an unknown name fails here, listing the valid ones
        augment_config(self.augment_preset)

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
        if self.backbone:
            overrides["backbone"] = self.backbone
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


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
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


def _world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochSampler(torch.utils.data.Sampler):
    """Training order as a pure function of (seed, epoch), sharded over DDP ranks, resumable mid-epoch.

    Yields ``(epoch, index)`` keys (see :class:`SeededAugmentation`). ``position()`` returns
    ``(epoch, batches already consumed in it)``; at iteration start those batches are skipped, so
    a run resumed mid-epoch sees exactly the maps the interrupted run would have seen next.
    """

    def __init__(self, n_items: int, seed: int, batch_size: int, position: Callable[[], tuple[int, int]] | None = None):
        if n_items < 1:
            raise ValueError("the training split holds no maps")
        self.n_items, self.seed, self.batch_size = int(n_items), int(seed), int(batch_size)
        self.position = position or (lambda: (0, 0))

    def _epoch_order(self, epoch: int) -> np.ndarray:
        rank, world = _world()
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n_items)
        if world > 1:
            order = np.resize(order, math.ceil(self.n_items / world) * world)[rank::world]
        return order

    def __len__(self) -> int:
        _, world = _world()
        return math.ceil(self.n_items / world)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, consumed_batches = self.position()
        if consumed_batches * self.batch_size >= len(self):  # saved at the end of an epoch
            epoch, consumed_batches = epoch + 1, 0
        order = self._epoch_order(epoch)[consumed_batches * self.batch_size:]
        return iter([(epoch, int(i)) for i in order])


class SeededAugmentation(torch.utils.data.Dataset):
    """Wraps a :class:`marsdust.data.DustDataset`: item ``(epoch, i)`` is map ``i`` augmented with a
    torch seed drawn from (seed, epoch, i), independent of worker and process."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        item_seed = int(np.random.default_rng([self.seed, int(epoch), int(index)]).integers(2**62))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed)
            return self.dataset[int(index)]


class ShardSampler(torch.utils.data.Sampler):
    """Every world-size-th item from this rank (validation; no padding, nothing repeated)."""

    def __init__(self, n_items: int):
        self.n_items = int(n_items)

    def __iter__(self):
        rank, world = _world()
        return iter(range(rank, self.n_items, world))

    def __len__(self) -> int:
        rank, world = _world()
        return len(range(rank, self.n_items, world))


def _data_module_class():
    import lightning as L

    from marsdust.data import DustDataset, collate_fn, select_split

    class DustDataModule(L.LightningDataModule):
        """Training maps (augmented, resumable order) and validation maps (working resolution, native order)."""

        def __init__(self, config: TrainConfig, index_df: pd.DataFrame, storms_df: pd.DataFrame, split_df: pd.DataFrame):
            super().__init__()
            self.config = config
            self.train_set = DustDataset(select_split(index_df, split_df, "train"), storms_df, config.map_res_deg,
                                         config.label_mode, augment=config.augment_preset if config.augment else False)
            self.val_set = DustDataset(select_split(index_df, split_df, "val"), storms_df, config.map_res_deg,
                                       config.label_mode, augment=False)
            if len(self.train_set) == 0:
                raise ValueError("the training split holds no maps")
            if len(self.val_set) == 0:
                raise ValueError("the validation split holds no maps (raise val_fraction or change the periods)")

        def _position(self) -> tuple[int, int]:
            trainer = getattr(self, "trainer", None)
            if trainer is None:
                return 0, 0
            return int(trainer.current_epoch), int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)

        def _loader_kwargs(self) -> dict:
            workers = int(self.config.num_workers)
            return {"collate_fn": collate_fn, "num_workers": workers, "persistent_workers": workers > 0}

        def train_dataloader(self):
            sampler = EpochSampler(len(self.train_set), self.config.seed, self.config.batch_size, self._position)
            return torch.utils.data.DataLoader(
                SeededAugmentation(self.train_set, self.config.seed), batch_size=self.config.batch_size,
                sampler=sampler, generator=torch.Generator().manual_seed(int(self.config.seed)),
                **self._loader_kwargs())

        def val_dataloader(self):
            return torch.utils.data.DataLoader(self.val_set, batch_size=self.config.batch_size,
                                               sampler=ShardSampler(len(self.val_set)), **self._loader_kwargs())

    return DustDataModule


# --------------------------------------------------------------------------------------------------
# the LightningModule
# --------------------------------------------------------------------------------------------------
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


def _targets_for_model(targets: list[dict], with_masks: bool) -> list[dict]:
    keys = ("boxes", "labels", "masks") if with_masks else ("boxes", "labels")
    return [{k: t[k] for k in keys} for t in targets]


def validation_map(records: list[tuple]) -> dict[str, float]:
    """COCO box mAP25/50/75 of validation records ``(map_id, (height, width), gt, pred)``.

    ``gt`` and ``pred`` are :mod:`marsdust.evaluate` entries in the same (rolled) image frame;
    the map grid is 60°S–60°N-centred with ``360 / width`` degrees per pixel. A value is 0.0 (not
    NaN) when the maps hold no storm, so checkpoint selection always has a number.
    """
    from marsdust.evaluate import coco_map

    result = coco_map(*_records_by_map(records))
    return {key: float(result[key]) if math.isfinite(result[key]) else 0.0 for key in ("map25", "map50", "map75")}


def _records_by_map(records: list[tuple]) -> tuple[dict, dict, dict]:
    """``(ground_truth, predictions, grids)`` by map id from validation records (60°S–60°N-centred grids)."""
    from marsdust.grid import MapGrid

    ground_truth, predictions, grids = {}, {}, {}
    for map_id, (height, width), gt, pred in records:
        ground_truth[map_id], predictions[map_id] = gt, pred
        res = 360.0 / width
        grids[map_id] = MapGrid(res * height / 2, -res * height / 2, res)
    return ground_truth, predictions, grids


def best_f1_threshold(records: list[tuple]) -> tuple[float | None, float]:
    """The score threshold with the highest F1 (IoU ≥ 0.5) on validation records, and that F1.

    ``records`` as for :func:`validation_map`. Thresholds 0.05, 0.10, …, 0.95 are tried
    (:func:`marsdust.analysis.score_sweep`); the highest F1 wins, the higher threshold on a tie.
    Returns ``(None, 0.0)`` when no threshold finds any storm.
    """
    from marsdust.analysis import score_sweep

    best, best_f1 = None, 0.0
    for row in score_sweep(*_records_by_map(records), thresholds=SCORE_THRESHOLD_GRID):
        precision, recall = row["precision"], row["recall"]
        if not (precision > 0 and recall > 0):  # NaN or 0
            continue
        f1 = 2 * precision * recall / (precision + recall)
        if f1 >= best_f1:
            best, best_f1 = row["score_threshold"], f1
    return best, float(best_f1)


SCORE_THRESHOLD_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))
"""Score thresholds tried when choosing a detector's threshold on validation maps."""


def _numpy_state_to_builtins(state: tuple) -> dict:
    """numpy's legacy RNG state as tensors and builtins (loadable with torch ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = state
    return {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _numpy_state_from_builtins(state: dict) -> tuple:
    return (state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["cached"])


def _module_class():
    import lightning as L

    from marsdust.models import DetectorConfig, build_model

    class DetectorModule(L.LightningModule):
        """A registered detector (``self.model``) with its optimizer schedule and mAP validation.

        ``hyper_parameters`` hold ``model_name``, ``model_config`` (resolved DetectorConfig dict)
        and ``optim`` — what :func:`marsdust.models.load_model` needs to rebuild the detector.
        """

        def __init__(self, model_name: str, model_config: dict, optim: dict, label_mode: str | None = None):
            super().__init__()
            model = build_model(model_name, DetectorConfig.from_dict(dict(model_config), source="model_config"))
            self.model = model
            self.save_hyperparameters({"model_name": model_name, "model_config": model.config.to_dict(),
                                       "optim": dict(optim), "label_mode": label_mode})
            self.optim = dict(optim)
            self._val_predictions: list[tuple] = []
            self._saved_score_thresh = None

        # ---- training
        def training_step(self, batch, batch_idx):
            images, targets = batch
            losses = self.model(images, _targets_for_model(targets, self.model.has_masks))
            loss = sum(losses.values())
            size = len(images)
            self.log("train_loss", loss, prog_bar=True, batch_size=size, sync_dist=False)
            for name, value in losses.items():
                self.log(f"train_{name}", value, batch_size=size)
            return loss

        def configure_optimizers(self):
            optim = self.optim
            params = [p for p in self.model.parameters() if p.requires_grad]
            if optim["optimizer"] == "adam":
                optimizer = torch.optim.Adam(params, lr=optim["lr"], weight_decay=optim["weight_decay"])
            elif optim["optimizer"] == "adamw":
                optimizer = torch.optim.AdamW(params, lr=optim["lr"], weight_decay=optim["weight_decay"])
            else:
                optimizer = torch.optim.SGD(params, lr=optim["lr"], momentum=0.9, weight_decay=optim["weight_decay"])
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, optim))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

        def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            clip = float(self.optim.get("clip_grad_norm") or 0.0)
            if clip > 0:
                self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

        # ---- validation: mAP on model outputs at score threshold 0
        def on_validation_epoch_start(self):
            self._val_predictions = []
            heads = self.model.roi_heads
            self._saved_score_thresh = heads.score_thresh
            heads.score_thresh = 0.0

        def validation_step(self, batch, batch_idx):
            images, targets = batch
            outputs = self.model(images)
            for image, target, output in zip(images, targets, outputs):
                gt = {"boxes": target["boxes"].cpu().numpy(), "confidence": target["confidence"].cpu().numpy(),
                      "area_km2": target["area_km2"].cpu().numpy(), "ls": target["ls"]}
                pred = {"boxes": output["boxes"].detach().cpu().numpy(), "scores": output["scores"].detach().cpu().numpy()}
                self._val_predictions.append((target["map_id"], tuple(image.shape[-2:]), gt, pred))

        def on_validation_epoch_end(self):
            self.model.roi_heads.score_thresh = self._saved_score_thresh
            records = self._val_predictions
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                gathered = [None] * torch.distributed.get_world_size()
                torch.distributed.all_gather_object(gathered, records)
                records = [r for part in gathered for r in part]
            for key, value in validation_map(records).items():
                self.log(f"val_{key}", value, prog_bar=key == "map50", sync_dist=False, rank_zero_only=False)
            threshold, f1 = best_f1_threshold(records)
            self._val_score_threshold = threshold
            self.log("val_best_f1", f1, sync_dist=False, rank_zero_only=False)
            self.log("val_score_threshold", threshold if threshold is not None else float("nan"), sync_dist=False,
                     rank_zero_only=False)
            self._val_predictions = []

        # ---- exact resume: the RNG streams the RPN / RoI samplers draw from
        def on_save_checkpoint(self, checkpoint):
            if getattr(self, "_val_score_threshold", None) is not None:  # of the validation this checkpoint follows
                checkpoint["marsdust_score_threshold"] = float(self._val_score_threshold)
            checkpoint["marsdust_rng"] = {
                "torch": torch.get_rng_state(),
                "numpy": _numpy_state_to_builtins(np.random.get_state()),
                "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            }

        def on_load_checkpoint(self, checkpoint):
            self._rng_to_restore = checkpoint.get("marsdust_rng")

        def on_train_start(self):
            state = getattr(self, "_rng_to_restore", None)
            if state:
                torch.set_rng_state(state["torch"])
                np.random.set_state(_numpy_state_from_builtins(state["numpy"]))
                random.setstate(state["python"])
                if state.get("cuda") and torch.cuda.is_available():
                    torch.cuda.set_rng_state_all(state["cuda"])
                self._rng_to_restore = None

    return DetectorModule


def build_module(config: TrainConfig):
    """The LightningModule of a run (a new detector from ``config``)."""
    return _module_class()(config.model, config.detector_overrides(), config.optim(), config.label_mode)


# --------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------
def best_score_on_disk(best_path: Path, state_key: str) -> float | None:
    """The monitored score stored in ``best.ckpt`` by the callback ``state_key``, or None."""
    if not best_path.is_file():
        return None
    try:
        checkpoint = torch.load(best_path, map_location="cpu", weights_only=False)
        score = checkpoint.get("callbacks", {}).get(state_key, {}).get("best_model_score")
    except Exception:  # noqa: BLE001 - an unreadable best.ckpt is replaced by the next best model
        return None
    return None if score is None else float(score)


def _best_checkpoint_class():
    from lightning.pytorch.callbacks import ModelCheckpoint

    class BestCheckpoint(ModelCheckpoint):
        """``best.ckpt`` that a resumed run replaces only with a better model.

        A ``last.ckpt`` of an earlier version was written before its step's validation, so the best
        score it carries can be the one before that validation (and Lightning drops it altogether
        when the run folder moved: ``dirpath`` differs). On resume the score of the
        ``best.ckpt`` on disk is restored when it is higher.
        """

        def load_state_dict(self, state_dict):
            super().load_state_dict(state_dict)
            path = Path(self.dirpath) / "best.ckpt"
            on_disk = best_score_on_disk(path, self.state_key)
            if on_disk is not None and (self.best_model_score is None or on_disk > float(self.best_model_score)):
                score = torch.tensor(on_disk)
                self.best_model_score, self.best_model_path = score, str(path)
                self.kth_best_model_path, self.kth_value, self.best_k_models = str(path), score, {str(path): score}

    return BestCheckpoint


def _continued_csv_logger(run_dir: Path, flush_every: int, resume_step: int | None):
    """Lightning's CSVLogger writing ``RUN_DIR/metrics.csv``; on resume it keeps the rows before ``resume_step``.

    (Lightning's writer deletes an existing ``metrics.csv`` when it starts; the rows logged after
    the checkpoint are logged again by the resumed run.)
    """
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    path = run_dir / "metrics.csv"

    class ContinuedCSVLogger(CSVLogger):
        @property
        def experiment(self):
            if self._experiment is not None:
                return self._experiment
            kept = None
            if resume_step is not None and path.is_file() and path.stat().st_size > 0:
                old = pd.read_csv(path)
                kept = old.loc[old["step"] < resume_step] if "step" in old.columns else None
            writer = CSVLogger.experiment.fget(self)
            if isinstance(writer, ExperimentWriter) and kept is not None and len(kept):
                write_table_atomic(kept, path)
                writer.metrics_keys = list(kept.columns)
            return writer

    return ContinuedCSVLogger(save_dir=str(run_dir), name="", version="", flush_logs_every_n_steps=flush_every)


def _callbacks(run_dir: Path, config: TrainConfig):
    from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint

    ckpt_dir = run_dir / "checkpoints"
    best = _best_checkpoint_class()(dirpath=ckpt_dir, filename="best", monitor="val_map50", mode="max", save_top_k=1,
                                    auto_insert_metric_name=False, enable_version_counter=False, save_last=False)
    every = int(config.ckpt_every_n_steps or min(config.val_every_n_steps, config.max_steps))
    val_every = min(int(config.val_every_n_steps), int(config.max_steps))

    class LastCheckpoint(Callback):
        """``last.ckpt`` every ``every`` steps and at the final step; after the step's validation when it has one.

        Saved before that validation, a checkpoint would let a run killed during it resume past it:
        its ``metrics.csv`` row and its chance at ``best.ckpt`` would be lost.
        """

        def due(self, trainer) -> bool:
            return trainer.global_step % every == 0 or trainer.global_step >= trainer.max_steps

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if self.due(trainer) and trainer.global_step % val_every != 0:
                trainer.save_checkpoint(ckpt_dir / "last.ckpt")

        def on_validation_end(self, trainer, pl_module):
            if self.due(trainer):
                trainer.save_checkpoint(ckpt_dir / "last.ckpt")

    return [best, LastCheckpoint(), LearningRateMonitor(logging_interval="step")]


def _progress_lines_class():
    from lightning.pytorch.callbacks import Callback

    class ProgressLines(Callback):
        """Plain progress lines (step, loss, rate, ETA; validation mAP) for logs that are not a terminal.

        A line every ``every_steps`` steps or ``every_seconds`` seconds, whichever comes first, and one
        after each validation; rank 0 only. Lightning's bar serves terminals.
        """

        def __init__(self, every_steps: int, every_seconds: float = 30.0, stream=None):
            self.every_steps, self.every_seconds = max(1, int(every_steps)), float(every_seconds)
            self.stream = stream
            self._t0 = self._last = None
            self._start_step = 0

        def _print(self, text: str) -> None:
            print(text, file=self.stream or sys.stderr, flush=True)

        def on_train_start(self, trainer, pl_module):
            self._t0 = self._last = time.perf_counter()
            self._start_step = int(trainer.global_step)
            if trainer.is_global_zero:
                self._print(f"train: step {trainer.global_step}/{trainer.max_steps}, "
                            f"{pl_module.model.model_name}, batch {trainer.train_dataloader.batch_size}")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step, now = int(trainer.global_step), time.perf_counter()
            due = step % self.every_steps == 0 or now - self._last >= self.every_seconds or step >= trainer.max_steps
            if not (due and trainer.is_global_zero):
                return
            self._last = now
            rate = (step - self._start_step) / max(now - self._t0, 1e-9)
            eta = (trainer.max_steps - step) / rate if rate > 0 else float("nan")
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            loss_text = f"loss {float(loss):.3f}  " if loss is not None else ""
            self._print(f"train: step {step}/{trainer.max_steps} ({100 * step / trainer.max_steps:.0f}%)  {loss_text}"
                        f"{rate:.2f} steps/s  elapsed {_clock(now - self._t0)}  ETA {_clock(eta)}")

        def on_validation_end(self, trainer, pl_module):
            if trainer.is_global_zero and not trainer.sanity_checking:
                metrics = trainer.callback_metrics
                values = "  ".join(f"{k[4:]} {float(metrics[k]):.3f}" for k in ("val_map50", "val_map75", "val_best_f1")
                                   if k in metrics)
                self._print(f"validate: step {trainer.global_step}  {values}")

    return ProgressLines


def _clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) of a duration in seconds; ``?`` when unknown."""
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def train(config: TrainConfig, run_dir: str | os.PathLike, *, resume: bool = False, callbacks: list | None = None) -> dict:
    """Train a detector; returns a summary dict (also written to ``RUN_DIR/done.json``).

    Parameters
    ----------
    config : TrainConfig
    run_dir : path
        Output folder (see the module docstring).
    resume : bool
        Continue from ``RUN_DIR/checkpoints/last.ckpt`` (exactly; see the module docstring). The
        run's ``split.csv`` is reused. Without ``resume`` an existing ``last.ckpt`` is an error.
    callbacks : list of lightning Callbacks, optional
        Added to the run's own (checkpoints, learning-rate monitor).

    Returns
    -------
    dict
        ``best_checkpoint``, ``last_checkpoint``, ``best_val_map50``, ``global_step``, ``seconds``,
        ``steps_per_second``, ``n_train_maps``, ``n_val_maps`` (as in ``done.json``) and ``global_rank``
        (of this process; under DDP every process returns, and rank 0 is the one to report).
    """
    import lightning as L

    run_dir = Path(run_dir)
    last_ckpt = run_dir / "checkpoints" / "last.ckpt"
    if last_ckpt.exists() and not resume:
        raise FileExistsError(f"{run_dir} already holds a run ({last_ckpt}); pass resume to continue it "
                              "or choose another output folder")
    if resume and (run_dir / "split.csv").exists() and not config.split_file:
        config = dataclasses.replace(config, split_file=str(run_dir / "split.csv"))
    if config.threads:
        torch.set_num_threads(int(config.threads))
    L.seed_everything(int(config.seed), workers=True, verbose=False)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_LIGHTNING_TIPS)  # once: same object

    index_df, storms_df = load_tables(config)
    split_df = split_for(config, index_df)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (resume and (run_dir / "split.csv").exists()):
        from marsdust.data import save_split

        save_split(split_df, run_dir / "split.csv")
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump({**config.to_dict(), "resolved_optim": config.optim()},
                                                               sort_keys=False))
    datamodule = _data_module_class()(config, index_df, storms_df, split_df)
    module = build_module(config)
    val_every = min(int(config.val_every_n_steps), int(config.max_steps))
    start_step = 0
    if resume and last_ckpt.exists():
        start_step = int(torch.load(last_ckpt, map_location="cpu", weights_only=False).get("global_step", 0))
    # every step flushed: a resumed run finds every row up to its checkpoint
    logger = _continued_csv_logger(run_dir, 1, start_step if resume else None)
    all_callbacks = _callbacks(run_dir, config) + list(callbacks or [])
    progress_bar = bool(config.progress) and sys.stderr.isatty()
    if config.progress and not progress_bar:  # a log file or CI: plain lines instead of a redrawn bar
        all_callbacks.append(_progress_lines_class()(every_steps=max(10, int(config.max_steps) // 20)))
    trainer = L.Trainer(
        accelerator=config.accelerator, devices=config.devices, num_nodes=int(config.num_nodes),
        strategy=config.trainer_strategy, precision=config.precision, max_steps=int(config.max_steps),
        max_epochs=-1, val_check_interval=val_every, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        logger=logger, callbacks=all_callbacks, enable_progress_bar=progress_bar,
        enable_model_summary=False, log_every_n_steps=1, use_distributed_sampler=False, deterministic=False,
        default_root_dir=str(run_dir),
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # Lightning's own pytree helper uses a torch API that torch deprecates; nothing for our users to do
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
        # EpochSampler resumes mid-epoch exactly (it skips the batches already consumed)
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")
        # validation mAP is computed from the predictions of all ranks, gathered: every rank logs the same value
        warnings.filterwarnings("ignore", message=r".*self\.log\('val_.*sync_dist=True.*")
        trainer.fit(module, datamodule=datamodule, ckpt_path="last" if resume and last_ckpt.exists() else None)
    seconds = time.perf_counter() - t0
    best_cb = trainer.checkpoint_callback
    best_score = None if best_cb is None or best_cb.best_model_score is None else float(best_cb.best_model_score)
    summary = {
        "best_checkpoint": str(run_dir / "checkpoints" / "best.ckpt"),
        "last_checkpoint": str(last_ckpt),
        "best_val_map50": best_score,
        "global_step": int(trainer.global_step),
        "seconds": seconds,
        "steps_per_second": (trainer.global_step - start_step) / seconds if seconds > 0 else None,
        "n_train_maps": len(datamodule.train_set),
        "n_val_maps": len(datamodule.val_set),
    }
    if trainer.is_global_zero and trainer.global_step >= config.max_steps:
        write_text_atomic(run_dir / "done.json", json.dumps(summary, indent=2) + "\n")
    return {**summary, "global_rank": int(trainer.global_rank)}


def read_metrics_csv(run_dir: str | os.PathLike) -> pd.DataFrame:
    """``RUN_DIR/metrics.csv`` as a DataFrame."""
    return pd.read_csv(Path(run_dir) / "metrics.csv")


# --------------------------------------------------------------------------------------------------
# evaluation of a trained checkpoint (marsdust evaluate)
# --------------------------------------------------------------------------------------------------
def _run_config_near(checkpoint: Path) -> dict:
    """The ``config.yaml`` of the run folder holding ``RUN_DIR/checkpoints/<checkpoint>`` ({} if none)."""
    path = checkpoint.resolve().parent.parent / "config.yaml"
    return load_config_yaml(path) if path.is_file() else {}


def evaluation_split(checkpoint: Path, index_df: pd.DataFrame, split_file: str | None, run_values: dict,
                     strategy: str | None) -> tuple[pd.DataFrame, str]:
    """Split manifest for an evaluation and where it came from.

    Order: ``split_file``; the run folder's ``split.csv`` next to the checkpoint; recomputed from
    the run's ``config.yaml`` (or defaults) with ``strategy`` if given.
    """
    from marsdust.data import load_split

    if split_file:
        return load_split(split_file), str(split_file)
    near = checkpoint.resolve().parent.parent / "split.csv"
    if near.is_file() and strategy in (None, run_values.get("strategy")):
        return load_split(near), str(near)
    values = {k: v for k, v in run_values.items() if k in {f.name for f in dataclasses.fields(TrainConfig)}}
    values.pop("split_file", None)
    if strategy:
        values["strategy"] = strategy
    config = TrainConfig.from_dict(values, source="run config")
    return split_for(config, index_df), f"recomputed ({config.strategy}, seed {config.seed})"


def _prediction_entry(result, grid) -> dict:
    """Boxes (working-grid px), scores, masks, areas (km²) and paper boxes of a :class:`marsdust.detect.MapResult`.

    ``paper_boxes`` are the paper's 12° boxes centred on each detection's outline centroid
    (:func:`marsdust.labels.paper_boxes_at`), the way the catalogue's fixed boxes are drawn.
    """
    from marsdust.labels import paper_boxes_at

    factor = result.native_grid.width / grid.width
    boxes = np.array([[r["x0"], r["y0"], r["x1"], r["y1"]] for r in result.records], dtype=float).reshape(-1, 4) / factor
    masks = (np.stack(result.masks).astype(np.uint8) if result.masks
             else np.zeros((0, grid.height, grid.width), dtype=np.uint8))
    area_km2 = np.array([r["area_km2"] for r in result.records], dtype=float)
    lon_deg = np.array([r["lon"] for r in result.records], dtype=float)
    lat_deg = np.array([r["lat"] for r in result.records], dtype=float)
    return {"boxes": boxes, "scores": result.scores, "masks": masks, "area_km2": area_km2,
            "paper_boxes": paper_boxes_at(lon_deg, lat_deg, grid)}


def _choose_figure_maps(ground_truth: dict, map_ls: dict, n: int) -> list[str]:
    """Up to ``n`` maps for GT-vs-prediction figures: the map with most storms in each season first."""
    from marsdust.evaluate import season_of

    by_season: dict[str, list[tuple[int, str]]] = {}
    for map_id, gt in ground_truth.items():
        by_season.setdefault(season_of(map_ls.get(map_id, float("nan"))) or "?", []).append((-len(gt["boxes"]), map_id))
    ranked = [sorted(v) for _, v in sorted(by_season.items())]
    chosen: list[str] = []
    while len(chosen) < n and any(ranked):
        for entries in ranked:
            if entries and len(chosen) < n:
                chosen.append(entries.pop(0)[1])
    return chosen


def evaluate_checkpoint(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *, data: str | None = None,
                        archive: str | None = None, catalog: str | None = None, master: str | None = None,
                        strict: bool = False, split: str = "test",
                        split_file: str | None = None, strategy: str | None = None, label_mode: str | None = None,
                        score_threshold: float = 0.05, n_figures: int = 4, n_timed: int = 10,
                        device: str = "cpu", progress: bool = True,
                        transform_image: Callable[[MapImage], MapImage] | None = None) -> dict:
    """Run a trained detector on a split's maps and score it (``EVAL_DIR/metrics.json``, ``per_map.csv``, figures).

    Parameters
    ----------
    checkpoint : path
        ``best.ckpt`` / ``last.ckpt`` of a run (or any marsdust checkpoint).
    out_dir : path
        ``EVAL_DIR``: gets ``metrics.json``, ``per_map.csv``, ``deviations.csv``, ``figures/*.png`` and
        the error analysis of :func:`marsdust.analysis.write_error_analysis` (``error_analysis.json``,
        ``error_analysis.md``, ``errors_missed.csv``, ``errors_false_alarms.csv``, two galleries).
    data, archive, catalog, master : str, optional
        The data (as for training; default: the run's ``config.yaml``).
    strict : bool
        Stop on MDAD cube/master disagreements instead of one warning (:attr:`TrainConfig.strict`).
    split : {"test", "val", "train"}
        Which maps to score.
    split_file : str, optional
        Split manifest (default: the run's ``split.csv``, else recomputed).
    strategy : {"temporal", "random"}, optional
        Recompute the split with this strategy.
    label_mode : str, optional
        Ground-truth shape (default: the one the checkpoint was trained on, else the run folder's
        ``config.yaml``, else ``fixed``).
    score_threshold : float
        Detections below this score are not scored (the model's own ``box_score_thresh`` still
        applies); COCO mAP uses the rest, ranked by score.
    n_figures : int
        Maps drawn ground truth next to prediction.
    n_timed : int
        Maps timed (after 2 warm-up maps) for the median inference time.
    device : str
    transform_image : callable, optional
        Applied to every map as read (native grid, float RGB in [0, 1]) before detection, e.g. an
        appearance shift of :mod:`marsdust.shift`; the scored maps, timing and figures all see its output.

    Returns
    -------
    dict
        The metrics written to ``metrics.json`` (``map25, map50, map75`` box AP fractions, ``segm``,
        breakdowns, ``pr_curves``, ``center_deviation``, ``time_ms_per_map``, ``error_analysis``
        (recall and error counts at score 0.5, :func:`marsdust.analysis.compact_summary`), ...).
    """
    from tqdm.auto import tqdm

    from marsdust import plots
    from marsdust.analysis import write_error_analysis
    from marsdust.data import select_split
    from marsdust.detect import detect_map
    from marsdust.evaluate import (area_agreement, box_map_summary, center_deviations, evaluate_detections,
                                   time_inference, write_metrics_json)
    from marsdust.labels import map_targets
    from marsdust.mdgm import read_map
    from marsdust.models import load_model

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    model = load_model(checkpoint, map_location=device)
    run_values = _run_config_near(checkpoint)
    config = TrainConfig.from_dict({"data": data or run_values.get("data"),
                                    "archive": archive or (None if data else run_values.get("archive")),
                                    "catalog": catalog or (None if data else run_values.get("catalog")),
                                    "master": master or (None if data or catalog else run_values.get("master")),
                                    "strict": strict},
                                   source="evaluation data")
    label_mode = label_mode or model.checkpoint_extra.get("label_mode") or run_values.get("label_mode", "fixed")
    index_df, storms_df = load_tables(config)
    split_df, split_source = evaluation_split(checkpoint, index_df, split_file, run_values, strategy)
    rows = select_split(index_df, split_df, split)
    if len(rows) == 0:
        raise ValueError(f"the {split} split ({split_source}) holds no maps")
    storms_by_map = dict(tuple(storms_df.groupby("map_id", sort=False)))
    empty = storms_df.iloc[0:0]
    ground_truth, predictions, grids, map_ls, per_map, images = {}, {}, {}, {}, [], {}
    valid_masks, paper_truth = {}, {}
    for row in tqdm(rows.itertuples(), total=len(rows), desc=f"evaluate {split}", unit="map", disable=not progress):
        image = read_map(row.path) if transform_image is None else transform_image(read_map(row.path))
        t0 = time.perf_counter()
        result = detect_map(model, image, map_id=row.map_id, mars_year=int(row.mars_year), ls=float(row.ls),
                            score_threshold=score_threshold, device=device)
        seconds = time.perf_counter() - t0
        grid = result.grid
        target = map_targets(storms_by_map.get(row.map_id, empty), grid, label_mode)
        ground_truth[row.map_id] = {k: target[k] for k in ("boxes", "masks", "confidence", "area_km2")}
        paper_truth[row.map_id] = {"boxes": map_targets(storms_by_map.get(row.map_id, empty), grid, "fixed",
                                                        with_masks=False)["boxes"]}
        predictions[row.map_id] = _prediction_entry(result, grid)
        grids[row.map_id], map_ls[row.map_id] = grid, float(row.ls)
        images[row.map_id] = result.image.rgb if result.image is not None else None
        valid_masks[row.map_id] = result.valid
        per_map.append({"map_id": row.map_id, "mars_year": int(row.mars_year), "ls": float(row.ls),
                        "n_catalog": int(len(target["boxes"])), "n_detections": int(len(result.records)),
                        "n_detections_05": int((result.scores >= 0.5).sum()),
                        "valid_fraction": float(result.valid_fraction), "seconds": seconds})
    timed_paths = list(rows["path"].iloc[: n_timed + 2])
    timing = None
    if len(timed_paths) > 2:
        timed_images = [read_map(p) if transform_image is None else transform_image(read_map(p)) for p in timed_paths]
        timing = time_inference(lambda img: detect_map(model, img, score_threshold=0.5, device=device), timed_images)
    metrics = evaluate_detections(ground_truth, predictions, grids, map_ls=map_ls, segm=bool(model.has_masks),
                                  time_ms_per_map=None if timing is None else timing["median_ms"])
    paper_predictions = {k: {"boxes": p["paper_boxes"], "scores": p["scores"]} for k, p in predictions.items()}
    metrics["paper_boxes"] = box_map_summary(paper_truth, paper_predictions, grids)
    metrics["area_agreement"] = area_agreement(ground_truth, predictions, grids)
    deviations = center_deviations(ground_truth, predictions, grids)
    matched = deviations.groupby("map_id").size() if len(deviations) else pd.Series(dtype=int)
    per_map_df = pd.DataFrame(per_map)
    per_map_df["n_matched_iou50"] = per_map_df["map_id"].map(matched).fillna(0).astype(int)
    metrics.update({"model_name": model.model_name, "checkpoint": str(checkpoint), "split": split,
                    "split_source": split_source, "label_mode": label_mode, "n_maps": len(rows),
                    "score_threshold": score_threshold, "timing": timing,
                    "working_res_deg": float(model.config.map_res_deg)})
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics["error_analysis"] = write_error_analysis(  # EVAL_DIR/error_analysis.{json,md}, errors_*.csv, figures
        ground_truth, predictions, grids, out_dir, map_ls=map_ls, images=images, valid_masks=valid_masks,
        title=f"{model.model_name} on {split} maps")
    write_metrics_json(metrics, out_dir / "metrics.json")
    write_text_atomic(out_dir / "per_map.csv", per_map_df.to_csv(index=False))
    write_text_atomic(out_dir / "deviations.csv", deviations.to_csv(index=False))
    figures = out_dir / "figures"
    name = f"{model.model_name} on {split} maps"
    plots.plot_pr_curves(metrics["pr_curves"], figures / "pr_curves.png", title=f"precision–recall: {name}")
    plots.plot_center_deviations(deviations, figures / "center_deviation_hist.png", title=f"centre deviations: {name}")
    for map_id in _choose_figure_maps(ground_truth, map_ls, n_figures):
        rgb = images.get(map_id)
        if rgb is None:
            continue
        grid, gt, pred = grids[map_id], ground_truth[map_id], predictions[map_id]
        keep = pred["scores"] >= 0.5
        plots.plot_truth_vs_prediction(
            rgb, grid.res_deg, grid.lat_north_deg, gt["boxes"], pred["boxes"][keep], pred["scores"][keep],
            figures / f"truth_vs_prediction_{map_id}.png",
            title=f"{map_id} Ls {map_ls[map_id]:.1f}°", gt_labels=[f"CL{int(c)}" for c in gt["confidence"]],
            pred_masks=pred["masks"][keep] if model.has_masks else None)
    return metrics


# --------------------------------------------------------------------------------------------------
# the paper's Table 1 (marsdust compare)
# --------------------------------------------------------------------------------------------------
def compare(out_dir: str | os.PathLike, base: TrainConfig, models=("dustrcnn", "maskrcnn", "fasterrcnn", "sppnet"),
            strategies=("temporal", "random"), *, our_label: str = "ours", progress: bool = True) -> dict:
    """Train and evaluate each detector under each split strategy with the same budget; write Table 1.

    Each run lives in ``OUT/runs/<model>_<strategy>/`` and its evaluation (test split) in
    ``OUT/eval/<model>_<strategy>/``. A run with ``done.json`` is not trained again, a run with
    a ``last.ckpt`` is resumed, an evaluation with ``metrics.json`` is not redone — so an
    interrupted comparison continues where it stopped.

    Returns
    -------
    dict
        ``table`` (DataFrame of :func:`marsdust.evaluate.comparison_table`), ``markdown`` and
        ``csv`` paths, ``results`` (model -> strategy -> metrics.json path).
    """
    from marsdust.evaluate import comparison_table, write_comparison_table

    out_dir = Path(out_dir)
    results: dict[str, dict[str, str]] = {}
    for model in models:
        for strategy in strategies:
            name = f"{model}_{strategy}"
            run_dir, eval_dir = out_dir / "runs" / name, out_dir / "eval" / name
            metrics_path = eval_dir / "metrics.json"
            if not metrics_path.is_file():
                config = dataclasses.replace(base, model=model, strategy=strategy, progress=progress)
                if not (run_dir / "done.json").is_file():
                    log.info("compare: training %s", name)
                    train(config, run_dir, resume=(run_dir / "checkpoints" / "last.ckpt").exists())
                best = run_dir / "checkpoints" / "best.ckpt"
                checkpoint = best if best.is_file() else run_dir / "checkpoints" / "last.ckpt"
                evaluate_checkpoint(checkpoint, eval_dir, data=base.data, archive=base.archive, catalog=base.catalog,
                                    master=base.master, strict=base.strict, progress=progress)
            results.setdefault(model, {})[strategy] = str(metrics_path)
    table = comparison_table(results, our_label=our_label)
    md_path, csv_path = write_comparison_table(table, out_dir / "table1")
    return {"table": table, "markdown": md_path, "csv": csv_path, "results": results}
