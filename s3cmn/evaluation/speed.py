"""Speed and memory: prefill tokens/s, generation ms/token with the recurrent cache, peak memory, sizes.

- prefill: one forward over a prompt (B, T) that returns the cache; tokens/s = B·T / median seconds;
- generation: then one token at a time, ``model(next, cache=cache, use_cache=True)`` (the recurrent ``step``
  path), greedy; ms/token = median seconds / new tokens · 1000 (batch 1 by default);
- peak memory: CPU peak resident set size of the process during a phase (``VmHWM`` of ``/proc/self/status``,
  reset at the start of the phase through ``/proc/self/clear_refs``; where that is not possible, the
  process-lifetime peak ``ru_maxrss``, stated as such), and ``torch.cuda.max_memory_allocated`` on CUDA.
"""

from __future__ import annotations

import io
import os
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class SpeedResult:
    """Timings of prefill and cached generation (module docstring); medians over ``repeats`` after a warm-up."""

    batch_size: int
    prompt_tokens: int
    new_tokens: int
    repeats: int
    use_memory: bool
    device: str
    threads: int
    prefill_seconds: float
    prefill_tokens_per_s: float
    generation_ms_per_token: float
    generation_tokens_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_speed(
    model: nn.Module, prompt: Tensor, new_tokens: int = 32, repeats: int = 3, use_memory: bool = True
) -> SpeedResult:
    """Time prefill of ``prompt`` (B, T) and ``new_tokens`` cached greedy steps; nothing is written to memory."""
    if prompt.dim() != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be (batch, tokens) with tokens >= 1, got {tuple(prompt.shape)}")
    if new_tokens < 1 or repeats < 1:
        raise ValueError(f"new_tokens and repeats must be >= 1, got {new_tokens}, {repeats}")
    from s3cmn.evaluation.perplexity import model_device

    device = model_device(model)
    prompt = prompt.to(device)

    def run(steps: int) -> tuple[float, float]:
        _sync(device)
        t0 = time.perf_counter()
        out = model(prompt, use_cache=True, use_memory=use_memory, logits_to_keep=1)
        _sync(device)
        t1 = time.perf_counter()
        cache, token = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        for _ in range(steps):
            out = model(token, cache=cache, use_cache=True, use_memory=use_memory, logits_to_keep=1)
            cache, token = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
        _sync(device)
        return t1 - t0, time.perf_counter() - t1

    run(min(2, new_tokens))  # warm-up: allocations, lazy initialisation
    prefill, generation = zip(*(run(new_tokens) for _ in range(repeats)), strict=True)
    B, T = prompt.shape
    pre, gen = statistics.median(prefill), statistics.median(generation)
    return SpeedResult(
        batch_size=B, prompt_tokens=T, new_tokens=new_tokens, repeats=repeats, use_memory=use_memory,
        device=str(device), threads=torch.get_num_threads(), prefill_seconds=pre,
        prefill_tokens_per_s=B * T / pre, generation_ms_per_token=1000 * gen / new_tokens,
        generation_tokens_per_s=B * new_tokens / gen,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# peak memory


def status_kib(key: str) -> int | None:
    """A KiB field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``); None where there is no such file or field."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS; True only when the reset took.

    Writes ``/proc/self/clear_refs`` (Linux >= 4.0), then checks that VmHWM sits at VmRSS: some kernels and
    sandboxes accept the write and ignore it, and VmHWM is then the process-lifetime peak. The one reset that
    ``PeakMemory`` and the benchmarks' phase peaks use."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    hwm, rss = status_kib("VmHWM"), status_kib("VmRSS")
    if hwm is None or rss is None:
        return False
    return hwm - rss <= max(4096, rss // 50)  # KiB: a few MiB of slack for pages touched between the two reads


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.result``: the phase's peak memory (module docstring)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.result: dict[str, Any] = {}
        self._reset = False

    def __enter__(self) -> PeakMemory:
        self._reset = reset_peak_rss()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        hwm = status_kib("VmHWM") if self._reset else None
        if hwm is not None:
            peak, method = hwm * 1024, "VmHWM, reset at the start of the phase"
        else:
            scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
            peak, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "ru_maxrss, process lifetime"
        self.result = {"cpu_peak_rss_bytes": int(peak), "cpu_method": method}
        if self.device.type == "cuda":
            self.result["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated(self.device))


# --------------------------------------------------------------------------------------------------
# sizes


def parameter_count(model: nn.Module) -> int:
    """Parameters, each counted once (tied weights once)."""
    return sum(p.numel() for p in model.parameters())


def folder_size(path: str | os.PathLike) -> dict[str, int]:
    """Bytes on disk of a checkpoint folder: total, weights (``*.safetensors``), ``memory/``, everything else."""
    root = Path(path)
    sizes = {"total": 0, "weights": 0, "memory": 0, "other": 0}
    for f in root.rglob("*"):
        if not f.is_file():
            continue
        n = f.stat().st_size
        sizes["total"] += n
        rel = f.relative_to(root)
        kind = "memory" if rel.parts[0] == "memory" else ("weights" if f.suffix == ".safetensors" else "other")
        sizes[kind] += n
    return sizes


def serialized_size(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: comparable between fp32 and 8-bit models."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()
