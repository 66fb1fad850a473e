"""Contracts of the LIF neuron: hand-computed dynamics, fast scan == reference loop (forward and backward)."""

import pytest
import torch

from s3cmn.ops.lif import lif_scan, lif_scan_ref, lif_step

INPUTS = [0.6, 0.6, 0.6, 0.0, 1.2]
# beta 0.5, threshold 1, v0 = 0. U = 0.5 V + I, spike when U >= 1:
#   t   I     U                         S   V subtract (U - S)   V zero (U (1 - S))
#   0   0.6   0.6                       0   0.6                  0.6
#   1   0.6   0.3 + 0.6 = 0.9           0   0.9                  0.9
#   2   0.6   0.45 + 0.6 = 1.05         1   0.05                 0
#   3   0.0   subtract: 0.025, zero: 0  0   0.025                0
#   4   1.2   subtract: 1.2125, zero 1.2 1  0.2125               0
HAND = {
    "subtract": ([0, 0, 1, 0, 1], [0.6, 0.9, 0.05, 0.025, 0.2125]),
    "zero": ([0, 0, 1, 0, 1], [0.6, 0.9, 0.0, 0.0, 0.0]),
}


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_hand_computed_dynamics(reset):
    spikes_exp, v_exp = HAND[reset]
    beta, thr = torch.tensor([0.5]), torch.tensor([1.0])
    v = torch.zeros(1, 1)
    spikes, vs = [], []
    for i in INPUTS:
        s, v = lif_step(v, torch.tensor([[i]]), beta, thr, reset)
        spikes.append(s.item())
        vs.append(v.item())
    assert spikes == spikes_exp
    torch.testing.assert_close(torch.tensor(vs), torch.tensor(v_exp))
    current = torch.tensor(INPUTS)[None, :, None]  # (1, 5, 1)
    for scan in (lif_scan, lif_scan_ref):
        out = scan(current, beta, thr, torch.zeros(1, 1), reset)
        assert out.spikes.flatten().tolist() == spikes_exp
        torch.testing.assert_close(out.v, torch.tensor([[v_exp[-1]]]))
        torch.testing.assert_close(out.membrane_mean, torch.tensor(v_exp).mean())
        torch.testing.assert_close(out.membrane_std, torch.tensor(v_exp).std(correction=0))


def test_micro_steps_give_a_rate():
    # beta 1 (no leak), threshold 1, current 0.4 held for 5 micro-steps:
    # U = 0.4, 0.8, 1.2 (fire, V -> 0.2), 0.6, 1.0 (fire, V -> 0): rate 2/5, final V 0
    one = torch.ones(1)
    out = lif_scan_ref(torch.full((1, 1, 1), 0.4), one, one, torch.zeros(1, 1), num_steps=5)
    torch.testing.assert_close(out.spikes, torch.full((1, 1, 1), 2 / 5))
    torch.testing.assert_close(out.v, torch.zeros(1, 1), atol=1e-6, rtol=0)
    fast = lif_scan(torch.full((1, 1, 1), 0.4), one, one, torch.zeros(1, 1), num_steps=5)
    torch.testing.assert_close(fast.spikes, out.spikes)


def _run(scan, inputs, **kw):
    leaves = [t.clone().requires_grad_() for t in inputs]
    out = scan(*leaves, **kw)
    g = torch.Generator().manual_seed(7)
    w_s = torch.randn(out.spikes.shape, generator=g)
    w_v = torch.randn(out.v.shape, generator=g)
    grads = torch.autograd.grad((out.spikes * w_s).sum() + (out.v * w_v).sum(), leaves)
    return out, grads


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("num_steps", [1, 3])
@pytest.mark.parametrize("surrogate", ["atan", "fast_sigmoid", "triangular"])
@pytest.mark.parametrize("backend", ["loop", "c"])
def test_fast_matches_ref_forward_and_backward(reset, detach_reset, num_steps, surrogate, backend):
    g = torch.Generator().manual_seed(0)
    B, T, N = 3, 9, 6
    inputs = (
        1.5 * torch.randn(B, T, N, generator=g),  # current
        0.1 + 0.85 * torch.rand(N, generator=g),  # beta
        0.5 + torch.rand(N, generator=g),  # threshold
        torch.randn(B, N, generator=g),  # v0
    )
    kw = dict(reset=reset, surrogate=surrogate, alpha=2.0, num_steps=num_steps, detach_reset=detach_reset)
    fast, g_fast = _run(lif_scan, inputs, **kw, backend=backend)
    ref, g_ref = _run(lif_scan_ref, inputs, **kw)
    assert 0 < fast.spikes.mean() < 1  # both spiking and silent steps are exercised
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for name, a, b in zip(["current", "beta", "threshold", "v0"], g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"grad {n}: {m}")


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_c_loops_are_bit_equal_to_the_python_loops(reset):
    """The C loops round as PyTorch does (no fused multiply-add): identical spikes, membrane and gradients."""
    g = torch.Generator().manual_seed(5)
    inputs = (1.5 * torch.randn(2, 40, 8, generator=g), 0.1 + 0.85 * torch.rand(8, generator=g),
              0.5 + torch.rand(8, generator=g), torch.randn(2, 8, generator=g))
    c, g_c = _run(lif_scan, inputs, reset=reset, num_steps=2, backend="c")
    loop, g_loop = _run(lif_scan, inputs, reset=reset, num_steps=2, backend="loop")
    for a, b in zip([*c, *g_c], [*loop, *g_loop], strict=True):
        assert torch.equal(a, b)


def test_detach_reset_changes_the_gradient():
    g = torch.Generator().manual_seed(3)
    current = 1.5 * torch.randn(2, 6, 4, generator=g)
    inputs = (current, torch.full((4,), 0.9), torch.ones(4), torch.zeros(2, 4))
    _, g_det = _run(lif_scan, inputs, detach_reset=True)
    _, g_full = _run(lif_scan, inputs, detach_reset=False)
    assert not torch.allclose(g_det[0], g_full[0])


def test_bad_arguments_raise():
    c, b, v = torch.zeros(1, 2, 3), torch.ones(3), torch.zeros(1, 3)
    with pytest.raises(ValueError, match="reset"):
        lif_scan(c, b, b, v, reset="hard")
    with pytest.raises(ValueError, match=r"\(N,\)"):
        lif_scan(c, torch.ones(2), b, v)
    with pytest.raises(ValueError, match="v0"):
        lif_scan_ref(c, b, b, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="num_steps"):
        lif_scan(c, b, b, v, num_steps=0)
    with pytest.raises(ValueError, match="unknown lif_scan backend"):
        lif_scan(c, b, b, v, backend="cuda")
    with pytest.raises(ValueError, match="float32 CPU tensors"):
        lif_scan(c.double(), b.double(), b.double(), v.double(), backend="c")
