"""Band responses of the synthetic cameras: from the simulator's red and blue reflectances to 8-bit RGB.

The synthetic Mars draws two reflectances per pixel, a red band (dust) and a blue band (water-ice
clouds). Each camera turns them into an 8-bit RGB map its own way:

* :class:`TwoBandStretch` — the MGS MOC daily global maps: red (575–625 nm) and blue
  (400–450 nm) stretched linearly, green synthesized as 1/3 red + 2/3 blue of the 8-bit values.
* :class:`ThreeBandResponse` — the MRO MARCI maps: three channels (red, green, blue), each a
  weighted sum of the two reflectances (MARCI's own band set: its red and blue filters see a
  different mix than MOC's, and it has a real green band), then stretched linearly with its own
  colour balance.

Both set missing pixels to (0, 0, 0) and keep observed pixels at least 1 in every channel, so
black means missing and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TwoBandStretch:
    """MOC colour: red and blue stretched, green = 1/3 red + 2/3 blue (8-bit values).

    Parameters
    ----------
    red_range, blue_range : (low, high)
        Reflectances stretched to 0 and 255 in the red and blue channels.
    """

    red_range: tuple[float, float] = (0.02, 0.40)
    blue_range: tuple[float, float] = (0.0, 0.30)

    def to_rgb8(self, red: np.ndarray, blue: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """8-bit RGB of red and blue reflectances (H, W); (0, 0, 0) where ``valid`` is False."""
        rgb = np.empty(red.shape + (3,), np.uint8)
        r8 = np.clip((red - self.red_range[0]) * (255.0 / (self.red_range[1] - self.red_range[0])), 1.0, 255.0)
        b8 = np.clip((blue - self.blue_range[0]) * (255.0 / (self.blue_range[1] - self.blue_range[0])), 1.0, 255.0)
        rgb[..., 0] = r8
        rgb[..., 2] = b8
        r8 *= 1.0 / 3.0
        b8 *= 2.0 / 3.0
        r8 += b8
        rgb[..., 1] = r8
        rgb[~valid] = 0
        return rgb


@dataclass(frozen=True)
class ThreeBandResponse:
    """A camera with three bands, each a mix of the red and blue reflectances, stretched to 8 bits.

    Channel ``c`` (red, green, blue) is ``mix[c][0] * red + mix[c][1] * blue`` stretched linearly
    from ``ranges[c]`` to 0–255 and clipped to 1–255 on observed pixels.

    Parameters
    ----------
    mix : ((w_red, w_blue), (w_red, w_blue), (w_red, w_blue))
        Weights of the red and blue reflectances in each channel (unit-free).
    ranges : ((low, high), (low, high), (low, high))
        Reflectances stretched to 0 and 255 in each channel.
    """

    mix: tuple[tuple[float, float], ...]
    ranges: tuple[tuple[float, float], ...]

    def __post_init__(self):
        if len(self.mix) != 3 or len(self.ranges) != 3:
            raise ValueError(f"a three-band response needs 3 mixes and 3 ranges, got {self.mix} and {self.ranges}")

    def to_rgb8(self, red: np.ndarray, blue: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """8-bit RGB of red and blue reflectances (H, W); (0, 0, 0) where ``valid`` is False."""
        rgb = np.empty(red.shape + (3,), np.uint8)
        for channel, ((w_red, w_blue), (low, high)) in enumerate(zip(self.mix, self.ranges)):
            value = np.float32(w_red) * red + np.float32(w_blue) * blue
            value -= np.float32(low)
            value *= np.float32(255.0 / (high - low))
            rgb[..., channel] = np.clip(value, 1.0, 255.0)
        rgb[~valid] = 0
        return rgb
