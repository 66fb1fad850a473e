"""Cross-modal attention: fast == reference (with caches and windows, forward and backward), the two-stream
step == forward and continuation, the bounded multiscale cache, the heads rule. (Causality and gradients run
through the integration mixer's cases of tests/modeling/test_mixer_contract.py.)"""

from __future__ import annotations

import pytest
import torch

from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.cross_modal import (
    CrossModalAttention,
    causal_attention,
    causal_attention_ref,
    multiscale_windows,
)
from s3cmn.utils.fields import ConfigError

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
def test_step_and_continuation_match_forward(mode: str) -> None:
    m = _model(mode, cross_attention_heads=2)  # multiscale windows 4, 16 < T: the windows matter
    a, b = _ab()
    with torch.no_grad():
        full = m(a, b)
        ya, yb = full.a, full.b
        st, steps = None, []
        for t in range(a.shape[1]):
            out = m.step(a[:, t], b[:, t], st)
            st = out.state
            steps.append((out.a, out.b))
        first = m(a[:, :9], b[:, :9])
        second = m(a[:, 9:], b[:, 9:], first.state)
        pa, pb, qa, qb = first.a, first.b, second.a, second.b
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


def test_heads_must_divide_hidden_dim_only_when_used() -> None:
    with pytest.raises(ConfigError, match="cross_attention_heads = 3"):
        S3CMNConfig.from_preset("tiny", hidden_dim=D, use_liquid=True, use_cross_modal_attention=True,
                                cross_attention_heads=3, memory_compression_dim=8)
    S3CMNConfig.from_preset("tiny", hidden_dim=D, cross_attention_heads=3, memory_compression_dim=8)  # unused
