"""Benchmark: detection quality per training recipe on the synthetic ``bench`` preset (time to quality).

Each *variant* is a named set of :class:`marsdust.train.TrainConfig` fields (a YAML file, default
``benchmarks/configs/quality.yaml``: ``common:`` fields shared by all, ``variants:`` one mapping
each). Every variant is trained on ``bench`` (strategy 1 unless it says otherwise), its best
checkpoint evaluated on the test maps with ``marsdust evaluate``, and one row written with:

* box mAP25/50/75 against the run's own label mode (``map25..75`` of ``metrics.json``);
* box mAP on **the paper's 12° boxes** (``paper_boxes`` of ``metrics.json``: each detection reduced
  to a 12° box at its outline centroid, against the catalogue's 12° boxes);
* mask mAP (against the run's label-mode masks: catalogue outlines for ``label_mode: outline``);
* the median detected / catalogued area ratio of matched storms;
* dust box mAP50/75 (``per_class``: the dust detections only, what a two-class detector is compared
  on) and, on the test maps with a cloud mask, the dust false alarms and those of them on clouds
  at the detector's stored score threshold, with the recall there (``dust_false_alarms_on_clouds``),
  and a second table of every variant's dust false alarms on clouds at the *first* variant's recall
  (from each evaluation's ladder of thresholds), so one class and two compare at the same recall;
* steps, training wall time, steps per second, device.

Variants run one after another, or ``--parallel N`` at a time (each in its own process: on a GPU
machine several small runs share the card). Finished variants (an ``eval/<name>/metrics.json``)
are not redone, so an interrupted sweep continues where it stopped.

Run::

    .venv/bin/python benchmarks/bench_quality.py                                  # every variant, CPU
    .venv/bin/python benchmarks/bench_quality.py --variants outline --max-steps 50  # smoke
    .venv/bin/python benchmarks/bench_quality.py --accelerator gpu --parallel 6     # a GPU machine

Writes ``OUT/quality.md`` and ``OUT/quality.json`` (default ``bench_out/quality``); with ``--results DIR`` also
``DIR/recipe_<YYYYMMDD>.md``, the dated record naming the commit, CPU and command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_detect import cpu_model  # noqa: E402  (one description of the CPU and commit for the results)
from bench_shift import git_commit  # noqa: E402

from marsdust.fileio import write_text_atomic  # noqa: E402
DEFAULT_VARIANTS = HERE / "configs" / "quality.yaml"


def load_variants(path: Path) -> tuple[dict, dict]:
    """``(common, variants)`` of a sweep YAML."""
    values = yaml.safe_load(Path(path).read_text()) or {}
    variants = values.get("variants") or {}
    if not isinstance(variants, dict) or not variants:
        raise SystemExit(f"{path}: expected a 'variants:' mapping of name -> training settings")
    return dict(values.get("common") or {}), {str(k): dict(v or {}) for k, v in variants.items()}


def run_variant(name: str, settings: dict, data: Path, out: Path) -> dict:
    """Train and evaluate one variant; returns its row (also ``OUT/eval/NAME/row.json``)."""
    from marsdust.evaluate import EvaluateOptions, evaluate_checkpoint
    from marsdust.train import TrainConfig, train

    run_dir, eval_dir = out / "runs" / name, out / "eval" / name
    config = TrainConfig.from_dict({**settings, "data": str(data), "progress": False}, source=f"variant {name}")
    resume = (run_dir / "checkpoints" / "last.ckpt").exists()
    summary = json.loads((run_dir / "done.json").read_text()) if (run_dir / "done.json").is_file() else None
    if summary is None:
        t0 = time.perf_counter()
        summary = train(config, run_dir, resume=resume)
        summary["wall_seconds"] = time.perf_counter() - t0
    device = "cuda" if config.accelerator == "gpu" else "cpu"
    metrics = evaluate_checkpoint(summary["best_checkpoint"], eval_dir,
                                  EvaluateOptions(n_figures=2, n_timed=0, progress=False, device=device))
    segm = metrics.get("segm") or {}
    row = {
        "variant": name, "model": config.model, "label_mode": config.label_mode, "strategy": config.strategy,
        "map_res_deg": config.map_res_deg, "steps": summary["global_step"], "train_seconds": summary["seconds"],
        "steps_per_second": summary["steps_per_second"], "device": device,
        **{f"box_{k}": metrics[k] for k in ("map25", "map50", "map75")},
        **{f"paper_{k}": metrics["paper_boxes"][k] for k in ("map25", "map50", "map75")},
        **{f"mask_{k}": segm.get(k) for k in ("map25", "map50", "map75")},
        "area_median_ratio": metrics["area_agreement"]["median_ratio"],
        "area_within_25pct": metrics["area_agreement"]["within_25pct"],
        "classes": ",".join(config.classes),
        **{f"dust_{k}": metrics["per_class"]["dust"][k] for k in ("map50", "map75")},
        "cloud_map50": (metrics["per_class"]["cloud"] or {}).get("map50"),
        **_false_alarms_on_clouds(metrics),
        "dust_false_alarms_on_clouds_by_threshold": metrics.get("dust_false_alarms_on_clouds_by_threshold"),
        "n_gt": metrics.get("n_gt"), **error_figures(eval_dir), "settings": settings,
    }
    (eval_dir / "row.json").write_text(json.dumps(row, indent=2, default=str) + "\n")
    return row


def error_figures(eval_dir: Path) -> dict:
    """Recall (all storms, and the faint ones: catalogue confidence 50 or 75) and false alarms by cause, at
    the error analysis's score threshold (``EVAL/error_analysis.json``)."""
    analysis = json.loads((eval_dir / "error_analysis.json").read_text())
    by_confidence = analysis["recall"]["by_confidence"]
    faint = [by_confidence.get(level) or {} for level in ("50", "75")]
    n_faint = sum(group.get("n_storms", 0) for group in faint)
    causes = analysis["false_alarms"].get("counts", analysis["false_alarms"])
    return {"recall": analysis["recall"]["all"]["recall"], "n_faint": n_faint,
            "recall_faint": sum(group.get("n_found", 0) for group in faint) / n_faint if n_faint else None,
            "false_alarms": {k: v for k, v in causes.items() if isinstance(v, int)}}
def _false_alarms_on_clouds(metrics: dict) -> dict:
    """The row's dust false alarms (all, on clouds) and recall at the stored threshold; None without cloud masks."""
    found = metrics.get("dust_false_alarms_on_clouds") or {}
    return {"score_threshold": found.get("score_threshold"), "recall_at_threshold": found.get("recall"),
            "dust_false_alarms": found.get("n_false_alarms"),
            "dust_false_alarms_on_clouds": found.get("n_false_alarms_on_clouds")}


def markdown(rows: list[dict]) -> str:
    """The results as a Markdown table (percent for AP, as the paper's Table 1)."""
    def pct(value):
        return "—" if value is None or value != value else f"{100 * value:.1f}"

    lines = ["| variant | label mode | res ° | steps | train min | steps/s | box mAP50 | box mAP75 | "
             "12° mAP50 | 12° mAP75 | mask mAP50 | area ratio (median) | area ±25 % | recall | recall faint (n) | "
             "false alarms: bright surface / cloud / all | classes | dust mAP50 | "
             "dust mAP75 | dust false alarms on clouds / all (recall, threshold) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r["area_median_ratio"]
        alarms = r.get("false_alarms") or {}
        lines.append(
            f"| {r['variant']} | {r['label_mode']} | {r['map_res_deg']} | {r['steps']} | {r['train_seconds'] / 60:.1f} "
            f"| {r['steps_per_second']:.2f} | {pct(r['box_map50'])} | {pct(r['box_map75'])} | {pct(r['paper_map50'])} "
            f"| {pct(r['paper_map75'])} | {pct(r['mask_map50'])} | {'—' if ratio != ratio else f'{ratio:.2f}'} "
            f"| {pct(r['area_within_25pct'])} | {pct(r.get('recall'))} | {pct(r.get('recall_faint'))} ({r.get('n_faint', '—')}) "
            f"| {alarms.get('bright_surface', '—')} / {alarms.get('cloud', '—')} / {sum(alarms.values()) if alarms else '—'} "
            f"| {r.get('classes', 'dust')} | {pct(r.get('dust_map50'))} "
            f"| {pct(r.get('dust_map75'))} | {_on_clouds_cell(r)} |")
    return "\n".join(lines) + "\n"


def _on_clouds_cell(row: dict) -> str:
    if row.get("dust_false_alarms_on_clouds") is None:
        return "—"
    return (f"{row['dust_false_alarms_on_clouds']} / {row['dust_false_alarms']} "
            f"({100 * row['recall_at_threshold']:.1f} %, {row['score_threshold']:.2f})")


def at_baseline_recall(rows: list[dict]) -> str:
    """Markdown: each row's dust false alarms on clouds at the first row's recall (its stored threshold), read
    from the rows' threshold ladders ("" when the first row has no cloud-mask figures)."""
    from marsdust.evaluate.clouds import on_clouds_at_recall

    if not rows or rows[0].get("recall_at_threshold") is None:
        return ""
    recall = rows[0]["recall_at_threshold"]
    lines = [f"\nDust false alarms on clouds at the recall of `{rows[0]['variant']}` ({100 * recall:.1f} %, IoU 0.5 "
             "against the run's labels), each detector at the highest score threshold (0.05 steps) that reaches it:\n",
             "| variant | threshold | recall | dust false alarms | of them on clouds |", "|---|---|---|---|---|"]
    for row in rows:
        ladder = row.get("dust_false_alarms_on_clouds_by_threshold")
        if not ladder:  # evaluated before the ladder was recorded: delete its row.json to evaluate it again
            lines.append(f"| {row['variant']} | — | not recorded | — | — |")
            continue
        entry = on_clouds_at_recall(ladder, recall)
        if entry is None:
            lines.append(f"| {row['variant']} | — | does not reach it | — | — |")
            continue
        lines.append(f"| {row['variant']} | {entry['score_threshold']:.2f} | {100 * entry['recall']:.1f} "
                     f"| {entry['n_false_alarms']} | {entry['n_false_alarms_on_clouds']} |")
    return "\n".join(lines) + "\n"


def _needs_cloud_masks(common: dict, variants: dict, names: list[str]) -> bool:
    from marsdust.cloudmask import parse_classes

    return any("cloud" in parse_classes({**common, **variants[n]}.get("classes", "dust")) for n in names)


def _child(args) -> None:
    common, variants = load_variants(Path(args.variants_file))
    settings = {**common, **variants[args.one]}
    if args.max_steps:
        settings["max_steps"] = args.max_steps
    if args.accelerator:
        settings["accelerator"] = args.accelerator
    run_variant(args.one, settings, Path(args.data), Path(args.out))


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants-file", default=str(DEFAULT_VARIANTS), help="sweep YAML (common + variants)")
    parser.add_argument("--variants", default=None, help="comma-separated names (default: all in the file)")
    parser.add_argument("--data", default="bench_out/data/bench", help="bench preset folder (synthesized if missing)")
    parser.add_argument("--out", default="bench_out/quality")
    parser.add_argument("--max-steps", type=int, default=None, help="override every variant's max_steps")
    parser.add_argument("--accelerator", default=None, help="Lightning accelerator for every variant (cpu, gpu)")
    parser.add_argument("--parallel", type=int, default=1, help="variants trained at the same time (own processes)")
    parser.add_argument("--results", default=None, metavar="DIR",
                        help="also write the table as DIR/recipe_<YYYYMMDD>.md (the machine and commit named)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        _child(args)
        return []

    common, variants = load_variants(Path(args.variants_file))
    names = [n for n in (args.variants.split(",") if args.variants else variants) if n]
    unknown = sorted(set(names) - set(variants))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; {args.variants_file} has {sorted(variants)}")
    data, out = Path(args.data), Path(args.out)
    missing_clouds = _needs_cloud_masks(common, variants, names) and not (data / "cloudmask").is_dir()
    if not (data / "archive").is_dir() or not (data / "mdad").is_dir() or missing_clouds:
        from marsdust.synth import synthesize

        # a synthesis from before cloud masks is written again: the same maps and catalog, plus cloudmask/
        print(f"synthesizing the bench preset into {data} ...", flush=True)
        synthesize(data, "bench", seed=0, overwrite=missing_clouds)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pending = [n for n in names if not (out / "eval" / n / "row.json").is_file()]
    running: list[tuple[str, subprocess.Popen]] = []
    base_cmd = [sys.executable, __file__, "--variants-file", args.variants_file, "--data", str(data), "--out", str(out)]
    if args.max_steps:
        base_cmd += ["--max-steps", str(args.max_steps)]
    if args.accelerator:
        base_cmd += ["--accelerator", args.accelerator]
    while pending or running:
        while pending and len(running) < max(1, args.parallel):
            name = pending.pop(0)
            log = open(out / f"{name}.log", "w")
            print(f"[{time.perf_counter() - t0:6.0f} s] start {name}", flush=True)
            running.append((name, subprocess.Popen(base_cmd + ["--one", name], stdout=log, stderr=subprocess.STDOUT)))
        time.sleep(2)
        for name, proc in list(running):
            if proc.poll() is not None:
                running.remove((name, proc))
                status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see {out / name}.log)"
                print(f"[{time.perf_counter() - t0:6.0f} s] {name} {status}", flush=True)
    rows = [json.loads((out / "eval" / n / "row.json").read_text()) for n in names
            if (out / "eval" / n / "row.json").is_file()]
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    command = " ".join(["benchmarks/bench_quality.py", *(argv if argv is not None else sys.argv[1:])])
    header = (f"# Detection quality per recipe on the synthetic bench preset\n\n{stamp}, commit {git_commit()}; "
              f"{cpu_model()}, {os.cpu_count()} CPUs, load average at the end {load:.1f}; parallel {args.parallel}; "
              "test split of each variant's strategy (strategy 1: MY27 Ls180 – MY28 Ls121).\n"
              f"Command: `{command}`\n\n")
    text = header + markdown(rows) + at_baseline_recall(rows)
    write_text_atomic(out / "quality.md", text)
    write_text_atomic(out / "quality.json", json.dumps({"date": stamp, "rows": rows}, indent=2, default=str) + "\n")
    if args.results:
        path = write_text_atomic(Path(args.results) / f"recipe_{stamp[:10].replace('-', '')}.md", text)
        print(f"wrote {path}", flush=True)
    print(text)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
