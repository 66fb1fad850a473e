"""One precision policy for training, evaluation, the sweep and the benchmarks.

``resolve_precision(requested, device)`` turns ``mixed_precision`` (``auto | no | bf16 | fp16``) into a
:class:`PrecisionChoice`: the autocast dtype (``None`` = fp32), whether a ``GradScaler`` is needed, and the
reason, logged once per process. ``auto`` means:

- CUDA: bf16 where the GPU supports it, else fp16 with a ``GradScaler``;
- CPU: bf16 only where the CPU runs it natively (AVX512-BF16 or AMX), else fp32. Many CPUs (AVX2 laptops,
  AMD Zen 2/3, most CI runners) *emulate* bf16: a bf16 matmul is then hundreds of times slower than fp32.
  The decision comes from the CPU's reported features and is confirmed by a short matmul probe.

An explicit ``bf16`` on a CPU that emulates it runs, with a one-line warning naming the measured ratio; an
explicit ``fp16`` on a CPU is refused (it has no fast fp16 kernels on any CPU).
"""

from __future__ import annotations

import functools
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "no", "bf16", "fp16")
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of x86 CPUs with bf16 dot products
_PROBE_N = 256  # a 256^3 matmul: ~0.5 ms in fp32, ~0.1 s where bf16 is emulated
_SLOW_RATIO = 1.5  # bf16 slower than fp32 by more than this = emulated


class PrecisionError(ValueError):
    """A precision that cannot run on this device (e.g. fp16 on a CPU)."""


@dataclass(frozen=True)
class CpuBf16Support:
    """What this CPU says about bf16 and what a matmul probe measured."""

    capability: str  # torch.backends.cpu.get_cpu_capability(): AVX2, AVX512, DEFAULT, ...
    flags: tuple[str, ...]  # native-bf16 feature flags found (avx512_bf16, amx_bf16)
    fp32_gflops: float | None  # probe: fp32 matmul rate
    bf16_gflops: float | None  # probe: bf16 matmul rate

    @property
    def slowdown(self) -> float | None:
        """How many times slower a bf16 matmul is than fp32 (None when not probed)."""
        if not self.fp32_gflops or not self.bf16_gflops:
            return None
        return self.fp32_gflops / self.bf16_gflops

    @property
    def native(self) -> bool:
        """bf16 runs natively: the CPU reports bf16 dot products *and* the probe confirms they are fast."""
        ratio = self.slowdown
        if ratio is not None:
            return ratio < _SLOW_RATIO
        return bool(self.flags)

    def describe(self) -> str:
        parts = [f"capability {self.capability}"]
        parts.append("flags " + "/".join(self.flags) if self.flags else "no AVX512-BF16/AMX flag")
        if self.slowdown is not None:
            parts.append(f"bf16 matmul {self.bf16_gflops:.1f} vs fp32 {self.fp32_gflops:.1f} GFLOP/s on 1 thread")
        return ", ".join(parts)


@dataclass(frozen=True)
class PrecisionChoice:
    """The resolved precision: ``autocast_dtype`` None means plain fp32."""

    requested: str
    device_type: str
    autocast_dtype: torch.dtype | None
    use_grad_scaler: bool
    reason: str

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]

    def autocast(self) -> torch.autocast:
        """The autocast context for this choice (disabled for fp32)."""
        dtype = self.autocast_dtype or torch.bfloat16  # any dtype: the context is disabled when None
        return torch.autocast(self.device_type, dtype=dtype, enabled=self.autocast_dtype is not None)

    def as_dict(self) -> dict[str, object]:
        return {"requested": self.requested, "used": self.name, "device": self.device_type,
                "grad_scaler": self.use_grad_scaler, "reason": self.reason}


def _cpuinfo_field(name: str) -> str | None:
    """The first ``name : value`` line of /proc/cpuinfo (Linux), or None."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name):
            return line.split(":", 1)[1].strip()
    return None


def _cpuinfo_flags() -> set[str]:
    return set((_cpuinfo_field("flags") or "").split())


def _matmul_gflops(dtype: torch.dtype, n: int = _PROBE_N, repeats: int = 3) -> float:
    """Best-of-``repeats`` rate of an n^3 matmul in ``dtype`` (GFLOP/s)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(2):  # warm-up: first-call dispatch, allocation, thread-pool start
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / max(best, 1e-9) / 1e9


@functools.lru_cache(maxsize=1)
def cpu_bf16_support() -> CpuBf16Support:
    """This CPU's bf16 support: reported features confirmed by a short matmul probe (cached per process)."""
    flags = tuple(f for f in _NATIVE_BF16_FLAGS if f in _cpuinfo_flags())
    capability = torch.backends.cpu.get_cpu_capability()
    # One thread: the ratio tells native from emulated kernels, and a single thread is not thrown off by
    # other processes on the machine (spinning OpenMP threads on a busy core can be 10x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            fp32 = _matmul_gflops(torch.float32, repeats=10)  # ~1 ms each
            bf16 = _matmul_gflops(torch.bfloat16, repeats=3 if flags else 1)  # ~0.1 s each where emulated
    finally:
        torch.set_num_threads(threads)
    return CpuBf16Support(capability=capability, flags=flags, fp32_gflops=fp32, bf16_gflops=bf16)


def cpu_model_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else platform.processor())."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def resolve_precision(
    requested: str,
    device: torch.device | str,
    *,
    cpu_support: CpuBf16Support | None = None,
    cuda_bf16: bool | None = None,
) -> PrecisionChoice:
    """Resolve ``requested`` (auto/no/bf16/fp16) for ``device``; ``cpu_support``/``cuda_bf16`` override the probes."""
    if requested not in PRECISIONS:
        raise PrecisionError(f"mixed_precision = {requested!r} is not one of {', '.join(PRECISIONS)}")
    device_type = torch.device(device).type

    def choice(dtype: torch.dtype | None, reason: str) -> PrecisionChoice:
        return PrecisionChoice(requested, device_type, dtype, dtype == torch.float16, reason)

    if requested == "no":
        return choice(None, "fp32: mixed precision off (--mixed-precision no)")
    if device_type == "cuda":
        supported = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        if requested == "fp16":
            return choice(torch.float16, "fp16 autocast with a GradScaler: asked for")
        if requested == "bf16":
            if not supported:
                raise PrecisionError("mixed_precision = 'bf16' asked for, but this GPU has no bf16: use fp16 or auto")
            return choice(torch.bfloat16, "bf16 autocast: asked for")
        if supported:
            return choice(torch.bfloat16, "bf16 autocast: this GPU supports bf16")
        return choice(torch.float16, "fp16 autocast with a GradScaler: this GPU has no bf16")
    if device_type != "cpu":
        if requested == "auto":
            return choice(None, f"fp32: no mixed-precision policy for device {device_type!r}")
        raise PrecisionError(f"mixed_precision = {requested!r} is not supported on device {device_type!r}: use no")
    if requested == "fp16":
        raise PrecisionError("mixed_precision = 'fp16' needs CUDA (fp16 on a CPU is very slow): use auto, bf16 or no")
    support = cpu_bf16_support() if cpu_support is None else cpu_support
    if requested == "bf16":
        if not support.native:
            ratio = support.slowdown
            measured = f"bf16 matmul {ratio:.0f}x slower than fp32, measured" if ratio else "no native bf16"
            logger.warning("bf16 autocast asked for on a CPU that emulates bf16 (%s; %s): expect a large "
                           "slowdown; --mixed-precision auto would pick fp32", measured, support.describe())
            return choice(torch.bfloat16, f"bf16 autocast: asked for on a CPU that emulates it ({measured})")
        return choice(torch.bfloat16, f"bf16 autocast: asked for; native on this CPU ({support.describe()})")
    if support.native:
        what = "AMX" if "amx_bf16" in support.flags else "AVX512-BF16" if support.flags else "native bf16"
        return choice(torch.bfloat16, f"bf16 autocast: {what} detected ({support.describe()})")
    ratio = support.slowdown
    slower = f"bf16 matmul {ratio:.0f}x slower than fp32" if ratio else "bf16 would be emulated"
    return choice(None, f"fp32: this CPU has no native bf16 ({slower}; {support.describe()})")


_logged: set[tuple[str, str, str]] = set()


def log_precision(choice: PrecisionChoice, what: str = "training") -> None:
    """Log the choice and its reason once per process (per requested/device/what)."""
    key = (choice.requested, choice.device_type, what)
    if key not in _logged:
        _logged.add(key)
        logger.info("%s precision: %s", what, choice.reason)


def machine_record(precision: str = "fp32", threads: int | None = None, matmul_n: int = 1024) -> dict[str, object]:
    """What a benchmark's numbers depend on: CPU model, capability, native-bf16 flags, threads, the precision
    used and the measured matmul peak of that precision at ``threads`` (for an MFU denominator)."""
    if precision not in ("fp32", "bf16"):
        raise PrecisionError(f"machine_record: precision must be fp32 or bf16, got {precision!r}")
    support = cpu_bf16_support()
    threads = threads or torch.get_num_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            n = matmul_n if precision == "fp32" or support.native else _PROBE_N  # emulated bf16: ~1 min at 1024
            peak = _matmul_gflops(torch.float32 if precision == "fp32" else torch.bfloat16, n=n, repeats=3)
    finally:
        torch.set_num_threads(previous)
    return {"cpu": cpu_model_name(), "cpu_capability": support.capability, "cpu_bf16_flags": list(support.flags),
            "bf16_native": support.native, "bf16_slowdown_1_thread": support.slowdown, "threads": threads,
            "precision": precision, "matmul_peak_gflops": peak, "matmul_peak_n": n}


def describe_machine(record: dict[str, object]) -> str:
    """One line for a report: 'AMD EPYC, AVX2 (no native bf16), 2 threads, fp32, matmul peak 150 GFLOP/s'."""
    bf16 = "native bf16" if record["bf16_native"] else "no native bf16"
    return (f"{record['cpu']}, {record['cpu_capability']} ({bf16}), {record['threads']} threads, "
            f"{record['precision']}, measured matmul peak {record['matmul_peak_gflops']:.0f} GFLOP/s")
