"""Small C kernels for the CPU, compiled on first use with the system C compiler and loaded with ctypes.

Why: the recurrences of the model (the selective scan, the LIF loop) are sequential in time. In PyTorch
they are a Python loop of whole-tensor elementwise ops, each a sweep through memory; a C loop keeps one
channel's state in registers and does the whole recurrence in one pass (compute-bound instead of
memory-bound). No torch headers are needed (plain C on raw float pointers), so a build takes about a second.

The shared object is cached per source text, compiler flags and CPU model under ``~/.cache/s3cmn/kernels`` (built in a
temporary file, then renamed: concurrent processes never load a half-written library). Where no compiler
is found or the build fails, :func:`load_kernel` returns None and says why once in the log; callers then use
their PyTorch path (the choice is explicit in their ``backend`` argument).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from s3cmn.utils.precision import cpu_model_name

logger = logging.getLogger(__name__)

__all__ = [
    "Backend", "CACHE_DIR", "EXACT", "FAST_MATH", "KernelUnavailable", "load_kernel", "num_workers", "parallel_ranges",
    "ptr", "why_unavailable",
]

Backend = Literal["auto", "c", "torch"]
"""A kernel's ``backend`` argument: "c" (the C kernel, or an error saying why not), "torch" (the PyTorch path),
"auto" (the C kernel where it loads and takes the tensors, else PyTorch)."""

CACHE_DIR = Path.home() / ".cache" / "s3cmn" / "kernels"
CFLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-std=c99")
# -ffast-math lets gcc vectorise expf through glibc's libmvec (for kernels with no NaN/inf logic and no
# need to round exactly as PyTorch does)
FAST_MATH = ("-ffast-math",)
# no fused multiply-add: a*b + c rounded twice, as PyTorch's separate mul and add (bit-equal results)
EXACT = ("-ffp-contract=off",)

_loaded: dict[str, ctypes.CDLL | None] = {}
_why_not: dict[str, str] = {}
_pool: ThreadPoolExecutor | None = None
_pool_pid = [0]  # the process that created _pool


class KernelUnavailable(RuntimeError):
    """A C kernel was requested explicitly but cannot be built here."""


def _compiler() -> str | None:
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _build(name: str, source: str, target: Path, flags: tuple[str, ...]) -> None:
    compiler = _compiler()
    if compiler is None:
        raise KernelUnavailable("no C compiler (cc, gcc or clang) on PATH: install one (apt-get install gcc)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src, out = Path(tmp) / f"{name}.c", Path(tmp) / f"{name}.so"
        src.write_text(source)
        command = [compiler, *CFLAGS, *flags, str(src), "-o", str(out), "-lm"]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            raise KernelUnavailable(f"{compiler} failed on {name}.c: {proc.stderr.strip()[:500]}")
        os.replace(out, target)  # atomic: another process sees either no file or the whole library


def load_kernel(
    name: str, source: str, signatures: dict[str, list[type]], flags: tuple[str, ...] = ()
) -> ctypes.CDLL | None:
    """The compiled library of ``source`` (cached), with the argument types of its functions set; None (logged
    once, reason in :func:`why_unavailable`) if it cannot be built here. ``flags``: added to ``CFLAGS``."""
    if name in _loaded:
        return _loaded[name]
    options = " ".join(CFLAGS + flags)
    # -march=native: the library is for this CPU model only (a home folder shared across machines must not
    # hand one CPU's build to another)
    machine = f"{platform.machine()} {cpu_model_name()} {torch.backends.cpu.get_cpu_capability()}"
    key = hashlib.sha256((source + options + machine).encode())
    target = CACHE_DIR / f"{name}-{key.hexdigest()[:16]}.so"
    lib = None
    try:
        if not target.exists():
            _build(name, source, target, flags)
        lib = ctypes.CDLL(str(target))
        for fn, argtypes in signatures.items():
            getattr(lib, fn).argtypes = argtypes
            getattr(lib, fn).restype = None
    except (KernelUnavailable, OSError) as err:
        _why_not[name] = str(err)
        logger.warning("C kernel %s unavailable, using the PyTorch path: %s", name, err)
        lib = None
    _loaded[name] = lib
    return lib


def why_unavailable(name: str) -> str:
    """Why :func:`load_kernel` returned None for ``name`` ('' if it did not)."""
    return _why_not.get(name, "")


def ptr(x: Tensor) -> ctypes.c_void_p:
    """The data pointer of a contiguous fp32 tensor, for a ``float *`` argument."""
    if x.dtype != torch.float32 or not x.is_contiguous():
        raise ValueError(f"C kernels take contiguous float32 tensors, got {x.dtype}, strides {x.stride()}")
    return ctypes.c_void_p(x.data_ptr())


def num_workers(n: int) -> int:
    """How many slices :func:`parallel_ranges` cuts range(n) into: torch.get_num_threads(), at most n."""
    return max(1, min(torch.get_num_threads(), n))


def parallel_ranges(n: int, run: Callable[[int, int, int], None]) -> None:
    """Call ``run(worker, start, stop)`` on :func:`num_workers` slices of range(n), in threads (ctypes releases
    the GIL during a C call, so the slices run in parallel)."""
    global _pool
    workers = num_workers(n)
    if workers == 1:
        run(0, 0, n)
        return
    # a new pool in a forked child (its parent's threads do not exist there) or when more threads are wanted
    if _pool is None or _pool_pid[0] != os.getpid() or _pool._max_workers < workers:
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3cmn-kernel")
        _pool_pid[0] = os.getpid()
    bounds = [n * i // workers for i in range(workers + 1)]
    futures = [_pool.submit(run, i, bounds[i], bounds[i + 1]) for i in range(workers)]
    for f in futures:
        f.result()
