"""Quantized checkpoints: ``save_quantized(model, dir)`` / ``load_quantized(dir)``, no pickle, no re-quantisation.

A quantized checkpoint is a folder holding
- ``config.json``: the model's config (as ``save_pretrained`` writes it);
- ``quantization.json``: the manifest: format, version, backend, threshold, and for every quantized module
  its kind and shape (``torch_dynamic``, ``bnb``, ``int8_embedding``, ``int8_tied_head``), the fp32 Linears
  kept, the weights file and its SHA-256, and the memory stores;
- ``model-int8.safetensors``: every tensor, plain: int8 codes + float32 scales (+ int8 zero-points) of the
  quantized modules, float32 for everything else. A torch dynamic Linear's packed fbgemm weights are
  unpacked to codes/scale/zero-point here and re-packed on load (exactly the same codes, so the same outputs);
- ``memory/<layer>/``: each FAISS memory store (its own format, :mod:`s3cmn.memory.persist`), when the model
  has memories;
- the tokenizer files, when one is given.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from s3cmn.quantization.backends import QuantizationReport, import_bitsandbytes
from s3cmn.quantization.int8 import Int8Embedding, Int8Linear, quiet_torch_ao, unpack_dynamic
from s3cmn.utils.checkpoints import QUANTIZED_MANIFEST, CheckpointError, CheckpointFormatError, CorruptCheckpointError

logger = logging.getLogger(__name__)

MANIFEST = QUANTIZED_MANIFEST
WEIGHTS = "model-int8.safetensors"
FORMAT = "s3cmn-int8"
VERSION = 1
MEMORY_DIR = "memory"


# The former name of the error of a quantized checkpoint (public in s3cmn.quantization): every failure raises
# the CheckpointError subclass that names it (CorruptCheckpointError, CheckpointFormatError).
QuantizedCheckpointError = CheckpointError


def is_quantized_checkpoint(directory: str | os.PathLike) -> bool:
    return (Path(directory) / MANIFEST).is_file()


def _dynamic_linear_type() -> type:
    with quiet_torch_ao():
        from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    return DynamicQuantizedLinear


# --- model -> plain tensors -----------------------------------------------------------------------------
def _module_tensors(
    name: str, module: nn.Module, names: dict[int, str]
) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
    """(tensors, spec) of a quantized module, None for any other module; ``names``: id(module) -> name."""
    p = f"{name}." if name else ""
    if isinstance(module, nn.Linear) and type(module.weight).__module__.startswith("torchao"):
        raise CheckpointFormatError(
            f"{name} is quantized by torchao, whose models are in-memory only here: quantize with "
            "backend='torch' (or 'auto') to save a quantized checkpoint"
        )
    if isinstance(module, _dynamic_linear_type()):
        q, scale, zero_point, bias = unpack_dynamic(module._packed_params._packed_params)
        tensors = {f"{p}weight_int8": q, f"{p}scale": scale, f"{p}zero_point": zero_point}
        if bias is not None:
            tensors[f"{p}bias"] = bias
        spec = dict(kind="torch_dynamic", in_features=module.in_features, out_features=module.out_features,
                    bias=bias is not None)  # fmt: skip
        return tensors, spec
    if type(module).__name__ == "Linear8bitLt":
        codes = module.state.CB if module.state.CB is not None else module.weight.data
        scb = module.state.SCB if module.state.SCB is not None else module.weight.SCB
        tensors = {f"{p}weight_int8": codes, f"{p}SCB": scb}
        if module.bias is not None:
            tensors[f"{p}bias"] = module.bias.data
        spec = dict(kind="bnb", in_features=module.in_features, out_features=module.out_features,
                    bias=module.bias is not None, threshold=float(module.state.threshold))  # fmt: skip
        return tensors, spec
    if isinstance(module, Int8Embedding):
        tensors = {f"{p}{k}": v for k, v in module.named_buffers(recurse=False)}
        spec = dict(kind="int8_embedding", num_embeddings=module.num_embeddings,
                    embedding_dim=module.embedding_dim, padding_idx=module.padding_idx)  # fmt: skip
        return tensors, spec
    if isinstance(module, Int8Linear):
        if module._tied is None:  # a weight-only int8 Linear: its own codes (and bias)
            tensors = {f"{p}{k}": v for k, v in module.named_buffers(recurse=False)}
            spec = dict(kind="int8_linear", in_features=module.in_features, out_features=module.out_features,
                        kernel=module.kernel, bias=module.bias is not None)  # fmt: skip
            return tensors, spec
        return {}, dict(kind="int8_tied_head", kernel=module.kernel, tied_to=names[id(module._tied[0])])
    return None


def quantized_state(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, dict[str, Any]]]:
    """Every tensor of ``model`` by name (quantized modules as codes + scales, the rest as in its state dict,
    tied weights once) and the spec of each quantized module."""
    names = {id(m): n for n, m in model.named_modules()}
    tensors: dict[str, Tensor] = {}
    specs: dict[str, dict[str, Any]] = {}
    inside: list[str] = []  # quantized modules: their children (packed params) are theirs
    for name, module in model.named_modules():
        if any(name.startswith(f"{q}.") for q in inside):
            continue
        found = _module_tensors(name, module, names)
        if found is not None:
            tensors.update(found[0])
            specs[name] = found[1]
            inside.append(name)
            continue
        p = f"{name}." if name else ""
        for key, param in module.named_parameters(recurse=False):
            tensors[p + key] = param.detach()
        for key, buf in module.named_buffers(recurse=False):
            if buf is not None and key not in module._non_persistent_buffers_set:
                tensors[p + key] = buf
    seen: dict[int, str] = {}
    for key in list(tensors):  # a tensor shared by two names (fp32 tied weights) is stored once
        ptr = tensors[key].data_ptr()
        if ptr in seen and tensors[key].numel():
            del tensors[key]
        seen.setdefault(ptr, key)
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, specs


def quantized_nbytes(model: nn.Module) -> int:
    """Bytes of every tensor a quantized checkpoint of ``model`` stores (the model's size on disk, roughly)."""
    return sum(t.numel() * t.element_size() for t in quantized_state(model)[0].values())


def save_quantized(
    model: nn.Module, directory: str | os.PathLike, report: QuantizationReport | None = None, tokenizer: Any = None
) -> None:
    """Write ``model`` (quantized by ``quantize_model``) to ``directory`` (module docstring)."""
    from safetensors.torch import save_file

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    tensors, specs = quantized_state(model)
    if not specs:
        raise ValueError("save_quantized: the model has no quantized module; call quantize_model first")
    save_file(tensors, str(root / WEIGHTS), metadata={"format": "pt"})
    digest = hashlib.sha256((root / WEIGHTS).read_bytes()).hexdigest()
    from s3cmn.modeling.lm import save_config

    save_config(model.config, root)  # without runtime-only attributes
    bank = getattr(model, "memory_bank", None)
    stores = bank.items() if bank is not None else []
    if bank is not None:
        bank.save(root / MEMORY_DIR)
    backends = {s["kind"] for s in specs.values()} & {"torch_dynamic", "bnb", "int8_linear"}
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "backend": report.backend if report else ("bnb" if "bnb" in backends else "weight_only" if "int8_linear"
                                                  in backends else "torch"),
        "modules": specs,
        "kept_fp32": report.kept_fp32 if report else [],
        "params_total": report.params_total if report else None,
        "params_int8": report.params_int8 if report else None,
        "weights": {"name": WEIGHTS, "sha256": digest},
        "memory": {
            "layers": [str(layer) for layer, _ in stores],
            "int8": [type(memory).__name__ == "Int8FaissMemory" for _, memory in stores],
        },
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(root))
    logger.info("saved the quantized model (%d modules int8) to %s", len(specs), root)


# --- plain tensors -> model -----------------------------------------------------------------------------
def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise CheckpointFormatError(f"{path} not found: {root} is not a quantized checkpoint (save_quantized)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptCheckpointError(f"{path} is corrupt (not JSON: {err}); save the model again") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise CheckpointFormatError(f"{path} is not a {FORMAT} v{VERSION} manifest; save the model again")
    missing = [k for k in ("backend", "modules", "kept_fp32", "weights", "memory") if k not in manifest]
    if missing:
        raise CorruptCheckpointError(f"{path} lacks {missing}; save the model again")
    return manifest


def _build(spec: dict[str, Any], t: dict[str, Tensor], p: str, model: nn.Module, device: torch.device) -> nn.Module:
    """The quantized module described by ``spec`` holding the saved codes ``t`` (keys prefixed by ``p``), for
    ``device`` (the fbgemm kernels are CPU-only: a tied head elsewhere dequantises on the fly)."""
    kind = spec["kind"]
    if kind == "int8_embedding":
        module = Int8Embedding(spec["num_embeddings"], spec["embedding_dim"], spec["padding_idx"])
        for key in ("weight_int8", "scale", "zero_point"):
            getattr(module, key).copy_(t[p + key])
        return module
    if kind == "int8_tied_head":
        kernel = spec["kernel"] if device.type == "cpu" else "weight_only"
        return Int8Linear.tied_to(model.get_submodule(spec["tied_to"]), kernel)
    if kind == "int8_linear":
        kernel = spec["kernel"] if device.type == "cpu" else "weight_only"
        module = Int8Linear(spec["in_features"], spec["out_features"], kernel, bias=spec["bias"])
        for key in ("weight_int8", "scale", "zero_point", *(("bias",) if spec["bias"] else ())):
            getattr(module, key).copy_(t[p + key])
        return module
    if kind == "torch_dynamic":
        if device.type != "cpu":
            raise CheckpointFormatError(f"a torch dynamic int8 checkpoint runs on the CPU only, not {device}")
        bias = t.get(p + "bias")
        with quiet_torch_ao():
            module = _dynamic_linear_type()(spec["in_features"], spec["out_features"], bias_=spec["bias"])
            qweight = torch._make_per_channel_quantized_tensor(
                t[p + "weight_int8"], t[p + "scale"].double(), t[p + "zero_point"].long(), 0
            )
            module.set_weight_bias(qweight, bias)
        return module
    if kind == "bnb":
        bnb = import_bitsandbytes()
        module = bnb.nn.Linear8bitLt(spec["in_features"], spec["out_features"], bias=spec["bias"],
                                     has_fp16_weights=False, threshold=spec["threshold"])  # fmt: skip
        codes = t[p + "weight_int8"]
        module.weight = bnb.nn.Int8Params(codes, requires_grad=False, has_fp16_weights=False, CB=codes,
                                          SCB=t[p + "SCB"])  # fmt: skip
        if spec["bias"]:
            module.bias = nn.Parameter(t[p + "bias"], requires_grad=False)
        return module
    raise CorruptCheckpointError(f"unknown quantized module kind {kind!r} in {MANIFEST}")


def load_quantized(
    directory: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[nn.Module, QuantizationReport]:
    """The model saved by :func:`save_quantized`, in eval mode on ``device``, and its report; the codes are
    loaded as saved (no re-quantisation). A CheckpointError names a missing / corrupt / mismatched file."""
    from safetensors import SafetensorError
    from safetensors.torch import load as safetensors_load
    from transformers import AutoConfig, AutoModelForCausalLM

    import s3cmn  # noqa: F401  (registers S3CMNConfig / S3CMNForCausalLM with the Auto classes)

    root, device = Path(directory), torch.device(device)
    manifest = _read_manifest(root)
    weights = root / manifest["weights"]["name"]
    if not weights.is_file():
        raise CorruptCheckpointError(f"{weights} is missing: the checkpoint in {root} is incomplete")
    data = weights.read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest["weights"]["sha256"]:
        raise CorruptCheckpointError(f"{weights} is corrupt (its SHA-256 differs from {MANIFEST})")
    try:
        tensors = safetensors_load(data)
        config = AutoConfig.from_pretrained(str(root))
    except (SafetensorError, OSError, ValueError) as err:
        raise CorruptCheckpointError(f"cannot read the checkpoint in {root}: {err}") from err

    model = AutoModelForCausalLM.from_config(config).eval()
    specs: dict[str, dict[str, Any]] = manifest["modules"]
    # embeddings first: a tied head refers to its embedding
    for name in sorted(specs, key=lambda n: specs[n]["kind"] != "int8_embedding"):
        model.set_submodule(name, _build(specs[name], tensors, f"{name}." if name else "", model, device))
    expected, _ = quantized_state(model)
    if set(expected) != set(tensors):
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise CorruptCheckpointError(f"{weights} does not match config.json: missing {missing[:5]}, "
                                       f"unexpected {extra[:5]}")  # fmt: skip
    quantized_prefixes = tuple(f"{n}." for n in specs)
    plain = {k: v for k, v in tensors.items() if not k.startswith(quantized_prefixes)}
    # Copied tensor by tensor: load_state_dict would hand the quantized modules keys they do not expect.
    targets = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    with torch.no_grad():
        for key, value in plain.items():
            targets[key].copy_(value)
    _load_memories(model, root, manifest)
    report = QuantizationReport(
        manifest["backend"],
        0.0,
        None,
        {n: s["kind"] for n, s in specs.items()},
        manifest["kept_fp32"],
        manifest["params_total"] or 0,
        manifest["params_int8"] or 0,
    )
    heads = [s for s in specs.values() if s["kind"] == "int8_tied_head"]
    report.head_kernel = heads[0]["kernel"] if heads else None
    logger.info("loaded a %s-quantized model (%d modules int8) from %s", manifest["backend"], len(specs), root)
    return model.to(device).eval(), report


def _load_memories(model: nn.Module, root: Path, manifest: dict[str, Any]) -> None:
    from s3cmn.memory import FaissMemory
    from s3cmn.quantization.memory_int8 import Int8FaissMemory

    layers, int8 = manifest["memory"]["layers"], manifest["memory"]["int8"]
    for layer, is_int8 in zip(layers, int8, strict=True):
        cls = Int8FaissMemory if is_int8 else FaissMemory
        model.memory_bank[int(layer)] = cls.load(str(root / MEMORY_DIR / layer))
