"""8-bit inference: model quantization (bitsandbytes LLM.int8 / torch dynamic int8 / int8 embeddings),
quantized checkpoints, an SQ8 FAISS memory, and the loading + generation behind s3cmn-generate.

    model, report = quantize_model(model, backend="auto")         # "bnb" | "torch" | "auto"
    save_quantized(model, "out", report, tokenizer); model, report = load_quantized("out")
    memory8 = quantize_memory(memory)                               # IVF-SQ8 index, 4x smaller keys

Names are imported lazily (PEP 562): ``import s3cmn.quantization`` imports neither bitsandbytes nor faiss.
torch's ``torch.ao.quantization`` (the "torch" backend) is deprecated upstream in favour of torchao but still
runs in torch 2.13; its deprecation warnings are silenced where it is called, nowhere else.
"""

from __future__ import annotations

from s3cmn.utils.lazy import lazy_exports

_EXPORTS = {
    "quantize_model": "s3cmn.quantization.backends",
    "QuantizationReport": "s3cmn.quantization.backends",
    "KEEP_FP32": "s3cmn.quantization.backends",
    "resolve_backend": "s3cmn.quantization.backends",
    "Int8Embedding": "s3cmn.quantization.int8",
    "Int8Linear": "s3cmn.quantization.int8",
    "quantize_rows": "s3cmn.quantization.int8",
    "dequantize_rows": "s3cmn.quantization.int8",
    "save_quantized": "s3cmn.quantization.checkpoint",
    "load_quantized": "s3cmn.quantization.checkpoint",
    "is_quantized_checkpoint": "s3cmn.quantization.checkpoint",
    "QuantizedCheckpointError": "s3cmn.quantization.checkpoint",
    "Int8FaissMemory": "s3cmn.quantization.memory_int8",
    "quantize_memory": "s3cmn.quantization.memory_int8",
    "measure_recall": "s3cmn.quantization.memory_int8",
    "load_for_inference": "s3cmn.quantization.inference",
    "generate_text": "s3cmn.quantization.inference",
    "CheckpointError": "s3cmn.utils.checkpoints",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
