"""s3cmn.modeling.decode: derived constants follow every change of their weights; the decode Linear equals
F.linear (and defers to layers that are not plain Linears); the cache never travels with copies or pickles."""

from __future__ import annotations

import copy
import pickle

import pytest
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


@pytest.mark.parametrize("fused", [True, False])
def test_linear_follows_an_optimizer_step_fused_or_not(fused: bool) -> None:
    """The fused AdamW kernel (the trainer's CPU default) leaves the version counters where they were: the
    decode path must still see the new weights (a stale copy picked the wrong best epoch in the task runs)."""
    torch.manual_seed(0)
    layer, x = nn.Linear(8, 8), torch.randn(1, 8)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1, fused=fused)
    with torch.no_grad():
        linear(layer, x)  # builds the transposed copy
    layer(torch.randn(4, 8)).square().sum().backward()
    optimizer.step()
    with torch.no_grad():
        torch.testing.assert_close(linear(layer, x), F.linear(x, layer.weight, layer.bias), rtol=1e-6, atol=1e-6)


def test_a_task_model_rollout_after_training_equals_a_fresh_copy() -> None:
    from s3cmn.model_config import S3CMNConfig
    from s3cmn.run_config import TaskConfig
    from s3cmn.tasks.metrics import rollout
    from s3cmn.tasks.models import DynamicsS3CMN
    from s3cmn.tasks.robotics_sim import trajectory_splits

    task = TaskConfig(trajectory_length=30, context_steps=5, horizon=20, train_trajectories=4,
                      validation_trajectories=1, test_trajectories=2)  # fmt: skip
    data = trajectory_splits(task, 0)
    torch.manual_seed(0)
    model = DynamicsS3CMN(S3CMNConfig(vocab_size=2, embedding_dim=16, hidden_dim=16, num_layers=2,
                                      num_attention_heads=2, spiking_units=16, hyena_filter_dim=8,
                                      hyena_filter_length=32, mamba_d_state=4, use_memory=False), task)  # fmt: skip
    model.fit_normalisation(data.train.states, data.train.actions)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    for _ in range(3):
        rollout(model, data.test.states, data.test.actions, 5, 20)  # the validation between epochs
        model.train()
        model.next_state_loss(data.train.states, data.train.actions).backward()
        optimizer.step()
        optimizer.zero_grad()
    after = rollout(model, data.test.states, data.test.actions, 5, 20)
    assert torch.equal(after, rollout(copy.deepcopy(model), data.test.states, data.test.actions, 5, 20))


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


def test_linear_reads_a_dynamic_int8_layer_through_its_codes() -> None:
    from s3cmn.ops.int8_gemv import int8_gemv_ref, unpack_linear_dynamic

    torch.manual_seed(0)
    fp32 = nn.Linear(32, 24)
    layer = torch.ao.quantization.quantize_dynamic(nn.Sequential(fp32), {nn.Linear}, dtype=torch.qint8)[0]
    x = torch.randn(1, 32)
    with torch.no_grad():
        y = linear(layer, x)
        codes = unpack_linear_dynamic(layer._packed_params._packed_params)
        torch.testing.assert_close(y, int8_gemv_ref(x, *codes), rtol=1e-5, atol=1e-5)  # weight-only int8
        torch.testing.assert_close(y, layer(x), rtol=0.05, atol=0.05)  # the dynamic path also rounds the input
        torch.testing.assert_close(linear(layer, x, bias=False), int8_gemv_ref(x, *codes[:3]), rtol=1e-5, atol=1e-5)


def test_module_tensors_lists_every_parameter_and_buffer() -> None:
    from s3cmn.modeling.decode import module_tensors

    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Sequential(nn.Linear(4, 2, bias=False)))
    expected = {id(t) for t in [*model.parameters(), *model.buffers()]}
    assert {id(t) for t in module_tensors(model)} == expected and len(module_tensors(model)) == len(expected)


def test_module_tensors_sees_every_change_of_the_tree_after_it_was_kept() -> None:
    """The walk is kept between calls: a submodule set, appended or replaced, and a parameter or buffer replaced
    in any way (even straight in the dict), must each show in the next call."""
    from s3cmn.modeling.decode import module_tensors

    def same(model: nn.Module) -> bool:
        expected = [*model.parameters(), *model.buffers()]
        got = module_tensors(model)
        return {id(t) for t in got} == {id(t) for t in expected} and len(got) == len(expected)

    model = nn.Sequential(nn.Linear(3, 4), nn.ModuleList([nn.Linear(4, 4)]))
    assert same(model)
    model[1].append(nn.Linear(4, 2))  # add_module
    assert same(model)
    model[0] = nn.Linear(3, 4)  # setattr of a module
    assert same(model)
    model[0].weight = nn.Parameter(torch.zeros(4, 3))  # setattr of a parameter
    assert same(model)
    model[0]._parameters["bias"] = nn.Parameter(torch.zeros(4))  # straight in the dict
    assert same(model)
    model[1][0].register_buffer("scale", torch.ones(4))
    assert same(model)
