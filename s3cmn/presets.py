"""Named presets: the model and training fields a preset sets, on top of the defaults.

``S3CMNConfig.from_preset("tiny", hidden_dim=96)`` builds a validated model config from one; the CLIs'
``--preset`` applies both halves (:mod:`s3cmn.cli.arguments`).
"""

from __future__ import annotations

from typing import Any

from s3cmn.utils.fields import unknown_key_error

__all__ = ["PRESETS", "preset_fields", "preset_training"]


# Each preset sets model fields and, optionally, training fields. "small-test" and "demo" are the two
# configurations the original project documented as working.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "model": dict(
            vocab_size=30522, embedding_dim=128, hidden_dim=128, num_layers=2, num_attention_heads=4,
            liquid_units=64, spiking_units=64, s4d_d_state=32, hyena_filter_dim=32, hyena_filter_length=256,
            memory_size=1024, num_clusters=16, memory_compression_dim=32, max_position_embeddings=512,
            # issue 16: chosen on held-out text by scripts/ablation.py and benchmarks/compare.py (README)
            block_order="ssm_first", layer_scale_init=0.01, memory_query_centering=True,
        ),
        "training": dict(learning_rate=3e-3, batch_size=8, sequence_length=128, warmup_steps=50, num_epochs=1),
    },
    "small": {
        "model": dict(
            vocab_size=30522, embedding_dim=256, hidden_dim=256, num_layers=4, num_attention_heads=4,
            liquid_units=128, spiking_units=128, hyena_filter_length=512, num_clusters=32,
            memory_compression_dim=64,
            # the tiny recipe carried over: held-out ppl 865.9 vs 1543.2 for the old recipe (lr 6e-4, batch 16,
            # warmup 100) after 10 minutes on the same text (results/memory/small10r/train.txt, one seed)
            block_order="ssm_first", layer_scale_init=0.01, memory_query_centering=True,
        ),
        "training": dict(learning_rate=2e-3, batch_size=8, sequence_length=256, warmup_steps=20),
    },
    "base": {
        "model": dict(vocab_size=30522, embedding_dim=512, hidden_dim=512, num_layers=6),
        "training": dict(learning_rate=3e-4, batch_size=32, sequence_length=512),
    },
    "small-test": {
        "model": dict(liquid_units=128, spiking_units=64, num_layers=4, hidden_dim=256, spike_threshold=1.0,
                      beta=0.95),
        "training": dict(learning_rate=3e-4, batch_size=4, sequence_length=32),
    },
    "demo": {
        "model": dict(
            liquid_units=96, spiking_units=48, num_layers=3, hidden_dim=192, embedding_dim=256,
            num_attention_heads=3, spike_threshold=1.2, beta=0.8, vocab_size=30522, max_position_embeddings=256,
        ),
        "training": dict(learning_rate=5e-4, batch_size=8, sequence_length=64),
    },
    "liquidlm": {
        "model": dict(
            vocab_size=30522, embedding_dim=128, hidden_dim=128, num_layers=2, num_attention_heads=4,
            block_type="reservoir", reservoir_size=256, use_memory=False, position_embedding="learned",
        ),
        "training": dict(learning_rate=1e-3, batch_size=8, sequence_length=128),
    },
}


def preset_fields(name: str) -> dict[str, Any]:
    """The model fields a preset sets (on top of the defaults)."""
    if name not in PRESETS:
        raise unknown_key_error("preset", name, PRESETS)
    return dict(PRESETS[name]["model"])


def preset_training(name: str) -> dict[str, Any]:
    """The training fields a preset sets (on top of TrainingConfig's defaults)."""
    if name not in PRESETS:
        raise unknown_key_error("preset", name, PRESETS)
    return dict(PRESETS[name].get("training", {}))
