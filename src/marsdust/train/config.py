"""The run configuration of ``marsdust train``: :class:`TrainConfig`, its YAML file, the optimizer schedules,
and what a configuration resolves to (data paths, tables, split).

Schedules (``TrainConfig.schedule``)
------------------------------------
``paper``
    The paper's section 5.2: Adam, lr 1e-4, weight decay 1e-3, lr × 0.1 every 1000 iterations.
``warmup_cosine``
    For random-initialised backbones (no ImageNet weights here): AdamW, lr 2e-3, weight decay 1e-4,
    linear warm-up over ``warmup_steps`` (default 5 % of the run, at least 10 steps), then cosine
    decay to 5 % of the peak at ``max_steps``; gradients clipped at norm 10. The default, because the
    paper's lr 1e-4 barely moves a randomly initialised network in a run of a few hundred steps
    (the paper fine-tuned pretrained weights for many thousand iterations; docs/benchmark-notes.md,
    "Measurements behind defaults"); the paper's schedule is one flag away (``--schedule paper``).
    Its peak lr is the one the training recipe was measured with (the ``small_cpu`` detector at 0.8°,
    batches of 4 maps; docs/benchmark-notes.md, "Training recipe").

Defaults
--------
A run that names no model preset, resolution or learning rate trains that recipe
(:data:`DEFAULT_MODEL_PRESET`, :data:`DEFAULT_MAP_RES_DEG`, the ``warmup_cosine`` schedule, batches of
4): the settings the README's recipe tables measure, minutes on a CPU. On a GPU the larger
``compact`` detector is ``--model-preset compact --map-res-deg 0.4`` away. The run's precision is
``auto`` (:mod:`marsdust.train.hardware`): bf16 autocast on a CPU with ``avx512_bf16`` under torch's AVX-512
kernels (1.6 times the steps a second there), fp32 elsewhere; its weights' memory format is ``auto`` too:
channels-last on a CPU with AMX tiles (1.2 times the steps a second again), contiguous elsewhere.

Every field can also be set individually (``lr``, ``weight_decay``, ``warmup_steps``, ...): the
preset fills only what is left unset (None).

Command-line options
--------------------
Each :class:`TrainConfig` field describes its own option of ``marsdust train`` and ``marsdust
compare`` in its metadata (``dataclasses.fields(TrainConfig)[i].metadata``), from which
:mod:`marsdust.cli.config_options` generates them:

``help``
    The option's help text.
``group``
    Its help panel, one of :data:`SETTING_GROUPS` (``--help`` lists them in that order).
``flags``
    Its option names (``("--val-every",)``); empty for a field set in the YAML file only.
``choices``, ``metavar``, ``min``, ``max`` (optional)
    The values shown in ``--help`` and the numeric bounds the command line enforces.
``flag_value`` (bool fields)
    The option is a switch that sets the field to this value (``--no-augment``: ``augment=False``).
``parse`` (optional)
    Turns the option's text into the field's value (:func:`parse_devices`).
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
from marsdust.labels import LABEL_MODES
from marsdust.reference import DEFAULT_REFERENCE_SOLS, REFERENCE_KINDS, ReferenceConfig
from marsdust.train.hardware import MEMORY_FORMATS

SCHEDULES: dict[str, dict[str, Any]] = {
    "paper": {"optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-3, "warmup_steps": 0, "decay": "step",
              "decay_every_steps": 1000, "decay_factor": 0.1, "min_lr_ratio": 0.0, "clip_grad_norm": 0.0},
    "warmup_cosine": {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4, "warmup_steps": -1, "decay": "cosine",
                      "decay_every_steps": 0, "decay_factor": 1.0, "min_lr_ratio": 0.05, "clip_grad_norm": 10.0},
}
"""Optimizer presets. ``warmup_steps = -1`` means 5 % of ``max_steps`` (at least 10)."""

DEFAULT_SCHEDULE = "warmup_cosine"

DEFAULT_MODEL_PRESET = "small_cpu"
"""Model preset of a run that names none: the detector the README's recipe tables measure (with
:data:`DEFAULT_MAP_RES_DEG` and the ``warmup_cosine`` schedule's lr 2e-3, batches of 4 maps), trained in
minutes on a CPU. A run configuration that says ``model_preset: null`` (written by earlier versions,
whose default it was) still means ``compact``, the detector's own default configuration."""

DEFAULT_MAP_RES_DEG = 0.8
"""Working resolution of a run that names none, degrees per pixel (150 x 450 px maps; the smallest
storms still ~7 px across): the recipe's."""

OPTIM_FIELDS = ("optimizer", "lr", "weight_decay", "warmup_steps", "decay", "decay_every_steps", "decay_factor",
                "min_lr_ratio", "clip_grad_norm")

OPTIMIZERS = ("adam", "adamw", "sgd")
"""Values of ``TrainConfig.optimizer`` (and of a schedule's ``optimizer``)."""

DECAYS = ("step", "cosine", "none")
"""Values of ``TrainConfig.decay``: the learning-rate decay after warm-up."""

SPLIT_STRATEGIES = ("temporal", "random")
"""Values of ``TrainConfig.strategy``: the paper's split strategies 1 and 2."""

SETTING_GROUPS = ("Data", "Model", "Split", "Training", "Reference", "Hardware", "Advanced")
"""Help panels of the generated command-line options, in the order ``--help`` shows them."""


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


def parse_devices(text: str) -> int | str:
    """``--devices`` text as Lightning takes it: a whole number (``"2"``, ``"-1"``) as an int, anything
    else (``"auto"``, ``"0,1"``) as the text, stripped."""
    text = text.strip()
    if text.isdigit() or (text.startswith("-") and text[1:].isdigit()):
        return int(text)
    return text


def _option(help: str, group: str, *flags: str, **details: Any) -> dict[str, Any]:
    """The metadata of a :class:`TrainConfig` field: its command-line description (see the module docs)."""
    return {"help": help, "group": group, "flags": flags, **details}


_OVERRIDES_SCHEDULE = " (overrides the schedule's)"


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
        default :data:`DEFAULT_MODEL_PRESET` (``small_cpu``); None = ``compact``, the detector's own
        default configuration (what run configurations of earlier versions, which default to it, say).
    model_config : dict
        :class:`marsdust.models.DetectorConfig` fields to override (on top of ``model_preset``).
    backbone : str or None
        Shortcut for ``model_config["backbone"]``.
    init_weights : str or None
        Checkpoint whose weights the detector starts from (the same network and inputs; a run resumed
        from its own ``last.ckpt`` ignores it): fine-tuning, and the student of
        :func:`marsdust.selftrain.self_train`. The optimizer and its schedule start afresh.
    map_res_deg : float
        Working resolution, degrees per pixel (also the detector's ``map_res_deg``; default
        :data:`DEFAULT_MAP_RES_DEG`, 0.8).
    label_mode : {"fixed", "area", "outline"}
        Ground-truth shape (:mod:`marsdust.labels`). Default ``outline``: storms are learnt as the
        catalogue outlines them (the paper's 12° boxes are then drawn at each detection's outline
        centroid when scoring, see :func:`marsdust.evaluate.evaluate_checkpoint`); catalogue rows without an outline
        (MDAD v1.0 tables: the MOC years) get area-sized boxes and no mask loss
        (:func:`marsdust.labels.mask_supervised`); ``RUN_DIR/label_sources.csv`` counts each kind per Mars year.
    strategy : {"temporal", "random"}
        Split strategy (the paper's 1 and 2).
    train_period, test_period, random_period : str or None
        Period overrides like ``"MY25 0 - MY27 180"`` (Mars year, Ls in degrees; end excluded,
        ``"... ]"`` or ``"MY28 121]"`` keeps the end). None: from the archive's extent
        (:func:`marsdust.data.default_split_config`: the paper's for the MOC years; an archive
        that runs into the MARCI years is tested on its last Mars year).
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
        Maps per optimizer step per device. Default 4: BatchNorm (model preset ``small_cpu``)
        takes its statistics over the batch, and over two maps they are too noisy to learn from
        (docs/benchmark-notes.md, "Training recipe").
    max_steps : int
        Optimizer steps in all.
    val_every_n_steps : int
        Validation (mAP50 on the val split) every this many steps (clipped to ``max_steps``).
    ckpt_every_n_steps : int or None
        ``last.ckpt`` every this many steps (default: ``val_every_n_steps``) and at the end.
    augment : bool
        Planet-respecting augmentation of training maps (:mod:`marsdust.data`).
    augment_preset : str
        Which augmentation (:data:`marsdust.data.AUGMENT_PRESETS`: ``basic``, ``strong``, ``camera``).
    reference : {"prior-median", "none"}
        Reference bands (:mod:`marsdust.reference`): ``prior-median`` (the default) gives the
        detector each map's clear-sky background from the archive's previous ``reference_sols``
        sols as three more bands; ``none``, the map alone. Stored in the detector's config, so
        ``detect`` and ``evaluate`` rebuild it. The default because the detector then compares a
        map with its own history instead of learning one planet's surface, so it carries over to a
        planet (or an archive) it was not trained on (docs/benchmark-notes.md, "Reference channels").
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
    accelerator, devices, num_nodes, trainer_strategy
        Passed to ``lightning.Trainer`` (``trainer_strategy`` is its ``strategy``: ``auto``,
        ``ddp``, ``ddp_spawn``, ...).
    precision : str
        ``auto`` (default: bf16 autocast on a CPU with ``avx512_bf16``, else fp32), ``32`` or a
        Lightning precision (``32-true``, ``bf16-mixed``, ...); :mod:`marsdust.train.hardware`.
    memory_format : str
        ``auto`` (default: the weights channels-last on a CPU with AMX tiles, else contiguous),
        ``contiguous`` or ``channels_last``; :mod:`marsdust.train.hardware`.
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

    data: str | None = field(default=None, metadata=_option(
        "Folder holding archive/ (MDGM archive) and mdad/ (MDAD catalog), e.g. the output of marsdust synth.",
        "Data", "--data"))
    archive: str | None = field(default=None, metadata=_option(
        "MDGM archive (instead of DATA/archive).", "Data", "--archive"))
    catalog: str | None = field(default=None, metadata=_option(
        "MDAD table/netCDF/folder (instead of DATA/mdad).", "Data", "--catalog"))
    master: str | None = field(default=None, metadata=_option(
        "MDAD v1.1 master CSV for every cube of the catalog (default: found by its columns under it).",
        "Data", "--master"))
    strict: bool = field(default=False, metadata=_option(
        "Stop on MDAD cube/master disagreements (rows without pixels, swathLs more than 0.5° from the day's "
        "median Ls, cube days with storms but no row) instead of one warning.", "Data", "--strict", flag_value=True))
    model: str = field(default="dustrcnn", metadata=_option(
        "Detector: dustrcnn, maskrcnn, fasterrcnn or sppnet (marsdust models lists them).", "Model", "--model"))
    model_preset: str | None = field(default=DEFAULT_MODEL_PRESET, metadata=_option(
        "Named detector configuration: small_cpu (the default: the detector the README's recipe tables "
        "measure, minutes on a CPU at 0.8 degrees), compact (the larger detector, for a GPU) or stock_like "
        "(marsdust models lists them); model_config fields of --config override it.", "Model", "--model-preset",
        metavar="NAME"))
    model_config: dict = field(default_factory=dict, metadata=_option(
        "DetectorConfig fields to override, on top of the model preset (a mapping: --config file only).", "Model"))
    backbone: str | None = field(default=None, metadata=_option(
        "resnet18, resnet34 or resnet50 (default: the model preset's).", "Model", "--backbone"))
    init_weights: str | None = field(default=None, metadata=_option(
        "Start from the weights of this checkpoint (the same detector and inputs: fine-tuning); the optimizer "
        "and schedule start afresh.", "Model", "--init-weights", metavar="CKPT"))
    map_res_deg: float = field(default=DEFAULT_MAP_RES_DEG, metadata=_option(
        "Working resolution, degrees per pixel (default 0.8, the recipe's; compact was made for 0.4).", "Model",
        "--map-res-deg"))
    label_mode: str = field(default="outline", metadata=_option(
        "Ground truth: outline (catalogue outlines), fixed (the paper's 12° boxes) or area (area-sized boxes).",
        "Data", "--label-mode", choices=LABEL_MODES))
    strategy: str = field(default="temporal", metadata=_option(
        "Split: temporal (the paper's strategy 1) or random (strategy 2).", "Split", "--strategy",
        choices=SPLIT_STRATEGIES))
    train_period: str | None = field(default=None, metadata=_option(
        "Temporal split training period, e.g. 'MY25 0 - MY27 180' (default: the paper's, or up to the archive's last "
        "Mars year for an archive that runs past MY28 Ls121).", "Split", "--train-period"))
    test_period: str | None = field(default=None, metadata=_option(
        "Temporal split test period, e.g. 'MY27 180 - MY28 121]' (']' keeps the end; default: the paper's, or the "
        "archive's last Mars year).", "Split", "--test-period"))
    random_period: str | None = field(default=None, metadata=_option(
        "Random split: the period whose maps are shuffled, e.g. 'MY25 0 - MY28 121]'.", "Split", "--random-period"))
    val_fraction: float | None = field(default=None, metadata=_option(
        "Temporal split: share of the training period used for validation (default: the paper's).", "Split",
        "--val-fraction"))
    split_file: str | None = field(default=None, metadata=_option(
        "Use this split.csv instead of computing one.", "Split", "--split-file"))
    seed: int = field(default=0, metadata=_option(
        "Seed of split, weights, order and augmentation.", "Training", "--seed"))
    schedule: str = field(default=DEFAULT_SCHEDULE, metadata=_option(
        "Optimizer preset: warmup_cosine (AdamW 2e-3, warm-up + cosine) or paper (Adam 1e-4, x0.1 every "
        "1000 steps).", "Training", "--schedule", choices=tuple(SCHEDULES)))
    optimizer: str | None = field(default=None, metadata=_option(
        "Optimizer" + _OVERRIDES_SCHEDULE + ".", "Advanced", "--optimizer", choices=OPTIMIZERS))
    lr: float | None = field(default=None, metadata=_option(
        "Peak learning rate" + _OVERRIDES_SCHEDULE + ".", "Training", "--lr"))
    weight_decay: float | None = field(default=None, metadata=_option(
        "Weight decay" + _OVERRIDES_SCHEDULE + ".", "Training", "--weight-decay"))
    warmup_steps: int | None = field(default=None, metadata=_option(
        "Linear warm-up steps; -1: 5 % of the run, at least 10" + _OVERRIDES_SCHEDULE + ".", "Training",
        "--warmup-steps"))
    decay: str | None = field(default=None, metadata=_option(
        "Learning-rate decay after the warm-up" + _OVERRIDES_SCHEDULE + ".", "Advanced", "--decay",
        choices=DECAYS))
    decay_every_steps: int | None = field(default=None, metadata=_option(
        "Step decay: multiply the learning rate by the decay factor every this many steps" + _OVERRIDES_SCHEDULE
        + ".", "Advanced", "--decay-every-steps"))
    decay_factor: float | None = field(default=None, metadata=_option(
        "Step decay factor" + _OVERRIDES_SCHEDULE + ".", "Advanced", "--decay-factor"))
    min_lr_ratio: float | None = field(default=None, metadata=_option(
        "Cosine decay: the last learning rate as a share of the peak" + _OVERRIDES_SCHEDULE + ".", "Advanced",
        "--min-lr-ratio"))
    clip_grad_norm: float | None = field(default=None, metadata=_option(
        "Clip gradients at this norm, 0: not at all" + _OVERRIDES_SCHEDULE + ".", "Advanced", "--clip-grad-norm"))
    batch_size: int = field(default=4, metadata=_option(
        "Maps per step per device.", "Training", "--batch-size", min=1))
    max_steps: int = field(default=300, metadata=_option(
        "Optimizer steps.", "Training", "--max-steps", min=1))
    val_every_n_steps: int = field(default=50, metadata=_option(
        "Validate (mAP50) every N steps.", "Training", "--val-every", min=1))
    ckpt_every_n_steps: int | None = field(default=None, metadata=_option(
        "Save checkpoints/last.ckpt every N steps (default: as often as validation) and at the end.", "Advanced",
        "--ckpt-every", min=1))
    augment: bool = field(default=True, metadata=_option(
        "Train without augmentation.", "Training", "--no-augment", flag_value=False))
    augment_preset: str = field(default="strong", metadata=_option(
        "Augmentation: strong (longitude roll and flip, brightness, contrast, colour balance, gamma, blur, noise, "
        "swath steps), camera (strong, wider, plus a random band response per map: for training on one camera "
        "and detecting on another) or basic (roll, flip, brightness, contrast).", "Training", "--augment", metavar="NAME"))
    reference: str = field(default="prior-median", metadata=_option(
        "Reference bands: prior-median (each map's clear-sky background, the median of the archive's previous "
        "--reference-sols sols, as three more input bands; the checkpoint records it, so detect and evaluate "
        "rebuild it) or none (the map alone).", "Reference", "--reference", choices=REFERENCE_KINDS))
    reference_sols: int = field(default=DEFAULT_REFERENCE_SOLS, metadata=_option(
        "Window of the prior-median background in sols.", "Reference", "--reference-sols", metavar="N", min=1))
    reference_dropout: float = field(default=0.2, metadata=_option(
        "Probability that a training map is shown without its background, so the detector also works on maps "
        "with no history: a lone map, the first sols of an archive (a prior-median detector trained with 0 finds "
        "almost nothing without history).", "Reference", "--reference-dropout", metavar="P", min=0.0, max=1.0))
    num_workers: int = field(default=2, metadata=_option(
        "DataLoader workers.", "Hardware", "--num-workers", min=0))
    threads: int | None = field(default=None, metadata=_option(
        "Torch CPU threads (default: torch's).", "Hardware", "--threads", min=1))
    accelerator: str = field(default="auto", metadata=_option(
        "Lightning accelerator: auto, cpu, gpu.", "Hardware", "--accelerator"))
    devices: Any = field(default="auto", metadata=_option(
        "Lightning devices: auto, N, or a list like 0,1.", "Hardware", "--devices", parse=parse_devices))
    num_nodes: int = field(default=1, metadata=_option(
        "Nodes (multi-node DDP).", "Hardware", "--num-nodes", min=1))
    trainer_strategy: str = field(default="auto", metadata=_option(
        "Lightning strategy: auto, ddp, ddp_spawn, ... (--strategy is the split).", "Hardware",
        "--trainer-strategy", "--ddp-strategy"))
    precision: str = field(default="auto", metadata=_option(
        "auto (bf16 autocast on a CPU with avx512_bf16, such as AMD Zen 4 or Intel Sapphire Rapids, where it trained "
        "1.6x as many steps a second in our measurement; fp32 elsewhere), 32 (fp32 everywhere) or a Lightning "
        "precision such as 32-true, bf16-mixed. The run's first line says which and why.", "Hardware", "--precision"))
    memory_format: str = field(default="auto", metadata=_option(
        "Layout of the weights: auto (channels-last on a CPU with AMX tiles, amx_bf16, such as Intel Sapphire Rapids, "
        "where it trained 1.18x as many steps a second in fp32 and 1.19x in bf16 in our measurement; contiguous "
        "elsewhere, where it was slower), contiguous or channels_last. The run's first line says which and why.",
        "Hardware", "--memory-format", choices=MEMORY_FORMATS))
    progress: bool = field(default=True, metadata=_option(
        "No progress bar, no Lightning INFO lines.", "Training", "--quiet", flag_value=False))
    classes: list = field(default_factory=lambda: ["dust"], metadata=_option(
        "Classes to learn: dust or dust,cloud (water-ice clouds from each map's cloud mask, "
        "cloudmask/<SUBPHASE>/<map_id>.nc beside the archive; maps without one train dust only).", "Data",
        "--classes"))
    cloud_masks: str | None = field(default=None, metadata=_option(
        "Cloud-mask folder (<SUBPHASE>/<map_id>.nc; default: cloudmask/ beside the archive).", "Data",
        "--cloud-masks"))
    cloud_max_width_deg: float | None = field(default=MAX_CLOUD_WIDTH_DEG, metadata=_option(
        "Cloud regions wider than this (degrees of longitude: belts, polar hoods) are no cloud instance "
        "(360: no limit).", "Data", "--cloud-max-width-deg"))

    def __post_init__(self):
        from marsdust.cloudmask import parse_classes

        self.classes = list(parse_classes(self.classes))
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {self.schedule!r}")
        if self.strategy not in SPLIT_STRATEGIES:
            raise ValueError(f"strategy must be 'temporal' or 'random', got {self.strategy!r}")
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}, got {self.memory_format!r}")
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
        if values["optimizer"] not in OPTIMIZERS:
            raise ValueError(f"optimizer must be adam, adamw or sgd, got {values['optimizer']!r}")
        if values["decay"] not in DECAYS:
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

