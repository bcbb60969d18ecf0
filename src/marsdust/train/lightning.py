"""The Lightning parts of a training run: the detector as a LightningModule, the maps as a
LightningDataModule, and the run's callbacks and logger.

* :class:`DetectorModule` — a registered detector (``self.model``) with its optimizer schedule
  (:func:`marsdust.train.config.lr_factor`) and validation: box mAP25/50/75 of the validation maps
  (:func:`validation_map`) and the score threshold of best F1 (:func:`best_f1_threshold`), stored
  in the checkpoint that follows it. It also stores and restores the global RNG states (the RPN
  and RoI samplers draw from them), one of the four parts of exact resume.
* :class:`DustDataModule` — training maps in :class:`~marsdust.train.samplers.EpochSampler` order,
  augmented under :class:`~marsdust.train.samplers.SeededAugmentation`; validation maps sharded over
  the ranks.
* :func:`checkpoint_callbacks` — ``best.ckpt`` (:class:`BestCheckpoint`), ``last.ckpt``
  (:class:`LastCheckpoint`) and the learning-rate monitor; :class:`ContinuedCSVLogger` writes
  ``metrics.csv``; :class:`ProgressLines` prints progress where no terminal shows a bar.
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from marsdust.evaluate.errors import score_sweep
from marsdust.evaluate.matching import SCORE_THRESHOLDS
from marsdust.cloudmask import CloudMasks
from marsdust.data import SPLIT_NAMES, DustDataset, collate_fn, dataset_backgrounds, map_latitudes, select_split
from marsdust.evaluate.metrics import best_pixel_threshold, coco_map, pixel_counts_by_threshold, score_map
from marsdust.fileio import write_table_atomic
from marsdust.grid import MapGrid
from marsdust.labels import DUST_LABEL, label_sources, mask_supervised
from marsdust.models import CheckpointError, DetectorConfig, build_model, read_training_state
from marsdust.train.config import TrainConfig, cloud_mask_root, lr_factor
from marsdust.train.samplers import EpochSampler, SeededAugmentation, ShardSampler

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# the data
# --------------------------------------------------------------------------------------------------
def reference_backgrounds(config: TrainConfig, index_df: pd.DataFrame, split_df: pd.DataFrame):
    """The reference background of every training and validation map (None when the run has no reference).

    Built in one pass in time order, reading only those maps and the earlier maps in their windows
    (the history of a map is every earlier map of the archive, whatever its split; only images are used).
    """
    reference = config.reference_config
    if not reference.enabled:
        return None
    needed = set(select_split(index_df, split_df, "train")["map_id"]) | set(select_split(index_df, split_df, "val")["map_id"])
    t0 = time.perf_counter()
    backgrounds = dataset_backgrounds(index_df, config.map_res_deg, reference, map_ids=needed,
                                      progress=bool(config.progress) and sys.stderr.isatty())
    log.info("reference: %s backgrounds of %d maps in %.0f s (%s)", reference.kind, len(backgrounds),
             time.perf_counter() - t0, reference.describe())
    return backgrounds


class DustDataModule(L.LightningDataModule):
    """Training maps (augmented, resumable order) and validation maps (working resolution, native order)."""

    def __init__(self, config: TrainConfig, index_df: pd.DataFrame, storms_df: pd.DataFrame, split_df: pd.DataFrame):
        super().__init__()
        self.config = config
        train_index, val_index = select_split(index_df, split_df, "train"), select_split(index_df, split_df, "val")
        clouds = run_cloud_masks(config, train_index, val_index)
        backgrounds = reference_backgrounds(config, index_df, split_df)
        self.train_set = DustDataset(select_split(index_df, split_df, "train"), storms_df, config.map_res_deg,
                                     config.label_mode, augment=config.augment_preset if config.augment else False,
                                     backgrounds=backgrounds, cloud_masks=clouds,
                                     reference_dropout=config.reference_dropout)
        self.val_set = DustDataset(select_split(index_df, split_df, "val"), storms_df, config.map_res_deg,
                                   config.label_mode, augment=False, backgrounds=backgrounds, cloud_masks=clouds)
        if len(self.train_set) == 0:
            raise ValueError("the training split holds no maps")
        self.training_latitudes_deg = map_latitudes(train_index, config.map_res_deg)
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


def label_source_table(storms_df: pd.DataFrame, split_df: pd.DataFrame, label_mode: str) -> pd.DataFrame:
    """Where a run's targets come from, per Mars year: the rows of ``label_sources.csv``.

    One row per (``mars_year``, ``label_source``) (:func:`marsdust.labels.label_sources`: ``outline``,
    ``area_box``, ``fixed_box``) over the catalogue rows of the archive's maps (``split_df``):
    ``mask_target`` (whether these instances' masks are mask-loss targets,
    :func:`marsdust.labels.mask_supervised`), ``n_maps``, ``n_instances`` and the instances in each
    split (``train``, ``val``, ``test``, ``unused``). Counted from the catalogue: a storm that
    :func:`marsdust.labels.map_targets` drops (mostly beyond the map's latitude band) is counted.
    """
    storms = storms_df.reindex(columns=["map_id", "mars_year", "polygon_wkt"]).merge(split_df[["map_id", "split"]],
                                                                                     on="map_id")
    storms["label_source"] = label_sources(storms, label_mode)
    storms["mask_target"] = mask_supervised(storms["label_source"] == "outline", label_mode)
    columns = ["mars_year", "label_source", "mask_target"]
    table = storms.groupby(columns).agg(n_maps=("map_id", "nunique"), n_instances=("map_id", "size"))
    per_split = storms.groupby(columns + ["split"]).size().unstack("split").reindex(columns=list(SPLIT_NAMES))
    table = table.join(per_split.fillna(0).astype(int)).reset_index()
    return table.astype({"mars_year": int})


def write_label_sources(storms_df: pd.DataFrame, split_df: pd.DataFrame, label_mode: str,
                        run_dir: Path) -> pd.DataFrame:
    """Write ``RUN_DIR/label_sources.csv`` (:func:`label_source_table`) and log one line of it."""
    table = label_source_table(storms_df, split_df, label_mode)
    write_table_atomic(table, Path(run_dir) / "label_sources.csv")
    years = [f"MY{year} " + " + ".join(f"{int(r.n_instances)} {r.label_source}" for r in rows.itertuples())
             for year, rows in table.groupby("mars_year")]
    log.info("label sources (%s mode; catalogue instances of the archive's maps): %s", label_mode,
             "; ".join(years) if years else "no storms")
    return table


def run_cloud_masks(config: TrainConfig, train_index: pd.DataFrame, val_index: pd.DataFrame) -> CloudMasks | None:
    """The cloud masks of a two-class run (None for dust only), every one of the training and validation maps
    checked before training starts (:meth:`CloudMasks.check`), saying once how many training maps have one."""
    root = cloud_mask_root(config)
    if root is None:
        return None
    masks = CloudMasks(root, max_width_deg=config.cloud_max_width_deg)
    found = masks.check(train_index, config.map_res_deg)
    masks.check(val_index, config.map_res_deg)
    say = log.info if found == len(train_index) else log.warning
    say("classes %s: %d of %d training maps have a cloud mask under %s; the other %d train the dust class only",
        ",".join(config.classes), found, len(train_index), root, len(train_index) - found)
    return masks


# --------------------------------------------------------------------------------------------------
# the detector: training, validation, exact resume
# --------------------------------------------------------------------------------------------------
def validation_map(records: list[tuple]) -> dict[str, float]:
    """COCO box mAP25/50/75 of validation records ``(map_id, (height, width), gt, pred)``.

    ``gt`` and ``pred`` are :mod:`marsdust.evaluate` entries in the same (rolled) image frame;
    the map grid is 60°S–60°N-centred with ``360 / width`` degrees per pixel. A value is 0.0 (not
    NaN) when the maps hold no storm, so checkpoint selection always has a number.
    """
    result = coco_map(*_records_by_map(records))
    return {key: float(result[key]) if math.isfinite(result[key]) else 0.0 for key in ("map25", "map50", "map75")}


def _records_by_map(records: list[tuple]) -> tuple[dict, dict, dict]:
    """``(ground_truth, predictions, grids)`` by map id from validation records (60°S–60°N-centred grids)."""
    ground_truth, predictions, grids = {}, {}, {}
    for map_id, (height, width), gt, pred in records:
        ground_truth[map_id], predictions[map_id] = gt, pred
        half_span_deg = 180.0 * height / width
        grids[map_id] = MapGrid.from_width(width, half_span_deg, -half_span_deg)
    return ground_truth, predictions, grids


def best_f1_threshold(records: list[tuple]) -> tuple[float | None, float]:
    """The score threshold with the highest F1 (IoU ≥ 0.5) on validation records, and that F1.

    ``records`` as for :func:`validation_map`. The thresholds tried are the ladder of
    :data:`marsdust.evaluate.matching.SCORE_THRESHOLDS` (0.05, 0.10, …, 0.95;
    :func:`marsdust.evaluate.errors.score_sweep`); the highest F1 wins, the higher threshold on a tie.
    Returns ``(None, 0.0)`` when no threshold finds any storm.
    """
    best, best_f1 = None, 0.0
    for row in score_sweep(*_records_by_map(records)):
        precision, recall = row["precision"], row["recall"]
        if not (precision > 0 and recall > 0):  # NaN or 0
            continue
        f1 = 2 * precision * recall / (precision + recall)
        if f1 >= best_f1:
            best, best_f1 = row["score_threshold"], f1
    return best, float(best_f1)


def _numpy_state_to_builtins(state: tuple) -> dict:
    """numpy's legacy RNG state as tensors and builtins (loadable with torch ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = state
    return {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _numpy_state_from_builtins(state: dict) -> tuple:
    return (state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["cached"])


def outline_pixel_counts(target: dict, output: dict, dust_found: np.ndarray) -> np.ndarray:
    """:func:`marsdust.evaluate.metrics.pixel_counts_by_threshold` of one validation map at every score of
    :data:`~marsdust.evaluate.matching.SCORE_THRESHOLDS`: its dust detections' masks (probability > 0.5, as
    ``detect`` cuts them) against the union of its catalogued dust outlines, over its observed pixels."""
    dust = target["labels"] == DUST_LABEL
    truth = target["masks"][dust].bool().any(dim=0) if bool(dust.any()) else torch.zeros_like(target["valid"])
    found = torch.as_tensor(dust_found, device=output["scores"].device)
    scores_map = score_map(output["masks"].detach()[found], output["scores"].detach()[found])  # where the masks are
    return pixel_counts_by_threshold(scores_map, truth.cpu().numpy(), target["valid"].cpu().numpy(), SCORE_THRESHOLDS)


def targets_for_model(targets: list[dict], with_masks: bool) -> list[dict]:
    keys = ("boxes", "labels", "masks", "mask_supervised") if with_masks else ("boxes", "labels")
    return [{k: t[k] for k in keys if k in t} for t in targets]


class DetectorModule(L.LightningModule):
    """A registered detector (``self.model``) with its optimizer schedule and mAP validation.

    ``hyper_parameters`` hold ``model_name``, ``model_config`` (resolved DetectorConfig dict)
    and ``optim`` — what :func:`marsdust.models.load_model` needs to rebuild the detector.
    """

    def __init__(self, model_name: str, model_config: dict, optim: dict, label_mode: str | None = None,
                 classes: tuple[str, ...] = ("dust",), reference_dropout: float = 0.0,
                 cloud_max_width_deg: float | None = None,
                 training_latitudes_deg: tuple[float, float] | None = None):
        super().__init__()
        model = build_model(model_name, DetectorConfig.from_dict(dict(model_config), source="model_config"))
        self.model = model
        self.save_hyperparameters({"model_name": model_name, "model_config": model.config.to_dict(),
                                   "optim": dict(optim), "label_mode": label_mode, "classes": list(classes),
                                   "reference_dropout": float(reference_dropout),
                                   "cloud_max_width_deg": cloud_max_width_deg,
                                   "training_latitudes_deg": (None if training_latitudes_deg is None
                                                              else [float(v) for v in training_latitudes_deg])})
        self.optim = dict(optim)
        self._val_predictions: list[tuple] = []
        self._saved_score_thresh = None
        self._val_score_threshold: float | None = None  # of the latest validation
        self._val_pixel_counts = np.zeros((len(SCORE_THRESHOLDS), 4), dtype=np.int64)  # pixel_counts_by_threshold
        self._val_outline_threshold: float | None = None  # of the latest validation: best pixel IoU
        self._rng_to_restore: dict | None = None  # RNG states of the checkpoint a resumed run starts from

    # ---- training
    def training_step(self, batch, batch_idx):
        images, targets = batch
        losses = self.model(images, targets_for_model(targets, self.model.has_masks))
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
        self._val_pixel_counts[:] = 0
        heads = getattr(self.model, "roi_heads", None)  # a segmenter (unet) has none: it keeps every instance
        if heads is not None:
            self._saved_score_thresh = heads.score_thresh
            heads.score_thresh = 0.0

    def validation_step(self, batch, batch_idx):
        images, targets = batch
        outputs = self.model(images)
        for image, target, output in zip(images, targets, outputs):  # dust only: the checkpoint is chosen on storms
            dust = (target["labels"] == DUST_LABEL).cpu().numpy()
            found = (output["labels"] == DUST_LABEL).detach().cpu().numpy()
            gt = {"boxes": target["boxes"].cpu().numpy()[dust], "confidence": target["confidence"].cpu().numpy()[dust],
                  "area_km2": target["area_km2"].cpu().numpy()[dust], "ls": target["ls"]}
            pred = {"boxes": output["boxes"].detach().float().cpu().numpy()[found],  # fp32 also under bf16 autocast
                    "scores": output["scores"].detach().float().cpu().numpy()[found]}
            self._val_predictions.append((target["map_id"], tuple(image.shape[-2:]), gt, pred))
            if target.get("outline_truth") and "masks" in output:
                self._val_pixel_counts += outline_pixel_counts(target, output, found)

    def on_validation_epoch_end(self):
        if getattr(self.model, "roi_heads", None) is not None:
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
        self._choose_outline_threshold()
        self.log("val_best_f1", f1, sync_dist=False, rank_zero_only=False)
        self.log("val_score_threshold", threshold if threshold is not None else float("nan"), sync_dist=False,
                 rank_zero_only=False)
        self._val_predictions = []

    def _choose_outline_threshold(self) -> None:
        """The score threshold of best pixel IoU of the dust masks on the validation maps with outline truth
        (:func:`marsdust.evaluate.metrics.best_pixel_threshold`), logged as ``val_pixel_iou`` and
        ``val_outline_score_threshold``; None (not logged) when no validation map has outline truth."""
        counts = self._val_pixel_counts
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, counts)
            counts = np.sum(gathered, axis=0)
        threshold, iou = best_pixel_threshold(counts, SCORE_THRESHOLDS)
        self._val_outline_threshold = threshold
        if threshold is not None:
            self.log("val_pixel_iou", iou, sync_dist=False, rank_zero_only=False)
            self.log("val_outline_score_threshold", threshold, sync_dist=False, rank_zero_only=False)

    # ---- exact resume: the RNG streams the RPN / RoI samplers draw from
    def on_save_checkpoint(self, checkpoint):
        if self._val_score_threshold is not None:  # of the validation this checkpoint follows
            checkpoint["marsdust_score_threshold"] = float(self._val_score_threshold)
        if self._val_outline_threshold is not None:
            checkpoint["marsdust_outline_score_threshold"] = float(self._val_outline_threshold)
        checkpoint["marsdust_rng"] = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state_to_builtins(np.random.get_state()),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint):
        self._rng_to_restore = checkpoint.get("marsdust_rng")

    def on_train_start(self):
        state = self._rng_to_restore
        if state:
            torch.set_rng_state(state["torch"])
            np.random.set_state(_numpy_state_from_builtins(state["numpy"]))
            random.setstate(state["python"])
            if state.get("cuda") and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda"])
            self._rng_to_restore = None


def build_module(config: TrainConfig, training_latitudes_deg: tuple[float, float] | None = None):
    """The LightningModule of a run (a new detector from ``config``); ``training_latitudes_deg`` (south, north),
    the latitudes of its training maps (:func:`marsdust.data.map_latitudes`), is recorded in its checkpoints."""
    return DetectorModule(config.model, config.detector_overrides(), config.optim(), config.label_mode,
                          tuple(config.classes),
                          reference_dropout=config.reference_dropout if config.reference_config.enabled else 0.0,
                          cloud_max_width_deg=config.cloud_max_width_deg,
                          training_latitudes_deg=training_latitudes_deg)


# --------------------------------------------------------------------------------------------------
# checkpoints, metrics.csv and progress
# --------------------------------------------------------------------------------------------------
def best_score_on_disk(best_path: Path, state_key: str) -> float | None:
    """The monitored score stored in ``best.ckpt`` by the callback ``state_key``, or None."""
    if not best_path.is_file():
        return None
    try:
        checkpoint = read_training_state(best_path)
    except CheckpointError:  # an unreadable best.ckpt is replaced by the next best model
        return None
    score = (checkpoint.get("callbacks") or {}).get(state_key, {}).get("best_model_score")
    return None if score is None else float(score)


class BestCheckpoint(ModelCheckpoint):
    """``best.ckpt`` that a resumed run replaces only with a better model.

    A ``last.ckpt`` of an earlier version was written before its step's validation, so the best
    score it carries can be the one before that validation (and Lightning drops it altogether
    when the run folder moved: ``dirpath`` differs). On resume the score of the
    ``best.ckpt`` on disk is restored when it is higher.
    """

    STATE_KEY_CLASS_NAME = "_best_checkpoint_class.<locals>.BestCheckpoint"
    """The class name in this callback's checkpoint key, as runs have always written it (the class
    was once defined inside a factory function): runs checkpointed then still resume with their best score."""

    @property
    def state_key(self) -> str:
        """Key of this callback's state in a checkpoint: Lightning's (class name and settings), with
        :attr:`STATE_KEY_CLASS_NAME` as the class name."""
        return super().state_key.replace(type(self).__qualname__, self.STATE_KEY_CLASS_NAME, 1)

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        path = Path(self.dirpath) / "best.ckpt"
        on_disk = best_score_on_disk(path, self.state_key)
        if on_disk is not None and (self.best_model_score is None or on_disk > float(self.best_model_score)):
            score = torch.tensor(on_disk)
            self.best_model_score, self.best_model_path = score, str(path)
            self.kth_best_model_path, self.kth_value, self.best_k_models = str(path), score, {str(path): score}


class LastCheckpoint(Callback):
    """``last.ckpt`` every ``every_steps`` steps and at the final step; after the step's validation when it has one.

    Saved before that validation, a checkpoint would let a run killed during it resume past it:
    its ``metrics.csv`` row and its chance at ``best.ckpt`` would be lost.

    Parameters
    ----------
    path : Path
        ``RUN_DIR/checkpoints/last.ckpt``.
    every_steps, val_every_steps : int
        Checkpoint and validation intervals, optimizer steps.
    """

    def __init__(self, path: Path, every_steps: int, val_every_steps: int):
        self.path, self.every_steps, self.val_every_steps = Path(path), int(every_steps), int(val_every_steps)

    def due(self, trainer) -> bool:
        return trainer.global_step % self.every_steps == 0 or trainer.global_step >= trainer.max_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.due(trainer) and trainer.global_step % self.val_every_steps != 0:
            trainer.save_checkpoint(self.path)

    def on_validation_end(self, trainer, pl_module):
        if self.due(trainer):
            trainer.save_checkpoint(self.path)


def checkpoint_callbacks(run_dir: Path, config: TrainConfig) -> list[Callback]:
    """The run's own callbacks: ``best.ckpt`` (:class:`BestCheckpoint`, highest ``val_map50``),
    ``last.ckpt`` (:class:`LastCheckpoint`) and Lightning's learning-rate monitor (``lr`` in ``metrics.csv``)."""
    ckpt_dir = run_dir / "checkpoints"
    best = BestCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_map50", mode="max", save_top_k=1,
                          auto_insert_metric_name=False, enable_version_counter=False, save_last=False)
    every = int(config.ckpt_every_n_steps or min(config.val_every_n_steps, config.max_steps))
    val_every = min(int(config.val_every_n_steps), int(config.max_steps))
    return [best, LastCheckpoint(ckpt_dir / "last.ckpt", every, val_every), LearningRateMonitor(logging_interval="step")]


class ContinuedCSVLogger(CSVLogger):
    """Lightning's CSVLogger writing ``RUN_DIR/metrics.csv``; on resume it keeps the rows before ``resume_step``.

    (Lightning's writer deletes an existing ``metrics.csv`` when it starts; the rows logged after
    the checkpoint are logged again by the resumed run.)

    Parameters
    ----------
    run_dir : Path
        The run folder.
    flush_every : int
        Write the rows to disk every this many steps.
    resume_step : int or None
        Global step of the checkpoint a resumed run starts from; None for a new run.
    """

    def __init__(self, run_dir: Path, flush_every: int, resume_step: int | None):
        super().__init__(save_dir=str(run_dir), name="", version="", flush_logs_every_n_steps=flush_every)
        self.metrics_path, self.resume_step = Path(run_dir) / "metrics.csv", resume_step

    @property
    def experiment(self):
        if self._experiment is not None:
            return self._experiment
        path, kept = self.metrics_path, None
        if self.resume_step is not None and path.is_file() and path.stat().st_size > 0:
            old = pd.read_csv(path)
            kept = old.loc[old["step"] < self.resume_step] if "step" in old.columns else None
        writer = CSVLogger.experiment.fget(self)
        if isinstance(writer, ExperimentWriter) and kept is not None and len(kept):
            write_table_atomic(kept, path)
            writer.metrics_keys = list(kept.columns)
        return writer


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
            keys = ("val_map50", "val_map75", "val_best_f1", "val_pixel_iou")
            values = "  ".join(f"{k[4:]} {float(metrics[k]):.3f}" for k in keys if k in metrics)
            self._print(f"validate: step {trainer.global_step}  {values}")


def _clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) of a duration in seconds; ``?`` when unknown."""
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
