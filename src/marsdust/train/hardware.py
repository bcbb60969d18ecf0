"""What the machine a run trains on offers, and what the run makes of it: ``TrainConfig.precision``.

Precision (``TrainConfig.precision``)
-------------------------------------
``auto`` (the default)
    ``32-true`` everywhere, and the start-up line says what the CPU offers. Lightning's ``bf16-mixed``
    (the forward pass under ``torch.autocast("cpu", dtype=torch.bfloat16)`` with fp32 weights and
    optimizer) is for CPUs with AMX bfloat16 tiles (``amx_bf16`` in ``/proc/cpuinfo``: Intel Sapphire
    Rapids and later), but it becomes ``auto``'s choice there (:data:`AUTOCAST_CPU_FLAG`) only once its
    speed and its quality at equal steps are measured on such a CPU: ask for it with
    ``--precision bf16-mixed``. On a CPU with AVX-512 BF16 dot products only (``avx512_bf16``, AMD
    Zen 4) autocast gave the default detector no clear gain (docs/benchmark-notes.md, "CPU precision"),
    and emulated bfloat16 is slower than fp32. ``benchmarks/bench_cpu_training.py`` measures the
    variants on the machine at hand.
``32``
    Lightning's ``32-true`` everywhere.
anything else
    Passed to ``lightning.Trainer(precision=...)`` as it is (``bf16-mixed``, ``16-mixed``, ...).

A run prints one line saying what it chose and why (:func:`describe_cpu`).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""``/proc/cpuinfo`` flags of native bfloat16 arithmetic (AMX tiles; AVX-512 BF16 dot products)."""

AUTOCAST_CPU_FLAG: str | None = None
"""The ``/proc/cpuinfo`` flag with which ``precision: auto`` turns bf16 autocast on; None: never yet
(``amx_bf16`` once bf16 training is measured on an AMX CPU, see the module docs)."""


@dataclass(frozen=True)
class CpuInfo:
    """The CPU a process runs on.

    Attributes
    ----------
    model : str
        ``model name`` of ``/proc/cpuinfo`` (else :func:`platform.processor`, else ``unknown``).
    bf16_flags : tuple of str
        Which of :data:`BF16_CPU_FLAGS` the CPU has.
    capability : str
        ``torch.backends.cpu.get_cpu_capability()`` (``AVX512``, ``AVX2``, ``DEFAULT``, ...).
    """

    model: str
    bf16_flags: tuple[str, ...]
    capability: str

    @property
    def native_bf16(self) -> bool:
        """Whether the CPU computes in bfloat16 natively (AMX or AVX-512 BF16)."""
        return bool(self.bf16_flags)


def cpu_info(cpuinfo_path: str | Path = "/proc/cpuinfo") -> CpuInfo:
    """The :class:`CpuInfo` of this machine (a missing ``cpuinfo_path``: no bf16 flags, the platform's name)."""
    import torch

    model, flags = "", set()
    try:
        text = Path(cpuinfo_path).read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return CpuInfo(model=model or platform.processor() or "unknown",
                   bf16_flags=tuple(flag for flag in BF16_CPU_FLAGS if flag in flags),
                   capability=str(torch.backends.cpu.get_cpu_capability()))


def trains_on_cpu(accelerator: str) -> bool:
    """Whether Lightning's ``accelerator`` setting puts the run on the CPU (``auto``: when no CUDA device is seen)."""
    import torch

    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def resolve_precision(precision: str, accelerator: str, cpu: CpuInfo) -> tuple[str, str]:
    """Lightning's ``precision`` for a run's setting (see the module docs) and why, in a few words."""
    if precision == "32":
        return "32-true", "asked for"
    if precision != "auto":
        return precision, "asked for"
    if not trains_on_cpu(accelerator):
        return "32-true", "auto: an accelerator"
    if AUTOCAST_CPU_FLAG is not None and AUTOCAST_CPU_FLAG in cpu.bf16_flags:
        return "bf16-mixed", f"auto: the CPU has {AUTOCAST_CPU_FLAG}"
    if cpu.native_bf16:
        return "32-true", (f"auto: the CPU has {'/'.join(cpu.bf16_flags)}; bf16 not yet measured to help, "
                           "--precision bf16-mixed to try")
    return "32-true", "auto: the CPU has no native bf16 (" + "/".join(BF16_CPU_FLAGS) + ")"


def describe_cpu(cpu: CpuInfo, precision: str, why: str, threads: int) -> str:
    """The start-up line of a run: ``cpu: <model>, bf16 autocast on|off (why), threads N``."""
    state = "on" if precision.startswith("bf16") else "off"
    return f"cpu: {cpu.model}, bf16 autocast {state} ({why}), threads {threads}"
