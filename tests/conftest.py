"""Shared test fixtures: torch threads, the tiny detector's settings and the synthetic ``ci`` dataset."""

from types import MappingProxyType

import pytest


@pytest.fixture
def two_threads():
    """Run a test with torch on 2 CPU threads (CI's machine), restoring the previous setting."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_detector():
    """DetectorConfig overrides of the tiny, fast ``dustrcnn`` the tests build, read-only.

    The same settings as :data:`marsdust.models.TINY_DETECTOR` (random init, 32-channel FPN, at most
    4 detections per map); a test that needs other values spreads them into a new dict,
    ``{**tiny_detector, "box_detections_per_img": 10}``.
    """
    from marsdust.models import TINY_DETECTOR

    return MappingProxyType(dict(TINY_DETECTOR))


@pytest.fixture(scope="session")
def ci_synthesis(tmp_path_factory):
    """The ``ci`` preset (≈ 61 maps at 0.4° on the paper's calendar, seed 0), synthesized once per session.

    Returns the output folder and :func:`marsdust.synth.synthesize`'s result (``maps`` and
    ``storms`` tables). Every test that asks for it shares the same files: read them, never
    change them (copy the folder first to modify it).
    """
    from marsdust.synth import synthesize

    out = tmp_path_factory.mktemp("ci")
    return out, synthesize(out, "ci", seed=0, progress=False)


@pytest.fixture(scope="session")
def ci_data(ci_synthesis):
    """Folder of the session's ``ci`` dataset (``archive/``, ``mdad/``, ``truth/``), read-only by convention."""
    return ci_synthesis[0]
