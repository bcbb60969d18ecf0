"""The main job on the built-in default, end to end (``marsdust demo`` / ``make demo``).

Reads top to bottom like the pipeline it runs:

1. **synthesize** a small archive of both cameras and its MDAD catalog, shaped like the real ones
   (:data:`DEMO_PRESET`, ``twocam``: ≈ 254 maps at 0.4°, MOC maps MY24 Ls150 – MY28 Ls121 with the
   v1.0 table's centroids and areas only, global MARCI maps MY28 Ls130 – MY32 with v1.1 outlines);
2. **train** one small DustRCNN on both cameras, as a scientist with the whole MDAD would (model
   preset ``small_cpu``, :data:`marsdust.models.SMALL_CPU`, at 0.8°, minutes on a laptop CPU;
   outlines where the cubes have them, area boxes without mask supervision elsewhere), on the
   temporal split: train on MY25 – MY32 Ls0, test on the last Mars year, MY32. ``--preset demo``
   gives the paper's setting instead: MOC maps only, strategy 1 (train MY25 – mid MY27, test mid
   MY27 – MY28);
3. **detect** storms on the held-out test sols with the trained detector, as a scientist would
   run it on an archive (outlines, areas, members and sequences, the catalog files);
4. **evaluate** the detector against the catalog on the same sols (mAP@25/50/75, breakdowns,
   figures);
5. write a **report** folder and print where it is, with the climatology figures of the detected
   storms against the catalog's (:mod:`marsdust.climatology`) and the tracking scores of their
   members and sequences (:mod:`marsdust.evaluate.tracking`).

Every step is the library function a notebook would call; an interrupted demo started again
with the same output folder picks up where it stopped (the data, the training run and the
detections are resumable). Data or a training run made there with another preset, seed or step
budget is made afresh, not reused.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from marsdust.fileio import write_text_atomic
from marsdust.reference import ReferenceConfig

log = logging.getLogger(__name__)

DEMO_PRESET = "twocam"
"""Synthetic archive of the demo: both cameras, the catalogue shaped like MDAD (v1.1 outlines for the
MARCI years only). A detector trained on the MOC years alone does not carry over to global maps
or to an independently modelled look; one trained on both does much better (docs/benchmark-notes.md,
"The demo on both cameras")."""

DEMO_MAX_STEPS = 800
"""Training steps of the demo's detector (batches of 4 maps): about 5 minutes on 2 CPU cores with bf16
autocast (``precision: auto`` on a CPU with ``avx512_bf16``; 6.5 with channels-last weights on an Intel Xeon
with AMX), 8 in fp32 on the AVX-512 AMD EPYC, 29 on an AVX2-only one (a global MARCI map costs 1.5 MOC maps;
README, "What make demo gives")."""

DEMO_MAP_RES_DEG = 0.8
"""Working resolution of the demo's detector (150 x 450 px maps; the smallest storms ~7 px across)."""

DEMO_LR = 2e-3
"""Peak learning rate of the demo's warm-up + cosine schedule (random init, small detector)."""

DEMO_REFERENCE = "prior-median"
"""Reference bands of the demo's detector, as ``marsdust train``'s default."""

DEMO_REFERENCE_SOLS = 60
"""Window of the demo's reference, sols (``marsdust train``: 20).

The demo's archives are sparse: pairs of consecutive sols 45 (``twocam``) or 37 (``demo``) sols
apart. In a 20-sol window half their maps have no earlier map and the other half only the sol
before, which shows the same storms, so there is no clear-sky background to compare with, and the
reference bands add nothing to the map alone. A 60-sol window reaches the previous pair, and the
lower median of the window's maps is the clear sky (docs/measurements.md, the ``make demo`` section,
compares the settings on the ``demo`` preset). Real daily maps, and the ``bench`` preset, have a
map on most sols."""

DEMO_REFERENCE_DROPOUT = 0.0
"""How often the demo's training hides the background: never. A run of the demo's length does not
yet learn both modes (with and without a background; docs/benchmark-notes.md, "Reference channels"),
and every test map has history. So ``marsdust detect demo_out/model.ckpt`` refuses loose maps
without a Mars year and Ls, saying why; ``marsdust train``'s default (0.2) takes them."""


@dataclass
class DemoResult:
    """Where the demo put things and what it measured."""

    out_dir: Path
    model_path: Path
    report_dir: Path
    summary_path: Path
    metrics: dict
    n_test_maps: int
    n_catalog_storms: int
    n_detected_storms: int
    train_seconds: float
    seconds: float
    tracking: dict | None = None
    score_threshold: float = 0.5


def _clear_if_made_otherwise(folder: Path, settings_file: Path, settings: dict) -> None:
    """Remove ``folder`` when ``settings_file`` is missing or records other settings than ``settings``.

    The demo reuses finished steps of an earlier run in the same output folder; one made with
    another preset, seed or step budget must not be reused (or resumed) silently.
    """
    if not folder.exists():
        return
    try:
        recorded = json.loads(settings_file.read_text())
    except (OSError, ValueError):
        recorded = None
    if recorded != settings:
        log.info("%s was made with other settings (%s, now %s): starting it afresh", folder, recorded, settings)
        shutil.rmtree(folder)


def _synthesize_once(data_dir: Path, preset: str, seed: int, progress: bool) -> None:
    """Write the synthetic archive and catalog unless a finished copy with these settings is there."""
    from marsdust.synth import synthesize

    done, settings = data_dir / "synth_done.json", {"preset": preset, "seed": seed}
    _clear_if_made_otherwise(data_dir, done, settings)  # also a half-written earlier attempt
    if done.is_file():
        return
    synthesize(data_dir, preset=preset, seed=seed, progress=progress)
    write_text_atomic(done, json.dumps(settings) + "\n")


def _model_settings(preset: str, seed: int, max_steps: int, reference: ReferenceConfig,
                    reference_dropout: float, precision: str = "auto") -> dict:
    """What the demo's detector is made with, as its training run and its detections record it: a folder made
    with other settings is made afresh."""
    settings = {"preset": preset, "seed": seed, "max_steps": max_steps}
    if reference.enabled:  # runs without a reference keep the settings file of earlier versions
        settings["reference"] = reference.to_dict()
        settings["reference_dropout"] = float(reference_dropout)
    if precision != "auto":  # runs at the default keep the settings file of earlier versions
        settings["precision"] = precision
    return settings


def _train_once(data_dir: Path, run_dir: Path, preset: str, max_steps: int, seed: int, progress: bool,
                reference: ReferenceConfig, reference_dropout: float, precision: str) -> dict:
    """Train the demo detector, or resume / reuse an earlier run in ``run_dir`` made with the same settings."""
    from marsdust.train import TrainConfig, train

    settings_file = run_dir / "demo_settings.json"
    settings = _model_settings(preset, seed, max_steps, reference, reference_dropout, precision)
    _clear_if_made_otherwise(run_dir, settings_file, settings)
    done = run_dir / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    config = TrainConfig(data=str(data_dir), model="dustrcnn", model_preset="small_cpu",
                         map_res_deg=DEMO_MAP_RES_DEG, lr=DEMO_LR, strategy="temporal", max_steps=max_steps,
                         val_every_n_steps=max(max_steps // 3, 1), num_workers=1, seed=seed, progress=progress,
                         reference=reference.kind, reference_sols=reference.sols,
                         reference_dropout=reference_dropout, precision=precision)
    write_text_atomic(settings_file, json.dumps(settings) + "\n")
    return train(config, run_dir, resume=(run_dir / "checkpoints" / "last.ckpt").is_file())


def demo_reference(reference: str | None, reference_sols: int | None,
                    reference_dropout: float | None) -> tuple[ReferenceConfig, float]:
    """The demo's reference setting: what is given, else :data:`DEMO_REFERENCE`, :data:`DEMO_REFERENCE_SOLS`
    and :data:`DEMO_REFERENCE_DROPOUT`."""
    config = ReferenceConfig(DEMO_REFERENCE if reference is None else reference,
                             DEMO_REFERENCE_SOLS if reference_sols is None else reference_sols)
    dropout = DEMO_REFERENCE_DROPOUT if reference_dropout is None else float(reference_dropout)
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"reference_dropout must be a probability in [0, 1], got {dropout}")
    return config, dropout if config.enabled else 0.0


def _export_model(run_dir: Path, model_path: Path) -> None:
    """Save the best checkpoint as a self-contained marsdust checkpoint at ``model_path``."""
    from marsdust.models import load_model, save_checkpoint
    from marsdust.train import run_checkpoint

    source = run_checkpoint(run_dir)
    save_checkpoint(load_model(source), model_path, source=str(source))


def _test_index(data_dir: Path, run_dir: Path, report_dir: Path) -> Path:
    """The archive index restricted to the run's test split, saved for ``detect``."""
    from marsdust.data import load_split
    from marsdust.mdgm import index_archive, save_index

    index_df = index_archive(data_dir / "archive")
    split_df = load_split(run_dir / "split.csv")
    test_ids = set(split_df.loc[split_df["split"] == "test", "map_id"])
    path = report_dir / "test_maps.csv"
    save_index(index_df[index_df["map_id"].isin(test_ids)].reset_index(drop=True), path)
    return path


def _detection_figure(test_index_path: Path, detections_csv: Path, catalog: pd.DataFrame, out_png: Path,
                      n_maps: int = 3) -> Path | None:
    """The test sols with the most catalogued storms: catalogue outlines and detections together
    (hits, misses and false alarms in their own colours)."""
    from marsdust.plots import plot_maps_with_outlines

    maps = pd.read_csv(test_index_path)
    detections = pd.read_csv(detections_csv)
    on_test = catalog[catalog["map_id"].isin(set(maps["map_id"]))]
    if on_test.empty and detections.empty:
        return None
    counts = pd.concat([on_test["map_id"], detections["map_id"]]).value_counts()
    chosen = maps[maps["map_id"].isin(counts.index[:n_maps])]
    return plot_maps_with_outlines(chosen, on_test, out_png, max_width_px=900, dpi=80, detections=detections)


def _climatology(detections_csv: Path, catalog: pd.DataFrame, test_ids: set, out_dir: Path) -> tuple[list[Path], dict]:
    """Climatology figures of the detections (against the catalog on the test sols) and their tracking scores."""
    from marsdust.climatology import write_climatology
    from marsdust.evaluate.tracking import catalog_for, tracking_scores
    from marsdust.track import read_instances

    detections = read_instances(detections_csv)
    truth = catalog_for(detections, catalog, test_ids)
    written = write_climatology(detections, out_dir, truth=truth, label="detections")
    return [png for png, _ in written.values()], tracking_scores(detections, truth)


def _report_figures(report_dir: Path, test_index_path: Path, detections_csv: Path, catalog: pd.DataFrame,
                    test_ids: set) -> tuple[list[Path], dict]:
    """The report's figures (detections, the evaluation's, climatology) and the detections' tracking scores."""
    figures = sorted((report_dir / "eval" / "figures").glob("*.png"))
    detection_png = _detection_figure(test_index_path, detections_csv, catalog, report_dir / "figures" / "detections.png")
    if detection_png is not None:
        figures.insert(0, detection_png)
    climatology_pngs, tracking = _climatology(detections_csv, catalog, test_ids, report_dir / "climatology")
    return figures + climatology_pngs, tracking


def _tracking_lines(tracking: dict | None) -> list[str]:
    """The summary's lines on how the detections' members and sequences agree with the catalog's."""
    if not tracking:
        return []

    def pct(value):
        return "n/a" if value is None else f"{100 * value:.1f}%"

    links, ident, seq = tracking["links"], tracking["identity"], tracking["sequences"]
    return [
        f"- tracking against the catalog ({tracking['instances']['n_matched']} detections matched to catalogued "
        f"storms; `marsdust.evaluate.tracking`): link F1 {pct(links['f1'])}, IDF1 {pct(ident['idf1'])}, "
        f"sequence recall {pct(seq['recall'])} of {seq['n_truth']} ({seq['n_truth_unobservable']} catalogued on "
        f"fewer than {seq['min_maps']} test maps not scored)",
    ]


LABEL_WORDS = {"outline": "outlines (v1.1 cubes)", "area_box": "area-sized boxes (v1.0 table, no mask target)",
               "fixed_box": "12° boxes (v1.0 table)"}
"""How the summary names each label source of ``label_sources.csv``."""


def _data_lines(run_dir: Path) -> list[str]:
    """The summary's lines on what the detector learnt from (``run/label_sources.csv``) and on what it was
    tested (``run/split.csv``): storms per label source with their Mars years, the test sols' span."""
    from marsdust.data import load_split

    lines = []
    sources = run_dir / "label_sources.csv"
    if sources.is_file():
        table = pd.read_csv(sources)
        trained = table[table["train"] > 0]
        parts = [f"{int(rows['train'].sum())} as {LABEL_WORDS.get(source, source)}, "
                 f"MY{rows['mars_year'].min()}–MY{rows['mars_year'].max()}"
                 for source, rows in trained.groupby("label_source", sort=False)]
        if parts:
            lines.append("- training storms: " + "; ".join(parts) + " (`run/label_sources.csv`)")
    split = load_split(run_dir / "split.csv")
    test = split[split["split"] == "test"]
    if len(test):
        first, last = test.sort_values(["mars_year", "ls"]).iloc[[0, -1]].itertuples()
        lines.append(f"- test sols: MY{first.mars_year} Ls{first.ls:.0f} – MY{last.mars_year} Ls{last.ls:.0f}, "
                     "never trained on")
    return lines


def _pixel_lines(pixel: dict) -> list[str]:
    """The summary's pixel scores (``metrics.json``'s ``pixel``), or none where no test map has outline truth."""
    from marsdust.evaluate.metrics import union_shares_text

    if not pixel.get("n_maps") or not math.isfinite(pixel.get("iou", math.nan)):
        return []
    chosen = pixel.get("threshold_source", "").startswith("chosen on validation")
    which = "the outline threshold (best pixel IoU on the validation sols)" if chosen else "the detection threshold"
    line = (f"Dust pixels against the catalogued outlines on the {pixel['n_maps']} test maps that have them: IoU "
            f"{pixel['iou']:.3f}, Dice {pixel['dice']:.3f} at score >= {pixel['threshold']:.2f}, {which}")
    at_detection = pixel.get("at_detection_threshold") or {}
    if chosen and at_detection and abs(at_detection["threshold"] - pixel["threshold"]) > 1e-9:
        line += (f"; at the detection threshold {at_detection['threshold']:.2f}: IoU {at_detection['iou']:.3f}, "
                 f"Dice {at_detection['dice']:.3f}")
    shares = union_shares_text(pixel.get("union_shares") or {})
    return ["", line + "." + (" " + shares if shares else "")]


def _summary_markdown(result: "DemoResult", train_summary: dict, figures: list[Path], preset: str,
                      reference: str = "none", data_lines: list[str] | None = None) -> str:
    """The report's summary page."""
    metrics = result.metrics
    segm = metrics.get("segm") or {}

    def pct(value):
        return "n/a" if value is None else f"{100 * value:.1f}"

    steps = train_summary.get("global_step")
    lines = [
        "# marsdust demo report",
        "",
        f"DustRCNN trained for {steps} step{'' if steps == 1 else 's'} "
        f"({train_summary.get('seconds', float('nan')):.0f} s) on the synthetic `{preset}` archive, "
        f"temporal split, reference bands: {reference}; scored on the held-out test sols.",
        "",
        "| | mAP25 | mAP50 | mAP75 |",
        "|---|---|---|---|",
    ]
    paper = metrics.get("paper_boxes") or {}
    if paper:
        lines.append(f"| the paper's 12° boxes (at each outline's centroid) | {pct(paper.get('map25'))} | "
                     f"{pct(paper.get('map50'))} | {pct(paper.get('map75'))} |")
    lines.append(f"| boxes ({metrics.get('label_mode', 'fixed')} labels) | {pct(metrics.get('map25'))} | "
                 f"{pct(metrics.get('map50'))} | {pct(metrics.get('map75'))} |")
    if segm:
        lines.append(f"| masks | {pct(segm.get('map25'))} | {pct(segm.get('map50'))} | {pct(segm.get('map75'))} |")
    area = metrics.get("area_agreement") or {}
    if area.get("n_matched"):
        lines += ["", f"Matched storms' areas: median detected / catalogued {area['median_ratio']:.2f}, "
                      f"{100 * area['within_25pct']:.0f}% within ±25% ({area['n_matched']} storms)."]
    lines += _pixel_lines(metrics.get("pixel") or {})
    time_ms = metrics.get("time_ms_per_map")
    lines += [
        "",
        *(data_lines or []),
        f"- test maps: {result.n_test_maps}; storms in the catalog on them: {result.n_catalog_storms}; "
        f"storms the detector outlined (score >= {result.score_threshold:.2f}, the threshold of best F1 on the "
        f"validation sols): {result.n_detected_storms}",
        f"- inference: {time_ms:.0f} ms per map (median, CPU)" if time_ms else "- inference time: not measured",
        f"- whole demo: {result.seconds:.0f} s",
        *_tracking_lines(result.tracking),
        "",
        "## Files",
        "",
        "- `catalog/detections.csv`, `catalog/detections.geojson`, `catalog/mdad/MY??/MDADMY??.nc`: the storms found",
        "- `eval/metrics.json`, `eval/per_map.csv`: the scores",
        "- `climatology/*.png` and `*.csv`: the standard catalog figures of the detected storms and their tables",
        "- `../model.ckpt`: the trained detector (`marsdust detect ../model.ckpt MAPS -o OUT`)",
        "",
        "## Figures",
        "",
    ]
    lines += [f"![{path.stem}]({path.relative_to(result.report_dir).as_posix()})" for path in figures]
    return "\n".join(lines) + "\n"


def _detect_test_sols(data_dir: Path, run_dir: Path, report_dir: Path, model_path: Path, made_by: dict,
                      progress: bool) -> tuple[Path, float]:
    """``report/catalog/``: the detector on the held-out test sols (the whole archive as history), unless the same
    model made it already; returns the test index and the score threshold used (the checkpoint's)."""
    from marsdust.detect import DetectExecution, DetectSettings, detect_archive
    from marsdust.models import resolve_score_threshold

    test_index_path = _test_index(data_dir, run_dir, report_dir)
    detect_dir, detect_settings = report_dir / "catalog", report_dir / "catalog_settings.json"
    _clear_if_made_otherwise(detect_dir, detect_settings, made_by)  # detections of an earlier model are not resumed
    score_threshold, threshold_source = resolve_score_threshold(model_path, None)
    log.info("score threshold %.2f: %s", score_threshold, threshold_source)
    detect_archive(model_path, test_index_path, detect_dir, settings=DetectSettings(score_threshold=score_threshold),
                   execution=DetectExecution(progress=progress), history=data_dir / "archive")
    write_text_atomic(detect_settings, json.dumps(made_by) + "\n")
    return test_index_path, score_threshold


def run_demo(out_dir: str | os.PathLike = "demo_out", *, preset: str = DEMO_PRESET, max_steps: int = DEMO_MAX_STEPS,
             seed: int = 0, progress: bool = True, reference: str | None = None,
             reference_sols: int | None = None, reference_dropout: float | None = None,
             precision: str = "auto") -> DemoResult:
    """Synthesize, train, detect, evaluate and report (see the module docstring).

    Parameters
    ----------
    out_dir : path
        Gets ``data/`` (the synthetic archive and MDAD), ``run/`` (the training run),
        ``model.ckpt`` (the trained detector) and ``report/`` (summary, figures, catalog files).
    preset : str
        Synthetic-data preset (:data:`DEMO_PRESET` by default; ``demo`` for the paper's MOC years only,
        ``ci`` is smaller and faster).
    max_steps : int
        Training steps (batches of 4 maps).
    seed : int
        Seed of the planet, the split and the training.
    progress : bool
        Progress bars.
    reference, reference_sols, reference_dropout
        Reference bands of the detector (:mod:`marsdust.reference`) and how often training hides them;
        None takes the demo's: ``prior-median`` over 60 sols, no dropout (:data:`DEMO_REFERENCE_SOLS`
        says why).
    precision : str
        The training's ``TrainConfig.precision`` (``auto``: bf16 autocast on CPUs with ``avx512_bf16``, else fp32;
        :mod:`marsdust.train.hardware`).
    """
    from marsdust.evaluate import EvaluateOptions, evaluate_checkpoint
    from marsdust.mdad import read_catalog

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    data_dir, run_dir, report_dir = out_dir / "data", out_dir / "run", out_dir / "report"
    model_path = out_dir / "model.ckpt"
    report_dir.mkdir(parents=True, exist_ok=True)

    log.info("demo 1/5: synthesizing the '%s' archive in %s", preset, data_dir)
    _synthesize_once(data_dir, preset, seed, progress)

    log.info("demo 2/5: training DustRCNN for %d steps in %s", max_steps, run_dir)
    reference_config, reference_dropout = demo_reference(reference, reference_sols, reference_dropout)
    train_summary = _train_once(data_dir, run_dir, preset, max_steps, seed, progress, reference_config,
                                reference_dropout, precision)
    _export_model(run_dir, model_path)

    log.info("demo 3/5: detecting storms on the held-out test sols")
    made_by = _model_settings(preset, seed, max_steps, reference_config, reference_dropout, precision)
    test_index_path, score_threshold = _detect_test_sols(data_dir, run_dir, report_dir, model_path, made_by, progress)

    log.info("demo 4/5: evaluating against the catalog")
    metrics = evaluate_checkpoint(model_path, report_dir / "eval", EvaluateOptions(
        data=str(data_dir), split_file=str(run_dir / "split.csv"), progress=progress))

    log.info("demo 5/5: writing the report")
    test_ids = set(pd.read_csv(test_index_path)["map_id"])
    catalog = read_catalog(data_dir / "mdad")
    detections_csv = report_dir / "catalog" / "detections.csv"
    figures, tracking = _report_figures(report_dir, test_index_path, detections_csv, catalog, test_ids)
    result = DemoResult(
        out_dir=out_dir, model_path=model_path, report_dir=report_dir, summary_path=report_dir / "summary.md",
        metrics=metrics, n_test_maps=len(test_ids),
        n_catalog_storms=int(catalog["map_id"].isin(test_ids).sum()),
        n_detected_storms=len(pd.read_csv(detections_csv)),
        train_seconds=float(train_summary.get("seconds") or 0.0), seconds=time.perf_counter() - t0,
        tracking=tracking, score_threshold=score_threshold,
    )
    write_text_atomic(result.summary_path, _summary_markdown(result, train_summary, figures, preset,
                                                             reference_config.describe(), _data_lines(run_dir)))
    return result
