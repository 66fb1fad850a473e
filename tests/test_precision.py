"""The precision policy: its choice for each (device, CPU capability) case, with the probes fixed."""

from __future__ import annotations

import logging

import pytest
import torch

from s3cmn.utils.precision import CpuBf16Support, PrecisionError, cpu_bf16_support, resolve_precision

# Fixed probe answers: an AVX2 CPU that emulates bf16 (the numbers measured on such a machine: 82.5 vs 0.3
# GFLOP/s), an AVX-512 CPU without bf16 dot products, and CPUs with AVX512-BF16 or AMX that run it fast.
AVX2 = CpuBf16Support("AVX2", (), fp32_gflops=82.5, bf16_gflops=0.3)
AVX512_NO_BF16 = CpuBf16Support("AVX512", (), fp32_gflops=150.0, bf16_gflops=2.0)
AVX512_BF16 = CpuBf16Support("AVX512", ("avx512_bf16",), fp32_gflops=150.0, bf16_gflops=600.0)
AMX = CpuBf16Support("AVX512", ("avx512_bf16", "amx_bf16"), fp32_gflops=150.0, bf16_gflops=2000.0)
# A CPU that reports the flag but whose probe shows emulation speed (e.g. a VM hiding the unit): not native.
FLAG_BUT_SLOW = CpuBf16Support("AVX512", ("avx512_bf16",), fp32_gflops=150.0, bf16_gflops=1.0)


@pytest.mark.parametrize(
    ("support", "dtype", "reason_part"),
    [
        (AVX2, None, "no native bf16"),
        (AVX512_NO_BF16, None, "no native bf16"),
        (AVX512_BF16, torch.bfloat16, "AVX512-BF16 detected"),
        (AMX, torch.bfloat16, "AMX detected"),
        (FLAG_BUT_SLOW, None, "no native bf16"),
    ],
)
def test_auto_on_cpu_follows_native_bf16(support: CpuBf16Support, dtype: torch.dtype | None, reason_part: str) -> None:
    choice = resolve_precision("auto", "cpu", cpu_support=support)
    assert choice.autocast_dtype is dtype
    assert not choice.use_grad_scaler
    assert reason_part in choice.reason


def test_auto_on_avx2_names_the_measured_ratio() -> None:
    choice = resolve_precision("auto", "cpu", cpu_support=AVX2)
    assert choice.name == "fp32"
    assert "275x slower" in choice.reason  # 82.5 / 0.3


@pytest.mark.parametrize(
    ("cuda_bf16", "dtype", "scaler"), [(True, torch.bfloat16, False), (False, torch.float16, True)]
)
def test_auto_on_cuda(cuda_bf16: bool, dtype: torch.dtype, scaler: bool) -> None:
    choice = resolve_precision("auto", "cuda", cuda_bf16=cuda_bf16)
    assert choice.autocast_dtype is dtype
    assert choice.use_grad_scaler is scaler


def test_explicit_choices() -> None:
    assert resolve_precision("no", "cpu", cpu_support=AMX).autocast_dtype is None
    assert resolve_precision("no", "cuda", cuda_bf16=True).autocast_dtype is None
    assert resolve_precision("bf16", "cpu", cpu_support=AMX).autocast_dtype is torch.bfloat16
    fp16 = resolve_precision("fp16", "cuda", cuda_bf16=True)
    assert fp16.autocast_dtype is torch.float16 and fp16.use_grad_scaler


def test_bf16_on_an_emulating_cpu_runs_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="s3cmn.utils.precision"):
        choice = resolve_precision("bf16", "cpu", cpu_support=AVX2)
    assert choice.autocast_dtype is torch.bfloat16
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "275x slower" in warnings[0].getMessage()


def test_bf16_on_a_native_cpu_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="s3cmn.utils.precision"):
        resolve_precision("bf16", "cpu", cpu_support=AMX)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_impossible_requests_are_refused() -> None:
    with pytest.raises(PrecisionError, match="needs CUDA"):
        resolve_precision("fp16", "cpu", cpu_support=AVX2)
    with pytest.raises(PrecisionError, match="no bf16"):
        resolve_precision("bf16", "cuda", cuda_bf16=False)
    with pytest.raises(PrecisionError, match="not one of"):
        resolve_precision("fp8", "cpu", cpu_support=AVX2)


def test_the_real_probe_is_cached_and_consistent() -> None:
    first = cpu_bf16_support()
    assert cpu_bf16_support() is first  # probed once per process
    assert first.fp32_gflops and first.fp32_gflops > 0
    assert first.capability == torch.backends.cpu.get_cpu_capability()
    # Whatever this machine is, auto picks bf16 exactly when the probe says bf16 is native.
    choice = resolve_precision("auto", "cpu")
    assert (choice.autocast_dtype is torch.bfloat16) == first.native


def test_autocast_context_matches_the_choice() -> None:
    x = torch.randn(4, 4)
    with resolve_precision("no", "cpu", cpu_support=AVX2).autocast():
        assert (x @ x).dtype == torch.float32
    with resolve_precision("bf16", "cpu", cpu_support=AMX).autocast():
        assert (x @ x).dtype == torch.bfloat16
