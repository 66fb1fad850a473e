"""Dynamic evaluation on a real (tiny, untrained) S3CMN: causal, step size 0 is the fixed model exactly, it
learns a repeated sequence, the model is unchanged afterwards, the subsets, settings round-trip, fitting."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from s3cmn.nexttoken.dynamic import (
    SUBSETS,
    DynamicAdapter,
    DynamicSettings,
    dynamic_chunks,
    subset_parameters,
)
from s3cmn.nexttoken.dynamic_fit import fit_dynamic, score_dynamic
from s3cmn.nexttoken.fitted import CacheSettings, ReadoutSettings
from s3cmn.nexttoken.stream import score_readouts

from .conftest import DYNAMIC_CONTEXT as CONTEXT
from .conftest import DYNAMIC_STRIDE as STRIDE
from .conftest import dynamic_settings, random_stream


def _readouts() -> ReadoutSettings:
    return ReadoutSettings(cache=CacheSettings(0.3, 1.0, 8, 64), context_length=CONTEXT, stride=STRIDE)


def test_changing_token_t_changes_no_earlier_score_with_dynamic_on(model_and_ms):
    model, ms = model_and_ms
    a = random_stream(200, seed=0)
    b = a.clone()
    t = 120
    b[t] = (a[t] + 1) % 97
    modes = ["dynamic", "cache+dynamic"]
    scores = [score_dynamic(model, s, CONTEXT, STRIDE, modes, dynamic_settings(ms), _readouts()).nll for s in (a, b)]
    # Index i scores token i + 1. Chunks of 2 windows score targets 1-31, 32-63, 64-95, 96-127: the chunks
    # before token t's never saw it, so their scores are identical; inside its chunk the FFT long convolution
    # (Hyena) moves earlier outputs at rounding level (~1e-7, as in test_readouts), which the adapted weights
    # and the cache's softmax amplify to ~1e-5.
    for m in modes:
        assert torch.equal(scores[0][m][:95], scores[1][m][:95]), m
        torch.testing.assert_close(scores[0][m][: t - 1], scores[1][m][: t - 1], atol=1e-4, rtol=0, msg=m)
        assert float((scores[0][m][t - 1 :] - scores[1][m][t - 1 :]).abs().max()) > 1e-2, m


def test_step_size_zero_scores_exactly_as_off(model_and_ms):
    model, ms = model_and_ms
    stream = random_stream(150, seed=1)
    off = score_readouts(model, stream, CONTEXT, STRIDE, 2, ["off", "cache"], _readouts()).nll
    dyn = score_dynamic(model, stream, CONTEXT, STRIDE, ["dynamic", "cache+dynamic"],
                        dynamic_settings(ms, lr=0.0, decay=0.0),
                        _readouts()).nll  # fmt: skip
    assert torch.equal(dyn["dynamic"], off["off"])
    assert torch.equal(dyn["cache+dynamic"], off["cache"])


def test_adaptation_lowers_the_loss_of_a_repeated_random_sequence(model_and_ms):
    model, ms = model_and_ms
    half = random_stream(160, seed=2)
    stream = torch.cat([torch.tensor([0]), half, half])
    off = score_readouts(model, stream, CONTEXT, STRIDE, 2, ["off"]).nll["off"]
    adapting = dynamic_settings(ms, lr=3e-3, decay=0.0)
    dyn = score_dynamic(model, stream, CONTEXT, STRIDE, ["dynamic"], adapting).nll["dynamic"]
    second = slice(len(half), None)  # the second copy's targets
    assert float(dyn[second].mean()) < float(off[second].mean()) - 0.1
    torch.testing.assert_close(dyn[:31], off[:31], atol=1e-5, rtol=0)  # the first chunk: before any update


@pytest.mark.parametrize("subset", SUBSETS)
def test_the_model_is_unchanged_after_dynamic_evaluation(model_and_ms, subset):
    model, ms = model_and_ms
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    chunks = dynamic_chunks(model, random_stream(120, seed=3), CONTEXT, STRIDE, dynamic_settings(ms, subset=subset))
    moved = False
    for i, _ in enumerate(chunks):
        if i == 3:  # mid-pass the adapted weights differ from the trained ones
            moved = any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)
    assert moved, subset
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), subset
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags


def test_subsets_select_what_they_name(tiny_model):
    model = tiny_model()
    everything = dict(model.named_parameters())
    assert subset_parameters(model, "all").keys() == everything.keys()
    assert list(subset_parameters(model, "head").values())[0] is model.lm_head.weight  # tied to the embedding
    ssm = subset_parameters(model, "ssm")
    assert ssm and all(".x_proj." in n or ".dt_proj." in n for n in ssm)
    norms = subset_parameters(model, "norms_biases")
    assert all(n.endswith("bias") or "norm" in n for n in norms) and any("norm.weight" in n for n in norms)
    with pytest.raises(ValueError, match="subset"):
        subset_parameters(model, "embeddings")


def test_the_update_rule_by_hand(tiny_model):
    model = tiny_model()
    p = model.lm_head.weight
    ms = {n: torch.full_like(q, 4.0) for n, q in model.named_parameters()}
    settings = DynamicSettings(lr=0.1, decay=0.25, subset="head", eps_rel=0.5, ms_beta=1.0, ms=ms)
    with DynamicAdapter(model, settings) as adapter:
        theta0 = p.detach().clone()
        with torch.no_grad():
            p.add_(1.0)  # theta - theta0 = 1
        loss = (p * 3.0).sum()  # gradient 3 everywhere
        adapter.step(loss)
        # rms 2, mean rms 2: denominator 2 + 0.5 * 2 = 3; rate min(2 / 2, 1 / 0.25) * 0.25 = 0.25
        torch.testing.assert_close(p.detach(), theta0 + 1.0 - 0.1 * 3.0 / 3.0 - 0.25 * 1.0)
    assert torch.equal(p.detach(), theta0)
    running = DynamicSettings(lr=0.1, subset="head", eps_rel=0.5, ms_beta=0.75, ms=ms)
    with DynamicAdapter(model, running) as adapter:
        adapter.step((p * 3.0).sum())
        # MS 0.75 * 4 + 0.25 * 9 = 5.25; eps 0.5 * 2 = 1
        torch.testing.assert_close(p.detach(), theta0 - 0.1 * 3.0 / (5.25**0.5 + 1.0))


def test_settings_round_trip_through_save_and_load(model_and_ms, tmp_path):
    model, ms = model_and_ms
    settings = dynamic_settings(ms, reset_at_documents=True, cache_lam=0.2, combined=(0.3, 0.1),
                         fitted_on={"path": "heldout.raw", "sha256": "ab" * 32, "tokens": 150})  # fmt: skip
    settings.save(tmp_path)
    loaded = DynamicSettings.load(tmp_path)
    assert loaded.to_dict() == settings.to_dict()
    assert loaded.ms.keys() == ms.keys() and all(torch.equal(loaded.ms[k], ms[k]) for k in ms)
    stream = random_stream(100, seed=4)
    a = score_dynamic(model, stream, CONTEXT, STRIDE, ["dynamic"], settings).nll["dynamic"]
    b = score_dynamic(model, stream, CONTEXT, STRIDE, ["dynamic"], loaded).nll["dynamic"]
    assert torch.equal(a, b)


def test_the_step_scale_does_not_depend_on_the_order_of_the_ms():
    from s3cmn.nexttoken.dynamic import ms_scale

    g = torch.Generator().manual_seed(1)
    # mixed scales, large enough that an fp32 mean in another order rounds differently (it did before the fix, on
    # 1 and 2 threads)
    ms = {f"p{i}": torch.rand(200000 + 37 * i, generator=g) * 10.0 ** (i % 9 - 4) for i in range(12)}
    backwards = dict(reversed(ms.items()))  # as a loaded safetensors file hands them back: another order
    assert ms_scale(ms, 0.1)[1] == ms_scale(backwards, 0.1)[1]
    assert torch.equal(ms_scale(ms, 0.1)[0], ms_scale(backwards, 0.1)[0])


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="decay"):
        DynamicSettings(decay=1.5)
    with pytest.raises(ValueError, match="subset"):
        DynamicSettings(subset="everything")
    with pytest.raises(ValueError, match="unknown keys"):
        DynamicSettings.from_dict({**DynamicSettings().to_dict(), "learning_rate": 1.0})


def test_a_reset_brings_back_the_trained_weights_after_a_document_starts(model_and_ms):
    model, ms = model_and_ms
    stream = torch.cat([torch.tensor([0]), random_stream(96, seed=6), random_stream(96, seed=7)])
    starts = torch.tensor([97])  # the second document's first token
    fixed = score_readouts(model, stream, CONTEXT, STRIDE, 2, ["off"]).nll["off"]
    on = dataclasses.replace(dynamic_settings(ms), reset_at_documents=True)
    dyn = score_dynamic(model, stream, CONTEXT, STRIDE, ["dynamic"], on, document_starts=starts).nll["dynamic"]
    # chunks of 2 windows score targets 1-31, 32-63, 64-95, 96-127, 128-159 (index i scores target i + 1): the
    # one holding target 97 is scored adapted, then the weights are reset, so 128-159 is scored by the trained ones
    torch.testing.assert_close(dyn[127:159], fixed[127:159], atol=1e-5, rtol=0)
    assert float((dyn[95:127] - fixed[95:127]).abs().max()) > 1e-4


def test_fit_picks_a_step_that_helps_on_repetitive_text(model_and_ms):
    model, _ = model_and_ms
    half = random_stream(64, seed=8)
    stream = torch.cat([torch.tensor([0]), half, half, half])
    settings = fit_dynamic(model, stream, CONTEXT, STRIDE, readouts=_readouts(), grid_tokens=0, windows_per_step=2,
                           lrs=(1e-3, 3e-2), decays=(1e-2,), subsets=("all", "head"),
                           fitted_on={"path": "x.raw", "sha256": "0" * 64})  # fmt: skip
    grid = settings.fit["grid_nll_per_token"]
    assert settings.lr > 0 and grid["dynamic"] < grid["off"]
    assert settings.cache_lam is not None and "cache+dynamic" in settings.fit["nll_per_token"]
    assert settings.ms.keys() == dict(model.named_parameters()).keys()


def test_fit_tries_each_windows_per_step_with_its_own_ms_and_keeps_only_points_above_the_speed_floor(
        model_and_ms, monkeypatch, caplog):
    import s3cmn.nexttoken.dynamic_fit as dynamic_fit
    from s3cmn.nexttoken.dynamic import gradient_ms

    model, _ = model_and_ms
    half = random_stream(64, seed=8)
    stream = torch.cat([torch.tensor([0]), half, half, half])
    grid = dict(grid_tokens=0, windows_per_step=(1, 2), lrs=(1e-3, 3e-2), decays=(), subsets=("all", "head"))
    free = fit_dynamic(model, stream, CONTEXT, STRIDE, **grid)
    assert {t["windows_per_step"] for t in free.fit["trials"]} == {1, 2} and "speed_floor" not in free.fit
    ms = gradient_ms(model, stream, CONTEXT, STRIDE, free.windows_per_step)  # the MS of the chosen windows count
    assert all(torch.equal(ms[n], free.ms[n]) for n in ms)
    # a floor every point meets changes nothing; a floor none meets keeps the best of all, and says so
    monkeypatch.setattr(dynamic_fit, "static_tokens_per_s", lambda *args: 1e-9)
    met = fit_dynamic(model, stream, CONTEXT, STRIDE, min_speed=0.5, **grid)
    assert met.fit["speed_floor"]["met"] and (met.lr, met.subset, met.windows_per_step) == (
        free.lr, free.subset, free.windows_per_step)
    monkeypatch.setattr(dynamic_fit, "static_tokens_per_s", lambda *args: 1e12)
    missed = fit_dynamic(model, stream, CONTEXT, STRIDE, min_speed=0.5, **grid)
    assert not missed.fit["speed_floor"]["met"] and "no grid point reaches" in caplog.text
    assert missed.fit["grid_nll_per_token"] == free.fit["grid_nll_per_token"]
    with pytest.raises(ValueError, match="min_speed"):
        fit_dynamic(model, stream, CONTEXT, STRIDE, min_speed=1.5, **grid)
    with pytest.raises(ValueError, match="windows_per_step"):
        fit_dynamic(model, stream, CONTEXT, STRIDE, **{**grid, "windows_per_step": (0,)})


def test_every_decay_is_tried_at_the_grid_point_even_when_an_earlier_one_wins(model_and_ms, monkeypatch):
    import s3cmn.nexttoken.dynamic_fit as dynamic_fit

    model, _ = model_and_ms
    stream = torch.cat([torch.tensor([0]), random_stream(96, seed=8)])
    # a held-out NLL that falls with the step size and the decay: each decay beats the one before it
    monkeypatch.setattr(dynamic_fit, "dynamic_nll", lambda m, s, c, st, settings, starts=None: 5.0 - settings.lr
                        - settings.decay)  # fmt: skip
    settings = fit_dynamic(model, stream, CONTEXT, STRIDE, grid_tokens=0, lrs=(1e-3, 1e-2), decays=(1e-3, 1e-2, 0.1),
                           subsets=("head",))  # fmt: skip
    assert (settings.lr, settings.decay) == (1e-2, 0.1)
    assert [t.get("decay") for t in settings.fit["trials"] if "decay" in t] == [1e-3, 1e-2, 0.1]


def test_a_decay_that_scores_lower_but_under_the_speed_floor_is_not_chosen(model_and_ms, monkeypatch):
    import types

    import s3cmn.nexttoken.dynamic_fit as dynamic_fit

    model, _ = model_and_ms
    stream = torch.cat([torch.tensor([0]), random_stream(96, seed=8)])
    tokens = stream.numel() - 1
    clock = [0.0]

    def nll(m, s, c, st, settings, starts=None):  # decays score lower but take 100x as long
        clock[0] += 100.0 if settings.decay else 1.0
        return 5.0 - settings.lr - settings.decay

    monkeypatch.setattr(dynamic_fit, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(dynamic_fit, "dynamic_nll", nll)
    monkeypatch.setattr(dynamic_fit, "static_tokens_per_s", lambda *args: float(tokens))  # the floor: tokens / 2 s
    settings = fit_dynamic(model, stream, CONTEXT, STRIDE, grid_tokens=0, lrs=(1e-3, 1e-2), decays=(1e-3, 1e-2),
                           subsets=("head",), min_speed=0.5)  # fmt: skip
    assert (settings.lr, settings.decay) == (1e-2, 0.0)
    floor = settings.fit["speed_floor"]
    assert floor["met"] and settings.fit["chosen_tokens_per_s"] == tokens / 1.0
    # without the floor the faster-scoring decay wins, and its own speed is the one reported
    free = fit_dynamic(model, stream, CONTEXT, STRIDE, grid_tokens=0, lrs=(1e-3, 1e-2), decays=(1e-3, 1e-2),
                       subsets=("head",))  # fmt: skip
    assert free.decay == 1e-2 and free.fit["chosen_tokens_per_s"] == tokens / 100.0


def test_document_starts_are_the_wikitext_article_headings(bert_tokenizer, wikitext_dir):
    from s3cmn.data import encode_text
    from s3cmn.nexttoken.dynamic import document_starts

    lines = (wikitext_dir / "wiki.valid.raw").read_text(encoding="utf-8").splitlines(keepends=True)
    text = "".join(lines[:400])
    ids = torch.from_numpy(encode_text(text, bert_tokenizer))
    starts = document_starts(text, bert_tokenizer, ids.numel())
    headings = sum(1 for line in lines[:400] if line.startswith(" = ") and not line.startswith(" = = "))
    assert len(starts) == headings - 1 >= 1
    stream = torch.cat([torch.tensor([0]), ids])
    equals = bert_tokenizer.convert_tokens_to_ids("=")
    assert all(int(stream[s]) == equals and int(stream[s + 1]) != equals for s in starts)  # " = Title = "
    with pytest.raises(ValueError, match="misplaced"):
        document_starts(text, bert_tokenizer, ids.numel() + 1)


def test_fit_and_eval_the_dynamic_modes_end_to_end(tiny_checkpoint, wikitext_dir, tmp_path, capsys):
    import json
    import shutil

    from s3cmn.cli.eval import main as eval_main
    from s3cmn.cli.memory import main as memory_main
    from s3cmn.modeling.loading import load_model
    from s3cmn.nexttoken.dynamic import load_dynamic

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    train, heldout = tmp_path / "train.raw", tmp_path / "heldout.raw"
    lines = (wikitext_dir / "wiki.valid.raw").read_text(encoding="utf-8").splitlines(keepends=True)
    train.write_text("".join(lines[:30]), encoding="utf-8")
    heldout.write_text("".join(lines[30:40]), encoding="utf-8")
    flags = ["--context-length", "32", "--stride", "16", "--no-progress"]
    assert memory_main(["build", str(ckpt), "--text", str(train), *flags]) == 0
    assert memory_main(["fit", str(ckpt), "--text", str(heldout), "--dynamic", "--dynamic-grid-tokens", "48",
                        "--dynamic-windows-per-step", "2,1", "--dynamic-min-speed", "0.01", *flags]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "dynamic evaluation fitted on" in out and "speed floor 0.01x" in out
    dynamic = load_dynamic(ckpt)
    assert dynamic.fitted_on["path"] == str(heldout.resolve()) and dynamic.cache_lam is not None
    assert dynamic.knn_lam is not None and dynamic.combined is not None
    report_dir = tmp_path / "report"
    modes = "off,dynamic,cache+dynamic,knn+dynamic,cache+knn+dynamic"
    args = [str(ckpt), "--data-dir", str(wikitext_dir), "--memory", modes, "--max-eval-tokens", "200",
            "--context-length", "32", "--stride", "16", "--report-dir", str(report_dir), "--no-progress"]
    assert eval_main(args) == 0
    report = json.loads((report_dir / "report.json").read_text())
    assert [r["memory"] for r in report["runs"]] == modes.split(",")
    state = report["runs"][2]["memory_state"]
    assert state["dynamic"]["lr"] == dynamic.lr and state["readout"]["cache"]["lam"] == dynamic.cache_lam
    assert any("dynamic evaluation (lr" in n and str(heldout.resolve()) in n for n in report["notes"])
    original = load_model(tiny_checkpoint)
    after = load_model(ckpt).state_dict()  # the adapted weights never reached the saved checkpoint either
    assert all(torch.equal(v, after[k]) for k, v in original.state_dict().items())
    assert any("with the text dynamic evaluation was fitted on" in n for n in report["notes"])  # the overlap
    (tmp_path / "part.raw").write_text("".join(lines[31:39]), encoding="utf-8")
    capsys.readouterr()
    for scored, why in ((heldout, "is the text dynamic"), (tmp_path / "part.raw", "sampled 8-word sequences")):
        with pytest.raises(SystemExit):  # the fit text, or a part of it, is refused as a scored text
            eval_main([str(ckpt), "--test-file", str(scored), "--memory", "dynamic", "--no-progress", *flags[:4]])
        assert why in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--dynamic-windows-per-step", "0"), ("--dynamic-windows-per-step", "1,x"),
                                         ("--dynamic-min-speed", "1.5"), ("--dynamic-min-speed", "fast")])
def test_bad_dynamic_fit_flags_are_refused_with_the_fix(flag, value, capsys):
    from s3cmn.cli.memory import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "ckpt", "--text", "x.raw", "--dynamic", flag, value])
    assert "e.g." in capsys.readouterr().err
