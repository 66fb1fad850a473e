"""quantize_model: 8-bit inference with bitsandbytes LLM.int8, torch dynamic int8, and int8 embeddings.

What becomes 8-bit (``QuantizationReport`` lists every module):
- every ``nn.Linear`` except the kept ones (below), by the chosen backend:
  ``"bnb"``   ``bitsandbytes.nn.Linear8bitLt(has_fp16_weights=False, threshold)``: LLM.int8 (Dettmers et al.
             2022): int8 row-wise weights; input columns with a value above ``threshold`` go through an fp16
             matmul (the outliers), the rest through int8. The standard on CUDA; bitsandbytes >= 0.45 also
             runs it on the CPU in eval mode;
  ``"torch"`` ``torch.ao.quantization.quantize_dynamic`` with ``per_channel_dynamic_qconfig``: int8 weights
             per output channel, the input quantised per tensor at every call, fbgemm / x86 int8 GEMM (CPU);
  ``"weight_only"`` :class:`~s3cmn.quantization.int8.Int8Linear` with the ``weight_only`` kernel: int8 codes per
             output row, float inputs (nothing else is rounded): a few rows (generation) through the C int8
             GEMV, more rows dequantised on the fly. The most accurate here; prefill runs at fp32 speed;
  ``"torchao"`` ``torchao.quantization.quantize_(Int8DynamicActivationInt8WeightConfig())``: the successor
             API (int8 weights per channel, activations per token, ``torch._int_mm``); selectable, not
             ``auto``, because on the CPUs measured it is slower than ``"torch"`` at the same accuracy (README);
             in-memory only (``save_quantized`` refuses it);
- every ``nn.Embedding``: :class:`~s3cmn.quantization.int8.Int8Embedding` (weight-only, per-row scale and
  zero-point), and a head tied to it: :class:`~s3cmn.quantization.int8.Int8Linear` reading the same codes.
Kept in float32: the Linears named in ``keep`` (default :data:`KEEP_FP32`), and everything that is not a
Linear or an Embedding: norms, convolutions, ``A_log`` / ``D``, Hyena's filter bias, LIF thresholds.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from s3cmn.quantization.int8 import HeadKernel, Int8Embedding, Int8Linear, fbgemm_available, quiet_torch_ao

logger = logging.getLogger(__name__)

Backend = Literal["auto", "bnb", "torch", "torchao", "weight_only"]
BACKENDS = ("auto", "bnb", "torch", "torchao", "weight_only")
TORCHAO_INSTALL = "pip install torchao (0.18 was measured with torch 2.13)"
# Linears left in fp32, matched by a component of the module name:
# - "dt_proj": Mamba's Δ projection: its weight is read directly by the scan, and Δ enters exp(Δ·A), which
#   turns a small error into a large one on the state; it has rank dt_rank (8 in the tiny preset);
# - "filter_fn": Hyena's implicit filter MLP (positions -> L filter taps): a few thousand weights whose
#   errors are summed over all L taps of every long convolution.
KEEP_FP32: tuple[str, ...] = ("dt_proj", "filter_fn")
BNB_INSTALL = "pip install 's3cmn[quant]' (bitsandbytes>=0.45)"
_BNB_CAST_WARNING = "MatMul8bitLt: inputs will be cast"


@dataclass
class QuantizationReport:
    """What ``quantize_model`` did: the backend, each quantised module and its kind, the fp32 Linears kept,
    and the fraction of parameters (counted once when tied) now stored in int8."""

    backend: Literal["bnb", "torch", "torchao", "weight_only"]
    threshold: float
    head_kernel: str | None
    modules: dict[str, str] = field(default_factory=dict)  # module name -> "bnb" | "torch_dynamic" | ...
    kept_fp32: list[str] = field(default_factory=list)
    params_total: int = 0
    params_int8: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def int8_fraction(self) -> float:
        return self.params_int8 / self.params_total if self.params_total else 0.0

    def summary(self) -> str:
        kinds = sorted({[p for p in name.split(".") if not p.isdigit()][-1] for name in self.kept_fp32})
        kept = f"{len(self.kept_fp32)} ({', '.join(kinds)})" if self.kept_fp32 else "none"
        return (f"backend={self.backend}: {len(self.modules)} modules int8, {self.int8_fraction:.1%} of "
                f"{self.params_total:,} parameters int8; fp32 Linears kept: {kept}")  # fmt: skip


# --- availability ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_logger(name: str, level: int = logging.ERROR) -> Iterator[None]:
    log = logging.getLogger(name)
    old = log.level
    log.setLevel(level)
    try:
        yield
    finally:
        log.setLevel(old)


class _DropCastWarning(logging.Filter):
    """Drops bitsandbytes' per-call "inputs will be cast from float32 to float16" warning (and nothing else):
    LLM.int8 always quantises from fp16; the cast is the method, not a problem, and it logs on every call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_BNB_CAST_WARNING)


def import_bitsandbytes():
    """``import bitsandbytes`` with its import-time 4-bit kernel warning quietened; ImportError says what to
    install. Also installs the narrow filter of :class:`_DropCastWarning` on its matmul logger."""
    # Its CPU backend logs at import that an optional 4-bit kernel package is missing: irrelevant to int8. Its
    # imports load torch.utils.mkldnn, whose torch.jit.script_method decorators warn of their deprecation.
    with _quiet_logger("bitsandbytes.backends.cpu.ops"), quiet_torch_ao():
        try:
            import bitsandbytes
        except ImportError as err:
            raise ImportError(f"the 'bnb' backend needs bitsandbytes: {BNB_INSTALL}") from err
    matmul_log = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _DropCastWarning) for f in matmul_log.filters):
        matmul_log.addFilter(_DropCastWarning())
    return bitsandbytes


def bnb_unavailable_reason(device: torch.device) -> str | None:
    """None when bitsandbytes' Linear8bitLt can run on ``device``, else why not and what to install."""
    try:
        bitsandbytes = import_bitsandbytes()
    except ImportError as err:
        return str(err)
    if device.type not in getattr(bitsandbytes, "supported_torch_devices", {"cuda"}):
        return f"bitsandbytes {bitsandbytes.__version__} has no kernels for device '{device.type}'"
    return None


def torch_int8_unavailable_reason(device: torch.device) -> str | None:
    """None when torch's dynamic int8 Linear can run on ``device`` (CPU with fbgemm / x86), else why not."""
    if device.type != "cpu":
        return f"torch dynamic int8 runs on the CPU only (the model is on '{device.type}'); use backend='bnb'"
    if not fbgemm_available():
        return (f"this torch build has no fbgemm/x86 int8 engine (engines: "
                f"{torch.backends.quantized.supported_engines}); install a standard x86-64 torch wheel or "
                f"use backend='bnb' ({BNB_INSTALL})")  # fmt: skip
    return None


def import_torchao():
    """``import torchao`` (its optional CUDA kernels log load failures on CPU builds: quietened); ImportError
    says what to install."""
    with _quiet_logger("torchao"), quiet_torch_ao():
        try:
            import torchao.quantization
        except ImportError as err:
            raise ImportError(f"the 'torchao' backend needs torchao: {TORCHAO_INSTALL}") from err
    return torchao


def resolve_backend(backend: Backend, device: torch.device) -> Literal["bnb", "torch", "torchao", "weight_only"]:
    """The backend to use: ``auto`` = bnb on CUDA, torch dynamic int8 on the CPU (its fast int8 GEMM), else
    whichever runs; a backend asked for by name that cannot run raises ImportError / RuntimeError."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "bnb":
        import_bitsandbytes()  # ImportError naming what to install
        reason = bnb_unavailable_reason(device)
        if reason is not None:
            raise RuntimeError(f"backend 'bnb': {reason}")
        return "bnb"
    if backend == "torchao":
        import_torchao()
        return "torchao"
    if backend == "weight_only":
        return "weight_only"
    if backend == "torch":
        reason = torch_int8_unavailable_reason(device)
        if reason is not None:
            raise RuntimeError(f"backend 'torch': {reason}")
        return "torch"
    order: tuple[Literal["bnb", "torch"], ...] = ("bnb", "torch") if device.type == "cuda" else ("torch", "bnb")
    reasons = {}
    for name in order:
        check = bnb_unavailable_reason if name == "bnb" else torch_int8_unavailable_reason
        reasons[name] = check(device)
        if reasons[name] is None:
            logger.info("quantization backend 'auto' on %s: picked '%s'", device, name)
            return name
    raise RuntimeError(f"no 8-bit backend can run on {device}: " + "; ".join(f"{k}: {v}" for k, v in reasons.items()))


# --- conversion -----------------------------------------------------------------------------------------
def _is_kept(name: str, keep: Sequence[str]) -> bool:
    return any(part in keep for part in name.split("."))


def _tied_head(model: nn.Module) -> tuple[str, str] | None:
    """(head name, embedding name) when the output layer shares its weight with an nn.Embedding."""
    if not hasattr(model, "get_output_embeddings"):
        return None
    head = model.get_output_embeddings()
    names = {id(m): n for n, m in model.named_modules()}
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding) and head is not None and getattr(head, "weight", None) is module.weight:
            return names[id(head)], name
    return None


def to_bnb(linear: nn.Linear, threshold: float) -> nn.Module:
    """An eval-mode ``Linear8bitLt`` holding ``linear``'s weights quantised row-wise (bitsandbytes' own
    ``int8_vectorwise_quant``, done by its ``Int8Params`` when moved to the device)."""
    bnb = import_bitsandbytes()
    device = linear.weight.device
    module = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                 has_fp16_weights=False, threshold=threshold)  # fmt: skip
    module.weight = bnb.nn.Int8Params(linear.weight.detach().cpu().clone(), requires_grad=False,
                                      has_fp16_weights=False)  # fmt: skip
    if linear.bias is not None:
        module.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
    return module.to(device).eval()  # .to() quantises: weight.data becomes int8 CB, weight.SCB the row scales


def quantize_model(
    model: nn.Module,
    backend: Backend = "auto",
    threshold: float = 6.0,
    *,
    keep: Sequence[str] = KEEP_FP32,
    head_kernel: HeadKernel = "auto",
    quantize_embeddings: bool = True,
) -> tuple[nn.Module, QuantizationReport]:
    """Quantise ``model`` in place for inference (module docstring) and return it (in eval mode) with a report.

    ``threshold``: LLM.int8's outlier threshold (bnb only). ``keep``: name components of Linears to keep in
    fp32. ``head_kernel``: how a tied head multiplies (``Int8Linear``: "dynamic" fbgemm on CPU, or
    "weight_only"). Raises ImportError / RuntimeError when the named backend cannot run here.
    """
    model.eval()
    device = next(model.parameters()).device
    chosen = resolve_backend(backend, device)
    report = QuantizationReport(chosen, threshold, None)
    report.params_total = sum(p.numel() for p in model.parameters())
    if chosen == "torch":
        report.notes.append("torch.ao.quantization is deprecated upstream in favour of torchao; it still runs "
                            f"in torch {torch.__version__} (warnings silenced)")  # fmt: skip

    # 1. embeddings (weight-only int8) and the head tied to one (weight-only too under that backend: generation
    #    and scoring then round the same way)
    if chosen == "weight_only" and head_kernel == "auto":
        head_kernel = "weight_only"
    tied = _tied_head(model)
    if quantize_embeddings:
        for name, module in list(model.named_modules()):
            if isinstance(module, nn.Embedding):
                model.set_submodule(name, Int8Embedding.from_float(module))
                report.modules[name] = "int8_embedding"
                report.params_int8 += module.weight.numel()
        if tied is not None:
            head_name, embed_name = tied
            head = Int8Linear.tied_to(model.get_submodule(embed_name), head_kernel)
            model.set_submodule(head_name, head)
            report.modules[head_name] = "int8_tied_head"
            report.head_kernel = head.kernel
    # 2. the Linears, by the backend; a tied head stays tied: int8 above, or fp32 with its fp32 embedding
    targets = []
    for name, module in model.named_modules():
        if type(module) is nn.Linear:
            kept = _is_kept(name, keep) or (tied is not None and name == tied[0])
            (report.kept_fp32 if kept else targets).append(name)
    if chosen == "torchao":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        wanted = set(targets)
        quantize_(model, Int8DynamicActivationInt8WeightConfig(), filter_fn=lambda m, fqn: fqn in wanted)
        report.params_int8 += sum(model.get_submodule(n).weight.numel() for n in targets)
        report.modules.update({n: "torchao" for n in targets})
    elif chosen == "weight_only":
        for name in targets:
            linear = model.get_submodule(name)
            model.set_submodule(name, Int8Linear.from_float(linear, kernel="weight_only"))
            report.modules[name] = "int8_weight_only"
            report.params_int8 += linear.weight.numel()
    elif chosen == "bnb":
        for name in targets:
            linear = model.get_submodule(name)
            model.set_submodule(name, to_bnb(linear, threshold))
            report.modules[name] = "bnb"
            report.params_int8 += linear.weight.numel()
    else:
        report.params_int8 += sum(model.get_submodule(n).weight.numel() for n in targets)
        with quiet_torch_ao():
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            quantize_dynamic(model, {n: per_channel_dynamic_qconfig for n in targets}, dtype=torch.qint8,
                             inplace=True)  # fmt: skip
        report.modules.update({n: "torch_dynamic" for n in targets})
    logger.info("quantized: %s", report.summary())
    return model.eval(), report
