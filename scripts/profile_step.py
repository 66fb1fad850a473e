"""Where a training step's time goes: forward and backward time of every mixer kind, summed over layers.

    THREADS=1 REPS=2 python scripts/profile_step.py tiny 8 512

Its output for the tiny and small presets is ``results/kernels/profile_step.md``.

One fp32 step = forward + backward + AdamW. Each mixer's forward is wrapped; identity autograd nodes on its
input and output record when its backward starts and ends. "rest" is everything else (embedding, norms,
LM head and loss, the residual adds).
"""

import collections
import dataclasses
import os
import statistics
import sys
import time

import torch

from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.lm import S3CMNForCausalLM

KINDS = {"hyena": "hyena", "ssm": "mamba", "spiking": "lif", "mlp": "mlp"}
acc: dict[str, float] = collections.defaultdict(float)
starts: dict[str, float] = {}


class Mark(torch.autograd.Function):
    """Identity whose backward records the time: at a mixer's output (start) or input (end)."""

    @staticmethod
    def forward(ctx, x, key):
        ctx.key = key
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        kind, edge = ctx.key
        if edge == "out":
            starts[kind] = time.perf_counter()
        else:
            acc[kind + ".bwd"] += time.perf_counter() - starts[kind]
        return g, None


def wrap(mixer: torch.nn.Module, kind: str) -> None:
    forward = mixer.forward

    def timed_forward(x, *args, **kwargs):
        start = time.perf_counter()
        out = forward(Mark.apply(x, (kind, "in")), *args, **kwargs)
        y = Mark.apply(out.y, (kind, "out"))
        acc[kind + ".fwd"] += time.perf_counter() - start
        return dataclasses.replace(out, y=y)

    mixer.forward = timed_forward


def main() -> None:
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    preset, batch, T = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cfg = S3CMNConfig.from_preset(preset, use_memory=False, max_position_embeddings=max(T, 512))
    model = S3CMNForCausalLM(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, cfg.vocab_size, (batch, T), generator=torch.Generator().manual_seed(0))
    for layer in model.model.layers:
        for attr, kind in KINDS.items():
            wrap(getattr(layer, attr), kind)

    def step() -> None:
        model(ids, labels=ids).loss.backward()
        start = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        acc["optimizer"] += time.perf_counter() - start

    step()
    acc.clear()
    reps = int(os.environ.get("REPS", "3"))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    total = sum(times)
    print(f"{preset} B={batch} T={T} step median {statistics.median(times) * 1e3:.0f} ms  "
          f"load {os.getloadavg()[0]:.1f}")
    for key, value in sorted(acc.items(), key=lambda kv: -kv[1]):
        print(f"  {key:14s} {value / reps * 1e3:8.1f} ms  {100 * value / total:5.1f}%")
    rest = total - sum(acc.values())
    print(f"  {'rest(emb,norm,head,loss)':14s} {rest / reps * 1e3:8.1f} ms  {100 * rest / total:5.1f}%")


if __name__ == "__main__":
    main()
