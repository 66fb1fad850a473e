"""Training computes the LM loss in chunks (no full logits); it equals the plain cross-entropy."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from s3cmn import S3CMNConfig, S3CMNForCausalLM


def test_training_loss_and_gradients_equal_the_plain_cross_entropy() -> None:
    torch.manual_seed(0)
    config = S3CMNConfig.from_preset("small-test")
    model = S3CMNForCausalLM(config).train()
    twin = copy.deepcopy(model)  # training forwards update buffers (homeostasis): compare on equal copies
    ids = torch.randint(0, config.vocab_size, (2, 24))

    torch.manual_seed(1)
    out = model(ids, labels=ids)
    assert out.logits is None  # training never builds the (B, T, V) logits
    out.loss.backward()

    torch.manual_seed(1)
    logits = twin(ids).logits  # (B, T, V), the plain path
    targets = ids[:, 1:].reshape(-1)
    plain = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets)
    plain.backward()

    torch.testing.assert_close(out.loss, plain, rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        if p.grad is not None or q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_evaluation_with_labels_still_returns_logits() -> None:
    config = S3CMNConfig.from_preset("small-test")
    model = S3CMNForCausalLM(config).eval()
    ids = torch.randint(0, config.vocab_size, (1, 10))
    with torch.no_grad():
        out = model(ids, labels=ids)
    assert out.logits.shape == (1, 10, config.vocab_size)
    expected = F.cross_entropy(out.logits[0, :-1], ids[0, 1:])
    torch.testing.assert_close(out.loss, expected)
