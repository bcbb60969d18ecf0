"""Benchmark: a reference detector on maps without history.

A detector trained with reference bands (``--reference prior-median``) sees each map beside its
clear-sky background from earlier sols. The first maps of an archive, the sols after a long gap
and a lone map have none: their background is 0 in every band ("missing"). This scores each
checkpoint on its test split twice, with the backgrounds built from the archive (as ``marsdust
evaluate`` does) and with every background replaced by that "no history" value, and prints the box,
12°-box and mask mAP of both.

Run::

    .venv/bin/python benchmarks/bench_no_history.py --checkpoint NAME=RUN/checkpoints/best.ckpt [...]

Writes ``OUT/no_history.md`` and ``OUT/no_history.json`` (default ``bench_out/no_history``), and
one evaluation folder per checkpoint and case.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np


def _scores(metrics: dict) -> dict:
    return {"box_map50": metrics["map50"], "paper_map50": metrics["paper_boxes"]["map50"],
            "paper_map75": metrics["paper_boxes"]["map75"], "mask_map50": (metrics.get("segm") or {}).get("map50")}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", action="append", required=True, metavar="NAME=PATH",
                        help="a reference detector's checkpoint, inside its run folder (repeatable)")
    parser.add_argument("--out", default="bench_out/no_history")
    args = parser.parse_args(argv)

    import marsdust.evaluate.runner as runner
    from marsdust.evaluate import EvaluateOptions, evaluate_checkpoint

    from_archive = runner.split_backgrounds

    def no_history(model, index_df, rows, transform_image=None):
        built = from_archive(model, index_df, rows, transform_image)
        if built is None:
            raise SystemExit("the checkpoint has no reference bands: nothing to take away")
        return {map_id: np.zeros_like(background) for map_id, background in built.items()}

    out, results = Path(args.out), {}
    for item in args.checkpoint:
        name, _, path = item.partition("=")
        results[name] = {}
        for case, backgrounds in (("with history", from_archive), ("no history", no_history)):
            runner.split_backgrounds = backgrounds
            metrics = evaluate_checkpoint(path, out / name / case.replace(" ", "_"),
                                          EvaluateOptions(n_figures=0, n_timed=0, progress=False))
            results[name][case] = _scores(metrics)
            print(f"{name} {case}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in results[name][case].items()
                                                  if v is not None), flush=True)
    runner.split_backgrounds = from_archive

    def pct(value):
        return "—" if value is None else f"{100 * value:.1f}"

    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines = [f"# Reference detectors without history\n\n{stamp}; each checkpoint's test split. Percent.\n",
             "| checkpoint | backgrounds | box mAP50 | 12° mAP50 | 12° mAP75 | mask mAP50 |", "|---|---|---|---|---|---|"]
    for name, cases in results.items():
        for case, s in cases.items():
            lines.append(f"| {name} | {case} | {pct(s['box_map50'])} | {pct(s['paper_map50'])} | {pct(s['paper_map75'])} "
                         f"| {pct(s['mask_map50'])} |")
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "no_history.md").write_text(text)
    (out / "no_history.json").write_text(json.dumps({"date": stamp, "results": results}, indent=2) + "\n")
    print(text)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
