"""Reference channels: each map's clear-sky background, built from the archive's own earlier maps.

An analyst finds a dust storm by comparing a map with the same place on earlier sols: dust is a
change of brightness and colour over a known surface. A *reference* gives the detector that
comparison as extra input bands.

``prior-median``
    For each working-grid pixel, the per-band (lower) median of the maps of the previous
    ``sols`` sols (strictly earlier than the map, on the absolute Mars time axis of
    :func:`marsdust.mdad_format.mars_time_sols`, so Mars-year and subphase boundaries are invisible)
    that observed that pixel. Missing swaths, polar night and missing sols simply contribute no
    sample. The median of a short window is the surface under clear sky wherever no storm sat on
    the same pixel for more than half the window.

Where no earlier map in the window observed a pixel (the first map of an archive, the first sols
after a gap longer than the window, a pixel first seen today) the background is **0 in all
three bands**, the same code as a missing observation in a map, so the network's input is never
NaN: per-map standardization gives such pixels the missing-input value
(:data:`marsdust.models.config.MISSING_INPUT_VALUE`), fixed normalization a constant.

The detector's input is then six bands: the map's R, G, B, and the background's R, G, B (the
detector learns the difference itself; its first convolution is linear in both).

Maps must be fed in time order. :class:`ReferenceBuilder` keeps the window's maps in memory at the
working resolution (``sols`` maps of ``H × W × 3`` float16), so each map is read once however long
the window. :class:`marsdust.history.MapHistory` walks an archive's maps in time order with one
and serves training, evaluation and detection their backgrounds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

REFERENCE_KINDS = ("none", "prior-median")
"""Names accepted by ``--reference``."""

DEFAULT_REFERENCE_SOLS = 20
"""Default window of ``prior-median`` in sols (``--reference-sols``)."""

REFERENCE_BANDS = 3
"""Input bands a reference adds (the background's R, G, B)."""


@dataclass(frozen=True)
class ReferenceConfig:
    """How a detector's reference bands are made (stored in its checkpoint).

    Attributes
    ----------
    kind : {"none", "prior-median"}
        ``none``: the detector sees the map alone.
    sols : int
        Length of the window of earlier sols the background is taken from.
    """

    kind: str = "none"
    sols: int = DEFAULT_REFERENCE_SOLS

    def __post_init__(self):
        if self.kind not in REFERENCE_KINDS:
            raise ValueError(f"reference must be one of {', '.join(REFERENCE_KINDS)}, got {self.kind!r}")
        if int(self.sols) < 1:
            raise ValueError(f"reference sols must be a window of at least 1 sol, got {self.sols}")

    @property
    def enabled(self) -> bool:
        """True when the detector gets reference bands."""
        return self.kind != "none"

    @property
    def n_bands(self) -> int:
        """Input bands the reference adds to the map's three."""
        return REFERENCE_BANDS if self.enabled else 0

    def describe(self) -> str:
        """One line for logs, e.g. ``prior-median over the previous 20 sols``."""
        return "none" if not self.enabled else f"{self.kind} over the previous {self.sols} sols"

    def to_dict(self) -> dict:
        """Plain dict (checkpoint hyperparameters)."""
        return asdict(self)

    @classmethod
    def from_value(cls, value) -> "ReferenceConfig":
        """A config from a :class:`ReferenceConfig`, a dict (from a checkpoint), a kind name, or None (``none``)."""
        if isinstance(value, ReferenceConfig):
            return value
        if value is None:
            return cls()
        if isinstance(value, str):
            return cls(kind=value)
        if isinstance(value, dict):
            return cls(kind=str(value.get("kind", "none")), sols=int(value.get("sols", DEFAULT_REFERENCE_SOLS)))
        raise TypeError(f"cannot read a reference setting from {value!r}")


class ReferenceBuilder:
    """A rolling ``prior-median`` background, fed maps in time order.

    Parameters
    ----------
    config : ReferenceConfig
        ``kind`` must be ``prior-median``.
    """

    def __init__(self, config: ReferenceConfig) -> None:
        if config.kind != "prior-median":
            raise ValueError(f"a ReferenceBuilder builds prior-median backgrounds, not {config.kind!r}")
        self.config = config
        self._history: deque[tuple[float, np.ndarray]] = deque()
        self._latest_sol = -np.inf

    def __len__(self) -> int:
        return len(self._history)

    def _forget_before(self, time_sol: float) -> None:
        start = time_sol - self.config.sols
        while self._history and self._history[0][0] < start - 1e-9:
            self._history.popleft()

    def background(self, time_sol: float, shape: tuple[int, int]) -> np.ndarray:
        """The clear-sky background at ``time_sol`` from the maps already added.

        Parameters
        ----------
        time_sol : float
            The map's time in sols (:func:`marsdust.mdad_format.mars_time_sols`); not before the latest map added.
        shape : (rows, columns)
            The working grid's shape; earlier maps on another grid are not used.

        Returns
        -------
        ndarray, float32, shape (rows, columns, 3)
            Per-band median reflectance in [0, 1] of the earlier maps of the window that observed
            each pixel; 0 in all bands where none did.
        """
        self._check_order(time_sol)
        self._forget_before(time_sol)
        stack = [rgb for when, rgb in self._history if when < time_sol - 1e-9 and rgb.shape[:2] == tuple(shape)]
        if not stack:
            return np.zeros((*shape, REFERENCE_BANDS), dtype=np.float32)
        return lower_median(np.stack(stack))

    def add(self, time_sol: float, rgb: np.ndarray, valid: np.ndarray) -> None:
        """Add a map (``(H, W, 3)`` [0, 1] reflectance, ``valid`` its observed pixels) to the history."""
        self._check_order(time_sol)
        stored = np.where(valid[..., None], rgb, 0.0).astype(np.float16)
        # a reflectance that rounds to 0 in every band would read as missing: keep it observed
        stored[valid & (stored == 0).all(axis=-1)] = np.float16(1.0 / 4096)
        self._history.append((float(time_sol), stored))
        self._latest_sol = max(self._latest_sol, float(time_sol))
        self._forget_before(float(time_sol))

    def _check_order(self, time_sol: float) -> None:
        if not np.isfinite(time_sol):
            raise ValueError("a reference needs each map's time (Mars year and Ls); this map has none")
        if time_sol < self._latest_sol - 1e-9:
            raise ValueError(
                f"maps must come in time order: a map at sol {time_sol:.1f} came after one at sol {self._latest_sol:.1f}"
            )


def lower_median(samples: np.ndarray) -> np.ndarray:
    """Per-pixel lower median over axis 0 of ``(n, H, W, 3)`` samples, ignoring pixels that are 0 in every band.

    The lower median (the ``(k - 1) // 2``-th of ``k`` sorted samples) is a sample itself, so a
    background is always a reflectance some earlier sol observed. 0 where no sample observed the pixel.
    """
    values = samples.astype(np.float32)
    missing = (values == 0).all(axis=-1)
    values[missing] = np.inf  # sorts last
    values.sort(axis=0)
    count = (~missing).sum(axis=0)
    position = np.maximum(count - 1, 0) // 2
    median = np.take_along_axis(values, position[None, :, :, None], axis=0)[0]
    median[count == 0] = 0.0
    return median


def stack_bands(rgb: np.ndarray, background: np.ndarray | None) -> np.ndarray:
    """The detector's input: ``(H, W, 3)`` map, plus the ``(H, W, 3)`` background when there is one."""
    if background is None:
        return rgb
    return np.concatenate([rgb, background.astype(rgb.dtype, copy=False)], axis=-1)
