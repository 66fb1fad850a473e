"""What a memory mode costs in generation: ms per generated token of ``generate(memory=mode)`` against ``off``.

    python benchmarks/generate_modes.py /work/runs/tiny-dyn/best --modes off,dynamic \\
        --text ../shared/data/wikitext-2-raw/wiki.test.raw --out results/memory/generate_dynamic

Every mode runs through the same loop (:func:`s3cmn.nexttoken.generate.generate_with_readout`; ``off``
is that loop with no read-out), greedy, batch 1, from a prompt of ``--prompt-tokens`` tokens of real text,
with the settings saved beside the checkpoint loaded once before timing. One round times, for each mode, a
generation of ``--new-tokens`` tokens and one of a single token; the modes' order rotates round by round, so
load drift reaches all of them. Reported per mode, median (min-max) over the rounds:

- ``ms_per_token``: the whole call / new tokens (prompt reading, prefill and every step included);
- ``marginal_ms_per_token``: (the long call - the 1-token call) / (new tokens - 1): a token's cost once the
  prompt is read (for ``dynamic``: the recurrent step plus its share of the updates on generated text);
- ``prompt_ms``: the 1-token call (for ``dynamic``: reading the prompt, then the prefill).

Writes ``generate_modes.json`` and ``generate_modes.md`` into ``--out``, with the commit, the CPU (capability)
and the load average at the start and the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

# Before torch loads OpenMP: idle threads sleep instead of spinning (see compare.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from s3cmn.evaluation.benchmarking import close_meta, fmt_load, run_meta, write_results  # noqa: E402

logger = logging.getLogger("generate_modes")
FORMAT = "s3cmn-generation-cost"


def load(checkpoint: str, modes: list[str]) -> tuple[Any, dict[str, Any]]:
    """The fp32 model and, per mode, the keyword arguments of ``generate_with_readout`` (settings loaded once)."""
    from s3cmn.modeling.loading import load_model
    from s3cmn.nexttoken.dynamic import DYNAMIC_MODES, base_mode, load_dynamic
    from s3cmn.nexttoken.generate import load_readouts

    model = load_model(checkpoint)
    needs_readouts = any((base_mode(m) if m in DYNAMIC_MODES else m) != "off" for m in modes)
    settings, datastore = load_readouts(checkpoint) if needs_readouts else (None, None)
    dynamic = load_dynamic(checkpoint) if any(m in DYNAMIC_MODES for m in modes) else None
    return model, {"settings": settings, "datastore": datastore, "dynamic": dynamic}


def prompt_ids(checkpoint: str, text_file: Path, tokens: int) -> torch.Tensor:
    """The first ``tokens`` tokens of the text (the checkpoint's tokenizer), (1, tokens)."""
    from s3cmn.data.tokenizer import checkpoint_tokenizer

    tokenizer = checkpoint_tokenizer(checkpoint, required=True)
    text = text_file.read_text(encoding="utf-8")[: 20 * tokens]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:tokens]
    if len(ids) < tokens:
        raise SystemExit(f"{text_file} holds only {len(ids)} tokens, --prompt-tokens is {tokens}")
    return torch.tensor([ids])


def measure(model: Any, prompt: torch.Tensor, modes: list[str], options: dict[str, Any], new_tokens: int,
            rounds: int) -> tuple[dict[str, dict[str, list[float]]], dict[str, list[int]]]:  # fmt: skip
    """Per mode, the seconds of every round's long and 1-token calls, and each mode's generated tokens."""
    from s3cmn.nexttoken.generate import generate_with_readout

    def run(mode: str, new: int) -> tuple[float, torch.Tensor]:
        start = time.perf_counter()
        out = generate_with_readout(model, prompt, mode, **options, max_new_tokens=new)
        return time.perf_counter() - start, out

    texts = {m: run(m, new_tokens)[1][0, prompt.shape[1] :].tolist() for m in modes}  # warm-up, and the text
    times: dict[str, dict[str, list[float]]] = {m: {"long": [], "one": []} for m in modes}
    for r in range(rounds):
        order = modes[r % len(modes) :] + modes[: r % len(modes)]
        for m in order:
            times[m]["long"].append(run(m, new_tokens)[0])
            times[m]["one"].append(run(m, 1)[0])
        last = {m: 1e3 * times[m]["long"][-1] / new_tokens for m in modes}
        logger.info("round %d/%d: %s", r + 1, rounds, ", ".join(f"{m} {ms:.2f} ms/token" for m, ms in last.items()))
    return times, texts


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(times: dict[str, dict[str, list[float]]], new_tokens: int) -> dict[str, Any]:
    out = {}
    for m, t in times.items():
        marginal = [1e3 * (a - b) / (new_tokens - 1) for a, b in zip(t["long"], t["one"], strict=True)]
        out[m] = {"ms_per_token": spread([1e3 * a / new_tokens for a in t["long"]]),
                  "marginal_ms_per_token": spread(marginal), "prompt_ms": spread([1e3 * b for b in t["one"]]),
                  "seconds_long": t["long"], "seconds_one": t["one"]}  # fmt: skip
    return out


def dynamic_schedule(options: dict[str, Any], prompt_tokens: int, new_tokens: int) -> dict[str, Any] | None:
    """The fitted settings and how many updates one long generation takes (reading the prompt, then generating)."""
    from s3cmn.data.windows import sliding_windows, window_batches

    d = options["dynamic"]
    if d is None:
        return None
    segment = d.windows_per_step * d.stride
    prompt_updates = len(window_batches(sliding_windows(prompt_tokens, d.context_length, d.stride), d.windows_per_step))
    return {**d.summary(), "segment": segment, "prompt_updates": prompt_updates,
            "generation_updates": (new_tokens - 1) // segment}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    s, meta = result["settings"], result["meta"]
    lines = [f"# Generation cost per token by memory mode: `{s['checkpoint']}`", "",
             f"`{meta['command']}`", "",
             f"Commit `{meta['commit']}`, {meta['date']}; torch.backends.cpu.get_cpu_capability() = "
             f"{meta['cpu_capability']}; {fmt_load(meta)}. The 2 cores are shared with other people's long jobs "
             f"(uptime at the start: `{meta['uptime_start']}`; at the end: `{meta['uptime_end']}`): the timings move "
             "with their load; the modes were interleaved round by round so that it reaches all of them.", "",
             f"Greedy, batch 1, a {s['prompt_tokens']}-token prompt of `{s['text']}`, {s['new_tokens']} new tokens, "
             f"{s['rounds']} rounds, {meta['threads']} torch thread(s); median (min-max) over the rounds.", "",
             "| memory | ms/token (whole call) | marginal ms/token | prompt + 1 token, ms | vs off | tokens = off |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    off = result["modes"].get("off")
    for m, r in result["modes"].items():
        cells = [f"{r[k]['median']:.2f} ({r[k]['min']:.2f}-{r[k]['max']:.2f})"
                 for k in ("ms_per_token", "marginal_ms_per_token", "prompt_ms")]  # fmt: skip
        ratio = f"{r['ms_per_token']['median'] / off['ms_per_token']['median']:.2f}x" if off else "-"
        lines.append(f"| {m} | {' | '.join(cells)} | {ratio} | {result['same_tokens_as_off'].get(m, '-')} |")
    if result["dynamic"]:
        d = result["dynamic"]
        lines += ["", f"Dynamic evaluation: lr {d['lr']:g}, decay {d['decay']:g}, subset {d['subset']}, "
                  f"{d['windows_per_step']} window(s) of {d['context_length']} tokens per update, stride "
                  f"{d['stride']}: "
                  f"{d['prompt_updates']} update(s) reading the prompt, then one per {d['segment']} generated tokens "
                  f"({d['generation_updates']} in a {s['new_tokens']}-token generation)."]  # fmt: skip
        if d.get("ms_per_update") is not None:
            how = "the marginal ms/token of dynamic minus off, times the tokens after the first, over the updates"
            lines[-1] += f" One update on generated text costs about {d['ms_per_update']:.0f} ms ({how})."
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint folder with its fitted read-outs (nexttoken/)")
    p.add_argument("--modes", default="off,dynamic", help="comma-separated generate(memory=...) modes (off first)")
    p.add_argument("--text", type=Path, required=True, help="the text the prompt is taken from")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--out", type=Path, default=Path("results/memory/generate_modes"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    meta = run_meta(args.threads, False, argv)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    meta.update(cpu_capability=torch.backends.cpu.get_cpu_capability(), uptime_start=uptime)
    modes = args.modes.split(",")
    model, options = load(args.checkpoint, modes)
    prompt = prompt_ids(args.checkpoint, args.text, args.prompt_tokens)
    times, texts = measure(model, prompt, modes, options, args.new_tokens, args.rounds)
    close_meta(meta, start)
    meta["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    summary = summarise(times, args.new_tokens)
    schedule = dynamic_schedule(options, args.prompt_tokens, args.new_tokens)
    if schedule and schedule["generation_updates"] and "off" in summary and "dynamic" in summary:
        marginal = {m: summary[m]["marginal_ms_per_token"]["median"] for m in ("off", "dynamic")}
        extra = marginal["dynamic"] - marginal["off"]
        schedule["ms_per_update"] = extra * (args.new_tokens - 1) / schedule["generation_updates"]
    result = {"format": FORMAT, "meta": meta,
              "settings": {"checkpoint": args.checkpoint, "text": str(args.text), "prompt_tokens": args.prompt_tokens,
                           "new_tokens": args.new_tokens, "rounds": args.rounds, "greedy": True, "batch": 1},
              "modes": summary,
              "same_tokens_as_off": {m: sum(a == b for a, b in zip(t, texts["off"], strict=False))
                                     for m, t in texts.items()} if "off" in texts else {},
              "dynamic": schedule}  # fmt: skip
    path = write_results(args.out, "generate_modes", result, markdown(result))
    print(markdown(result))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
