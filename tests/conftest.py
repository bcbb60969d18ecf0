"""Shared test fixtures: torch threads, the tiny detector's settings and the synthetic ``ci`` dataset."""

import os
from types import MappingProxyType

import pytest

TEST_THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
"""torch threads of a test that trains or detects: CI's 2 cores, or 1 in each of the 2 pytest-xdist workers
``make test`` starts (two workers with 2 threads each would oversubscribe the 2 cores)."""


def pytest_configure(config):
    """In a pytest-xdist worker, torch and the processes tests start use one thread (see :data:`TEST_THREADS`)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


LONGEST_TESTS = ("test_tiny_dustrcnn_learns_to_find_storms_on_held_out_maps",)
"""Tests that take a large share of the suite (the learning test: 3.5-7 minutes on one thread, more than a
third of one worker's time); :func:`pytest_collection_modifyitems` starts them first."""


def pytest_collection_modifyitems(config, items):
    """Run :data:`LONGEST_TESTS` first, the rest in file order.

    pytest-xdist hands each worker a share of the tests and lets an idle worker take from the other's queue;
    a test that runs for minutes cannot be shared, so when it starts late one worker runs it alone while the
    other waits. Started first, it runs while the other worker takes the rest. (Only these move: moving a
    module's tests apart would build its module fixtures twice.)
    """
    items.sort(key=lambda item: item.originalname not in LONGEST_TESTS)  # stable


@pytest.fixture(autouse=True)
def _fp32_training(monkeypatch):
    """Every test trains in fp32 with contiguous weights (``precision`` and ``memory_format`` ``auto`` as on a
    CPU without native bf16): the thresholds of the tests that assert learning were measured so on several CPU
    kernels, and a CPU with ``avx512_bf16`` would otherwise train in bf16, one with AMX channels-last too
    (:mod:`marsdust.train.hardware`). ``tests/train/test_hardware.py`` tests the choice itself;
    ``test_bf16_channels_last_training_runs_resumes_and_its_checkpoint_detects`` trains as ``auto`` does with AMX."""
    from marsdust.train import hardware

    monkeypatch.setattr(hardware, "AUTOCAST_CPU_FLAG", None)
    monkeypatch.setattr(hardware, "CHANNELS_LAST_CPU_FLAG", None)


@pytest.fixture
def checkpoint_reads(monkeypatch):
    """The list of checkpoint files read from here on, one entry per read (``marsdust.models.checkpoint``'s
    every ``torch.load``)."""
    import marsdust.models.checkpoint as checkpoint_module

    reads = []
    real_load = checkpoint_module._torch_load
    monkeypatch.setattr(checkpoint_module, "_torch_load", lambda *args: reads.append(args[0]) or real_load(*args))
    return reads


@pytest.fixture
def ci_threads():
    """Run a test with torch on :data:`TEST_THREADS` CPU threads, restoring the previous setting; the number."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    yield TEST_THREADS
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
