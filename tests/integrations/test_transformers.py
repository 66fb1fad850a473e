"""Hugging Face paths on an S3CMN checkpoint: loading keywords, pipeline("text-generation"), Trainer."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from s3cmn import S3CMNForCausalLM

TRAINED_LENGTH = 32  # conftest.TRAINED_LENGTH


def test_from_pretrained_ignores_none_loading_keywords(checkpoint) -> None:
    # What lm-eval's HFLM passes (as None) on every load.
    model = S3CMNForCausalLM.from_pretrained(
        str(checkpoint), device_map=None, gguf_file=None, max_memory=None, quantization_config=None,
        low_cpu_mem_usage=True, use_safetensors=True, attn_implementation=None)
    assert model.config.n_positions == TRAINED_LENGTH
    cpu = S3CMNForCausalLM.from_pretrained(str(checkpoint), device_map="cpu")
    assert next(cpu.parameters()).device.type == "cpu"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [("quantization_config", {"load_in_8bit": True}, "quantize_model"),
     ("device_map", {"model.layers.0": 0, "lm_head": 1}, "not split across devices"),
     ("gguf_file", "model.gguf", "safetensors"),
     ("max_memory", {0: "1GiB"}, "not split")],
)
def test_from_pretrained_refuses_what_it_cannot_honour(checkpoint, name: str, value, says: str) -> None:
    with pytest.raises(TypeError, match=f"cannot honour {name}=.*{says}"):
        S3CMNForCausalLM.from_pretrained(str(checkpoint), **{name: value})


def test_trained_length_is_runtime_only(checkpoint, tmp_path) -> None:
    model = S3CMNForCausalLM.from_pretrained(str(checkpoint))
    model.save_pretrained(tmp_path)
    assert "n_positions" not in json.loads((tmp_path / "config.json").read_text())
    assert model.config.n_positions == TRAINED_LENGTH  # kept on the live config
    again = S3CMNForCausalLM.from_pretrained(str(tmp_path))  # no trainer_state.json: length unknown
    assert not hasattr(again.config, "n_positions")


def test_text_generation_pipeline(checkpoint) -> None:
    pipe = transformers.pipeline("text-generation", model=str(checkpoint), tokenizer=str(checkpoint), device="cpu")
    assert isinstance(pipe.model, S3CMNForCausalLM)
    (out,) = pipe("the game was released in", max_new_tokens=4, do_sample=False)
    text = out["generated_text"]
    assert text.startswith("the game was released in") and len(text) > len("the game was released in")
    # Greedy pipeline tokens = the model's own greedy generate().
    (tokens,) = pipe("the game was released in", max_new_tokens=4, do_sample=False, return_tensors=True)
    ids = pipe.tokenizer("the game was released in", return_tensors="pt").input_ids
    expected = pipe.model.generate(ids, max_new_tokens=4, do_sample=False)
    assert list(tokens["generated_token_ids"]) == expected[0].tolist()


def test_pipeline_refuses_padded_batches_before_any_work(checkpoint) -> None:
    pipe = transformers.pipeline("text-generation", model=str(checkpoint), tokenizer=str(checkpoint), device="cpu")
    with pytest.raises(ValueError, match=r"left-padded batch .*\(batch_size=1\)"):
        pipe(["du fu", "the game was released in"], max_new_tokens=4, do_sample=False, batch_size=2)


def test_trainer_takes_a_few_steps(checkpoint, tmp_path, bert_tokenizer, wikitext_valid: str) -> None:
    from datasets import Dataset

    model = S3CMNForCausalLM.from_pretrained(str(checkpoint))
    model.train()
    ids = torch.tensor(bert_tokenizer(wikitext_valid[:8000], add_special_tokens=False).input_ids[:256]).view(8, 32)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=2,
                                          gradient_accumulation_steps=2, learning_rate=1e-3, report_to=[],
                                          use_cpu=True, save_strategy="no", logging_steps=1, seed=0)
    result = transformers.Trainer(model=model, args=args, train_dataset=data).train()
    assert result.global_step == 3 and torch.isfinite(torch.tensor(result.training_loss))
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert "lm_head.weight" in changed or "model.embed_tokens.weight" in changed
    assert len(changed) > len(before) // 2
