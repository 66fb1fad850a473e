"""Causal long convolution by FFT (the convolution of Hyena, Poli et al. 2023, and S4/S4D kernels).

For every batch b and channel d, with a filter k of L taps applied to a sequence u of T tokens::

    y[t] = Σ_{s=0}^{min(t, L-1)} k[s] · u[t - s]   (+ bias · u[t] if a skip ``bias`` is given)

Only the first ``min(L, T)`` taps can reach an output of a T-token sequence, so longer filters are cut.

Two implementations with one signature:

- ``fft_causal_conv_ref``: the direct convolution (``F.conv1d`` on the left-padded input), O(T·L).
- ``fft_causal_conv``: the fast path, O(T log T): rfft of both operands zero-padded to a length
  ``n >= T + L - 1`` (the next 2·3·5-smooth length), product, irfft, keep the first T outputs.
  Because ``n`` holds the whole linear convolution, nothing wraps around (no circular aliasing), so the
  result is causal exactly, up to FFT rounding (~1e-6 relative in fp32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["fft_causal_conv", "fft_causal_conv_ref", "next_fast_len"]


def next_fast_len(n: int) -> int:
    """The smallest integer >= n whose only prime factors are 2, 3 and 5 (lengths the FFT handles fastest)."""
    if n <= 1:
        return 1
    best = 1 << (n - 1).bit_length()  # a power of two always qualifies
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            # the smallest p35 * 2^k >= n
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _check(u: Tensor, k: Tensor, bias: Tensor | None) -> None:
    if u.dim() != 3 or k.dim() != 2 or k.shape[0] != u.shape[1]:
        raise ValueError(
            f"expected u (B, D, T) and k (D, L) with the same D, got u {tuple(u.shape)}, k {tuple(k.shape)}"
        )
    if bias is not None and bias.shape != (u.shape[1],):
        raise ValueError(f"expected bias (D,) = ({u.shape[1]},), got {tuple(bias.shape)}")


def fft_causal_conv(u: Tensor, k: Tensor, bias: Tensor | None = None) -> Tensor:
    """Causal convolution of u (B, D, T) with per-channel filters k (D, L) by FFT; returns y (B, D, T).

    Computed in at least fp32 (half-precision FFTs lose too much); the result has u's dtype.
    """
    _check(u, k, bias)
    T = u.shape[-1]
    k = k[:, :T]  # taps beyond T cannot reach any output
    L = k.shape[-1]
    n = next_fast_len(T + L - 1)  # holds the full linear convolution: no wrap-around
    dtype = torch.promote_types(torch.promote_types(u.dtype, k.dtype), torch.float32)
    u_f = torch.fft.rfft(u.to(dtype), n=n)  # (B, D, n//2+1)
    k_f = torch.fft.rfft(k.to(dtype), n=n)  # (D, n//2+1)
    y = torch.fft.irfft(u_f * k_f, n=n)[..., :T]  # (B, D, T)
    if bias is not None:
        y = y + u.to(dtype) * bias.to(dtype)[:, None]  # skip term
    return y.to(u.dtype)


def fft_causal_conv_ref(u: Tensor, k: Tensor, bias: Tensor | None = None) -> Tensor:
    """The direct causal convolution, same contract as :func:`fft_causal_conv` (the reference)."""
    _check(u, k, bias)
    T, D = u.shape[-1], u.shape[1]
    k = k[:, :T]
    L = k.shape[-1]
    # conv1d is a cross-correlation: flip the taps so weight[..., L-1] multiplies u[t]; left padding = causal
    y = F.conv1d(F.pad(u, (L - 1, 0)), k.flip(-1)[:, None, :].to(u.dtype), groups=D)  # (B, D, T)
    if bias is not None:
        y = y + u * bias.to(u.dtype)[:, None]
    return y
