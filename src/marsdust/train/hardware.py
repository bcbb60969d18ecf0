"""What the machine a run trains on offers, and what the run makes of it: ``TrainConfig.precision`` and
``TrainConfig.memory_format``.

Precision (``TrainConfig.precision``)
-------------------------------------
``auto`` (the default)
    Lightning's ``bf16-mixed`` (the forward pass under ``torch.autocast("cpu", dtype=torch.bfloat16)``
    with fp32 weights and optimizer) on a CPU that computes in bfloat16 natively and on which torch
    runs its AVX-512 kernels: ``avx512_bf16`` in ``/proc/cpuinfo`` (:data:`AUTOCAST_CPU_FLAG`; AMD Zen 4
    and later, Intel Cooper Lake and Sapphire Rapids and later, which also have AMX tiles), torch's
    capability ``AVX512``. On an AMD EPYC with ``avx512_bf16`` the default detector trains 1.6 times
    as many steps a second (1.85 times on an Intel Xeon with AMX), and at equal steps it scores within
    1.2 points of fp32 (12° mAP50, mean of two seeds, on ``bench`` and on the demo; 0.4 points at 1200
    steps on the Xeon; docs/benchmark-notes.md, "CPU precision", "An Intel Xeon with AMX").
    ``32-true`` everywhere else: on accelerators, and on CPUs where bfloat16 would be emulated, which
    is far slower than fp32 (an AMD EPYC with AVX2 only trained 0.039 steps/s in bf16 against 0.485 in
    fp32; docs/benchmark-notes.md, "A CPU without AVX-512"). The start-up line says what the CPU offers
    and what was chosen.
    ``benchmarks/bench_cpu_training.py`` measures the variants on the machine at hand. Inference
    (``detect``, ``evaluate``) stays fp32.
``32``
    Lightning's ``32-true`` everywhere.
anything else
    Passed to ``lightning.Trainer(precision=...)`` as it is (``bf16-mixed``, ``16-mixed``, ...).

Memory format of the weights (``TrainConfig.memory_format``)
------------------------------------------------------------
``auto`` (the default)
    The detector's weights laid out channels-last (``model.to(memory_format=torch.channels_last)``; the
    convolutions then keep their activations channels-last too) on a CPU with AMX tiles, ``amx_bf16`` in
    ``/proc/cpuinfo`` (:data:`CHANNELS_LAST_CPU_FLAG`; Intel Sapphire Rapids and later), where torch runs
    its AVX-512 kernels. On a 2-core Intel Xeon with AMX the default detector trained 1.18 times as many
    steps a second in fp32 and 1.19 times as many in bf16 autocast (3.00 against 2.51 steps/s). On two
    AMD EPYCs without AMX it was slower (0.88 times fp32's steps on an AVX2 Zen 3; in both rounds of a
    loaded AVX-512 one), so it stays off there
    (docs/benchmark-notes.md, "An Intel Xeon with AMX"). Contiguous on accelerators.
``contiguous`` / ``channels_last``
    That layout everywhere.

A run prints one line saying what it chose and why (:func:`describe_cpu`).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""``/proc/cpuinfo`` flags of native bfloat16 arithmetic (AMX tiles; AVX-512 BF16 dot products)."""

AUTOCAST_CPU_FLAG: str | None = "avx512_bf16"
"""The ``/proc/cpuinfo`` flag with which ``precision: auto`` turns bf16 autocast on (where torch runs its
AVX-512 kernels, :data:`AUTOCAST_CAPABILITY`); None: never (see the module docs)."""

CHANNELS_LAST_CPU_FLAG: str | None = "amx_bf16"
"""The ``/proc/cpuinfo`` flag with which ``memory_format: auto`` lays the weights out channels-last (where
torch runs its AVX-512 kernels, :data:`AUTOCAST_CAPABILITY`); None: never. One of :data:`BF16_CPU_FLAGS`, the
flags :class:`CpuInfo` keeps."""

MEMORY_FORMATS = ("auto", "contiguous", "channels_last")
"""Values of ``TrainConfig.memory_format``."""

AUTOCAST_CAPABILITY = "AVX512"
"""``torch.backends.cpu.get_cpu_capability()`` (its prefix) that ``auto``'s bf16 also needs: under an AVX2
build or ``ATEN_CPU_CAPABILITY=avx2`` bfloat16 is emulated."""


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

    @property
    def avx512_kernels(self) -> bool:
        """Whether torch runs its AVX-512 kernels (capability :data:`AUTOCAST_CAPABILITY`), which ``auto``'s bf16
        and channels-last both need."""
        return self.capability.upper().startswith(AUTOCAST_CAPABILITY)


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
        if cpu.avx512_kernels:
            return "bf16-mixed", f"auto: the CPU has {AUTOCAST_CPU_FLAG}"
        return "32-true", (f"auto: the CPU has {AUTOCAST_CPU_FLAG} but torch runs its {cpu.capability} kernels, "
                           "which emulate bf16")
    if cpu.native_bf16:
        unused = "auto's bf16 is switched off" if AUTOCAST_CPU_FLAG is None else f"not {AUTOCAST_CPU_FLAG}"
        return "32-true", f"auto: the CPU has {'/'.join(cpu.bf16_flags)}, {unused}; --precision bf16-mixed to try"
    return "32-true", "auto: the CPU has no native bf16 (" + "/".join(BF16_CPU_FLAGS) + ")"


def resolve_memory_format(memory_format: str, accelerator: str, cpu: CpuInfo) -> tuple[bool, str]:
    """Whether a run's weights are laid out channels-last for its ``memory_format`` setting (see the module
    docs) and why, in a few words."""
    if memory_format != "auto":
        return memory_format == "channels_last", "asked for"
    if not trains_on_cpu(accelerator):
        return False, "auto: an accelerator"
    if CHANNELS_LAST_CPU_FLAG is None:
        return False, "auto: switched off"
    if CHANNELS_LAST_CPU_FLAG not in cpu.bf16_flags:
        return False, f"auto: the CPU has no {CHANNELS_LAST_CPU_FLAG}"
    if not cpu.avx512_kernels:
        return False, f"auto: the CPU has {CHANNELS_LAST_CPU_FLAG} but torch runs its {cpu.capability} kernels"
    return True, f"auto: the CPU has {CHANNELS_LAST_CPU_FLAG}"


def describe_cpu(cpu: CpuInfo, precision: str, why: str, threads: int,
                 channels_last: tuple[bool, str] | None = None) -> str:
    """The start-up line of a run: ``cpu: <model>, bf16 autocast on|off (why)[, channels-last weights on|off
    (why)], threads N`` (``channels_last``: :func:`resolve_memory_format`'s answer)."""
    state = "on" if precision.startswith("bf16") else "off"
    layout = ""
    if channels_last is not None:
        layout = f", channels-last weights {'on' if channels_last[0] else 'off'} ({channels_last[1]})"
    return f"cpu: {cpu.model}, bf16 autocast {state} ({why}){layout}, threads {threads}"
