"""s3cmn.ops.decode_step: each C one-token update equals its ``_ref`` twin, never modifies its inputs, and a
backend it cannot run is refused clearly."""

from __future__ import annotations

import pytest
import torch

from s3cmn.ops.decode_step import (
    decode_kernel,
    lif_step_stats,
    lif_step_stats_ref,
    ssm_step,
    ssm_step_ref,
    window_step,
    window_step_ref,
)

pytestmark = pytest.mark.skipif(decode_kernel() is None, reason="no C compiler here: the C backend cannot be built")


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("K", [1, 2, 4, 9])
@pytest.mark.parametrize("kind", ["conv+silu", "fir+skip", "plain"])
def test_window_step_c_equals_reference(K: int, kind: str) -> None:
    B, C = 3, 10
    g = _g(K)
    state, x, w = torch.randn(B, C, K - 1, generator=g), torch.randn(B, C, generator=g), torch.randn(C, K, generator=g)
    add = torch.randn(C, generator=g) if kind == "conv+silu" else None
    skip = torch.randn(C, generator=g) if kind == "fir+skip" else None
    before = state.clone(), x.clone()
    y, new = window_step(state, x, w, add, skip, silu=kind == "conv+silu", backend="c")
    y_ref, new_ref = window_step_ref(state, x, w, add, skip, silu=kind == "conv+silu")
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(new, new_ref, rtol=0, atol=0)  # the window shift is a copy
    assert torch.equal(state, before[0]) and torch.equal(x, before[1])


def test_ssm_step_c_equals_reference_and_strided_inputs_are_accepted() -> None:
    B, E, N = 2, 12, 5
    g = _g(0)
    h = torch.randn(B, E, N, generator=g)
    xz = torch.randn(B, 2 * E, generator=g)  # x and z as column slices of one projection (non-contiguous)
    x, z = xz[:, :E], xz[:, E:]
    dt = torch.randn(B, E, generator=g) * 3  # through softplus's linear branch too (dt + bias > 20)
    dt[0, 0] = 30.0
    dt_bias, D = torch.randn(E, generator=g), torch.randn(E, generator=g)
    A = -torch.rand(E, N, generator=g) * 4
    Bm, Cm = torch.randn(B, N, generator=g), torch.randn(B, N, generator=g)
    h0 = h.clone()
    y, h1 = ssm_step(h, x, dt, dt_bias, A, Bm, Cm, D, z, backend="c")
    y_ref, h1_ref = ssm_step_ref(h, x, dt, dt_bias, A, Bm, Cm, D, z)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h1, h1_ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(h, h0)


@pytest.mark.parametrize("steps,zero_reset", [(1, False), (3, True), (2, False)])
def test_lif_step_c_has_the_reference_spikes_and_statistics(steps: int, zero_reset: bool) -> None:
    B, N = 3, 40
    g = _g(steps)
    v, cur = torch.randn(B, N, generator=g), torch.randn(B, N, generator=g)
    beta, thr = torch.rand(N, generator=g), torch.rand(N, generator=g) + 0.1
    out = lif_step_stats(v, cur, beta, thr, steps, zero_reset, backend="c")
    ref = lif_step_stats_ref(v, cur, beta, thr, steps, zero_reset)
    for a, b in zip(out[:3], ref[:3], strict=True):  # rate, membrane, count: bit-equal (no contraction)
        assert torch.equal(a, b)
    torch.testing.assert_close(out[3], ref[3], rtol=1e-5, atol=1e-6)  # mean
    torch.testing.assert_close(out[4], ref[4], rtol=1e-4, atol=1e-6)  # std
    assert 0 < ref[2].sum() < B * N * steps  # some fired, some did not


def test_backend_c_refuses_what_it_cannot_run() -> None:
    state, x, w = torch.zeros(1, 2, 1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64), torch.zeros(2, 2)
    with pytest.raises(ValueError, match="float32 CPU"):
        window_step(state, x, w, backend="c")
    y, _ = window_step(state, x, w.double(), backend="auto")  # auto: the reference for other dtypes
    assert y.dtype == torch.float64
