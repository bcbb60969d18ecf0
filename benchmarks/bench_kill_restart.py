"""Kill-restart check of ``marsdust detect``: SIGKILL at random moments, restart, compare with an uninterrupted run.

Builds a small archive (hand-drawn storms on a 0.8° MOC grid) and a tiny deterministic detector
(its heads always say "storm", so every map gives boxes; both from ``tests/test_detect.py``), runs ``marsdust detect`` once without
interruption, then for each trial starts the same command in a fresh folder, kills it with SIGKILL
after a random delay, and restarts it (killing it again, at random, up to ``--kills-per-trial``
times) until it finishes. Each finished ``detections.csv`` and ``maps.csv`` is compared row by row
with the uninterrupted run's: rows lost, rows duplicated, rows changed.

    .venv/bin/python benchmarks/bench_kill_restart.py --trials 6 --kills-per-trial 3

Writes ``bench_out/kill_restart.md`` (and prints it).
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from marsdust.grid import MapGrid

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_detect import confident_checkpoint, write_archive  # noqa: E402  (the kill test's own archive and model)


def build_archive(root: Path, n_maps: int) -> Path:
    """``root/R18/r18_NNN.png`` on a 0.8° MOC grid, one bright disc each, and their ``list_ls.txt``."""
    maps = {f"r18_{sol:03d}": (100.0 + 0.5 * sol, [(25.0 * sol % 360.0 - 180.0, 10.0 - sol % 20, 6.0 + sol % 3)])
            for sol in range(1, n_maps + 1)}
    return write_archive(root, maps, grid=MapGrid.moc(0.8))


def detect_command(checkpoint: Path, archive: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "marsdust", "detect", str(checkpoint), str(archive), "-o", str(out), "--quiet",
            "--threads", "1"]


def run_to_completion(command: list[str], rng: random.Random, kills: int, max_delay_s: float) -> int:
    """Start ``command``; kill it with SIGKILL after a random delay up to ``kills`` times; then let it finish."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done_kills = 0
    while True:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if done_kills < kills:
            try:
                process.wait(timeout=rng.uniform(0.5, max_delay_s))
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
                done_kills += 1
                continue
        _, stderr = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"detect failed after {done_kills} kill(s): {stderr.decode(errors='replace')[-500:]}")
        return done_kills


def compare_rows(reference: pd.DataFrame, result: pd.DataFrame, key: list[str]) -> dict[str, int]:
    """Rows of ``reference`` missing from ``result``, rows of ``result`` repeated, rows whose values differ."""
    counts_ref = reference.groupby(key).size()
    counts_res = result.groupby(key).size()
    lost = int((counts_ref - counts_res.reindex(counts_ref.index, fill_value=0)).clip(lower=0).sum())
    duplicated = int((counts_res - 1).clip(lower=0).sum())
    merged = reference.drop_duplicates(key).merge(result.drop_duplicates(key), on=key, suffixes=("", "_r"))
    values = [c for c in reference.columns if c not in key and c != "seconds"]
    changed = 0
    for column in values:
        a, b = merged[column], merged[f"{column}_r"]
        same = (a == b) | (a.isna() & b.isna())
        if pd.api.types.is_float_dtype(a):
            same |= np.isclose(a.astype(float), b.astype(float), rtol=0, atol=1e-9)
        changed += int((~same).sum())
    return {"lost": lost, "duplicated": duplicated, "changed": changed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out/kill_restart"))
    parser.add_argument("--maps", type=int, default=12)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--kills-per-trial", type=int, default=3)
    parser.add_argument("--max-delay", type=float, default=12.0, help="Longest wait before a kill, seconds.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    out = args.out
    archive = build_archive(out / "archive", args.maps)
    checkpoint = confident_checkpoint(out / "model.ckpt")
    reference_dir = out / "reference"
    subprocess.run(detect_command(checkpoint, archive, reference_dir) + ["--overwrite"], check=True,
                   env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL)
    reference = pd.read_csv(reference_dir / "detections.csv")
    reference_maps = pd.read_csv(reference_dir / "maps.csv")
    totals = {"kills": 0, "lost": 0, "duplicated": 0, "changed": 0}
    started = time.perf_counter()
    for trial in range(args.trials):
        trial_dir = out / f"trial{trial}"
        subprocess.run(["rm", "-rf", str(trial_dir)], check=True)
        totals["kills"] += run_to_completion(detect_command(checkpoint, archive, trial_dir), rng,
                                             args.kills_per_trial, args.max_delay)
        for ref, name, key in ((reference, "detections.csv", ["map_id", "x0", "y0", "x1", "y1"]),
                               (reference_maps, "maps.csv", ["map_id"])):
            for what, n in compare_rows(ref, pd.read_csv(trial_dir / name), key).items():
                totals[what] += n
        leftovers = [p for p in trial_dir.rglob("*") if ".tmp" in p.name]
        totals.setdefault("temporary files left", 0)
        totals["temporary files left"] += len(leftovers)
    load = os.getloadavg()[0]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    report = "\n".join([
        f"# Kill-restart check of marsdust detect ({datetime.date.today()}, commit {commit}, load average {load:.1f})",
        "",
        f"`{' '.join(sys.argv)}`: {args.maps} maps, {len(reference)} detections in the uninterrupted run, "
        f"{args.trials} trials of up to {args.kills_per_trial} SIGKILLs each at random moments "
        f"(0.5–{args.max_delay:g} s after each start), {time.perf_counter() - started:.0f} s.",
        "",
        "| kills survived | rows lost | rows duplicated | rows changed | temporary files left |",
        "|---|---|---|---|---|",
        f"| {totals['kills']} | {totals['lost']} | {totals['duplicated']} | {totals['changed']} | "
        f"{totals['temporary files left']} |",
        "",
        "Rows are those of detections.csv and maps.csv (maps.csv without its seconds column), compared with the "
        "uninterrupted run's.",
    ])
    (out.parent / "kill_restart.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
