"""Meta-learned step sizes for dynamic evaluation, on a real (tiny, untrained) S3CMN: the learned pass is the
scored pass (same update rule, same resets), learning lowers the adapting loss of repetitive text, the model
is unchanged afterwards, per-tensor scales round-trip and are checked, and the fit keeps whichever of grid and
meta wins on the held-out tail."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from s3cmn.nexttoken.dynamic import DynamicSettings, subset_parameters
from s3cmn.nexttoken.dynamic_fit import dynamic_nll, fit_dynamic
from s3cmn.nexttoken.dynamic_meta import MetaOptions, meta_fit

from .conftest import DYNAMIC_CONTEXT as CONTEXT
from .conftest import DYNAMIC_STRIDE as STRIDE
from .conftest import dynamic_settings, random_stream


@pytest.mark.parametrize("reset", [False, True])
def test_the_meta_pass_is_the_scored_pass_before_any_meta_update(model_and_ms, reset):
    """A learning rate too small to move the step sizes: the meta pass's NLL is dynamic_nll's, with each
    tensor's starting scale, so what is learned is what evaluation does (same rule, decay cap, resets)."""
    model, ms = model_and_ms
    stream = torch.cat([torch.tensor([0]), random_stream(96, seed=6), random_stream(96, seed=7)])
    starts = torch.tensor([97])
    start = dynamic_settings(ms, subset="head", reset_at_documents=reset)
    options = MetaOptions(epochs=1, unroll=2, meta_lr=1e-12, outside_scale=0.5)
    learned = meta_fit(model, stream, CONTEXT, STRIDE, start, options, document_starts=starts)
    head = set(subset_parameters(model, "head"))
    scales = {n: 1.0 if n in head else 0.5 for n in subset_parameters(model, "all")}
    expected = dynamic_nll(model, stream, CONTEXT, STRIDE, dataclasses.replace(start, subset="all", lr_scale=scales),
                           starts)  # fmt: skip
    # Without resets the adapted weights carry across the document and the RMS-normalised steps amplify rounding:
    # on an AVX-512 EPYC the meta pass (autograd through the steps) and evaluation differ by 2.7e-5 relative
    # (4.582130 against 4.582256), 1.4e-7 with resets. Still tight enough to fail with the wrong scales (all 1.0:
    # 4.582046, 4.6e-5 away) or the wrong reset rule (4.581051, 2.6e-4 away).
    rel = 1e-5 if reset else 4e-5
    assert learned.fit["meta"]["curve"][0]["nll_per_token"] == pytest.approx(expected, rel=rel)
    assert learned.lr_scale == pytest.approx(scales, rel=1e-6) and learned.subset == "all"


def test_meta_learning_lowers_the_adapting_loss_of_repetitive_text(model_and_ms):
    model, ms = model_and_ms
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    half = random_stream(48, seed=8)
    stream = torch.cat([torch.tensor([0]), half, half, half, half])
    start = dynamic_settings(ms, lr=1e-4, decay=0.0)  # a step far too small for text that repeats
    learned = meta_fit(model, stream, CONTEXT, STRIDE, start, MetaOptions(epochs=3, unroll=2, meta_lr=0.5))
    curve = [c["nll_per_token"] for c in learned.fit["meta"]["curve"]]
    assert curve[-1] < curve[0] - 0.05, curve
    assert dynamic_nll(model, stream, CONTEXT, STRIDE, learned) < dynamic_nll(model, stream, CONTEXT, STRIDE, start)
    assert max(learned.lr_scale.values()) > 1.5  # the learned steps grew where they pay
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # weights untouched
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags


def test_scales_round_trip_and_are_checked(model_and_ms, tmp_path):
    model, ms = model_and_ms
    names = list(subset_parameters(model, "all"))
    settings = dynamic_settings(ms, lr_scale={n: 0.5 + i / 10 for i, n in enumerate(names)})
    settings.save(tmp_path)
    loaded = DynamicSettings.load(tmp_path)
    assert loaded.lr_scale == settings.lr_scale
    stream = random_stream(100, seed=4)
    assert dynamic_nll(model, stream, CONTEXT, STRIDE, loaded) == dynamic_nll(model, stream, CONTEXT, STRIDE, settings)
    assert settings.summary()["lr_scale"]["tensors"] == len(names)
    with pytest.raises(ValueError, match="lr_scale"):
        dynamic_settings(ms, lr_scale={names[0]: -1.0})
    with pytest.raises(ValueError, match="does not adapt"):  # a scale for a tensor outside the subset
        outside = dynamic_settings(ms, subset="head", lr_scale={"no.such.weight": 1.0})
        dynamic_nll(model, stream, CONTEXT, STRIDE, outside)


def test_scale_zero_on_every_tensor_scores_as_off(model_and_ms):
    model, ms = model_and_ms
    stream = random_stream(120, seed=9)
    zero = dynamic_settings(ms, decay=0.0, lr_scale=dict.fromkeys(subset_parameters(model, "all"), 0.0))
    assert dynamic_nll(model, stream, CONTEXT, STRIDE, zero) == dynamic_nll(model, stream, CONTEXT, STRIDE,
                                                                            dynamic_settings(ms, lr=0.0, decay=0.0))


def test_the_fit_compares_grid_and_meta_on_text_neither_saw(model_and_ms):
    model, _ = model_and_ms
    half = random_stream(48, seed=10)
    stream = torch.cat([torch.tensor([0]), half, half, half, half])
    settings = fit_dynamic(model, stream, CONTEXT, STRIDE, grid_tokens=0, windows_per_step=2, lrs=(1e-4, 1e-3),
                           decays=(), subsets=("all",), meta=MetaOptions(epochs=2, unroll=2, meta_lr=0.5),
                           compare_fraction=0.4)  # fmt: skip
    meta = settings.fit["meta"]
    assert meta["fit_tokens"] + meta["compare_tokens"] == stream.numel() - 1
    assert settings.fit["tokens"] == meta["fit_tokens"]  # the grid saw only the fit part
    scores = meta["compare_nll_per_token"]
    assert scores[meta["kept"]] == min(scores["grid"], scores["meta"])
    assert settings.fit["lr_at_grid_edge"] is True  # 1e-3 or 1e-4: both are edges of a two-point grid
    assert bool(settings.lr_scale) == (meta["kept"] == "meta")
    with pytest.raises(ValueError, match="too short"):
        fit_dynamic(model, stream[:50], CONTEXT, STRIDE, meta=MetaOptions())


def test_under_a_speed_floor_meta_learned_steps_slower_than_it_are_not_kept(model_and_ms):
    from s3cmn.nexttoken.dynamic_fit import _meta_or_grid

    model, ms = model_and_ms
    half = random_stream(48, seed=10)
    stream = torch.cat([torch.tensor([0]), half, half, half, half])
    grid = DynamicSettings(lr=1e-3, windows_per_step=2, ms=ms, context_length=CONTEXT, stride=STRIDE)
    options = MetaOptions(epochs=1, unroll=2, meta_lr=0.5)
    for needed, may_keep_meta in ((0.0, True), (1e12, False)):  # no floor; a floor nothing reaches
        _, report = _meta_or_grid(model, stream[:97], stream[96:], CONTEXT, STRIDE, grid, options, None, needed)
        assert all(v > 0 for v in report["compare_tokens_per_s"].values())
        scores = report["compare_nll_per_token"]
        expected = "meta" if may_keep_meta and scores["meta"] <= scores["grid"] else "grid"
        assert report["kept"] == expected


def test_bad_options_name_the_field():
    with pytest.raises(ValueError, match="unroll"):
        MetaOptions(unroll=0)
    with pytest.raises(ValueError, match="meta_lr"):
        MetaOptions(meta_lr=float("nan"))


def test_fit_dynamic_meta_from_the_command_line_and_its_report(tiny_checkpoint, wikitext_dir, tmp_path, capsys):
    import json
    import shutil

    from s3cmn.cli.eval import main as eval_main
    from s3cmn.cli.memory import main as memory_main
    from s3cmn.nexttoken.dynamic import load_dynamic

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    heldout = tmp_path / "heldout.raw"
    lines = (wikitext_dir / "wiki.valid.raw").read_text(encoding="utf-8").splitlines(keepends=True)
    heldout.write_text("".join(lines[30:40]), encoding="utf-8")
    flags = ["--context-length", "32", "--stride", "16", "--no-progress"]
    assert memory_main(["fit", str(ckpt), "--text", str(heldout), "--dynamic", "--dynamic-meta", "--meta-epochs", "1",
                        "--dynamic-lrs", "1e-4,1e-3", "--dynamic-grid-tokens", "0", *flags]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "meta-learned step sizes (per tensor) vs the grid's" in out and "kept" in out
    dynamic = load_dynamic(ckpt)
    assert dynamic.fit["grid"]["lr"] == [1e-4, 1e-3] and "meta" in dynamic.fit
    report_dir = tmp_path / "report"
    assert eval_main([str(ckpt), "--data-dir", str(wikitext_dir), "--memory", "off,dynamic", "--max-eval-tokens",
                      "100", "--report-dir", str(report_dir), *flags]) == 0  # fmt: skip
    notes = json.loads((report_dir / "report.json").read_text())["notes"]
    kept_meta = dynamic.fit["meta"]["kept"] == "meta"
    assert any(("meta-learned step sizes" in n) == kept_meta and "dynamic evaluation (" in n for n in notes)
    with pytest.raises(SystemExit):
        memory_main(["fit", str(ckpt), "--text", str(heldout), "--dynamic", "--dynamic-lrs", "1e-3,-1", *flags])
    assert "'-1' is not a positive finite rate" in capsys.readouterr().err  # the grid parser compare.py uses
