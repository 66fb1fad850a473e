"""The LM head and its cross-entropy in row chunks, so training never holds the (B, T, V) float32 logits.

``linear_cross_entropy(h, W, y)`` = ``F.cross_entropy(h @ W.T, y, ignore_index=-100)`` (the mean over
the rows whose target is not ignored). For each chunk of rows it computes the logits, their softmax (in place)
and from it the loss ``-log p_y`` (rows whose target probability underflows are recomputed with a
log-softmax) and, when a gradient is needed, the gradient of the summed loss with respect to the logits,
``softmax(z) - onehot(y)``, which it turns at once into the chunk's gradients for ``h`` and ``W``; those
are divided by the valid row count ``n`` at the end.
Backward only scales those by the incoming (scalar) gradient. The matmul count equals the plain path's
(one for the logits, two for the gradients); what goes away is the (N, V) logits, their log-softmax and
its gradient: three N x V float32 tensors written and read once each (about 0.4 GB for 8 x 512 tokens and
a 30k vocabulary). ``linear_cross_entropy_ref`` is the readable twin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100
_TINY_PROB = 1e-30  # below this a float32 probability has lost relative precision (subnormals start at 1.2e-38)
CHUNK_ELEMENTS = 2**25  # logits per chunk (128 MiB of float32): ~1,100 rows of a 30k vocabulary; larger row
# blocks run the three matmuls at 55-85 GFLOP/s on one AVX2 core where ~270 rows reach 45-75 (measured)


def linear_cross_entropy_ref(hidden: Tensor, weight: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` (float32 logits) against ``targets`` (-100 = ignored)."""
    logits = (hidden @ weight.T).float()  # (N, V)
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)


def _chunk_rows(vocab: int, rows: int) -> int:
    return max(16, min(rows, CHUNK_ELEMENTS // max(1, vocab)))


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, chunk: int) -> Tensor:  # type: ignore[override]
        # hidden (N, E), weight (V, E), targets (N,)
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        valid = targets != IGNORE_INDEX  # (N,)
        count = int(valid.sum())
        all_valid = count == targets.numel()  # no ignored row: no masking of the gradient blocks
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = None
        if ctx.needs_input_grad[0]:  # contiguous, so chunks can be written in place by torch.mm(out=...)
            grad_hidden = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device)
        grad_weight = None
        if ctx.needs_input_grad[1]:  # accumulated over the chunks in float32
            grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        # One logits buffer for every chunk, and in-place ops: a fresh 30 MB tensor per chunk costs page faults
        # that are slower than the arithmetic on a CPU.
        buffer = torch.empty(min(chunk, hidden.shape[0]), weight.shape[0], dtype=torch.float32, device=hidden.device)
        w_t = weight.T
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk]  # (C, E)
            y = targets[start : start + chunk]  # (C,)
            ok = valid[start : start + chunk]  # (C,)
            logits = buffer[: h.shape[0]]  # (C, V)
            if h.dtype == torch.float32:
                torch.mm(h, w_t, out=logits)
            else:
                logits.copy_(h @ w_t)
            safe_y = torch.where(ok, y, 0)[:, None]  # (C, 1)
            # softmax in place: ATen's kernel does max, exp-sum and scale row by row while the row is in cache,
            # where separate amax / sub / exp / sum / mul ops would stream the (C, V) block through memory 5 times
            probs = torch.ops.aten._softmax.out(logits, -1, False, out=logits)  # (C, V)
            p_y = probs.gather(1, safe_y).squeeze(1)  # (C,)
            row_loss = -p_y.log()  # (C,) = lse - z_y
            far = ok & (p_y < _TINY_PROB)  # a target so improbable that p_y lost its digits (or is 0):
            if far.any():  # recompute those rows' log-softmax from their logits
                rows = far.nonzero().squeeze(1)
                z = (h[rows] @ w_t).float()  # (R, V)
                row_loss[rows] = -torch.log_softmax(z, dim=-1).gather(1, safe_y[rows]).squeeze(1)
            total += torch.where(ok, row_loss, 0.0).sum()
            if need_grad:
                # d(loss sum)/d(logits) = softmax - onehot on valid rows, 0 on ignored rows; the 1/count of the
                # mean is applied once to the (N, E) and (V, E) results below, not to the (C, V) block
                grad = probs.scatter_add_(1, safe_y, -ok.to(probs.dtype)[:, None])
                if not all_valid:  # zero the few ignored rows (a masked_fill would sweep the whole block)
                    grad.index_fill_(0, (~ok).nonzero().squeeze(1), 0.0)
                grad = grad.to(h.dtype) if h.dtype != torch.float32 else grad
                if grad_hidden is not None:
                    if grad.dtype == torch.float32:
                        torch.mm(grad, weight, out=grad_hidden[start : start + chunk])  # (C, E)
                    else:
                        grad_hidden[start : start + chunk] = grad @ weight
                if grad_weight is not None:  # (V, E) += (V, C)(C, E)
                    if h.dtype == torch.float32:
                        grad_weight.addmm_(grad.T, h)
                    else:  # in the autocast dtype, as autocast's own head would (no (C, V) float32 copy)
                        grad_weight.add_(torch.mm(grad.T, h))
        if count:
            if grad_hidden is not None:
                grad_hidden.mul_(1.0 / count)
            if grad_weight is not None:
                grad_weight.mul_(1.0 / count)
        ctx.save_for_backward(
            grad_hidden if grad_hidden is not None else torch.empty(0),
            grad_weight.to(weight.dtype) if grad_weight is not None else torch.empty(0),
        )
        # F.cross_entropy's mean over zero valid rows is nan; keep that behaviour.
        return total / count if count else total * float("nan")

    @staticmethod
    def backward(ctx, grad_loss: Tensor):  # type: ignore[override]
        grad_hidden, grad_weight = ctx.saved_tensors
        gh = grad_hidden * grad_loss.to(grad_hidden.dtype) if ctx.needs_input_grad[0] else None
        gw = grad_weight * grad_loss.to(grad_weight.dtype) if ctx.needs_input_grad[1] else None
        return gh, gw, None, None


def linear_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor, chunk_rows: int | None = None) -> Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` without materialising the logits (see the module doc).

    ``hidden`` (N, E), ``weight`` (V, E), ``targets`` (N,) with -100 for ignored rows. Under autocast the
    matmuls run in the autocast dtype and the softmax in float32, as in the plain path.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(f"expected hidden (N, E), weight (V, E), targets (N,); got {tuple(hidden.shape)}, "
                         f"{tuple(weight.shape)}, {tuple(targets.shape)}")
    chunk = chunk_rows or _chunk_rows(weight.shape[0], hidden.shape[0])
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        # The autocast dtype for the matmuls, as autocast would pick for the plain ``h @ W.T``.
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return _LinearCrossEntropy.apply(hidden.to(dtype), weight.to(dtype), targets, chunk)
    return _LinearCrossEntropy.apply(hidden, weight, targets, chunk)
