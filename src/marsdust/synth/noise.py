"""Band-limited random fields (Fourier-filtered noise) used for the ground, clouds and storms.

Wavelengths are given in degrees, so a field looks the same at any map resolution. Patterns
that must be identical across resolutions (the planet's large-scale ground) are drawn on a fixed
coarse grid and interpolated (:func:`resize_periodic`).
"""

from __future__ import annotations

import numpy as np


def spectral_field(
    shape: tuple[int, int],
    res_deg: float,
    rng: np.random.Generator,
    slope: float = 3.0,
    min_wavelength_deg: float = 0.0,
    max_wavelength_deg: float = 360.0,
) -> np.ndarray:
    """A periodic random field with a power-law spectrum, unit standard deviation.

    Parameters
    ----------
    shape : (rows, columns)
        Field size in pixels of ``res_deg`` degrees; the field wraps around on both axes.
    res_deg : float
        Pixel size in degrees.
    rng : numpy Generator
        Source of randomness.
    slope : float
        Power spectrum ∝ k^-slope (3 gives natural-looking terrain, 2 rougher texture).
    min_wavelength_deg, max_wavelength_deg : float
        Band limits in degrees: wavelengths outside are removed.

    Returns
    -------
    ndarray of float32, ``shape``
    """
    rows, cols = shape
    ky = np.fft.fftfreq(rows, d=res_deg)[:, None]
    kx = np.fft.rfftfreq(cols, d=res_deg)[None, :]
    k = np.sqrt(kx**2 + ky**2).astype(np.float32)
    amplitude = np.zeros_like(k)
    band = (k >= 1.0 / max_wavelength_deg) & (k > 0)
    if min_wavelength_deg > 0:
        band &= k <= 1.0 / min_wavelength_deg
    amplitude[band] = k[band] ** (-slope / 2.0)
    spectrum = amplitude * (
        rng.standard_normal(k.shape, dtype=np.float32) + 1j * rng.standard_normal(k.shape, dtype=np.float32)
    )
    field = np.fft.irfft2(spectrum, s=shape).astype(np.float32)
    std = float(field.std())
    return field / std if std > 0 else field


def resize_periodic(field: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a field that wraps in longitude (columns) to ``shape`` (rows, columns)."""
    from scipy import ndimage

    zoom = (shape[0] / field.shape[0], shape[1] / field.shape[1])
    out = ndimage.zoom(field, zoom, order=1, mode="grid-wrap", grid_mode=True)
    return out[: shape[0], : shape[1]].astype(np.float32)
