"""Benchmark: how much a trained detector loses when the test maps' appearance shifts (in the spirit of ImageNet-C).

Real MOC and MARCI maps will not look like the synthetic Mars the detectors are trained on. Each
checkpoint is scored on the held-out test maps of the ``bench`` preset (strategy 1, the temporal
split: MY27 Ls180° – MY28 Ls121°, recomputed with seed 0) once clean and once under each
appearance shift of :func:`marsdust.shift.standard_conditions` (colour balance, gamma, contrast,
blur, noise, JPEG, swath brightness steps), applied to every map as read — native grid, observed
pixels only — before ``marsdust.detect.detect_map``. One more condition, ``planet_seed1``, scores
the same test period of a planet synthesized with another seed (``marsdust synth DIR --preset
bench --seed 1``, written once, about 30 s) against its own catalogue.

Scoring is ``marsdust.evaluate.evaluate_checkpoint`` (``transform_image=``) into
``OUT/<checkpoint>/<condition>/``. Per checkpoint and condition the table gives box mAP50 and
mAP75 in the label mode of the evaluation, mAP50 / mAP75 on the paper's 12° boxes, mask mAP50,
and each one's change from the clean maps (percentage points).

Run::

    .venv/bin/python benchmarks/bench_shift.py --checkpoint robust=CKPT --label-mode outline
    .venv/bin/python benchmarks/bench_shift.py --checkpoint a=A.ckpt --checkpoint b=B.ckpt --maps 4  # smoke

Writes ``OUT/shift.md`` and ``OUT/shift.json`` (default ``bench_out/shift``).
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

from marsdust.fileio import write_text_atomic

CLEAN = "none"
PLANET_SEED = "planet_seed1"
METRICS = (("box_map50", "box mAP50"), ("box_map75", "box mAP75"), ("paper_map50", "12° mAP50"),
           ("paper_map75", "12° mAP75"), ("mask_map50", "mask mAP50"))


def parse_checkpoints(values: list[str]) -> dict[str, Path]:
    """``["NAME=PATH", ...]`` -> ``{NAME: PATH}`` (a bare ``PATH`` is named after its file stem)."""
    checkpoints: dict[str, Path] = {}
    for value in values:
        name, _, path = value.rpartition("=") if "=" in value else ("", "", value)
        name = name or Path(path).stem
        if name in checkpoints:
            raise SystemExit(f"--checkpoint: the name {name!r} is given twice")
        if not Path(path).is_file():
            raise SystemExit(f"--checkpoint {value}: no such file")
        checkpoints[name] = Path(path)
    return checkpoints


def ensure_bench_data(data: Path, seed: int) -> Path:
    """``data`` holding the ``bench`` preset; synthesized with ``seed`` if its archive or catalogue is missing."""
    if not (data / "archive").is_dir() or not (data / "mdad").is_dir():
        from marsdust.synth import synthesize

        print(f"synthesizing the bench preset (seed {seed}) into {data} ...", flush=True)
        synthesize(data, "bench", seed=seed, progress=False)
    return data


def write_test_split(data: Path, path: Path, n_maps: int | None) -> tuple[Path, int]:
    """The temporal (strategy 1) split of ``data`` with seed 0, cut to its first ``n_maps`` test maps.

    Returns the manifest written to ``path`` and its number of test maps.
    """
    from marsdust.data import make_split, save_split
    from marsdust.mdgm import index_archive

    split_df = make_split(index_archive(data / "archive"), "temporal", seed=0)
    test_rows = split_df.index[split_df["split"] == "test"]
    if n_maps is not None:
        split_df.loc[test_rows[n_maps:], "split"] = "unused"
    save_split(split_df, path)
    return path, int((split_df["split"] == "test").sum())


def score(checkpoint: Path, data: Path, split_file: Path, out_dir: Path, transform, label_mode: str | None,
          device: str) -> dict:
    """One evaluation through :func:`marsdust.evaluate.evaluate_checkpoint`; returns the table's metrics."""
    from marsdust.evaluate import EvaluateOptions, evaluate_checkpoint

    metrics = evaluate_checkpoint(checkpoint, out_dir, EvaluateOptions(
        data=str(data), split_file=str(split_file), label_mode=label_mode, n_figures=0, n_timed=0, progress=False,
        device=device, transform_image=transform))
    segm = metrics.get("segm") or {}
    return {"label_mode": metrics["label_mode"], "n_maps": metrics["n_maps"], "n_gt": metrics.get("n_gt"),
            "working_res_deg": metrics["working_res_deg"],
            "box_map50": metrics["map50"], "box_map75": metrics["map75"],
            "paper_map50": metrics["paper_boxes"]["map50"], "paper_map75": metrics["paper_boxes"]["map75"],
            "mask_map50": segm.get("map50")}


def add_deltas(rows: list[dict]) -> list[dict]:
    """Add each row's change from its checkpoint's clean row.

    ``delta_<metric>`` = condition − clean, a fraction (negative: a loss).
    """
    clean = {r["checkpoint"]: r for r in rows if r["condition"] == CLEAN}
    for row in rows:
        base = clean.get(row["checkpoint"])
        for key, _ in METRICS:
            ok = base is not None and row[key] is not None and base[key] is not None
            row[f"delta_{key}"] = row[key] - base[key] if ok else None
    return rows


def run_shift_benchmark(checkpoints: dict[str, Path], data: Path, seed_data: Path, out: Path, *,
                        n_maps: int | None = None, conditions: list[str] | None = None,
                        label_mode: str | None = None, device: str = "cpu") -> list[dict]:
    """Score every checkpoint under every condition; returns one row per (checkpoint, condition).

    Parameters
    ----------
    checkpoints : dict
        Name -> checkpoint path.
    data, seed_data : path
        The ``bench`` preset (seed 0, the checkpoints' training data) and a second planet
        (synthesized with seed 1 if missing) for ``planet_seed1``.
    out : path
        Evaluations land in ``OUT/<name>/<condition>/``, split manifests in ``OUT/splits/``.
    n_maps : int, optional
        Score only the first ``n_maps`` test maps (smoke runs).
    conditions : list of str, optional
        Subset of ``none``, the :func:`marsdust.shift.standard_conditions` names and ``planet_seed1``
        (default: all). ``none`` is always scored: the changes are measured from it.
    label_mode : str, optional
        Ground-truth shape for every checkpoint (default: each run's own, else ``fixed``).
    device : str
    """
    from marsdust.shift import standard_conditions

    shifts = standard_conditions()
    known = [CLEAN, *shifts, PLANET_SEED]
    wanted = [CLEAN] + [c for c in (conditions or known) if c != CLEAN]
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise ValueError(f"unknown condition(s) {unknown}; known: {', '.join(known)}")
    split, n_test = write_test_split(data, out / "splits" / "bench_seed0.csv", n_maps)
    if PLANET_SEED in wanted:
        seed_split, _ = write_test_split(ensure_bench_data(seed_data, 1), out / "splits" / "bench_seed1.csv", n_maps)
    print(f"{len(checkpoints)} checkpoint(s) x {len(wanted)} conditions on {n_test} test maps", flush=True)
    rows, t0 = [], time.perf_counter()
    for name, checkpoint in checkpoints.items():
        for condition in wanted:
            transform = shifts[condition][1] if condition in shifts else None
            where, manifest = (seed_data, seed_split) if condition == PLANET_SEED else (data, split)
            row = {"checkpoint": name, "condition": condition,
                   **score(checkpoint, where, manifest, out / name / condition, transform, label_mode, device)}
            rows.append(row)
            print(f"[{time.perf_counter() - t0:6.0f} s] {name} / {condition}: "
                  + ", ".join(f"{label} {pct(row[key])}" for key, label in METRICS), flush=True)
    return add_deltas(rows)


def pct(value) -> str:
    """A fraction as a percentage with one decimal (``—`` for missing)."""
    return "—" if value is None or value != value else f"{100 * value:.1f}"


def signed_pct(value) -> str:
    """A change of a fraction in percentage points with its sign (``—`` for missing)."""
    return "—" if value is None or value != value else f"{100 * value:+.1f}"


def condition_descriptions() -> dict[str, str]:
    """Condition name -> what it does, for the report."""
    from marsdust.shift import standard_conditions

    return {CLEAN: "clean test maps", **{k: v[0] for k, v in standard_conditions().items()},
            PLANET_SEED: "another planet: bench preset synthesized with seed 1, its own catalogue"}


def markdown(rows: list[dict]) -> str:
    """The results as a Markdown table: percent, change from clean in percentage points in brackets."""
    descriptions = condition_descriptions()
    lines = ["| checkpoint | condition | what | " + " | ".join(label for _, label in METRICS) + " |",
             "|---|---|---|" + "---|" * len(METRICS)]
    for r in rows:
        cells = [pct(r[key]) if r["condition"] == CLEAN else f"{pct(r[key])} ({signed_pct(r[f'delta_{key}'])})"
                 for key, _ in METRICS]
        lines.append(f"| {r['checkpoint']} | {r['condition']} | {descriptions[r['condition']]} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def git_commit() -> str | None:
    """The short commit hash of the working tree (None outside git)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def report_header(rows: list[dict], data: Path, seed_data: Path, commit: str | None, load_start: float,
                  seconds: float) -> str:
    """The report's title and run conditions (date, commit the run started at, load, data, resolutions)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    resolutions = sorted({(r["checkpoint"], r["working_res_deg"], r["label_mode"]) for r in rows})
    models = "; ".join(f"{name}: working grid {res}°/px, label mode {mode}" for name, res, mode in resolutions)
    n_maps = rows[0]["n_maps"] if rows else 0
    return (f"# Appearance shift on the synthetic bench preset\n\n{stamp}, commit {commit}; "
            f"{os.cpu_count()} CPUs, load average {load_start:.1f} at the start, {load:.1f} at the end; "
            f"{seconds / 60:.1f} min. {n_maps} test maps (strategy 1, MY27 Ls180° – MY28 Ls121°) of {data} "
            f"(planet_seed1: {seed_data}). Shifts act on the maps as read (native grid, observed pixels); "
            f"{models}. Percent; in brackets the change from clean, percentage points.\n\n")


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", action="append", required=True, metavar="NAME=PATH",
                        help="a detector to score (repeatable)")
    parser.add_argument("--data", default="bench_out/data/bench", help="bench preset, seed 0 (synthesized if missing)")
    parser.add_argument("--seed-data", default="bench_out/data/bench_seed1",
                        help="bench preset with planet seed 1 (synthesized if missing)")
    parser.add_argument("--out", default="bench_out/shift")
    parser.add_argument("--maps", type=int, default=None, help="score only the first N test maps (smoke run)")
    parser.add_argument("--conditions", default=None, help="comma-separated subset (default: all)")
    parser.add_argument("--label-mode", default=None, choices=["fixed", "area", "outline"],
                        help="ground-truth shape (default: each run's config.yaml, else fixed)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    checkpoints = parse_checkpoints(args.checkpoint)
    data, out = ensure_bench_data(Path(args.data), 0), Path(args.out)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    commit, t0 = git_commit(), time.perf_counter()
    rows = run_shift_benchmark(checkpoints, data, Path(args.seed_data), out, n_maps=args.maps,
                               conditions=args.conditions.split(",") if args.conditions else None,
                               label_mode=args.label_mode, device=args.device)
    header = report_header(rows, data, Path(args.seed_data), commit, load_start, time.perf_counter() - t0)
    text = header + markdown(rows)
    write_text_atomic(out / "shift.md", text)
    write_text_atomic(out / "shift.json", json.dumps({"report": header.strip(), "checkpoints": {
        k: str(v) for k, v in checkpoints.items()}, "conditions": condition_descriptions(), "rows": rows},
        indent=2, default=str) + "\n")
    print(text)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
