"""Benchmark: the learning test's recipe (tests/test_train.py, ``LEARN_RECIPE``) on several seeds.

Training is deterministic on one machine but not across CPU kernels (AVX2 / AVX-512 / AMX paths of
ATen and oneDNN), so the thresholds of ``test_tiny_dustrcnn_learns_to_find_storms_on_held_out_maps``
are set from runs of several seeds under emulated kernels. Each seed trains the recipe on the ``ci``
preset (synthesized with seed 0 into ``--data`` if missing) and scores its last checkpoint on the test
split, as the test does; ``--untrained`` also scores the untrained network of the first seed.

Run (one setting per call; the kernel choice must be in the environment before torch starts)::

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 \\
        .venv/bin/python benchmarks/learning_test_seeds.py --seeds 0 1 2 --threads 2 --csv seeds.csv

Prints one line per seed and appends them to ``--csv`` (default ``bench_out/learning_test_seeds.csv``):
seed, threads, ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, box mAP25, 12° mAP50, mask mAP50, seconds.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("seed", "threads", "aten_cpu_capability", "onednn_max_cpu_isa", "map25", "paper_map50", "mask_map50",
           "seconds")


def load_test_module():
    """tests/test_train.py as a module (the recipe and :func:`learning_scores` live there; the helpers it
    imports from tests/ are found as pytest finds them)."""
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    spec = importlib.util.spec_from_file_location("test_train", ROOT / "tests" / "test_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ensure_ci_data(data: Path) -> Path:
    """``data`` holding the ``ci`` preset with seed 0 (the tests' ``ci_data``), synthesized if missing."""
    if not (data / "archive").is_dir() or not (data / "mdad").is_dir():
        from marsdust.synth import synthesize

        synthesize(data, "ci", seed=0, progress=False)
    return data


def untrained_scores(module, data: Path, out_dir: Path, seed: int) -> dict[str, float]:
    """Scores of the recipe's network before any step (seed ``seed``) on the same test split."""
    import torch

    from marsdust.evaluate import EvaluateOptions, evaluate_checkpoint
    from marsdust.models import save_checkpoint
    from marsdust.train import TrainConfig, build_module

    torch.manual_seed(seed)
    config = TrainConfig(data=str(data), seed=seed, **{**module.LEARN_RECIPE, "max_steps": 1})
    module.train(config, out_dir / "split_run")  # only for its split.csv
    path = save_checkpoint(build_module(config).model, out_dir / "untrained.ckpt")
    metrics = evaluate_checkpoint(path, out_dir / "eval0", EvaluateOptions(
        data=str(data), split_file=str(out_dir / "split_run" / "split.csv"), n_figures=0, n_timed=0, progress=False))
    return {"map25": metrics["map25"], "paper_map50": metrics["paper_boxes"]["map50"],
            "mask_map50": metrics["segm"]["map50"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=ROOT / "bench_out" / "ci_data")
    parser.add_argument("--csv", type=Path, default=ROOT / "bench_out" / "learning_test_seeds.csv")
    parser.add_argument("--untrained", action="store_true", help="also score the untrained network")
    args = parser.parse_args(argv)

    module = load_test_module()
    data = ensure_ci_data(args.data)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    new_file = not args.csv.exists()
    env = (os.environ.get("ATEN_CPU_CAPABILITY", ""), os.environ.get("ONEDNN_MAX_CPU_ISA", ""))
    with open(args.csv, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new_file:
            writer.writerow(COLUMNS)
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                scores = module.learning_scores(data, Path(tmp), seed=seed, threads=args.threads)
                seconds = time.perf_counter() - start
            row = (seed, args.threads, *env, f"{scores['map25']:.3f}", f"{scores['paper_map50']:.3f}",
                   f"{scores['mask_map50']:.3f}", f"{seconds:.0f}")
            writer.writerow(row)
            handle.flush()
            print(" ".join(f"{name}={value}" for name, value in zip(COLUMNS, row)), flush=True)
        if args.untrained:
            with tempfile.TemporaryDirectory() as tmp:
                print("untrained:", untrained_scores(module, data, Path(tmp), args.seeds[0]), flush=True)


if __name__ == "__main__":
    sys.exit(main())
