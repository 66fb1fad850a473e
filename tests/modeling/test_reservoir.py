"""The LiquidLM block (attention → time-aware reservoir → MLP) and a reservoir LM: frozen sparse reservoir with
the set spectral radius, scan == reference, ripples of the absolute position, the block's causality and
step == forward, gradients (none into the frozen buffers), save/load, config errors. (The attention and
reservoir mixers' contract: tests/modeling/test_mixer_contract.py.)"""

from __future__ import annotations

import pytest
import torch

from s3cmn import S3CMNConfig, S3CMNForCausalLM
from s3cmn.modeling.block import BlockOutput, S3CMNBlock
from s3cmn.modeling.reservoir import TimeAwareReservoir, reservoir_scan, reservoir_scan_ref
from s3cmn.utils.fields import ConfigError

D, R, V = 16, 24, 50
FROZEN = ("W", "W_in", "bias", "leak", "ripple_freq", "ripple_phase")


def _config(**overrides) -> S3CMNConfig:
    fields = dict(vocab_size=V, embedding_dim=D, hidden_dim=D, num_layers=2, num_attention_heads=4,
                  reservoir_size=R, memory_compression_dim=8, dropout=0.0, embedding_dropout=0.0,
                  attention_dropout=0.0, max_position_embeddings=64)
    return S3CMNConfig.from_preset("liquidlm", **{**fields, **overrides})


def _block(seed: int = 0, **overrides) -> S3CMNBlock:
    torch.manual_seed(seed)
    return S3CMNBlock(_config(**overrides), layer_idx=0).eval()


def _lm(seed: int = 0, **overrides) -> S3CMNForCausalLM:
    torch.manual_seed(seed)
    return S3CMNForCausalLM(_config(**overrides)).eval()


def _x(B: int = 2, T: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("radius,sparsity", [(0.9, 0.9), (1.3, 0.5), (0.5, 0.0)])
def test_reservoir_is_frozen_sparse_with_the_set_spectral_radius(radius: float, sparsity: float) -> None:
    torch.manual_seed(0)
    res = TimeAwareReservoir(_config(reservoir_size=64, reservoir_spectral_radius=radius,
                                     reservoir_sparsity=sparsity), 0)
    buffers = dict(res.named_buffers())
    params = dict(res.named_parameters())
    assert set(FROZEN) <= set(buffers) and not set(FROZEN) & set(params)
    assert set(params) == {"ripple_amplitude", "readout.weight", "readout.bias"}
    torch.testing.assert_close(torch.linalg.eigvals(res.W).abs().max(), torch.tensor(radius), rtol=1e-4, atol=1e-5)
    assert abs(float((res.W == 0).float().mean()) - sparsity) < 0.05
    assert ((res.leak >= 0.1 - 1e-6) & (res.leak <= 1 + 1e-6)).all()


def test_scan_matches_reference_forward_and_backward() -> None:
    torch.manual_seed(0)
    res = TimeAwareReservoir(_config(), 0)
    W, W_in, bias = (res.W.clone().requires_grad_(), res.W_in.clone().requires_grad_(),
                     res.bias.clone().requires_grad_())
    x, h0 = _x().requires_grad_(), torch.randn(2, R, requires_grad=True)
    g = torch.randn(2, 12, R)
    outs = []
    for fast in (True, False):
        if fast:
            hs, h = reservoir_scan(x @ W_in.t() + bias, W, res.leak, h0)
        else:
            hs, h = reservoir_scan_ref(x, W_in, bias, W, res.leak, h0)
        grads = torch.autograd.grad((hs * g).sum() + h.sum(), (x, h0, W, W_in, bias))
        outs.append((hs, h, *grads))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_ripples_follow_the_absolute_position() -> None:
    """Continuing from a state carries the position counter (the continuation itself: the mixer contract);
    a restart at position 0 differs."""
    res = _block().reservoir
    x = _x()
    with torch.no_grad():
        full, first = res(x), res(x[:, :5])
        restart = res(x[:, 5:])  # same input, positions 0.. and zero state: different
    assert full.state["pos"].tolist() == [12, 12] and first.state["pos"].dtype == torch.long
    assert not torch.allclose(restart.y, full.y[:, 5:])
    ripples = res.ripples(torch.arange(20)[None])  # (1, 20, R)
    assert ripples.shape == (1, 20, R) and ripples.std() > 0


def test_block_interface_causality_and_step() -> None:
    block = _block()
    assert not block.reads_memory and [sub.kind for sub in block.sublayers] == ["attention", "reservoir", "mlp"]
    x = _x()
    x2 = x.clone()
    x2[:, 7:] = torch.randn(2, 5, D)
    with torch.no_grad():
        out = block(x)
        assert isinstance(out, BlockOutput) and out.hidden.shape == (2, 12, D)
        assert set(out.state) == {"attention", "reservoir"}
        torch.testing.assert_close(block(x2).hidden[:, :7], out.hidden[:, :7], rtol=0, atol=1e-6)
        state, hs = None, []
        for t in range(12):
            o = block.step(x[:, t], state)
            state = o.state
            hs.append(o.hidden)
        pre = block(x[:, :5])
        post = block(x[:, 5:], pre.state)
    torch.testing.assert_close(torch.stack(hs, 1), out.hidden, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([pre.hidden, post.hidden], 1), out.hidden, rtol=1e-5, atol=1e-5)
    assert state["attention"]["k"].shape == (2, 4, 12, D // 4)  # the attention cache grows with the context


# ---------------------------------------------------------------------------------------------------------
# the reservoir LM (block_type = "reservoir", the liquidlm preset)
# ---------------------------------------------------------------------------------------------------------


def test_lm_gradients_reach_every_parameter_and_no_buffer() -> None:
    model = _lm().train()
    assert all([s.kind for s in layer.sublayers] == ["attention", "reservoir", "mlp"] for layer in model.model.layers)
    frozen = {n: b.clone() for n, b in model.named_buffers() if n.split(".")[-1] in FROZEN}
    assert len(frozen) == 2 * len(FROZEN)
    ids = torch.randint(0, V, (2, 16))
    model(ids, labels=ids).loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(not b.requires_grad for b in model.buffers())
    torch.optim.AdamW(model.parameters(), lr=1e-2).step()
    for name, b in model.named_buffers():
        if name in frozen:
            assert torch.equal(b, frozen[name]), name


def test_lm_causality_and_generation_equals_full_forward(check_decoding) -> None:
    model = _lm()
    ids = torch.randint(0, V, (2, 20))
    check_decoding(model, ids, split=11, prefill=7)
    generated = model.generate(ids[:, :4], max_new_tokens=3, do_sample=False)
    assert generated.shape == (2, 7)


def test_lm_save_load_round_trip(tmp_path) -> None:
    model = _lm()
    ids = torch.randint(0, V, (2, 10))
    model.save_pretrained(tmp_path)
    loaded = S3CMNForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    for (n, a), (_, b) in zip(model.named_buffers(), loaded.named_buffers(), strict=True):
        assert torch.equal(a, b), n


@pytest.mark.parametrize("flag", ["use_liquid", "use_population_coding", "use_cross_modal_attention", "use_memory"])
def test_reservoir_rejects_blocks_it_cannot_run(flag: str) -> None:
    with pytest.raises(ConfigError, match=f"block_type = 'reservoir'.*{flag}"):
        S3CMNForCausalLM(_config(**{flag: True}))
