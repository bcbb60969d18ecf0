"""One sol of the second look: ground, storms, haze and clouds through the camera to an 8-bit map.

:class:`SecondLookWorld` holds what is drawn once per planet seed and grid (ground, cloud and
storm textures); :func:`render_sol` draws one sol from it and the storms alive that sol.
Storm optical depths add where storms overlap (optical depths of mixed layers add); each pixel
inside outlines belongs to the storm with the largest smooth ``tau · density`` there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from marsdust.grid import MapGrid
from marsdust.synth.second_look.camera import CameraConfig, coverage, expose, sun_cosine, veil
from marsdust.synth.second_look.ground import Ground, GroundConfig, build_ground, with_frost
from marsdust.synth.second_look.plumes import PlumeField, PlumeTextures, draw_plume
from marsdust.synth.second_look.sky import SkyConfig, SkyTextures, cloud_opacity
from marsdust.synth.second_look.weather import PlumeState
from marsdust.synth.writer import jpeg_round_trip


@dataclass(frozen=True)
class AppearanceConfig:
    """How the second look looks: ground, clouds and camera (see each config)."""

    ground: GroundConfig = field(default_factory=GroundConfig)
    sky: SkyConfig = field(default_factory=SkyConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)


@dataclass
class SecondLookWorld:
    """What one planet seed draws once on one grid."""

    grid: MapGrid
    config: AppearanceConfig
    seed: int
    ground: Ground
    sky: SkyTextures
    plumes: PlumeTextures

    @classmethod
    def build(cls, grid: MapGrid, config: AppearanceConfig, seed: int) -> "SecondLookWorld":
        ground = build_ground(grid, config.ground, seed)
        return cls(grid, config, seed, ground, SkyTextures.draw(grid, config.sky, seed), PlumeTextures.draw(seed))


@dataclass
class SolScene:
    """What one sol's imaging produced.

    Attributes
    ----------
    rgb : uint8 (H, W, 3)
        The map as written; (0, 0, 0) exactly where ``valid`` is False.
    valid : bool (H, W)
    cloud : float32 (H, W)
        Water-ice cloud opacity (0–1).
    owner : int32 (H, W)
        Index into ``states`` of the storm owning each pixel inside outlines, -1 elsewhere.
    states : list of PlumeState
    fields : list of PlumeField or None
    """

    rgb: np.ndarray
    valid: np.ndarray
    cloud: np.ndarray
    owner: np.ndarray
    states: list
    fields: list


def combine_plumes(grid: MapGrid, states: list[PlumeState], textures: PlumeTextures):
    """Draw the storms of a sol: summed dust optical depth (H, W), owner map (H, W) and their fields."""
    tau = np.zeros(grid.shape, np.float32)
    owner = np.full(grid.shape, -1, np.int32)
    best = np.zeros(grid.shape, np.float32)
    fields: list[PlumeField | None] = []
    for index, state in enumerate(states):
        plume = draw_plume(state, grid, textures)
        fields.append(plume)
        if plume is None:
            continue
        box = plume.box.index
        tau[box] += plume.tau
        strength = np.where(plume.inside, np.float32(state.tau) * plume.density, 0.0)
        wins = strength > best[box]
        owner[box] = np.where(wins, index, owner[box])
        best[box] = np.maximum(best[box], strength)
    return tau, owner, fields


def render_sol(world: SecondLookWorld, states: list[PlumeState], day: int, ls_deg: float, haze: float) -> SolScene:
    """Draw one sol's map.

    Parameters
    ----------
    states : list of PlumeState
        The storms alive on this sol.
    day : int
        Sol index since the calendar's start (sets the swath pattern and the sol's randomness).
    ls_deg : float
        Solar longitude (seasons of frost, clouds and night).
    haze : float
        Background dust optical depth.
    """
    grid, config = world.grid, world.config
    rng = np.random.default_rng([world.seed, 141, day])
    dust, owner, fields = combine_plumes(grid, states, world.plumes)
    dust += np.float32(haze)
    cloud = cloud_opacity(grid, config.sky, world.sky, ls_deg, day, rng)
    cos_sun = sun_cosine(grid, ls_deg)
    bands = veil(with_frost(world.ground, ls_deg, config.ground), dust, cloud, cos_sun, config.camera)
    valid, gain = coverage(grid, config.camera, day, cos_sun, rng)
    rgb = jpeg_round_trip(expose(bands, valid, gain, config.camera, rng), valid, config.camera.jpeg_quality)
    return SolScene(rgb, valid, cloud, owner, list(states), fields)
