"""Benchmark of ``marsdust detect`` on native 0.1° maps (1200 × 3600) against stock torchvision Mask R-CNN.

In one run, each side in its own child process (so peak memory does not mix):

* **ours**: :func:`marsdust.detect.detect_archive` with the default ``dustrcnn`` (from
  ``--checkpoint``, else a random-init default model of ``--model``, e.g. ``unet``, saved to a temporary
  checkpoint) on N native
  maps, end to end (read, infer, write the products): median / p90 seconds per map from
  ``maps.csv``, steady-state seconds per map (interval between consecutive maps' part files),
  wall seconds per map, maps/s, projected time for the ``full`` preset's 2,533 maps, peak RSS
  (``ru_maxrss`` of the child), detections per map;
* **ours, model alone**: the same model on ``--batch-size`` prepared maps at a time (copy to the
  device, inference, outputs back), median ms per map over ``--model-repeats`` batches: the figure to
  hold against the paper's GPU inference time;
* **stock**: torchvision ``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)`` at native
  resolution (``min_size=1200, max_size=3600``) on the same maps, read with
  :func:`marsdust.mdgm.read_map`: median seconds per map (read + inference) after one warm-up map,
  peak RSS;
* **ratio** stock / ours (median seconds per map), and the load average before and after each side
  (the development machine is shared: compare ratios, not absolute numbers);
* **mAP50** (only with ``--checkpoint`` and ``--data DIR`` holding ``archive/`` + ``mdad/``): the
  checkpoint on the test split through :func:`marsdust.detect.detect_map` with the default
  (fast) engine and with ``engine="plain"`` (the model's own eager ``model(images)`` forward),
  and their difference. Stock torchvision is untrained here (nobody trains a ResNet-50 Mask R-CNN
  at native resolution on a laptop), so its mAP50 is not scored.

The maps: the ``full`` preset's weather (seed 0), the first N sols from MY25 Ls 185° (the dusty
season: the MY25 global event starts there), written once to ``bench_out/detect_maps/``.

Prints a table and writes ``bench_out/detect.json`` and ``bench_out/detect.md`` (date, machine,
CPU model, cores, torch threads, load average).

Run::

    .venv/bin/python benchmarks/bench_detect.py                      # random-init model, 12 maps, 3 stock maps
    .venv/bin/python benchmarks/bench_detect.py --checkpoint runs/bench/checkpoints/best.ckpt \\
        --data bench_out/data/bench                                  # + mAP50 fast vs plain
    .venv/bin/python benchmarks/bench_detect.py --stock-maps 0 --engine torch   # ours only, another engine
    .venv/bin/python benchmarks/bench_detect.py --model unet --also-engines ''  # the U-Net beside stock Mask R-CNN
    python benchmarks/bench_detect.py --device cuda --batch-size 8 --maps 32     # on a GPU (see gpu_check.sh)

With ``--device cuda`` every side runs on the GPU (ours with the eager PyTorch engine, in batches of
``--batch-size`` maps, several reader and writer threads) and the report adds peak GPU memory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FULL_PRESET_MAPS = 2533
"""Maps of the ``full`` preset (seed 0): the projection's target."""


# ---------------------------------------------------------------------------------------------
# the maps
# ---------------------------------------------------------------------------------------------
def native_maps(folder: Path, n_maps: int, mars_year: int = 25, from_ls_deg: float = 185.0) -> Path:
    """Write (once) ``n_maps`` native 0.1° maps of the ``full`` preset from ``mars_year`` Ls ``from_ls_deg``.

    Returns the archive folder (``folder/archive``, one subphase folder with ``list_ls.txt``).
    """
    from marsdust.synth.build import Simulation
    from marsdust.synth.presets import full_config
    from marsdust.synth.writer import write_list_ls, write_png

    archive = folder / "archive"
    done = folder / f"maps_{n_maps}.done"
    if done.is_file():
        return archive
    simulation = Simulation(full_config(), 0, out_dir=folder)
    maps = simulation.maps
    chosen = maps[(maps["mars_year"] == mars_year) & (maps["ls"] >= from_ls_deg)].head(n_maps)
    if len(chosen) < n_maps:
        raise ValueError(f"the full preset has only {len(chosen)} maps from MY{mars_year} Ls {from_ls_deg}")
    for row in chosen.to_dict("records"):
        print(f"  synthesizing {row['map_id']} (Ls {row['ls']:.1f})", flush=True)
        write_png(simulation.draw(row).view.rgb, Path(row["path"]))
    for subphase, rows in chosen.groupby("subphase", sort=False):
        write_list_ls(rows, archive / subphase / "list_ls.txt")
    done.write_text(json.dumps(chosen["map_id"].tolist()) + "\n")
    return archive


def map_paths(archive: Path) -> list[str]:
    """The benchmark maps (sorted)."""
    return sorted(str(p) for p in archive.glob("*/*.png"))


# ---------------------------------------------------------------------------------------------
# the children (one per side)
# ---------------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """Peak resident memory of this process, MB (Linux ``ru_maxrss`` is in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_ours(options: dict) -> dict:
    """Time :func:`marsdust.detect.detect_archive` on the maps (this process: one side only)."""
    import pandas as pd
    import torch

    from marsdust.detect import DetectExecution, DetectOutputs, DetectSettings, detect_archive, resolve_engine
    from marsdust.models import load_model

    torch.set_num_threads(options["threads"])
    out_dir = Path(options["out_dir"])
    device = options["device"]
    t0 = time.perf_counter()
    detect_archive(options["checkpoint"], options["archive"], DetectOutputs(out_dir, overwrite=True),
                   settings=DetectSettings(options["score_threshold"], engine=options["engine"]),
                   execution=DetectExecution(device, options["batch_size"], threads=options["threads"],
                                             progress=False))
    wall = time.perf_counter() - t0
    maps = pd.read_csv(out_dir / "maps.csv")
    seconds = maps["seconds"].to_numpy(float)
    written = sorted(p.stat().st_mtime for p in (out_dir / "parts").glob("*.json") if p.name != "settings.json")
    steady = float(np.median(np.diff(written))) if len(written) > 2 else wall / max(len(maps), 1)
    model = load_model(options["checkpoint"])
    return {
        "engine": resolve_engine(model, device, options["engine"]),
        "device": device,
        "batch_size": options["batch_size"],
        "maps": int(len(maps)),
        "median_s_per_map": float(np.median(seconds)),
        "p90_s_per_map": float(np.percentile(seconds, 90)),
        "steady_s_per_map": steady,
        "wall_s": wall,
        "wall_s_per_map": wall / len(maps),
        "maps_per_s": len(maps) / wall,
        "projected_full_preset_min": (steady * FULL_PRESET_MAPS + (wall - steady * len(maps))) / 60.0,
        "detections_per_map": float(maps["n_detections"].mean()),
        "score_threshold": options["score_threshold"],
        "peak_rss_mb": peak_rss_mb(),
        **gpu_memory(device),
    }


def gpu_memory(device: str) -> dict:
    """Peak GPU memory allocated by torch in this process, MB (empty on CPU)."""
    import torch

    if not device.startswith("cuda"):
        return {}
    return {"gpu": torch.cuda.get_device_name(device), "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20}


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so that a timer around it measures the work (no-op on CPU)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def child_ours_model(options: dict) -> dict:
    """Time the model alone (host-to-device copy, inference, outputs back on the host) on batches of maps.

    The maps are read and prepared once; then ``--model-repeats`` batches of ``--batch-size`` maps are
    timed after two warm-up batches. This is the number to hold against the paper's GPU figure
    (290-370 ms per map), which is for inference alone.
    """
    import torch

    from marsdust.detect import (DetectSettings, onnx_backbone_for, prepare_map, resolve_engine, run_model,
                                 working_image)
    from marsdust.models import load_model

    torch.set_num_threads(options["threads"])
    device, batch_size = options["device"], options["batch_size"]
    model = load_model(options["checkpoint"]).to(device).eval()
    engine = resolve_engine(model, device, options["engine"])
    settings = DetectSettings(score_threshold=options["score_threshold"], engine=engine)
    paths = [options["paths"][k % len(options["paths"])] for k in range(batch_size)]
    tensors = []
    for path in paths:
        image, native_grid = working_image(path, float(model.config.map_res_deg))
        tensors += prepare_map(image, native_grid, settings, map_id=Path(path).stem, mars_year=25, ls=185.0).tensors
    backbone = onnx_backbone_for(model) if engine == "onnx" else None

    def batch() -> list[dict]:
        return run_model(model, tensors, device, options["score_threshold"], engine, backbone)

    for _ in range(2):
        batch()
    synchronize(device)
    seconds = []
    for _ in range(options["model_repeats"]):
        t0 = time.perf_counter()
        batch()
        synchronize(device)
        seconds.append(time.perf_counter() - t0)
    per_map_ms = np.array(seconds) / batch_size * 1000.0
    return {"engine": engine, "device": device, "batch_size": batch_size, "input_px": list(tensors[0].shape),
            "repeats": len(seconds), "median_ms_per_map": float(np.median(per_map_ms)),
            "min_ms_per_map": float(per_map_ms.min()), "peak_rss_mb": peak_rss_mb(), **gpu_memory(device)}


def child_stock(options: dict) -> dict:
    """Time stock torchvision ``maskrcnn_resnet50_fpn`` at native resolution (read + inference)."""
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    from marsdust.mdgm import read_map

    torch.set_num_threads(options["threads"])
    torch.manual_seed(0)
    device = options["device"]
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=1200, max_size=3600)
    model = model.to(device).eval()
    paths = options["paths"][: options["stock_maps"] + 1]
    seconds, detections = [], []
    for k, path in enumerate(paths):
        t0 = time.perf_counter()
        image = read_map(path)
        tensor = torch.from_numpy(np.ascontiguousarray(image.rgb)).permute(2, 0, 1).to(device)
        with torch.inference_mode():
            out = model([tensor])[0]
        synchronize(device)
        if k > 0:  # the first map warms up
            seconds.append(time.perf_counter() - t0)
            detections.append(int((out["scores"] >= options["score_threshold"]).sum()))
        print(f"  stock map {k}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return {"maps": len(seconds), "median_s_per_map": float(np.median(seconds)),
            "seconds": [round(s, 3) for s in seconds], "detections_per_map": float(np.mean(detections)),
            "peak_rss_mb": peak_rss_mb(), "input_px": "1200 x 3600 (min_size=1200, max_size=3600)",
            "device": device, "weights": "none (random init): timing only, mAP50 not scored", **gpu_memory(device)}


def child_map50(options: dict) -> dict:
    """mAP50 of the checkpoint on the test split: default (fast) engine vs ``plain`` eager forward."""
    import torch

    from marsdust.data import select_split
    from marsdust.detect import DetectSettings, detect_map, onnx_backbone_for, resolve_engine
    from marsdust.evaluate import evaluate_detections, evaluation_split, prediction_entry, run_config_of
    from marsdust.labels import map_targets
    from marsdust.mdgm import read_map
    from marsdust.models import load_model
    from marsdust.train import TrainConfig, load_tables

    torch.set_num_threads(options["threads"])
    checkpoint = Path(options["checkpoint"])
    device = options["device"]
    model = load_model(checkpoint).to(device).eval()
    config = TrainConfig.from_dict({"data": options["data"]}, source="bench_detect --data")
    index_df, storms_df = load_tables(config)
    split_df, split_source = evaluation_split(checkpoint, index_df, None, run_config_of(checkpoint), None)
    rows = select_split(index_df, split_df, "test")
    if options["map_maps"]:
        rows = rows.head(options["map_maps"])
    storms_by_map = dict(tuple(storms_df.groupby("map_id", sort=False)))
    empty = storms_df.iloc[0:0]
    fast_engine = resolve_engine(model, device, options["engine"])
    if fast_engine == "onnx":
        onnx_backbone_for(model)  # export once before timing
    results: dict[str, dict] = {}
    ground_truth, grids, map_ls = {}, {}, {}
    predictions = {fast_engine: {}, "plain": {}}
    seconds = {fast_engine: [], "plain": []}
    for row in rows.itertuples():
        image = read_map(row.path)
        for engine in (fast_engine, "plain"):
            t0 = time.perf_counter()
            result = detect_map(model, image, map_id=row.map_id, mars_year=int(row.mars_year), ls=float(row.ls),
                                settings=DetectSettings(0.05, engine=engine), device=device)
            seconds[engine].append(time.perf_counter() - t0)
            predictions[engine][row.map_id] = prediction_entry(result, result.grid)
        grid = result.grid
        target = map_targets(storms_by_map.get(row.map_id, empty), grid, "fixed")
        ground_truth[row.map_id] = {k: target[k] for k in ("boxes", "masks", "confidence", "area_km2")}
        grids[row.map_id], map_ls[row.map_id] = grid, float(row.ls)
    agreement = _agreement(predictions[fast_engine], predictions["plain"])
    for engine in (fast_engine, "plain"):
        metrics = evaluate_detections(ground_truth, predictions[engine], grids, map_ls=map_ls, segm=False)
        results[engine] = {"map50": float(metrics["map50"]), "median_s_per_map": float(np.median(seconds[engine]))}
    return {"maps": int(len(rows)), "split": f"test ({split_source})", "fast_engine": fast_engine,
            "fast": results[fast_engine], "plain": results["plain"],
            "map50_fast_minus_plain": results[fast_engine]["map50"] - results["plain"]["map50"], **agreement}


def _agreement(fast: dict, plain: dict) -> dict:
    """How closely two engines' detections agree (score >= 0.05): counts, worst score and box differences."""
    n_fast = sum(len(p["scores"]) for p in fast.values())
    n_plain = sum(len(p["scores"]) for p in plain.values())
    same_count = [m for m in plain if len(fast[m]["scores"]) == len(plain[m]["scores"])]
    score_diff = max((float(np.abs(np.sort(fast[m]["scores"]) - np.sort(plain[m]["scores"])).max())
                      for m in same_count if len(plain[m]["scores"])), default=0.0)
    box_diff = max((float(np.abs(fast[m]["boxes"] - plain[m]["boxes"]).max())
                    for m in same_count if len(plain[m]["scores"])), default=0.0)
    return {"detections_fast": n_fast, "detections_plain": n_plain,
            "maps_with_same_detection_count": f"{len(same_count)} of {len(plain)}",
            "max_score_difference": score_diff, "max_box_difference_px": box_diff}


CHILDREN = {"ours": child_ours, "ours_model": child_ours_model, "stock": child_stock, "map50": child_map50}


def run_child(kind: str, options: dict) -> dict:
    """Run one side in a fresh Python process and return its JSON result (with load averages)."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-detect-") as folder:
        result_path = Path(folder) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--child-options",
                   json.dumps(options), "--child-result", str(result_path)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
        subprocess.run(command, check=True, env=env)
        result = json.loads(result_path.read_text())
    result["load_average_before"] = [round(v, 2) for v in load_before]
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    return result


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine(threads: int, device: str = "cpu") -> dict:
    """What the benchmark ran on."""
    import torch

    info = {"platform": platform.platform(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": threads, "python": platform.python_version(),
            "device": device, "gpu": torch.cuda.get_device_name(device) if device.startswith("cuda") else None}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                            check=True, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["git_commit"] = None
    return info


def markdown(report: dict) -> str:
    """The report as a Markdown table."""
    ours, stock = report["ours"], report.get("stock")
    gpu = report["machine"].get("gpu")
    lines = [f"# detect benchmark, {report['date']}", "",
             f"Device: {gpu or 'cpu'}, batch size {ours.get('batch_size', 1)}. "
             f"Machine: {report['machine']['cpu_model']}, {report['machine']['cpu_count']} cores, "
             f"{report['machine']['torch_threads']} torch threads, torch {report['machine']['torch']}, "
             f"onnxruntime {report['machine']['onnxruntime']}, commit {report['machine']['git_commit']}.",
             f"Maps: {ours['maps']} native 1200 x 3600 (full preset, MY25 from Ls 185). Model: {report['model']}. "
             f"Command: `{report['command']}`", "",
             "| | ours (%s engine) | stock maskrcnn_resnet50_fpn |" % ours["engine"], "|---|---|---|"]

    def cell(side, key, fmt="{:.2f}"):
        if side is None or side.get(key) is None:
            return "—"
        return fmt.format(side[key])

    lines += [
        f"| median s / map (ours: maps.csv latency; stock: read + infer) | {cell(ours, 'median_s_per_map')} | "
        f"{cell(stock, 'median_s_per_map')} |",
        f"| p90 s / map | {cell(ours, 'p90_s_per_map')} | — |",
        f"| steady-state s / map (wall) | {cell(ours, 'steady_s_per_map')} | — |",
        f"| maps / s | {cell(ours, 'maps_per_s')} | — |",
        f"| projected full preset (2,533 maps), min | {cell(ours, 'projected_full_preset_min', '{:.1f}')} | — |",
        f"| model alone (copy in, infer, copy out), median ms / map | "
        f"{cell(report.get('ours_model'), 'median_ms_per_map', '{:.1f}')} | — |",
        f"| peak RSS, MB | {cell(ours, 'peak_rss_mb', '{:.0f}')} | {cell(stock, 'peak_rss_mb', '{:.0f}')} |",
        f"| peak GPU memory, MB | {cell(ours, 'peak_gpu_mb', '{:.0f}')} | {cell(stock, 'peak_gpu_mb', '{:.0f}')} |",
        f"| detections / map (score >= {ours['score_threshold']}) | {cell(ours, 'detections_per_map', '{:.1f}')} | "
        f"{cell(stock, 'detections_per_map', '{:.1f}')} |",
        f"| load average before → after | {ours['load_average_before']} → {ours['load_average_after']} | "
        f"{stock['load_average_before'] if stock else '—'} → {stock['load_average_after'] if stock else '—'} |",
    ]
    for engine, other in report.get("other_engines", {}).items():
        lines += [f"| ours with engine `{engine}`: steady s / map, median s / map, peak RSS MB, detections / map | "
                  f"{other['steady_s_per_map']:.2f}, {other['median_s_per_map']:.2f}, {other['peak_rss_mb']:.0f}, "
                  f"{other['detections_per_map']:.1f} (load {other['load_average_before'][0]:.1f}) | — |"]
    if report.get("speedup_vs_stock") is not None:
        lines += ["", f"**Speed-up vs stock: {report['speedup_vs_stock']:.1f}x** (stock median s per map / ours "
                      f"steady-state wall s per map); per-map latency ratio {report['speedup_vs_stock_latency']:.1f}x "
                      "(stock / ours median of maps.csv seconds)."]
    m = report.get("map50")
    if m:
        lines += ["", f"mAP50 on {m['maps']} {m['split']} maps: {m['fast_engine']} engine {m['fast']['map50']:.4f}, "
                      f"plain eager forward {m['plain']['map50']:.4f}, difference {m['map50_fast_minus_plain']:+.4f}; "
                      "stock: untrained network, not scored.",
                  "", f"Detections (score >= 0.05): {m['detections_fast']} fast, {m['detections_plain']} plain; same count on "
                      f"{m['maps_with_same_detection_count']} maps; max score difference {m['max_score_difference']:.2e}, "
                      f"max box difference {m['max_box_difference_px']:.2e} px."]
    else:
        lines += ["", "mAP50: not measured (needs --checkpoint and --data); stock is an untrained network."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--maps", type=int, default=12, help="Native maps for ours (default 12).")
    parser.add_argument("--stock-maps", type=int, default=3, help="Timed stock maps after one warm-up (0: skip).")
    parser.add_argument("--checkpoint", help="A trained checkpoint (default: random-init default model of --model).")
    parser.add_argument("--model", default="dustrcnn",
                        help="Registered detector timed without --checkpoint (default dustrcnn; e.g. unet, unet_cbam).")
    parser.add_argument("--data", help="Folder with archive/ + mdad/ for mAP50 (with --checkpoint).")
    parser.add_argument("--map-maps", type=int, default=0, help="Score only the first N test maps (0: all).")
    parser.add_argument("--engine", default=None, help="detect engine for ours (auto, onnx, torch, plain).")
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="Score threshold (default 0.5 trained; 0.6 random init, whose scores sit near 0.5).")
    parser.add_argument("--also-engines", default="torch",
                        help="Comma-separated engines also timed on the same maps for comparison ('' : none).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N) for ours and stock (default cpu).")
    parser.add_argument("--batch-size", type=int, default=None, help="Maps per model call (default 8 on cuda, 1 on cpu).")
    parser.add_argument("--model-repeats", type=int, default=None,
                        help="Timed batches for the model-only figure (default 20 on cuda, 3 on cpu; 0: skip).")
    parser.add_argument("--out", default=str(ROOT / "bench_out"), help="Output folder (detect.json, detect.md).")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--child-options", help=argparse.SUPPRESS)
    parser.add_argument("--child-result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        import logging

        logging.basicConfig(level=logging.WARNING)
        result = CHILDREN[args.child](json.loads(args.child_options))
        Path(args.child_result).write_text(json.dumps(result))
        return result

    on_gpu = args.device.startswith("cuda")
    batch_size = args.batch_size or (8 if on_gpu else 1)
    model_repeats = args.model_repeats if args.model_repeats is not None else (20 if on_gpu else 3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    archive = native_maps(out / "detect_maps", args.maps)
    paths = map_paths(archive)
    with tempfile.TemporaryDirectory(prefix="bench-detect-") as folder:
        checkpoint = args.checkpoint
        model_note = f"checkpoint {checkpoint}"
        if checkpoint is None:
            import torch

            from marsdust.models import build_model, save_checkpoint

            torch.manual_seed(0)
            checkpoint = str(Path(folder) / f"random_{args.model}.ckpt")
            save_checkpoint(build_model(args.model, backbone_weights=None), checkpoint)
            model_note = f"{args.model}, default config, random init (seed 0)"
        threshold = args.score_threshold if args.score_threshold is not None else (0.5 if args.checkpoint else 0.6)
        options = {"checkpoint": checkpoint, "archive": str(archive), "out_dir": str(out / "detect_run"),
                   "threads": args.threads, "engine": args.engine, "score_threshold": threshold, "paths": paths,
                   "stock_maps": args.stock_maps, "data": args.data, "map_maps": args.map_maps,
                   "device": args.device, "batch_size": batch_size, "model_repeats": model_repeats}
        print(f"ours: detect_archive on {len(paths)} maps ...", flush=True)
        report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "command": " ".join([Path(sys.executable).name, "benchmarks/bench_detect.py"] + sys.argv[1:]),
                  "machine": machine(args.threads, args.device), "model": model_note}
        report["ours"] = run_child("ours", options)
        report["ours_model"] = None
        if model_repeats > 0:
            print(f"ours, model alone: {model_repeats} batches of {batch_size} maps on {args.device} ...", flush=True)
            report["ours_model"] = run_child("ours_model", options)
        report["other_engines"] = {}
        for engine in [e.strip() for e in args.also_engines.split(",") if e.strip()]:
            print(f"ours with engine {engine} ...", flush=True)
            report["other_engines"][engine] = run_child("ours", dict(options, engine=engine,
                                                                     out_dir=str(out / f"detect_run_{engine}")))
        report["stock"] = None
        if args.stock_maps > 0:
            print(f"stock: maskrcnn_resnet50_fpn at native resolution on {args.stock_maps} + 1 maps ...", flush=True)
            report["stock"] = run_child("stock", options)
        stock = report["stock"]
        # throughput: ours overlaps reading/writing with inference (steady-state wall time per map);
        # latency: ours per-map seconds from maps.csv (decode + inference share + write); stock: read + inference
        report["speedup_vs_stock"] = stock["median_s_per_map"] / report["ours"]["steady_s_per_map"] if stock else None
        report["speedup_vs_stock_latency"] = (stock["median_s_per_map"] / report["ours"]["median_s_per_map"]
                                              if stock else None)
        report["map50"] = None
        if args.checkpoint and args.data:
            print("mAP50: fast engine vs plain forward on the test split ...", flush=True)
            report["map50"] = run_child("map50", options)
    text = markdown(report)
    print(text)
    from marsdust.fileio import write_text_atomic

    write_text_atomic(out / "detect.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / "detect.md", text)
    return report


if __name__ == "__main__":
    main()
