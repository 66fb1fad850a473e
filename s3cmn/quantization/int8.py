"""Weight-only int8 with a per-row (per-output-channel) scale and zero-point: Int8Embedding and Int8Linear.

Each row r of a weight W (R, C) is stored as int8 codes q (R, C), a scale s_r and a zero-point z_r:

    lo_r = min(min_c W[r, c], 0)     hi_r = max(max_c W[r, c], 0)      (0 stays exactly representable)
    s_r  = (hi_r - lo_r) / 255       z_r = clamp(round(-128 - lo_r / s_r), -128, 127)
    q    = clamp(round(W / s_r) + z_r, -128, 127)          W ≈ (q - z_r) * s_r,   |error| <= s_r / 2

An embedding row is the token's vector and the same row is the output channel of the tied LM head, so the
head reads the embedding's codes (``Int8Linear.tied``): one int8 copy of the table on disk and in the
state dict. Int8Linear has two kernels:
- ``"weight_only"``: dequantise on the fly, then an fp32 matmul (any device; :func:`int8_linear_ref`);
- ``"dynamic"``: fbgemm's dynamic int8 matmul (CPU): the input is also quantised, per tensor, at each call;
  its packed copy of the codes is built lazily (not in the state dict). On a 256 x 30522 head at batch 1 it
  is ~20x faster than fp32 here, where dequantising on the fly is ~2x slower than fp32.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3cmn.ops.int8_gemv import int8_gemv, unpack_linear_dynamic

DECODE_ROWS = 8  # inputs of at most this many rows (generation) take the weight-only int8 GEMV

HeadKernel = Literal["auto", "weight_only", "dynamic"]


def quantize_rows(weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """W (R, C) float -> codes (R, C) int8, scale (R,) float32, zero_point (R,) int8 (module docstring)."""
    w = weight.detach().float()
    lo = w.amin(dim=1).clamp(max=0.0)  # (R,)
    hi = w.amax(dim=1).clamp(min=0.0)  # (R,)
    scale = (hi - lo) / 255.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row: any scale is exact
    zero_point = torch.round(-128.0 - lo / scale).clamp(-128, 127)  # (R,)
    q = torch.clamp(torch.round(w / scale[:, None]) + zero_point[:, None], -128, 127)  # (R, C)
    return q.to(torch.int8), scale, zero_point.to(torch.int8)


def dequantize_rows(q: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
    """codes (R, C) int8, scale (R,), zero_point (R,) -> (q - z) * s, (R, C) float32."""
    return (q.float() - zero_point.float()[:, None]) * scale[:, None]


def int8_linear_ref(x: Tensor, q: Tensor, scale: Tensor, zero_point: Tensor, bias: Tensor | None = None) -> Tensor:
    """Readable weight-only int8 linear: x (..., C) -> x @ dequantize(q)^T + bias, (..., R)."""
    return F.linear(x, dequantize_rows(q, scale, zero_point).to(x.dtype), bias)


@contextlib.contextmanager
def quiet_torch_ao() -> Iterator[None]:
    """Silence the deprecation warnings of torch.ao.quantization, of quantized tensor creation and of
    torch.jit.script_method (see :mod:`s3cmn.quantization`), inside this block only."""
    with warnings.catch_warnings():
        for message in (r"torch\.ao\.quantization is deprecated", r"`torch\.jit\.script_method` is deprecated"):
            warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*", category=UserWarning)
        yield


def fbgemm_available() -> bool:
    """True when torch has a CPU int8 GEMM engine (fbgemm / x86) for dynamic quantised linears."""
    return any(e in torch.backends.quantized.supported_engines for e in ("fbgemm", "x86"))


def pack_dynamic(q: Tensor, scale: Tensor, zero_point: Tensor, bias: Tensor | None) -> torch.ScriptObject:
    """fbgemm packed weights (per-channel affine qint8) for ``torch.ops.quantized.linear_dynamic``."""
    with quiet_torch_ao():
        qweight = torch._make_per_channel_quantized_tensor(q.cpu(), scale.double().cpu(), zero_point.long().cpu(), 0)
        return torch.ops.quantized.linear_prepack(qweight, None if bias is None else bias.detach().float().cpu())


def unpack_dynamic(packed: torch.ScriptObject) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Inverse of :func:`pack_dynamic` (any qint8 packed linear): codes, scale, zero_point (int8), bias.

    A per-tensor quantised weight gives a scale and zero-point repeated for every row."""
    q, scale, zero_point, bias = unpack_linear_dynamic(packed)
    return q, scale, zero_point.to(torch.int8), bias


class Int8Embedding(nn.Module):
    """An nn.Embedding stored as per-row int8 (module docstring): ids (...) -> vectors (..., E) float32."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.register_buffer("weight_int8", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(num_embeddings))
        self.register_buffer("zero_point", torch.zeros(num_embeddings, dtype=torch.int8))

    @classmethod
    def from_float(cls, embedding: nn.Embedding) -> Int8Embedding:
        module = cls(embedding.num_embeddings, embedding.embedding_dim, embedding.padding_idx)
        q, scale, zero_point = quantize_rows(embedding.weight)
        module.weight_int8.copy_(q)
        module.scale.copy_(scale)
        module.zero_point.copy_(zero_point)
        return module.to(embedding.weight.device)

    def dequantize(self) -> Tensor:
        """The whole table (V, E) float32."""
        return dequantize_rows(self.weight_int8, self.scale, self.zero_point)

    def forward(self, input_ids: Tensor) -> Tensor:
        q = self.weight_int8[input_ids].float()  # (..., E)
        return (q - self.zero_point[input_ids, None].float()) * self.scale[input_ids, None]  # (..., E)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 per-row scale+zero_point"


class Int8Linear(nn.Module):
    """A linear layer x (..., C) -> (..., R) whose weight is an Int8Embedding's codes (a tied LM head) or its own
    int8 codes, with an optional float32 bias; ``kernel`` chooses weight-only dequantisation or fbgemm dynamic
    int8 (module doc). Inputs of at most ``DECODE_ROWS`` rows on the CPU take the weight-only int8 GEMV
    (:mod:`s3cmn.ops.int8_gemv`) with either kernel."""

    def __init__(self, in_features: int, out_features: int, kernel: HeadKernel = "auto",
                 tied: Int8Embedding | None = None, device: torch.device | None = None,
                 bias: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        if kernel == "auto":  # fbgemm is a CPU kernel; the choice shows in repr
            on_cpu = device is None or torch.device(device).type == "cpu"
            kernel = "dynamic" if on_cpu and fbgemm_available() else "weight_only"
        if kernel == "dynamic" and not fbgemm_available():
            raise RuntimeError(
                "Int8Linear kernel 'dynamic' needs torch's fbgemm/x86 int8 engine (CPU); "
                f"this torch has {torch.backends.quantized.supported_engines}: use kernel='weight_only'"
            )
        self.kernel = kernel
        # A tied head holds a reference, not a submodule: its codes stay in the embedding's state dict only.
        self._tied = [tied] if tied is not None else None
        if tied is None:
            self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
            self.register_buffer("scale", torch.ones(out_features))
            self.register_buffer("zero_point", torch.zeros(out_features, dtype=torch.int8))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._packed: tuple[tuple, torch.ScriptObject] | None = None

    @classmethod
    def tied_to(cls, embedding: Int8Embedding, kernel: HeadKernel = "auto") -> Int8Linear:
        return cls(embedding.embedding_dim, embedding.num_embeddings, kernel, embedding, embedding.weight_int8.device)

    @classmethod
    def from_float(cls, linear: nn.Linear, kernel: HeadKernel = "auto") -> Int8Linear:
        """The int8 twin of ``linear`` (per-row codes; its bias kept in float32)."""
        module = cls(linear.in_features, linear.out_features, kernel, device=linear.weight.device,
                     bias=linear.bias is not None)  # fmt: skip
        q, scale, zero_point = quantize_rows(linear.weight)
        module.weight_int8.copy_(q)
        module.scale.copy_(scale)
        module.zero_point.copy_(zero_point)
        if linear.bias is not None:
            module.bias.copy_(linear.bias.detach())
        return module.to(linear.weight.device)

    def codes(self) -> tuple[Tensor, Tensor, Tensor]:
        """(codes (R, C) int8, scale (R,), zero_point (R,)), the tied embedding's when tied."""
        src = self._tied[0] if self._tied is not None else self
        return src.weight_int8, src.scale, src.zero_point

    def forward(self, x: Tensor) -> Tensor:
        q, scale, zero_point = self.codes()
        bias = getattr(self, "bias", None)
        if self.kernel == "weight_only":
            if x.device.type == "cpu" and x.numel() <= DECODE_ROWS * self.in_features:
                return int8_gemv(x, q, scale, zero_point, bias).to(x.dtype)  # decoding: the codes read once
            return int8_linear_ref(x, q, scale, zero_point, None if bias is None else bias.to(x.dtype))
        if x.device.type != "cpu":
            raise RuntimeError(f"Int8Linear kernel 'dynamic' (fbgemm) runs on the CPU, got an input on {x.device}; "
                               "build it with kernel='weight_only' (or 'auto' on that device)")  # fmt: skip
        if x.numel() <= DECODE_ROWS * self.in_features:  # decoding: the weight-only GEMV reads the codes once
            return int8_gemv(x, q, scale, zero_point, bias).to(x.dtype)
        # re-pack when the codes were replaced or changed in place (load_state_dict, copy_, .to())
        key = tuple((t.data_ptr(), t._version) for t in (q, scale, zero_point))
        if self._packed is None or self._packed[0] != key:
            self._packed = (key, pack_dynamic(q, scale, zero_point, bias))
        y = torch.ops.quantized.linear_dynamic(x.float().reshape(-1, x.shape[-1]), self._packed[1], True)
        return y.view(*x.shape[:-1], self.out_features).to(x.dtype)  # (..., R)

    def forward_ref(self, x: Tensor) -> Tensor:
        """The weight-only reference of :meth:`forward` (dequantise, fp32 matmul)."""
        return int8_linear_ref(x, *self.codes(), getattr(self, "bias", None))

    def extra_repr(self) -> str:
        tied = ", tied to the int8 embedding" if self._tied is not None else ""
        bias = ", bias" if getattr(self, "bias", None) is not None else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}{bias}{tied}"
