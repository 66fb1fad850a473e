"""The block built from the mixer registry: today's checkpoints keep their keys and numbers, the default layout
follows the flags, an explicit ``block_mixers`` order is what the block runs, and the memory read uses the bank."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from s3cmn import S3CMNConfig, S3CMNForCausalLM
from s3cmn.modeling.block import S3CMNBlock

DATA = Path(__file__).parent / "data"
FIXTURES = json.loads((DATA / "state_dict_keys_v1.json").read_text())  # made by data/make_v1_fixtures.py
D, V = 16, 40
SMALL = dict(vocab_size=V, embedding_dim=D, hidden_dim=D, num_layers=2, num_attention_heads=4, spiking_units=8,
             mamba_d_state=4, s4d_d_state=4, hyena_filter_dim=8, hyena_filter_length=16, memory_size=64,
             memory_max_size=64, num_clusters=2, memory_compression_dim=8, dropout=0.0, embedding_dropout=0.0,
             memory_layers=[-1], max_retrieval_distance=2.0, spike_threshold=0.2,
             **(V1 := dict(block_order="hyena_first", layer_scale_init=None, memory_query_centering=False)))
# V1: what a v1 config.json, which has none of these fields, loads as; the tiny preset itself moved on (issue 16,
# issue 31: query centring adds a running-mean buffer to the reader)


def _config(**overrides) -> S3CMNConfig:
    return S3CMNConfig.from_preset("tiny", **{**SMALL, **overrides})


@pytest.mark.parametrize("name", FIXTURES["configs"])
def test_state_dict_keys_are_those_of_the_v1_format(name: str) -> None:
    """Every sub-layer on, in one config or another: the parameter names and shapes of 39e2ec5."""
    entry = FIXTURES["configs"][name]
    model = S3CMNForCausalLM(S3CMNConfig.from_preset("tiny", **{**FIXTURES["base"], **entry["config"], **V1}))
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == entry["keys"]


@pytest.mark.parametrize("name", ["mamba_population", "liquid_bidirectional", "s4d_lif"])
def test_a_v1_checkpoint_loads_and_gives_its_logits(name: str) -> None:
    saved = load_file(DATA / "checkpoint_v1.safetensors")
    fields = {**FIXTURES["base"], **FIXTURES["configs"][name]["config"], "use_memory": False, "dropout": 0.0,
              "embedding_dropout": 0.0, **V1}
    model = S3CMNForCausalLM(S3CMNConfig.from_preset("tiny", **fields)).eval()
    prefix = f"{name}/"
    model.load_state_dict({k[len(prefix):]: v for k, v in saved.items()
                           if k.startswith(prefix) and not k.endswith("__logits__")}, strict=True)
    with torch.no_grad():
        logits = model(torch.arange(12).reshape(2, 6) % 61).logits
    # saved on another CPU: its BLAS rounds differently (measured 1.7e-6 on an Intel Xeon against the AMD EPYC's
    # logits); a wrong or missing weight moves the logits by orders of magnitude more
    torch.testing.assert_close(logits, saved[f"{name}/__logits__"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "flags,layout",
    [
        (dict(), ["hyena", "mamba", "lif", "memory", "mlp"]),
        (dict(ssm_type="s4d", use_population_coding=True, use_memory=False), ["hyena", "s4d", "population_lif", "mlp"]),
        (dict(use_hyena=False, use_spiking=False), ["mamba", "memory", "mlp"]),
        (dict(use_liquid=True), ["hyena", "integration", "memory", "mlp"]),
        (dict(block_type="reservoir", use_memory=False), ["attention", "reservoir", "mlp"]),
        (dict(block_order="ssm_first"), ["mamba", "hyena", "lif", "memory", "mlp"]),
        (dict(block_order="ssm_first", use_liquid=True), ["integration", "hyena", "memory", "mlp"]),
        (dict(block_order="ssm_first", use_hyena=False), ["mamba", "lif", "memory", "mlp"]),
    ],
    ids=str,
)
def test_default_layout_follows_the_flags(flags: dict, layout: list[str]) -> None:
    config = _config(**flags)
    assert config.block_mixers is None and config.resolved_block_mixers() == layout
    reads = [sub.kind for sub in S3CMNBlock(config, 1).sublayers]  # block 1 reads memory (memory_layers = [-1])
    assert reads == layout
    assert [sub.kind for sub in S3CMNBlock(config, 0).sublayers] == [k for k in layout if k != "memory"]


def test_an_explicit_order_is_the_order_the_block_runs() -> None:
    default = _config(use_memory=False)
    swapped = _config(use_memory=False, block_mixers=["mamba", "hyena", "lif", "mlp"])
    torch.manual_seed(0)
    block = S3CMNBlock(default, 0).eval()
    other = S3CMNBlock(swapped, 0).eval()
    other.load_state_dict(block.state_dict())  # same sub-layers, same keys: only the order differs
    assert [slot for slot, _, _ in other.pairs()] == ["ssm", "hyena", "spiking", "mlp"]
    x = torch.randn(2, 6, D)
    with torch.no_grad():
        y = other(x).hidden
        # by hand: the residual loop in the swapped order
        h = x
        for name in ("ssm", "hyena", "spiking", "mlp"):
            h = h + getattr(block, name)(getattr(block, f"{'spike' if name == 'spiking' else name}_norm")(h)).y
    torch.testing.assert_close(y, h, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(y, block(x).hidden)


def test_a_repeated_mixer_gets_its_own_slot_and_state(check_decoding) -> None:
    config = _config(use_memory=False, use_spiking=False, use_hyena=False, block_mixers=["mamba", "mamba", "mlp"])
    torch.manual_seed(0)
    model = S3CMNForCausalLM(config).eval()
    block = model.model.layers[0]
    assert [slot for slot, _, _ in block.pairs()] == ["ssm", "ssm_1", "mlp"]
    assert block.ssm is not block.ssm_1 and "model.layers.0.ssm_norm_1.weight" in model.state_dict()
    ids = torch.randint(0, V, (2, 9))
    check_decoding(model, ids, split=5, prefill=4)
    with torch.no_grad():
        assert set(model(ids, use_cache=True).cache.layers[0]) == {"ssm", "ssm_1"}


def test_memory_block_reads_the_bank_and_stages_its_write() -> None:
    """The block hands the bank to its memory read: it stages the normed state it read with, in step mode too."""
    from s3cmn.memory.bank import MemoryBank

    config = _config(memory_write_stride=2)
    torch.manual_seed(0)
    block = S3CMNBlock(config, 1).eval()
    bank = MemoryBank.from_config(config)
    assert block.reads_memory and not S3CMNBlock(config, 0).reads_memory and bank.layers == [1]
    x = torch.randn(2, 6, D)
    with torch.no_grad(), bank.forward_pass(read=True, write=True):
        out = block(x, None, bank)
        assert bank.pending == [1]
        written = bank.commit(torch.randint(0, V, (2, 6)))
    assert written == bank[1].num_entries == 2 * 3  # positions 1, 3, 5 of both rows
    assert out.memory_stats is not None and not out.memory_stats.searched  # the store was empty when read
    with torch.no_grad(), bank.forward_pass(read=True, write=True):
        one = block.step(x[:, 0], None, bank)
        assert bank.pending == [1] and one.hidden.shape == (2, D) and one.memory_stats.searched


def test_layer_scale_scales_every_sub_layer_and_keeps_the_contract(check_decoding, check_training_and_save,
                                                                    tmp_path) -> None:
    config = _config(use_memory=False, layer_scale_init=1e-3)
    torch.manual_seed(0)
    model = S3CMNForCausalLM(config).eval()
    block = model.model.layers[0]
    assert set(block.layer_scale) == {slot for slot, _, _ in block.pairs()}
    assert all(torch.all(p == 1e-3) for p in block.layer_scale.values())
    x = torch.randn(2, 6, config.hidden_dim)
    with torch.no_grad():  # every output scaled by 1e-3: the block starts close to the identity
        assert (block(x).hidden - x).abs().max() < 0.05 * x.abs().max()
    ids = torch.randint(0, V, (2, 9))
    check_decoding(model, ids, split=5, prefill=4)
    check_training_and_save(model, ids, tmp_path)  # the scales get gradients and round-trip
    assert "layer_scale" not in str(list(S3CMNForCausalLM(_config(use_memory=False)).state_dict()))  # off: v1 keys


def test_a_v1_config_without_the_new_fields_loads_as_the_v1_block() -> None:
    """A config.json saved before block_order and layer_scale_init existed builds the v1 block, whatever the
    tiny preset now sets (the preset applies to new runs only)."""
    saved = S3CMNConfig.from_preset("tiny", **SMALL).to_dict()
    for key in ("block_order", "layer_scale_init"):
        saved.pop(key)
    config = S3CMNConfig.from_dict(saved)
    assert config.block_order == "hyena_first" and config.layer_scale_init is None
    assert config.resolved_block_mixers() == ["hyena", "mamba", "lif", "memory", "mlp"]
    preset = S3CMNConfig.from_preset("tiny")
    assert preset.block_order == "ssm_first" and preset.layer_scale_init == 0.01
