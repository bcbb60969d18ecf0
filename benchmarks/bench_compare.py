"""Benchmark: the paper's Table 1 on the synthetic ``bench`` preset (``marsdust compare``).

Trains and evaluates each detector (dustrcnn, maskrcnn, fasterrcnn, sppnet) under both split
strategies with the same step budget, prints the table (our synthetic-data rows next to the
paper's real-data rows, labelled as such) and writes it with the date, machine and budget to
``bench_out/compare/`` (``table1.md``, ``table1.csv``, ``bench.json``; runs under ``runs/`` and
evaluations under ``eval/``). Resumable: run the same command again after an interruption.

A missing ``--data`` folder named after a synth preset (``bench_out/data/bench``: ≈ 520 maps at 0.4°;
``bench_out/data/twocam``) is synthesized first, with seed 0.

Beside the paper's columns it writes every measure of every run (``measures.md`` / ``.csv``: 12° mAP50/75,
box and mask mAP50, pixel IoU and Dice, recall and false alarms at the stored score threshold, areas) and
each detector's recall per storm size, catalogue confidence, near the 180° seam, at gaps and poleward of
60° (:func:`marsdust.evaluate.compare.measures_table`, :func:`~marsdust.evaluate.compare.recall_table`).
``--native-maps N`` also times ``marsdust detect`` with each detector's strategy-1 checkpoint on N native
0.1° maps (1200 × 3600), and stock torchvision Mask R-CNN on the same maps in the same run
(``benchmarks/bench_detect.py``'s children). ``--results DIR`` writes the report as a dated file
``DIR/table1_<data>_<YYYYMMDD>.md`` (and ``.csv``) with the machine named.

Run::

    .venv/bin/python benchmarks/bench_compare.py --max-steps 2000            # the full benchmark (hours on CPU)
    .venv/bin/python benchmarks/bench_compare.py --max-steps 2 --models fasterrcnn --strategies random  # smoke
    .venv/bin/python benchmarks/bench_compare.py --max-steps 600 --val-every 200 \\
        --models dustrcnn,maskrcnn,fasterrcnn,sppnet,unet,unet_cbam --config benchmarks/configs/cpu_compare.yaml \\
        --reference prior-median --reference-dropout 0.2 --native-maps 4 --results docs/results   # docs' Table 1
    .venv/bin/python benchmarks/bench_compare.py ... --data bench_out/data/twocam \\
        --config benchmarks/configs/marci_compare.yaml        # the MARCI years of the two-camera archive
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_detect's children time the native maps
from bench_detect import cpu_model  # noqa: E402  (one description of the CPU for every benchmark's results)
from bench_shift import git_commit  # noqa: E402

from marsdust.fileio import write_text_atomic  # noqa: E402


def machine() -> dict:
    """What the benchmark ran on."""
    import torch

    return {"platform": platform.platform(), "cpu_model": cpu_model(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "git_commit": git_commit()}


def native_times(out: Path, results: dict, n_maps: int, stock_maps: int, threads: int = 2) -> dict:
    """Seconds per native 0.1° map of ``marsdust detect`` with each detector's first-strategy checkpoint, and
    of stock torchvision Mask R-CNN (read + inference, random weights) on the same maps, one run.

    Returns ``{model: bench_detect "ours" result, "stock": its "stock" result}`` (``median_s_per_map`` each).
    """
    from bench_detect import map_paths, native_maps, run_child

    from marsdust.train import run_checkpoint

    archive = native_maps(Path(__file__).resolve().parents[1] / "bench_out" / "detect_maps", max(n_maps, stock_maps + 1))
    paths = map_paths(archive)
    options = {"archive": str(archive), "threads": threads, "engine": None, "score_threshold": 0.5,
               "paths": paths, "stock_maps": stock_maps, "device": "cpu", "batch_size": 1}
    times = {}
    for model, by_strategy in results.items():
        checkpoint = run_checkpoint(out / "runs" / f"{model}_{next(iter(by_strategy))}")
        print(f"native maps: detect with {model} on {len(paths)} maps ...", flush=True)
        times[model] = run_child("ours", dict(options, checkpoint=str(checkpoint),
                                              out_dir=str(out / "native_detect" / model)))
    if stock_maps > 0:
        print(f"native maps: stock maskrcnn_resnet50_fpn on {stock_maps} + 1 maps ...", flush=True)
        times["stock"] = run_child("stock", options)
    return times


def training_minutes(out: Path, results: dict) -> dict:
    """Each run's training wall time in minutes and steps per second, from its ``done.json``."""
    minutes = {}
    for model, by_strategy in results.items():
        for strategy in by_strategy:
            done = out / "runs" / f"{model}_{strategy}" / "done.json"
            if done.is_file():
                summary = json.loads(done.read_text())
                minutes[f"{model}_{strategy}"] = (summary["seconds"] / 60.0, summary.get("steps_per_second"))
    return minutes


def training_words(trained: dict) -> str:
    """The runs' training time in words (runs finished by an earlier call are reused, so this call's time is not it)."""
    if not trained:
        return "training time not recorded"
    rates = [rate for _, rate in trained.values() if rate]
    return (f"training {sum(m for m, _ in trained.values()):.0f} min for the {len(trained)} runs "
            f"({min(rates):.2f}–{max(rates):.2f} steps/s; runs finished by an earlier call are reused, not retrained)")


def cached_native_times(out: Path, results: dict, n_maps: int, stock_maps: int) -> dict:
    """:func:`native_times`, reused from ``OUT/native_times.json`` when it timed the same detectors and maps."""
    path = out / "native_times.json"
    key = {"models": sorted(results), "native_maps": n_maps, "stock_maps": stock_maps}
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            print(f"native maps: reusing the timings of {cached['date']} ({path})", flush=True)
            return cached["times"]
    times = native_times(out, results, n_maps, stock_maps)
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    write_text_atomic(path, json.dumps({"key": key, "date": stamp, "times": times}, indent=2) + "\n")
    return times


def native_markdown(times: dict) -> str:
    """Seconds per native map of each detector beside stock Mask R-CNN's (ratio stock / ours)."""
    from marsdust.evaluate.compare import network_row_name

    stock = times.get("stock", {}).get("median_s_per_map")
    lines = ["| Network | engine | s / native map (median) | stock Mask R-CNN / ours | peak RSS, MB |",
             "|---|---|---|---|---|"]
    for model, side in times.items():
        if model == "stock":
            continue
        ratio = f"{stock / side['median_s_per_map']:.1f}×" if stock else "–"
        lines.append(f"| {network_row_name(model)} | {side['engine']} | {side['median_s_per_map']:.2f} | "
                     f"{ratio} | {side['peak_rss_mb']:.0f} |")
    if stock:
        lines.append(f"| stock `maskrcnn_resnet50_fpn` (1200 × 3600 input) | torch | {stock:.2f} | 1.0× | "
                     f"{times['stock']['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--data", default="bench_out/data/bench", help="archive + catalog folder; synthesized (seed 0) if missing and named after a preset")
    parser.add_argument("--out", default="bench_out/compare")
    parser.add_argument("--config", default=None, help="YAML TrainConfig settings shared by all runs")
    parser.add_argument("--val-every", type=int, default=None)
    parser.add_argument("--reference", default=None, choices=["none", "prior-median"],
                        help="reference bands of every run (default: the --config file's, else train's default)")
    parser.add_argument("--reference-dropout", type=float, default=None, metavar="P")
    parser.add_argument("--native-maps", type=int, default=0, metavar="N",
                        help="also time detect per native 0.1° map (N maps) beside stock Mask R-CNN (0: skip)")
    parser.add_argument("--stock-maps", type=int, default=2, help="stock Mask R-CNN maps timed after one warm-up")
    parser.add_argument("--results", default=None, metavar="DIR",
                        help="also write the report as DIR/table1_<data>_<YYYYMMDD>.md and .csv")
    args = parser.parse_args(argv)

    from marsdust.evaluate.compare import compare, measures_markdown
    from marsdust.evaluate import comparison_markdown

    data = Path(args.data)
    if not (data / "archive").is_dir() or not (data / "mdad").is_dir():
        from marsdust.synth import synthesize
        from marsdust.synth.presets import PRESETS

        if data.name not in PRESETS:
            raise SystemExit(f"{data} has no archive/ and mdad/, and its name is not a synth preset "
                             f"({', '.join(sorted(PRESETS))}) to write there")
        print(f"synthesizing the {data.name} preset into {data} ...", flush=True)
        synthesize(data, data.name, seed=0)
    base = base_config(args.config, data, args.max_steps, args.val_every, args.reference, args.reference_dropout)
    label = "bench preset" if data.name == "bench" else f"{data.name} archive"
    t0 = time.perf_counter()
    result = compare(args.out, base, [m for m in args.models.split(",") if m],
                     [s for s in args.strategies.split(",") if s], our_label=f"ours (synthetic {label})")
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    times = cached_native_times(out, result["results"], args.native_maps, args.stock_maps) if args.native_maps else {}
    trained = training_minutes(out, result["results"])
    info = machine()
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    periods = ", ".join(f"{name} {getattr(base, name)}" for name in ("train_period", "test_period", "random_period")
                        if getattr(base, name))
    header = (f"# Table 1 on the synthetic {label}\n\n{stamp}, commit {info['git_commit']}; budget {args.max_steps} "
              f"steps per run, batch {base.batch_size}, schedule {base.schedule}, model preset {base.model_preset} at "
              f"{base.map_res_deg:g}°/px, reference {base.reference_config.describe()}"
              f"{f' (dropout {base.reference_dropout:g})' if base.reference_config.enabled else ''}"
              f"{f'; {periods}' if periods else ''}; machine {info['cpu_model']}, {os.cpu_count()} CPUs, "
              f"{info['platform']}; {training_words(trained)}, this call {seconds / 60:.1f} min.\n"
              f"Command: `{' '.join(['benchmarks/bench_compare.py', *(argv if argv is not None else sys.argv[1:])])}`\n\n")
    text = (header + comparison_markdown(result["table"])
            + "\n## Every measure\n\nPercent but for false alarms (count on the test maps), area ratio (median "
              "detected / catalogued area of matched storms) and time (median ms per map at the working grid). "
              "Recall and false alarms at each detector's stored score threshold, IoU 0.5 on outline boxes.\n\n"
            + measures_markdown(result["measures"], result["recall"], result["causes"]))
    if times:
        text += (f"\n## Detect time per native map\n\n`marsdust detect` end to end (read, infer, write the "
                 f"products) with each detector's {args.strategies.split(',')[0]}-split checkpoint on "
                 f"{times[next(iter(times))]['maps']} native 0.1° maps (1200 × 3600, the `full` preset), 2 threads; "
                 "stock: read + inference at native resolution, same maps, same run.\n\n" + native_markdown(times))
    write_text_atomic(out / "table1.md", text)
    report = {"date": stamp, "budget_steps": args.max_steps, "models": args.models, "strategies": args.strategies,
              "train_config": base.to_dict(), "machine": info, "seconds": seconds, "results": result["results"],
              "native_times": times}
    write_text_atomic(out / "bench.json", json.dumps(report, indent=2) + "\n")
    if args.results:
        stem = Path(args.results) / f"table1_{data.name}_{stamp[:10].replace('-', '')}"
        write_text_atomic(stem.with_suffix(".md"), text)
        write_text_atomic(stem.with_suffix(".csv"), (out / "measures.csv").read_text())
        print(f"wrote {stem}.md and .csv", flush=True)
    print(text)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
