"""save_quantized / load_quantized: identical outputs, no re-quantisation, no pickle, small, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from s3cmn.quantization import backends, checkpoint, int8
from s3cmn.quantization.backends import quantize_model
from s3cmn.quantization.checkpoint import QuantizedCheckpointError, load_quantized, save_quantized
from s3cmn.quantization.memory_int8 import Int8FaissMemory, quantize_memory


def fill_memory(model, ids: torch.Tensor) -> None:
    """Write enough states that the memory's IVF index is trained (2 lists x 39 entries)."""
    for _ in range(3):
        model(ids, write_memory=True)
    assert all(m.is_ivf for _, m in model.memory_bank)


@pytest.fixture
def memory_model(make_model, ids):
    model = make_model(use_memory=True, memory_size=256, num_clusters=2, memory_compression_dim=16,
                       memory_write_stride=1, max_retrieval_distance=2.0)  # fmt: skip
    with torch.no_grad():
        fill_memory(model, ids)
    return model


def test_save_load_gives_identical_outputs(memory_model, ids, backend: str, tmp_path, monkeypatch) -> None:
    quantized, report = quantize_model(memory_model, backend)
    for layer, memory in quantized.memory_bank:
        quantized.memory_bank[layer] = quantize_memory(memory)
    with torch.no_grad():
        expected = quantized(ids).logits
    save_quantized(quantized, tmp_path, report)

    def never(*args, **kwargs):
        raise AssertionError("load_quantized must not quantise again")

    for module, name in [(int8, "quantize_rows"), (backends, "to_bnb"), (backends, "quantize_model")]:
        monkeypatch.setattr(module, name, never)
    loaded, loaded_report = load_quantized(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, expected, atol=0, rtol=0)
    assert loaded_report.backend == backend and loaded_report.modules == report.modules
    assert isinstance(loaded.memory_bank[1], Int8FaissMemory) and loaded.memory_bank[1].is_ivf


def test_files_are_plain_and_small(make_model, tmp_path) -> None:
    """No pickle: JSON + safetensors only, the tied head stored once. Size: this tiny model keeps 6.5 % of its
    parameters in fp32 (Hyena filters, convolutions, norms, A_log), so (0.935 x 1 + 0.065 x 4) / 4 = 0.30 of the
    fp32 bytes, plus fp32 scales and biases: 0.32 measured, bound 0.35 (the small preset: 0.29, bench_quant)."""
    model = make_model()
    model.save_pretrained(tmp_path / "fp32")
    quantized, report = quantize_model(model, "torch")
    save_quantized(quantized, tmp_path / "int8", report)
    names = sorted(p.name for p in (tmp_path / "int8").iterdir())
    assert names == ["config.json", "model-int8.safetensors", "quantization.json"]
    ratio = (tmp_path / "int8" / "model-int8.safetensors").stat().st_size / (
        tmp_path / "fp32" / "model.safetensors"
    ).stat().st_size
    assert ratio <= 0.35
    manifest = json.loads((tmp_path / "int8" / "quantization.json").read_text())
    assert manifest["backend"] == "torch" and manifest["modules"]["lm_head"]["kind"] == "int8_tied_head"


def test_corrupt_or_missing_files_are_named(make_model, tmp_path) -> None:
    quantized, report = quantize_model(make_model(), "torch")
    save_quantized(quantized, tmp_path, report)
    weights = tmp_path / "model-int8.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(QuantizedCheckpointError, match="corrupt"):
        load_quantized(tmp_path)
    weights.unlink()
    with pytest.raises(QuantizedCheckpointError, match="missing"):
        load_quantized(tmp_path)
    (tmp_path / "quantization.json").write_text("{")
    with pytest.raises(QuantizedCheckpointError, match="not JSON"):
        load_quantized(tmp_path)
    with pytest.raises(QuantizedCheckpointError, match="not a quantized checkpoint"):
        load_quantized(tmp_path / "nowhere")


def test_a_bnb_checkpoint_without_bitsandbytes_says_what_to_install(make_model, tmp_path, monkeypatch) -> None:
    pytest.importorskip("bitsandbytes")
    quantized, report = quantize_model(make_model(), "bnb")
    save_quantized(quantized, tmp_path, report)

    def no_bnb():
        raise ImportError(f"the 'bnb' backend needs bitsandbytes: {backends.BNB_INSTALL}")

    monkeypatch.setattr(checkpoint, "import_bitsandbytes", no_bnb)
    with pytest.raises(ImportError, match="pip install"):
        load_quantized(tmp_path)


def test_an_fp32_model_cannot_be_saved_as_quantized(make_model, tmp_path) -> None:
    with pytest.raises(ValueError, match="call quantize_model first"):
        save_quantized(make_model(), tmp_path)
