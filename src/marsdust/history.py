"""One walker over an archive's maps in time order, serving each map its reference background.

Training (:func:`marsdust.data.dataset_backgrounds`), evaluation
(:func:`marsdust.evaluate.runner.split_backgrounds`) and detection (:func:`marsdust.detect.detect_archive`)
take every ``prior-median`` background (:mod:`marsdust.reference`) from a :class:`MapHistory`.

Rules
-----
* **Time axis**: :func:`marsdust.mdad_format.mars_time_sols` (sols since Ls 0 of Mars year 0, running
  on across Mars years). The table's maps are ordered on it, ties by map id; a map's history is the
  maps strictly earlier on it within the reference window (``ReferenceConfig.sols``).
* **Time order**: maps are served (:meth:`MapHistory.background`, then :meth:`MapHistory.add`) in
  that order. A map of the table that is not served but lies in a served map's window (another
  worker's share, a map done in an earlier run, a map of another split) is read through
  ``load_map`` once, when first needed; one that cannot be read contributes nothing (a warning).
* **No place in time**: a map without a Mars year and Ls has no history, nor has a map a caller
  gives no background (:func:`marsdust.detect.detect_map`). One rule decides what happens to them
  (:func:`no_history_policy`): a detector trained with ``reference_dropout > 0`` (recorded in its
  checkpoint, :func:`marsdust.models.stored_reference_dropout`) learnt to work without history and
  gets a background of zeros (logged as a warning); any other detector, and training (which has no
  detector yet), refuse such maps with an error naming them.
* **Empty window**: a timed map whose window holds no earlier observation (the first map of an
  archive, the first after a gap longer than the window) gets the background of zeros that
  training also shows; such maps are listed in :attr:`MapHistory.without_history`
  (:meth:`MapHistory.had_history` is False for them and for untimed maps).
* **Needs history**: a detector with reference bands that did not learn to work without history
  (:func:`needs_history`) finds few storms on maps without it; ``marsdust detect`` exits 3 when
  every map of its run had none (:attr:`marsdust.detect.DetectSummary.all_without_history`).
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from marsdust.mdad_format import mars_time_sols
from marsdust.reference import REFERENCE_BANDS, ReferenceBuilder, ReferenceConfig

log = logging.getLogger(__name__)

LoadMap = Callable[[str], tuple[np.ndarray, np.ndarray]]
"""``load_map(path) -> (rgb (H, W, 3) float in [0, 1], valid (H, W) bool)`` at the working resolution."""

UNTIMED_HINT = "give an archive folder or index, or a list_ls.txt beside loose maps"
"""What to do about maps without a Mars year and Ls (part of :func:`no_history_policy`'s error)."""


def works_without_history(checkpoint_or_model) -> bool:
    """Whether a detector learnt to work without history: its checkpoint records ``reference_dropout > 0``."""
    from marsdust.models import stored_reference_dropout

    return stored_reference_dropout(checkpoint_or_model) > 0


def needs_history(checkpoint_or_model) -> bool:
    """Whether a detector compares each map with its history and did not learn to work without it.

    True for a detector with reference bands (``DetectorConfig.reference``) that is not
    :func:`works_without_history`; False for a detector without reference bands.

    Parameters
    ----------
    checkpoint_or_model : path or RegisteredDetector
        A checkpoint file (read for its config and training record) or a built detector.
    """
    from marsdust.models import DetectorConfig, checkpoint_metadata

    if isinstance(checkpoint_or_model, (str, os.PathLike)):
        content = checkpoint_metadata(checkpoint_or_model)
        config = DetectorConfig.from_dict(content["model_config"], source=str(checkpoint_or_model))
    else:
        config = checkpoint_or_model.config
    return config.reference_config.enabled and not works_without_history(checkpoint_or_model)


def no_history_policy(reference: ReferenceConfig, map_ids: Sequence[str], works_without: bool, *, missing: str,
                      hint: str) -> None:
    """The one rule for maps a reference detector cannot be given history for.

    Parameters
    ----------
    reference : ReferenceConfig
        The detector's reference bands.
    map_ids : sequence of str
        The maps without history (nothing happens when empty).
    works_without : bool
        :func:`works_without_history` of the detector.
    missing : str
        What the maps lack, e.g. ``"Mars year and Ls"`` (in the message).
    hint : str
        How to give them history (in the error).

    Raises
    ------
    ValueError
        Naming the maps, for a detector trained without reference dropout; one that was trained with
        it gets a warning instead, and the caller gives those maps a background of zeros.
    """
    if not len(map_ids):
        return
    if not works_without:
        raise ValueError(f"the detector uses {reference.kind} backgrounds, which need each map's {missing}; "
                         f"{len(map_ids)} map(s) have none, e.g. {list(map_ids[:3])} ({hint}; a detector trained "
                         "with --reference-dropout also takes maps without history)")
    log.warning("reference: %d map(s) have no %s (e.g. %s), so no history: they are detected without a background, "
                "as the detector also learnt to", len(map_ids), missing, ", ".join(map_ids[:3]))


class MapHistory:
    """Reference backgrounds of the maps of a table, built in one walk in time order (see the module docstring).

    Parameters
    ----------
    reference : ReferenceConfig
        ``kind`` must be ``prior-median``.
    maps : DataFrame or list of dict
        ``map_id, mars_year, ls, path`` of every map that may be served or serve as history (any order).
    load_map : callable
        ``load_map(path) -> (rgb, valid)`` at the working resolution (:data:`LoadMap`).
    works_without : bool
        Whether the detector works without history (:func:`works_without_history`); False refuses a
        table with maps without a Mars year and Ls (:func:`no_history_policy`).

    Attributes
    ----------
    untimed : list of str
        Maps without a Mars year and Ls (a background of zeros each, never history).
    without_history : list of str
        Timed maps served so far whose window held no earlier observation.
    extra_reads : int
        Maps read through ``load_map`` as history only.
    """

    def __init__(self, reference: ReferenceConfig, maps, load_map: LoadMap, *, works_without: bool = False) -> None:
        table = maps if isinstance(maps, pd.DataFrame) else pd.DataFrame(list(maps))
        lacking = [c for c in ("map_id", "mars_year", "ls", "path") if c not in table.columns]
        if lacking:
            raise ValueError(f"a map history needs columns map_id, mars_year, ls, path; lacks {lacking}")
        times = np.asarray(mars_time_sols(table["mars_year"], table["ls"]), dtype=np.float64)
        timed = np.isfinite(times)
        self.reference, self.works_without = reference, works_without
        self.untimed = [str(m) for m in table["map_id"][~timed]]
        no_history_policy(reference, self.untimed, works_without, missing="Mars year and Ls", hint=UNTIMED_HINT)
        ordered = table[timed].assign(_time=times[timed]).sort_values(["_time", "map_id"], kind="stable")
        self.map_ids = [str(m) for m in ordered["map_id"]]
        self.paths = {str(m): str(p) for m, p in zip(table["map_id"], table["path"])}
        self.time_sols = ordered["_time"].to_numpy()
        self.position = {map_id: i for i, map_id in enumerate(self.map_ids)}
        self.builder = ReferenceBuilder(reference)
        self._load_map = load_map
        self._next = 0  # first position not yet added or passed over
        self.extra_reads = 0
        self.without_history: list[str] = []
        self._without_history_ids: set[str] = set()

    @classmethod
    def for_detector(cls, model, maps, load_map: LoadMap) -> "MapHistory":
        """The history of a detector with reference bands: its ``reference_config`` and its checkpoint's
        no-history rule (:func:`works_without_history`)."""
        return cls(model.config.reference_config, maps, load_map, works_without=works_without_history(model))

    def background(self, map_id: str, shape: tuple[int, int]) -> np.ndarray:
        """The ``(rows, columns, 3)`` float32 background of ``map_id`` on a working grid of ``shape``.

        History maps not served are read as needed. Zeros for an untimed map and where no earlier map
        of the window observed a pixel.
        """
        position = self.position.get(map_id)
        if position is None:
            if map_id not in self.untimed:
                raise KeyError(f"map {map_id} is not in the history's table of maps")
            return np.zeros((*shape, REFERENCE_BANDS), dtype=np.float32)
        self._read_window_before(position)
        background = self.builder.background(float(self.time_sols[position]), shape)
        if not background.any():
            self.without_history.append(map_id)
            self._without_history_ids.add(map_id)
        return background

    def had_history(self, map_id: str) -> bool:
        """Whether ``map_id`` (served by :meth:`background`) had history: it has a place in time and its
        window held an earlier observation."""
        return map_id in self.position and map_id not in self._without_history_ids

    def add(self, map_id: str, rgb: np.ndarray, valid: np.ndarray) -> None:
        """Add ``map_id`` (just served; ``(H, W, 3)`` reflectance and its observed pixels) to the history."""
        position = self.position.get(map_id)
        if position is not None and position >= self._next:
            self._next = position + 1
            self.builder.add(float(self.time_sols[position]), rgb, valid)

    def backgrounds(self, map_ids: Iterable[str] | None = None, *, progress: bool = False) -> dict[str, np.ndarray]:
        """The background of each of ``map_ids`` (default: every map of the table), reading each map once in time order.

        Returns
        -------
        dict
            ``map_id -> (H, W, 3) float16`` background (exact: a background is a median of float16 samples).
        """
        from tqdm.auto import tqdm

        wanted = set(self.paths) if map_ids is None else {str(m) for m in map_ids}
        unknown = sorted(wanted - set(self.paths))
        if unknown:
            raise KeyError(f"{len(unknown)} map(s) are not in the history's table of maps, e.g. {unknown[:3]}")
        order = [m for m in self.map_ids if m in wanted] + [m for m in self.untimed if m in wanted]
        backgrounds: dict[str, np.ndarray] = {}
        for map_id in tqdm(order, desc="reference backgrounds", disable=not progress, unit="map"):
            rgb, valid = self._load_map(self.paths[map_id])
            backgrounds[map_id] = self.background(map_id, valid.shape).astype(np.float16)
            self.add(map_id, rgb, valid)
        return backgrounds

    def _read_window_before(self, position: int) -> None:
        """Add the maps before ``position`` that are in its window and were not served, reading each once."""
        window_start = float(self.time_sols[position]) - self.reference.sols
        while self._next < position:
            earlier = self._next
            self._next += 1
            if self.time_sols[earlier] < window_start - 1e-9:
                continue
            map_id = self.map_ids[earlier]
            try:
                rgb, valid = self._load_map(self.paths[map_id])
            except Exception as err:  # noqa: BLE001 - an unreadable map is simply no history
                log.warning("reference: map %s not used as history (%s)", map_id, err)
                continue
            self.extra_reads += 1
            self.builder.add(float(self.time_sols[earlier]), rgb, valid)
