"""Appearance shifts of a map for robustness tests: what a different camera, mission or processing does.

Each function takes a :class:`marsdust.mdgm.MapImage` as read (float32 RGB reflectance in [0, 1] on
the map's own, native grid) and returns a new one with the same grid, path and validity mask. Only
observed pixels change: missing pixels (``valid`` False, 0 in all bands) stay 0, and the result is
clipped to [0, 1]. Every function is deterministic (the noise is seeded by the map's file name) and
is the identity at zero severity (gains 1, exponent 1, factor 1, σ 0, step 0), except
:func:`jpeg_round_trip`, which is lossy at every quality.

These are *test* conditions, held fixed for every map, unlike the random training jitter of
:func:`marsdust.data.jitter_appearance`, which draws new values per map and acts on the
working-resolution image. Spatial sizes here (blur σ, swath widths) are in native pixels, before
``marsdust.detect`` block-averages the map to the model's working resolution.

:func:`standard_conditions` names the set ``benchmarks/bench_shift.py`` scores.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from marsdust.mdgm import MapImage

ImageTransform = Callable[[MapImage], MapImage]
"""A function from a map as read to a map of the same grid (e.g. ``EvaluateOptions(transform_image=...)``)."""


def with_observed_rgb(image: MapImage, rgb: np.ndarray) -> MapImage:
    """``image`` with new pixel values: clipped to [0, 1], float32, missing pixels set to 0."""
    out = np.clip(rgb, 0.0, 1.0).astype(np.float32, copy=False)
    out[~image.valid] = 0.0
    return MapImage(rgb=out, valid=image.valid, grid=image.grid, path=image.path)


def color_balance(image: MapImage, gains: tuple[float, float, float]) -> MapImage:
    """Multiply the red, green and blue bands by ``gains`` (dimensionless; (1, 1, 1) is the identity)."""
    return with_observed_rgb(image, image.rgb * np.asarray(gains, dtype=np.float32))


def gamma(image: MapImage, exponent: float) -> MapImage:
    """Raise every band to ``exponent`` (< 1 brightens, > 1 darkens mid-tones; 1 is the identity)."""
    return with_observed_rgb(image, np.power(np.clip(image.rgb, 0.0, 1.0), np.float32(exponent)))


def contrast(image: MapImage, factor: float) -> MapImage:
    """Scale each band's deviation from its mean over the observed pixels by ``factor`` (1 is the identity)."""
    if not image.valid.any():
        return with_observed_rgb(image, image.rgb)
    mean = image.rgb[image.valid].mean(axis=0)
    return with_observed_rgb(image, (image.rgb - mean) * np.float32(factor) + mean)


def gaussian_blur(image: MapImage, sigma_px: float) -> MapImage:
    """Gaussian blur of σ ``sigma_px`` native pixels over the observed pixels only.

    Normalised convolution: missing pixels neither darken their observed neighbours nor get filled.
    Longitude wraps across 180°; latitude edges repeat the edge row.
    """
    if sigma_px <= 0:
        return with_observed_rgb(image, image.rgb)
    from scipy.ndimage import gaussian_filter

    weight = image.valid.astype(np.float32)
    blurred = gaussian_filter(image.rgb * weight[..., None], sigma=(sigma_px, sigma_px, 0),
                              mode=("nearest", "wrap", "nearest"))
    norm = gaussian_filter(weight, sigma=sigma_px, mode=("nearest", "wrap"))
    return with_observed_rgb(image, blurred / np.maximum(norm, 1e-6)[..., None])


def map_seed(image: MapImage, seed: int) -> int:
    """A seed for ``image`` from ``seed`` and its file name (the same map draws the same noise wherever it lies)."""
    name = Path(image.path.split("::")[-1]).name if image.path else ""
    return zlib.crc32(name.encode()) ^ int(seed)


def gaussian_noise(image: MapImage, sigma: float, seed: int = 0) -> MapImage:
    """Add independent Gaussian noise of σ ``sigma`` (reflectance, 0–1 scale) to every band of every pixel.

    Drawn from ``numpy.random.default_rng(map_seed(image, seed))``: reproducible per map.
    """
    if sigma <= 0:
        return with_observed_rgb(image, image.rgb)
    rng = np.random.default_rng(map_seed(image, seed))
    return with_observed_rgb(image, image.rgb + rng.normal(0.0, sigma, size=image.rgb.shape).astype(np.float32))


def jpeg_round_trip(image: MapImage, quality: int) -> MapImage:
    """Encode the map as 8-bit JPEG at ``quality`` (1–95; PIL's default 4:2:0 chroma subsampling) and decode it."""
    from PIL import Image

    rgb_u8 = np.round(np.clip(image.rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb_u8, mode="RGB").save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    decoded = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / np.float32(255.0)
    return with_observed_rgb(image, decoded)


def swath_steps(image: MapImage, step: float, count: int = 13) -> MapImage:
    """Add ``+step, -step, +step, ...`` (reflectance) to ``count`` equal-width vertical swaths, west to east.

    A fixed pattern: every boundary between swaths is a brightness step of ``2 * step``, as
    mosaicking orbits of different calibration leaves.
    """
    width = image.rgb.shape[1]
    edges = np.linspace(0, width, count + 1).astype(int)
    offsets = np.where(np.arange(count) % 2 == 0, step, -step).astype(np.float32)
    return with_observed_rgb(image, image.rgb + np.repeat(offsets, np.diff(edges))[None, :, None])


def standard_conditions() -> dict[str, tuple[str, ImageTransform]]:
    """The appearance shifts scored by ``benchmarks/bench_shift.py``: name -> (description, transform).

    Severities are fixed so that runs compare. Blur σ is in native pixels; noise σ and swath
    steps in reflectance (0–1).
    """
    return {
        "color_warm": ("colour balance R×1.15 G×1.0 B×0.85", partial(color_balance, gains=(1.15, 1.0, 0.85))),
        "color_cool": ("colour balance R×0.85 G×1.0 B×1.15", partial(color_balance, gains=(0.85, 1.0, 1.15))),
        "gamma_0.7": ("gamma 0.7 (brighter mid-tones)", partial(gamma, exponent=0.7)),
        "gamma_1.4": ("gamma 1.4 (darker mid-tones)", partial(gamma, exponent=1.4)),
        "contrast_0.7": ("contrast ×0.7 around each band's mean", partial(contrast, factor=0.7)),
        "contrast_0.5": ("contrast ×0.5 around each band's mean", partial(contrast, factor=0.5)),
        "blur_1": ("Gaussian blur σ 1 native px", partial(gaussian_blur, sigma_px=1.0)),
        "blur_2": ("Gaussian blur σ 2 native px", partial(gaussian_blur, sigma_px=2.0)),
        "noise_0.03": ("Gaussian noise σ 0.03 per native px", partial(gaussian_noise, sigma=0.03)),
        "noise_0.06": ("Gaussian noise σ 0.06 per native px", partial(gaussian_noise, sigma=0.06)),
        "jpeg_30": ("JPEG quality 30 (PIL, 4:2:0)", partial(jpeg_round_trip, quality=30)),
        "swaths_0.05": ("13 vertical swaths ±0.05 (alternating)", partial(swath_steps, step=0.05)),
    }
