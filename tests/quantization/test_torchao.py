"""The torchao backend: the same modules become int8 as with torch.ao, outputs stay close, saving is refused."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torchao", reason="torchao is not installed")

from s3cmn.quantization import quantize_model  # noqa: E402
from s3cmn.quantization.backends import resolve_backend  # noqa: E402
from s3cmn.quantization.checkpoint import QuantizedCheckpointError, save_quantized  # noqa: E402


def test_torchao_quantizes_the_same_modules_as_torch(make_model, ids) -> None:
    _, torch_report = quantize_model(make_model(), backend="torch")
    model, report = quantize_model(make_model(), backend="torchao")
    assert report.backend == "torchao"
    assert {n for n, k in report.modules.items() if k == "torchao"} == {
        n for n, k in torch_report.modules.items() if k == "torch_dynamic"}
    assert report.kept_fp32 == torch_report.kept_fp32 and report.int8_fraction == torch_report.int8_fraction
    weight = model.get_submodule(next(n for n, k in report.modules.items() if k == "torchao")).weight
    assert type(weight).__module__.startswith("torchao")


def test_torchao_outputs_stay_close_to_fp32(make_model, ids) -> None:
    with torch.no_grad():
        reference = make_model()(ids).logits
        quantized = quantize_model(make_model(), backend="torchao")[0](ids).logits
    error = (quantized - reference).abs().max() / reference.abs().max()
    assert 0 < error < 0.05  # int8: not identical, but close


def test_auto_stays_torch_on_the_cpu() -> None:
    assert resolve_backend("auto", torch.device("cpu")) == "torch"  # faster here (README's int8 table)


def test_saving_a_torchao_model_is_refused(make_model, tmp_path) -> None:
    model, report = quantize_model(make_model(), backend="torchao")
    with pytest.raises(QuantizedCheckpointError, match="in-memory only.*backend='torch'"):
        save_quantized(model, tmp_path, report)
