"""Benchmark: does a detector trained on one camera's maps find the storms on the other camera's (and on a second look)?

The ``twocam`` archives (``marsdust synth DIR --preset twocam_ci|twocam``) hold MOC maps (60°S–60°N,
PNG, MY24 Ls150 – MY28 Ls121, box-only v1.0 catalogue) and then global MARCI maps (JPEG, MY28 Ls130 –
MY32, v1.1 outline cubes). Two detectors are trained with the same budget (``small_cpu`` DustRCNN,
``--steps`` optimizer steps, the temporal split with explicit periods):

* **moc**: trained on the early MOC years :data:`MOC_TRAIN` (validation drawn from them);
* **marci**: trained on the early MARCI years :data:`MARCI_TRAIN`;
* **both**: trained on both (the union of the two training periods, validation drawn from each), as a
  scientist with the whole archive would.

Each detector is then scored on the same four test sets, so a cross-camera row and a same-camera
row share their test maps:

* ``moc_late`` :data:`MOC_TEST` and ``marci_late`` :data:`MARCI_TEST` of the twocam archive (same
  camera for one detector, the other camera for the other);
* ``look2`` and ``look2_marci``: the independently modelled second look in the MOC and the global
  MARCI layout (``marsdust synth DIR --preset look2|look2_marci``, every map a test map), never
  trained on: the leave-one-look-out rows.

Every (detector, test set) is scored twice: as trained, and after AdaBN test-time adaptation
(:func:`marsdust.adapt.adapt_checkpoint`) on the unlabeled maps of that test set (history: the
whole archive they belong to). Scoring is :func:`marsdust.evaluate.evaluate_checkpoint`; the table
gives mAP50 / mAP75 on the paper's 12° boxes, box and mask mAP50 in the run's label mode
(outlines where the catalogue has them, else area boxes), and pixel IoU / Dice against the
outlines (maps with outline truth only: none on the MOC years, whose catalogue has no outlines).

Run::

    .venv/bin/python benchmarks/bench_cross_camera.py                                   # twocam_ci, 150 steps
    .venv/bin/python benchmarks/bench_cross_camera.py --preset twocam --steps 2000 --device cuda
    .venv/bin/python benchmarks/bench_cross_camera.py --preset twocam --steps 600 --model unet --no-adabn  # the U-Net
    .venv/bin/python benchmarks/bench_cross_camera.py --preset twocam --steps 800 --model unet --no-adabn --random-look

``--random-look`` trains on the same archive synthesized with every map's look drawn
(``marsdust synth --random-look``, :mod:`marsdust.synth.looks`; folder ``<preset>_randlook``) and tests on
the plain one: look randomization measured on the same test maps. Data are synthesized (seed 0) under
``--data-root`` when missing. Finished trainings (``done.json``)
and evaluations (``row.json``) are not redone. Writes ``OUT/cross_camera.md`` and
``OUT/cross_camera.json`` (default ``bench_out/cross_camera_<preset>_<steps>_<augment>[_<model>]``) with the date, the machine
and the command.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_shift import git_commit  # noqa: E402  (one record of the commit for the benchmarks' results)

from marsdust.fileio import write_text_atomic

MOC_TRAIN, MOC_TEST = "MY24 150 - MY27 0", "MY27 0 - MY28 121]"
"""The MOC detector's training period and the MOC test period (Mars year, Ls in degrees; ``]`` keeps the end)."""
MARCI_TRAIN, MARCI_TEST = "MY28 130 - MY31 0", "MY31 0 - MY33 0"
"""The MARCI detector's training period and the MARCI test period."""
DETECTORS = {"moc": ("MOC", MOC_TRAIN, MOC_TEST), "marci": ("MARCI", MARCI_TRAIN, MARCI_TEST),
             "both": ("MOC+MARCI", f"{MOC_TRAIN} + {MARCI_TRAIN}", None)}
"""Detector name -> (camera, training period, that camera's test period; None: both cameras' test periods)."""
TEST_SETS = ("moc_late", "marci_late", "look2", "look2_marci")
CAMERA_OF_TEST = {"moc_late": "MOC", "marci_late": "MARCI", "look2": "MOC", "look2_marci": "MARCI"}
METRICS = (("paper_map50", "12° mAP50"), ("paper_map75", "12° mAP75"), ("box_map50", "box mAP50"),
           ("mask_map50", "mask mAP50"), ("pixel_iou", "pixel IoU"), ("pixel_dice", "Dice"))


def ensure_data(path: Path, preset: str, random_look: float = 0.0) -> Path:
    """``path`` holding the synthesis of ``preset`` (seed 0; a share ``random_look`` of the maps in a drawn look),
    written if its archive or catalogue is missing."""
    if not (path / "archive").is_dir() or not (path / "mdad").is_dir():
        from marsdust.synth import synthesize

        print(f"synthesizing {preset} (seed 0{f', {random_look:.0%} in a random look' if random_look else ''}) "
              f"into {path} ...", flush=True)
        synthesize(path, preset, seed=0, progress=False, overwrite=True, random_look=random_look)
    return path


def both_cameras_split(data: Path, out: Path) -> Path:
    """The ``both`` detector's split manifest: each camera's temporal split (its training period, validation
    drawn from it, its test period) over that camera's maps, the two joined."""
    from marsdust.data import make_split, save_split
    from marsdust.mdgm import index_archive
    from marsdust.train.config import parse_period

    index = index_archive(data / "archive")
    splits = [make_split(index, "temporal", train_period=parse_period(DETECTORS[name][1]),
                         test_period=parse_period(DETECTORS[name][2])).set_index("map_id")["split"]
              for name in ("moc", "marci")]
    joined = splits[0].where(splits[0] != "unused", splits[1])
    return save_split(joined.rename("split").reset_index(), out / "splits" / "both_train.csv")


def train_config(data: Path, detector: str, steps: int, device: str, augment: str, split_file: Path | None = None,
                 model: str = "dustrcnn", seed: int = 0):
    """The shared budget: ``model`` (``small_cpu`` preset) at 0.8°/px, the demo's learning rate, one validation at
    the end; ``seed`` seeds the training (initial weights, sampling, augmentation), never the data."""
    from marsdust.demo import DEMO_LR, DEMO_MAP_RES_DEG
    from marsdust.train import TrainConfig

    _, train_period, test_period = DETECTORS[detector]
    periods = ({"split_file": str(split_file)} if split_file else
               {"train_period": train_period, "test_period": test_period})
    return TrainConfig(data=str(data), model=model, model_preset="small_cpu", map_res_deg=DEMO_MAP_RES_DEG,
                       lr=DEMO_LR, strategy="temporal", **periods, augment_preset=augment,
                       max_steps=steps, val_every_n_steps=steps, num_workers=1, seed=seed, progress=False,
                       accelerator="gpu" if device.startswith("cuda") else "cpu")


def train_detector(data: Path, detector: str, steps: int, out: Path, device: str, augment: str,
                   model: str = "dustrcnn", seed: int = 0) -> Path:
    """Train one detector (or reuse a finished run); returns its best checkpoint."""
    from marsdust.train import run_checkpoint, train

    run_dir = out / "runs" / detector
    if not (run_dir / "done.json").is_file():
        print(f"training {detector} ({DETECTORS[detector][1]}, {steps} steps, augment {augment}) ...", flush=True)
        split_file = both_cameras_split(data, out) if detector == "both" else None
        train(train_config(data, detector, steps, device, augment, split_file, model, seed), run_dir,
              resume=(run_dir / "checkpoints" / "last.ckpt").is_file())
    return run_checkpoint(run_dir)


def test_sets(data: Path, looks: dict[str, Path], out: Path) -> dict[str, dict]:
    """Test set name -> ``data`` (folder), ``split_file``, ``maps`` (paths of its maps) and ``history`` (archive)."""
    from marsdust.data import Period, save_split
    from marsdust.mdgm import index_archive
    from marsdust.train.config import parse_period

    index = index_archive(data / "archive")
    sets = {}
    for name, period_text in (("moc_late", MOC_TEST), ("marci_late", MARCI_TEST)):
        period: Period = parse_period(period_text)
        inside = period.contains(index["mars_year"], index["ls"])
        split = index[["map_id", "mars_year", "ls"]].assign(split=["test" if k else "unused" for k in inside])
        split_file = save_split(split, out / "splits" / f"{name}.csv")
        sets[name] = {"data": data, "split_file": split_file, "maps": list(index.loc[inside, "path"]),
                      "history": str(data / "archive")}
    for name, look in looks.items():
        look_index = index_archive(look / "archive")
        sets[name] = {"data": look, "split_file": look / "truth" / "split.csv", "maps": list(look_index["path"]),
                      "history": str(look / "archive")}
    return sets


def score(checkpoint: Path, test_set: dict, out_dir: Path, device: str, all_latitudes: bool = False) -> dict:
    """One evaluation (:func:`marsdust.evaluate.evaluate_checkpoint`); returns the table's metrics. Detections centred
    beyond the latitudes of the detector's training maps are dropped, as ``detect`` drops them, unless
    ``all_latitudes``."""
    from marsdust.detect import ALL_LATITUDES
    from marsdust.evaluate import EvaluateOptions, evaluate_checkpoint

    metrics = evaluate_checkpoint(checkpoint, out_dir, EvaluateOptions(
        data=str(test_set["data"]), split_file=str(test_set["split_file"]), n_figures=0, n_timed=0, progress=False,
        device=device, latitudes_deg=ALL_LATITUDES if all_latitudes else None))
    segm, pixel = metrics.get("segm") or {}, metrics.get("pixel") or {}
    return {"n_maps": metrics["n_maps"], "n_gt": metrics.get("n_gt"), "label_mode": metrics["label_mode"],
            "paper_map50": metrics["paper_boxes"]["map50"], "paper_map75": metrics["paper_boxes"]["map75"],
            "box_map50": metrics["map50"], "mask_map50": segm.get("map50"),
            "pixel_iou": pixel.get("iou"), "pixel_dice": pixel.get("dice"), "pixel_maps": pixel.get("n_maps"),
            "score_threshold": pixel.get("threshold"), "pixel_threshold_source": pixel.get("threshold_source"),
            "pixel_iou_at_detection_threshold": (pixel.get("at_detection_threshold") or {}).get("iou"),
            "latitudes_deg": metrics["latitudes_deg"],
            "n_beyond_latitudes": metrics["n_beyond_latitudes"]}


def adapted_checkpoint(checkpoint: Path, detector: str, name: str, test_set: dict, out: Path, device: str) -> Path:
    """``checkpoint`` adapted with AdaBN to the maps of ``test_set`` (reused when already written)."""
    from marsdust.adapt import adapt_checkpoint

    path = out / "adapted" / f"{detector}_{name}.ckpt"
    if not path.is_file():
        adapt_checkpoint(checkpoint, test_set["maps"], path, history=test_set["history"], device=device)
    return path


def relation_of(camera: str, test_set: str) -> str:
    """How a test set relates to a detector trained on ``camera``'s maps (same / cross camera, second look)."""
    look = "second look, " if test_set.startswith("look2") else ""
    if "+" in camera:
        return look + "both cameras trained"
    return look + ("same camera" if CAMERA_OF_TEST[test_set] == camera else "cross camera")


def self_trained_checkpoint(checkpoint: Path, detector: str, name: str, test_set: dict, out: Path, device: str,
                            steps: int, min_score: float) -> Path:
    """The student of one self-training round (:func:`marsdust.selftrain.self_train`) of ``checkpoint`` on the
    unlabeled maps of ``test_set`` (reused when already trained)."""
    from marsdust.selftrain import self_train

    run = out / "selftrain" / f"{detector}_{name}"
    if not (run / "run" / "done.json").is_file():
        print(f"self-training {detector} on {name} ({steps} steps, pseudo-labels from score {min_score}) ...",
              flush=True)
        self_train(checkpoint, test_set["history"], run, maps=test_set["maps"], steps=steps, min_score=min_score,
                   device=device, progress=False, num_workers=1, seed=0)
    return run / "run" / "checkpoints" / "last.ckpt"


ADAPTATIONS = {"none": ("", "no"), "adabn": ("_adabn", "AdaBN"), "self-training": ("_selftrain", "self-training")}
"""How a detector is scored on a test set (as trained, after AdaBN, after a round of self-training) -> the suffix of
its evaluation folder and its name in the report."""


def adaptations_for(relation: str, adabn: bool, self_train_steps: int) -> list[str]:
    """The adaptations a (detector, test set) is scored under: AdaBN everywhere when asked, self-training where the
    test maps look unlike the training maps (another camera, the second look)."""
    unlike = "cross camera" in relation or relation.startswith("second look")
    return ["none"] + (["adabn"] if adabn else []) + (["self-training"] if self_train_steps and unlike else [])


def run_cross_camera(data: Path, looks: dict[str, Path], out: Path, *, steps: int, device: str = "cpu",
                     augment: str = "strong", detectors=tuple(DETECTORS), adabn: bool = True,
                     model: str = "dustrcnn", self_train_steps: int = 0, min_score: float = 0.7,
                     train_data: Path | None = None, seed: int = 0, all_latitudes: bool = False) -> list[dict]:
    """Train the detectors and score each, as trained (and adapted), on every test set; one row per evaluation.

    ``train_data`` (default ``data``): the archive the detectors train on, the same weather and maps as ``data``
    in another look (``--random-look``); the test sets always come from ``data`` and the second looks."""
    sets = test_sets(data, looks, out)
    train_look = "camera's" if train_data is None else f"random ({train_data.name})"
    rows, t0 = [], time.perf_counter()
    for detector in detectors:
        camera, train_period, _ = DETECTORS[detector]
        checkpoint = train_detector(train_data or data, detector, steps, out, device, augment, model, seed)
        for name in TEST_SETS:
            relation = relation_of(camera, name)
            for adaptation in adaptations_for(relation, adabn, self_train_steps):
                tag = f"{detector}_{name}{ADAPTATIONS[adaptation][0]}"
                row_file = out / "eval" / tag / "row.json"
                if row_file.is_file():
                    rows.append(json.loads(row_file.read_text()))
                    continue
                if adaptation == "adabn":
                    used = adapted_checkpoint(checkpoint, detector, name, sets[name], out, device)
                elif adaptation == "self-training":
                    used = self_trained_checkpoint(checkpoint, detector, name, sets[name], out, device,
                                                   self_train_steps, min_score)
                else:
                    used = checkpoint
                row = {"detector": detector, "trained_on": f"{camera} {train_period}", "test_set": name,
                       "relation": relation, "augment": augment, "train_look": train_look, "seed": seed,
                       "adabn": adaptation == "adabn",
                       "adaptation": adaptation,
                       **score(used, sets[name], out / "eval" / tag, device, all_latitudes)}
                write_text_atomic(row_file, json.dumps(row, indent=2, default=str) + "\n")
                rows.append(row)
                print(f"[{time.perf_counter() - t0:6.0f} s] {tag}: "
                      + ", ".join(f"{label} {pct(row[key])}" for key, label in METRICS), flush=True)
    return rows


def adaptation_of(row: dict) -> str:
    """A row's adaptation (rows written before self-training existed say only ``adabn``)."""
    return row.get("adaptation") or ("adabn" if row["adabn"] else "none")


def pct(value) -> str:
    """A fraction as a percentage with one decimal (``—`` for missing)."""
    return "—" if value is None or value != value else f"{100 * value:.1f}"


def with_change(value, base) -> str:
    """``value`` in percent and, in brackets, its change from ``base`` in percentage points."""
    if value is None or base is None or value != value or base != base:
        return pct(value)
    return f"{pct(value)} ({100 * (value - base):+.1f})"


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table; an adapted row shows its change from the same detector and test set as trained."""
    plain = {(r["detector"], r["test_set"]): r for r in rows if adaptation_of(r) == "none"}
    lines = ["| detector | trained on | tested on | relation | adaptation | maps | " + " | ".join(l for _, l in METRICS)
             + " | dropped beyond training latitudes |", "|---|---|---|---|---|---|" + "---|" * (len(METRICS) + 1)]
    for r in rows:
        base = plain.get((r["detector"], r["test_set"])) if adaptation_of(r) != "none" else None
        cells = [with_change(r[k], base[k]) if base else pct(r[k]) for k, _ in METRICS]
        lines.append(f"| {r['detector']} | {r['trained_on']} | {r['test_set']} | {r['relation']} | "
                     f"{ADAPTATIONS[adaptation_of(r)][1]} | {r['n_maps']} | " + " | ".join(cells)
                     + f" | {beyond_latitudes(r)} |")
    return "\n".join(lines) + "\n"


def beyond_latitudes(row: dict) -> str:
    """How many detections a row's evaluation dropped beyond the detector's training latitudes, and those latitudes
    (``—`` for rows scored before detections were dropped)."""
    if row.get("latitudes_deg") is None:
        return "—"
    from marsdust.detect.settings import latitude_range_text

    return f"{row['n_beyond_latitudes']} ({latitude_range_text(row['latitudes_deg'])})"


def machine() -> str:
    """What the benchmark ran on, in words."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {gpu}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), load average {load:.1f}")


def report_header(preset: str, steps: int, data: Path, seconds: float, argv: list[str], augment: str,
                  model: str = "dustrcnn", random_look: float = 0.0, seed: int = 0, all_latitudes: bool = False) -> str:
    """Title and run conditions: date, commit, machine, command, periods, what the columns are."""
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    command = " ".join(["benchmarks/bench_cross_camera.py", *argv])
    return (f"# Cross-camera benchmark on the synthetic {preset} archive\n\n{stamp}, commit {git_commit()}; "
            f"{machine()} at the end; {seconds / 60:.1f} min.\n\nCommand: `{command}`\n\n"
            f"Detectors: small_cpu {model}, {steps} steps each, training seed {seed}, augmentation {augment!r}"
            f"{f', trained on the same archive with {random_look:.0%} of the maps in a random look (synth --random-look)' if random_look else ''}"
            f"; moc trained on MOC "
            f"{MOC_TRAIN}, marci on MARCI {MARCI_TRAIN}, both on the two periods ({data}). Test sets: moc_late = MOC {MOC_TEST}, marci_late = MARCI {MARCI_TEST}, "
            "look2 / look2_marci = the second look's test archives (MOC / global MARCI layout, seed 0). AdaBN: "
            "BatchNorm statistics re-estimated on the test set's unlabeled maps; self-training: one round of "
            "marsdust self-train on them (the detector's confident detections as labels, on cross-camera and "
            "second-look test sets); in brackets: the change from the same detector as trained, percentage points. "
            "Percent. Pixel IoU / Dice: detections at the outline threshold the checkpoint stores (best pixel "
            "IoU on its validation maps; its detection threshold if it stores none) "
            "against the catalogued outlines, observed pixels of maps with outline truth, summed "
            "over maps (— : no outline truth, as on the MOC years). Detections centred beyond the latitudes of the "
            "detector's training maps (its checkpoint's record) are dropped before scoring, as detect drops them"
            f"{' (not in this run: --all-latitudes)' if all_latitudes else ''}; the last column counts them.\n\n")


def main(argv=None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="twocam_ci", choices=["twocam_ci", "twocam"], help="two-camera archive")
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per detector")
    parser.add_argument("--data-root", default="bench_out/data", help="where the archives are (synthesized if missing)")
    parser.add_argument("--out", default=None, help="default bench_out/cross_camera_<preset>_<steps>_<augment>")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--augment", default="strong", help="training augmentation preset (strong, basic, none)")
    parser.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=list(DETECTORS),
                        help="which detectors to train and score")
    parser.add_argument("--no-adabn", action="store_true", help="score the detectors as trained only")
    parser.add_argument("--model", default="dustrcnn", help="the network of every detector (e.g. unet)")
    parser.add_argument("--self-train", type=int, default=0, metavar="STEPS",
                        help="also score each detector after STEPS steps of self-training on the unlabeled maps of "
                             "every cross-camera and second-look test set (0: not)")
    parser.add_argument("--min-score", type=float, default=0.7, help="self-training's pseudo-label score")
    parser.add_argument("--seed", type=int, default=0, help="training seed (weights, sampling, augmentation); the "
                                                                "archives are always seed 0")
    parser.add_argument("--random-look", type=float, nargs="?", const=1.0, default=0.0, metavar="SHARE",
                        help="train on the archive synthesized with a share SHARE (default 1: every map) of the maps "
                             "in a drawn look (marsdust synth --random-look: same weather, maps and catalogue); test on "
                             "the plain archive as always")
    parser.add_argument("--all-latitudes", action="store_true",
                        help="score detections beyond the latitudes of the detector's training maps too (default: "
                             "dropped, as detect drops them)")
    args = parser.parse_args(argv)
    if args.model.startswith("unet") and not args.no_adabn:
        raise SystemExit(f"AdaBN (marsdust adapt) does not adapt {args.model}; add --no-adabn")
    if args.steps < 1:
        raise SystemExit(f"--steps must be at least 1, got {args.steps}")
    if not 0.0 <= args.random_look <= 1.0:
        raise SystemExit(f"--random-look is a share of the maps, 0 to 1; got {args.random_look}")

    root = Path(args.data_root)
    look_tag = f"_randlook{'' if args.random_look == 1 else round(100 * args.random_look)}" if args.random_look else ""
    run_tag = ("" if args.model == "dustrcnn" else f"_{args.model}") + look_tag + (f"_seed{args.seed}" if args.seed else "")
    out = Path(args.out or f"bench_out/cross_camera_{args.preset}_{args.steps}_{args.augment}{run_tag}")
    data = ensure_data(root / args.preset, args.preset)
    train_data = ensure_data(root / f"{args.preset}{look_tag}", args.preset, args.random_look) if args.random_look else None
    looks = {name: ensure_data(root / name, name) for name in ("look2", "look2_marci")}
    t0 = time.perf_counter()
    rows = run_cross_camera(data, looks, out, steps=args.steps, device=args.device, augment=args.augment,
                            detectors=args.detectors, adabn=not args.no_adabn, model=args.model,
                            self_train_steps=args.self_train, min_score=args.min_score, train_data=train_data,
                            seed=args.seed, all_latitudes=args.all_latitudes)
    header = report_header(args.preset, args.steps, train_data or data, time.perf_counter() - t0, argv, args.augment,
                           args.model, args.random_look, args.seed, args.all_latitudes)
    text = header + markdown(rows)
    write_text_atomic(out / "cross_camera.md", text)
    write_text_atomic(out / "cross_camera.json", json.dumps({"report": header.strip(), "rows": rows}, indent=2,
                                                            default=str) + "\n")
    print(text)
    return rows


if __name__ == "__main__":
    main()
