"""Build an S3CMN model from a preset, train it one step, save / load it, and generate with the recurrent cache.

    python examples/quickstart_api.py --preset tiny
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from s3cmn import S3CMNConfig, S3CMNForCausalLM


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--width", type=int, default=0, help="override hidden_dim and embedding_dim (0: the preset's)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    overrides = dict(hidden_dim=args.width, embedding_dim=args.width, memory_compression_dim=min(32, args.width)
                     ) if args.width else {}
    config = S3CMNConfig.from_preset(args.preset, **overrides)
    model = S3CMNForCausalLM(config)
    print(f"{args.preset}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"memory in blocks {config.memory_layer_indices()}")

    # One training step; write_memory=True stores the segment's states after the forward.
    ids = torch.randint(0, config.vocab_size, (2, 64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    out = model(ids, labels=ids, write_memory=True)
    out.loss.backward()
    optimizer.step()
    # (with labels the loss may be computed without materialising the (B, T, V) logits: out.logits can be None)
    print(f"loss {out.loss.item():.3f}, spike rate {out.spike_rate.item():.3f}, "
          f"memory entries {sum(s.entries for s in model.memory_bank.stats().values())}")

    # save_pretrained writes safetensors weights, the config and each memory store; from_pretrained reads them.
    model.eval()
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        loaded = S3CMNForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        logits = model(ids).logits  # (B, T, V)
        same = torch.equal(logits, loaded(ids).logits)
    print(f"logits {tuple(logits.shape)}; save -> load gives identical logits: {same}")
    if not same:
        raise SystemExit("save -> load changed the logits")

    # generate(): one prefill, then one recurrent step per token (constant cost per token).
    new = loaded.generate(ids[:1, :8], max_new_tokens=16, do_sample=False)
    print(f"generated {new.shape[1] - 8} tokens: {new[0, 8:].tolist()}")


if __name__ == "__main__":
    main()
