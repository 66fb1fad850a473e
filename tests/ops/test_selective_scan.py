"""selective_scan (chunked fast path) against selective_scan_ref (the token loop), forward and backward."""

from __future__ import annotations

import math

import pytest
import torch

from s3cmn.ops.selective_scan import selective_scan, selective_scan_ref

GRAD_TOL = dict(rtol=1e-5, atol=1e-5)


def _inputs(batch: int, E: int, N: int, T: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = {
        "u": torch.randn(batch, E, T, generator=g),
        "delta": torch.randn(batch, E, T, generator=g) - 1.0,
        "A": -torch.rand(E, N, generator=g) * 4.0 - 0.1,
        "B": torch.randn(batch, N, T, generator=g),
        "C": torch.randn(batch, N, T, generator=g),
        "D": torch.randn(E, generator=g),
        "z": torch.randn(batch, E, T, generator=g),
        "delta_bias": torch.randn(E, generator=g) * 0.5,
        "initial_state": torch.randn(batch, E, N, generator=g),
    }
    return {k: v.requires_grad_() for k, v in t.items()}


def _run(fn, inputs, use, **kw):
    args = {k: v for k, v in inputs.items() if k in use}
    for k in ("u", "delta", "A", "B", "C"):
        args[k] = inputs[k]
    y, last = fn(**args, delta_softplus=True, return_last_state=True, **kw)
    g = torch.Generator().manual_seed(7)
    gy, gh = torch.randn(y.shape, generator=g), torch.randn(last.shape, generator=g)
    leaves = [inputs[k] for k in sorted(args)]
    grads = torch.autograd.grad((y * gy).sum() + (last * gh).sum(), leaves)
    return y, last, dict(zip(sorted(args), grads, strict=True))


@pytest.mark.parametrize(
    "T, chunk_size",
    # T=1, T not a multiple of the chunk, T a multiple, one chunk bigger than T, the default chunk
    [(1, 0), (7, 3), (16, 4), (37, 0), (50, 64), (33, 8)],
)
@pytest.mark.parametrize("use", [(), ("D", "z", "delta_bias", "initial_state")])
@pytest.mark.parametrize("backend", ["chunked", "c"])
def test_fast_matches_ref_forward_backward(T: int, chunk_size: int, use: tuple[str, ...], backend: str) -> None:
    inputs = _inputs(2, 5, 4, T)
    y_ref, h_ref, g_ref = _run(selective_scan_ref, inputs, use)
    y, h, g = _run(selective_scan, inputs, use, chunk_size=chunk_size, backend=backend)
    assert y.shape == (2, 5, T) and h.shape == (2, 5, 4)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-5)
    assert g.keys() == g_ref.keys()
    for name in g:
        torch.testing.assert_close(g[name], g_ref[name], **GRAD_TOL, msg=lambda m, n=name: f"grad {n}: {m}")


def test_ref_matches_hand_computed_recurrence() -> None:
    """One channel, one state: h = exp(Δa)h + ΔBu, y = Ch + Du, gated by silu(z)."""
    u, dlt, a, b, c, d, z = 1.5, 0.3, -2.0, 0.7, -1.1, 0.4, 0.9
    h0 = 0.25
    h1 = math.exp(dlt * a) * h0 + dlt * b * u
    y1 = (c * h1 + d * u) * z / (1 + math.exp(-z))
    T = lambda v: torch.tensor([[[v]]])  # noqa: E731
    for fn in (selective_scan_ref, selective_scan):
        y, h = fn(T(u), T(dlt), torch.tensor([[a]]), T(b), T(c), torch.tensor([d]), T(z),
                  return_last_state=True, initial_state=T(h0))
        assert y.item() == pytest.approx(y1, rel=1e-6) and h.item() == pytest.approx(h1, rel=1e-6)


@pytest.mark.parametrize("backend", ["chunked", "c"])
def test_continuation_from_last_state(backend: str) -> None:
    """Scanning [0:T1] then [T1:T] from the returned state equals one scan over [0:T]."""
    inputs = {k: v.detach() for k, v in _inputs(2, 6, 3, 40).items()}
    full, h_full = selective_scan(inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"],
                                  inputs["D"], delta_softplus=True, return_last_state=True, chunk_size=6,
                                  backend=backend)
    parts, h = [], None
    for sl in (slice(0, 17), slice(17, 40)):
        u, dlt, B, C = (inputs[k][..., sl] for k in ("u", "delta", "B", "C"))
        y, h = selective_scan(u, dlt, inputs["A"], B, C, inputs["D"], delta_softplus=True,
                              return_last_state=True, initial_state=h, chunk_size=6, backend=backend)
        parts.append(y)
    torch.testing.assert_close(torch.cat(parts, dim=-1), full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, h_full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["chunked", "c"])
def test_large_decay_is_stable(backend: str) -> None:
    """Huge Δ·A (decays ~exp(-1e3) inside a chunk) must give finite numbers equal to the reference."""
    inputs = {k: v.detach() for k, v in _inputs(1, 3, 4, 24).items()}
    delta = inputs["delta"] * 0 + 50.0
    for x in (inputs["u"], delta, inputs["A"], inputs["B"], inputs["C"]):
        x.requires_grad_()
    args = (inputs["u"], delta, inputs["A"], inputs["B"], inputs["C"])
    y = selective_scan(*args, chunk_size=8, backend=backend)
    y_ref = selective_scan_ref(*args)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(y.square().sum(), args)
    grads_ref = torch.autograd.grad(y_ref.square().sum(), args)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, g_ref, **GRAD_TOL)


def test_no_grad_and_dtype() -> None:
    """Without grad it runs; a bf16 input comes back bf16 (computed in fp32)."""
    inputs = {k: v.detach() for k, v in _inputs(1, 4, 2, 9).items()}
    with torch.no_grad():
        y = selective_scan(inputs["u"].bfloat16(), inputs["delta"], inputs["A"], inputs["B"], inputs["C"])
    assert y.dtype == torch.bfloat16 and y.shape == (1, 4, 9)


@pytest.mark.parametrize("backend", ["chunked", "c"])
def test_deterministic(backend: str) -> None:
    inputs = {k: v.detach() for k, v in _inputs(2, 4, 3, 21).items()}
    args = (inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], inputs["D"])
    first = selective_scan(*args, chunk_size=5, backend=backend)
    assert torch.equal(first, selective_scan(*args, chunk_size=5, backend=backend))


@pytest.mark.parametrize("threads", [1, 3])
def test_c_kernel_threads_agree(threads: int) -> None:
    """The C kernel splits channels over threads and sums dL/dB, dL/dC over them: any split, same numbers."""
    inputs = _inputs(2, 7, 4, 19)
    use = ("D", "z", "delta_bias", "initial_state")
    y_ref, h_ref, g_ref = _run(selective_scan_ref, inputs, use)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        y, h, g = _run(selective_scan, inputs, use, backend="c")
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for name in g:
        torch.testing.assert_close(g[name], g_ref[name], **GRAD_TOL, msg=lambda m, n=name: f"grad {n}: {m}")


def test_rejects_unknown_backend() -> None:
    inputs = {k: v.detach() for k, v in _inputs(1, 4, 2, 9).items()}
    with pytest.raises(ValueError, match="unknown selective_scan backend 'cuda'"):
        selective_scan(inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], backend="cuda")


def test_rejects_bad_shapes() -> None:
    inputs = {k: v.detach() for k, v in _inputs(1, 4, 2, 9).items()}
    with pytest.raises(ValueError, match="input-dependent B, C"):
        selective_scan(inputs["u"], inputs["delta"], inputs["A"], inputs["B"][0], inputs["C"])
