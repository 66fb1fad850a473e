"""Contracts of causal cross-modal attention: fast == reference (with caches and windows, forward and backward),
causality in both streams, step == forward, prefill continuation, bounded multiscale cache, gradients."""

from __future__ import annotations

import pytest
import torch

from s3cmn.config import S3CMNConfig
from s3cmn.modeling.cross_modal import (
    CrossModalAttention,
    causal_attention,
    causal_attention_ref,
    multiscale_windows,
)

D, H = 16, 4
MODES = ["single", "bidirectional", "multiscale"]


def _model(mode: str, seed: int = 0, **overrides) -> CrossModalAttention:
    torch.manual_seed(seed)
    fields = dict(hidden_dim=D, num_attention_heads=4, cross_attention_heads=H, memory_compression_dim=8,
                  attention_dropout=0.0)
    cfg = S3CMNConfig.from_preset("tiny", **{**fields, **overrides})
    return CrossModalAttention(cfg, 0, mode=mode).eval()


def _ab(B: int = 2, T: int = 20, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, D, generator=g), torch.randn(B, T, D, generator=g)


@pytest.mark.parametrize("cached,window", [(0, 0), (5, 0), (0, [2, 3, 5, 0]), (6, 3), (9, [1, 4, 16, 2])])
@pytest.mark.parametrize("Tq", [1, 7])
def test_fast_matches_reference(cached: int, window, Tq: int) -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, H, Tq, 4, generator=g, requires_grad=True)
    k = torch.randn(2, H, cached + Tq, 4, generator=g, requires_grad=True)
    v = torch.randn(2, H, cached + Tq, 4, generator=g, requires_grad=True)
    gy = torch.randn(2, H, Tq, 4, generator=g)
    outs = []
    for fn in (causal_attention, causal_attention_ref):
        y = fn(q, k, v, window)
        outs.append((y, *torch.autograd.grad((y * gy).sum(), (q, k, v))))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_reference_mask_by_hand() -> None:
    """Window 2 with 1 cached key: query i (absolute i+1) sees keys i and i+1 only."""
    q = torch.zeros(1, 1, 3, 1)  # equal scores: the output is the mean of the visible values
    k = torch.zeros(1, 1, 4, 1)
    v = torch.arange(4.0).view(1, 1, 4, 1)
    y = causal_attention_ref(q, k, v, window=2)
    torch.testing.assert_close(y.flatten(), torch.tensor([0.5, 1.5, 2.5]))
    torch.testing.assert_close(causal_attention_ref(q, k, v).flatten(), torch.tensor([0.5, 1.0, 1.5]))


@pytest.mark.parametrize("mode", MODES)
def test_causal_in_both_streams(mode: str) -> None:
    m = _model(mode)
    a, b = _ab()
    with torch.no_grad():
        ya, yb, _ = m(a, b)
        future = torch.randn(2, 8, D)
        for changed in ((torch.cat([a[:, :12], future], 1), b), (a, torch.cat([b[:, :12], future], 1))):
            za, zb, _ = m(*changed)
            torch.testing.assert_close(za[:, :12], ya[:, :12], rtol=0, atol=1e-6)
            if yb is not None:
                torch.testing.assert_close(zb[:, :12], yb[:, :12], rtol=0, atol=1e-6)
    assert (yb is not None) == (mode == "bidirectional")
    assert ya.shape == (2, 20, D)


@pytest.mark.parametrize("mode", MODES)
def test_step_and_continuation_match_forward(mode: str) -> None:
    m = _model(mode, cross_attention_heads=2)  # multiscale windows 4, 16 < T: the windows matter
    a, b = _ab()
    with torch.no_grad():
        ya, yb, _ = m(a, b)
        st, steps = None, []
        for t in range(a.shape[1]):
            sa, sb, st = m.step(a[:, t], b[:, t], st)
            steps.append((sa, sb))
        pa, pb, pst = m(a[:, :9], b[:, :9])
        qa, qb, _ = m(a[:, 9:], b[:, 9:], pst)
    torch.testing.assert_close(torch.stack([s[0] for s in steps], 1), ya, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([pa, qa], 1), ya, rtol=1e-5, atol=1e-5)
    if mode == "bidirectional":
        torch.testing.assert_close(torch.stack([s[1] for s in steps], 1), yb, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.cat([pb, qb], 1), yb, rtol=1e-5, atol=1e-5)
        assert set(st) == {"k_a", "v_a", "k_b", "v_b"}
    cache = st["k_b"].shape[2]
    if mode == "multiscale":
        assert m.max_cache == max(multiscale_windows(2)) - 1 == cache  # bounded
    else:
        assert m.max_cache is None and cache == 20  # grows with the context


def test_multiscale_heads_see_their_window() -> None:
    """Head h of the multiscale variant ignores keys older than its window."""
    m = _model("multiscale", cross_attention_heads=2)  # windows 4, 16
    assert m.windows == [4, 16]
    a, b = _ab(1, 20)
    b2 = b.clone()
    b2[:, :10] = torch.randn(1, 10, D)  # positions 0..9 are outside head 0's window at t >= 13
    with torch.no_grad():
        q = m.a_from_b.q_proj(a).view(1, 20, 2, 8).transpose(1, 2)
        outs = []
        for src in (b, b2):
            k, v = (t.view(1, 20, 2, 8).transpose(1, 2) for t in m.a_from_b.kv_proj(src).chunk(2, -1))
            outs.append(causal_attention(q, k, v, m.windows))
    torch.testing.assert_close(outs[0][:, 0, 13:], outs[1][:, 0, 13:])  # head 0 unaffected
    assert not torch.allclose(outs[0][:, 1, 13:], outs[1][:, 1, 13:])  # head 1 sees them


@pytest.mark.parametrize("mode", MODES)
def test_gradients_reach_every_parameter(mode: str) -> None:
    m = _model(mode).train()
    a, b = (t.requires_grad_() for t in _ab())
    ya, yb, _ = m(a, b)
    (ya.square().mean() + (0 if yb is None else yb.square().mean())).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_bad_heads() -> None:
    with pytest.raises(ValueError, match="cross_attention_heads"):
        _model("single", cross_attention_heads=3)
