"""Checkpoints that rebuild their detector with no other input.

marsdust checkpoint (``save_checkpoint``), a ``torch.save`` dict::

    {"format": "marsdust-detector", "format_version": 1, "marsdust_version": "0.1.0",
     "model_name": "dustrcnn", "model_config": {...DetectorConfig.to_dict()...},
     "state_dict": {...}, "extra": {...keyword arguments of save_checkpoint...}}

Lightning checkpoint (what ``marsdust.train`` saves; accepted by ``load_model``)::

    {"state_dict": {"model.<key>": tensor, ...},        # the LightningModule holds the
                                                        # detector as attribute ``model``
     "hyper_parameters": {"model_name": "dustrcnn",
                          "model_config": {...DetectorConfig.to_dict()...}, ...},
     ...}

i.e. call ``self.save_hyperparameters({"model_name": name, "model_config": cfg.to_dict()})`` (other
hyper-parameters may sit next to them) and keep the detector in ``self.model``.

Every checkpoint marsdust reads goes through this module: :func:`load_model` / :func:`read_checkpoint`
for the detector, :func:`read_training_state` for a run's whole Lightning state (global step,
callback states); all load with torch's ``weights_only=True`` unless ``trust_pickle`` is given.
(ImageNet weights for a backbone are not checkpoints: :mod:`marsdust.models.backbone` reads them.)
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch

import marsdust
from marsdust.fileio import atomic_output
from marsdust.models.config import DetectorConfig
from marsdust.models.registry import RegisteredDetector, build_model

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "marsdust-detector"
FORMAT_VERSION = 1
LIGHTNING_PREFIX = "model."


class CheckpointError(ValueError):
    """A file is not a loadable marsdust checkpoint (message names the file and the reason)."""


def save_checkpoint(model: RegisteredDetector, path: str | os.PathLike, **extra: Any) -> Path:
    """Write ``model`` to ``path`` atomically (temp file in the same folder, then rename).

    Parameters
    ----------
    model : RegisteredDetector
        A detector from :func:`marsdust.models.build_model`.
    path : path-like
        Destination file (parent folders are created).
    **extra
        Anything picklable by ``torch.save`` to keep alongside (e.g. ``step=..., metrics=...``);
        builtins and tensors keep the file loadable with ``weights_only=True``.

    Returns
    -------
    Path
        The written file.
    """
    if not isinstance(model, RegisteredDetector):
        raise TypeError(f"save_checkpoint expects a detector from build_model, got {type(model).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = getattr(model, "checkpoint_extra", None) or {}
    for key in KEPT_EXTRA:  # a re-saved model keeps what its training recorded
        if key not in extra and key in kept:
            extra[key] = kept[key]
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "marsdust_version": marsdust.__version__,
        "model_name": model.model_name,
        "model_config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                    trust_pickle: bool = False) -> dict[str, Any]:
    """Read a marsdust or Lightning checkpoint into ``{model_name, model_config, state_dict, extra}``.

    Parameters
    ----------
    path
        The checkpoint file.
    map_location
        Where tensors are loaded (``torch.load``'s ``map_location``).
    trust_pickle
        Also read files holding Python objects beyond tensors and plain settings, which
        unpickling can make run code. Checkpoints written by marsdust never need it; use it
        only for files from a source you trust.

    Raises
    ------
    CheckpointError
        Missing, damaged or truncated file, a file of another format version, a file holding
        Python objects without ``trust_pickle``, or a file that is neither a marsdust nor a
        Lightning checkpoint of a marsdust detector.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    raw = _torch_load(path, map_location, trust_pickle)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: not a marsdust checkpoint (holds a {type(raw).__name__}, expected a dict)")
    if raw.get("format") == CHECKPOINT_FORMAT:
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: checkpoint format version {version} (written by marsdust "
                f"{raw.get('marsdust_version', '?')}); this marsdust {marsdust.__version__} reads version "
                f"{FORMAT_VERSION}"
            )
        return {
            "model_name": raw["model_name"],
            "model_config": raw["model_config"],
            "state_dict": raw["state_dict"],
            "extra": raw.get("extra", {}),
        }
    hparams = raw.get("hyper_parameters")
    if isinstance(hparams, dict) and "model_name" in hparams and "state_dict" in raw:
        prefixed = {k[len(LIGHTNING_PREFIX):]: v for k, v in raw["state_dict"].items() if k.startswith(LIGHTNING_PREFIX)}
        if not prefixed:
            raise CheckpointError(f"{path}: Lightning checkpoint without '{LIGHTNING_PREFIX}*' weights")
        extra = {k: raw[k] for k in ("epoch", "global_step") if k in raw}
        if raw.get("marsdust_score_threshold") is not None:
            extra["score_threshold"] = float(raw["marsdust_score_threshold"])
        if raw.get("marsdust_outline_score_threshold") is not None:
            extra["outline_score_threshold"] = float(raw["marsdust_outline_score_threshold"])
        if hparams.get("label_mode"):
            extra["label_mode"] = str(hparams["label_mode"])
        if hparams.get("classes"):
            extra["classes"] = [str(c) for c in hparams["classes"]]
        if hparams.get("reference_dropout"):
            extra["reference_dropout"] = float(hparams["reference_dropout"])
        if hparams.get("training_latitudes_deg") is not None:
            extra["training_latitudes_deg"] = [float(v) for v in hparams["training_latitudes_deg"]]
        if "cloud_max_width_deg" in hparams:  # None: no limit
            width = hparams["cloud_max_width_deg"]
            extra["cloud_max_width_deg"] = None if width is None else float(width)
        return {
            "model_name": hparams["model_name"],
            "model_config": dict(hparams.get("model_config") or {}),
            "state_dict": prefixed,
            "extra": extra,
        }
    raise CheckpointError(
        f"{path}: not a marsdust checkpoint (no format '{CHECKPOINT_FORMAT}' and no Lightning "
        "hyper_parameters with model_name/model_config)"
    )


def read_training_state(path: str | os.PathLike, *, trust_pickle: bool = False) -> dict[str, Any]:
    """The whole content of a Lightning checkpoint of a training run, tensors on the CPU.

    What a run resumes from or is inspected by: ``global_step``, ``epoch``, ``callbacks`` (e.g. the
    best validation score behind ``best.ckpt``), ``state_dict``, ``optimizer_states``, ... To
    rebuild the detector use :func:`load_model`.

    Parameters
    ----------
    path
        The checkpoint file (``RUN_DIR/checkpoints/last.ckpt`` or ``best.ckpt``).
    trust_pickle
        As in :func:`read_checkpoint`: marsdust's own checkpoints never need it.

    Raises
    ------
    CheckpointError
        Missing, damaged or truncated file, a file holding Python objects without
        ``trust_pickle``, or a file whose content is not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    raw = _torch_load(path, "cpu", trust_pickle)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: not a training checkpoint (holds a {type(raw).__name__}, expected a dict)")
    return raw


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
               trust_pickle: bool = False) -> RegisteredDetector:
    """Rebuild the detector stored in ``path`` (marsdust or Lightning checkpoint), in eval mode.

    ``trust_pickle`` as in :func:`read_checkpoint`.

    Raises
    ------
    CheckpointError
        See :func:`read_checkpoint`; also when the weights do not fit the stored config.
    """
    content = read_checkpoint(path, map_location, trust_pickle=trust_pickle)
    try:
        config = DetectorConfig.from_dict(content["model_config"], source=str(path))
        # The weights come from the checkpoint: never look for ImageNet weights again.
        config = config.replace(backbone_weights="checkpoint")
        model = build_model(content["model_name"], config)
    except ValueError as error:
        raise CheckpointError(f"{path}: cannot rebuild detector {content['model_name']!r}: {error}") from error
    try:
        model.load_state_dict(content["state_dict"], strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit detector {content['model_name']!r}: {error}") from error
    model.checkpoint_extra = content["extra"]
    return model.to(map_location).eval()


KEPT_EXTRA = ("score_threshold", "outline_score_threshold", "label_mode", "classes", "reference_dropout",
              "cloud_max_width_deg", "training_latitudes_deg")
"""What training records beside the weights (``checkpoint_extra``) and a re-saved checkpoint keeps:
the score thresholds chosen on validation maps (of storms found, and of outlines:
:func:`stored_outline_threshold`), the label mode and the class names the detector learnt,
how often it saw a map without its reference background (``reference_dropout``, so whether it works
without history), the widest cloud region it counted as a cloud instance and the latitudes its training
maps covered (``training_latitudes_deg``)."""

DEFAULT_SCORE_THRESHOLD = 0.5
"""Score threshold of ``detect`` for a checkpoint that stores none (trained before thresholds were chosen)."""


def stored_score_threshold(checkpoint_or_model) -> float | None:
    """The score threshold chosen on validation maps and stored with a detector, or None.

    Training (:mod:`marsdust.train`) picks, at every validation, the score at which the detections'
    F1 against the catalogue (IoU ≥ 0.5) is highest, and stores the one of the best checkpoint;
    :func:`save_checkpoint` keeps it as ``score_threshold=...``.

    Parameters
    ----------
    checkpoint_or_model : path or RegisteredDetector
        A checkpoint file or a model from :func:`load_model`.
    """
    value = _extra(checkpoint_or_model).get("score_threshold")
    return None if value is None else float(value)


def stored_outline_threshold(checkpoint_or_model) -> float | None:
    """The score threshold of best pixel IoU of the dust outlines on the validation maps, or None.

    Training (``outline`` label mode, a detector with masks, validation maps inside the span of an
    outlining catalogue) finds, at every validation, the score from which the detections' masks
    together overlap the catalogued outlines best (pixel IoU over observed pixels,
    :func:`marsdust.evaluate.metrics.best_pixel_threshold`) and stores the one of the best checkpoint.
    It is the threshold for a map of dusty pixels, which need not be the one of best F1 of storms
    found (:func:`stored_score_threshold`): a storm found by a box can still miss half its arms.
    None for a checkpoint trained before it was recorded, or without outline truth on its validation maps.
    """
    value = _extra(checkpoint_or_model).get("outline_score_threshold")
    return None if value is None else float(value)


def _extra(checkpoint_or_model) -> dict:
    if isinstance(checkpoint_or_model, RegisteredDetector):
        return getattr(checkpoint_or_model, "checkpoint_extra", None) or {}
    return checkpoint_metadata(checkpoint_or_model)["extra"]


def checkpoint_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """``{model_name, model_config, extra}`` of a checkpoint, without its weights; read once per file version.

    What ``detect`` and ``evaluate`` ask of a checkpoint before they load it (thresholds, latitudes, classes,
    whether it needs history) comes from here: the file is read the first time and the answer kept while
    its path, size and modification time stay the same, so asking five questions costs one read.

    Raises
    ------
    CheckpointError
        As :func:`read_checkpoint`.
    """
    path = Path(path)
    try:
        status = path.stat()
    except OSError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    return copy.deepcopy(_cached_metadata(str(path.resolve()), status.st_ino, status.st_mtime_ns, status.st_size))


@functools.lru_cache(maxsize=8)
def _cached_metadata(resolved_path: str, inode: int, mtime_ns: int, size: int) -> dict[str, Any]:
    """The cache of :func:`checkpoint_metadata`: ``inode``, ``mtime_ns`` and ``size`` only key it (a rewritten or
    replaced file is read again)."""
    content = read_checkpoint(resolved_path)
    return {key: content[key] for key in ("model_name", "model_config", "extra")}


def stored_reference_dropout(checkpoint_or_model) -> float:
    """How often training showed the detector a map without its reference background (0 to 1).

    A detector with reference bands trained with ``reference_dropout > 0`` has also learnt to find
    storms on a map with no history (a lone map, the first sols of an archive); one trained with
    0 (or recorded before the setting existed) finds almost none there.
    """
    return float(_extra(checkpoint_or_model).get("reference_dropout") or 0.0)


def training_latitudes(checkpoint_or_model) -> tuple[float, float] | None:
    """``(south, north)`` in degrees: the latitudes the detector's training maps covered, or None when the
    checkpoint records none (trained before the record existed, or not by :mod:`marsdust.train`).

    A detector learnt on MOC-layout maps (60°S–60°N) has never seen the polar caps and hood of a global
    map; ``detect`` drops its detections centred beyond these latitudes
    (:attr:`marsdust.detect.DetectSettings.latitudes_deg`).
    """
    value = _extra(checkpoint_or_model).get("training_latitudes_deg")
    return None if value is None else (float(value[0]), float(value[1]))


def detector_classes(checkpoint_or_model) -> tuple[str, ...]:
    """Class names of a detector by class index - 1 (``("dust",)`` or ``("dust", "cloud")``).

    What training recorded (``classes``); a checkpoint that records none (trained before classes
    existed) is a one-class dust detector, or names its classes by :data:`marsdust.cloudmask.CLASSES`.
    """
    from marsdust.cloudmask import CLASSES

    extra = _extra(checkpoint_or_model)
    if isinstance(checkpoint_or_model, RegisteredDetector):
        num_classes = checkpoint_or_model.config.num_classes
    else:
        num_classes = int(checkpoint_metadata(checkpoint_or_model)["model_config"].get("num_classes", 1))
    if extra.get("classes"):
        return tuple(str(c) for c in extra["classes"])
    return tuple(CLASSES[k] if k < len(CLASSES) else f"class{k + 1}" for k in range(num_classes))


def resolve_score_threshold(checkpoint_or_model, score_threshold: float | None) -> tuple[float, str]:
    """``(threshold, where it came from)``: the given one, else the stored one, else :data:`DEFAULT_SCORE_THRESHOLD`."""
    if score_threshold is not None:
        return float(score_threshold), "given"
    stored = stored_score_threshold(checkpoint_or_model)
    if stored is not None:
        return stored, "chosen on validation maps (best F1 at IoU 0.5), stored in the checkpoint"
    return DEFAULT_SCORE_THRESHOLD, "default (the checkpoint stores no validated threshold)"


def conversion_command(path: Path) -> str:
    """The shell command that converts a trusted checkpoint holding Python objects into a marsdust one
    beside it (``<stem>-converted.ckpt``), every path quoted for a POSIX shell (``shlex.quote``)."""
    import shlex

    target = path.with_name(f"{path.stem}-converted.ckpt")
    code = ("from marsdust.models import load_model, save_checkpoint; "
            f"save_checkpoint(load_model({str(path)!r}, trust_pickle=True), {str(target)!r})")
    return f"python -c {shlex.quote(code)}"


def _torch_load(path: Path, map_location, trust_pickle: bool) -> Any:
    """``torch.load`` that turns every failure on a damaged or foreign file into ``CheckpointError``.

    A tiny or random file makes torch's unpicklers raise almost anything (``IndexError``,
    ``EOFError``, ``UnpicklingError``, ``RuntimeError`` from the zip reader, ``struct.error``,
    ``UnicodeDecodeError``...), so every ``Exception`` is caught; ``KeyboardInterrupt`` is not.
    """
    if not _is_torch_file(path):  # checked first: random bytes can read as a pickle of Python objects
        raise CheckpointError(f"{path}: not a checkpoint: truncated, damaged or another kind of file (neither "
                              "torch's zip format nor its legacy format)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if not _holds_python_objects(error):
            raise CheckpointError(f"{path}: damaged or not a torch checkpoint ({error})") from error
        if not trust_pickle:  # e.g. a foreign Lightning checkpoint whose hparams are Python objects
            raise CheckpointError(
                f"{path}: holds Python objects beyond tensors and settings, and unpickling them can run code "
                "stored in the file; marsdust's own checkpoints never do. If you trust its source, convert it "
                f"once: {conversion_command(path)}"
            ) from error
        log.info("%s: holds Python objects beyond tensors; loading it as a trusted file", path)
    except Exception as error:  # noqa: BLE001  (see the docstring)
        raise CheckpointError(f"{path}: damaged, truncated or not a torch checkpoint ({error})") from error
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # noqa: BLE001  (anything a damaged pickle raises)
        raise CheckpointError(f"{path}: damaged, truncated or not a torch checkpoint ({error})") from error


_LEGACY_TORCH_PREFIX = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
"""How a legacy (pre-1.6) ``torch.save`` file starts: protocol 2 pickle of torch's magic number."""


def _is_torch_file(path: Path) -> bool:
    """True for a whole zip archive (``torch.save``'s format) or a legacy torch pickle."""
    import zipfile

    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as stream:
        return stream.read(len(_LEGACY_TORCH_PREFIX)) == _LEGACY_TORCH_PREFIX


def _holds_python_objects(error: pickle.UnpicklingError) -> bool:
    """True when the weights-only unpickler refused a readable file for its Python objects."""
    return "weights_only" in str(error) or "Unsupported global" in str(error)
