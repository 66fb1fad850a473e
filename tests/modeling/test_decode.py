"""s3cmn.modeling.decode: derived constants follow every change of their weights; the decode Linear equals
F.linear (and defers to layers that are not plain Linears); the cache never travels with copies or pickles."""

from __future__ import annotations

import copy
import pickle

import torch
import torch.nn.functional as F
from torch import nn

from s3cmn.modeling.decode import derived, linear


def test_linear_equals_f_linear_and_follows_weight_changes() -> None:
    torch.manual_seed(0)
    layer, x = nn.Linear(16, 40), torch.randn(1, 16)
    with torch.no_grad():
        torch.testing.assert_close(linear(layer, x), F.linear(x, layer.weight, layer.bias), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(linear(layer, x, bias=False), x @ layer.weight.T, rtol=1e-6, atol=1e-6)
        layer.weight.mul_(-2)  # in place: the transposed copy is rebuilt
        torch.testing.assert_close(linear(layer, x), F.linear(x, layer.weight, layer.bias), rtol=1e-6, atol=1e-6)
        layer.load_state_dict({"weight": torch.ones(40, 16), "bias": torch.zeros(40)})
        torch.testing.assert_close(linear(layer, x), x.sum().expand(1, 40), rtol=1e-6, atol=1e-6)


def test_linear_runs_other_layers_own_forward() -> None:
    class Scaled(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    layer, x = Scaled(4, 3), torch.randn(1, 4)
    with torch.no_grad():
        torch.testing.assert_close(linear(layer, x), layer(x))


def test_derived_is_rebuilt_only_on_change_and_dropped_by_copies() -> None:
    layer = nn.Linear(3, 3)
    calls = []

    def build() -> torch.Tensor:
        calls.append(1)
        return layer.weight.sum()

    with torch.no_grad():
        first = derived(layer, "s", [layer.weight], build)
        assert derived(layer, "s", [layer.weight], build) is first and len(calls) == 1
        layer.weight.add_(1)
        derived(layer, "s", [layer.weight], build)
        assert len(calls) == 2
        layer.weight = nn.Parameter(torch.zeros(3, 3))  # another tensor
        assert derived(layer, "s", [layer.weight], build).item() == 0 and len(calls) == 3
    assert copy.deepcopy(layer).__dict__["_derived"] == {}
    assert pickle.loads(pickle.dumps(layer)).__dict__["_derived"] == {}
