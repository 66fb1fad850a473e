"""The mixer contract (s3cmn.modeling.mixer), checked for every registered mixer and its variants.

One harness for all: shapes and batch-first states, ``init_state`` == no state, causality, step-by-step ==
one forward, chunked continuation, gradients reaching every parameter, and a state-dict round trip. The
mixer-specific tests (numeric references, inits, ablations) stay in the per-mixer files.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from s3cmn.model_config import MIXER_KINDS, S3CMNConfig
from s3cmn.modeling.block import MIXERS
from s3cmn.modeling.mixer import Mixer, MixerOutput

B, T, D, SPLIT = 2, 12, 16, 5  # SPLIT: the later tokens a causality check changes, the chunk boundary
SMALL = dict(
    hidden_dim=D, embedding_dim=D, num_layers=2, num_attention_heads=4, dropout=0.0, spiking_units=8,
    mamba_d_state=4, s4d_d_state=4, hyena_filter_dim=8, hyena_filter_length=8, liquid_units=8, population_size=3,
    cross_attention_heads=2, gating_heads=2, reservoir_size=16, memory_size=64, memory_max_size=64, num_clusters=2,
    memory_compression=False, memory_top_k=4, max_retrieval_distance=2.0, memory_layers=[1],
    spike_threshold=0.2, max_position_embeddings=64,
)
LIQUID = dict(use_liquid=True)

# id -> (registry name or "liquid", config overrides). Every registry name appears at least once.
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "hyena": ("hyena", {}),  # T > hyena_filter_length: the bounded history is exercised
    "hyena-order3": ("hyena", dict(hyena_order=3, hyena_short_conv=1)),
    "mamba": ("mamba", {}),
    "mamba-dconv1": ("mamba", dict(mamba_d_conv=1)),
    "s4d": ("s4d", dict(ssm_type="s4d")),
    "lif": ("lif", dict(num_spike_steps=2, spike_reset="zero")),
    "lif-fixed": ("lif", dict(learn_beta=False, adaptive_threshold=False)),
    "population_lif-rate": ("population_lif", dict(use_population_coding=True)),
    "population_lif-hybrid": ("population_lif", dict(use_population_coding=True, population_decoding="hybrid",
                                                     num_spike_steps=3, population_threshold_spread="log")),
    "integration-sequential": ("integration", dict(LIQUID)),
    "integration-parallel-temporal": ("integration", dict(LIQUID, integration_mode="parallel",
                                                          spike_adapter="temporal")),
    "integration-bidirectional-potential": ("integration", dict(LIQUID, integration_mode="bidirectional",
                                                                spike_adapter="potential", use_population_coding=True)),
    "integration-cross-single": ("integration", dict(LIQUID, use_cross_modal_attention=True)),
    "integration-cross-bidirectional": ("integration", dict(LIQUID, use_cross_modal_attention=True,
                                                            cross_modal_mode="bidirectional")),
    "integration-cross-multiscale-ltc": ("integration", dict(LIQUID, use_cross_modal_attention=True,
                                                             cross_modal_mode="multiscale", liquid_backbone="ltc")),
    "integration-no-spiking-ncp": ("integration", dict(LIQUID, use_spiking=False, liquid_backbone="ncp")),
    "liquid-cfc": ("liquid", dict(LIQUID)),
    "liquid-ltc": ("liquid", dict(LIQUID, liquid_backbone="ltc")),
    "liquid-ncp": ("liquid", dict(LIQUID, liquid_backbone="ncp")),
    "memory": ("memory", {}),
    "attention": ("attention", dict(block_type="reservoir", use_memory=False)),
    "reservoir": ("reservoir", dict(block_type="reservoir", use_memory=False)),
    "mlp": ("mlp", {}),
}


def build(case: str, seed: int = 0) -> tuple[nn.Module, Any]:
    """The mixer of ``case`` (layer 1, eval mode) and the extra argument it takes (the memory bank or None)."""
    kind, overrides = CASES[case]
    config = S3CMNConfig.from_preset("tiny", **{**SMALL, **overrides})
    torch.manual_seed(seed)
    if kind == "liquid":
        from s3cmn.modeling.liquid import LiquidMixer

        return LiquidMixer(config, 1).eval(), None
    mixer = MIXERS[kind](config, 1).eval()
    return mixer, (memory_bank(config) if kind == "memory" else None)


def memory_bank(config: S3CMNConfig):
    """A bank whose layer-1 store holds 48 seeded entries, so the read has hits."""
    from s3cmn.memory.bank import MemoryBank
    from s3cmn.memory.store import FaissMemory

    store = FaissMemory.from_config(config, 1)
    store.write(torch.randn(48, D, generator=torch.Generator().manual_seed(7)))
    return MemoryBank({1: store})


def inputs(seed: int = 1, length: int = T) -> Tensor:
    return torch.randn(B, length, D, generator=torch.Generator().manual_seed(seed))


def forward(mixer: nn.Module, memory: Any, x: Tensor, state: Any = None) -> MixerOutput:
    return mixer(x, state) if memory is None else mixer(x, state, memory)


def step(mixer: nn.Module, memory: Any, x: Tensor, state: Any) -> MixerOutput:
    return mixer.step(x, state) if memory is None else mixer.step(x, state, memory)


def assert_states_close(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5, msg=lambda m, key=key: f"state {key}: {m}")


def test_every_registered_mixer_has_a_case_and_the_config_knows_it() -> None:
    assert tuple(MIXERS) == MIXER_KINDS
    assert {kind for kind, _ in CASES.values()} >= set(MIXERS)


@pytest.mark.parametrize("case", CASES)
def test_shapes_and_batch_first_state(case: str) -> None:
    mixer, memory = build(case)
    assert isinstance(mixer, Mixer) and mixer.layer_idx == 1
    x = inputs()
    with torch.no_grad():
        out = forward(mixer, memory, x)
        one = step(mixer, memory, x[:, 0], None)
        init = mixer.init_state(B, x)
        from_init = forward(mixer, memory, x, init)
    assert isinstance(out, MixerOutput) and out.y.shape == (B, T, D) and one.y.shape == (B, D)
    assert all(v.shape[0] == B for v in out.state.values())
    assert all(v.shape[0] == B for v in init.values())
    torch.testing.assert_close(from_init.y, out.y, rtol=0, atol=1e-6)  # init_state is the zero state
    assert_states_close(from_init.state, out.state)


@pytest.mark.parametrize("case", CASES)
def test_causal(case: str) -> None:
    mixer, memory = build(case)
    x = inputs()
    changed = x.clone()
    changed[:, SPLIT:] = inputs(seed=2)[:, SPLIT:]
    with torch.no_grad():
        y, y_changed = forward(mixer, memory, x).y, forward(mixer, memory, changed).y
    torch.testing.assert_close(y[:, :SPLIT], y_changed[:, :SPLIT], rtol=0, atol=1e-6)
    assert not torch.allclose(y[:, SPLIT:], y_changed[:, SPLIT:])  # the later tokens do matter


@pytest.mark.parametrize("case", CASES)
def test_step_by_step_equals_forward(case: str) -> None:
    mixer, memory = build(case)
    x = inputs()
    with torch.no_grad():
        full = forward(mixer, memory, x)
        state, ys = None, []
        for t in range(T):
            out = step(mixer, memory, x[:, t], state)
            state = out.state
            ys.append(out.y)
    torch.testing.assert_close(torch.stack(ys, 1), full.y, rtol=1e-5, atol=1e-5)
    assert_states_close(state, full.state)


FUSED = ["hyena", "hyena-order3", "mamba", "mamba-dconv1", "lif", "lif-fixed"]  # the mixers with a fused decode step


@pytest.mark.parametrize("case", FUSED)
def test_decode_step_equals_its_reference(case: str) -> None:
    """The no-grad decode path of ``step`` == ``step_ref`` token by token: outputs, states and statistics."""
    mixer, memory = build(case)
    x = inputs()
    with torch.no_grad():
        state = forward(mixer, memory, x[:, :SPLIT]).state
        ref_state = state
        for t in range(SPLIT, T):
            out, ref = mixer.step(x[:, t], state), mixer.step_ref(x[:, t], ref_state)
            torch.testing.assert_close(out.y, ref.y, rtol=1e-5, atol=1e-6)
            assert_states_close(out.state, ref.state)
            if ref.stats is not None:
                for field in ("spike_count", "firing_rate", "membrane_mean", "membrane_std"):
                    torch.testing.assert_close(getattr(out.stats, field), getattr(ref.stats, field))
                assert out.stats.num_steps == ref.stats.num_steps
            state, ref_state = out.state, ref.state


@pytest.mark.parametrize("case", CASES)
def test_chunked_continuation(case: str) -> None:
    """forward over [a, b] == forward over a, then over b from a's state (and a step from a prefix's state)."""
    mixer, memory = build(case)
    x = inputs()
    with torch.no_grad():
        full = forward(mixer, memory, x)
        a = forward(mixer, memory, x[:, :SPLIT])
        b = forward(mixer, memory, x[:, SPLIT:], a.state)
        last = step(mixer, memory, x[:, -1], forward(mixer, memory, x[:, :-1]).state)
    torch.testing.assert_close(torch.cat([a.y, b.y], 1), full.y, rtol=1e-5, atol=1e-5)
    assert_states_close(b.state, full.state)
    torch.testing.assert_close(last.y, full.y[:, -1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_gradients_reach_every_parameter(case: str) -> None:
    mixer, memory = build(case)
    mixer.train()
    x = inputs().requires_grad_()
    out = forward(mixer, memory, x)
    out.y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in mixer.named_parameters():
        if p.requires_grad:  # ncps keeps its fixed wiring masks as frozen parameters
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("case", CASES)
def test_state_dict_round_trip(case: str) -> None:
    mixer, memory = build(case, seed=0)
    other, _ = build(case, seed=5)
    other.load_state_dict(mixer.state_dict())
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(forward(other, memory, x).y, forward(mixer, memory, x).y, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------
# the memory read's part of the contract: it reads the bank's store of its layer and stages what it writes


def test_memory_read_stages_its_input_and_reads_only_its_layer() -> None:
    mixer, bank = build("memory")
    x = inputs()
    with bank.forward_pass(read=True, write=True):
        out = mixer(x, None, bank)
        assert bank.pending == [1]
        assert out.stats.searched and out.stats.hit_rate > 0
    with bank.forward_pass(read=False):  # reading switched off: the read is exactly 0, nothing searched
        off = mixer(x, None, bank)
    assert torch.equal(off.y, torch.zeros_like(x)) and not off.stats.searched
    assert torch.equal(mixer(x, None, None).y, torch.zeros_like(x))  # no bank: no read
