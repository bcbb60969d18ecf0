"""The GPU path: the same commands with ``device="cuda"`` give the CPU's results.

CI has no GPU, so these tests are skipped there; ``benchmarks/gpu_check.sh`` runs them on a GPU
machine. ``MARSDUST_TEST_DEVICE=cpu`` runs them on the CPU against itself, which checks the tests'
own logic on a machine without a GPU.

* detections of an archive on the device, in batches with several reader and writer threads,
  match a plain CPU run (same storms, scores and areas within float32 tolerance);
* a few training steps on the device lower the loss, and the checkpoint detects on a CPU.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from marsdust import detect
from marsdust.grid import MapGrid
from marsdust.models import build_model, load_model, save_checkpoint

DEVICE = os.environ.get("MARSDUST_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs these on one)")


@pytest.fixture(autouse=True)
def _full_float32():
    """TF32 convolutions and products differ from the CPU by ~1e-3; compare in full float32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _archive(root, n_maps: int = 6):
    """``n_maps`` 0.4° maps with bright patches (one across 180°) and a list_ls.txt."""
    grid = MapGrid.moc(0.4)
    folder = root / "R18"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for sol in range(1, n_maps + 1):
        rgb = rng.integers(40, 90, grid.shape + (3,), dtype=np.uint8)
        for row, col in ((80, 100 + 40 * sol), (180, 600), (150, 890)):
            rgb[row:row + 40, col:col + 60] = (250, 220, 190)
        rgb[:, 400:420] = 0
        Image.fromarray(rgb, "RGB").save(folder / f"r18_{sol:03d}.png")
        lines.append(f"r18_{sol:03d} 25 {100 + sol}")
    (folder / "list_ls.txt").write_text("\n".join(lines) + "\n")
    return root


def _matched(reference: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """Each reference detection with the other run's detection on the same map nearest in box."""
    rows = []
    for map_id, ref in reference.groupby("map_id"):
        candidates = other[other["map_id"] == map_id]
        for det in ref.itertuples():
            if candidates.empty:
                continue
            distance = (np.abs(candidates[["x0", "y0", "x1", "y1"]].to_numpy() -
                               np.array([det.x0, det.y0, det.x1, det.y1]))).max(axis=1)
            best = candidates.iloc[int(np.argmin(distance))]
            rows.append({"box_px": float(distance.min()), "score": abs(best["score"] - det.score),
                         "area": abs(best["area_km2"] - det.area_km2) / max(det.area_km2, 1.0)})
    return pd.DataFrame(rows)


def test_archive_detections_on_the_device_match_the_cpu(tiny_detector, tmp_path):
    torch.manual_seed(0)
    model = build_model("dustrcnn", **{**tiny_detector, "box_detections_per_img": 10, "map_res_deg": 0.8})
    checkpoint = save_checkpoint(model.eval(), tmp_path / "tiny.ckpt")
    archive = _archive(tmp_path / "archive")
    detect.detect_archive(checkpoint, archive, tmp_path / "cpu", settings=detect.DetectSettings(0.0, engine="plain"),
                          execution=detect.DetectExecution(progress=False))
    detect.detect_archive(checkpoint, archive, tmp_path / "device", settings=detect.DetectSettings(0.0),
                          execution=detect.DetectExecution(DEVICE, batch_size=4, progress=False))
    cpu, device = (pd.read_csv(tmp_path / name / "detections.csv") for name in ("cpu", "device"))
    assert len(cpu) >= 20
    assert abs(len(device) - len(cpu)) <= 0.05 * len(cpu)
    matched = _matched(cpu, device)
    close = (matched["box_px"] < 0.5) & (matched["score"] < 1e-3)
    assert close.mean() >= 0.95, matched.describe()
    assert (matched.loc[close, "area"] < 0.02).all()


def test_training_steps_on_the_device_lower_the_loss_and_the_checkpoint_detects_on_cpu(ci_data, tmp_path):
    from marsdust.train import TrainConfig, train

    accelerator = "gpu" if DEVICE.startswith("cuda") else "cpu"
    config = TrainConfig(data=str(ci_data), model_preset="small_cpu", map_res_deg=0.8, max_steps=30,
                         val_every_n_steps=30, num_workers=2, progress=False, seed=0, accelerator=accelerator,
                         devices=1)
    summary = train(config, tmp_path / "run")
    assert summary["global_step"] == 30
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    loss = metrics["train_loss"].dropna().to_numpy(float)
    assert len(loss) == 30 and np.isfinite(loss).all()
    assert loss[-5:].mean() < 0.8 * loss[:5].mean()

    model = load_model(summary["best_checkpoint"])  # loads onto the CPU
    assert next(model.parameters()).device.type == "cpu"
    first_map = next((ci_data / "archive").glob("*/*.png"))
    result = detect.detect_map(model, first_map, map_id=first_map.stem, mars_year=24, ls=150.0, device="cpu")
    assert result.valid_fraction > 0
