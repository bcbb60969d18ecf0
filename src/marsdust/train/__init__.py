"""Training on PyTorch Lightning: any registered detector, either split strategy, exact resume, DDP.

Modules, in the order a run uses them: :mod:`~marsdust.train.config` (:class:`TrainConfig`, its
YAML file, the optimizer schedules, the run's data and split), :mod:`~marsdust.train.samplers`
(training order and augmentation seeds), :mod:`~marsdust.train.lightning` (the LightningModule,
the LightningDataModule, the callbacks and the ``metrics.csv`` logger) and
:mod:`~marsdust.train.run` (:func:`train`, one run top to bottom). Scoring a trained checkpoint
(``marsdust evaluate``) is :func:`marsdust.evaluate.evaluate_checkpoint`; the paper's Table 1
(``marsdust compare``) is :func:`marsdust.evaluate.compare.compare`.

Run folder (``RUN_DIR``)
------------------------
* ``config.yaml`` — the resolved :class:`TrainConfig` (re-run with ``--config RUN_DIR/config.yaml``);
* ``split.csv`` — the split manifest (:func:`marsdust.data.save_split`), read back by ``evaluate``;
* ``label_sources.csv`` — per Mars year, how many catalogue instances train as outlines, area boxes or
  fixed boxes, and whether their masks are mask-loss targets
  (:func:`marsdust.train.lightning.label_source_table`; also one line of the log);
* ``metrics.csv`` — Lightning's CSVLogger (``train_loss``, each loss term, ``lr``, ``val_map25/50/75``
  by ``step``) plus ``hparams.yaml``;
* ``checkpoints/best.ckpt`` (highest validation mAP50) and ``checkpoints/last.ckpt`` (the latest
  state, saved every ``ckpt_every_n_steps`` and at the last step) — Lightning checkpoints whose
  ``hyper_parameters`` hold ``model_name`` and ``model_config`` (every DetectorConfig field, resolved
  from ``model_preset`` and the overrides), so :func:`marsdust.models.load_model` rebuilds the detector
  from either file without the preset table; :func:`marsdust.models.read_training_state` reads
  either whole (global step, callback states, ...);
* ``done.json`` — written when a run reaches ``max_steps`` (``marsdust compare`` skips such runs).

Schedules: ``warmup_cosine`` (the default) or the paper's ``paper``, see :mod:`marsdust.train.config`.

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

Importing this package imports neither torch nor Lightning: the names of
:mod:`~marsdust.train.samplers`, :mod:`~marsdust.train.lightning` and :mod:`~marsdust.train.run` are
loaded on first use, so reading a :class:`TrainConfig` (as ``marsdust evaluate`` does, and ``marsdust
train --help``) stays quick.
"""

from __future__ import annotations

import importlib

from marsdust.train.config import (
    DEFAULT_SCHEDULE,
    OPTIM_FIELDS,
    SCHEDULES,
    TrainConfig,
    load_config_yaml,
    load_tables,
    lr_factor,
    parse_period,
    resolve_data_paths,
    split_for,
)

_LOADED_ON_FIRST_USE = {
    **dict.fromkeys(("EpochSampler", "SeededAugmentation", "ShardSampler"), "marsdust.train.samplers"),
    **dict.fromkeys(("SCORE_THRESHOLD_GRID", "BestCheckpoint", "ContinuedCSVLogger", "DetectorModule",
                     "DustDataModule", "LastCheckpoint", "ProgressLines", "best_f1_threshold", "best_score_on_disk",
                     "build_module", "checkpoint_callbacks", "validation_map"), "marsdust.train.lightning"),
    **dict.fromkeys(("train", "read_metrics_csv", "run_checkpoint"), "marsdust.train.run"),
}
"""Names of this package -> the module that defines them, imported when a name is first used."""

__all__ = [
    "DEFAULT_SCHEDULE",
    "OPTIM_FIELDS",
    "SCHEDULES",
    "TrainConfig",
    "load_config_yaml",
    "load_tables",
    "lr_factor",
    "parse_period",
    "resolve_data_paths",
    "split_for",
    *_LOADED_ON_FIRST_USE,
]


def __getattr__(name: str):
    """The names of :data:`_LOADED_ON_FIRST_USE`, imported on first use (PEP 562)."""
    if name not in _LOADED_ON_FIRST_USE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LOADED_ON_FIRST_USE[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LOADED_ON_FIRST_USE))
