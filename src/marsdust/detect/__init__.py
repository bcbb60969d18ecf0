"""Full-map inference: run a detector over one map or a whole archive and write the storm catalog.

Public API
----------
* :func:`detect_map` — one map (a :class:`marsdust.mdgm.MapImage` or a file) → :class:`MapResult`
  (detection records, masks and a probability raster on the working grid).
* :func:`detect_archive` — single maps, globs, an archive folder / tar, or an index CSV, with its
  options as three objects (:class:`DetectSettings`: what is detected; :class:`DetectOutputs`: what
  is written; :class:`DetectExecution`: device, batches, processes) →
  ``OUT/detections.csv`` (+ ``.parquet``), ``OUT/detections.geojson``, ``OUT/mdad/MY{yy}/MDADMY{yy}.nc``
  (+ ``MDAD_MY{yy}_master.csv``), ``OUT/maps.csv``, optional ``OUT/geotiff/`` and ``OUT/quicklook/``;
  resumable, and spread over several processes (``workers``) or torchrun ranks.

How one map is processed
------------------------
1. **Resample** the map to the detector's working resolution ``config.map_res_deg`` by block
   averaging (:func:`marsdust.mdgm.read_map_resampled` / :func:`~marsdust.mdgm.downsample`; a block
   is valid where at least half its pixels are).
2. **Wrap-pad** across 180° longitude: the last ``pad`` columns are put in front of the map and the
   first ``pad`` columns after it (``torch.cat``), so a storm that straddles the map edge is seen
   whole. The pad (``pad_deg``, default 25°) is rounded up so the padded width is a multiple of 32
   pixels (the detector pads to that with zeros anyway, so the extra context is free).
3. **Tile** the padded image when it is larger than ``max_tile_px`` on a side (only at fine
   working resolutions; at 0.4° a whole map is one tile). Tiles overlap by ``tile_overlap_px``; a
   tile owns the detections whose box centre lies in its *core* (the tile minus half the overlap
   on each interior side), so a storm cut by one tile's edge is taken from the neighbour that sees it
   whole.
4. **Run the model** under :func:`torch.inference_mode` on a list of tiles (several maps at a time
   in :func:`detect_archive`). The model's own score threshold is raised to ``score_threshold`` for
   the call, so low-score boxes are never given masks (an untrained model emits up to
   ``box_detections_per_img`` junk boxes).
5. **Back to the canonical frame**: a detection is kept only if its box centre lies in the unpadded
   columns ``[0, W)`` (its copy in the pad is the same storm); its mask probabilities are folded
   into ``[0, W)`` with wrap (column ``c`` of the padded image is map column ``(c - pad) mod W``).
   Masks are ``probability >= mask_threshold`` restricted to valid pixels (a storm is not seen
   where the map has no observation). Detections whose thresholded mask lies mostly in missing
   data (valid fraction < ``min_valid_fraction`` = 0.5) or that are empty are dropped, and so are those
   centred beyond the latitudes the detector was trained on (``latitudes_deg``: a detector learnt on
   MOC's 60°S–60°N has never seen a polar cap or hood; ``maps.csv``'s ``n_beyond_latitudes``); remaining
   duplicates (mask IoU > ``duplicate_iou`` = 0.5, e.g. from two tiles) keep the higher score.
6. **Records** via :func:`marsdust.outlines.detection_records` on the working grid: centroid, bounds,
   area on the sphere, outline split at 180°; the ``x0, y0, x1, y1`` columns are the detector's box
   on the map's **native** grid (working-grid pixels times the resampling factor), with ``x0`` in
   ``[0, W_native)`` and ``x1 > W_native`` for a box across 180°.

Products of :func:`detect_archive` (column names as the command-line contract in README.md fixes them)
-------------------------------------------------------------------------------------------------------
* ``detections.csv``: ``map_id, mars_year, ls, lon, lat, lon_min, lon_max, lat_min, lat_max,
  area_km2, score, polygon_wkt, x0, y0, x1, y1, class`` and, when tracked, ``member_id, sequence_id``.
  ``class`` is the detector's class name (:func:`marsdust.models.detector_classes`): ``dust``, or
  ``cloud`` for a two-class detector's water-ice clouds, which follow the dust rows untracked.
* ``detections.geojson``: the same rows with their outlines (Mars CRS, see :mod:`marsdust.formats.geojson`).
* ``mdad/MY{yy}/MDADMY{yy}.nc`` + ``MDAD_MY{yy}_master.csv``: the dust masks as MDAD v1.1 is
  distributed, one cube per Mars year on MDAD's 0.1° grid (upsampled from the working grid by nearest
  neighbour), with a CF layer (:class:`marsdust.formats.mdad_cube.MaskCubeWriter`); labels are MDAD
  member numbers when tracked, else the per-map detection number (row order of the map's dust rows in
  ``detections.csv``); ``marsdust.mdad.read_catalog(OUT / "mdad")`` reads them back.
* ``masks.nc`` + ``masks_master.csv``: the same masks on the detector's working grid, all years in one
  file (the contract's file; ``DetectOutputs(mask_grid=...)`` picks ``both``, the default, ``mdad`` or
  ``working``, :data:`~marsdust.detect.settings.MASK_GRIDS`). Column by column: docs/formats.md.
* ``cloud_masks.nc`` (two-class detectors): the clouds in the same layout, labelled by the order
  of the map's cloud rows.
* ``maps.csv``: ``map_id, mars_year, ls, valid_fraction, n_detections, seconds, status, error, history,
  n_beyond_latitudes``;
  ``valid_fraction`` is the fraction of the map's working-grid pixels that hold an observation,
  ``seconds`` the map's processing time (decode + its share of the batch inference +
  post-processing and writing; with overlapped decoding the wall time per map is lower);
  ``history`` (:func:`marsdust.detect.parts.history_cell`) is ``yes`` where a detector with
  reference bands had an earlier map in the map's reference window, ``none`` where it had none (the
  map was detected against a background of zeros), empty for a detector without reference bands
  and for an unreadable map.

Maps without history: :attr:`DetectSummary.n_without_history` counts the ``none`` rows of
``maps.csv`` (so every worker's, rank's and resumed map); the command line's summary line names
them. A detector that needs history (:func:`marsdust.history.needs_history`) finds few storms
without it, so when *every* map read had none (:attr:`DetectSummary.all_without_history`: e.g.
three sols detected without ``--history``) ``marsdust detect`` writes the products and exits 3;
the first maps of an archive lacking history is normal.

Resuming: each map writes ``OUT/parts/<map_id>.json`` (its records and ``maps.csv`` row; a map id that is
no plain file name: :func:`marsdust.detect.parts.map_file_stem`) atomically
*after* its mask chunk ``OUT/parts/masks/<DAY>.nc`` and optional GeoTIFF / quick-look; a map is done
iff its part exists, so a run killed at any moment and started again with the same command
processes every map exactly once. The final products are rebuilt from all parts at the end.
A corrupt map (:class:`marsdust.mdgm.MapReadError`) gets a part with ``status = error`` (reported in
``maps.csv`` and the log, not retried on resume; ``overwrite=True`` starts afresh).

Speed: ``docs/benchmark-notes.md`` holds the measured figures (where one map's time goes, what was tried
and kept, the latest end-to-end result against stock torchvision Mask R-CNN) and
``benchmarks/bench_detect.py`` measures them again. The engine (:data:`ENGINES`, ``DetectSettings.engine`` or
``$MARSDUST_DETECT_ENGINE``) decides how the model runs: ``auto`` runs the dense part in ONNX Runtime on
CPU and the eager fast path on a GPU; ``plain`` is the model's own forward (the accuracy reference).

Modules, in the order data flows: :mod:`~marsdust.detect.settings` and :mod:`~marsdust.detect.results`
(the types), :mod:`~marsdust.detect.prepare` (:class:`PreparedMap`) → :mod:`~marsdust.detect.engines` →
:mod:`~marsdust.detect.decode` → :mod:`~marsdust.detect.single_map` for one map;
:mod:`~marsdust.detect.inputs` → :mod:`~marsdust.detect.pipeline` (load, batch and write steps of one
process's share) → :mod:`~marsdust.detect.parts` → :mod:`~marsdust.detect.merge` →
:mod:`~marsdust.detect.archive` (workers, torchrun ranks, the merge) for an archive. A detector with
reference bands gets its backgrounds from :class:`marsdust.history.MapHistory`.
"""

from marsdust.detect.archive import detect_archive
from marsdust.detect.decode import decode_map
from marsdust.detect.engines import (
    ENGINE_ENV,
    ENGINES,
    OnnxBackbone,
    default_engine,
    export_backbone_onnx,
    onnx_backbone_for,
    resolve_engine,
    run_model,
)
from marsdust.detect.inputs import resolve_maps
from marsdust.detect.merge import MAPS_COLUMNS, merge_parts
from marsdust.detect.parts import PARTS_DIR, SETTINGS_FILE, part_path
from marsdust.detect.prepare import PreparedMap, Tile, pad_columns, plan_tiles, prepare_map, working_image, wrap_pad
from marsdust.detect.results import DetectSummary, MapResult
from marsdust.detect.settings import (
    ALL_LATITUDES,
    DEFAULT_MAX_TILE_PX,
    DEFAULT_PAD_DEG,
    DUPLICATE_IOU,
    MIN_VALID_FRACTION,
    TABLE_FORMATS,
    DetectExecution,
    DetectOutputs,
    DetectSettings,
    resolve_latitudes,
)
from marsdust.detect.single_map import detect_map

__all__ = [
    # one map
    "detect_map", "MapResult", "DetectSettings", "working_image", "prepare_map", "PreparedMap", "Tile", "pad_columns",
    "wrap_pad", "plan_tiles", "decode_map", "resolve_latitudes",
    # engines
    "ENGINES", "ENGINE_ENV", "default_engine", "resolve_engine", "run_model", "OnnxBackbone", "onnx_backbone_for",
    "export_backbone_onnx",
    # archives
    "detect_archive", "DetectOutputs", "DetectExecution", "DetectSummary", "resolve_maps", "part_path",
    "merge_parts",
    # constants
    "DEFAULT_PAD_DEG", "DEFAULT_MAX_TILE_PX", "MIN_VALID_FRACTION", "DUPLICATE_IOU", "MAPS_COLUMNS", "PARTS_DIR",
    "SETTINGS_FILE", "TABLE_FORMATS", "ALL_LATITUDES",
]
