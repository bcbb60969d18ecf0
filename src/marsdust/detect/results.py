"""What detection returns: :class:`MapResult` for one map, :class:`DetectSummary` for an archive run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from marsdust.grid import MapGrid
from marsdust.mdgm import MapImage
from marsdust.outlines import detections_frame


@dataclass
class MapResult:
    """Detections on one map.

    Attributes
    ----------
    map_id : str
    mars_year : int
    ls : float
        Solar longitude, degrees.
    grid : MapGrid
        The working grid (the detector's ``map_res_deg``) that ``masks``, ``valid`` and
        ``probability`` are on.
    native_grid : MapGrid
        The map file's own grid (``x0..y1`` of the records are pixels on it).
    valid : ndarray of bool, ``grid.shape``
        Working-grid pixels that hold an observation.
    valid_fraction : float
        ``valid.mean()``: the fraction of the map that was observed.
    records : list of dict
        One per detected storm, keys :data:`marsdust.outlines.DETECTION_COLUMNS`, in descending score.
    masks : list of ndarray of bool, ``grid.shape``
        One per record (same order), thresholded and restricted to valid pixels.
    probability : ndarray of float32, ``grid.shape``, or None
        Per-pixel maximum mask probability over the kept detections (0 elsewhere).
    image : MapImage or None
        The working-resolution map (kept for quick-looks).
    seconds : float
        Processing time of this map (decode + inference share + post-processing), s.
    classes : tuple of str
        The detector's class names (``("dust",)`` or ``("dust", "cloud")``); each record's
        ``class`` is one of them.
    has_history : bool or None
        For a detector with reference bands, whether the map had an earlier map in its reference
        window (False: it was detected against a background of zeros); None for a detector without
        reference bands. ``maps.csv`` writes it as ``history`` (``yes``, ``none`` or empty).
    n_beyond_latitudes : int
        Detections dropped because their centroid lay outside ``DetectSettings.latitudes_deg`` (the
        detector's training latitudes by default); ``maps.csv``'s ``n_beyond_latitudes``.
    """

    map_id: str
    mars_year: int
    ls: float
    grid: MapGrid
    native_grid: MapGrid
    valid: np.ndarray
    valid_fraction: float
    records: list[dict]
    masks: list[np.ndarray]
    probability: np.ndarray | None = None
    image: MapImage | None = None
    seconds: float = 0.0
    classes: tuple[str, ...] = ("dust",)
    has_history: bool | None = None
    n_beyond_latitudes: int = 0

    @property
    def n_detections(self) -> int:
        """Number of storms found on the map."""
        return len(self.records)

    @property
    def scores(self) -> np.ndarray:
        """Detection scores, in record order."""
        return np.array([r["score"] for r in self.records], dtype=np.float64)

    def frame(self) -> pd.DataFrame:
        """The records as a detections DataFrame (:func:`marsdust.outlines.detections_frame`)."""
        return detections_frame(self.records)


@dataclass
class DetectSummary:
    """What :func:`detect_archive` did.

    Attributes
    ----------
    out_dir : Path
    n_maps : int
        Maps in the run (all ranks).
    n_processed : int
        Maps processed by this call (this rank; resumed maps are not counted).
    n_errors : int
        Maps that could not be read (all ranks; see ``maps.csv``).
    n_detections : int
        Storm instances in ``detections.csv`` (0 on ranks other than 0).
    seconds : float
        Wall time of the call, s.
    maps_per_second : float
        Maps processed by this call per second of its wall time.
    paths : dict of str to Path
        Written products (``detections``, ``geojson``, ``masks``, ``maps``, …); empty on ranks other
        than 0, which do not merge.
    n_without_history : int
        Maps of the run detected without history (``history`` is ``none`` in ``maps.csv``; all ranks;
        0 on ranks other than 0).
    needs_history : bool
        The detector compares each map with its history and did not learn to work without it
        (:func:`marsdust.history.needs_history`).
    n_beyond_latitudes : int
        Detections dropped for lying beyond the run's latitudes (``DetectSettings.latitudes_deg``; the sum of
        ``maps.csv``'s ``n_beyond_latitudes``; 0 on ranks other than 0).
    """

    out_dir: Path
    n_maps: int
    n_processed: int
    n_errors: int
    n_detections: int
    seconds: float
    maps_per_second: float
    paths: dict[str, Path] = field(default_factory=dict)
    n_without_history: int = 0
    needs_history: bool = False
    n_beyond_latitudes: int = 0

    @property
    def all_without_history(self) -> bool:
        """The run's results are meaningless: the detector needs history and every map read had none.

        Maps that could not be read do not count; a run whose first maps alone lack history (the
        start of an archive, after a gap) is normal.
        """
        n_read = self.n_maps - self.n_errors
        return self.needs_history and n_read > 0 and self.n_without_history == n_read
