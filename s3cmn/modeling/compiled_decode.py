"""A compiled one-token step of the whole S³CMN language model: ``torch.compile`` of a functional decode step.

At batch 1 the eager decode path (``S3CMNBlock._decode``, the C state kernels of :mod:`s3cmn.ops.decode_step`)
spends most of a token in per-op dispatch: about a hundred small ops and C calls, each a few µs, around GEMVs
that take a few µs each. This module writes the whole step, embedding to logits, as one function of plain
tensors:

- the weights as a flat dict of *decode tensors*, derived once per weights version (transposed Linear weights,
  Hyena's reversed filter taps, Mamba's ``A = −exp(A_log)``, the LIF β), so the graph holds no filter MLP and
  no per-token parameter work;
- the recurrent state as the same nested dicts ``S3CMNCache`` holds, returned as new tensors (the inputs are
  never modified, as in the eager path);

and hands it to ``torch.compile(fullgraph=True, dynamic=False)``: Inductor fuses the element-wise chains and
the state updates into C++ loops, and (``gemv="fused"``, the default) the GEMVs too: one upcast-multiply-sum
loop over each matrix's rows (``gemv="blas"``: x @ Wᵀ through the BLAS instead); one Python call per token.

The eager decode path stays the readable reference (``S3CMNForCausalLM.forward`` with a cache, T == 1); the
compiled step must equal it within fp32 rounding (tests/modeling/test_compiled_decode.py). What it supports:
``block_type`` "s3cmn" blocks of Mamba, Hyena, LIF and MLP sub-layers, fp32 weights, memory off, no position
embedding, and memory-read sub-layers only while the memory is not read (their delta is then 0);
:func:`unsupported` says why not otherwise, and the model then keeps the eager path.

Compiling costs tens of seconds on the first call of a (batch, model) shape, once per process (Inductor's
on-disk cache makes later processes faster): it pays for long generations, not for a few tokens. So it is
opt-in: ``model.compile_decode()`` (``s3cmn-generate --compile``, ``bench_core``'s compiled rows).

``compile_decode(weights="bf16" | "fp16")`` stores the weight matrices at half the bytes (the vectors and all
arithmetic stay fp32): a token reads every weight once, so where the fp32 weights do not fit the cache this
is up to twice as fast, on any x86 CPU (the upcast is a shift or F16C, not bf16 arithmetic). Its reference is
the eager model with those matrices rounded (:func:`rounded_weights`). ``weights="int8"`` stores a quarter of
the bytes: each row as int8 codes and one fp32 scale (symmetric per row, :func:`int8_rows`), upcast and scaled
in the same loop, again fp32 arithmetic on any CPU; its reference is the eager model with each matrix replaced
by codes x scale.
"""

from __future__ import annotations

import logging
import math
import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3cmn.modeling.decode import derived, module_tensors

__all__ = ["GEMVS", "INDUCTOR_OPTIONS", "WEIGHT_DTYPES", "CompiledDecoder", "decode_tensors", "decode_step",
           "int8_rows", "matrix_layers", "rounded_weights", "step_linears", "unsupported"]

logger = logging.getLogger(__name__)

SUPPORTED = ("mamba", "hyena", "lif", "mlp")  # the block's mixer kinds (s3cmn.modeling.block.MIXERS)
SKIPPED = ("memory",)  # read only when the memory is: the compiled step runs when it is not (its delta is 0)
# how the step stores its weight matrices (every Linear weight and the vocabulary table); vectors stay fp32.
# "bf16" / "fp16": half the bytes of fp32, read by a fused upcast-multiply-sum (arithmetic in fp32), so the
# step needs no native bf16 arithmetic: generation reads every weight once per token, and half the bytes is
# what makes it faster where the weights do not fit the cache.
# "int8": a quarter of the bytes: each row's codes and one fp32 scale (symmetric, the row's largest |w| / 127),
# upcast and multiplied in the same loop (:func:`int8_rows`).
WEIGHT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8}
# how the step multiplies by them: "blas", x @ Wᵀ through the BLAS (fp32 only); "fused", Inductor's loop of
# upcast-multiply-sum over W's rows, fused with the rest of the step. "auto" is "fused": with INDUCTOR_OPTIONS
# it was faster than the BLAS on the AVX2-only AMD EPYC for fp32 weights too (benchmarks/bench_core.py's
# "compiled fp32" (BLAS) and "compiled fp32 fused" rows), as it reads each weight once with no per-call dispatch.
GEMVS = ("auto", "blas", "fused")
# Inductor's options for the step. cpp_wrapper: the graph's calls made from C++, not Python.
# realize_opcount_threshold 0: every intermediate vector is written once before it is read. Otherwise
# Inductor inlines the pointwise chain that makes a GEMV's input (embedding row, residual adds, LayerNorm)
# into the GEMV's loop over rows: the chain is recomputed for every output row, ~10 ops per weight instead of
# one multiply-add (seen in the generated code, TORCH_LOGS=output_code). Measured on the AVX2 EPYC, same run:
# the fused step 15-27% faster per token.
INDUCTOR_OPTIONS = {"cpp_wrapper": True, "realize_opcount_threshold": 0}


def unsupported(model: nn.Module) -> str:
    """Why ``model`` (an S3CMNForCausalLM) cannot take the compiled step ('' when it can)."""
    cfg = model.config
    if cfg.block_type != "s3cmn":
        return f"block_type {cfg.block_type!r} (the compiled step covers 's3cmn' blocks)"
    if cfg.position_embedding != "none":
        return f"position_embedding {cfg.position_embedding!r} (the compiled step covers 'none')"
    for block in model.model.layers:
        for sub in block.sublayers:
            if sub.kind not in SUPPORTED + SKIPPED:
                return f"sub-layer {sub.kind!r} (the compiled step covers {', '.join(SUPPORTED)})"
    if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in model.parameters()):
        return "weights that are not float32 on the CPU"
    if any("quant" in type(m).__module__ or (isinstance(m, (nn.Linear, nn.Embedding)) and type(m) not in
           (nn.Linear, nn.Embedding)) for m in model.modules()):
        return "quantised or wrapped layers (int8, LoRA): the eager path runs their own kernels"
    return ""


# --- the decode tensors --------------------------------------------------------------------------------
def int8_rows(weight: Tensor) -> tuple[Tensor, Tensor]:
    """weight (R, C) float -> (codes (R, C) int8 in [-127, 127], scale (R,) fp32): weight ≈ codes · scale, each
    row scaled by its own largest magnitude / 127 (an all-zero row by 1)."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8), scale


def _rows(out: dict[str, Tensor], name: str, weight: Tensor, dtype: torch.dtype) -> None:
    """``name.rows``: (out, in), each output sums one contiguous row, in ``dtype``; int8 adds ``name.qscale``."""
    if dtype == torch.int8:
        out[name + ".rows"], out[name + ".qscale"] = int8_rows(weight)
    else:
        out[name + ".rows"] = weight.detach().to(dtype)


def _linear(out: dict[str, Tensor], name: str, layer: nn.Linear, dtype: torch.dtype, blas: bool) -> None:
    if blas:
        out[name + ".wt"] = layer.weight.t().contiguous()  # (in, out): the BLAS GEMV streams it with unit stride
    else:
        _rows(out, name, layer.weight, dtype)
    if layer.bias is not None:
        out[name + ".b"] = layer.bias.detach()


LINEARS = {"mamba": ("in_proj", "x_proj", "dt_proj", "out_proj"), "hyena": ("in_proj", "out_proj"),
           "lif": ("in_proj", "out_proj"), "mlp": ("fc", "proj")}  # the Linear layers of each sub-layer's step


def step_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The Linear layers the step multiplies by, by decode-tensor name (not the Hyena filter MLP: its taps are
    computed once, in fp32)."""
    out = {name: getattr(model.model, name) for name in ("in_proj", "out_proj")  # embedding <-> hidden width
           if getattr(model.model, name) is not None}
    for i, block in enumerate(model.model.layers):
        for sub in block.sublayers:
            for name in LINEARS.get(sub.kind, ()):
                out[f"{i}.{sub.slot}.{name}"] = getattr(getattr(block, sub.slot), name)
    return out


def matrix_layers(model: nn.Module) -> list[nn.Module]:
    """Every layer whose weight matrix the step reads: :func:`step_linears`, the head and the embedding."""
    return [*step_linears(model).values(), model.lm_head, model.model.embed_tokens]


def _build(model: nn.Module, dtype: torch.dtype = torch.float32, blas: bool = True) -> dict[str, Tensor]:
    """The decode tensors; ``blas``: the matrices transposed for ``x @ wt`` (fp32 only), else as (out, in) rows
    for the fused GEMV, in ``dtype``."""
    head = model.lm_head.weight
    if blas:
        out: dict[str, Tensor] = {"head.wt": head.t().contiguous()}  # (E, V)
    else:
        out = {}
        _rows(out, "head", head, dtype)  # (V, E)
    if head is not model.model.embed_tokens.weight:  # tied: the step reads the head's columns (rows)
        if blas:
            out["embed"] = model.model.embed_tokens.weight.detach()
        else:
            _rows(out, "embed", model.model.embed_tokens.weight, dtype)
    norm = model.model.norm
    out["norm.w"], out["norm.b"] = norm.weight.detach(), norm.bias.detach()
    for name, layer in step_linears(model).items():
        _linear(out, name, layer, dtype, blas)
    for i, block in enumerate(model.model.layers):
        for sub in block.sublayers:
            if sub.kind in SKIPPED:
                continue
            p, mixer, ln = f"{i}.{sub.slot}", getattr(block, sub.slot), getattr(block, sub.norm)
            out[p + ".ln.w"], out[p + ".ln.b"] = ln.weight.detach(), ln.bias.detach()
            if block.layer_scale is not None:
                out[p + ".scale"] = block.layer_scale[sub.slot].detach()
            if sub.kind == "mamba":
                out[p + ".conv.w"] = mixer.conv1d.weight[:, 0].detach()  # (E, K)
                out[p + ".conv.b"] = mixer.conv1d.bias.detach()
                out[p + ".A"] = -torch.exp(mixer.A_log.float())  # (E, N)
                out[p + ".D"] = mixer.D.detach()
            elif sub.kind == "hyena":
                out[p + ".short.w"] = mixer.short_filter.weight[:, 0].detach()  # (C, K)
                out[p + ".short.b"] = mixer.short_filter.bias.detach()
                out[p + ".taps_rev"] = mixer.filter_taps().flip(-1).contiguous()  # (N-1, D, L)
                out[p + ".skip"] = mixer.filter_fn.bias.view(mixer.order - 1, mixer.d_model).detach()
            elif sub.kind == "lif":
                out[p + ".beta"] = mixer.decay().detach()
                out[p + ".threshold"] = mixer.threshold.detach()
    return out


Layout = dict[str, tuple[int, int, tuple[int, ...]]]  # name -> (buffer 0 flat / 1 matrices, offset, shape)


class DecodeTensors:
    """The decode tensors of a model packed into two flat buffers, ``flat`` (fp32) and ``matrices`` (the rows of
    the fused GEMV's matrices, ``*.rows``, in the weights' width; empty for the BLAS GEMV), and the static
    ``layout`` that views them out: the compiled step guards two tensors, not ~150."""

    def __init__(self, tensors: dict[str, Tensor], dtype: torch.dtype = torch.float32) -> None:
        buffers: tuple[list[Tensor], list[Tensor]] = ([], [])
        self.layout: Layout = {}
        for name, t in tensors.items():
            which = int(name.endswith(".rows"))  # the matrices of the fused GEMV
            self.layout[name] = (which, sum(x.numel() for x in buffers[which]), tuple(t.shape))
            buffers[which].append(t.reshape(-1))
        self.flat = torch.cat(buffers[0])  # unsupported() refuses weights that are not fp32
        self.matrices = torch.cat(buffers[1]) if buffers[1] else torch.empty(0, dtype=dtype)


def unpack(flat: Tensor, matrices: Tensor, layout: Layout) -> dict[str, Tensor]:
    """name -> a view of ``flat`` or ``matrices`` (traced: views of two graph inputs)."""
    buffers = (flat, matrices)
    return {name: buffers[which][start : start + math.prod(shape)].view(shape)
            for name, (which, start, shape) in layout.items()}


def decode_tensors(model: nn.Module, weights: str = "fp32", gemv: str = "blas") -> DecodeTensors:
    """The decode tensors of ``model`` (packed, the matrices in ``weights``, laid out for ``gemv``), rebuilt
    only when a weight changes (``decode.derived``)."""
    if gemv == "blas" and weights != "fp32":
        raise ValueError(f"gemv='blas' multiplies fp32 matrices: {weights} weights take gemv='fused'")
    dtype = WEIGHT_DTYPES[weights]
    return derived(model, f"compiled_decode_tensors.{weights}.{gemv}", module_tensors(model),
                   lambda: DecodeTensors(_build(model, dtype, gemv == "blas"), dtype))


def rounded_weights(model: nn.Module, weights: str) -> None:
    """Round the weight matrices the step reads (:func:`step_linears`, the vocabulary tables) to ``weights`` and
    back to fp32, in place: the eager reference of the compiled step with ``weights`` (the same values)."""
    dtype = WEIGHT_DTYPES[weights]
    with torch.no_grad():
        for layer in matrix_layers(model):
            if dtype == torch.int8:
                codes, scale = int8_rows(layer.weight)
                layer.weight.copy_(codes.float() * scale[:, None])
            else:
                layer.weight.copy_(layer.weight.to(dtype).float())


# --- the functional step -------------------------------------------------------------------------------
def _gemv(w: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    """x (B, in) -> (B, out): x @ ``name.wt`` (fp32, the BLAS), or the upcast-multiply-sum of ``name.rows``
    (lower-precision weights: one fused loop that reads each weight once, never an fp32 copy of the matrix)."""
    wt = w.get(name + ".wt")
    if wt is not None:
        return x @ wt
    y = (x[:, None, :] * w[name + ".rows"].float()).sum(-1)
    scale = w.get(name + ".qscale")  # int8 rows: one scale per output
    return y if scale is None else y * scale


def _row_lookup(w: dict[str, Tensor], name: str, ids: Tensor) -> Tensor:
    """ids (B,) -> the fp32 rows (B, D) of the fused layout's matrix ``name`` (int8: times their scales)."""
    x = w[name + ".rows"][ids].float()
    scale = w.get(name + ".qscale")
    return x if scale is None else x * scale[ids][:, None]


def _has(w: dict[str, Tensor], name: str) -> bool:
    """Whether the step has the Linear ``name`` (in either layout)."""
    return name + ".wt" in w or name + ".rows" in w


def _in_features(w: dict[str, Tensor], name: str) -> int:
    return w[name + ".wt"].shape[0] if name + ".wt" in w else w[name + ".rows"].shape[1]


def _lin(w: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    y = _gemv(w, name, x)
    bias = w.get(name + ".b")
    return y if bias is None else y + bias


def _fir(state: Tensor, x: Tensor, taps: Tensor) -> tuple[Tensor, Tensor]:
    """state (B, C, K-1), x (B, C), taps (C, K) -> (Σ_j [state, x]_j·taps_j (B, C), the next state (B, C, K-1)).

    ``window_step_ref`` without the (B, C, K) window: the kept inputs and the new one are read where they are,
    so the compiled step copies each state once (into the next state), not twice."""
    y = (state * taps[:, :-1]).sum(-1) + x * taps[:, -1]
    return y, torch.cat([state[..., 1:], x[..., None]], dim=-1)


def _mamba(w: dict[str, Tensor], p: str, h: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """Mamba.step_ref's numbered steps, from the decode tensors."""
    E = w[p + ".D"].shape[0]
    xz = _lin(w, p + ".in_proj", h)  # (B, 2E)
    xs, z = xz[:, :E], xz[:, E:]
    xs, conv = _fir(state["conv"], xs, w[p + ".conv.w"])
    xs = F.silu(xs + w[p + ".conv.b"])  # (B, E)
    rank, n = _in_features(w, p + ".dt_proj"), w[p + ".A"].shape[1]
    dt, Bm, Cm = torch.split(_lin(w, p + ".x_proj", xs), [rank, n, n], dim=-1)
    delta = F.softplus(_lin(w, p + ".dt_proj", dt))  # (B, E)
    hs = torch.exp(delta[..., None] * w[p + ".A"]) * state["ssm"] + (delta * xs)[..., None] * Bm[:, None]  # (B, E, N)
    y = ((hs * Cm[:, None]).sum(-1) + w[p + ".D"] * xs) * F.silu(z)  # (B, E)
    return _lin(w, p + ".out_proj", y), {"conv": conv, "ssm": hs}


def _hyena(w: dict[str, Tensor], p: str, h: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """Hyena.step_ref's numbered steps, from the decode tensors."""
    taps = w[p + ".taps_rev"]  # (N-1, D, L)
    D = taps.shape[1]
    uc, short = _fir(state["short_conv"], _lin(w, p + ".in_proj", h), w[p + ".short.w"])  # (B, (N+1)D)
    *xs, v = (uc + w[p + ".short.b"]).split(D, dim=1)
    history = []
    for o, x_i in enumerate(reversed(xs[1:])):
        v = v * x_i
        y_o, window = _fir(state["long_conv"][:, o], v, taps[o])
        history.append(window)
        v = y_o + v * w[p + ".skip"][o]
    y = _lin(w, p + ".out_proj", v * xs[0])
    return y, {"short_conv": short, "long_conv": torch.stack(history, dim=1)}


def _spiking(w: dict[str, Tensor], p: str, h: Tensor, state: dict[str, Tensor], steps: int,
             zero_reset: bool) -> tuple[Tensor, dict[str, Tensor], tuple[Tensor, Tensor, Tensor]]:
    """SpikingLayer.step_ref (lif_step_stats_ref's micro-steps), from the decode tensors; with the statistics."""
    current = _lin(w, p + ".in_proj", h)  # (B, N)
    beta, threshold = w[p + ".beta"], w[p + ".threshold"]
    v, fired_sum, trace = state["v"], torch.zeros_like(current), []
    for _ in range(steps):
        u = beta * v + current
        fired = u >= threshold
        v = torch.where(fired, torch.zeros_like(u) if zero_reset else u - threshold, u)
        fired_sum = fired_sum + fired
        trace.append(v)
    std, mean = torch.std_mean(torch.stack(trace), correction=0)
    rate = fired_sum / steps
    count = fired_sum.sum(0)  # (N,)
    firing = count.sum() / (current.shape[0] * steps * count.numel())  # SpikeStats.firing_rate
    return _lin(w, p + ".out_proj", rate), {"v": v}, (count, firing, mean, std)


def decode_step(w: dict[str, Tensor], ids: Tensor, states: list[dict[str, dict[str, Tensor]]],
                plan: tuple[tuple[tuple[str, str], ...], ...], eps: float, spike: tuple[int, bool]
                ) -> tuple[Tensor, list[dict[str, dict[str, Tensor]]], list[tuple[Tensor, ...]], Tensor | None]:
    """ids (B,) -> (logits (B, V), the new states, each spiking layer's (count (N,), firing rate, mean, std),
    their mean firing rate (None without spiking layers)): the statistics in the graph, not as eager ops.

    ``w``: the decode tensors by name; ``plan``: per block, its (slot, kind) sub-layers in order; ``spike``:
    (micro-steps, zero reset)."""
    if "embed" in w:  # (B, D)
        x = w["embed"][ids]
    elif "embed.rows" in w:
        x = _row_lookup(w, "embed", ids)
    elif "head.wt" in w:  # tied: the head's columns (BLAS layout) or rows (fused)
        x = w["head.wt"][:, ids].t()
    else:
        x = _row_lookup(w, "head", ids)
    if _has(w, "in_proj"):  # embedding_dim != hidden_dim
        x = _lin(w, "in_proj", x)
    new_states, stats = [], []
    for i, subs in enumerate(plan):
        layer: dict[str, dict[str, Tensor]] = {}
        for slot, kind in subs:
            p = f"{i}.{slot}"
            h = F.layer_norm(x, (x.shape[-1],), w[p + ".ln.w"], w[p + ".ln.b"], eps)
            if kind == "mamba":
                y, layer[slot] = _mamba(w, p, h, states[i][slot])
            elif kind == "hyena":
                y, layer[slot] = _hyena(w, p, h, states[i][slot])
            elif kind == "lif":
                y, layer[slot], s = _spiking(w, p, h, states[i][slot], *spike)
                stats.append(s)
            else:
                y = _lin(w, p + ".proj", F.gelu(_lin(w, p + ".fc", h)))
            scale = w.get(p + ".scale")
            x = x + (y if scale is None else y * scale)
        new_states.append(layer)
    x = F.layer_norm(x, (x.shape[-1],), w["norm.w"], w["norm.b"], eps)
    if _has(w, "out_proj"):
        x = _lin(w, "out_proj", x)
    spike_rate = torch.stack([s[1] for s in stats]).mean() if stats else None
    return _gemv(w, "head", x), new_states, stats, spike_rate


class CompiledDecoder:
    """The compiled step of one model: ``decoder(ids (B, 1), states)`` -> (logits (B, 1, V), the new states, spike
    stats, mean firing rate). Built by ``S3CMNForCausalLM.compile_decode()``."""

    def __init__(self, model: nn.Module, compile_options: dict[str, Any] | None = None, weights: str = "fp32",
                 gemv: str = "auto") -> None:
        reason = unsupported(model)
        if reason:
            raise ValueError(f"the compiled decode step does not cover this model: {reason}")
        if weights not in WEIGHT_DTYPES:
            raise ValueError(f"weights must be one of {', '.join(WEIGHT_DTYPES)}, got {weights!r}")
        if weights == "fp16":
            limit = torch.finfo(torch.float16).max
            largest = max(float(m.weight.detach().abs().max()) for m in matrix_layers(model))
            if largest > limit:
                raise ValueError(f"a weight of {largest:.3g} overflows fp16 (largest {limit:g}): use weights='bf16'")
        if gemv not in GEMVS:
            raise ValueError(f"gemv must be one of {', '.join(GEMVS)}, got {gemv!r}")
        if gemv == "auto":
            gemv = "fused"
        if weights == "int8" and not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
            logger.warning("compile_decode(weights='int8') on a %s CPU: Inductor's int8 GEMV ran ~3x slower than fp32 "
                           "on an AVX2-only CPU (docs/measurements.md); weights='bf16' halves the bytes there",
                           torch.backends.cpu.get_cpu_capability())
        self.model, self.weights, self.gemv = model, weights, gemv
        self.plan = tuple(tuple((sub.slot, sub.kind) for sub in block.sublayers if sub.kind not in SKIPPED)
                          for block in model.model.layers)
        spiking = [getattr(b, s.slot) for b in model.model.layers for s in b.sublayers if s.kind == "lif"]
        self.spike = (spiking[0].num_spike_steps, spiking[0].reset_mode == "zero") if spiking else (1, False)
        if any((m.num_spike_steps, m.reset_mode == "zero") != self.spike for m in spiking):
            raise ValueError("the compiled decode step takes one spike-step count and reset mode for every layer")
        self.eps = model.config.layer_norm_eps
        self.layout = decode_tensors(model, weights, gemv).layout
        self._seen: set[tuple] = set()
        plan, eps, spike, layout = self.plan, self.eps, self.spike, self.layout

        def packed_step(flat: Tensor, matrices: Tensor, ids: Tensor, states: list) -> tuple[Any, ...]:
            return decode_step(unpack(flat, matrices, layout), ids, states, plan, eps, spike)

        # Dynamo keeps its compiled graphs per code object, at most recompile_limit (8) of them: a copy of the
        # code object per decoder, so that models in one process do not share (and exhaust) one cache
        own = types.FunctionType(packed_step.__code__.replace(), packed_step.__globals__, "packed_step",
                                 packed_step.__defaults__, packed_step.__closure__)
        self.step = torch.compile(own, fullgraph=True, dynamic=False, **(compile_options or {}))

    def __deepcopy__(self, memo: dict) -> None:
        return None  # a copy of the model (other weights, other tensors) decodes eagerly until compiled itself

    def __reduce__(self) -> tuple:
        return (type(None), ())  # likewise for a pickled model

    def __call__(self, ids: Tensor, states: list[dict[str, dict[str, Tensor]]]) -> tuple[Any, ...]:
        """ids (B, 1) -> (logits (B, 1, V), new states, each spiking layer's (count, firing rate, mean, std), their
        mean firing rate); ``states`` as ``S3CMNCache.layers``."""
        with torch.no_grad():
            packed = decode_tensors(self.model, self.weights, self.gemv)
            if packed.layout != self.layout:
                raise RuntimeError("the model's weights changed shape since compile_decode(): compile it again")
            # Dynamo's guards cost ~150 µs a call (the layout, the plan, every state tensor). Each input signature
            # (batch, state shapes, strides and offsets) runs once with the guards, which compiles it; afterwards
            # only the guards that tell the compiled signatures apart run. Should Dynamo still want to recompile
            # (it refuses before running anything), the call is repeated with every guard.
            # the states contiguous (the step returns them so; a prefill's are views): one compiled signature
            # per batch size, whatever the prompt length
            states = [{slot: {k: t.contiguous() for k, t in state.items()} for slot, state in layer.items()}
                      for layer in states]
            key = (ids.shape, tuple((t.shape, t.stride(), t.storage_offset()) for layer in states
                                    for state in layer.values() for t in state.values()))
            out = None
            if key in self._seen:
                try:
                    with torch.compiler.set_stance(skip_guard_eval_unsafe=True):
                        out = self.step(packed.flat, packed.matrices, ids[:, 0], states)
                except RuntimeError as err:
                    if "skip_guard_eval_unsafe" not in str(err):
                        raise
            if out is None:
                try:
                    out = self.step(packed.flat, packed.matrices, ids[:, 0], states)
                except Exception as err:  # Dynamo / Inductor / the C++ compiler: say what failed and the way out
                    first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
                    raise RuntimeError(f"the compiled decode step could not be built ({type(err).__name__}: {first}); "
                                       "decode without it (no compile_decode(), no --compile)") from err
                self._seen.add(key)
            logits, new_states, stats, spike_rate = out
        return logits[:, None], new_states, stats, spike_rate
