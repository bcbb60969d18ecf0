"""Benchmark: the paper's Table 1 on the synthetic ``bench`` preset (``marsdust compare``).

Trains and evaluates each detector (dustrcnn, maskrcnn, fasterrcnn, sppnet) under both split
strategies with the same step budget, prints the table (our synthetic-data rows next to the
paper's real-data rows, labelled as such) and writes it with the date, machine and budget to
``bench_out/compare/`` (``table1.md``, ``table1.csv``, ``bench.json``; runs under ``runs/`` and
evaluations under ``eval/``). Resumable: run the same command again after an interruption.

The ``bench`` preset (≈ 520 maps at 0.4°) is synthesized into ``bench_out/data/bench`` if missing.

Run::

    .venv/bin/python benchmarks/bench_compare.py --max-steps 2000            # the full benchmark (hours on CPU)
    .venv/bin/python benchmarks/bench_compare.py --max-steps 2 --models fasterrcnn --strategies random  # smoke
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def machine() -> dict:
    """What the benchmark ran on."""
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                            check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["git_commit"] = None
    return info


def base_config(config: str | None, data: Path, max_steps: int, val_every: int | None = None,
                reference: str | None = None, reference_dropout: float | None = None):
    """The TrainConfig shared by every run: the ``--config`` YAML with the command line on top."""
    from marsdust.train import TrainConfig, load_config_yaml

    values = load_config_yaml(config) if config else {}
    values.update(data=str(data), max_steps=max_steps)
    if val_every:
        values["val_every_n_steps"] = val_every
    if reference is not None:
        values["reference"] = reference
    if reference_dropout is not None:
        values["reference_dropout"] = reference_dropout
    return TrainConfig.from_dict(values, source=config or "bench_compare")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-steps", type=int, required=True, help="training steps per run (same for all)")
    parser.add_argument("--models", default="dustrcnn,maskrcnn,fasterrcnn,sppnet")
    parser.add_argument("--strategies", default="temporal,random")
    parser.add_argument("--data", default="bench_out/data/bench", help="bench preset folder (synthesized if missing)")
    parser.add_argument("--out", default="bench_out/compare")
    parser.add_argument("--config", default=None, help="YAML TrainConfig settings shared by all runs")
    parser.add_argument("--val-every", type=int, default=None)
    parser.add_argument("--reference", default=None, choices=["none", "prior-median"],
                        help="reference bands of every run (default: the --config file's, else train's default)")
    parser.add_argument("--reference-dropout", type=float, default=None, metavar="P")
    args = parser.parse_args(argv)

    from marsdust.evaluate.compare import compare
    from marsdust.evaluate import comparison_markdown

    data = Path(args.data)
    if not (data / "archive").is_dir() or not (data / "mdad").is_dir():
        from marsdust.synth import synthesize

        print(f"synthesizing the bench preset into {data} ...", flush=True)
        synthesize(data, "bench", seed=0)
    base = base_config(args.config, data, args.max_steps, args.val_every, args.reference, args.reference_dropout)
    t0 = time.perf_counter()
    result = compare(args.out, base, [m for m in args.models.split(",") if m],
                     [s for s in args.strategies.split(",") if s], our_label="ours (synthetic bench)")
    seconds = time.perf_counter() - t0
    markdown = comparison_markdown(result["table"])
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    header = (f"# Table 1 on the synthetic bench preset\n\n{stamp}; budget {args.max_steps} steps per run, "
              f"batch {base.batch_size}, schedule {base.schedule}, reference {base.reference_config.describe()}"
              f"{f' (dropout {base.reference_dropout:g})' if base.reference_config.enabled else ''}; machine {machine()['platform']}, "
              f"{os.cpu_count()} CPUs; wall time of this call {seconds / 60:.1f} min\n\n")
    out = Path(args.out)
    (out / "table1.md").write_text(header + markdown)
    report = {"date": stamp, "budget_steps": args.max_steps, "models": args.models, "strategies": args.strategies,
              "train_config": base.to_dict(), "machine": machine(), "seconds": seconds, "results": result["results"]}
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print(header + markdown)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
