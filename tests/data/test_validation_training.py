"""`best` is chosen on the held-out training articles, and the checkpoint says so (the hook s3cmn-eval reads)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from s3cmn import S3CMNConfig
from s3cmn.data import describe_selection, encode_text, load_tokenizer, load_training_texts, validation_selection
from s3cmn.run_config import DataConfig, TrainingConfig
from s3cmn.training import train

HAND_HELDOUT_SHA256 = "a87480b2d06d0ed0eb306059ac614e87484455824e91ddb24069e54fe3e9facd"
SEQ = 32


def test_best_is_selected_on_the_held_out_articles(shared_data: Path, tmp_path: Path) -> None:
    raw = shared_data / "wikitext-2-raw"
    data = DataConfig(train_file=str(raw / "wiki.valid.raw"), validation_file=str(raw / "wiki.test.raw"),
                      tokenizer=str(shared_data / "tokenizers" / "gpt2"), cache_dir=str(tmp_path / "cache"))
    training = TrainingConfig(learning_rate=3e-3, batch_size=2, sequence_length=SEQ, warmup_steps=1, max_steps=3,
                              eval_interval=2, eval_batches=2, log_interval=1, num_samples=0, mixed_precision="no",
                              device="cpu", output_dir=str(tmp_path / "run"), seed=0)
    model = S3CMNConfig.from_preset("tiny", embedding_dim=16, hidden_dim=16, num_layers=1, spiking_units=8,
                                    mamba_d_state=4, hyena_filter_dim=8, hyena_filter_length=16, use_memory=False)
    result = train(model, training, data)

    # validation scored blocks of the held-out slice (the last 6 articles of wiki.valid.raw), not wiki.test.raw
    tokenizer = load_tokenizer(data.tokenizer)
    held_out = load_training_texts(data).validation
    blocks = len(encode_text(held_out, tokenizer)) // SEQ
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in records if r["kind"] == "validation"]
    assert [r["step"] for r in validations] == [2, 3]
    assert all(r["tokens_available"] == blocks * (SEQ - 1) for r in validations)
    assert math.isclose(result.best_val_loss, min(r["loss"] for r in validations))

    for folder in (tmp_path / "run", tmp_path / "run" / "best", tmp_path / "run" / "last"):
        record = validation_selection(folder)
        assert record["rule"] == "holdout" and record["validation_sha256"] == HAND_HELDOUT_SHA256
        assert record["unused_validation_source"]["path"].endswith("wiki.test.raw")
    assert "the last 6 of 60 articles of wiki.valid.raw" in describe_selection(validation_selection(tmp_path / "run"))
