"""How tests/modeling/data/lm-memory-v1/ was made (run once, at commit 39e2ec5, before the memory moved into
the MemoryBank; kept as the record of what it contains, not run by the tests).

A tiny memory model (memory in blocks 0 and 1, no dropout), seed 0, that wrote three segments
(``write_memory=True``) and was saved with ``save_pretrained`` (config.json, model.safetensors,
memory/0/, memory/1/). ``expected.safetensors``: the probe ids and the logits of reading that memory in eval
mode, plus the entries of each store.

    PYTHONPATH=<a checkout of 39e2ec5> python tests/modeling/data/make_v1_memory_checkpoint.py tests/modeling/data
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from s3cmn import S3CMNConfig, S3CMNForCausalLM

FIELDS = dict(vocab_size=61, embedding_dim=16, hidden_dim=16, num_layers=2, num_attention_heads=4, spiking_units=8,
              mamba_d_state=4, hyena_filter_dim=8, hyena_filter_length=16, memory_layers=[0, -1], memory_size=128,
              num_clusters=1, memory_compression_dim=4, memory_write_stride=2, memory_top_k=4,
              max_retrieval_distance=2.0, dropout=0.0, embedding_dropout=0.0, spike_threshold=0.05)


def main(folder: Path) -> None:
    torch.manual_seed(0)
    model = S3CMNForCausalLM(S3CMNConfig.from_preset("tiny", **FIELDS)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randint(0, 61, (2, 32), generator=g), write_memory=True)
        probe = torch.randint(0, 61, (2, 12), generator=g)
        out = model(probe)
    model.save_pretrained(folder / "lm-memory-v1")
    tensors = {"probe": probe, "logits": out.logits.contiguous(), "hit_rate": out.memory_hit_rate.reshape(1)}
    for layer, memory in model.memories.items():
        tensors[f"values/{layer}"] = torch.from_numpy(memory.entries()["values"]).contiguous()
    save_file(tensors, str(folder / "lm-memory-v1" / "expected.safetensors"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
