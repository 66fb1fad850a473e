"""The compiled decode step (s3cmn.modeling.compiled_decode) equals the eager decode path it replaces: logits,
every state tensor and the spike statistics, token after token, at two batch sizes; models it does not cover
are refused with the reason. One module-scoped compile per model shape keeps the suite fast."""

from __future__ import annotations

import pytest
import torch

from s3cmn import S3CMNConfig, S3CMNForCausalLM
from s3cmn.modeling.compiled_decode import decode_tensors, rounded_weights, unsupported


def small_config(**overrides: object) -> S3CMNConfig:
    """Two blocks of the tiny preset's kinds (Mamba, Hyena, LIF, MLP, a memory read), small and spiking."""
    fields = dict(
        vocab_size=61, hidden_dim=32, embedding_dim=32, num_layers=2, spiking_units=16, mamba_d_state=4,
        hyena_filter_dim=8, hyena_filter_length=16, dropout=0.0, embedding_dropout=0.0, spike_threshold=0.05,
        memory_size=64, num_clusters=4, memory_compression_dim=8,
    )
    return S3CMNConfig.from_preset("tiny", **{**fields, **overrides})


@pytest.fixture(scope="module")
def models() -> tuple[S3CMNForCausalLM, S3CMNForCausalLM]:
    """(eager, compiled): the same weights."""
    torch.manual_seed(0)
    eager = S3CMNForCausalLM(small_config()).eval()
    compiled = S3CMNForCausalLM(small_config()).eval()
    compiled.load_state_dict(eager.state_dict())
    return eager, compiled.compile_decode()


def decode(model: S3CMNForCausalLM, ids: torch.Tensor, prefill: int, use_memory: bool = False) -> list:
    """The outputs of a ``prefill``-token forward, then of one step per remaining token."""
    with torch.no_grad():
        outs = [model(ids[:, :prefill], use_cache=True, use_memory=use_memory)]
        for t in range(prefill, ids.shape[1]):
            outs.append(model(ids[:, t : t + 1], cache=outs[-1].cache, use_cache=True, use_memory=use_memory))
    return outs


def states(out) -> dict[str, torch.Tensor]:
    return {f"{i}.{slot}.{k}": v for i, layer in enumerate(out.cache.layers) for slot, st in layer.items()
            for k, v in st.items()}


@pytest.mark.parametrize("batch", [1, 2])
def test_compiled_steps_equal_the_eager_steps(models, batch: int) -> None:
    eager, compiled = models
    ids = torch.randint(0, 61, (batch, 14), generator=torch.Generator().manual_seed(batch))
    want, got = decode(eager, ids, prefill=5), decode(compiled, ids, prefill=5)
    assert compiled._compiled_decoder._seen  # the steps went through the compiled step
    for w, g in zip(want[1:], got[1:], strict=True):
        torch.testing.assert_close(g.logits, w.logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(g.spike_rate, w.spike_rate, rtol=1e-5, atol=1e-6)
        for ws, gs in zip(w.spike_stats, g.spike_stats, strict=True):
            torch.testing.assert_close(gs.spike_count, ws.spike_count, rtol=0, atol=0)
            torch.testing.assert_close(gs.membrane_mean, ws.membrane_mean, rtol=1e-5, atol=1e-6)
            assert gs.num_steps == ws.num_steps
    want_states, got_states = states(want[-1]), states(got[-1])
    assert got_states.keys() == want_states.keys()
    for key, value in want_states.items():
        torch.testing.assert_close(got_states[key], value, rtol=1e-5, atol=1e-5, msg=key)
    # and the whole forward pass (step == forward)
    with torch.no_grad():
        full = eager(ids, use_memory=False).logits
    torch.testing.assert_close(torch.cat([o.logits for o in got], 1), full, rtol=1e-4, atol=1e-4)


# the fp32 cases: embedding_dim < hidden_dim, so the step also runs the model's in_proj and out_proj
@pytest.mark.parametrize(("weights", "gemv", "batch", "overrides"),
                         [("bf16", "fused", 1, {}), ("bf16", "fused", 2, {}), ("fp16", "fused", 1, {}),
                          ("int8", "fused", 1, {}), ("int8", "fused", 2, {"embedding_dim": 24}),
                          ("fp32", "fused", 1, {"embedding_dim": 24}), ("fp32", "blas", 1, {"embedding_dim": 24})])
def test_the_gemv_equals_the_eager_model_with_its_weights_rounded(weights: str, gemv: str, batch: int,
                                                                   overrides: dict) -> None:
    torch.manual_seed(0)
    eager = S3CMNForCausalLM(small_config(**overrides)).eval()
    compiled = S3CMNForCausalLM(small_config(**overrides)).eval()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_decode(weights=weights, gemv=gemv)
    packed = decode_tensors(compiled, weights, gemv)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "int8": torch.int8}[weights]
    if gemv == "fused":  # the matrices, in their own buffer
        assert packed.matrices.dtype == dtype and packed.matrices.numel() > packed.flat.numel()
    ids = torch.randint(0, 61, (batch, 12), generator=torch.Generator().manual_seed(7))
    got = decode(compiled, ids, prefill=4)
    assert compiled._compiled_decoder._seen
    # the reference: the prefill with the fp32 weights (the prompt is read eagerly, as by the compiled model),
    # then the eager steps with the matrices rounded (the values the compiled step reads)
    with torch.no_grad():
        want = [eager(ids[:, :4], use_cache=True)]
        rounded_weights(eager, weights)
        for t in range(4, ids.shape[1]):
            want.append(eager(ids[:, t : t + 1], cache=want[-1].cache, use_cache=True))
    # the fused GEMV sums in another order than the BLAS (~1e-6 a GEMV); rounding the weights moves the
    # logits ~1e-3, so a step that read unrounded (or wrongly rounded) weights fails
    tol = 2e-5
    for w, g in zip(want[1:], got[1:], strict=True):
        torch.testing.assert_close(g.logits, w.logits, rtol=0, atol=tol)
        for ws, gs in zip(w.spike_stats, g.spike_stats, strict=True):
            torch.testing.assert_close(gs.spike_count, ws.spike_count, rtol=0, atol=0)
    for key, value in states(want[-1]).items():
        torch.testing.assert_close(states(got[-1])[key], value, rtol=0, atol=tol, msg=key)
    if weights == "fp32":
        return
    with torch.no_grad():  # the rounding is real: the fp32 model's logits are further off than the tolerance
        fp32 = S3CMNForCausalLM(small_config(**overrides)).eval()
        fp32.load_state_dict(compiled.state_dict())
        assert (fp32(ids).logits[:, -1] - got[-1].logits[:, 0]).abs().max() > 3 * tol


def test_weights_that_overflow_fp16_or_an_unknown_width_are_refused() -> None:
    model = S3CMNForCausalLM(small_config()).eval()
    with pytest.raises(ValueError, match="weights must be one of fp32, bf16, fp16, int8"):
        model.compile_decode(weights="int4")
    with pytest.raises(ValueError, match="gemv='blas' multiplies fp32 matrices"):
        model.compile_decode(weights="bf16", gemv="blas")
    with torch.no_grad():
        model.model.layers[0].mlp.fc.weight[0, 0] = 1e5
    with pytest.raises(ValueError, match="overflows fp16.*use weights='bf16'"):
        model.compile_decode(weights="fp16")


def test_a_changed_weight_reaches_the_compiled_step(models) -> None:
    eager, compiled = models
    ids = torch.randint(0, 61, (1, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for model in (eager, compiled):
            model.model.layers[1].mlp.proj.weight.mul_(3.0)  # in place: the packed decode tensors are rebuilt
    try:
        torch.testing.assert_close(decode(compiled, ids, 4)[-1].logits, decode(eager, ids, 4)[-1].logits,
                                   rtol=1e-5, atol=1e-5)
    finally:
        with torch.no_grad():
            for model in (eager, compiled):
                model.model.layers[1].mlp.proj.weight.div_(3.0)


def test_what_the_compiled_step_does_not_cover_is_refused_with_the_reason() -> None:
    assert unsupported(S3CMNForCausalLM(small_config())) == ""
    s4d = S3CMNForCausalLM(small_config(ssm_type="s4d"))
    assert "s4d" in unsupported(s4d)
    with pytest.raises(ValueError, match="s4d"):
        s4d.compile_decode()
    assert "position_embedding" in unsupported(S3CMNForCausalLM(small_config(position_embedding="sinusoidal")))
    assert "float32" in unsupported(S3CMNForCausalLM(small_config()).to(torch.bfloat16))


def test_a_step_that_cannot_be_built_is_one_clear_error(monkeypatch) -> None:
    torch.manual_seed(0)
    model = S3CMNForCausalLM(small_config()).eval().compile_decode()

    def broken(*args):
        raise OSError("cc1plus: fatal error: no such file\nmore lines")  # what a missing C++ compiler looks like

    monkeypatch.setattr(model._compiled_decoder, "step", broken)
    with pytest.raises(RuntimeError, match=r"could not be built \(OSError: cc1plus: fatal error: no such file\); "
                       "decode without it"):
        decode(model, torch.randint(0, 61, (1, 4)), prefill=3)


def test_the_memory_read_takes_the_eager_step_once_the_store_can_be_searched(models, monkeypatch) -> None:
    eager, compiled = models
    calls = []
    real = compiled._compiled_decoder.__call__
    monkeypatch.setattr(type(compiled._compiled_decoder), "__call__", lambda self, *a: calls.append(1) or real(*a))
    ids = torch.randint(0, 61, (1, 8), generator=torch.Generator().manual_seed(5))
    assert not compiled.memory_bank.searchable  # empty: the read is 0
    torch.testing.assert_close(decode(compiled, ids, 4, use_memory=True)[-1].logits,
                               decode(eager, ids, 4, use_memory=True)[-1].logits, rtol=1e-5, atol=1e-5)
    assert len(calls) == 4  # compiled
    bank = compiled.memory_bank.copy()
    try:
        with torch.no_grad():
            for seed in range(8):  # fill the store until it can be searched
                compiled(torch.randint(0, 61, (4, 48), generator=torch.Generator().manual_seed(seed)),
                         write_memory=True)
        assert compiled.memory_bank.searchable
        calls.clear()
        decode(compiled, ids, 4, use_memory=True)
        assert not calls  # the memory is read: the eager step
    finally:
        compiled.memory_bank = bank


def test_a_copy_of_a_compiled_model_decodes_eagerly() -> None:
    import copy
    import pickle

    model = S3CMNForCausalLM(small_config()).eval().compile_decode()  # nothing compiles before the first step
    assert copy.deepcopy(model)._compiled_decoder is None
    assert pickle.loads(pickle.dumps(model))._compiled_decoder is None
    assert model._compiled_decoder is not None
