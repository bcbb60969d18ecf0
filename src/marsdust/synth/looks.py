"""Look randomization: each map of a synthetic archive drawn with its own camera and storm look.

A detector trained on one simulator's maps learns that simulator's look of dust: its dust colour,
how a storm's edge fades, its noise, its compression. Real MOC and MARCI maps, and any other
synthetic Mars, look otherwise. With a :class:`LookRandomization` in ``SynthConfig.look``, every
sol (or a ``share`` of them) draws its own look around the camera's (:func:`draw_sol_look`), so training sees a wider
distribution of looks, not easier storms (every range is centred on the camera's own value in
log or linear terms, and the storms, their outlines and the catalogue are those of the archive
without it):

=====================  =====================================================================
what                   drawn per map
=====================  =====================================================================
dust colour            thick dust's red reflectance × U(0.8, 1.2), blue × U(0.7, 1.6) (red
                       to yellow-brown dust)
dust light             the dust's transmission mixes Beer–Lambert e^-τ with the saturating
                       1 / (1 + τ), the second's weight U(0, 1)
storm edge profile     storm optical depth τ → τ^g, g = exp(U(-0.4, 0.4)): thin skirts
                       fainter or thicker, sharp or soft edges
clouds                 water-ice cloud reflectance × U(0.7, 1.4)
camera                 noise σ × U(0.5, 3), seam steps × U(0.5, 2), each 8-bit channel's
                       gain × U(0.9, 1.1) and gamma exp(U(-0.25, 0.25))
compression            on half the maps a JPEG round trip at quality U(50, 95) (4:2:0)
=====================  =====================================================================

The draws come from their own random stream (planet seed, sol), so the weather, the swaths and
the gaps of an archive are the same with and without look randomization; only the pixels' look
and the catalogue's confidence levels (the red contrast of each storm) change.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from marsdust.synth.imaging import ImagingConfig
from marsdust.synth.writer import jpeg_round_trip

LOOK_STREAM = 53
"""Tag of the look draws' random stream (``default_rng([seed, LOOK_STREAM, day])``)."""


@dataclass(frozen=True)
class LookRandomization:
    """Ranges of the per-map look (see the module docstring). ``(low, high)`` pairs are uniform
    draws of a factor on the camera's own value; ``*_log`` values are half-ranges of a natural log.
    ``share`` is the fraction of maps drawn in a random look; the others keep their camera's."""

    share: float = 1.0
    dust_red_scale: tuple[float, float] = (0.8, 1.2)
    dust_blue_scale: tuple[float, float] = (0.7, 1.6)
    saturating_light: tuple[float, float] = (0.0, 1.0)
    storm_tau_gamma_log: float = 0.4
    cloud_scale: tuple[float, float] = (0.7, 1.4)
    noise_scale: tuple[float, float] = (0.5, 3.0)
    seam_scale: tuple[float, float] = (0.5, 2.0)
    channel_gain: float = 0.1
    channel_gamma_log: float = 0.25
    jpeg_probability: float = 0.5
    jpeg_quality: tuple[int, int] = (50, 95)


@dataclass(frozen=True)
class SolLook:
    """One map's drawn look: the camera's imaging with its dust, cloud and noise drawn, and what is
    done to its 8-bit RGB afterwards (:func:`finish_rgb`)."""

    imaging: ImagingConfig
    channel_gain: tuple[float, float, float]
    channel_gamma: tuple[float, float, float]
    jpeg_quality: int | None


def draw_sol_look(imaging: ImagingConfig, randomization: LookRandomization,
                  rng: np.random.Generator) -> SolLook | None:
    """Draw one map's look around the camera's ``imaging`` (a fixed order of draws from ``rng``); None (the
    camera's own look) for a map outside the randomization's ``share``."""
    r = randomization
    if r.share < 1.0 and rng.random() >= r.share:
        return None
    drawn = replace(
        imaging,
        dust_red=imaging.dust_red * rng.uniform(*r.dust_red_scale),
        dust_blue=imaging.dust_blue * rng.uniform(*r.dust_blue_scale),
        dust_light_saturation=float(rng.uniform(*r.saturating_light)),
        storm_tau_gamma=float(np.exp(rng.uniform(-r.storm_tau_gamma_log, r.storm_tau_gamma_log))),
        cloud_red=imaging.cloud_red * rng.uniform(*r.cloud_scale),
        cloud_blue=imaging.cloud_blue * rng.uniform(*r.cloud_scale),
        noise_std=imaging.noise_std * rng.uniform(*r.noise_scale),
        seam_gain_std=imaging.seam_gain_std * rng.uniform(*r.seam_scale),
    )
    gain = tuple(float(g) for g in rng.uniform(1.0 - r.channel_gain, 1.0 + r.channel_gain, size=3))
    gamma = tuple(float(g) for g in np.exp(rng.uniform(-r.channel_gamma_log, r.channel_gamma_log, size=3)))
    compress = rng.random() < r.jpeg_probability
    quality = int(rng.integers(r.jpeg_quality[0], r.jpeg_quality[1] + 1))
    return SolLook(drawn, gain, gamma, quality if compress else None)


def finish_rgb(rgb: np.ndarray, valid: np.ndarray, look: SolLook) -> np.ndarray:
    """The map's 8-bit RGB with the look's channel gains and gammas and its JPEG round trip.

    Missing pixels stay (0, 0, 0) and observed ones at least 1 in every channel, so black still
    means missing in a lossless file.
    """
    value = rgb.astype(np.float32) / 255.0
    for channel in range(3):
        value[..., channel] = np.power(value[..., channel], look.channel_gamma[channel]) * look.channel_gain[channel]
    out = np.clip(np.rint(value * 255.0), 1.0, 255.0).astype(np.uint8)
    if look.jpeg_quality is not None:
        out = jpeg_round_trip(out, valid, look.jpeg_quality)
        np.maximum(out, 1, out=out)
    out[~valid] = 0
    return out


__all__ = ["LookRandomization", "SolLook", "draw_sol_look", "finish_rgb", "LOOK_STREAM"]
