"""s3cmn.ops.dynamic_update: the one-pass C update equals its PyTorch twin (with and without a gradient, a
running or a fixed MS, one thread or two), moves the version counters, and falls back for tensors it does not take."""

from __future__ import annotations

import pytest
import torch

from s3cmn.ops.cpu_kernel import KernelUnavailable
from s3cmn.ops.dynamic_update import PARALLEL_MIN, dynamic_update, dynamic_update_ref


def tensors(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(n, generator=g)
    return {"p": p, "theta0": p + 0.1 * torch.randn(n, generator=g), "g": torch.randn(n, generator=g),
            "ms": torch.rand(n, generator=g) + 0.01, "rate": 0.01 * torch.rand(n, generator=g)}


@pytest.mark.parametrize("n", [37, PARALLEL_MIN + 5])  # one thread; two slices
@pytest.mark.parametrize("beta", [0.99, 1.0])
@pytest.mark.parametrize("with_grad", [True, False])
def test_c_equals_the_reference(n: int, beta: float, with_grad: bool) -> None:
    want, got = tensors(n, 0), tensors(n, 0)
    for t, backend in ((want, "torch"), (got, "c")):
        dynamic_update(t["p"], t["theta0"], t["g"] if with_grad else None, t["ms"], t["rate"], 3e-3, beta, 1e-3,
                       backend=backend)
    torch.testing.assert_close(got["p"], want["p"], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got["ms"], want["ms"], rtol=1e-6, atol=1e-7)
    assert not torch.equal(got["p"], tensors(n, 0)["p"])  # it did move the weights


def test_the_update_moves_version_counters_and_matches_the_formula() -> None:
    t = tensors(8, 1)
    p0, ms0 = t["p"].clone(), t["ms"].clone()
    versions = t["p"]._version, t["ms"]._version
    dynamic_update(t["p"], t["theta0"], t["g"], t["ms"], t["rate"], 0.5, 0.9, 0.01, backend="c")
    assert t["p"]._version > versions[0] and t["ms"]._version > versions[1]
    ms = 0.9 * ms0 + 0.1 * t["g"] ** 2
    torch.testing.assert_close(t["ms"], ms)
    torch.testing.assert_close(t["p"], p0 + t["rate"] * (t["theta0"] - p0) - 0.5 * t["g"] / (ms.sqrt() + 0.01))


def test_tensors_the_kernel_does_not_take_fall_back_or_are_refused() -> None:
    t = {k: v.double() for k, v in tensors(16, 2).items()}
    want = {k: v.clone() for k, v in t.items()}
    dynamic_update(*(t[k] for k in ("p", "theta0", "g", "ms", "rate")), 1e-2, 0.99, 1e-3)  # auto: the reference
    dynamic_update_ref(*(want[k] for k in ("p", "theta0", "g", "ms", "rate")), 1e-2, 0.99, 1e-3)
    torch.testing.assert_close(t["p"], want["p"], rtol=0, atol=0)
    with pytest.raises(KernelUnavailable, match="float32"):
        dynamic_update(*(t[k] for k in ("p", "theta0", "g", "ms", "rate")), 1e-2, 0.99, 1e-3, backend="c")
