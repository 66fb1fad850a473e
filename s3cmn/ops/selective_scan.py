"""Selective scan (the S6 recurrence of Mamba, Gu & Dao 2023, Algorithm 2).

For every batch b, channel e and state index n::

    h[t] = exp(Δ[t] · A) · h[t-1] + Δ[t] · B[t] · u[t]        (ZOH for A, Euler for B)
    y[t] = Σ_n C[t, n] · h[t, n] + D · u[t]
    y[t] = y[t] · silu(z[t])                                   (if a gate z is given)

with Δ = softplus(delta + delta_bias) when ``delta_softplus`` (else delta + delta_bias).

Two implementations with one signature (that of ``mamba_ssm.ops.selective_scan_interface.selective_scan_ref``,
plus ``initial_state`` for prefill continuation):

- ``selective_scan_ref``: the readable loop over tokens (the specification).
- ``selective_scan``: the fast path. On CPU tensors it runs a compiled C loop per channel
  (:mod:`s3cmn.ops.selective_scan_cpu`, ``backend="c"``); elsewhere, or where no C compiler is found, the
  chunked scan below (``backend="chunked"``). Time is cut into nc chunks of L ≈ sqrt(T) tokens and
  the recurrence runs over the L positions of a chunk for all chunks at once (one (B, nc, N, E) slice a
  step), so there are about 2·sqrt(T) Python steps instead of T, and O(T) work:
    1. every chunk from a zero state: its end state;
    2. carry across chunks: state before chunk c+1 = exp(S_c)·(state before c) + (end state of c), with
       S_c = Σ_{t in c} Δ[t]·A the chunk's cumulative log-decay (<= 0, so exp never overflows);
    3. every chunk again from its true initial state, reading out y.
  It is an ``autograd.Function``: the forward keeps the inputs and the states at every ~sqrt(L)-th position
  (nothing of size (B, E, T, N)); the backward runs the adjoint recurrence g[t] = a[t+1]·g[t+1] + C[t]·gy[t]
  the same way backwards in time and recomputes the states block by block from those checkpoints.
  Forward+backward is ~10x faster than mambapy's Blelloch ``pscan`` at (B, E, N, T) = (2, 512, 16, 2048)
  (single-thread CPU time, ``benchmarks/bench_scan.py``).

Why not the SSD (Mamba-2) matrix form: Mamba-1 decays differ per state index n, so the within-chunk
transfer matrix is (L, L) per (b, e, n) and would cost L times the memory of the states themselves.
Why not a log-space scan: exp(S[t]) · Σ exp(−S[s]) x[s] needs exp(+|S|) (overflow) or complex logs, and
loses ~|S|·eps of relative precision over long sequences.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from s3cmn.ops.cpu_kernel import why_unavailable
from s3cmn.ops.selective_scan_cpu import SelectiveScanC, scan_kernel

DEFAULT_CHUNK_SIZE = 0  # 0 = about sqrt(T): balances the in-chunk and across-chunk loops
Backend = Literal["auto", "c", "chunked"]
BACKENDS: tuple[str, ...] = ("auto", "c", "chunked")


def _prepare_delta(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool) -> Tensor:
    """Δ = softplus(delta + bias) or delta + bias; (B, E, T), in fp32."""
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, dtype: torch.dtype) -> Tensor:
    """y + D·u, then the gate y·silu(z); cast back to the input dtype."""
    if D is not None:
        y = y + u.float() * D.float()[None, :, None]  # (B, E, T)
    if z is not None:
        y = y * F.silu(z.float())  # (B, E, T)
    return y.to(dtype)


def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan, one token at a time (the reference).

    Args:
        u: (B, E, T) input. delta: (B, E, T) step size before bias/softplus. A: (E, N), real (negative).
        B, C: (B, N, T) input-dependent projections. D: (E,) skip. z: (B, E, T) gate.
        delta_bias: (E,). initial_state: (B, E, N) state h[-1] (zeros if None).
    Returns:
        y (B, E, T) in u's dtype, and the last state h[T-1] (B, E, N, fp32) if ``return_last_state``.
    """
    dtype = u.dtype
    delta = _prepare_delta(delta, delta_bias, delta_softplus)  # (B, E, T)
    u_f, A_f, B_f, C_f = u.float(), A.float(), B.float(), C.float()
    batch, channels, _ = u.shape
    if initial_state is None:
        h = u_f.new_zeros(batch, channels, A.shape[1])  # (B, E, N)
    else:
        h = initial_state.float()
    deltaA = torch.exp(torch.einsum("bet,en->betn", delta, A_f))  # (B, E, T, N)
    deltaB_u = torch.einsum("bet,bnt,bet->betn", delta, B_f, u_f)  # (B, E, T, N)
    ys = []
    # unbind: one view per token whose backward stacks once (indexing [:, :, t] would zero-fill per token)
    for dA, dBu, c in zip(deltaA.unbind(2), deltaB_u.unbind(2), C_f.unbind(2), strict=True):
        h = dA * h + dBu  # (B, E, N)
        ys.append(torch.einsum("ben,bn->be", h, c))  # (B, E)
    y = torch.stack(ys, dim=2)  # (B, E, T)
    out = _finish(y, u, D, z, dtype)
    return (out, h) if return_last_state else out


# ----------------------------------------------------------------------------------------------------------
# fast path
# ----------------------------------------------------------------------------------------------------------


def _chunk_len(length: int, chunk_size: int) -> int:
    """Tokens per chunk: ``chunk_size``; 0 = a divisor of T near sqrt(T) (no padding), else ceil(sqrt(T))."""
    if chunk_size <= 0:
        root = math.sqrt(length)
        divisors = [d for d in range(max(1, int(root / 2)), int(2 * root) + 1) if length % d == 0]
        chunk_size = min(divisors, key=lambda d: abs(d - root)) if divisors else math.ceil(root)
    return max(1, min(chunk_size, length))


def _chunked(x: Tensor, L: int) -> Tensor:
    """(B, F, T) -> (B, nc, L, F), zero-padded to nc·L tokens; free when x is a transposed (B, T, F)."""
    batch, feat, length = x.shape
    xt = x.transpose(1, 2)  # (B, T, F)
    pad = -length % L
    xt = F.pad(xt, (0, 0, 0, pad)) if pad else xt.contiguous()
    return xt.view(batch, (length + pad) // L, L, feat)


def _unchunked(x: Tensor, length: int) -> Tensor:
    """(B, nc, L, F) -> (B, F, T) (a transposed view): inverse of ``_chunked``."""
    batch, n_chunks, L, feat = x.shape
    return x.view(batch, n_chunks * L, feat)[:, :length].transpose(1, 2)


def _block_len(L: int) -> int:
    """Positions between saved states inside a chunk (backward recomputes one block at a time)."""
    return math.isqrt(max(L - 1, 0)) + 1  # ceil(sqrt(L))


LOG2_E = 1.0 / math.log(2.0)


def _decay(dl: Tensor, A2: Tensor, out: Tensor) -> Tensor:
    """exp(Δ·A) = 2^(Δ·A·log2 e) into ``out``: dl (B, nc, E), A2 = A·log2 e (N, E) -> (B, nc, N, E).

    exp2 rather than exp: on the CPU builds we use, torch.exp is ~5x slower than torch.exp2 and the
    exponentials dominate the scan.
    """
    return torch.mul(dl.unsqueeze(2), A2, out=out).exp2_()


class _SelectiveScanCore(torch.autograd.Function):
    """(u, Δ, A, B, C, h0) -> (y = Σ_n C·h (B, E, T), h[T-1] (B, E, N)); fp32, Δ already prepared.

    Layout: sequences are viewed as (B, nc, L, F) (chunk, position in chunk, feature); a state slice
    (B, nc, N, E) holds one position of every chunk, E last so the sums over N are (1, N) @ (N, E) matmuls
    and the sums over E contiguous reductions. Padded tokens have Δ = 0, so decay 1 and input 0: the state
    passes through them unchanged. The loops work in place on a few preallocated slices: a fresh
    multi-megabyte tensor per step would cost page faults, and the states of all T tokens are never stored.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, h0, chunk_size):  # type: ignore[override]
        length = u.shape[2]
        L = _chunk_len(length, chunk_size)
        A2 = A.t().contiguous() * LOG2_E  # (N, E)
        dl, us = _chunked(delta, L), _chunked(u, L)  # (B, nc, L, E)
        du = (dl * us).unsqueeze(3)  # (B, nc, L, 1, E)
        Bs = _chunked(B, L).unsqueeze(-1)  # (B, nc, L, N, 1)
        Cs = _chunked(C, L).unsqueeze(3)  # (B, nc, L, 1, N)
        batch, n_chunks = dl.shape[:2]
        a = u.new_empty(batch, n_chunks, *A2.shape)  # (B, nc, N, E) decay buffer

        # 1. states at the end of every chunk, each chunk started from zero (all chunks at once)
        h = torch.zeros_like(a)  # (B, nc, N, E)
        for i in range(L):
            h.mul_(_decay(dl[:, :, i], A2, a)).addcmul_(du[:, :, i], Bs[:, :, i])
        # 2. carry across chunks: carried[:, c] = state before chunk c; decay over a chunk = exp(ΣΔ·A)
        chunk_decay = _decay(dl.sum(2), A2, a)  # (B, nc, N, E)
        k = _block_len(L)
        ckpt = u.new_empty(-(-L // k), *a.shape)  # (nb, B, nc, N, E) states before positions 0, k, 2k, ...
        carried = ckpt[0]
        state = h0.transpose(1, 2)  # (B, N, E)
        for c in range(n_chunks):
            carried[:, c] = state
            state = torch.addcmul(h[:, c], chunk_decay[:, c], state)  # (B, N, E)
        # 3. rerun every chunk from its true initial state, reading out y = C·h; keep the block checkpoints
        h.copy_(carried)
        y = torch.empty_like(du)  # (B, nc, L, 1, E)
        y_i = torch.empty_like(du[:, :, 0])  # (B, nc, 1, E)
        for i in range(L):
            if i % k == 0 and i > 0:
                ckpt[i // k] = h
            h.mul_(_decay(dl[:, :, i], A2, a)).addcmul_(du[:, :, i], Bs[:, :, i])
            y[:, :, i] = torch.matmul(Cs[:, :, i], h, out=y_i)
        ctx.save_for_backward(u, delta, A, B, C, ckpt)
        ctx.chunk_len = L
        return _unchunked(y.squeeze(3), length), state.transpose(1, 2).contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, gh_last):  # type: ignore[override]
        u, delta, A, B, C, ckpt = ctx.saved_tensors  # ckpt[j]: states before position j·k of every chunk
        carried = ckpt[0]
        L = ctx.chunk_len
        length = u.shape[2]
        if gy is None:
            gy = torch.zeros_like(u)
        if gh_last is None:
            gh_last = torch.zeros_like(carried[:, 0]).transpose(1, 2)
        A_t = A.t().contiguous()  # (N, E)
        A2 = A_t * LOG2_E
        dl, us = _chunked(delta, L), _chunked(u, L)  # (B, nc, L, E)
        du = (dl * us).unsqueeze(3)  # (B, nc, L, 1, E)
        Bs = _chunked(B, L).unsqueeze(-1)  # (B, nc, L, N, 1)
        Cs = _chunked(C, L).unsqueeze(-1)  # (B, nc, L, N, 1)
        gys = _chunked(gy, L).unsqueeze(3)  # (B, nc, L, 1, E)
        n_chunks = dl.shape[1]
        a, tmp, g = (torch.empty_like(carried) for _ in range(3))  # (B, nc, N, E) work slices
        k = _block_len(L)
        n_blocks = ckpt.shape[0]

        # 1. adjoint g[t] = dL/dh[t] = a[t+1]·g[t+1] + C[t]·gy[t], backwards in time. First each chunk from
        #    zero, down to its position 0; then carry: incoming[:, c] = a[first of c+1]·g[first of c+1].
        g.zero_()
        for i in range(L - 1, -1, -1):
            g.addcmul_(Cs[:, :, i], gys[:, :, i])
            if i > 0:
                g.mul_(_decay(dl[:, :, i], A2, a))
        inner_decay = _decay(dl[:, :, 1:].sum(2), A2, a)  # (B, nc, N, E) Π a over positions 1..L-1
        first_decay = _decay(dl[:, :, 0], A2, tmp)  # (B, nc, N, E)
        incoming = torch.empty_like(carried)
        adj = gh_last.transpose(1, 2)  # (B, N, E)
        for c in range(n_chunks - 1, -1, -1):
            incoming[:, c] = adj
            adj = first_decay[:, c] * torch.addcmul(g[:, c], inner_decay[:, c], adj)  # (B, N, E)
        grad_h0 = adj.transpose(1, 2)

        # 2. the adjoint again from the true incoming values, block by block (states and decays of a block
        #    recomputed from the forward's checkpoint), every gradient read out per position
        grad_delta, grad_u = torch.empty_like(du), torch.empty_like(du)  # (B, nc, L, 1, E)
        grad_B = torch.empty_like(Bs)  # (B, nc, L, N, 1)
        grad_C = torch.empty_like(Bs)
        g_B = torch.empty_like(du[:, :, 0])  # (B, nc, 1, E)
        grad_A = torch.zeros_like(carried)  # (B, nc, N, E), summed over (B, nc) at the end
        hb = carried.new_empty((k,) + carried.shape)  # (k, B, nc, N, E) states of one block
        ab = torch.empty_like(hb)  # decays of one block
        g = incoming
        for j in range(n_blocks - 1, -1, -1):
            positions = range(j * k, min(L, (j + 1) * k))
            prev = ckpt[j]
            for r, i in enumerate(positions):
                torch.mul(prev, _decay(dl[:, :, i], A2, ab[r]), out=hb[r]).addcmul_(du[:, :, i], Bs[:, :, i])
                prev = hb[r]
            for r, i in reversed(list(enumerate(positions))):
                g.addcmul_(Cs[:, :, i], gys[:, :, i])  # g[i]
                h_prev = hb[r - 1] if r > 0 else ckpt[j]
                torch.sum(torch.mul(hb[r], gys[:, :, i], out=tmp), -1, keepdim=True, out=grad_C[:, :, i])
                torch.sum(torch.mul(g, du[:, :, i], out=tmp), -1, keepdim=True, out=grad_B[:, :, i])
                torch.matmul(Bs[:, :, i].transpose(-1, -2), g, out=g_B)  # Σ_n g·B
                g.mul_(ab[r])  # a[i]·g[i], the incoming value of position i-1
                w = torch.mul(g, h_prev, out=tmp)  # (B, nc, N, E) dL/d(Δ·A)
                grad_A.addcmul_(w, dl[:, :, i].unsqueeze(2))
                # dL/dΔ = Σ_n w·A + (Σ_n g·B)·u ; dL/du = (Σ_n g·B)·Δ
                w_A = w.mul_(A_t).sum(-2, keepdim=True)  # (B, nc, 1, E)
                torch.addcmul(w_A, g_B, us[:, :, i].unsqueeze(2), out=grad_delta[:, :, i])
                torch.mul(g_B, dl[:, :, i].unsqueeze(2), out=grad_u[:, :, i])
        return (
            _unchunked(grad_u.squeeze(3), length),
            _unchunked(grad_delta.squeeze(3), length),
            grad_A.sum((0, 1)).t(),
            _unchunked(grad_B.squeeze(-1), length),
            _unchunked(grad_C.squeeze(-1), length),
            grad_h0,
            None,
        )


def _use_c_kernel(backend: Backend, u: Tensor) -> bool:
    """Whether this call runs the C kernel; an explicit "c" that cannot run is an error."""
    if backend == "chunked":
        return False
    if u.device.type != "cpu":
        if backend == "c":
            raise ValueError(f"selective_scan backend 'c' runs on CPU tensors, got {u.device}: use 'chunked'")
        return False
    if scan_kernel() is None:
        if backend == "c":
            raise RuntimeError(f"selective_scan backend 'c' is unavailable: {why_unavailable('selective_scan')}")
        return False
    return True


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    backend: Backend = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan, the fast path; same contract and numbers as ``selective_scan_ref``.

    ``backend``: "c" the compiled per-channel loop (:mod:`s3cmn.ops.selective_scan_cpu`, CPU tensors; saves
    only the inputs for backward); "chunked" the PyTorch chunked scan of this module (any device); "auto" = "c"
    for CPU tensors where the kernel builds, else "chunked" (the reason logged once).
    ``chunk_size`` (chunked only): tokens per chunk; 0 picks a divisor of T near sqrt(T) (else ceil(sqrt(T)),
    padded). The chunked scan saves for backward the inputs and the states at every ~sqrt(chunk)-th position
    of each chunk (about (B, E, N, T / sqrt(chunk))), nothing of size (B, E, N, T).
    Computes in fp32 whatever the input dtype.
    """
    if A.is_complex() or B.dim() != 3 or C.dim() != 3:
        raise ValueError("selective_scan supports real A (E, N) and input-dependent B, C of shape (B, N, T)")
    if backend not in BACKENDS:
        raise ValueError(f"unknown selective_scan backend {backend!r}: choose one of {BACKENDS}")
    dtype = u.dtype
    delta_f = _prepare_delta(delta, delta_bias, delta_softplus)  # (B, E, T)
    batch, channels, _ = u.shape
    if initial_state is None:
        h0 = u.new_zeros(batch, channels, A.shape[1], dtype=torch.float32)  # (B, E, N)
    else:
        h0 = initial_state.float()
    args = (u.float(), delta_f, A.float(), B.float(), C.float(), h0)
    if _use_c_kernel(backend, u):
        y, h_last = SelectiveScanC.apply(*args)
    else:
        y, h_last = _SelectiveScanCore.apply(*args, chunk_size)
    out = _finish(y, u, D, z, dtype)
    return (out, h_last) if return_last_state else out
