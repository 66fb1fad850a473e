"""LIF-specific checks: spike statistics, fast == ref inside the layer, homeostasis, β in (0, 1). (Shapes,
causality, step == forward, continuation, gradients, save/load: tests/modeling/test_mixer_contract.py.)"""

import pytest
import torch

import s3cmn.modeling.spiking as spiking_module
from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.spiking import LIFLayer, SpikeStats
from s3cmn.ops.lif import lif_scan_ref

D, N = 16, 12


def _config(**overrides) -> S3CMNConfig:
    fields = dict(
        hidden_dim=D, num_attention_heads=4, memory_compression_dim=8, spiking_units=N, dropout=0.0,
        beta=0.9, spike_threshold=0.5, num_spike_steps=1, adaptive_threshold=True,
    )
    return S3CMNConfig.from_preset("tiny", **{**fields, **overrides})


def _layer(seed: int = 0, **overrides) -> LIFLayer:
    torch.manual_seed(seed)
    return LIFLayer(_config(**overrides), layer_idx=0).eval()


def _x(B: int = 2, T: int = 16, seed: int = 1) -> torch.Tensor:
    return 2 * torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("num_spike_steps", [1, 3])
def test_shapes_and_stats(num_spike_steps):
    m = _layer(num_spike_steps=num_spike_steps)
    x = _x(3, 7)
    out = m(x)
    stats = out.stats
    assert out.state["v"].shape == (3, N)
    assert isinstance(stats, SpikeStats)
    assert stats.spike_count.shape == (N,) and stats.num_steps == 3 * 7 * num_spike_steps
    # the counts are those of the reference scan on the same current
    with torch.no_grad():
        ref = lif_scan_ref(m.in_proj(x), m.decay(), m.threshold, torch.zeros(3, N), num_steps=num_spike_steps)
    torch.testing.assert_close(stats.spike_count, (ref.spikes * num_spike_steps).round().sum((0, 1)))
    torch.testing.assert_close(stats.firing_rate, stats.spike_count.sum() / (stats.num_steps * N))
    assert 0 < stats.firing_rate < 1 and stats.membrane_std > 0
    torch.testing.assert_close(stats.membrane_mean, ref.membrane_mean)
    assert 0 <= stats.silent_fraction <= 1
    assert stats.synaptic_ops(D) == stats.spike_count.sum() * D
    assert m.step(x[:, 0], None).stats.num_steps == 3 * num_spike_steps


def test_stats_merge_equals_stats_of_the_whole():
    m = _layer()
    x = _x(4, 8)
    whole, a, b = m(x).stats, m(x[:2]).stats, m(x[2:]).stats
    merged = a.merge(b)
    assert merged.num_steps == whole.num_steps
    torch.testing.assert_close(merged.spike_count, whole.spike_count)
    for f in ("firing_rate", "membrane_mean", "membrane_std"):
        torch.testing.assert_close(getattr(merged, f), getattr(whole, f), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("adaptive", [True, False])
def test_fast_scan_matches_ref_inside_the_layer(monkeypatch, adaptive):
    m = _layer(adaptive_threshold=adaptive, num_spike_steps=2)
    x = _x(2, 10).requires_grad_()
    v0 = torch.randn(2, N)

    def run():
        y, state = (out := m(x, {"v": v0})).y, out.state
        loss = (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum() + state["v"].sum()
        return y, torch.autograd.grad(loss, [x, *m.parameters()])

    y_fast, g_fast = run()
    monkeypatch.setattr(spiking_module, "lif_scan", lif_scan_ref)
    y_ref, g_ref = run()
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("adaptive,learn_beta", [(True, True), (False, True), (False, False)])
def test_parameters_follow_the_flags(adaptive, learn_beta):
    names = {name for name, _ in _layer(adaptive_threshold=adaptive, learn_beta=learn_beta).named_parameters()}
    assert ("threshold" in names) == (not adaptive) and ("beta_logit" in names) == learn_beta


@pytest.mark.parametrize("num_spike_steps", [1, 2])
def test_step_counts_add_up_to_the_forward_counts(num_spike_steps):
    m = _layer(num_spike_steps=num_spike_steps)
    x = _x(2, 16)
    state, counts = None, torch.zeros(N)
    for t in range(16):
        out = m.step(x[:, t], state)
        state = out.state
        counts += out.stats.spike_count
    torch.testing.assert_close(counts, m(x).stats.spike_count)


def test_fixed_beta_is_the_config_value():
    m = _layer(learn_beta=False, beta=1.0)
    assert torch.equal(m.decay(), torch.ones(N))
    torch.testing.assert_close(_layer(beta=0.9).decay(), torch.full((N,), 0.9))


def test_learned_beta_stays_in_open_unit_interval():
    m = _layer(learn_beta=True, beta=1.0)  # the boundary value is initialised just inside
    assert torch.all(m.decay() < 1)
    with torch.no_grad():
        m.beta_logit.copy_(torch.linspace(-200, 200, N))  # where a plain sigmoid saturates to 0 and 1 in fp32
    beta = m.decay()
    assert torch.all(beta > 0) and torch.all(beta < 1)
    # and under aggressive training
    m = _layer().train()
    opt = torch.optim.SGD(m.parameters(), lr=1e3)
    for _ in range(5):
        opt.zero_grad()
        (-m(_x(2, 8)).y.abs().mean()).backward()
        opt.step()
    beta = m.decay()
    assert torch.all(beta > 0) and torch.all(beta < 1)


def test_homeostasis_moves_threshold_toward_target_in_training_only():
    rate, target = 0.05, 0.1
    m = _layer(target_spike_rate=target, threshold_adaptation_rate=rate)
    x = _x(2, 16)
    theta0 = m.threshold.clone()
    # eval: forward and step leave the threshold alone
    m(x)
    m.step(x[:, 0], None)
    assert torch.equal(m.threshold, theta0)
    # train mode step: also unchanged
    m.train()
    m.step(x[:, 0], None)
    assert torch.equal(m.threshold, theta0)
    # train mode forward: θ += η (rate − target) per neuron
    stats = m(x).stats
    observed = stats.spike_count / stats.num_steps
    torch.testing.assert_close(m.threshold, theta0 + rate * (observed - target))
    assert torch.all(torch.sign(m.threshold - theta0) == torch.sign(observed - target))
    # repeated: the firing rate approaches the target
    gap0 = (observed - target).abs().mean()
    for _ in range(200):
        stats = m(x).stats
    gap = (stats.spike_count / stats.num_steps - target).abs().mean()
    assert gap < gap0 / 2


def test_homeostasis_keeps_a_positive_threshold():
    m = _layer(threshold_adaptation_rate=0.9, target_spike_rate=0.9, spike_threshold=0.01).train()
    m(torch.zeros(1, 4, D))
    assert torch.all(m.threshold >= spiking_module.MIN_THRESHOLD)


def test_backward_after_homeostatic_update():
    """The in-place threshold update must not break the backward of the forward that triggered it."""
    m = _layer().train()
    m(_x(2, 8)).y.sum().backward()
    assert m.in_proj.weight.grad is not None
