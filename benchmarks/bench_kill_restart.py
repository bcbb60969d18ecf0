"""Kill-restart check of ``marsdust detect``, ``train``, ``track``, ``climatology`` and ``synth``: SIGKILL at random
moments, restart, compare with an uninterrupted run.

``detect``: builds a small archive of bright discs on a 0.8° MOC grid (:mod:`marsdust.synth.discs`)
and a tiny deterministic detector (:func:`marsdust.models.always_storm_detector`: its heads always
say "storm", so every map gives boxes), runs ``marsdust detect`` once without interruption, then for
each trial starts the same command in a fresh folder, kills it with SIGKILL after a random delay,
and restarts it (killing it again, at random, up to ``--kills-per-trial`` times) until it finishes.
Each finished ``detections.csv`` and ``maps.csv`` is compared row by row with the uninterrupted
run's: rows lost, rows duplicated, rows changed.

``train``: the synthetic ``ci`` preset and a tiny detector (model preset ``small_cpu`` at
``--train-res-deg``, ``--train-steps`` steps, ``last.ckpt`` every ``--ckpt-every`` steps, so most
kills land between checkpoints). One uninterrupted ``marsdust train``, then per trial a fresh run
killed at random moments (at a random step, between checkpoints or in a validation) and restarted with
``--resume`` until it finishes. Its final weights (``last.ckpt``, and ``best.ckpt``) must equal the
uninterrupted run's bit for bit, and its ``metrics.csv`` must hold exactly the uninterrupted run's
rows: lost, duplicated and changed rows are counted.

``detect --workers 2``: the same as ``detect``, with two local worker processes (compared with an
uninterrupted ``--workers 2`` run).

``track``, ``climatology``, ``synth`` (commands without a resume: a killed run is simply started
again): the ``ci`` preset's ``truth/storms.csv`` is tracked (``tracked.csv`` + ``members.csv``) and
drawn (the climatology folder), and the ``ci`` preset is synthesized (with ``--overwrite``, as a
rerun after a kill must be). Each trial starts the command in a fresh folder, kills it after a
random delay within the uninterrupted run's duration, up to ``--kills-per-trial`` times, and lets
the last start finish. Every CSV of the result is compared row by row (by position) with the
uninterrupted run's, every other file byte for byte; files the uninterrupted run does not have
are counted as left behind, files it has and the trial lacks as missing.

    .venv/bin/python benchmarks/bench_kill_restart.py --trials 6 --kills-per-trial 3 --train-trials 3

Writes ``bench_out/kill_restart.md`` (and prints it).
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from marsdust.grid import MapGrid
from marsdust.models import always_storm_detector, read_training_state, save_checkpoint
from marsdust.synth import synthesize
from marsdust.synth.discs import write_disc_archive

CHILD_ENV = dict(os.environ, OMP_NUM_THREADS="1")


def build_archive(root: Path, n_maps: int) -> Path:
    """``root/R18/r18_NNN.png`` on a 0.8° MOC grid, one bright disc each, and their ``list_ls.txt``."""
    maps = {f"r18_{sol:03d}": (100.0 + 0.5 * sol, [(25.0 * sol % 360.0 - 180.0, 10.0 - sol % 20, 6.0 + sol % 3)])
            for sol in range(1, n_maps + 1)}
    return write_disc_archive(root, maps, grid=MapGrid.moc(0.8))


def detect_command(checkpoint: Path, archive: Path, out: Path, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "marsdust", "detect", str(checkpoint), str(archive), "-o", str(out), "--quiet",
            "--threads", "1"] + (["--workers", str(workers)] if workers > 1 else [])


def after_random_delay(rng: random.Random, low_s: float, high_s: float):
    """A ``wait_to_kill``: wait a random time; True if the process still runs then."""
    def wait(process: subprocess.Popen) -> bool:
        try:
            process.wait(timeout=rng.uniform(low_s, high_s))
        except subprocess.TimeoutExpired:
            return True
        return False
    return wait


def run_to_completion(command: list[str], kills: int, wait_to_kill, restart: list[str] | None = None,
                      on_kill=None) -> int:
    """Start ``command``; up to ``kills`` times SIGKILL it when ``wait_to_kill(process)`` says so; then let it finish.

    ``restart`` (default ``command``) is the command of every start after a kill; ``on_kill()`` is
    called after each kill. Returns the number of kills.
    """
    done_kills = 0
    while True:
        current = command if done_kills == 0 or restart is None else restart
        process = subprocess.Popen(current, env=CHILD_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if done_kills < kills:
            if wait_to_kill(process):
                process.send_signal(signal.SIGKILL)
                process.wait()
                done_kills += 1
                if on_kill is not None:
                    on_kill()
                continue
        _, stderr = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(current[2:4])} failed after {done_kills} kill(s): "
                               f"{stderr.decode(errors='replace')[-500:]}")
        return done_kills


def compare_rows(reference: pd.DataFrame, result: pd.DataFrame, key: list[str]) -> dict[str, int]:
    """Rows of ``reference`` missing from ``result``, rows of ``result`` repeated, rows whose values differ."""
    counts_ref = reference.groupby(key).size()
    counts_res = result.groupby(key).size()
    lost = int((counts_ref - counts_res.reindex(counts_ref.index, fill_value=0)).clip(lower=0).sum())
    duplicated = int((counts_res - counts_ref.reindex(counts_res.index, fill_value=0)).clip(lower=0).sum())
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


def check_detect(args, rng: random.Random, out: Path, workers: int = 1) -> dict:
    """Uninterrupted ``detect``, then ``args.trials`` killed-and-restarted ones; totals of the row comparisons."""
    archive = build_archive(out / "archive", args.maps)
    checkpoint = save_checkpoint(always_storm_detector(), out / "model.ckpt")
    prefix = "" if workers == 1 else f"workers{workers}_"
    reference_dir = out / f"{prefix}reference"
    subprocess.run(detect_command(checkpoint, archive, reference_dir, workers) + ["--overwrite"], check=True,
                   env=CHILD_ENV, stdout=subprocess.DEVNULL)
    reference = pd.read_csv(reference_dir / "detections.csv")
    reference_maps = pd.read_csv(reference_dir / "maps.csv")
    totals = {"kills": 0, "lost": 0, "duplicated": 0, "changed": 0, "temporary files left": 0,
              "detections": len(reference)}
    started = time.perf_counter()
    for trial in range(args.trials):
        trial_dir = out / f"{prefix}trial{trial}"
        shutil.rmtree(trial_dir, ignore_errors=True)
        totals["kills"] += run_to_completion(detect_command(checkpoint, archive, trial_dir, workers),
                                             args.kills_per_trial, after_random_delay(rng, 0.5, args.max_delay))
        for ref, name, key in ((reference, "detections.csv", ["map_id", "x0", "y0", "x1", "y1"]),
                               (reference_maps, "maps.csv", ["map_id"])):
            for what, n in compare_rows(ref, pd.read_csv(trial_dir / name), key).items():
                totals[what] += n
        totals["temporary files left"] += sum(".tmp" in p.name for p in trial_dir.rglob("*"))
    totals["seconds"] = time.perf_counter() - started
    return totals


def ci_data(out: Path) -> Path:
    """The ``ci`` preset under ``out/ci`` (synthesized once)."""
    data = out / "ci"
    if not (data / "truth" / "storms.csv").is_file():
        synthesize(data, "ci", seed=0, progress=False)
    return data


def rerun_commands(data: Path) -> dict:
    """``name -> command_for(out_folder)`` of the commands checked by :func:`check_rerun`."""
    marsdust = [sys.executable, "-m", "marsdust"]
    storms = str(data / "truth" / "storms.csv")
    return {
        "track": lambda out: marsdust + ["track", storms, "-o", str(out / "tracked.csv"),
                                         "--members", str(out / "members.csv")],
        "climatology": lambda out: marsdust + ["climatology", storms, "-o", str(out), "--truth", storms],
        "synth": lambda out: marsdust + ["synth", str(out), "--preset", "ci", "--seed", "0", "--quiet", "--overwrite"],
    }


def compare_folders(reference_dir: Path, result_dir: Path) -> dict[str, int]:
    """Every CSV row by row (by position, :func:`compare_rows`), every other file byte for byte; files left or missing."""
    reference = {p.relative_to(reference_dir) for p in reference_dir.rglob("*") if p.is_file()}
    result = {p.relative_to(result_dir) for p in result_dir.rglob("*") if p.is_file()} if result_dir.is_dir() else set()
    totals = {"lost": 0, "duplicated": 0, "changed": 0, "files changed": 0, "files missing": len(reference - result),
              "files left": len(result - reference)}
    for name in sorted(reference & result):
        if name.suffix == ".csv":
            tables = [pd.read_csv(folder / name, keep_default_na=False) for folder in (reference_dir, result_dir)]
            rows = compare_rows(*(t.assign(_row=np.arange(len(t))) for t in tables), ["_row"])
            for what, n in rows.items():
                totals[what] += n
        else:
            totals["files changed"] += (reference_dir / name).read_bytes() != (result_dir / name).read_bytes()
    return totals


def check_rerun(name: str, command_for, args, rng: random.Random, out: Path) -> dict:
    """An uninterrupted run of ``command_for(folder)``, then ``args.rerun_trials`` runs killed at random and started
    again; the totals of :func:`compare_folders`."""
    reference_dir = out / f"{name}_reference"
    shutil.rmtree(reference_dir, ignore_errors=True)
    reference_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    subprocess.run(command_for(reference_dir), check=True, env=CHILD_ENV, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    totals = {"kills": 0, "reference seconds": time.perf_counter() - t0}
    started = time.perf_counter()
    for trial in range(args.rerun_trials):
        trial_dir = out / f"{name}_trial{trial}"
        shutil.rmtree(trial_dir, ignore_errors=True)
        trial_dir.mkdir(parents=True)
        totals["kills"] += run_to_completion(command_for(trial_dir), args.kills_per_trial,
                                             after_random_delay(rng, 0.2, totals["reference seconds"]))
        for what, n in compare_folders(reference_dir, trial_dir).items():
            totals[what] = totals.get(what, 0) + n
    totals["seconds"] = time.perf_counter() - started
    return totals


def train_command(data: Path, config: Path, run_dir: Path, resume: bool) -> list[str]:
    return ([sys.executable, "-m", "marsdust", "train", "--data", str(data), "--config", str(config),
             "-o", str(run_dir), "--quiet"] + (["--resume"] if resume else []))


def write_train_config(path: Path, args) -> Path:
    """The tiny run: model preset small_cpu at ``--train-res-deg``, one thread, no DataLoader workers."""
    values = {"model_preset": "small_cpu", "map_res_deg": args.train_res_deg, "strategy": "random",
              "max_steps": args.train_steps, "val_every_n_steps": args.val_every, "ckpt_every_n_steps": args.ckpt_every,
              "batch_size": 2, "num_workers": 0, "threads": 1, "seed": 0}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def same_weights(a: Path, b: Path) -> bool:
    """Whether two checkpoints hold the same global step and bit-identical tensors under the same names."""
    first, second = (read_training_state(p) for p in (a, b))
    if first["global_step"] != second["global_step"] or first["state_dict"].keys() != second["state_dict"].keys():
        return False
    return all(torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in first["state_dict"])


def metrics_rows(path: Path) -> pd.DataFrame:
    """``metrics.csv`` with a ``logged`` column naming the non-empty columns of each row (train, lr or val row)."""
    table = pd.read_csv(path)
    table["logged"] = table.notna().apply(lambda row: "+".join(c for c in table.columns if row[c]), axis=1)
    return table


def logged_step(run_dir: Path) -> int | None:
    """The last step in ``metrics.csv`` (None before the first row), read after a kill."""
    try:
        steps = pd.read_csv(run_dir / "metrics.csv")["step"]
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return None
    return int(steps.max()) if len(steps) else None


def at_a_random_training_step(rng: random.Random, run_dir: Path, last_step: int, step_seconds: float):
    """A ``wait_to_kill``: wait until ``metrics.csv`` shows a random later step, then up to 1.5 steps' time more.

    So kills land during training (between checkpoints, in validation), not mostly during start-up.
    True if the process still runs then.
    """
    def wait(process: subprocess.Popen) -> bool:
        first = (logged_step(run_dir) or 0) + 1
        if first > last_step:
            return False
        target = rng.randint(first, last_step)
        while process.poll() is None and (logged_step(run_dir) or 0) < target:
            time.sleep(0.2)
        try:
            process.wait(timeout=rng.uniform(0.0, 1.5 * step_seconds))
        except subprocess.TimeoutExpired:
            return True
        return False
    return wait


def check_train(args, rng: random.Random, out: Path) -> dict:
    """Uninterrupted ``train``, then ``args.train_trials`` runs killed at random and resumed; totals."""
    data = ci_data(out)
    config = write_train_config(out / "train.yaml", args)
    reference_dir = out / "train_reference"
    shutil.rmtree(reference_dir, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run(train_command(data, config, reference_dir, resume=False), check=True, env=CHILD_ENV,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reference_seconds = time.perf_counter() - t0
    reference = metrics_rows(reference_dir / "metrics.csv")
    totals = {"kills": 0, "kills in training": 0, "last equal": 0, "best equal": 0, "lost": 0, "duplicated": 0,
              "changed": 0, "temporary files left": 0, "rows": len(reference), "reference seconds": reference_seconds}
    started = time.perf_counter()
    for trial in range(args.train_trials):
        run_dir = out / f"train_trial{trial}"
        shutil.rmtree(run_dir, ignore_errors=True)

        def note_kill():
            totals["kills in training"] += logged_step(run_dir) is not None

        totals["kills"] += run_to_completion(
            train_command(data, config, run_dir, resume=False), args.kills_per_trial,
            at_a_random_training_step(rng, run_dir, args.train_steps - 1, reference_seconds / args.train_steps),
            restart=train_command(data, config, run_dir, resume=True), on_kill=note_kill)
        for name, key in (("last", "last equal"), ("best", "best equal")):
            path = f"checkpoints/{name}.ckpt"
            totals[key] += same_weights(reference_dir / path, run_dir / path)
        for what, n in compare_rows(reference, metrics_rows(run_dir / "metrics.csv"), ["step", "logged"]).items():
            totals[what] += n
        totals["temporary files left"] += sum(p.name not in ("best.ckpt", "last.ckpt")
                                              for p in (run_dir / "checkpoints").iterdir())
    totals["seconds"] = time.perf_counter() - started
    return totals


def rerun_report(args, results: dict[str, dict]) -> list[str]:
    lines = [
        "## marsdust track, climatology, synth (started again after each kill)",
        "",
        f"{args.rerun_trials} trials per command of up to {args.kills_per_trial} SIGKILLs each, at random moments "
        "within the uninterrupted run's duration; the `ci` preset (track and climatology: its truth/storms.csv).",
        "",
        "| command | uninterrupted run, s | kills survived | rows lost | rows duplicated | rows changed | "
        "other files changed | files missing | files left behind |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, totals in results.items():
        lines.append(f"| {name} | {totals['reference seconds']:.1f} | {totals['kills']} | {totals['lost']} | "
                     f"{totals['duplicated']} | {totals['changed']} | {totals['files changed']} | "
                     f"{totals['files missing']} | {totals['files left']} |")
    return lines + ["", "Rows: every CSV of the result against the uninterrupted run's, row by row; other files (figures, "
                    "maps, netCDF) byte for byte."]


def detect_report(args, totals: dict, workers: int = 1) -> list[str]:
    return [
        "## marsdust detect" + (f" --workers {workers}" if workers > 1 else ""),
        "",
        f"{args.maps} maps, {totals['detections']} detections in the uninterrupted run, {args.trials} trials of up to "
        f"{args.kills_per_trial} SIGKILLs each at random moments (0.5–{args.max_delay:g} s after each start), "
        f"{totals['seconds']:.0f} s.",
        "",
        "| kills survived | rows lost | rows duplicated | rows changed | temporary files left |",
        "|---|---|---|---|---|",
        f"| {totals['kills']} | {totals['lost']} | {totals['duplicated']} | {totals['changed']} | "
        f"{totals['temporary files left']} |",
        "",
        "Rows are those of detections.csv and maps.csv (maps.csv without its seconds column), compared with the "
        "uninterrupted run's.",
    ]


def train_report(args, totals: dict) -> list[str]:
    trials = args.train_trials
    return [
        "## marsdust train",
        "",
        f"ci preset, model preset small_cpu at {args.train_res_deg:g}°, {args.train_steps} steps (validation every "
        f"{args.val_every}, last.ckpt every {args.ckpt_every}); the uninterrupted run took "
        f"{totals['reference seconds']:.0f} s and logged {totals['rows']} metrics.csv rows. {trials} trials of up to "
        f"{args.kills_per_trial} SIGKILLs each (each once metrics.csv shows a random later step, then up to 1.5 "
        f"steps' time more), "
        f"restarted with --resume, {totals['seconds']:.0f} s.",
        "",
        "| kills survived | of them after training began | final weights equal (last.ckpt) | best.ckpt equal | "
        "metrics rows lost | rows duplicated | rows changed | temporary files left |",
        "|---|---|---|---|---|---|---|---|",
        f"| {totals['kills']} | {totals['kills in training']} | {totals['last equal']} of {trials} | "
        f"{totals['best equal']} of {trials} | {totals['lost']} | {totals['duplicated']} | {totals['changed']} | "
        f"{totals['temporary files left']} |",
        "",
        "Weights equal: the same global step and every tensor of the state dict bit-identical (torch.equal). Rows of "
        "metrics.csv are keyed on (step, which columns are filled) and compared with the uninterrupted run's.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out/kill_restart"))
    parser.add_argument("--what", choices=("detect", "detect2", "train", "rerun", "all"), default=["all"], nargs="+",
                        help="One or more; detect2: detect --workers 2; rerun: track, climatology and synth.")
    parser.add_argument("--maps", type=int, default=12)
    parser.add_argument("--trials", type=int, default=6, help="detect trials.")
    parser.add_argument("--kills-per-trial", type=int, default=3)
    parser.add_argument("--max-delay", type=float, default=12.0, help="detect: longest wait before a kill, seconds.")
    parser.add_argument("--train-trials", type=int, default=3)
    parser.add_argument("--rerun-trials", type=int, default=3, help="trials of each of track, climatology, synth.")
    parser.add_argument("--train-steps", type=int, default=16)
    parser.add_argument("--train-res-deg", type=float, default=1.6)
    parser.add_argument("--val-every", type=int, default=8)
    parser.add_argument("--ckpt-every", type=int, default=4,
                        help="train: last.ckpt every N steps (dividing --val-every, so that some kills land in "
                        "the validation that follows a checkpoint).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    load_start = os.getloadavg()[0]
    sections = []
    if {"detect", "all"} & set(args.what):
        sections += detect_report(args, check_detect(args, rng, args.out)) + [""]
    if {"detect2", "all"} & set(args.what):
        sections += detect_report(args, check_detect(args, rng, args.out, workers=2), workers=2) + [""]
    if {"rerun", "all"} & set(args.what):
        data = ci_data(args.out)
        results = {name: check_rerun(name, command_for, args, rng, args.out)
                   for name, command_for in rerun_commands(data).items()}
        sections += rerun_report(args, results) + [""]
    if {"train", "all"} & set(args.what):
        sections += train_report(args, check_train(args, rng, args.out)) + [""]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    report = "\n".join([
        f"# Kill-restart check ({datetime.date.today()}, commit {commit}, load average {load_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end)",
        "",
        f"`{' '.join(sys.argv)}`",
        "",
    ] + sections)
    (args.out.parent / "kill_restart.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
