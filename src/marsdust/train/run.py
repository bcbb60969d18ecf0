"""One training run (``marsdust train``), top to bottom: configuration → data → detector → trainer → fit → summary.

The run folder (``RUN_DIR``) and what exact resume rests on are described in :mod:`marsdust.train`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import pandas as pd
import torch
import yaml

from marsdust.data import save_split
from marsdust.fileio import write_text_atomic
from marsdust.models import read_training_state
from marsdust.train.config import TrainConfig, load_tables, split_for
from marsdust.train.hardware import cpu_info, describe_cpu, resolve_memory_format, resolve_precision
from marsdust.train.lightning import (
    ContinuedCSVLogger,
    DustDataModule,
    ProgressLines,
    build_module,
    checkpoint_callbacks,
    write_label_sources,
)


class _DropAdvertisingTips(logging.Filter):
    """Drops Lightning's "Tip: ... install litlogger" line: an advertisement, not news about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


_LIGHTNING_TIPS = _DropAdvertisingTips()

log = logging.getLogger(__name__)


def train(config: TrainConfig, run_dir: str | os.PathLike, *, resume: bool = False, callbacks: list | None = None) -> dict:
    """Train a detector; returns a summary dict (also written to ``RUN_DIR/done.json``).

    Parameters
    ----------
    config : TrainConfig
    run_dir : path
        Output folder (see :mod:`marsdust.train`).
    resume : bool
        Continue from ``RUN_DIR/checkpoints/last.ckpt`` (exactly; see :mod:`marsdust.train`). The
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
    run_dir = Path(run_dir)
    last_ckpt = run_dir / "checkpoints" / "last.ckpt"
    config = _run_config(config, run_dir, resume)
    datamodule = _write_run_files(config, run_dir, resume)
    module = build_module(config, _seen_latitudes(config, datamodule))
    state = read_training_state(last_ckpt) if resume and last_ckpt.exists() else {}
    check_same_detector(module, state, run_dir)
    start_step = int(state.get("global_step", 0))
    if config.init_weights and not state:
        load_initial_weights(module, config.init_weights)
    precision, channels_last = run_hardware(config)
    if channels_last:
        module.model.to(memory_format=torch.channels_last)
    trainer = _trainer(config, run_dir, precision, start_step if resume else None, callbacks)
    seconds = _fit(trainer, module, datamodule, ckpt_path="last" if resume and last_ckpt.exists() else None)
    summary = _summary(trainer, run_dir, datamodule, seconds, start_step)
    if trainer.is_global_zero and trainer.global_step >= config.max_steps:
        write_text_atomic(run_dir / "done.json", json.dumps(summary, indent=2) + "\n")
    return {**summary, "global_rank": int(trainer.global_rank)}


def _seen_latitudes(config: TrainConfig, datamodule: DustDataModule) -> tuple[float, float] | None:
    """The latitudes the detector will have seen: its training maps', joined with those recorded by the
    checkpoint it starts from (``init_weights``: e.g. the teacher of a self-training run)."""
    from marsdust.models import training_latitudes

    seen = datamodule.training_latitudes_deg
    before = training_latitudes(config.init_weights) if config.init_weights else None
    if before is None or seen is None:
        return seen
    return min(seen[0], before[0]), max(seen[1], before[1])


def check_same_detector(module: L.LightningModule, state: dict, run_dir: Path) -> None:
    """Raise ``ValueError`` when the checkpoint ``state`` a run resumes from holds another detector than the
    configuration builds (e.g. a run made under earlier defaults, resumed without its ``config.yaml``)."""
    stored = (state.get("hyper_parameters") or {}).get("model_config")
    built = module.hparams["model_config"]
    if stored is None or stored == built:
        return
    differing = sorted(key for key in set(stored) | set(built) if stored.get(key) != built.get(key))
    raise ValueError(f"{run_dir / 'checkpoints' / 'last.ckpt'} holds another detector than this configuration "
                     f"builds (fields {', '.join(differing)} differ); resume it with its own settings: "
                     f"--config {run_dir / 'config.yaml'}")


def load_initial_weights(module: L.LightningModule, checkpoint: str | os.PathLike) -> None:
    """Start ``module``'s detector from the weights of ``checkpoint`` (``TrainConfig.init_weights``).

    Raises
    ------
    ValueError
        The checkpoint holds another network, or weights of other shapes (another configuration).
    """
    from marsdust.models import read_checkpoint

    stored = read_checkpoint(checkpoint)
    name = module.hparams["model_name"]
    if stored["model_name"] != name:
        raise ValueError(f"{checkpoint}: init_weights holds a {stored['model_name']} detector; this run trains {name}")
    try:
        module.model.load_state_dict(stored["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:4]
        raise ValueError(f"{checkpoint}: its weights do not fit this run's {name} (another configuration: "
                         f"{' '.join(line.strip() for line in first)}); train with the checkpoint's settings") from None
    log.info("starting from the weights of %s", checkpoint)


def _run_config(config: TrainConfig, run_dir: Path, resume: bool) -> TrainConfig:
    """The configuration the run uses (a resumed run keeps its split); seeds and threads set as it asks.

    Raises ``FileExistsError`` for a folder that holds a run already, unless resuming it.
    """
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
    return config


def _write_run_files(config: TrainConfig, run_dir: Path, resume: bool) -> DustDataModule:
    """The run's data and split, with ``split.csv`` (unless resumed) and the resolved ``config.yaml`` written."""
    index_df, storms_df = load_tables(config)
    split_df = split_for(config, index_df)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (resume and (run_dir / "split.csv").exists()):
        save_split(split_df, run_dir / "split.csv")
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump({**config.to_dict(), "resolved_optim": config.optim()},
                                                               sort_keys=False))
    write_label_sources(storms_df, split_df, config.label_mode, run_dir)
    return DustDataModule(config, index_df, storms_df, split_df)


def _trainer(config: TrainConfig, run_dir: Path, precision: str, resume_step: int | None,
             callbacks: list | None) -> L.Trainer:
    """The Lightning trainer at Lightning's ``precision``: ``metrics.csv`` (every step flushed: a resumed run, from
    ``resume_step``, finds every row up to its checkpoint), checkpoints, progress (a bar on a terminal, plain lines
    in a log)."""
    logger = ContinuedCSVLogger(run_dir, 1, resume_step)
    all_callbacks = checkpoint_callbacks(run_dir, config) + list(callbacks or [])
    progress_bar = bool(config.progress) and sys.stderr.isatty()
    if config.progress and not progress_bar:  # a log file or CI: plain lines instead of a redrawn bar
        all_callbacks.append(ProgressLines(every_steps=max(10, int(config.max_steps) // 20)))
    val_every = min(int(config.val_every_n_steps), int(config.max_steps))
    return L.Trainer(
        accelerator=config.accelerator, devices=config.devices, num_nodes=int(config.num_nodes),
        strategy=config.trainer_strategy, precision=precision, max_steps=int(config.max_steps),
        max_epochs=-1, val_check_interval=val_every, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        logger=logger, callbacks=all_callbacks, enable_progress_bar=progress_bar,
        enable_model_summary=False, log_every_n_steps=1, use_distributed_sampler=False, deterministic=False,
        default_root_dir=str(run_dir),
    )


def run_hardware(config: TrainConfig) -> tuple[str, bool]:
    """Lightning's ``precision`` for the run and whether its weights are laid out channels-last
    (:func:`~marsdust.train.hardware.resolve_precision`, :func:`~marsdust.train.hardware.resolve_memory_format`),
    saying in one line which CPU trains, what was chosen and why, and how many threads torch uses (on standard
    error beside the progress lines; a log line without progress)."""
    cpu = cpu_info()
    precision, why = resolve_precision(str(config.precision), str(config.accelerator), cpu)
    layout = resolve_memory_format(str(config.memory_format), str(config.accelerator), cpu)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
        line = describe_cpu(cpu, precision, why, torch.get_num_threads(), layout)
        if config.progress:
            print(line, file=sys.stderr, flush=True)
        else:
            log.info(line)
    return precision, layout[0]


def _fit(trainer: L.Trainer, module: L.LightningModule, datamodule: DustDataModule, ckpt_path: str | None) -> float:
    """``trainer.fit`` without the warnings that are no news for this run; returns its duration, seconds."""
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
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return time.perf_counter() - t0


def run_checkpoint(run_dir: str | os.PathLike) -> Path:
    """The checkpoint a run folder offers: ``checkpoints/best.ckpt`` (best validation mAP50) where it was written,
    else ``checkpoints/last.ckpt`` (a run stopped before its first validation)."""
    best = Path(run_dir) / "checkpoints" / "best.ckpt"
    return best if best.is_file() else Path(run_dir) / "checkpoints" / "last.ckpt"


def _summary(trainer: L.Trainer, run_dir: Path, datamodule: DustDataModule, seconds: float, start_step: int) -> dict:
    """What ``done.json`` records of a fitted run (``start_step``: where a resumed run began)."""
    best_cb = trainer.checkpoint_callback
    best_score = None if best_cb is None or best_cb.best_model_score is None else float(best_cb.best_model_score)
    return {
        "best_checkpoint": str(run_dir / "checkpoints" / "best.ckpt"),
        "last_checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
        "best_val_map50": best_score,
        "global_step": int(trainer.global_step),
        "seconds": seconds,
        "steps_per_second": (trainer.global_step - start_step) / seconds if seconds > 0 else None,
        "n_train_maps": len(datamodule.train_set),
        "n_val_maps": len(datamodule.val_set),
    }


def read_metrics_csv(run_dir: str | os.PathLike) -> pd.DataFrame:
    """``RUN_DIR/metrics.csv`` as a DataFrame."""
    return pd.read_csv(Path(run_dir) / "metrics.csv")
