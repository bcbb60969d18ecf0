"""The per-map dicts every scorer of :mod:`marsdust.evaluate` reads, and how their fields are read.

Ground truth and predictions are dicts keyed by ``map_id``; each entry is a dict of numpy arrays
or tensors:

* ground truth: ``boxes`` (n, 4) xyxy pixels as :func:`marsdust.labels.map_targets` returns
  them (a box across 180° kept whole, ``x0 < 0`` or ``x1 > W``), optional ``masks``
  (n, H, W), ``confidence`` (n,), ``area_km2`` (n,), and optionally the map's ``ls`` (degrees);
* predictions: ``boxes`` (n, 4), ``scores`` (n,), optional ``masks`` ((n, H, W) or
  (n, 1, H, W); probabilities are thresholded at 0.5).

Rules decided here
------------------
* A missing ``boxes`` is no box; a missing ``scores`` is a score of 1 for every box.
* Every map with predictions needs a ground-truth entry (a map without storms gets an empty one);
  maps are taken in sorted ``map_id`` order.
* A map's Ls comes from ``map_ls`` when it names the map, else from the entry's ``ls``, else NaN.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np


def as_array(value, dtype=None) -> np.ndarray:
    """A numpy array of a numpy array, a list or a torch tensor (moved to the CPU)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def entry_boxes(entry: Mapping) -> np.ndarray:
    """The ``boxes`` of an entry as float64 (n, 4) xyxy pixels; (0, 4) when it has none."""
    return as_array(entry.get("boxes", np.zeros((0, 4))), np.float64).reshape(-1, 4)


def entry_scores(entry: Mapping, n_boxes: int, map_id: str = "") -> np.ndarray:
    """The ``scores`` of an entry as float64 (n,) (1 for every box when it has none).

    Raises
    ------
    ValueError
        When the entry holds another number of scores than ``n_boxes``.
    """
    scores = as_array(entry.get("scores", np.ones(n_boxes)), np.float64).reshape(-1)
    if len(scores) != n_boxes:
        raise ValueError(f"map {map_id}: {n_boxes} predicted boxes but {len(scores)} scores")
    return scores


def entry_masks(entry: Mapping, key: str = "masks") -> np.ndarray | None:
    """The masks of an entry as uint8 (n, H, W) 0/1 (probabilities thresholded at 0.5); None when it has none."""
    if key not in entry or entry[key] is None:
        return None
    masks = as_array(entry[key])
    if masks.ndim == 4:
        masks = masks[:, 0]
    if masks.dtype.kind == "f":
        masks = masks >= 0.5
    return masks.astype(np.uint8)


def check_map_keys(ground_truth: Mapping, predictions: Mapping) -> list[str]:
    """The maps to score (sorted ground-truth ids), after checking every prediction has a ground-truth entry.

    Raises
    ------
    ValueError
        Naming up to five maps that have predictions but no ground-truth entry.
    """
    unknown = sorted(set(predictions) - set(ground_truth))
    if unknown:
        raise ValueError(f"predictions for {len(unknown)} map(s) without ground truth entries, e.g. {unknown[:5]} "
                         "(give maps without storms an empty ground-truth entry)")
    return sorted(ground_truth)


def map_ls_of(map_id: str, entry: Mapping, map_ls: Mapping | None) -> float:
    """Ls (degrees) of a map: ``map_ls[map_id]``, else the entry's ``ls``, else NaN."""
    if map_ls is not None and map_id in map_ls:
        return float(map_ls[map_id])
    if "ls" in entry and entry["ls"] is not None:
        return float(as_array(entry["ls"]))
    return float("nan")
