"""Appearance shifts of :mod:`marsdust.shift`: observed pixels only, values in [0, 1], identity at zero severity,
deterministic; and ``evaluate_checkpoint`` with ``EvaluateOptions(transform_image=...)`` detects on the
shifted maps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from marsdust.grid import MapGrid
from marsdust.mdgm import MapImage
from marsdust.shift import (
    color_balance,
    contrast,
    gamma,
    gaussian_blur,
    gaussian_noise,
    jpeg_round_trip,
    standard_conditions,
    swath_steps,
)

GRID = MapGrid(lat_north_deg=60.0, lat_south_deg=-60.0, res_deg=4.0)  # 30 x 90 px


def sample_map(path: str = "archive/E01/e01_003.png") -> MapImage:
    """A smooth map with bright and dark areas, a missing block and a missing band of columns."""
    rows, cols = np.mgrid[0:GRID.height, 0:GRID.width].astype(np.float32)
    base = 0.5 + 0.45 * np.sin(cols / 7.0) * np.cos(rows / 5.0)
    rgb = np.stack([base, 0.9 * base, 0.7 * base + 0.05], axis=-1).astype(np.float32)
    valid = np.ones(GRID.shape, dtype=bool)
    valid[10:18, 20:35] = False
    valid[:, 80:86] = False
    rgb[~valid] = 0.0
    return MapImage(rgb=rgb, valid=valid, grid=GRID, path=path)


SHIFTS = standard_conditions()


@pytest.mark.parametrize("name", list(SHIFTS))
def test_every_shift_keeps_missing_pixels_zero_values_in_range_and_repeats_exactly(name):
    image = sample_map()
    shifted = SHIFTS[name][1](image)
    assert shifted.rgb.dtype == np.float32 and shifted.rgb.shape == image.rgb.shape
    assert np.array_equal(shifted.valid, image.valid) and shifted.grid == image.grid and shifted.path == image.path
    assert np.all(shifted.rgb[~image.valid] == 0.0)
    assert shifted.rgb.min() >= 0.0 and shifted.rgb.max() <= 1.0
    assert np.abs(shifted.rgb - image.rgb)[image.valid].mean() > 0.005  # it does shift the observed pixels
    assert np.array_equal(SHIFTS[name][1](image).rgb, shifted.rgb)
    assert np.array_equal(image.rgb, sample_map().rgb)  # the input is not modified


@pytest.mark.parametrize("shift", [lambda m: color_balance(m, (1.0, 1.0, 1.0)), lambda m: gamma(m, 1.0),
                                   lambda m: contrast(m, 1.0), lambda m: gaussian_blur(m, 0.0),
                                   lambda m: gaussian_noise(m, 0.0), lambda m: swath_steps(m, 0.0)],
                         ids=["color", "gamma", "contrast", "blur", "noise", "swaths"])
def test_zero_severity_is_the_identity(shift):
    image = sample_map()
    assert np.allclose(shift(image).rgb, image.rgb, atol=1e-6)


def test_jpeg_at_top_quality_is_close_and_at_low_quality_is_not():
    image = sample_map()
    error = {q: np.abs(jpeg_round_trip(image, q).rgb - image.rgb)[image.valid].mean() for q in (95, 30, 5)}
    assert error[95] < 2.5 / 255 < error[5]
    assert error[95] < error[30] < error[5]


def test_shifts_have_the_stated_effect():
    image = sample_map()
    observed = image.valid
    before, warm = image.rgb[observed], color_balance(image, (1.15, 1.0, 0.85)).rgb[observed]
    assert np.allclose(warm[:, 1], before[:, 1])
    assert warm[:, 0].mean() > before[:, 0].mean() > 0 and warm[:, 2].mean() < before[:, 2].mean()
    flat = contrast(image, 0.5).rgb[observed]
    assert np.allclose(flat.mean(axis=0), image.rgb[observed].mean(axis=0), atol=1e-5)
    assert np.allclose(flat.std(axis=0), 0.5 * image.rgb[observed].std(axis=0), rtol=1e-3)
    assert (gamma(image, 0.7).rgb[observed] >= image.rgb[observed] - 1e-7).all()
    noise = gaussian_noise(image, 0.03).rgb - image.rgb
    assert np.std(noise[observed & (image.rgb.min(axis=-1) > 0.15)]) == pytest.approx(0.03, rel=0.1)
    assert not np.array_equal(gaussian_noise(image, 0.03).rgb,
                              gaussian_noise(sample_map("archive/E01/e01_004.png"), 0.03).rgb)  # per-map noise
    swaths = swath_steps(MapImage(np.full_like(image.rgb, 0.5), np.ones(GRID.shape, bool), GRID), 0.05).rgb
    assert sorted(np.unique(swaths[0, :, 0]).round(4)) == [0.45, 0.55]
    assert (np.diff(swaths[0, :, 0]) != 0).sum() == 12  # 13 swaths


def test_blur_averages_observed_pixels_only_and_wraps_in_longitude():
    uniform = MapImage(np.where(sample_map().valid[..., None], 0.6, 0.0).astype(np.float32), sample_map().valid, GRID)
    blurred = gaussian_blur(uniform, 2.0)
    assert np.allclose(blurred.rgb[uniform.valid], 0.6, atol=1e-5)  # no darkening beside the gaps
    edge = MapImage(np.zeros((GRID.height, GRID.width, 3), np.float32), np.ones(GRID.shape, bool), GRID)
    edge.rgb[:, 0] = 1.0
    wrapped = gaussian_blur(edge, 1.0).rgb
    assert wrapped[5, -1, 0] == pytest.approx(wrapped[5, 1, 0]) and wrapped[5, -1, 0] > 0.1  # across 180°


def test_evaluate_checkpoint_detects_on_the_transformed_maps(ci_data, tmp_path, monkeypatch, ci_threads):
    """``detect_map`` gets each map as the transform returned it; without a transform, as read."""
    import marsdust.detect as detect
    from marsdust.evaluate import EvaluateOptions, evaluate_checkpoint, runner
    from marsdust.models import SMALL_CPU, build_model, save_checkpoint

    real_detect_map, given = detect.detect_map, []

    def recording_detect_map(model, image, **kwargs):
        given.append((image.path, float(image.rgb.sum()), int(image.valid.sum())))
        return real_detect_map(model, image, **kwargs)

    monkeypatch.setattr(runner, "detect_map", recording_detect_map)  # where evaluate_checkpoint looks it up
    checkpoint = save_checkpoint(build_model("dustrcnn", **dict(SMALL_CPU), map_res_deg=0.8), tmp_path / "model.ckpt")
    split = tmp_path / "split.csv"
    pd.DataFrame({"map_id": ["s03_001", "s07_009"], "split": "test"}).to_csv(split, index=False)

    def erase(image: MapImage) -> MapImage:
        return MapImage(np.zeros_like(image.rgb), np.zeros_like(image.valid), image.grid, image.path)

    def evaluate(name, transform):
        given.clear()
        evaluate_checkpoint(checkpoint, tmp_path / name, EvaluateOptions(
            data=str(ci_data), split_file=str(split), n_figures=0, n_timed=0, progress=False,
            transform_image=transform))
        return list(given), pd.read_csv(tmp_path / name / "per_map.csv")

    clean, _ = evaluate("clean", None)
    darker, _ = evaluate("gamma", lambda m: gamma(m, 1.4))
    erased, erased_maps = evaluate("erased", erase)
    assert len(clean) == len(darker) == len(erased) == 2
    assert all(c[2] > 0 and c[1] > d[1] > 0 and c[2] == d[2] for c, d in zip(clean, darker))
    assert all(e[1:] == (0.0, 0) for e in erased) and (erased_maps["valid_fraction"] == 0).all()
