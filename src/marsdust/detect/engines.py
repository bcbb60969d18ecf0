"""Running the detector on a list of tiles: the engines of :data:`ENGINES` (eager fast path, ONNX Runtime
for the dense part, the model's plain forward) and the ONNX export of that dense part."""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

from marsdust.fileio import atomic_output


@contextmanager
def _roi_heads_attribute(model, name: str, value):
    """Temporarily set the model's RoI heads' ``name`` to ``value`` (unchanged for None, or heads without it)."""
    heads = getattr(model, "roi_heads", None)
    old = getattr(heads, name, None)
    if value is None or old is None:
        yield
        return
    setattr(heads, name, value)
    try:
        yield
    finally:
        setattr(heads, name, old)


def _score_threshold(model, threshold: float):
    """Temporarily raise the model's box score threshold (fewer masks to compute and paste)."""
    old = getattr(getattr(model, "roi_heads", None), "score_thresh", None)
    return _roi_heads_attribute(model, "score_thresh", None if old is None else max(float(old), float(threshold)))


def _mask_box_scale(model, scale: float | None):
    """Temporarily outline masks in boxes ``scale`` times the detection's (None: the model's own window)."""
    return _roi_heads_attribute(model, "mask_box_scale", None if scale is None else float(scale))


def _has_fast_path(model) -> bool:
    """True for an unmodified torchvision two-stage detector whose transform never resizes (MarsDustDetector)."""
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

    from marsdust.models.registry import NoResizeTransform

    return (isinstance(model, GeneralizedRCNN) and "forward" not in vars(model)
            and type(model).forward is GeneralizedRCNN.forward and isinstance(model.transform, NoResizeTransform))


ENGINES = ("auto", "onnx", "torch", "plain")
"""Ways to run a detector: ``torch`` = :func:`run_model`'s eager fast path (no full-size mask
pasting); ``onnx`` = the same with the backbone + FPN + RPN head convolutions run by ONNX Runtime
(:class:`OnnxBackbone`; proposals, NMS and the RoI heads stay in PyTorch);
``plain`` = the model's own ``model(images)`` forward (reference for accuracy checks); ``auto`` =
``onnx`` on CPU when onnxruntime is installed and the model has the fast path, else ``torch``."""

ENGINE_ENV = "MARSDUST_DETECT_ENGINE"
"""Environment variable that sets the default engine (one of :data:`ENGINES`; default ``auto``)."""


def default_engine() -> str:
    """The engine used when none is given: ``$MARSDUST_DETECT_ENGINE`` or ``auto``."""
    value = os.environ.get(ENGINE_ENV, "auto").strip().lower() or "auto"
    if value not in ENGINES:
        raise ValueError(f"${ENGINE_ENV} must be one of {ENGINES}, got {value!r}")
    return value


def _onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _model_fingerprint(model) -> tuple:
    """Identity and in-place version of every parameter and buffer: changes when training updates weights."""
    return tuple((id(t), t._version) for t in list(model.parameters()) + list(model.buffers()))


WEIGHTS_METADATA_KEY = "marsdust_weights_sha256"
"""ONNX metadata entry that :func:`export_backbone_onnx` writes: :func:`weights_sha256` of the exported model."""


def weights_sha256(model) -> str:
    """SHA-256 of a model's weights: every parameter and buffer, by name, shape, dtype and value.

    The same for a detector and the same detector loaded again from its checkpoint; an ONNX backbone
    records it (:data:`WEIGHTS_METADATA_KEY`) so that it is never run with another detector's heads.
    """
    import numpy as np

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        array = np.ascontiguousarray(tensor.detach().cpu().numpy())
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _dense_part(model):
    """An ``nn.Module``: images → FPN levels, then the RPN head's logits and deltas per level, as one tuple
    (ONNX has no dict outputs)."""
    import torch

    class DensePart(torch.nn.Module):
        def __init__(self, backbone, rpn_head):
            super().__init__()
            self.backbone = backbone
            self.rpn_head = rpn_head

        def forward(self, images):
            levels = list(self.backbone(images).values())
            logits, deltas = self.rpn_head(levels)
            return tuple(levels) + tuple(logits) + tuple(deltas)

    return DensePart(model.backbone, model.rpn.head)


class _PrecomputedRPNHead:
    """Stands in for ``rpn.head``: returns the logits and deltas ONNX Runtime already computed."""

    def __new__(cls, logits, deltas):
        import torch

        class PrecomputedHead(torch.nn.Module):
            def forward(self, features):
                return logits, deltas

        return PrecomputedHead()


def _rpn_with_head_outputs(rpn, logits, deltas):
    """A shallow copy of ``rpn`` whose head returns precomputed outputs (anchors, NMS, etc. unchanged)."""
    import copy
    from collections import OrderedDict

    clone = copy.copy(rpn)
    clone._modules = OrderedDict(rpn._modules)  # copy.copy shares the module dict: give the clone its own
    clone.head = _PrecomputedRPNHead(logits, deltas)
    return clone


def backbone_onnx_bytes(model, *, opset: int = 17) -> bytes:
    """The model's dense part as an ONNX model, built in memory: normalized ``(N, C, H, W)`` images → pyramid
    levels (``level_<key>``), then the RPN head's objectness logits (``rpn_logits_<key>``) and box deltas
    (``rpn_deltas_<key>``) per level.

    Anchors, proposal selection / NMS, the RoI heads and post-processing stay in PyTorch (their
    shapes depend on the data).
    Height and width are dynamic (multiples of 32, as the model's transform pads them). The model's
    :func:`weights_sha256` is recorded in the metadata (:data:`WEIGHTS_METADATA_KEY`) and checked
    when the model is loaded (:class:`OnnxBackbone`). Nothing is written to disk, so an export
    killed half-way leaves nothing behind.

    Parameters
    ----------
    model : MarsDustDetector
    opset : int
        ONNX opset (17: GroupNorm is exported as InstanceNormalization + affine).

    Returns
    -------
    bytes
        The serialized ONNX model.

    Raises
    ------
    ValueError
        For a detector without a backbone + RPN (a ``unet`` segmenter: ``detect`` runs it in PyTorch).
    """
    import io
    import warnings

    import onnx
    import torch

    if not _has_fast_path(model):
        raise ValueError(f"detector {getattr(model, 'model_name', type(model).__name__)!r} has no backbone + FPN + "
                         "RPN head to export to ONNX (only the R-CNN detectors do); marsdust detect runs it whole "
                         "in PyTorch")
    wrapper = _dense_part(model).eval()
    example = torch.zeros(1, int(model.config.in_channels), 64, 64)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            keys = list(model.backbone(example))
        names = ([f"level_{key}" for key in keys] + [f"rpn_logits_{key}" for key in keys]
                 + [f"rpn_deltas_{key}" for key in keys])
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (example,), buffer, input_names=["images"], output_names=names,
                              dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}}, opset_version=opset,
                              dynamo=False)
        proto = onnx.load_from_string(buffer.getvalue())
        entry = proto.metadata_props.add()
        entry.key, entry.value = WEIGHTS_METADATA_KEY, weights_sha256(model)
        return proto.SerializeToString()
    finally:
        model.train(was_training)


def export_backbone_onnx(model, path: str | os.PathLike, *, opset: int = 17) -> Path:
    """Write :func:`backbone_onnx_bytes` of ``model`` to the ``.onnx`` file ``path``, atomically; returns the path."""
    path = Path(path)
    data = backbone_onnx_bytes(model, opset=opset)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return path


class OnnxBackbone:
    """The detector's backbone + FPN + RPN head run by ONNX Runtime on CPU (about 2x eager PyTorch there).

    Parameters
    ----------
    model : MarsDustDetector
        The detector whose backbone is replaced at inference.
    onnx_path : path, optional
        A file written by :func:`export_backbone_onnx` for this model (``marsdust export-onnx``);
        default: export it now, in memory (:func:`backbone_onnx_bytes`, ~2 s; no temporary file).
    threads : int, optional
        ONNX Runtime intra-op threads (default: ``torch.get_num_threads()``).
    """

    def __init__(self, model, onnx_path: str | os.PathLike | None = None, threads: int | None = None):
        import onnxruntime as ort
        import torch

        self.fingerprint = _model_fingerprint(model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # no busy-waiting between runs: the spinning threads would take the cores from the PyTorch heads,
        # the PNG reader thread and the writer thread that run beside ONNX Runtime
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if onnx_path is None:
            self.session = ort.InferenceSession(backbone_onnx_bytes(model), options, providers=["CPUExecutionProvider"])
        else:
            onnx_path = Path(onnx_path)
            if not onnx_path.is_file():
                raise FileNotFoundError(f"{onnx_path}: no such ONNX model (write one with marsdust export-onnx)")
            self.session = ort.InferenceSession(os.fspath(onnx_path), options, providers=["CPUExecutionProvider"])
        outputs = [o.name for o in self.session.get_outputs()]
        n_levels = len(model.rpn.anchor_generator.sizes)  # one anchor size per pyramid level
        if len(outputs) != 3 * n_levels:
            raise ValueError(f"{onnx_path}: the ONNX model has {len(outputs)} outputs but the detector has "
                             f"{n_levels} pyramid levels (3 outputs each: features, RPN logits, RPN deltas); "
                             "export it from this checkpoint (marsdust export-onnx)")
        if onnx_path is not None:
            _check_weights(self.session, onnx_path, model)
        self.level_keys = [name.removeprefix("level_") for name in outputs[:n_levels]]
        self.input_name = self.session.get_inputs()[0].name

    def matches(self, model) -> bool:
        """True while ``model``'s weights are the ones this session was built from."""
        return self.fingerprint == _model_fingerprint(model)

    def __call__(self, batch):
        """Pyramid levels (an ``OrderedDict`` of CPU tensors) and the RPN head's per-level ``(logits,
        deltas)`` lists of a normalized ``(N, C, H, W)`` batch."""
        from collections import OrderedDict

        import numpy as np
        import torch

        arrays = self.session.run(None, {self.input_name: np.ascontiguousarray(batch.detach().cpu().numpy())})
        tensors = [torch.from_numpy(a) for a in arrays]
        n = len(self.level_keys)
        levels = OrderedDict(zip(self.level_keys, tensors[:n]))
        return levels, (tensors[n:2 * n], tensors[2 * n:])


def _check_weights(session, onnx_path: Path, model) -> None:
    """Refuse an ONNX backbone exported from another detector (or without the recorded weights digest)."""
    recorded = session.get_modelmeta().custom_metadata_map.get(WEIGHTS_METADATA_KEY)
    if recorded is None:
        raise ValueError(f"{onnx_path}: the ONNX model does not record which detector it was exported from; "
                         "export it again from this checkpoint (marsdust export-onnx)")
    if recorded != weights_sha256(model):
        raise ValueError(f"{onnx_path}: the ONNX model was exported from another detector (its weights differ "
                         "from the checkpoint's); export it from this checkpoint (marsdust export-onnx)")


_ENGINE_CACHE: "dict[tuple, tuple[object, OnnxBackbone]]" = {}


def onnx_backbone_for(model, onnx_path: str | os.PathLike | None = None) -> OnnxBackbone:
    """A cached :class:`OnnxBackbone` for ``model``, rebuilt when its weights changed since."""
    import weakref

    key = (id(model), None if onnx_path is None else os.fspath(onnx_path))
    cached = _ENGINE_CACHE.get(key)
    if cached is not None and cached[0]() is model and cached[1].matches(model):
        return cached[1]
    engine = OnnxBackbone(model, onnx_path)
    _ENGINE_CACHE.clear()  # one model at a time: never keep sessions of dead models
    _ENGINE_CACHE[key] = (weakref.ref(model), engine)
    return engine


def resolve_engine(model, device, engine: str | None = None) -> str:
    """The engine that will run ``model`` on ``device``: ``onnx``, ``torch`` or ``plain`` (see :data:`ENGINES`)."""
    import torch

    engine = (engine or default_engine()).lower()
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    fast = _has_fast_path(model)
    on_cpu = torch.device(device).type == "cpu"
    if engine == "auto":
        return "onnx" if fast and on_cpu and _onnxruntime_available() else ("torch" if fast else "plain")
    if engine == "onnx":
        if not on_cpu:
            raise ValueError("engine 'onnx' runs on CPU only; use engine 'torch' on a GPU")
        if not _onnxruntime_available():
            raise ValueError("engine 'onnx' needs the onnxruntime package")
    if engine in ("onnx", "torch") and not fast:
        return "plain"
    return engine


def run_model(model, tensors: Sequence, device, score_threshold: float, engine: str = "torch",
              onnx_backbone: "OnnxBackbone | None" = None, mask_box_scale: float | None = None) -> list[dict]:
    """Model outputs on CPU for a list of ``(C, H, W)`` images.

    Each output has ``boxes`` (n, 4, input pixels), ``scores`` and either ``mask_rois`` (n, 1, M, M)
    probabilities in box coordinates (fast path for :class:`~marsdust.models.MarsDustDetector`:
    torchvision's pasting of every mask into a full-size image — zeros, stack, cat — is skipped;
    :func:`decode_map` pastes each mask only inside its box) or ``masks`` (n, 1, H, W) pasted by
    the model (any other torchvision-style detector, or ``engine="plain"``), or neither (box-only
    detectors).

    Parameters
    ----------
    engine : {"torch", "onnx", "plain", "auto"}
        See :data:`ENGINES` (default ``torch``: this low-level call never exports anything by itself).
    onnx_backbone : OnnxBackbone, optional
        The ONNX Runtime backbone for ``engine="onnx"`` (default: a cached one for ``model``).
    mask_box_scale : float, optional
        The masks' outline window for this call (:attr:`marsdust.detect.DetectSettings.mask_box_scale`; None:
        the model's). Masks outlined beyond the box come with their windows as ``mask_boxes``.
    """
    import torch

    engine = resolve_engine(model, device, engine)
    with torch.inference_mode(), _score_threshold(model, score_threshold), _mask_box_scale(model, mask_box_scale):
        images = [t.to(device, non_blocking=True) for t in tensors]
        if engine in ("torch", "onnx"):
            batch, _ = model.transform(images)
            rpn = model.rpn
            if engine == "onnx":
                features, (logits, deltas) = (onnx_backbone or onnx_backbone_for(model))(batch.tensors)
                rpn = _rpn_with_head_outputs(model.rpn, logits, deltas)
            else:
                features = model.backbone(batch.tensors)
            proposals, _ = rpn(batch, features)
            outputs, _ = model.roi_heads(features, proposals, batch.image_sizes)
            for out in outputs:  # no resize: boxes are already in input pixels
                if "masks" in out:
                    out["mask_rois"] = out.pop("masks")
        else:
            outputs = model(images)
    return [{k: v.detach().to("cpu") for k, v in out.items()} for out in outputs]
