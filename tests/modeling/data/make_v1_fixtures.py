"""How the checkpoint-format fixtures of test_block.py were made (run once, at commit 39e2ec5, before the
block was rebuilt from the mixer registry; kept as the record of what they contain, not run by the tests).

state_dict_keys_v1.json: for each config below, the model's state-dict keys and shapes.
checkpoint_v1.safetensors: for three of them (no memory, no dropout), "<config>/<key>" -> the seed-0 weights and
"<config>/__logits__" -> the logits of ids arange(12).reshape(2, 6) % 61 in eval mode.

    PYTHONPATH=<a checkout of 39e2ec5> python tests/modeling/data/make_v1_fixtures.py tests/modeling/data
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from s3cmn import S3CMNConfig, S3CMNForCausalLM

BASE = dict(vocab_size=61, embedding_dim=24, hidden_dim=16, num_layers=2, num_attention_heads=4, spiking_units=8,
            mamba_d_state=4, s4d_d_state=4, hyena_filter_dim=8, hyena_filter_length=16, liquid_units=8,
            memory_layers=[0, -1], memory_size=64, memory_max_size=64, num_clusters=2, memory_compression_dim=8,
            cross_attention_heads=2, gating_heads=2, reservoir_size=16, max_position_embeddings=32)
CONFIGS = {
    "mamba_population": dict(use_population_coding=True, population_size=3, adaptive_threshold=False,
                             position_embedding="learned"),
    "s4d_lif": dict(ssm_type="s4d", learn_beta=False, memory_layers=[1], tie_word_embeddings=False),
    "liquid_bidirectional": dict(use_liquid=True, integration_mode="bidirectional", use_cross_modal_attention=True,
                                 cross_modal_mode="bidirectional", spike_adapter="potential",
                                 use_population_coding=True, population_size=3),
    "liquid_ltc_parallel": dict(use_liquid=True, liquid_backbone="ltc", integration_mode="parallel",
                                spike_adapter="temporal", use_hyena=False),
    "liquid_ncp_sequential": dict(use_liquid=True, liquid_backbone="ncp", use_spiking=False, use_memory=False),
    "reservoir": dict(block_type="reservoir", use_memory=False, position_embedding="learned"),
}
WITH_LOGITS = ("mamba_population", "liquid_bidirectional", "s4d_lif")
NO_NOISE = dict(use_memory=False, dropout=0.0, embedding_dropout=0.0)
IDS = torch.arange(12).reshape(2, 6) % 61


def build(name: str, **extra) -> S3CMNForCausalLM:
    torch.manual_seed(0)
    return S3CMNForCausalLM(S3CMNConfig.from_preset("tiny", **{**BASE, **CONFIGS[name], **extra}))


def main(folder: Path) -> None:
    keys = {name: {"config": CONFIGS[name], "keys": {k: list(v.shape) for k, v in build(name).state_dict().items()}}
            for name in CONFIGS}
    (folder / "state_dict_keys_v1.json").write_text(json.dumps({"base": BASE, "configs": keys}, indent=1))
    tensors = {}
    for name in WITH_LOGITS:
        model = build(name, **NO_NOISE).eval()
        tensors.update({f"{name}/{k}": v.clone().contiguous() for k, v in model.state_dict().items()})
        with torch.no_grad():
            tensors[f"{name}/__logits__"] = model(IDS).logits.contiguous()
    save_file(tensors, str(folder / "checkpoint_v1.safetensors"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
