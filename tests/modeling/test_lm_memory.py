"""The LM with its FAISS memory bank: causality across segments, no self-reads, save/load, gradients."""

from __future__ import annotations

import pytest
import torch

from s3cmn import S3CMNConfig, S3CMNForCausalLM

V = 61


def memory_model(**overrides) -> S3CMNForCausalLM:
    fields = dict(
        vocab_size=V, embedding_dim=32, hidden_dim=32, num_layers=2, num_attention_heads=4, spiking_units=16,
        mamba_d_state=4, hyena_filter_dim=8, hyena_filter_length=16, memory_layers=[0, -1], memory_size=256,
        num_clusters=2, memory_compression_dim=8, memory_write_stride=2, memory_top_k=4,
        max_retrieval_distance=2.0, dropout=0.0, embedding_dropout=0.0, spike_threshold=0.05,
    )
    torch.manual_seed(0)
    return S3CMNForCausalLM(S3CMNConfig.from_preset("tiny", **{**fields, **overrides})).eval()


def run_segments(model: S3CMNForCausalLM, segments: list[torch.Tensor]) -> list[torch.Tensor]:
    """Score segment after segment, writing each into the memory after its forward (as training does)."""
    return [model(seg, write_memory=True).logits for seg in segments]


def test_memory_is_read_after_it_is_written() -> None:
    model = memory_model()
    segments = [torch.randint(0, V, (2, 24)) for _ in range(4)]
    run_segments(model, segments)
    assert all(m.stats().entries > 0 for _, m in model.memory_bank)
    out = model(segments[0])
    assert out.memory_hit_rate.item() > 0
    no_memory = model(segments[0], use_memory=False).logits
    assert not torch.allclose(out.logits, no_memory)  # the read changes the output


def test_causality_across_segments_with_memory() -> None:
    torch.manual_seed(1)
    segments = [torch.randint(0, V, (2, 24)) for _ in range(4)]
    changed = [s.clone() for s in segments]
    changed[2][:, 10:] = torch.randint(0, V, (2, 14))  # change the 3rd segment from position 10 on
    changed[3] = torch.randint(0, V, (2, 24))  # and the whole 4th segment
    a = run_segments(memory_model(), segments)
    b = run_segments(memory_model(), changed)
    for i in range(2):  # earlier segments: identical
        torch.testing.assert_close(a[i], b[i], atol=1e-6, rtol=0)
    torch.testing.assert_close(a[2][:, :10], b[2][:, :10], atol=1e-6, rtol=0)  # a segment never reads itself
    assert not torch.allclose(a[2][:, 10:], b[2][:, 10:])


def test_step_by_step_equals_forward_with_a_filled_memory() -> None:
    model = memory_model()
    run_segments(model, [torch.randint(0, V, (2, 24)) for _ in range(3)])
    ids = torch.randint(0, V, (2, 20))
    full = model(ids).logits
    out = model(ids[:, :5], use_cache=True)
    logits, cache = [out.logits], out.cache
    for t in range(5, 20):
        out = model(ids[:, t : t + 1], cache=cache, use_cache=True)
        logits.append(out.logits)
        cache = out.cache
    torch.testing.assert_close(torch.cat(logits, 1), full, atol=1e-5, rtol=1e-5)


def test_save_load_keeps_memory_and_logits(tmp_path) -> None:
    model = memory_model()
    run_segments(model, [torch.randint(0, V, (2, 24)) for _ in range(3)])
    ids = torch.randint(0, V, (2, 16))
    model.save_pretrained(tmp_path)
    loaded = S3CMNForCausalLM.from_pretrained(tmp_path)
    assert loaded.memory_bank.layers == model.memory_bank.layers == [0, 1]
    for layer, memory in model.memory_bank:
        assert loaded.memory_bank[layer].stats().entries == memory.stats().entries
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)


def test_missing_memory_folder_is_a_clear_error(tmp_path) -> None:
    import shutil

    model = memory_model()
    run_segments(model, [torch.randint(0, V, (2, 24))])
    model.save_pretrained(tmp_path)
    shutil.rmtree(tmp_path / "memory" / "0")
    with pytest.raises(FileNotFoundError, match="memory of block 0 is missing"):
        S3CMNForCausalLM.from_pretrained(tmp_path)


def test_gradients_reach_the_reader_not_the_store() -> None:
    model = memory_model().train()
    run_segments(model, [torch.randint(0, V, (2, 24)) for _ in range(3)])
    before = {k: m.entries()["values"].copy() for k, m in model.memory_bank}
    ids = torch.randint(0, V, (2, 24))
    model(ids, labels=ids).loss.backward()
    for block in model.model.layers:
        for name, p in block.memory_reader.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    for k, m in model.memory_bank:
        assert (m.entries()["values"] == before[k]).all()  # the stored values are untouched copies


def test_generate_can_switch_the_memory_off() -> None:
    model = memory_model()
    run_segments(model, [torch.randint(0, V, (2, 24)) for _ in range(3)])
    prompt = torch.randint(0, V, (1, 6))
    off = model.generate(prompt, max_new_tokens=8, do_sample=False, use_memory=False)
    ids = prompt
    for _ in range(8):
        ids = torch.cat([ids, model(ids, use_memory=False).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(off, ids)


def entries(model: S3CMNForCausalLM) -> dict[int, int]:
    return {layer: m.num_entries for layer, m in model.memory_bank}


def test_write_memory_commits_through_the_bank() -> None:
    model = memory_model()
    ids = torch.randint(0, V, (2, 24))
    model(ids)  # no write: nothing staged, nothing stored
    assert entries(model) == {0: 0, 1: 0} and model.memory_bank.pending == []
    model(ids, write_memory=True)
    assert entries(model) == {0: 24, 1: 24}  # B * T / stride per layer
    assert model.memory_bank.writes == 1 and model.memory_bank.pending == []
    model(ids, use_memory=False, write_memory=True)  # the write does not need the read
    assert entries(model) == {0: 48, 1: 48} and model.memory_bank.writes == 2


def test_a_non_finite_loss_writes_nothing() -> None:
    model = memory_model()
    ids = torch.randint(0, V, (2, 24))
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")  # tied: the embedding of token 0 is NaN too
    ids[0, 0] = 0
    out = model(ids, labels=ids, write_memory=True)
    assert not torch.isfinite(out.loss)
    assert entries(model) == {0: 0, 1: 0} and model.memory_bank.pending == []


def test_a_segment_reads_only_earlier_segments() -> None:
    """The first segment finds an empty memory although it writes: the stores change after its forward."""
    model = memory_model()
    ids = torch.randint(0, V, (2, 24))
    first = model(ids, write_memory=True)
    assert first.memory_hit_rate.item() == 0 and entries(model) == {0: 24, 1: 24}
    torch.testing.assert_close(first.logits, memory_model()(ids).logits, atol=0, rtol=0)
    assert model(ids).memory_hit_rate.item() > 0


def test_an_old_checkpoint_memory_folder_loads(tmp_path) -> None:
    """Today's layout, memory/<layer>/ with the v1 manifest: loads into the bank under int layers."""
    model = memory_model()
    run_segments(model, [torch.randint(0, V, (2, 24)) for _ in range(2)])
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in (tmp_path / "memory").iterdir()) == ["0", "1"]
    loaded = S3CMNForCausalLM.from_pretrained(tmp_path)
    assert entries(loaded) == entries(model)


def test_a_checkpoint_saved_before_the_bank_loads_with_the_same_outputs(tmp_path) -> None:
    """tests/modeling/data/lm-memory-v1: save_pretrained of commit 39e2ec5 (model.memories, memory/<layer>/):
    the stores load into the bank and the model reads them to the same logits."""
    import shutil
    from pathlib import Path

    from safetensors.torch import load_file

    folder = Path(__file__).parent / "data" / "lm-memory-v1"
    expected = load_file(folder / "expected.safetensors")
    model = S3CMNForCausalLM.from_pretrained(folder)
    assert model.memory_bank.layers == [0, 1]
    for layer, memory in model.memory_bank:
        torch.testing.assert_close(torch.from_numpy(memory.entries()["values"]), expected[f"values/{layer}"])
    out = model(expected["probe"])
    assert out.memory_hit_rate.item() > 0
    torch.testing.assert_close(out.memory_hit_rate.reshape(1), expected["hit_rate"])
    torch.testing.assert_close(out.logits, expected["logits"], atol=1e-5, rtol=1e-5)
    model.save_pretrained(tmp_path)  # and saves in the same layout
    assert sorted(p.name for p in (tmp_path / "memory").iterdir()) == ["0", "1"]
    shutil.rmtree(tmp_path / "memory" / "1")
    with pytest.raises(FileNotFoundError, match="memory of block 1 is missing"):
        S3CMNForCausalLM.from_pretrained(tmp_path)
