"""Inspection: the report decodes the most/least used entries to their text; queries; PNG charts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tokenizers import BertWordPieceTokenizer

from s3cmn.memory import FaissMemory, Provenance, memory_report, plot_memory
from s3cmn.memory.inspect import describe_spread, query_report, usage_figure, usage_spread
from s3cmn.memory.settings import MemorySettings


@pytest.fixture
def filled(bert_vocab, clustered_data):
    tok = BertWordPieceTokenizer(str(bert_vocab), lowercase=True)
    text_ids = tok.encode("the memory remembers what the model read before", add_special_tokens=False).ids
    mem = FaissMemory(MemorySettings(dim=16, memory_size=400, num_clusters=2, memory_compression_dim=4, layer_idx=2))
    data = clustered_data(200, 16, 5, seed=0)
    ids = torch.tensor(text_ids).repeat(200, 1)
    ids[7] = torch.tensor(tok.encode("a rarely used entry", add_special_tokens=False).ids + [-1] * (len(text_ids) - 4))
    prov = Provenance(ids, torch.arange(200), torch.zeros(200, dtype=torch.long))
    mem.write(data, prov, step=1)
    mem.record_usage(np.full(5, 7), np.full(5, 0.9), step=2)  # entry 7 is the most used
    return mem, tok, data


def test_report_decodes_most_used_entries(filled):
    mem, tok, _ = filled
    report = memory_report(mem, tok, top=3)
    json.dumps(report)  # JSON-ready
    most = report["most_used"][0]
    assert most["id"] == 7 and most["usage"] == 5 and most["text"] == "a rarely used entry"
    assert report["least_used"][0]["usage"] == 0
    assert report["least_used"][0]["text"] == "the memory remembers what the model read before"
    assert report["stats"]["entries"] == 200 and report["occupancy"]["lists"] == 2
    assert report["pca"]["key_dim"] == 4 and report["pca"]["cumulative_variance"][-1] == pytest.approx(1.0)
    # entry 7 took all 5 retrievals; 1 of the 200 entries was ever read
    assert report["usage_spread"] == {"entries": 200, "retrievals": 5, "top_entry_share": 1.0,
                                      "top_percent_share": 1.0, "read_share": 0.005}  # fmt: skip


def test_usage_spread_by_hand():
    usage = np.zeros(300, np.int64)
    usage[[3, 10, 20, 30]] = [60, 20, 15, 5]  # 100 retrievals; the top 1% of 300 entries = 3 entries
    spread = usage_spread(usage)
    assert spread == {"entries": 300, "retrievals": 100, "top_entry_share": 0.6, "top_percent_share": 0.95,
                      "read_share": 4 / 300}  # fmt: skip
    assert describe_spread(spread) == ("100 retrievals: the top entry took 60.0%, the top 1% of entries 95.0%; "
                                       "1.3% of the 300 entries were ever read")  # fmt: skip
    assert usage_spread(np.zeros(5, np.int64))["top_entry_share"] == 0.0 and usage_spread(np.zeros(0))["entries"] == 0


def test_the_usage_plot_has_log_axes():
    from matplotlib.figure import Figure

    for usage in (np.array([1000, 10, 1, 0, 0]), np.zeros(4, np.int64)):  # a collapsed reader; nothing read
        ax = usage_figure(usage, Figure).axes[0]
        assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")


def test_query_report_returns_decoded_hits(filled):
    mem, tok, data = filled
    hits = query_report(mem, data[7:8], tok, k=3)
    assert hits[0][0]["id"] == 7 and hits[0][0]["text"] == "a rarely used entry"
    assert hits[0][0]["distance"] == pytest.approx(0.0, abs=1e-5)
    assert mem.entries()["usage"][7] == 5  # inspection records no usage


def test_plot_memory_writes_pngs(filled, tmp_path):
    paths = plot_memory(filled[0], tmp_path)
    assert [p.name for p in paths] == ["occupancy.png", "usage.png", "variance.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
