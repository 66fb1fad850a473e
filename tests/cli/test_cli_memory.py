"""s3cmn-memory inspect: statistics, decoded entries, a query through the model, plots, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from s3cmn import S3CMNConfig, S3CMNForCausalLM
from s3cmn.cli import memory as memory_cli
from s3cmn.data import load_tokenizer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, shared_data, wikitext_valid):
    tokenizer = load_tokenizer(str(shared_data / "tokenizers" / "bert-base-uncased"))
    config = S3CMNConfig.from_preset(
        "tiny", vocab_size=len(tokenizer), embedding_dim=32, hidden_dim=32, num_layers=1, spiking_units=16,
        mamba_d_state=4, hyena_filter_dim=8, hyena_filter_length=16, memory_size=128, num_clusters=2,
        memory_compression_dim=8, memory_write_stride=4, max_retrieval_distance=2.0)
    torch.manual_seed(0)
    model = S3CMNForCausalLM(config).train()
    ids = tokenizer(wikitext_valid[:6000], add_special_tokens=False, return_tensors="pt").input_ids[0][:512]
    for segment in ids.view(8, 64).split(2):
        model(segment, write_memory=True)  # training-mode forwards: reads record usage
    folder = tmp_path_factory.mktemp("ckpt")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_inspect_prints_stats_and_decoded_entries(checkpoint, capsys) -> None:
    assert memory_cli.main(["inspect", str(checkpoint), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "## memory layer 0" in out and "entries 128" in out
    assert "most used" in out and "least used" in out
    assert "the" in out  # entries decoded back to WikiText words
    assert "usage (counted in training):" in out and "entries were ever read" in out


def test_inspect_query_and_plots_as_json(checkpoint, capsys, tmp_path) -> None:
    code = memory_cli.main(["inspect", str(checkpoint), "--json", "--query", "the game was released in",
                            "--plot", str(tmp_path)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["memories"][0]["stats"]["entries"] == 128
    assert report["memories"][0]["usage_spread"]["entries"] == 128
    hits = report["query"]["0"]
    assert hits and all("distance" in h and "text" in h for h in hits)
    assert {p.name for p in tmp_path.rglob("*.png")} >= {"occupancy.png", "usage.png", "variance.png"}


def test_no_memory_is_a_clear_error(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        memory_cli.main(["inspect", str(tmp_path)])
    assert exit_.value.code == 2 and "no saved memory" in capsys.readouterr().err
