"""Analytic FLOP counts per token for S3CMN and GPT-2, for the achieved-fraction-of-peak ("MFU") figure.

Conventions (one multiply-add = 2 FLOPs; every other elementwise op, exp and sigmoid included, = 1 FLOP):

- a matmul of an (m, n) weight applied to one token: ``2·m·n``;
- a causal FFT convolution of one channel over a sequence of T tokens, zero-padded to a length ``n``
  (``s3cmn.ops.fftconv.next_fast_len``): a real FFT costs ``2.5·n·log2(n)``; per token and channel that is
  ``(2 · 2.5·n·log2(n) + 6·(n/2 + 1)) / T`` (input rfft + irfft, complex product) plus the filter's rfft,
  done once per sequence (not per batch row), so divided by ``B·T``;
- work done once per call and shared by the batch (Hyena's implicit filter MLP, S4D's kernel) is divided by
  ``B·T`` tokens;
- Mamba's selective scan: ``8·E·N`` per token (Δ·A, exp, Δ·B·u (2), h = Āh + B̄u (2), C·h (2));
- LIF: ``4·N_spk`` per micro-step (β·v + I (2), compare, reset);
- causal attention (GPT-2): the token at position t attends to t + 1 keys, ``4·(t+1)·D`` FLOPs for QKᵀ and
  AV, ``3·(t+1)·H`` for the softmax, averaged over t < T: ``(T+1)/2 · (4·D + 3·H)``;
- LayerNorm ``8·D``; residual adds ``D``; the LM head ``2·E·V``; embedding look-ups 0.

Training FLOPs = 3 × forward (backward ≈ 2 × forward, the usual convention of Kaplan et al. / PaLM; it holds for
matmuls exactly and roughly for the FFTs and scans). No activation recomputation is counted.
"""

from __future__ import annotations

import math
from typing import Any

from s3cmn.ops.fftconv import next_fast_len

LN, FFT_C = 8, 2.5  # LayerNorm FLOPs per element; real FFT cost constant (n·log2 n)
TRAIN_FACTOR = 3  # forward + backward


def _fft(n: int) -> float:
    return FFT_C * n * math.log2(max(n, 2))


def fft_conv_flops(channels: int, T: int, taps: int, batch: int, in_len: int | None = None) -> float:
    """FLOPs per token of ``fft_causal_conv`` of ``channels`` channels: input length ``in_len`` (default T)
    convolved with ``taps`` taps, T outputs kept, skip term included."""
    in_len = T if in_len is None else in_len
    L = min(taps, in_len)
    n = next_fast_len(in_len + L - 1)
    per_seq = 2 * _fft(n) + 6 * (n // 2 + 1)  # rfft(u), irfft, complex product, per channel and batch row
    return channels * (per_seq / T + 2 + _fft(n) / (batch * T))  # + skip (2/token) + filter rfft (shared)


def s3cmn_flops(config: Any, T: int, batch: int = 1) -> dict[str, float]:
    """Forward FLOPs per token of ``S3CMNForCausalLM(config)`` on (batch, T) inputs, by component.

    Supports the ``s3cmn`` block with Hyena, S4D / Mamba / none, LIF, the memory read and the MLP (what the
    presets use); other optional blocks raise ``ValueError`` rather than being silently counted as 0.
    """
    c = config
    if c.block_type != "s3cmn" or c.use_liquid or c.use_population_coding or c.use_cross_modal_attention:
        raise ValueError("flops: only the s3cmn block without liquid / population / cross-modal parts is counted")
    D, E, V = c.hidden_dim, c.embedding_dim, c.vocab_size
    out: dict[str, float] = {"embed_proj": 0.0, "hyena": 0.0, "ssm": 0.0, "spiking": 0.0, "memory": 0.0,
                             "mlp": 0.0, "norms_residuals": 0.0, "lm_head": 2.0 * E * V}
    if E != D:
        out["embed_proj"] = 2.0 * (2 * E * D)  # in_proj and out_proj
    memory_layers = c.memory_layer_indices()
    for layer in range(c.num_layers):
        norms = 1  # mlp norm
        if c.use_hyena:
            norms += 1
            No, K, L, w = c.hyena_order, c.hyena_short_conv, c.hyena_filter_length, c.hyena_filter_dim
            inner = (No + 1) * D
            f = 2 * D * inner + 2 * K * inner  # in_proj, short depthwise conv
            # each long conv runs over [L-1 history, T inputs] (forward prepends the state, zeros at start)
            f += (No - 1) * (D + fft_conv_flops(D, T, L, batch, in_len=L - 1 + T))  # gate + conv
            f += D + 2 * D * D  # last gate, out_proj
            C = (No - 1) * D  # implicit filter MLP over the L taps, once per call: 33 -> w -> w -> w -> C, sin
            f += L * (2 * 33 * w + 2 * 2 * w * w + 2 * w * C + 3 * 2 * w + 2 * C) / (batch * T)
            out["hyena"] += f
        if c.ssm_type == "mamba":
            norms += 1
            Em, N, R, k = c.mamba_expand * D, c.mamba_d_state, c.mamba_dt_rank_resolved, c.mamba_d_conv
            f = 2 * D * 2 * Em + 2 * k * Em + 4 * Em  # in_proj, depthwise conv, SiLU
            f += 2 * Em * (R + 2 * N) + 2 * R * Em + 2 * Em  # x_proj, dt_proj (+ bias), softplus
            f += 8 * Em * N + 2 * Em + 4 * Em  # scan, D skip, SiLU gate
            f += 2 * Em * D  # out_proj
            out["ssm"] += f
        elif c.ssm_type == "s4d":
            norms += 1
            N = c.s4d_d_state  # N/2 complex modes
            f = fft_conv_flops(D, T, T, batch)  # length-T kernel
            f += 8 * D * (N // 2) / batch  # kernel (Vandermonde product, complex MACs), once per call
            f += 8 * D * (N // 2)  # final state (Vandermonde reduce), per row
            f += D + 2 * D * 2 * D + 2 * D  # GELU, output_linear, GLU
            out["ssm"] += f
        if c.use_spiking:
            norms += 1
            S = c.spiking_units
            out["spiking"] += 2 * D * S + 4 * S * c.num_spike_steps + 2 * S * D
        if layer in memory_layers:
            norms += 1
            d = c.memory_compression_dim if c.memory_compression and c.memory_compression_dim else D
            k = c.memory_top_k
            f = 2 * D * D + 2 * D * d + 3 * d  # q_proj, PCA, normalise
            f += 2 * k * d + 5 * k + 2 * k * D  # logits, softmax, weighted values
            f += 2 * D * D + 2 * 2 * D * D + 2 * D  # o_proj, gate, sigmoid·read
            f += 2 * d * c.memory_size  # FAISS search, upper bound (exact search over a full store)
            out["memory"] += f
        inner = int(c.mlp_ratio * D)
        out["mlp"] += 2 * D * inner + inner + 2 * inner * D
        out["norms_residuals"] += norms * (LN * D + D)
    out["norms_residuals"] += LN * D  # final norm
    return out


def gpt2_flops(config: Any, T: int, batch: int = 1) -> dict[str, float]:
    """Forward FLOPs per token of ``GPT2LMHeadModel(config)`` on (batch, T) inputs, by component."""
    D, H, V = config.n_embd, config.n_head, config.vocab_size
    inner = config.n_inner or 4 * D
    n = config.n_layer
    return {
        "attention_proj": n * (2 * D * 3 * D + 2 * D * D),  # c_attn (q, k, v), c_proj
        "attention_scores": n * (T + 1) / 2 * (4 * D + 3 * H),  # causal QKᵀ, softmax, AV
        "mlp": n * (2 * D * inner + inner + 2 * inner * D),
        "norms_residuals": n * 2 * (LN * D + D) + LN * D + D,  # + final norm, position add
        "lm_head": 2.0 * D * V,
    }


def total(flops: dict[str, float]) -> float:
    """Sum of a per-component FLOP dict."""
    return float(sum(flops.values()))


def train_flops_per_token(flops: dict[str, float]) -> float:
    """Training (forward + backward) FLOPs per token from forward FLOPs: ``TRAIN_FACTOR`` × forward."""
    return TRAIN_FACTOR * total(flops)
