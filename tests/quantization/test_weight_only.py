"""The weight_only int8 backend: every Linear an Int8Linear with its own codes and bias; a few rows take the C
int8 GEMV, more rows dequantise on the fly, both equal to the readable reference; the model generates the
same greedy tokens step by step as in one pass; a saved checkpoint loads back to identical logits."""

from __future__ import annotations

import copy

import torch

from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.lm import S3CMNForCausalLM
from s3cmn.quantization.backends import quantize_model
from s3cmn.quantization.checkpoint import load_quantized, save_quantized
from s3cmn.quantization.int8 import Int8Linear

SMALL = dict(vocab_size=97, hidden_dim=32, embedding_dim=32, num_layers=2, num_attention_heads=2, spiking_units=16,
             hyena_filter_length=16, hyena_filter_dim=8, use_memory=False, dropout=0.0)


def _model() -> S3CMNForCausalLM:
    torch.manual_seed(0)
    return S3CMNForCausalLM(S3CMNConfig.from_preset("tiny", **SMALL)).eval()


def test_every_linear_becomes_weight_only_and_matches_its_reference() -> None:
    model, report = quantize_model(_model(), backend="weight_only")
    assert report.backend == "weight_only"
    layers = [m for n, m in model.named_modules() if n in report.modules and report.modules[n] == "int8_weight_only"]
    assert layers and all(isinstance(m, Int8Linear) and m.kernel == "weight_only" for m in layers)
    assert any(m.bias is not None for m in layers)  # biased Linears keep their bias
    x1, x9 = torch.randn(1, layers[0].in_features), torch.randn(9, layers[0].in_features)
    with torch.no_grad():
        for x in (x1, x9):  # the C GEMV (1 row) and the dequantised matmul (9 rows)
            torch.testing.assert_close(layers[0](x), layers[0].forward_ref(x), rtol=1e-5, atol=1e-5)


def test_steps_equal_one_pass_and_the_checkpoint_round_trips(tmp_path) -> None:
    fp32 = _model()
    model, report = quantize_model(copy.deepcopy(fp32), backend="weight_only")
    ids = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :4], use_cache=True)
        steps = [out.logits[:, -1]]
        for t in range(4, 12):
            out = model(ids[:, t : t + 1], cache=out.cache, use_cache=True)
            steps.append(out.logits[:, -1])
        torch.testing.assert_close(torch.stack(steps[1:], 1), full[:, 4:], rtol=1e-4, atol=1e-4)
        assert (full - fp32(ids).logits).abs().max() < 0.05 * fp32(ids).logits.abs().max()  # int8 stays close
        save_quantized(model, tmp_path / "q", report)
        loaded, loaded_report = load_quantized(tmp_path / "q")
        assert loaded_report.backend == "weight_only"
        torch.testing.assert_close(loaded(ids).logits, full)
