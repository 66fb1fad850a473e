"""The memory during evaluation: no peeking, isolated runs, a stated start, read statistics, the leak check."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from s3cmn.evaluation.memory_state import (
    memory_content,
    provenance_overlap,
    restore_memories,
    snapshot_memories,
    summarise_reads,
)
from s3cmn.evaluation.perplexity import score_stream
from s3cmn.memory import MemoryReadStats
from s3cmn.memory.bank import MemoryBank


def _score(model, stream, batch: int = 2):
    return score_stream(model, stream, 16, 8, batch, use_memory=True, write_memory=True)


@pytest.mark.parametrize("batch", [1, 3])
def test_memory_on_score_never_depends_on_later_tokens(tiny_model, batch: int) -> None:
    model = tiny_model()
    start = snapshot_memories(model, "empty")
    stream = torch.randint(0, 97, (241,))
    base = _score(model, stream, batch)
    reads = summarise_reads(base.memory_reads[0])
    assert reads["searched_fraction"] > 0.5 and reads["hit_rate"] > 0  # the memory was read, and it hit
    for t in (60, 150):
        changed = stream.clone()
        changed[t + 1 :] = torch.randint(0, 97, (stream.numel() - t - 1,))
        restore_memories(model, start)
        other = _score(model, changed, batch)
        # nll[i] scores stream token i + 1: tokens 1..t must not move
        torch.testing.assert_close(other.nll[:t], base.nll[:t], atol=1e-6, rtol=0)
        assert not torch.allclose(other.nll[t:], base.nll[t:])
        restore_memories(model, start)


def test_runs_start_from_fresh_copies(tiny_model) -> None:
    model = tiny_model()
    model(torch.randint(0, 97, (4, 48)), write_memory=True)  # some starting content
    snapshot = snapshot_memories(model, "saved")
    entries = model.memory_bank[0].num_entries
    stream = torch.randint(0, 97, (161,))
    restore_memories(model, snapshot)
    first = _score(model, stream)
    assert model.memory_bank[0].num_entries != entries or model.memory_bank[0].step != snapshot.bank[0].step
    restore_memories(model, snapshot)
    assert memory_content(model.memory_bank) == memory_content(snapshot.bank)
    second = _score(model, stream)
    torch.testing.assert_close(first.nll, second.nll, atol=0, rtol=0)  # no run sees another's writes


def test_memory_off_reads_and_writes_nothing(tiny_model) -> None:
    model = tiny_model()
    model(torch.randint(0, 97, (4, 48)), write_memory=True)
    before = memory_content(model.memory_bank)
    score = score_stream(model, torch.randint(0, 97, (100,)), 16, 8, 2)
    assert memory_content(model.memory_bank) == before and score.memory_reads is None


def test_provenance_overlap_finds_the_scored_text(tiny_model) -> None:
    model = tiny_model()
    stream = torch.randint(0, 97, (200,))
    assert provenance_overlap(model, stream) == {"0": 0}
    model(stream[None, 20:120], write_memory=True)  # the memory now holds windows of the scored text
    assert provenance_overlap(model, stream)["0"] > 0
    assert provenance_overlap(model, torch.randint(0, 97, (200,)))["0"] == 0


def test_summarise_reads_weights_by_positions() -> None:
    reads = [
        (MemoryReadStats(), 100),  # not searchable yet
        (MemoryReadStats(hit_rate=0.5, mean_similarity=0.8, gate_mean=0.4, latency_ms=2.0, searched=True), 100),
        (MemoryReadStats(hit_rate=1.0, mean_similarity=0.5, gate_mean=0.6, latency_ms=4.0, searched=True), 200),
    ]
    s = summarise_reads(reads)
    assert s["positions"] == 400 and s["searched_fraction"] == pytest.approx(0.75)
    assert s["hit_rate"] == pytest.approx((50 + 200) / 400)
    assert s["mean_similarity"] == pytest.approx((0.8 * 50 + 0.5 * 200) / 250)
    assert s["gate_mean"] == pytest.approx((0.4 * 100 + 0.6 * 200) / 400)
    assert (s["latency_ms_mean"], s["latency_ms_max"], s["searches"]) == (3.0, 4.0, 2)


def test_memory_content_describes_each_layer() -> None:
    store = SimpleNamespace(num_entries=3, capacity=8, searchable=True, is_ivf=False, index=object())
    assert memory_content(MemoryBank({1: store})) == {"1": {"entries": 3, "capacity": 8, "searchable": True,
                                                  "index_type": "exact"}}


def test_learned_memory_writes_only_when_it_starts_empty_unless_told(tiny_model) -> None:
    """memory_writes: auto stores the scored text only into an empty starting memory (issue 15: from a filled
    saved memory, reading alone scored better on held-out text); on / off force it; read-only runs leave
    the memory as it started."""
    from s3cmn.evaluation.run import learned_writes
    from s3cmn.evaluation.runs import score_run
    from s3cmn.run_config import EvalConfig

    model = tiny_model()
    empty = snapshot_memories(model, "empty")
    model(torch.randint(0, 97, (4, 48)), write_memory=True)
    filled = snapshot_memories(model, "saved")
    assert learned_writes(EvalConfig(), empty) and not learned_writes(EvalConfig(), filled)
    assert learned_writes(EvalConfig(memory_writes="on"), filled)
    assert not learned_writes(EvalConfig(memory_writes="off"), empty)
    text = SimpleNamespace(stream=torch.randint(0, 97, (161,)), num_tokens=160, words=40, bytes=400)
    window = {"context_length": 16, "stride": 8}
    read_only = score_run(model, "fp32", "on", text, window, 2, filled, torch.device("cpu"), False, write=False)
    written = score_run(model, "fp32", "on", text, window, 2, filled, torch.device("cpu"), False, write=True)
    assert read_only["memory_state"]["writes"] is False and written["memory_state"]["writes"] is True
    assert read_only["memory_state"]["end"] == read_only["memory_state"]["start"]
    layer = next(iter(written["memory_state"]["start"]))
    assert written["memory_state"]["end"][layer]["entries"] > written["memory_state"]["start"][layer]["entries"]
