"""Benchmark: what the CPU's own speed-ups give training (steps/s) and detection (s/map).

The default recipe of ``marsdust train`` (:class:`marsdust.train.TrainConfig` defaults) on a
synthetic archive (``--data``, e.g. ``marsdust synth DATA --preset demo``): the training maps of
its temporal split are loaded once (augmented, the run's data path) and every variant trains a
copy of the same freshly initialised detector on the same batches:

``fp32``
    What ``precision: 32-true`` runs.
``bf16``
    ``torch.autocast("cpu", dtype=torch.bfloat16)`` around the forward pass (Lightning's
    ``bf16-mixed`` on a CPU).
``channels_last``
    The detector's weights in channels-last memory layout, fp32.
``bf16_channels_last``
    Both.
``compile`` / ``bf16_compile``
    The backbone and FPN (``model.backbone``, most of the arithmetic) through ``torch.compile``
    (inductor), fp32 / bf16 autocast; the RPN and RoI heads, whose shapes change with every batch's
    proposals, stay eager. Compilation happens in the warm-up steps (one per distinct image size of
    the batches, at least ``--warmup``), reported apart as ``warmup_s``: a cold compile in round 0,
    inductor's on-disk cache in later rounds.

Variants alternate (fp32, bf16, ..., fp32, bf16, ...) ``--rounds`` times, each round ``--steps``
optimizer steps per variant after ``--warmup`` untimed ones, so a change of load on a shared
machine hits them alike; the report gives each variant's median steps/s, its ratio to fp32, and
the same for detection (the model in eval mode over the validation maps, seconds per map). The CPU
model, its bf16 flags (``/proc/cpuinfo``), torch's CPU capability, the threads and the load average
(``os.getloadavg``) before and after are in the output.

Run::

    .venv/bin/python benchmarks/bench_cpu_training.py --data data/demo             # a few minutes
    .venv/bin/python benchmarks/bench_cpu_training.py --data data/ci --steps 3 --rounds 1   # smoke

Writes ``OUT/cpu_training.json`` and ``OUT/cpu_training.csv`` (default ``bench_out/cpu_training``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

VARIANTS = {"fp32": (False, False, False), "bf16": (True, False, False), "channels_last": (False, True, False),
            "bf16_channels_last": (True, True, False), "compile": (False, False, True),
            "bf16_compile": (True, False, True)}
"""Variant name → (bf16 autocast, channels-last weights, compiled backbone)."""


def _batches(data: str, n_batches: int, seed: int, n_val: int):
    """``n_batches`` training batches and the validation images of the default recipe on ``data``."""
    from marsdust.train.config import TrainConfig, load_tables, split_for
    from marsdust.train.lightning import DustDataModule

    config = TrainConfig(data=data, num_workers=0, progress=False, seed=seed)
    index_df, storms_df = load_tables(config)
    datamodule = DustDataModule(config, index_df, storms_df, split_for(config, index_df))
    loader = iter(datamodule.train_dataloader())
    train = [next(loader) for _ in range(n_batches)]
    val_images = [datamodule.val_set[i][0] for i in range(min(len(datamodule.val_set), n_val))]
    return config, train, val_images


def _autocast(bf16: bool):
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _train_rate(module, optimizer, batches, variant: str, warmup: int) -> tuple[float, float]:
    """Optimizer steps per second of ``module`` over ``batches`` (the first ``warmup`` untimed), and the
    seconds of those warm-up steps (where a compiled variant compiles)."""
    from marsdust.train.lightning import targets_for_model

    bf16 = VARIANTS[variant][0]
    module.model.train()
    t0 = start = time.perf_counter()
    for i, (images, targets) in enumerate(batches):
        if i == warmup:
            t0 = time.perf_counter()
        with _autocast(bf16):
            losses = module.model(images, targets_for_model(targets, module.model.has_masks))
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (len(batches) - warmup) / (time.perf_counter() - t0), t0 - start


def _batch_size_key(batch) -> tuple:
    """The padded size a batch reaches the backbone at (its largest image's height and width)."""
    images, _ = batch
    return max(image.shape[-2] for image in images), max(image.shape[-1] for image in images)


def _sizes_first(batches: list) -> tuple[list, int]:
    """``batches`` with the first batch of each padded size moved to the front, and how many sizes there are:
    a compiled backbone compiles once per size, so warm-up steps that see every size leave none to the timing."""
    firsts, seen = [], set()
    for i, batch in enumerate(batches):
        if _batch_size_key(batch) not in seen:
            seen.add(_batch_size_key(batch))
            firsts.append(i)
    rest = [batch for i, batch in enumerate(batches) if i not in firsts]
    return [batches[i] for i in firsts] + rest, len(firsts)


def _detect_seconds_per_map(module, images, variant: str) -> float:
    import torch

    bf16 = VARIANTS[variant][0]
    module.model.eval()
    with torch.inference_mode(), _autocast(bf16):
        for size in {tuple(image.shape): image for image in images}.values():  # warm-up (compiles), every size
            module.model([size])
        t0 = time.perf_counter()
        for image in images:
            module.model([image])
    return (time.perf_counter() - t0) / len(images)


def _cpu_line() -> dict:
    import torch

    from marsdust.train.hardware import cpu_info

    info = cpu_info()
    return {"cpu_model": info.model, "bf16_flags": list(info.bf16_flags), "torch_cpu_capability": info.capability,
            "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "torch": torch.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="synthetic data folder (archive/ and mdad/)")
    parser.add_argument("-o", "--out", default="bench_out/cpu_training")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from " + ", ".join(VARIANTS))
    parser.add_argument("--detect-maps", type=int, default=8, help="validation maps timed per detection run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    from marsdust.train.lightning import build_module

    variants = [v.strip() for v in args.variants.split(",")]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    if "fp32" not in variants:
        variants.insert(0, "fp32")
    load_before = os.getloadavg()
    compiled = any(VARIANTS[v][2] for v in variants)
    n_batches = args.warmup + args.steps + (2 if compiled else 0)  # spare batches for a warm-up over every size
    config, batches, val_images = _batches(args.data, n_batches, args.seed, args.detect_maps)
    if compiled:
        batches, n_sizes = _sizes_first(batches)
        args.warmup = max(args.warmup, n_sizes)
        batches = batches[: args.warmup + args.steps]
    torch.manual_seed(args.seed)
    base = build_module(config)
    rows = []
    for round_index in range(args.rounds):
        for variant in variants:
            module = copy.deepcopy(base)
            if VARIANTS[variant][1]:
                module.model.to(memory_format=torch.channels_last)
            optimizer = module.configure_optimizers()["optimizer"]
            if VARIANTS[variant][2]:
                torch._dynamo.reset()  # every round traces afresh; inductor's on-disk cache (/tmp/torchinductor_*)
                # still serves later rounds, so a cold compile shows in round 0's warm-up only
                module.model.backbone = torch.compile(module.model.backbone)
            rate, warmup_s = _train_rate(module, optimizer, batches, variant, args.warmup)
            seconds = _detect_seconds_per_map(module, val_images, variant)
            rows.append({"round": round_index, "variant": variant, "train_steps_per_s": rate,
                         "detect_s_per_map": seconds, "warmup_s": warmup_s, "load_1min": os.getloadavg()[0]})
            print(f"round {round_index} {variant:<20} train {rate:6.3f} steps/s   detect {seconds:6.3f} s/map",
                  flush=True)
    summary = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               **_cpu_line(), "data": args.data, "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
               "batch_size": config.batch_size, "model_preset": config.model_preset, "map_res_deg": config.map_res_deg,
               "load_before": load_before, "load_after": os.getloadavg(), "variants": {}}
    fp32 = [r for r in rows if r["variant"] == "fp32"]
    fp32_rate = statistics.median(r["train_steps_per_s"] for r in fp32)
    fp32_detect = statistics.median(r["detect_s_per_map"] for r in fp32)
    for variant in variants:
        mine = [r for r in rows if r["variant"] == variant]
        rate = statistics.median(r["train_steps_per_s"] for r in mine)
        detect = statistics.median(r["detect_s_per_map"] for r in mine)
        summary["variants"][variant] = {"train_steps_per_s": rate, "train_ratio_to_fp32": rate / fp32_rate,
                                        "detect_s_per_map": detect, "detect_ratio_to_fp32": detect / fp32_detect,
                                        "warmup_s": statistics.median(r["warmup_s"] for r in mine)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu_training.json").write_text(json.dumps({**summary, "rows": rows}, indent=2) + "\n")
    with open(out / "cpu_training.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"cpu: {summary['cpu_model']}  bf16 flags: {','.join(summary['bf16_flags']) or 'none'}  "
          f"torch capability {summary['torch_cpu_capability']}  threads {summary['threads']}  "
          f"load {load_before[0]:.2f} -> {summary['load_after'][0]:.2f}")
    for variant, values in summary["variants"].items():
        print(f"{variant:<20} train {values['train_steps_per_s']:6.3f} steps/s (x{values['train_ratio_to_fp32']:.2f})"
              f"   detect {values['detect_s_per_map']:6.3f} s/map (x{values['detect_ratio_to_fp32']:.2f})"
              f"   warm-up {values['warmup_s']:.1f} s ({args.warmup} steps)")
    print(f"wrote {out / 'cpu_training.json'} and {out / 'cpu_training.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
