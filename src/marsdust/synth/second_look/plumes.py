"""Drawing one second-look storm on a map: frontal arcs and puff plumes, textured with billows.

Modelling choices (unlike :func:`marsdust.synth.storms.storm_field`, a noise-warped ellipse with a
cellular texture of |Gaussian noise| 40–250 km):

* **Frontal arc** (:func:`front_density`): dust piled against a curved front (a circular arc of
  radius ``bend_km`` bulging toward the motion, wavy with a few lobes). The leading edge is
  sharp (Gaussian fall-off over a few tens of km); behind it the dust thins exponentially over
  ``width_km`` (a diffuse trailing edge); the arc's ends taper off.
* **Puff plume** (:func:`puff_density`): a union of elongated Gaussian puffs strung along a
  curved path, older puffs downwind larger and more diluted; overlapping puffs saturate
  (density 1 − exp(−Σ puffs)), so the outline is a lumpy, many-lobed union.
* **Billows** (:func:`billow_texture`): Kelvin–Helmholtz-like bands across the motion
  (wavelength 70–140 km, bent by value noise) with clumps and a fine grain, moving with the storm.

A storm's *density* D (0–1, smooth, no texture) defines its outline, D ≥ :data:`OUTLINE_DENSITY`
(where a human would draw it); its dust optical depth is ``tau · D^0.85 · billows`` and keeps
falling off outside the outline, so trailing edges fade into the haze.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marsdust.grid import MapGrid
from marsdust.synth.second_look.texture import LocalBox, ValueNoise, local_box, rotate
from marsdust.synth.second_look.weather import FRONT, PlumeState

OUTLINE_DENSITY = 0.3
"""Density at a storm's outline."""
MAX_PUFFS = 10
"""Most puffs in a plume (a plume gains puffs as it ages)."""


@dataclass(frozen=True)
class PlumeTextures:
    """Lattice noises shared by every storm of a planet (each storm reads them at its own offset)."""

    bend: ValueNoise
    clumps: ValueNoise
    grain: ValueNoise

    @classmethod
    def draw(cls, seed: int) -> "PlumeTextures":
        rng = np.random.default_rng([seed, 121])
        return cls(*(ValueNoise.draw(64, 64, rng) for _ in range(3)))


@dataclass
class PlumeField:
    """A storm drawn in its box: density D (smooth) and dust optical depth, float32 (n, m)."""

    box: LocalBox
    density: np.ndarray
    tau: np.ndarray

    @property
    def inside(self) -> np.ndarray:
        """The storm's outline: D ≥ :data:`OUTLINE_DENSITY`."""
        return self.density >= OUTLINE_DENSITY


def front_density(state: PlumeState, along: np.ndarray, across: np.ndarray) -> np.ndarray:
    """Density of a frontal arc at (along, across) km from its centre, along = direction of motion."""
    rng = np.random.default_rng([state.shape_seed, 1])
    radius = np.float32(max(state.bend_km, 200.0))
    from_centre = along + radius
    s = np.hypot(from_centre, across) - radius  # > 0 ahead of the front
    phi = np.arctan2(across, from_centre)
    half_angle = np.float32(min(state.length_km / (2.0 * radius), 1.3))
    lobes = np.zeros_like(s)
    for m, (amp, phase) in enumerate(zip(rng.uniform(0.3, 1.0, 4), rng.uniform(0, 2 * np.pi, 4)), start=2):
        shift = np.float32(phase + 0.35 * state.age)
        lobes += np.float32(amp / m) * np.sin(np.float32(m * np.pi / half_angle) * phi + shift)
    s = s + np.float32(0.35 * state.width_km) * lobes
    t = np.abs(phi) / half_angle
    envelope = np.where(t < 0.75, 1.0, np.cos(np.clip((t - 0.75) / 0.45, 0.0, 1.0) * (np.pi / 2)) ** 2)
    lead = np.float32(0.06 * state.width_km + 15.0)
    width = np.float32(state.width_km)
    behind = np.exp(s / width) * np.exp(-(np.minimum(s + 1.5 * width, 0.0) / (0.4 * width)) ** 2)
    profile = np.where(s > 0, np.exp(-((s / lead) ** 2)), behind)
    return (envelope * profile).astype(np.float32)


def puff_density(state: PlumeState, along: np.ndarray, across: np.ndarray) -> np.ndarray:
    """Density of a plume of puffs at (along, across) km from its centre, along = direction of drift."""
    rng = np.random.default_rng([state.shape_seed, 2])
    slots, lateral = rng.uniform(0.0, 1.0, MAX_PUFFS), rng.normal(0.0, 0.5, MAX_PUFFS)
    size = rng.uniform(0.5, 1.4, MAX_PUFFS)
    count = min(MAX_PUFFS, 3 + state.age + int(rng.integers(0, 3)))
    length, width = np.float32(state.length_km), np.float32(state.width_km)
    total = np.zeros_like(along)
    for k in range(count):
        fraction = (k + slots[k]) / count  # 0 upwind (new puffs) … 1 downwind (old puffs)
        u = (fraction - 0.5) * length
        v = lateral[k] * width + u * u / (2.0 * state.bend_km)
        slope = np.arctan(u / state.bend_km)
        du, dv = along - np.float32(u), across - np.float32(v)
        c, s = np.float32(np.cos(slope)), np.float32(np.sin(slope))
        sigma_across = width * np.float32((0.25 + 0.3 * fraction) * size[k])
        sigma_along = np.float32(1.4) * sigma_across
        r2 = ((du * c + dv * s) / sigma_along) ** 2 + ((-du * s + dv * c) / sigma_across) ** 2
        total += np.float32(1.3 * np.exp(-0.7 * fraction)) * np.exp(-0.5 * r2)
    return (1.0 - np.exp(-total)).astype(np.float32)


def billow_texture(state: PlumeState, along: np.ndarray, across: np.ndarray, textures: PlumeTextures) -> np.ndarray:
    """Multiplicative texture (mean ≈ 1): billow bands across the motion, clumps and grain."""
    rng = np.random.default_rng([state.shape_seed, 3])
    wavelength = rng.uniform(70.0, 140.0)
    oy, ox = (float(v) for v in rng.uniform(0, 64, 2))
    moved = along - np.float32(150.0 * state.age)
    phase = np.float32(2 * np.pi / wavelength) * moved + 3.5 * textures.bend.sample(across / 200 + oy, moved / 200 + ox)
    clumps = textures.clumps.sample(across / 220 + oy, moved / 220 + ox)
    grain = textures.grain.sample(across / 55 + oy, moved / 55 + ox)
    billows = np.cos(phase) * np.clip(0.35 + 0.65 * clumps, 0.0, 1.0)
    return (1.0 + 0.16 * billows + 0.14 * clumps + 0.08 * grain).astype(np.float32)


def draw_plume(state: PlumeState, grid: MapGrid, textures: PlumeTextures) -> PlumeField | None:
    """A storm's density and dust optical depth in a box around it, or None where it misses the map."""
    reach = 0.65 * state.length_km + 4.0 * state.width_km
    box = local_box(grid, state.lon_deg, state.lat_deg, reach)
    if box is None:
        return None
    along, across = rotate(box.x_km, box.y_km, state.heading_deg)
    density = (front_density if state.kind == FRONT else puff_density)(state, along, across)
    if not (density >= OUTLINE_DENSITY).any():
        return None
    texture = billow_texture(state, along, across, textures)
    tau = np.float32(state.tau) * density**0.85 * np.maximum(texture, 0.0)
    return PlumeField(box, density, tau.astype(np.float32))
