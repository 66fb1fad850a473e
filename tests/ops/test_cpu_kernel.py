"""The C-kernel loader: builds, caches, runs; a source that does not compile gives None and a logged reason."""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import pytest
import torch

from s3cmn.ops import cpu_kernel

AXPY = "void axpy(int n, float a, const float *x, float *y) { for (int i = 0; i < n; i++) y[i] += a * x[i]; }"
SIG = {"axpy": [ctypes.c_int, ctypes.c_float, ctypes.c_void_p, ctypes.c_void_p]}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(cpu_kernel, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(cpu_kernel, "_loaded", {})
    monkeypatch.setattr(cpu_kernel, "_why_not", {})
    return tmp_path


def test_builds_caches_and_runs(cache: Path) -> None:
    lib = cpu_kernel.load_kernel("axpy_test", AXPY, SIG)
    if lib is None:
        pytest.skip(f"no working C compiler here: {cpu_kernel.why_unavailable('axpy_test')}")
    x, y = torch.arange(5.0), torch.ones(5)
    lib.axpy(5, 2.0, cpu_kernel.ptr(x), cpu_kernel.ptr(y))
    torch.testing.assert_close(y, 1 + 2 * torch.arange(5.0))
    assert len(list(cache.glob("axpy_test-*.so"))) == 1  # built once, in the cache
    assert cpu_kernel.load_kernel("axpy_test", AXPY, SIG) is lib  # loaded once per process


def test_broken_source_is_none_with_reason(cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="s3cmn.ops.cpu_kernel"):
        lib = cpu_kernel.load_kernel("broken_test", "this is not C", {})
    assert lib is None
    assert "broken_test" in caplog.text and cpu_kernel.why_unavailable("broken_test")
    assert not list(cache.glob("broken_test-*.so"))


def test_ptr_rejects_wrong_layout() -> None:
    with pytest.raises(ValueError, match="contiguous float32"):
        cpu_kernel.ptr(torch.ones(3, 4).t())
    with pytest.raises(ValueError, match="contiguous float32"):
        cpu_kernel.ptr(torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("threads, n", [(1, 5), (2, 5), (4, 3)])
def test_parallel_ranges_cover_once(threads: int, n: int) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    seen: list[tuple[int, int, int]] = []
    try:
        cpu_kernel.parallel_ranges(n, lambda i, a, b: seen.append((i, a, b)))
        workers = cpu_kernel.num_workers(n)
    finally:
        torch.set_num_threads(before)
    assert workers == min(threads, n)
    covered = sorted(k for _, a, b in seen for k in range(a, b))
    assert covered == list(range(n))
    assert sorted(i for i, _, _ in seen) == list(range(workers))


def test_parallel_ranges_work_in_a_forked_child() -> None:
    """A child forked after the pool was made gets its own pool (the parent's threads do not exist in it)."""
    import multiprocessing

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cpu_kernel.parallel_ranges(4, lambda i, a, b: None)  # the parent's pool now exists
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(1) as pool:
            assert pool.apply_async(_covered_in_child).get(timeout=60) == [0, 1, 2, 3]
    finally:
        torch.set_num_threads(before)


def _covered_in_child() -> list[int]:
    seen: list[int] = []
    cpu_kernel.parallel_ranges(4, lambda i, a, b: seen.extend(range(a, b)))
    return sorted(seen)
