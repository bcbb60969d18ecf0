"""Model outputs back to the map frame: masks pasted inside their boxes (or the enlarged windows the mask head
outlined them in, ``DetectorConfig.mask_box_scale``) and folded into ``[0, W)``,
filtered and de-duplicated, then turned into records (:func:`decode_map`)."""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np

from marsdust.detect.prepare import PreparedMap, Tile
from marsdust.detect.results import MapResult
from marsdust.detect.settings import DetectSettings
from marsdust.outlines import detection_records, mask_centroid_lonlat


def _mask_patch(mask_roi, box) -> tuple[int, int, np.ndarray]:
    """A detection's ``M x M`` mask probabilities resized into its box, as torchvision pastes them.

    Same arithmetic as ``torchvision.models.detection.roi_heads.paste_masks_in_image`` (1-pixel
    padded mask, expanded integer box, bilinear resize) but only the box window is built.

    Returns
    -------
    (row0, col0, patch) : the patch's top-left pixel in input coordinates (may be negative) and
    the float32 patch.
    """
    import torch
    import torch.nn.functional as F
    from torchvision.models.detection.roi_heads import expand_boxes, expand_masks

    padded, scale = expand_masks(mask_roi[None], padding=1)
    expanded = expand_boxes(torch.as_tensor(box, dtype=torch.float32)[None], scale).to(torch.int64)[0].tolist()
    x0, y0, x1, y1 = expanded
    width, height = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
    patch = F.interpolate(padded[:, :1].float(), size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    return y0, x0, patch.numpy()


def _fold_columns(width: int, start_col: int, stop_col: int, shift: int) -> list[tuple[int, int, int]]:
    """Split padded columns ``[start, stop)`` into runs that map to contiguous map columns.

    Returns ``(src_start, src_stop, dst_start)``: padded column ``c`` is map column ``(c - shift) mod width``.
    """
    runs = []
    col = start_col
    while col < stop_col:
        dst = (col - shift) % width
        run = min(stop_col - col, width - dst)
        runs.append((col, col + run, dst))
        col += run
    return runs


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def decode_map(prepared: PreparedMap, outputs: Sequence[dict], settings: DetectSettings,
               seconds: float = 0.0) -> MapResult:
    """Turn the model outputs of one map's tiles into a :class:`MapResult` (see :mod:`marsdust.detect`, steps 5-6)."""
    t0 = time.perf_counter()
    image = prepared.image
    grid = image.grid
    height, width = grid.shape
    pad = prepared.pad_px
    valid = image.valid
    candidates = []  # (score, box canonical [x0, y0, x1, y1], probability map, class name)
    for tile, out in zip(prepared.tiles, outputs):
        boxes = out["boxes"].numpy().astype(np.float64, copy=False)
        scores = out["scores"].numpy()
        labels = out["labels"].numpy() if "labels" in out else np.ones(len(scores), np.int64)
        masks = out.get("masks")
        mask_rois = out.get("mask_rois")
        mask_boxes = out["mask_boxes"].numpy().astype(np.float64, copy=False) if "mask_boxes" in out else boxes
        tile_h, tile_w = tile.y1 - tile.y0, tile.x1 - tile.x0
        for k in range(len(scores)):
            score = float(scores[k])
            if score < settings.score_threshold:
                continue
            bx0, by0, bx1, by1 = boxes[k]
            cx = (bx0 + bx1) / 2.0 + tile.x0  # padded-image coordinates
            cy = (by0 + by1) / 2.0 + tile.y0
            if not (tile.core_x[0] <= cx < tile.core_x[1] and tile.core_y[0] <= cy < tile.core_y[1]):
                continue  # another tile owns this storm
            if pad and not (pad <= cx < pad + width):
                continue  # the copy in the pad; the same storm is kept from the unpadded columns
            prob = np.zeros((height, width), dtype=np.float32)
            if mask_rois is not None:
                row0, col0, patch = _mask_patch(mask_rois[k], mask_boxes[k])  # its box, or the enlarged one
                _paste_patch_folded(prob, patch, row0, col0, tile, tile_h, tile_w, pad, width)
            elif masks is not None:
                _paste_folded(prob, masks[k, 0].numpy(), tile, mask_boxes[k], pad, width)
            else:  # box-only detector: the box is the storm
                _fill_box_folded(prob, tile, (bx0, by0, bx1, by1), pad, width)
            box = np.array([bx0 + tile.x0 - pad, by0 + tile.y0, bx1 + tile.x0 - pad, by1 + tile.y0])
            candidates.append((score, box, prob, settings.classes[int(labels[k]) - 1]))
    candidates.sort(key=lambda item: -item[0])
    kept_masks, kept_scores, kept_boxes, kept_probs, kept_classes = [], [], [], [], []
    n_beyond_latitudes = 0
    for score, box, prob, name in candidates:
        raw = prob >= settings.mask_threshold
        n_raw = np.count_nonzero(raw)
        if n_raw == 0:
            continue
        mask = raw & valid
        if np.count_nonzero(mask) < settings.min_valid_fraction * n_raw or not mask.any():
            continue  # mostly in missing data
        if not _centred_within(mask, grid, settings.latitudes_deg):
            n_beyond_latitudes += 1
            continue
        if any(_mask_iou(mask, other) > settings.duplicate_iou for other in kept_masks):
            continue
        kept_masks.append(mask)
        kept_scores.append(score)
        kept_boxes.append(box)
        kept_probs.append(prob)
        kept_classes.append(name)
    factor = grid.res_deg / prepared.native_grid.res_deg
    native_boxes = np.array([_native_box(b, width, factor) for b in kept_boxes]).reshape(-1, 4)
    records = detection_records(prepared.map_id, prepared.mars_year, prepared.ls, grid, kept_masks,
                                kept_scores, boxes_px=native_boxes, classes=kept_classes)
    probability = None
    if settings.probability:
        probability = np.zeros((height, width), dtype=np.float32)
        for prob in kept_probs:
            np.maximum(probability, prob, out=probability)
    seconds += prepared.seconds + time.perf_counter() - t0
    return MapResult(prepared.map_id, prepared.mars_year, prepared.ls, grid, prepared.native_grid, valid,
                     float(valid.mean()), records, kept_masks, probability, image, seconds, settings.classes,
                     prepared.has_history, n_beyond_latitudes)


def _centred_within(mask: np.ndarray, grid, latitudes_deg: tuple[float, float] | None) -> bool:
    """Whether a detection's (non-empty) mask centroid lies in ``latitudes_deg`` (None: any): the centroid its
    record's ``lat`` gives (:func:`marsdust.outlines.mask_centroid_lonlat`)."""
    if latitudes_deg is None:
        return True
    return latitudes_deg[0] <= mask_centroid_lonlat(mask, grid)[1] <= latitudes_deg[1]


def _paste_folded(prob: np.ndarray, tile_mask: np.ndarray, tile: Tile, box, pad: int, width: int) -> None:
    """Max-merge one detection's tile-sized mask probabilities (inside its box) into map columns.

    A box past the tile's east edge (``x1 > tile width``: a segmenter's storm across 180° on a whole,
    unpadded map, :mod:`marsdust.models.unet`) goes on at the tile's west edge.
    """
    th, tw = tile_mask.shape
    c0 = max(int(math.floor(box[0])) - 1, 0)
    c1 = min(int(math.ceil(box[2])) + 1, tw)
    r0 = max(int(math.floor(box[1])) - 1, 0)
    r1 = min(int(math.ceil(box[3])) + 1, th)
    if c1 <= c0 or r1 <= r0:
        return
    rows = slice(r0 + tile.y0, r1 + tile.y0)
    spans = [(c0, c1), (0, min(int(math.ceil(box[2])) + 1 - tw, c0))]
    for start, stop in spans:
        for src0, src1, dst in _fold_columns(width, start + tile.x0, stop + tile.x0, pad):
            target = prob[rows, dst:dst + (src1 - src0)]
            np.maximum(target, tile_mask[r0:r1, src0 - tile.x0:src1 - tile.x0], out=target)


def _paste_patch_folded(prob: np.ndarray, patch: np.ndarray, row0: int, col0: int, tile: Tile, tile_h: int,
                        tile_w: int, pad: int, width: int) -> None:
    """Max-merge a box-sized probability patch (top-left at tile pixel ``row0, col0``) into map columns."""
    r0, c0 = max(row0, 0), max(col0, 0)
    r1, c1 = min(row0 + patch.shape[0], tile_h), min(col0 + patch.shape[1], tile_w)
    if r1 <= r0 or c1 <= c0:
        return
    rows = slice(r0 + tile.y0, r1 + tile.y0)
    for src0, src1, dst in _fold_columns(width, c0 + tile.x0, c1 + tile.x0, pad):
        target = prob[rows, dst:dst + (src1 - src0)]
        source = patch[r0 - row0:r1 - row0, src0 - tile.x0 - col0:src1 - tile.x0 - col0]
        np.maximum(target, source, out=target)


def _fill_box_folded(prob: np.ndarray, tile: Tile, box, pad: int, width: int) -> None:
    c0 = int(round(box[0])) + tile.x0
    c1 = max(int(round(box[2])) + tile.x0, c0 + 1)
    r0 = int(round(box[1])) + tile.y0
    r1 = max(int(round(box[3])) + tile.y0, r0 + 1)
    for src0, src1, dst in _fold_columns(width, c0, c1, pad):
        prob[r0:r1, dst:dst + (src1 - src0)] = 1.0


def _native_box(box: np.ndarray, width: int, factor: float) -> np.ndarray:
    """A canonical working-grid box → native-grid pixels, ``x0`` moved into ``[0, W)`` (``x1`` may pass ``W``)."""
    out = np.asarray(box, dtype=np.float64).copy()
    if out[0] < 0:
        out[[0, 2]] += width
    elif out[0] >= width:
        out[[0, 2]] -= width
    return out * factor
