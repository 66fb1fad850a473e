"""S3CMNForCausalLM contracts: shapes, causality, step == forward, determinism, save/load, generate, learning."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from s3cmn import S3CMNConfig, S3CMNForCausalLM

MIXERS = [
    dict(),  # hyena + mamba + LIF
    dict(ssm_type="s4d"),
    dict(use_hyena=False),
    dict(ssm_type="none", use_spiking=False),  # hyena only
    dict(use_hyena=False, ssm_type="none"),  # LIF only
    dict(embedding_dim=48, position_embedding="learned"),
    dict(position_embedding="sinusoidal", num_spike_steps=2),
]


def tiny(**overrides) -> S3CMNConfig:
    fields = dict(
        vocab_size=97, embedding_dim=32, hidden_dim=32, num_layers=2, num_attention_heads=4, spiking_units=16,
        s4d_d_state=8, mamba_d_state=4, hyena_filter_dim=8, hyena_filter_length=24, use_memory=False,
        dropout=0.0, embedding_dropout=0.0, attention_dropout=0.0, max_position_embeddings=64,
        spike_threshold=0.05,  # low enough that spikes happen at init, so every path is exercised
    )
    return S3CMNConfig.from_preset("tiny", **{**fields, **overrides})


def make(**overrides) -> S3CMNForCausalLM:
    torch.manual_seed(0)
    return S3CMNForCausalLM(tiny(**overrides)).eval()


@pytest.mark.parametrize("overrides", MIXERS, ids=str)
def test_shapes_and_loss(overrides: dict) -> None:
    model = make(**overrides)
    ids = torch.randint(0, 97, (2, 20))
    out = model(ids, labels=ids)
    assert out.logits.shape == (2, 20, 97)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    # an untrained model is close to uniform: its loss is near log(V)
    assert abs(out.loss.item() - torch.log(torch.tensor(97.0)).item()) < 1.0
    if model.config.use_spiking:
        assert out.spike_rate is not None and 0 <= out.spike_rate.item() <= 1
        assert len(out.spike_stats) == model.config.num_layers


def test_loss_is_the_shifted_cross_entropy() -> None:
    model = make()
    ids = torch.randint(0, 97, (2, 12))
    labels = ids.clone()
    labels[0, 5] = -100
    out = model(ids, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 97), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("overrides", MIXERS, ids=str)
def test_causality(overrides: dict) -> None:
    model = make(**overrides)
    ids = torch.randint(0, 97, (2, 30))
    changed = ids.clone()
    changed[:, 17:] = torch.randint(0, 97, (2, 13))
    a, b = model(ids).logits, model(changed).logits
    torch.testing.assert_close(a[:, :17], b[:, :17], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 17:], b[:, 17:])


@pytest.mark.parametrize("overrides", MIXERS, ids=str)
def test_step_by_step_equals_full_forward(overrides: dict) -> None:
    model = make(**overrides)
    ids = torch.randint(0, 97, (2, 30))  # longer than hyena_filter_length: the bounded history is exercised
    full = model(ids, use_cache=False).logits
    out = model(ids[:, :7], use_cache=True)
    logits = [out.logits]
    cache = out.cache
    for t in range(7, 30):
        out = model(ids[:, t : t + 1], cache=cache, use_cache=True)
        cache = out.cache
        logits.append(out.logits)
    torch.testing.assert_close(torch.cat(logits, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.seen_tokens == 30


def test_chunked_prefill_equals_full_forward() -> None:
    model = make()
    ids = torch.randint(0, 97, (1, 40))
    full = model(ids).logits
    first = model(ids[:, :25], use_cache=True)
    second = model(ids[:, 25:], cache=first.cache, use_cache=True)
    torch.testing.assert_close(torch.cat([first.logits, second.logits], 1), full, atol=1e-5, rtol=1e-5)


def test_determinism() -> None:
    ids = torch.randint(0, 97, (2, 16))
    a = make()(ids).logits
    b = make()(ids).logits
    assert torch.equal(a, b)


def test_save_load_identical_logits(tmp_path) -> None:
    import s3cmn  # noqa: F401  (registers the Auto classes)

    model = make(embedding_dim=48)
    ids = torch.randint(0, 97, (2, 16))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    for loaded in (S3CMNForCausalLM.from_pretrained(tmp_path), AutoModelForCausalLM.from_pretrained(tmp_path)):
        assert type(loaded) is S3CMNForCausalLM
        torch.testing.assert_close(loaded.eval()(ids).logits, model(ids).logits, atol=0, rtol=0)
    # the head stays tied to the embedding after loading
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()


def test_generate_greedy_matches_manual_argmax() -> None:
    model = make()
    prompt = torch.randint(0, 97, (1, 6))
    generated = model.generate(prompt, max_new_tokens=8, do_sample=False)
    assert generated.shape == (1, 14)
    ids = prompt
    for _ in range(8):  # the same tokens from repeated full forwards (no cache)
        next_id = model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], 1)
    assert torch.equal(generated, ids)


def test_generate_sampling_is_seeded() -> None:
    model = make()
    prompt = torch.randint(0, 97, (2, 5))
    kwargs = dict(max_new_tokens=6, do_sample=True, temperature=0.8, top_k=20, top_p=0.9)
    torch.manual_seed(3)
    a = model.generate(prompt, **kwargs)
    torch.manual_seed(3)
    b = model.generate(prompt, **kwargs)
    assert torch.equal(a, b) and a.shape == (2, 11)


def test_padding_mask_is_refused() -> None:
    model = make()
    ids = torch.randint(0, 97, (2, 5))
    mask = torch.ones_like(ids)
    mask[0, 0] = 0
    with pytest.raises(ValueError, match="padding"):
        model(ids, attention_mask=mask)


def test_no_decay_parameters_are_marked() -> None:
    model = make()
    marked = [n for n, p in model.named_parameters() if getattr(p, "_no_weight_decay", False)]
    assert any(n.endswith("A_log") for n in marked) and any(n.endswith(".D") for n in marked)


def test_overfits_one_batch_of_wikitext(wikitext_valid: str, bert_vocab) -> None:
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast(vocab=str(bert_vocab))
    ids = tokenizer(wikitext_valid[:4000], return_tensors="pt").input_ids[:, :129]
    batch = ids[:, :128].reshape(2, 64)
    config = tiny(vocab_size=tokenizer.vocab_size, hidden_dim=64, embedding_dim=64, spike_threshold=1.0)
    torch.manual_seed(0)
    model = S3CMNForCausalLM(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = model(batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.3 * first, (first, loss.item())
