"""The paper's Table 1 on our data (``marsdust compare``): each detector trained and scored under each split strategy.

Every run gets the same budget (one :class:`marsdust.train.TrainConfig`, only ``model`` and
``strategy`` change): :func:`marsdust.train.train`, then :func:`marsdust.evaluate.evaluate_checkpoint`
on the test split, then :func:`marsdust.evaluate.comparison_table` puts our rows under the paper's.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from marsdust.evaluate import EvaluateOptions, comparison_table, evaluate_checkpoint, write_comparison_table
from marsdust.train import TrainConfig, train

log = logging.getLogger(__name__)


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
                evaluate_checkpoint(checkpoint, eval_dir, EvaluateOptions(
                    data=base.data, archive=base.archive, catalog=base.catalog, master=base.master,
                    strict=base.strict, progress=progress))
            results.setdefault(model, {})[strategy] = str(metrics_path)
    table = comparison_table(results, our_label=our_label)
    md_path, csv_path = write_comparison_table(table, out_dir / "table1")
    return {"table": table, "markdown": md_path, "csv": csv_path, "results": results}
