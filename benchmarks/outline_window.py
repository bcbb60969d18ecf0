"""Benchmark: how wide a window the mask head outlines storms in (``DetectorConfig.mask_box_scale``).

A Mask R-CNN draws each outline inside its detection box; a storm's thin arms often reach past the
regressed box. This scores one trained checkpoint with its masks outlined in boxes grown by each factor
of ``--scales`` (``marsdust evaluate --mask-box-scale``; the box itself kept), on the splits asked: pixel
IoU / Dice at the checkpoint's outline threshold, where the rest of the union lies (``pixel.union_shares``:
storms missed whole, false alarms, edges), and box, 12° and mask mAP50. Nothing is retrained: the factor
acts at inference only.

Run::

    .venv/bin/python benchmarks/outline_window.py demo_out/model.ckpt --data demo_out/data \\
        --split-file demo_out/run/split.csv --scales 1.0 1.2 1.3 1.4 --splits test val

Prints one line per split and factor and writes them to ``--csv`` (default
``bench_out/outline_window.csv``, replaced).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from marsdust.schema import MASK_BOX_SCALE_RANGE

COLUMNS = ("checkpoint", "split", "mask_box_scale", "pixel_iou", "pixel_dice", "outline_threshold", "overlap",
           "missed_regions", "false_alarm_regions", "edge_missed", "edge_extra", "box_map50", "paper_map50",
           "mask_map50", "seconds")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a trained detector with masks (e.g. demo_out/model.ckpt)")
    parser.add_argument("--data", required=True, help="data folder (archive/ and mdad/) the checkpoint is scored on")
    parser.add_argument("--split-file", required=True, help="split manifest (e.g. demo_out/run/split.csv)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.2, 1.3, 1.4],
                        help="outline windows, times the detection box (1 to 3)")
    parser.add_argument("--splits", nargs="+", default=["test", "val"], choices=["test", "val", "train"])
    parser.add_argument("--out", type=Path, default=Path("bench_out/outline_window"), help="evaluation folders")
    parser.add_argument("--csv", type=Path, default=Path("bench_out/outline_window.csv"))
    args = parser.parse_args(argv)
    if not args.checkpoint.is_file():
        parser.error(f"checkpoint {args.checkpoint} does not exist")
    low, high = MASK_BOX_SCALE_RANGE
    if not all(low <= scale <= high for scale in args.scales):
        parser.error(f"--scales must lie in [{low:g}, {high:g}] (times the box), got {args.scales}")
    return args


def score(checkpoint: Path, data: str, split_file: str, split: str, scale: float, out_dir: Path) -> dict:
    """One evaluation of ``checkpoint`` with its masks outlined in boxes ``scale`` times the detection's
    (``marsdust evaluate --mask-box-scale``)."""
    from marsdust.evaluate import EvaluateOptions, evaluate_checkpoint

    started = time.perf_counter()
    metrics = evaluate_checkpoint(checkpoint, out_dir, EvaluateOptions(
        data=data, split_file=split_file, split=split, mask_box_scale=scale, n_figures=0, n_timed=0, progress=False))
    pixel = metrics["pixel"]
    return {"checkpoint": str(checkpoint), "split": split, "mask_box_scale": scale, "pixel_iou": pixel["iou"],
            "pixel_dice": pixel["dice"], "outline_threshold": pixel["threshold"], **pixel["union_shares"],
            "box_map50": metrics["map50"], "paper_map50": metrics["paper_boxes"]["map50"],
            "mask_map50": metrics["segm"]["map50"], "seconds": time.perf_counter() - started}


def check_outlines_in_boxes(checkpoint: Path) -> None:
    """Refuse a detector whose masks are not outlined in boxes (a segmenter, a box-only detector)."""
    from marsdust.models import load_model

    model = load_model(checkpoint)
    if not hasattr(getattr(model, "roi_heads", None), "mask_box_scale") or not model.has_masks:
        raise SystemExit(f"{checkpoint}: {model.model_name} does not outline storms in boxes")


def main(argv=None) -> None:
    args = parse_args(argv)
    check_outlines_in_boxes(args.checkpoint)
    rows = []
    for split in args.splits:
        for scale in args.scales:
            row = score(args.checkpoint, args.data, args.split_file, split, scale, args.out / f"{split}_{scale:g}")
            rows.append(row)
            print(f"{split} x{scale:g}: pixel IoU {row['pixel_iou']:.3f} Dice {row['pixel_dice']:.3f} at "
                  f"{row['outline_threshold']:.2f} (missed {row['missed_regions']:.3f}, false alarms "
                  f"{row['false_alarm_regions']:.3f}, edges {row['edge_missed']:.3f} / {row['edge_extra']:.3f}); "
                  f"mAP50 box {row['box_map50']:.3f}, 12° {row['paper_map50']:.3f}, mask {row['mask_map50']:.3f}",
                  flush=True)
    from marsdust.fileio import write_text_atomic

    args.csv.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.csv, pd.DataFrame(rows, columns=COLUMNS).to_csv(index=False))
    print(f"-> {args.csv}")


if __name__ == "__main__":
    sys.exit(main())
