"""Training contracts on real WikiText-2 text: learning, exact resume, clear errors, NaN handling, DDP."""

from __future__ import annotations

import dataclasses
import json
import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from s3cmn import S3CMNConfig, S3CMNForCausalLM
from s3cmn.data import load_tokenizer, pack_blocks
from s3cmn.run_config import TrainingConfig
from s3cmn.training import CheckpointError, TrainingError, fit
from s3cmn.training.loop import seed_everything

SEQ = 32


@pytest.fixture(scope="module")
def blocks(shared_data):
    tokenizer = load_tokenizer(str(shared_data / "tokenizers" / "bert-base-uncased"))
    text = (shared_data / "wikitext-2-raw" / "wiki.valid.raw").read_text(encoding="utf-8")
    ids = tokenizer(text[:60_000], add_special_tokens=False, return_tensors="pt").input_ids[0]
    all_blocks = pack_blocks(ids, SEQ)
    return tokenizer, all_blocks[:-8], all_blocks[-8:]


def small_model(tokenizer, **overrides) -> S3CMNForCausalLM:
    fields = dict(
        vocab_size=len(tokenizer), embedding_dim=32, hidden_dim=32, num_layers=1, spiking_units=16,
        mamba_d_state=4, hyena_filter_dim=8, hyena_filter_length=16, use_memory=False, num_clusters=4,
        memory_compression_dim=8, memory_size=64, memory_write_stride=8,
    )
    config = S3CMNConfig.from_preset("tiny", **{**fields, **overrides})
    seed_everything(0)
    return S3CMNForCausalLM(config)


def run_settings(tmp_path, **overrides) -> TrainingConfig:
    fields = dict(learning_rate=3e-3, batch_size=4, sequence_length=SEQ, warmup_steps=2, max_steps=8,
                  eval_interval=4, log_interval=2, save_interval=4, output_dir=str(tmp_path / "run"),
                  mixed_precision="no", num_samples=1, sample_length=4, seed=0)
    return TrainingConfig(**{**fields, **overrides})


def test_short_run_lowers_validation_loss(blocks, tmp_path) -> None:
    tokenizer, train_blocks, valid_blocks = blocks
    model = small_model(tokenizer)
    settings = run_settings(tmp_path, max_steps=30, eval_interval=10)
    from s3cmn.training.loop import evaluate_loss

    before = evaluate_loss(model, valid_blocks, 4)
    result = fit(model, train_blocks, valid_blocks, settings, tokenizer)
    assert result.steps == 30 and result.stopped == "max_steps"
    assert result.val_loss < before - 1.0, (before, result.val_loss)
    run = tmp_path / "run"
    for name in ("last", "best"):
        assert (run / name / "model.safetensors").is_file() and (run / name / "trainer_state.json").is_file()
        assert (run / name / "tokenizer.json").is_file() or (run / name / "vocab.txt").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in records} == {"train", "validation"}
    assert any("samples" in r for r in records)
    assert (run / "metrics.csv").is_file()
    reloaded = S3CMNForCausalLM.from_pretrained(run / "last")
    ids = valid_blocks[:2]
    torch.testing.assert_close(reloaded(ids).logits, model.eval()(ids).logits)


@pytest.mark.parametrize("use_memory", [False, True], ids=["no-memory", "memory"])
def test_interrupt_and_resume_equals_uninterrupted(blocks, tmp_path, use_memory: bool) -> None:
    tokenizer, train_blocks, valid_blocks = blocks
    train_blocks = train_blocks[:20]  # 5 steps an epoch: the run crosses an epoch boundary
    straight = small_model(tokenizer, use_memory=use_memory)
    fit(straight, train_blocks, valid_blocks, run_settings(tmp_path / "a"), tokenizer)

    interrupted = small_model(tokenizer, use_memory=use_memory)
    first = fit(interrupted, train_blocks, valid_blocks, run_settings(tmp_path / "b"), tokenizer,
                should_stop=lambda step, record: step == 3)
    assert first.stopped == "callback" and first.steps == 3
    resumed = small_model(tokenizer, use_memory=use_memory)
    torch.manual_seed(1234)  # a different RNG state: the checkpoint must restore the saved one
    second = fit(resumed, train_blocks, valid_blocks, run_settings(tmp_path / "b", resume=True), tokenizer)
    assert second.steps == 8
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    if use_memory:
        ma, mb = straight.memory_bank[0], resumed.memory_bank[0]
        assert ma.stats().entries == mb.stats().entries > 0
        for name, array in ma.entries().items():
            assert (array == mb.entries()[name]).all(), name
        records = [json.loads(line) for line in (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines()]
        validation = [r for r in records if r["kind"] == "validation"]
        assert validation[-1]["memory"]["0"]["entries"] == ma.stats().entries


def test_resume_without_checkpoint_is_a_clear_error(blocks, tmp_path) -> None:
    tokenizer, train_blocks, valid_blocks = blocks
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        fit(small_model(tokenizer), train_blocks, valid_blocks, run_settings(tmp_path, resume=True))


def test_corrupt_checkpoint_is_a_clear_error(blocks, tmp_path) -> None:
    tokenizer, train_blocks, valid_blocks = blocks
    fit(small_model(tokenizer), train_blocks, None, run_settings(tmp_path, max_steps=2), tokenizer)
    weights = tmp_path / "run" / "last" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="unreadable or corrupt"):
        fit(small_model(tokenizer), train_blocks, None, run_settings(tmp_path, resume=True), tokenizer)
    (tmp_path / "run" / "last" / "optimizer.pt").unlink()
    with pytest.raises((CheckpointError, ValueError)):
        fit(small_model(tokenizer), train_blocks, None, run_settings(tmp_path, resume=True), tokenizer)


def test_nan_loss_stops_with_the_step_named(blocks, tmp_path) -> None:
    tokenizer, train_blocks, _ = blocks
    model = small_model(tokenizer)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")  # tied: the embedding is poisoned too
    with pytest.raises(TrainingError, match="loss is nan at step 1"):
        fit(model, train_blocks, None, run_settings(tmp_path), tokenizer)
    assert not (tmp_path / "run" / "last").exists()


def test_nan_policy_skip_skips_bad_batches(blocks, tmp_path) -> None:
    tokenizer, train_blocks, _ = blocks
    model = small_model(tokenizer)
    calls = {"n": 0}
    original = model.forward

    def flaky_forward(*args, **kwargs):  # the 2nd forward returns a NaN loss
        out = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            out.loss = out.loss * float("nan")
        return out

    model.forward = flaky_forward
    result = fit(model, train_blocks, None, run_settings(tmp_path, nan_policy="skip", max_steps=3), tokenizer)
    # the skipped batch uses up its step of the budget (so a persistent NaN cannot outlast --max-steps)
    assert result.steps == 2 and result.stopped == "max_steps"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert json.loads((tmp_path / "run" / "last" / "trainer_state.json").read_text())["skipped"] == 1


def test_lr_schedule_shapes() -> None:
    from s3cmn.training.optim import lr_factor

    cosine = TrainingConfig(warmup_steps=10, scheduler="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, cosine, 100) == pytest.approx(0.1)
    assert lr_factor(9, cosine, 100) == pytest.approx(1.0)
    assert lr_factor(55, cosine, 100) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, cosine, 100) == pytest.approx(0.1)
    linear = dataclasses.replace(cosine, scheduler="linear")
    assert lr_factor(55, linear, 100) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(80, dataclasses.replace(cosine, scheduler="constant"), 100) == 1.0


def test_weight_decay_only_on_matrices(blocks) -> None:
    from s3cmn.training.optim import parameter_groups

    model = small_model(blocks[0])
    decay, no_decay = parameter_groups(model, 0.01)
    decayed = {id(p) for p in decay["params"]}
    for name, p in model.named_parameters():
        if p.ndim < 2 or getattr(p, "_no_weight_decay", False):
            assert id(p) not in decayed, name
    assert any(id(p) in decayed for p in model.model.layers[0].mlp.parameters())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str, train_blocks, vocab: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        config = S3CMNConfig.from_preset(
            "tiny", vocab_size=vocab, embedding_dim=32, hidden_dim=32, num_layers=1, spiking_units=16,
            mamba_d_state=4, hyena_filter_dim=8, hyena_filter_length=16, num_clusters=4, memory_compression_dim=8,
            memory_size=64, memory_write_stride=8)
        seed_everything(0)
        model = S3CMNForCausalLM(config)
        settings = TrainingConfig(learning_rate=3e-3, batch_size=2, sequence_length=SEQ, warmup_steps=1,
                                  max_steps=3, save_interval=100, output_dir=out_dir, mixed_precision="no", seed=0)
        fit(model, train_blocks, None, settings)
        tensors = [*model.parameters(), *model.buffers()]  # buffers: e.g. the homeostatic thresholds
        flat = torch.cat([t.detach().flatten().float() for t in tensors])
        torch.save({"params": flat, "entries": model.memory_bank[0].stats().entries}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_process_gloo_training_keeps_ranks_identical(blocks, tmp_path) -> None:
    tokenizer, train_blocks, _ = blocks
    out_dir = str(tmp_path / "ddp")
    mp.spawn(_ddp_worker, args=(2, _free_port(), out_dir, train_blocks[:16].clone(), len(tokenizer)), nprocs=2)
    a = torch.load(f"{out_dir}/rank0.pt", weights_only=True)
    b = torch.load(f"{out_dir}/rank1.pt", weights_only=True)
    assert torch.equal(a["params"], b["params"])
    assert a["entries"] == b["entries"] > 0
    assert (tmp_path / "ddp" / "last" / "model.safetensors").is_file()
