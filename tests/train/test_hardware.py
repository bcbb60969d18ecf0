"""The CPU a run trains on and the precision it chooses (:mod:`marsdust.train.hardware`)."""

import pytest

from marsdust.train.hardware import CpuInfo, cpu_info, describe_cpu, resolve_memory_format, resolve_precision

ZEN4 = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n" \
       "processor\t: 1\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
SAPPHIRE_RAPIDS = "model name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: avx512f avx512_bf16 amx_bf16 amx_tile\n"
SKYLAKE = "model name\t: Intel(R) Xeon(R) Gold 6148\nflags\t\t: avx2 avx512f avx512bw\n"


@pytest.mark.parametrize(("text", "model", "flags"), [
    (ZEN4, "AMD EPYC 9R14", ("avx512_bf16",)),
    (SAPPHIRE_RAPIDS, "Intel(R) Xeon(R) Platinum 8488C", ("amx_bf16", "avx512_bf16")),
    (SKYLAKE, "Intel(R) Xeon(R) Gold 6148", ()),
])
def test_cpu_info_reads_the_model_and_the_bf16_flags(tmp_path, text, model, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    info = cpu_info(path)
    assert (info.model, info.bf16_flags, info.native_bf16) == (model, flags, bool(flags))
    assert info.capability  # torch's CPU capability, e.g. AVX512
    missing = cpu_info(tmp_path / "absent")
    assert missing.bf16_flags == () and missing.model


def test_auto_precision_is_bf16_where_the_cpu_computes_in_bf16_natively_under_avx512_kernels(monkeypatch):
    from marsdust.train import hardware

    sapphire_rapids = CpuInfo("Intel Xeon", ("amx_bf16", "avx512_bf16"), "AVX512")
    zen4 = CpuInfo("AMD EPYC", ("avx512_bf16",), "AVX512")
    zen4_avx2_kernels = CpuInfo("AMD EPYC", ("avx512_bf16",), "AVX2")  # ATEN_CPU_CAPABILITY=avx2
    skylake = CpuInfo("Intel Xeon", (), "AVX512")
    monkeypatch.setattr(hardware, "AUTOCAST_CPU_FLAG", "avx512_bf16")  # the module's value (tests pin fp32)
    assert resolve_precision("auto", "cpu", sapphire_rapids) == ("bf16-mixed", "auto: the CPU has avx512_bf16")
    assert resolve_precision("auto", "cpu", zen4) == ("bf16-mixed", "auto: the CPU has avx512_bf16")
    assert resolve_precision("auto", "cpu", zen4_avx2_kernels) == \
        ("32-true", "auto: the CPU has avx512_bf16 but torch runs its AVX2 kernels, which emulate bf16")
    assert resolve_precision("auto", "cpu", skylake)[0] == "32-true"
    assert "no native bf16" in resolve_precision("auto", "cpu", skylake)[1]
    monkeypatch.setattr(hardware, "AUTOCAST_CPU_FLAG", None)  # off: fp32 on every CPU
    assert resolve_precision("auto", "cpu", sapphire_rapids)[0] == "32-true"
    assert resolve_precision("auto", "cpu", zen4) == \
        ("32-true", "auto: the CPU has avx512_bf16, auto's bf16 is switched off; --precision bf16-mixed to try")
    assert resolve_precision("auto", "gpu", sapphire_rapids) == ("32-true", "auto: an accelerator")
    assert resolve_precision("32", "cpu", zen4) == ("32-true", "asked for")
    assert resolve_precision("bf16-mixed", "cpu", skylake) == ("bf16-mixed", "asked for")
    assert describe_cpu(zen4, "bf16-mixed", "auto: the CPU has avx512_bf16", 2) == \
        "cpu: AMD EPYC, bf16 autocast on (auto: the CPU has avx512_bf16), threads 2"
    assert describe_cpu(skylake, "32-true", "asked for", 4) == "cpu: Intel Xeon, bf16 autocast off (asked for), threads 4"


def test_auto_memory_format_is_channels_last_on_a_cpu_with_amx_under_avx512_kernels(monkeypatch):
    from marsdust.train import hardware

    sapphire_rapids = CpuInfo("Intel Xeon", ("amx_bf16", "avx512_bf16"), "AVX512")
    sapphire_rapids_avx2_kernels = CpuInfo("Intel Xeon", ("amx_bf16", "avx512_bf16"), "AVX2")
    zen4 = CpuInfo("AMD EPYC", ("avx512_bf16",), "AVX512")
    monkeypatch.setattr(hardware, "CHANNELS_LAST_CPU_FLAG", "amx_bf16")  # the module's value (tests pin it off)
    assert resolve_memory_format("auto", "cpu", sapphire_rapids) == (True, "auto: the CPU has amx_bf16")
    assert resolve_memory_format("auto", "cpu", zen4) == (False, "auto: the CPU has no amx_bf16")
    assert resolve_memory_format("auto", "cpu", sapphire_rapids_avx2_kernels) == \
        (False, "auto: the CPU has amx_bf16 but torch runs its AVX2 kernels")
    assert resolve_memory_format("auto", "gpu", sapphire_rapids) == (False, "auto: an accelerator")
    assert resolve_memory_format("channels_last", "cpu", zen4) == (True, "asked for")
    assert resolve_memory_format("contiguous", "cpu", sapphire_rapids) == (False, "asked for")
    monkeypatch.setattr(hardware, "CHANNELS_LAST_CPU_FLAG", None)
    assert resolve_memory_format("auto", "cpu", sapphire_rapids) == (False, "auto: switched off")
    assert describe_cpu(sapphire_rapids, "bf16-mixed", "auto: the CPU has avx512_bf16", 2,
                        (True, "auto: the CPU has amx_bf16")) == \
        "cpu: Intel Xeon, bf16 autocast on (auto: the CPU has avx512_bf16), channels-last weights on " \
        "(auto: the CPU has amx_bf16), threads 2"


def test_an_unknown_memory_format_is_refused_by_name():
    from marsdust.train import TrainConfig

    with pytest.raises(ValueError, match="memory_format must be one of auto, contiguous, channels_last, got 'nhwc'"):
        TrainConfig(memory_format="nhwc")
