"""S3CMNConfig: the model's settings and their validation.

The model's settings live in :class:`S3CMNConfig`, a ``transformers`` ``PreTrainedConfig`` so that it
saves and loads with the model. The run's settings (training, data, evaluation, task) live in the typed
dataclasses of :mod:`s3cmn.run_config`, the named presets in :mod:`s3cmn.presets`, and the settings files
that hold all of them in :mod:`s3cmn.settings_file`. Every field is checked once, at construction: an unknown
key names the closest valid key, a wrong type or out-of-range value names the field, the value and what is
allowed.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

from transformers import PreTrainedConfig

from s3cmn.memory.settings import MEMORY_LAYER_KEYS, MemorySettings, MemorySettingsError, memory_field
from s3cmn.presets import preset_fields
from s3cmn.utils.fields import ARCHITECTURE as ARCH
from s3cmn.utils.fields import ATTENTION as ATTN
from s3cmn.utils.fields import GENERATION as GEN
from s3cmn.utils.fields import MEMORY as MEM
from s3cmn.utils.fields import OPTIONAL_BLOCKS as OPT
from s3cmn.utils.fields import REGULARISATION as REG
from s3cmn.utils.fields import SPIKING as SPIKE
from s3cmn.utils.fields import (
    ConfigError,
    check_value,
    field_types,
    setting,
    settings_fields,
    unknown_key_error,
    validate_fields,
)

__all__ = ["S3CMNConfig", "MIXER_KINDS"]

# The sub-layers a block may list in block_mixers: the names of s3cmn.modeling.block.MIXERS.
MIXER_KINDS = (
    "hyena", "mamba", "s4d", "lif", "population_lif", "integration", "memory", "attention", "reservoir", "mlp",
)
# What turns each sub-layer on in the default layout (for the message when block_mixers disagrees with it).
_MIXER_FLAGS = {
    "hyena": "use_hyena = True", "mamba": "ssm_type = 'mamba'", "s4d": "ssm_type = 's4d'",
    "lif": "use_spiking = True, use_population_coding = False", "population_lif": "use_population_coding = True",
    "integration": "use_liquid = True", "memory": "use_memory = True", "attention": "block_type = 'reservoir'",
    "reservoir": "block_type = 'reservoir'", "mlp": "always on",
}
_SPIKING_MIXERS = ("lif", "population_lif", "integration")  # each reports the block's spike_stats

# Keys that transformers itself passes to a config's constructor when loading; everything else must be a field.
_TRANSFORMERS_KWARGS = {
    "torch_dtype",
    "name_or_path",
    "_name_or_path",
    "_commit_hash",
    "output_attentions",
    "attn_implementation",
    "experts_implementation",
    "per_layer_config",
    "_attn_implementation_internal",
    "_experts_implementation_internal",
    "model_type",
    "transformers_version",
    "num_labels",
}


class S3CMNConfig(PreTrainedConfig):
    """Settings of the S³CMN network (architecture, spiking, attention, memory, regularisation, optional blocks).

    Build one from a preset (``S3CMNConfig.from_preset("tiny", hidden_dim=96)``) or from fields
    (``S3CMNConfig(hidden_dim=256, num_layers=4)``). ``input_dim`` (the embedding width) and
    ``output_dim`` (the vocabulary) are derived.
    """

    model_type: ClassVar[str] = "s3cmn"

    # --- architecture -------------------------------------------------------------------------------
    vocab_size: int = setting(50257, group=ARCH, help="vocabulary size (rows of the embedding)", ge=2)
    embedding_dim: int = setting(768, group=ARCH, help="token embedding width; projected to hidden_dim", ge=1)
    hidden_dim: int = setting(512, group=ARCH, help="block width D", ge=1)
    num_layers: int = setting(6, group=ARCH, help="number of S3CMN blocks", ge=1)
    max_position_embeddings: int = setting(512, group=ARCH, help="positions of the learned position table", ge=1)
    position_embedding: Literal["none", "learned", "sinusoidal"] = setting(
        "none", group=ARCH, help="positional encoding added to the embedding"
    )
    mlp_ratio: float = setting(4.0, group=ARCH, help="MLP hidden width as a multiple of hidden_dim", gt=0)
    block_type: Literal["s3cmn", "reservoir"] = setting(
        "s3cmn", group=ARCH, help="s3cmn block, or the LiquidLM attention -> reservoir -> MLP block"
    )
    use_hyena: bool = setting(True, group=ARCH, help="use the Hyena long-convolution operator")
    hyena_order: int = setting(2, group=ARCH, help="Hyena recurrence order (number of gates)", ge=2, le=8)
    hyena_filter_dim: int = setting(64, group=ARCH, help="width of Hyena's implicit filter MLP", ge=1)
    hyena_filter_length: int = setting(
        1024, group=ARCH, help="taps of Hyena's long filter (bounds the decoding history)", ge=1
    )
    hyena_short_conv: int = setting(3, group=ARCH, help="kernel size of Hyena's short depthwise conv", ge=1)
    ssm_type: Literal["s4d", "mamba", "none"] = setting("mamba", group=ARCH, help="state-space mixer")
    mamba_d_state: int = setting(16, group=ARCH, help="Mamba state size N", ge=1)
    mamba_d_conv: int = setting(4, group=ARCH, help="Mamba depthwise conv kernel", ge=1)
    mamba_expand: int = setting(2, group=ARCH, help="Mamba inner width as a multiple of hidden_dim", ge=1)
    mamba_dt_rank: int = setting(0, group=ARCH, help="rank of Mamba's delta projection (0 = ceil(D/16))", ge=0)
    s4d_d_state: int = setting(64, group=ARCH, help="S4D state size N", ge=2)
    use_spiking: bool = setting(True, group=ARCH, help="use the LIF spiking layer")
    spiking_units: int = setting(128, group=ARCH, help="LIF neurons per layer", ge=1)
    liquid_units: int = setting(256, group=ARCH, help="liquid (CfC/LTC) units per layer", ge=1)
    liquid_backbone: Literal["cfc", "ltc", "ncp"] = setting("cfc", group=ARCH, help="liquid cell")
    integration_mode: Literal["sequential", "parallel", "bidirectional"] = setting(
        "sequential", group=ARCH, help="how Mamba, liquid and spiking paths are combined"
    )
    tie_word_embeddings: bool = setting(True, group=ARCH, help="tie the LM head to the token embedding")
    block_mixers: list[str] | None = setting(
        None, group=ARCH,
        help="the sub-layers of every block in order, from " + ", ".join(MIXER_KINDS) + "; null = derived from "
             "the flags (hyena, ssm, lif, memory, mlp); a list must name exactly the sub-layers the flags turn on "
             "(repeats allowed)",
    )
    block_order: Literal["hyena_first", "ssm_first"] = setting(
        "hyena_first", group=ARCH,
        help="order of the derived layout (block_mixers = null): hyena_first = hyena, ssm, lif (the v1 block); "
             "ssm_first = ssm, hyena, lif (the tiny preset: better held-out loss in the ablation)",
    )
    layer_scale_init: float | None = setting(
        None, group=ARCH, gt=0,
        help="LayerScale (Touvron et al. 2021): each sub-layer's output times a learned per-channel scale "
             "initialised to this value (e.g. 0.01: every block starts near the identity); null = off",
    )

    # --- spiking ------------------------------------------------------------------------------------
    spike_threshold: float = setting(1.0, group=SPIKE, help="initial firing threshold theta", gt=0)
    beta: float = setting(0.95, group=SPIKE, help="membrane decay beta, in (0, 1]", gt=0, le=1)
    learn_beta: bool = setting(True, group=SPIKE, help="learn beta per neuron (kept in (0, 1))")
    num_spike_steps: int = setting(1, group=SPIKE, help="LIF micro-steps per token", ge=1, le=64)
    surrogate: Literal["atan", "fast_sigmoid", "triangular"] = setting(
        "atan", group=SPIKE, help="surrogate gradient of the spike function"
    )
    surrogate_alpha: float = setting(2.0, group=SPIKE, help="surrogate slope", gt=0)
    spike_reset: Literal["subtract", "zero"] = setting("subtract", group=SPIKE, help="membrane reset after a spike")
    adaptive_threshold: bool = setting(True, group=SPIKE, help="homeostatic threshold toward target_spike_rate")
    target_spike_rate: float = setting(0.1, group=SPIKE, help="homeostasis target firing rate", gt=0, lt=1)
    threshold_adaptation_rate: float = setting(0.01, group=SPIKE, help="homeostasis step size", ge=0)

    # --- attention ----------------------------------------------------------------------------------
    num_attention_heads: int = setting(8, group=ATTN, help="heads of the attention layers", ge=1)
    attention_dropout: float = setting(0.1, group=ATTN, help="dropout on attention weights", ge=0, lt=1)
    cross_attention_heads: int = setting(4, group=ATTN, help="heads of cross-modal attention", ge=1)

    # --- memory -------------------------------------------------------------------------------------
    use_memory: bool = setting(True, group=MEM, help="read an external FAISS memory in memory_layers")
    memory_layers: list[int] = setting(
        group=MEM, help="blocks that read memory (negative counts from the end)", default_factory=lambda: [-1]
    )
    # declared once, as one store's settings (s3cmn.memory.settings); a block may override them
    memory_size: int = memory_field("memory_size")
    num_clusters: int = memory_field("num_clusters")
    max_retrieval_distance: float = memory_field("max_retrieval_distance")
    memory_metric: Literal["ip", "l2"] = memory_field("memory_metric")
    memory_top_k: int = memory_field("memory_top_k")
    memory_nprobe: int = memory_field("memory_nprobe")
    memory_compression: bool = memory_field("memory_compression")
    memory_compression_dim: int = memory_field("memory_compression_dim")
    memory_compression_variance: float = memory_field("memory_compression_variance")
    memory_full_policy: Literal["prune", "grow"] = memory_field("memory_full_policy")
    memory_growth_factor: float = memory_field("memory_growth_factor")
    memory_max_size: int = memory_field("memory_max_size")
    memory_write_stride: int = memory_field("memory_write_stride")
    memory_refit_drift: float = memory_field("memory_refit_drift")
    memory_query_centering: bool = setting(
        False, group=MEM,
        help="the learned reader subtracts a running mean of its queries (tracked in training, fixed in evaluation) "
             "and re-anchors them at the keys' PCA mean before searching: without it the queries share one "
             "direction and the reads collapse onto a few entries (scripts/reader_probe.py); the presets set it",
    )
    memory_layer_settings: dict[str, dict] = setting(
        group=MEM, help="per-layer overrides of memory_* settings, e.g. {\"5\": {\"memory_size\": 4096}}",
        default_factory=dict,
    )

    # --- regularisation -----------------------------------------------------------------------------
    dropout: float = setting(0.1, group=REG, help="dropout in the blocks", ge=0, lt=1)
    embedding_dropout: float = setting(0.1, group=REG, help="dropout on the embedding", ge=0, lt=1)
    layer_norm_eps: float = setting(1e-5, group=REG, help="LayerNorm epsilon", gt=0)
    initializer_range: float = setting(0.02, group=REG, help="std of the normal weight init", gt=0)

    # --- optional blocks ----------------------------------------------------------------------------
    use_liquid: bool = setting(
        False, group=OPT,
        help="replace the block's state-space mixer and LIF layer by one Mamba-liquid(CfC/LTC/NCP)-spiking "
             "integration mixer (integration_mode); needs ssm_type = 'mamba'",
    )
    liquid_tau_base: float = setting(1.0, group=OPT, help="base liquid time constant", gt=0)
    ltc_ode_unfolds: int = setting(6, group=OPT, help="LTC solver unfolds per token", ge=1)
    ncp_sparsity: float = setting(0.5, group=OPT, help="NCP wiring sparsity", ge=0, lt=1)
    reservoir_size: int = setting(512, group=OPT, help="reservoir neurons", ge=1)
    reservoir_sparsity: float = setting(0.9, group=OPT, help="fraction of zero reservoir weights", ge=0, lt=1)
    reservoir_spectral_radius: float = setting(0.9, group=OPT, help="reservoir spectral radius", gt=0)
    reservoir_num_ripples: int = setting(4, group=OPT, help="sinusoidal time ripples", ge=0)
    use_population_coding: bool = setting(False, group=OPT, help="population-coded spike encoder")
    population_size: int = setting(5, group=OPT, help="neurons per encoded value", ge=3, le=7)
    population_threshold_spread: Literal["uniform", "gaussian", "log"] = setting(
        "uniform", group=OPT, help="how population thresholds are spread"
    )
    population_decoding: Literal["rate", "timing", "hybrid"] = setting(
        "rate", group=OPT, help="population decoding"
    )
    use_cross_modal_attention: bool = setting(False, group=OPT, help="cross-attention liquid <-> spiking")
    cross_modal_mode: Literal["single", "bidirectional", "multiscale"] = setting(
        "single", group=OPT, help="cross-modal attention variant"
    )
    spike_adapter: Literal["rate", "temporal", "potential"] = setting(
        "rate", group=OPT, help="spike -> continuous adapter"
    )
    spike_adapter_tau: float = setting(2.0, group=OPT, help="time constant of temporal spike coding", gt=0)
    gating_heads: int = setting(4, group=OPT, help="heads of the adaptive fusion gate", ge=1)
    gating_temperature: float = setting(1.0, group=OPT, help="temperature of the fusion gate", gt=0)

    # --- generation ---------------------------------------------------------------------------------
    use_cache: bool = setting(True, group=GEN, help="use the recurrent cache in generate()")
    pad_token_id: int | None = setting(None, group=GEN, help="padding token id")
    bos_token_id: int | None = setting(None, group=GEN, help="beginning-of-sequence token id")
    eos_token_id: int | None = setting(None, group=GEN, help="end-of-sequence token id")

    def __post_init__(self, **kwargs: Any) -> None:
        unknown = [k for k in kwargs if k not in _TRANSFORMERS_KWARGS]
        if unknown:
            raise unknown_key_error("S3CMNConfig", unknown[0], self.field_names())
        super().__post_init__(**kwargs)
        self.validate_settings()

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        """Names of every model setting."""
        return [f.name for f in settings_fields(cls)]

    @property
    def input_dim(self) -> int:
        """Width of the token embedding fed to the network (= embedding_dim)."""
        return self.embedding_dim

    @property
    def output_dim(self) -> int:
        """Width of the logits (= vocab_size)."""
        return self.vocab_size

    @property
    def mamba_dt_rank_resolved(self) -> int:
        """The delta-projection rank, with 0 meaning ceil(hidden_dim / 16)."""
        return self.mamba_dt_rank or -(-self.hidden_dim // 16)

    def check_sequence_length(self, length: int, setting: str = "sequence_length") -> None:
        """A learned position table must have an entry for every position of a ``length``-token block."""
        if self.position_embedding == "learned" and length > self.max_position_embeddings:
            raise ConfigError(
                f"{setting} = {length} is longer than max_position_embeddings = {self.max_position_embeddings} "
                f"(position_embedding = 'learned' has no entry past it): set --max-position-embeddings {length} "
                f"or more, a --{setting.replace('_', '-')} of at most {self.max_position_embeddings}, or "
                "--position-embedding sinusoidal"
            )

    def memory_layer_indices(self) -> list[int]:
        """The non-negative block indices that read memory (empty when use_memory is off)."""
        if not self.use_memory:
            return []
        return sorted({i % self.num_layers for i in self.memory_layers})

    def default_block_mixers(self) -> list[str]:
        """The sub-layers the flags turn on, in the default order (the meaning of ``block_mixers = None``)."""
        if self.block_type == "reservoir":
            return ["attention", "reservoir", "mlp"]
        hyena = ["hyena"] if self.use_hyena else []
        if self.use_liquid:  # one mixer in place of the state-space mixer and the LIF layer
            ssm, spiking = ["integration"], []
        else:
            ssm = [self.ssm_type] if self.ssm_type != "none" else []
            spiking = [("population_lif" if self.use_population_coding else "lif")] if self.use_spiking else []
        mixers = ssm + hyena + spiking if self.block_order == "ssm_first" else hyena + ssm + spiking
        return mixers + (["memory"] if self.use_memory else []) + ["mlp"]

    def resolved_block_mixers(self) -> list[str]:
        """The sub-layers of every block, in order (``block_mixers``, or the default of the flags)."""
        return list(self.block_mixers) if self.block_mixers is not None else self.default_block_mixers()

    def memory_settings(self, layer_idx: int) -> MemorySettings:
        """The settings of block ``layer_idx``'s memory: D = hidden_dim, the block's fields, its index as seed."""
        layer = layer_idx % self.num_layers
        return MemorySettings(dim=self.hidden_dim, **self.layer_memory_fields(layer), seed=layer, layer_idx=layer)

    def layer_memory_fields(self, layer_idx: int) -> dict[str, Any]:
        """The memory settings (``MEMORY_LAYER_KEYS``) of block ``layer_idx``: the global fields with the
        overrides of ``memory_layer_settings[str(layer)]`` (or of its negative alias) applied."""
        n = self.num_layers
        fields = {name: getattr(self, name) for name in MEMORY_LAYER_KEYS}
        for key, overrides in self.memory_layer_settings.items():
            if int(key) % n == layer_idx % n:
                fields.update(overrides)
        return fields

    def validate_settings(self) -> None:
        """Check every field and the combinations between them; raise ConfigError on the first problem.

        This is the model's only validator: the modules built from a validated config trust it.
        """
        validate_fields(self, type(self))
        for i in self.memory_layers:
            if not -self.num_layers <= i < self.num_layers:
                raise ConfigError(
                    f"S3CMNConfig.memory_layers contains {i}: a block index must be in "
                    f"[{-self.num_layers}, {self.num_layers - 1}] for num_layers = {self.num_layers}"
                )
        self._check_memory_layer_settings()
        if self.use_memory:
            self._check_memory_stores()
        if not (self.use_hyena or self.ssm_type != "none" or self.use_spiking or self.block_type == "reservoir"):
            raise ConfigError(
                "S3CMNConfig: the block mixes nothing: enable use_hyena, an ssm_type or use_spiking"
            )
        self._check_optional_blocks()
        self._check_block_mixers()
        self._check_heads()

    def _check_memory_layer_settings(self) -> None:
        """Keys of memory_layer_settings are block indices (each block once); values are MEMORY_LAYER_KEYS
        settings, each checked like its global field."""
        n, types = self.num_layers, field_types(type(self))
        metadata = {f.name: dict(f.metadata) for f in settings_fields(type(self))}
        blocks: dict[int, str] = {}
        for key, overrides in self.memory_layer_settings.items():
            owner = f"S3CMNConfig.memory_layer_settings[{key!r}]"
            if not str(key).lstrip("-").isdigit() or not -n <= int(key) < n:
                raise ConfigError(f"S3CMNConfig.memory_layer_settings key {key!r} must be a block index in "
                                  f"[{-n}, {n - 1}] for num_layers = {n}")
            if int(key) % n in blocks:
                raise ConfigError(f"S3CMNConfig.memory_layer_settings: block {int(key) % n} is set twice, as "
                                  f"{blocks[int(key) % n]!r} and {key!r}; merge them into one entry")
            blocks[int(key) % n] = key
            if not isinstance(overrides, dict):
                raise ConfigError(f"{owner} = {overrides!r} must be a mapping of memory settings")
            for name, value in overrides.items():
                if name in metadata and name not in MEMORY_LAYER_KEYS:
                    raise ConfigError(f"{owner}: '{name}' cannot be set per block; the per-block memory settings "
                                      f"are {', '.join(MEMORY_LAYER_KEYS)} (set '{name}' on the config itself)")
                if name not in MEMORY_LAYER_KEYS:
                    raise unknown_key_error(owner, name, MEMORY_LAYER_KEYS)
                overrides[name] = check_value(owner, name, value, types[name], metadata[name])

    def _check_memory_stores(self) -> None:
        """The rules between the memory settings of one store (MemorySettings'), for the global fields and for
        each memory block's (the global ones with its overrides)."""
        stores = {"S3CMNConfig": {name: getattr(self, name) for name in MEMORY_LAYER_KEYS}}
        for layer in self.memory_layer_indices():
            stores[f"S3CMNConfig (memory of block {layer})"] = self.layer_memory_fields(layer)
        for owner, fields in stores.items():
            try:
                MemorySettings(dim=self.hidden_dim, **fields)
            except MemorySettingsError as err:
                raise ConfigError(f"{owner}: {err.problem}") from None

    def _check_block_mixers(self) -> None:
        """An explicit block_mixers names known mixers, exactly the set the flags turn on, in any order."""
        if self.block_mixers is None:
            return
        for name in self.block_mixers:
            if name not in MIXER_KINDS:
                raise unknown_key_error("S3CMNConfig.block_mixers", name, MIXER_KINDS)
        default = self.default_block_mixers()
        missing = [k for k in default if k not in self.block_mixers]
        extra = [k for k in dict.fromkeys(self.block_mixers) if k not in default]
        if missing or extra:
            problems = [f"it lacks {k!r} (on by {_MIXER_FLAGS[k]})" for k in missing]
            problems += [f"{k!r} is off (it needs {_MIXER_FLAGS[k]})" for k in extra]
            raise ConfigError(f"S3CMNConfig.block_mixers = {self.block_mixers} must name the sub-layers the flags "
                              f"turn on, {default}, in any order: {'; '.join(problems)}; change the list or the flags")
        if self.block_mixers.count("memory") > 1:
            raise ConfigError(f"S3CMNConfig.block_mixers = {self.block_mixers}: 'memory' at most once (a block "
                              "reads its store once)")
        spiking = [k for k in self.block_mixers if k in _SPIKING_MIXERS]
        if len(spiking) > 1:
            raise ConfigError(f"S3CMNConfig.block_mixers = {self.block_mixers}: at most one spiking sub-layer "
                              f"({', '.join(_SPIKING_MIXERS)}), got {spiking}")

    def _check_heads(self) -> None:
        """Head counts must divide hidden_dim, for the sub-layers that split it into heads."""
        mixers = self.resolved_block_mixers()
        heads = {"num_attention_heads": "attention" in mixers,
                 "cross_attention_heads": "integration" in mixers and (
                     self.use_cross_modal_attention or self.integration_mode == "bidirectional"),
                 "gating_heads": "integration" in mixers and self.integration_mode != "sequential"}
        for name, used in heads.items():
            if used and self.hidden_dim % getattr(self, name):
                raise ConfigError(f"S3CMNConfig: hidden_dim = {self.hidden_dim} must be divisible by {name} = "
                                  f"{getattr(self, name)} (its sub-layer splits hidden_dim into heads)")

    def _check_optional_blocks(self) -> None:
        """Combinations of optional-block settings that cannot be built."""
        config = self

        def fail(message: str) -> None:
            raise ConfigError(f"S3CMNConfig: {message}")

        if config.block_type == "reservoir":
            flags = dict(use_liquid=config.use_liquid, use_population_coding=config.use_population_coding,
                         use_cross_modal_attention=config.use_cross_modal_attention, use_memory=config.use_memory)
            for name, on in flags.items():
                if on:
                    fail(f"block_type = 'reservoir' (attention → reservoir → MLP) does not support {name} = True; "
                         "set it to False or use block_type = 's3cmn'")
        if config.use_population_coding and not config.use_spiking:
            fail("use_population_coding = True replaces the LIF spike encoder: it needs use_spiking = True")
        if config.use_liquid and config.ssm_type != "mamba":
            fail(f"use_liquid = True integrates Mamba, liquid and spiking paths: it needs ssm_type = 'mamba', "
                 f"got ssm_type = {config.ssm_type!r}")
        if config.use_cross_modal_attention and not (config.use_liquid and config.use_spiking):
            fail("use_cross_modal_attention = True attends between the liquid and the spiking paths: it needs "
                 "use_liquid = True and use_spiking = True")
        if config.use_liquid and config.liquid_backbone == "ncp" and (config.liquid_units < 4 or
                                                                      config.ncp_sparsity < 0.1):
            fail(f"liquid_backbone = 'ncp' (AutoNCP wiring) needs liquid_units >= 4 and ncp_sparsity >= 0.1, got "
                 f"liquid_units = {config.liquid_units}, ncp_sparsity = {config.ncp_sparsity}")
        if config.ssm_type == "s4d" and config.s4d_d_state % 2:
            fail(f"s4d_d_state = {config.s4d_d_state} must be even (S4D keeps N/2 complex-conjugate pairs)")

    def settings_dict(self) -> dict[str, Any]:
        """The model settings only (no transformers bookkeeping), JSON-ready."""
        return {name: copy.deepcopy(getattr(self, name)) for name in self.field_names()}

    def replace(self, **changes: Any) -> S3CMNConfig:
        """A new validated config with ``changes`` applied."""
        return type(self)(**{**self.settings_dict(), **changes})

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> S3CMNConfig:
        """The preset ``name`` (see :data:`s3cmn.presets.PRESETS`) with ``overrides`` applied, validated."""
        return cls(**{**preset_fields(name), **overrides})
