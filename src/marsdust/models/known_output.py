"""A detector whose output is known before it runs: for end-to-end checks of the detect stage.

:func:`always_storm_detector` is a real (tiny) ``dustrcnn`` with hand-set heads: every region
proposal is classified "storm" with a score near 1, its box is the proposal itself and its mask
fills the box. The proposals come from random-but-seeded backbone and RPN weights, so the
detections are deterministic and every map gives some; what they contain does not matter. Saved
with :func:`marsdust.models.save_checkpoint`, it is what the resume, multi-process and
kill-restart checks of ``marsdust detect`` run (``tests/test_detect.py``,
``benchmarks/bench_kill_restart.py``), with no training.
"""

from __future__ import annotations

import torch

from marsdust.models.registry import MarsDustDetector, build_model

TINY_DETECTOR = dict(backbone_weights=None, fpn_channels=32, mask_head_channels=16, representation_size=64,
                     rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, box_detections_per_img=4)
"""DetectorConfig overrides of a tiny, fast ``dustrcnn`` (random init, 32-channel FPN, at most 4 detections)."""


def always_storm_detector(map_res_deg: float = 1.6, seed: int = 0) -> MarsDustDetector:
    """A tiny ``dustrcnn`` (:data:`TINY_DETECTOR`) whose heads always say "storm" (scores ~1, full-box masks).

    Parameters
    ----------
    map_res_deg : float
        Working resolution, degrees per pixel (coarse = fast).
    seed : int
        Seed of the random backbone and RPN weights (the same seed gives the same detections).
    """
    torch.manual_seed(seed)
    model = build_model("dustrcnn", map_res_deg=map_res_deg, **TINY_DETECTOR)
    with torch.no_grad():
        predictor = model.roi_heads.box_predictor
        predictor.cls_score.weight.zero_()
        predictor.cls_score.bias.copy_(torch.tensor([-4.0, 4.0]))
        predictor.bbox_pred.weight.zero_()
        predictor.bbox_pred.bias.zero_()
        mask_logits = model.roi_heads.mask_head.mask_logits
        mask_logits.weight.zero_()
        mask_logits.bias.fill_(5.0)
    return model
