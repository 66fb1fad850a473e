"""Dynamic evaluation in generation on a real (tiny, untrained) S3CMN: step size 0 is plain greedy decoding, each
token comes from the weights scoring would give it and never from weights that saw it, the model is unchanged
afterwards (also after an error), and missing settings are one clear error (library and s3cmn-generate)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from s3cmn.nexttoken.dynamic import DynamicSettings, dynamic_chunks, dynamic_path, gradient_ms
from s3cmn.nexttoken.fitted import CacheSettings, ReadoutSettings
from s3cmn.nexttoken.generate import generate_row

from .conftest import random_stream

# segment = windows_per_step * stride = 8 generated tokens per update
CONTEXT, STRIDE, WINDOWS = 16, 4, 2


@pytest.fixture
def model_and_ms(tiny_model):
    model = tiny_model()
    return model, gradient_ms(model, random_stream(120, seed=5), CONTEXT, STRIDE, WINDOWS)


def _settings(ms: dict, **kw) -> DynamicSettings:
    return DynamicSettings(**{"lr": 3e-3, "decay": 1e-2, "subset": "all", "windows_per_step": WINDOWS, "ms": ms,
                              "context_length": CONTEXT, "stride": STRIDE, **kw})  # fmt: skip


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def _forced(model, prompt: torch.Tensor, tokens: torch.Tensor, settings: DynamicSettings) -> torch.Tensor:
    """The log-probabilities (new, V) dynamic generation produces each token from, ``tokens`` forced as its text."""
    logps, forced = [], iter(tokens.tolist())

    def choose(logp: torch.Tensor) -> int:
        logps.append(logp.clone())
        return next(forced)

    generate_row(model, prompt, "dynamic", choose, tokens.numel(), dynamic=settings)
    return torch.stack(logps)


@pytest.mark.parametrize("decay", [0.0, 1e-2])
def test_step_size_zero_generates_what_plain_greedy_decoding_does(model_and_ms, decay):
    model, ms = model_and_ms
    prompt = random_stream(13, seed=1)[None]  # 13 + 20 tokens: the prompt read in one update, 2 more while generating
    plain = model.generate(prompt, max_new_tokens=20, do_sample=False, memory="off")
    still = _settings(ms, lr=0.0, decay=decay)
    out = model.generate(prompt, max_new_tokens=20, memory="dynamic", dynamic_settings=still)
    assert torch.equal(out, plain)
    cache = ReadoutSettings(cache=CacheSettings(0.3, 1.0, 8, 64))
    with_cache = model.generate(prompt, max_new_tokens=20, memory="cache", readout_settings=cache)
    out = model.generate(prompt, max_new_tokens=20, memory="cache+dynamic", readout_settings=cache,
                         dynamic_settings=_settings(ms, lr=0.0, decay=decay, cache_lam=0.3))  # fmt: skip
    assert torch.equal(out, with_cache)


@pytest.mark.parametrize("t", [7, 8, 9])  # the last token of a segment, the first of the next, one after
def test_changing_generated_token_t_changes_no_earlier_distribution(model_and_ms, t):
    model, ms = model_and_ms
    prompt = random_stream(13, seed=2)[None]
    a = random_stream(20, seed=3)
    b = a.clone()
    b[t] = (a[t] + 1) % 97
    la, lb = _forced(model, prompt, a, _settings(ms)), _forced(model, prompt, b, _settings(ms))
    assert torch.equal(la[: t + 1], lb[: t + 1])  # the distribution token t was drawn from, and all before it
    assert not torch.equal(la[t + 1 :], lb[t + 1 :])
    fixed = _forced(model, prompt, a, _settings(ms, lr=0.0))  # and the adaptation did act on them
    assert float((la[1:] - fixed[1:]).abs().max()) > 1e-4


def test_each_token_comes_from_the_weights_scoring_gives_it(model_and_ms):
    # The prompt (24 = CONTEXT + 2 STRIDE tokens) ends on a scoring chunk's end, so the updates while generating
    # learn from the same windows as the scoring pass over the finished text: the reference adaptation.
    model, ms = model_and_ms
    settings = _settings(ms)
    prompt = random_stream(24, seed=4)[None]
    used: list[dict[str, torch.Tensor]] = []

    def greedy(logp: torch.Tensor) -> int:
        used.append(_weights(model))
        return int(logp.argmax())

    text = generate_row(model, prompt, "dynamic", greedy, 20, dynamic=settings)[0]  # (44,)
    after: list[tuple[int, dict[str, torch.Tensor]]] = []  # (last target learned, weights after the update)
    for chunk in dynamic_chunks(model, text, CONTEXT, STRIDE, settings):
        after.append((int(chunk.pos[-1]) + 1, _weights(model)))
    for i, weights in enumerate(used):
        position = prompt.shape[1] + i  # the stream position of generated token i
        reference = [w for last, w in after if last < position][-1]
        assert _same(weights, reference), i
    assert not _same(used[0], used[-1])  # generation went on learning


def test_the_model_is_unchanged_after_dynamic_generation(model_and_ms):
    model, ms = model_and_ms
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    prompt = random_stream(13, seed=6)[None]
    seen: list[dict[str, torch.Tensor]] = []

    def greedy(logp: torch.Tensor) -> int:
        seen.append(_weights(model))
        return int(logp.argmax())

    generate_row(model, prompt, "dynamic", greedy, 20, dynamic=_settings(ms))
    assert not _same(seen[-1], {n: before[n] for n in seen[-1]})  # mid-generation the weights had moved
    model.generate(prompt, max_new_tokens=20, do_sample=True, memory="dynamic", dynamic_settings=_settings(ms))

    def fail(logp: torch.Tensor) -> int:
        if len(seen) == 30:  # the 11th token: after the first update on generated text
            raise RuntimeError("stop")
        seen.append(_weights(model))
        return int(logp.argmax())

    with pytest.raises(RuntimeError, match="stop"):  # an error mid-generation restores them too
        generate_row(model, prompt, "dynamic", fail, 20, dynamic=_settings(ms))
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags


def test_missing_dynamic_settings_are_one_clear_error(model_and_ms, tmp_path):
    model, ms = model_and_ms
    prompt = random_stream(5, seed=7)[None]
    with pytest.raises(ValueError, match=r"need fitted dynamic evaluation settings: run `s3cmn-memory fit CKPT"):
        model.generate(prompt, memory="dynamic")
    model.save_pretrained(tmp_path / "ckpt")
    saved = type(model).from_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="need fitted dynamic evaluation settings") as err:
        saved.generate(prompt, memory="dynamic")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="no cache weight fitted with dynamic on"):
        model.generate(prompt, memory="cache+dynamic", readout_settings=ReadoutSettings(cache=CacheSettings()),
                       dynamic_settings=_settings(ms))  # fmt: skip
    with pytest.raises(ValueError, match="generation reads in the fit's windows"):
        model.generate(prompt, memory="dynamic", dynamic_settings=_settings(ms, context_length=0, stride=0))


def test_s3cmn_generate_memory_dynamic(tiny_checkpoint, tmp_path, capsys):
    import shutil

    from s3cmn.cli.generate import main
    from s3cmn.modeling.loading import load_model

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    argv = [str(ckpt), "--prompt", "the cat sat on the mat", "--max-new-tokens", "12", "--temperature", "0"]
    assert main([*argv, "--memory", "dynamic"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("s3cmn-generate: error: memory modes ['dynamic'] need fitted dynamic evaluation settings")
    assert err.count("\n") == 1
    model = load_model(ckpt)
    ms = gradient_ms(model, random_stream(80, seed=8, hi=len(model.get_output_embeddings().weight)), CONTEXT, STRIDE)
    DynamicSettings(lr=0.0, context_length=CONTEXT, stride=STRIDE, ms=ms).save(dynamic_path(ckpt))
    assert main([*argv, "--memory", "dynamic"]) == 0
    dynamic = capsys.readouterr().out
    assert main([*argv, "--memory", "off"]) == 0
    assert dynamic == capsys.readouterr().out  # lr 0: the plain greedy text, streamed
    dataclasses.replace(DynamicSettings.load(dynamic_path(ckpt)), lr=1e-3).save(dynamic_path(ckpt))
    assert main([*argv, "--memory", "dynamic"]) == 0
    assert capsys.readouterr().out.startswith("the cat sat on the mat")
    assert main([*argv, "--memory", "dynamic", "--quantize", "int8", "--backend", "torch"]) == 2
    assert "cannot run on an int8 model" in capsys.readouterr().err
