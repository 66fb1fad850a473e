"""S3CMNConfig and the run dataclasses: presets, validation, round trips."""

from __future__ import annotations

import itertools

import pytest
import torch

from s3cmn.memory.settings import MEMORY_LAYER_KEYS
from s3cmn.model_config import S3CMNConfig
from s3cmn.presets import PRESETS
from s3cmn.run_config import DataConfig, EvalConfig, TrainingConfig
from s3cmn.utils.fields import ConfigError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid(name: str) -> None:
    config = S3CMNConfig.from_preset(name)
    assert config.hidden_dim % config.num_attention_heads == 0
    TrainingConfig(**PRESETS[name].get("training", {}))


def test_documented_presets_hold_the_documented_values() -> None:
    demo = S3CMNConfig.from_preset("demo")
    assert (demo.liquid_units, demo.spiking_units, demo.num_layers, demo.hidden_dim, demo.embedding_dim) == (
        96, 48, 3, 192, 256)
    assert (demo.num_attention_heads, demo.spike_threshold, demo.beta, demo.vocab_size) == (3, 1.2, 0.8, 30522)
    assert demo.max_position_embeddings == 256
    small_test = S3CMNConfig.from_preset("small-test")
    assert (small_test.liquid_units, small_test.spiking_units, small_test.num_layers, small_test.hidden_dim) == (
        128, 64, 4, 256)
    assert PRESETS["small-test"]["training"] == dict(learning_rate=3e-4, batch_size=4, sequence_length=32)


def test_defaults_match_the_spec() -> None:
    c = S3CMNConfig()
    assert (c.liquid_units, c.spiking_units, c.num_layers, c.hidden_dim, c.embedding_dim) == (256, 128, 6, 512, 768)
    assert (c.vocab_size, c.max_position_embeddings, c.mamba_d_state, c.mamba_d_conv, c.mamba_expand) == (
        50257, 512, 16, 4, 2)
    assert (c.spike_threshold, c.beta, c.num_attention_heads, c.attention_dropout) == (1.0, 0.95, 8, 0.1)
    assert (c.memory_size, c.num_clusters, c.max_retrieval_distance) == (1024, 128, 0.5)  # issue 15: 1.0 never filtered
    assert (c.dropout, c.embedding_dropout, c.layer_norm_eps, c.initializer_range) == (0.1, 0.1, 1e-5, 0.02)
    t = TrainingConfig()
    assert (t.learning_rate, t.batch_size, t.num_epochs, t.sequence_length, t.seed) == (1e-4, 32, 15, 512, 42)
    assert (t.weight_decay, t.gradient_clip) == (0.01, 1.0)
    assert c.input_dim == 768 and c.output_dim == 50257


def test_save_load_round_trip(tmp_path) -> None:
    config = S3CMNConfig.from_preset("demo", memory_layers=[0, -1], memory_layer_settings={"0": {"memory_size": 256}},
                                     block_mixers=["mamba", "hyena", "lif", "memory", "mlp"])
    config.save_pretrained(tmp_path)
    loaded = S3CMNConfig.from_pretrained(tmp_path)
    assert loaded.settings_dict() == config.settings_dict()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(hiden_dim=64), "did you mean 'hidden_dim'"),
        (dict(beta=1.5), "beta = 1.5 is out of range: must be <= 1"),
        (dict(beta=0.0), "beta = 0.0 is out of range: must be > 0"),
        (dict(dropout=-0.1), "dropout = -0.1 is out of range"),
        (dict(hidden_dim=100, num_attention_heads=8, block_type="reservoir", use_memory=False),
         "divisible by num_attention_heads"),
        (dict(ssm_type="s5"), "one of 's4d', 'mamba', 'none'"),
        (dict(hidden_dim="512"), "expected int"),
        (dict(use_memory="yes"), "expected bool"),
        (dict(memory_layers=[7]), "memory_layers contains 7"),
        (dict(memory_layer_settings={"0": {"memory_sise": 3}}), "did you mean 'memory_size'"),
        (dict(population_size=9), "population_size = 9 is out of range"),
        (dict(memory_size=4096, memory_max_size=1024), "memory_max_size"),
        (dict(use_hyena=False, ssm_type="none", use_spiking=False), "mixes nothing"),
        # the memory of one block: its keys, their values and the rules between them, like the global ones
        (dict(memory_layer_settings={"1": {"memory_layers": [0]}}), "'memory_layers' cannot be set per block"),
        (dict(memory_layer_settings={"0": {"memory_size": 0}}), r"memory_layer_settings\['0'\].memory_size = 0"),
        (dict(memory_layer_settings={"0": {"memory_metric": "cos"}}), "expected one of 'ip', 'l2'"),
        (dict(memory_layers=[0], memory_layer_settings={"0": {"memory_size": 9000}}), "memory of block 0"),
        (dict(num_layers=2, memory_layer_settings={"1": {}, "-1": {}}), "block 1 is set twice"),
        (dict(num_layers=2, memory_layer_settings={"2": {}}), "must be a block index in"),
        (dict(hidden_dim=512, memory_size=100, memory_max_size=100),
         "memory_size = 100 must be >= pca_min_samples = 512"),
        # the sub-layers: an explicit order must name what the flags turn on
        (dict(block_mixers=["hyena", "mamba", "lif", "memory", "mpl"]), "did you mean 'mlp'"),
        (dict(block_mixers=["mamba", "lif", "memory", "mlp"]), "lacks 'hyena'"),
        (dict(block_mixers=["hyena", "s4d", "lif", "memory", "mlp"]), "'s4d' is off"),
        (dict(block_mixers=["hyena", "mamba", "lif", "memory", "memory", "mlp"]), "'memory' at most once"),
        (dict(ssm_type="s4d", s4d_d_state=7), "s4d_d_state = 7 must be even"),
        (dict(use_liquid=True, liquid_backbone="ncp", liquid_units=3), "liquid_backbone = 'ncp'"),
        (dict(use_liquid=True, integration_mode="parallel", gating_heads=3), "gating_heads = 3"),
    ],
)
def test_bad_values_are_named(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        S3CMNConfig(**fields)


def test_memory_keys_per_block_are_one_list() -> None:
    assert set(MEMORY_LAYER_KEYS) <= set(S3CMNConfig.field_names())
    config = S3CMNConfig(num_layers=3, memory_layers=[0, 2], memory_layer_settings={"-1": {"memory_top_k": 2}})
    assert config.memory_settings(2).memory_top_k == config.layer_memory_fields(2)["memory_top_k"] == 2
    assert config.memory_settings(0).memory_top_k == 8


# --------------------------------------------------------------------------------------------------
# every config the validator accepts builds a model that runs

SMALL = dict(vocab_size=23, embedding_dim=16, hidden_dim=12, num_layers=2, num_attention_heads=5, spiking_units=4,
             mamba_d_state=2, s4d_d_state=2, hyena_filter_dim=4, hyena_filter_length=4, liquid_units=4,
             population_size=3, reservoir_size=6, memory_size=16, memory_max_size=16, num_clusters=1,
             memory_compression_dim=4, cross_attention_heads=3, gating_heads=2, dropout=0.0, memory_layers=[-1])
GRID = dict(use_hyena=[True, False], ssm_type=["mamba", "s4d", "none"], use_spiking=[True, False],
            use_population_coding=[False, True], use_liquid=[False, True], use_memory=[True, False])
EDGES = [  # what the removed duplicate checks of the modules covered, at the edge the config allows
    dict(use_liquid=True, liquid_backbone="ncp", liquid_units=4, ncp_sparsity=0.1),
    dict(use_liquid=True, integration_mode="bidirectional", use_cross_modal_attention=True,
         cross_modal_mode="multiscale", spike_adapter="potential"),
    dict(use_liquid=True, integration_mode="parallel", use_cross_modal_attention=True, cross_modal_mode="bidirectional",
         liquid_backbone="ltc", spike_adapter="temporal"),
    dict(block_type="reservoir", use_memory=False, num_attention_heads=3),
    dict(use_population_coding=True, population_decoding="timing", population_threshold_spread="gaussian"),
    dict(memory_layers=[0, 1], memory_layer_settings={"0": {"memory_size": 12, "memory_max_size": 12,
                                                            "memory_compression": False}}),
]


def accepted_configs() -> list[S3CMNConfig]:
    configs = []
    for values in itertools.product(*GRID.values()):
        try:
            configs.append(S3CMNConfig(**{**SMALL, **dict(zip(GRID, values, strict=True))}))
        except ConfigError:
            continue
    configs += [S3CMNConfig(**{**SMALL, **edge}) for edge in EDGES]
    # and each layout in another order (the MLP first, the rest reversed)
    configs += [c.replace(block_mixers=["mlp", *reversed(c.default_block_mixers()[:-1])]) for c in list(configs)]
    return configs


def test_every_accepted_config_builds_a_model_that_runs() -> None:
    from s3cmn import S3CMNForCausalLM

    configs = accepted_configs()
    assert len(configs) > 60  # the grid is not mostly rejected
    ids = torch.randint(0, 23, (1, 3))
    for config in configs:
        model = S3CMNForCausalLM(config).eval()
        with torch.no_grad():
            logits = model(ids).logits
        assert logits.shape == (1, 3, 23) and logits.isfinite().all(), config.resolved_block_mixers()


def test_run_configs_validate() -> None:
    with pytest.raises(ConfigError, match="batch_size = 0"):
        TrainingConfig(batch_size=0)
    with pytest.raises(ConfigError, match="scheduler"):
        TrainingConfig(scheduler="exp")
    with pytest.raises(ConfigError, match="did you mean 'tokenizer'"):
        DataConfig.from_dict({"tokeniser": "gpt2"})
    with pytest.raises(ConfigError, match="split"):
        EvalConfig(split="train")


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        S3CMNConfig.from_preset("tinny")
