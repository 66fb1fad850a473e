"""Meta-learned step sizes for dynamic evaluation (Meta-SGD, Li et al. 2017, on Krause et al.'s update).

Dynamic evaluation's grid (:func:`.dynamic_fit.fit_dynamic`) picks one step size for one parameter subset. Here
the adaptation itself is learned: one step size per parameter tensor (``lr * lr_scale[name]``) and the decay,
trained on held-out text by differentiating the dynamic-evaluation loss through the adaptation steps::

    theta_1 = theta_0,   theta_k+1 = theta_k - lr * s ⊙ u_k + decay * r ⊙ (theta_0 - theta_k)
    u_k     = g_k / (sqrt(MS_k) + eps)            g_k = grad of chunk k's mean NLL at theta_k
    meta-loss over a run of ``unroll`` chunks = mean_k NLL_k(theta_k)

which is exactly what dynamic evaluation scores: chunk k is predicted by weights adapted on chunks < k only.
The step sizes ``s = exp(log_s)`` (one per tensor) and ``decay = exp(log_decay)`` are updated by Adam after
every run of ``unroll`` chunks (truncated backpropagation through the adaptation); the adapted weights carry on
from where the run ended, as in the scored pass. First order (as FOMAML): ``u_k`` is treated as a constant of
the step sizes (no second derivatives), so the meta-gradient of a step size is the inner product of a later
chunk's gradient with the earlier normalised updates of that tensor; theta_k's dependence on the step sizes
and on the decay is followed exactly.

:func:`meta_fit` starts from the grid's point (its ``lr`` and ``decay``; every tensor adapts, the grid's
subset only sets the starting scales: 1 inside it, ``outside_scale`` outside) and returns the settings with
``lr_scale`` and ``decay`` learned, ``subset`` "all". Which of the two to keep is chosen on held-out text that
neither saw (:func:`.dynamic_fit.fit_dynamic`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from s3cmn.data.windows import sliding_windows, window_batches
from s3cmn.nexttoken.dynamic import DynamicSettings, ms_scale, subset_parameters
from s3cmn.ops.nll import model_device

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MetaOptions:
    """How the step sizes are meta-learned: ``epochs`` passes over the text, ``unroll`` chunks per meta-step,
    Adam at ``meta_lr`` on the log step sizes and log decay, ``outside_scale`` the starting scale of tensors
    outside the grid's subset, ``max_scale`` the largest scale a tensor may reach."""

    epochs: int = 2
    unroll: int = 8
    meta_lr: float = 0.1
    outside_scale: float = 0.1
    max_scale: float = 100.0
    min_decay: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("epochs", "unroll"):
            if getattr(self, name) < 1:
                raise ValueError(f"MetaOptions: {name} = {getattr(self, name)} must be >= 1")
        for name in ("meta_lr", "outside_scale", "max_scale", "min_decay"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"MetaOptions: {name} = {value} must be a finite number > 0")


def _chunk_loss(model: nn.Module, params: dict[str, Tensor], ids: Tensor, n: int) -> Tensor:
    """Mean NLL of the last ``n`` targets of ``ids`` (B, T) under the weights ``params`` (others as they are)."""
    out = functional_call(model, params, (ids,), {"use_cache": False, "use_memory": False, "logits_to_keep": n + 1})
    logits = out.logits[:, :-1].reshape(-1, out.logits.shape[-1])  # (B*n, V): the predictions of the last n ids
    return F.cross_entropy(logits.float(), ids[:, ids.shape[1] - n :].reshape(-1))


def _update(theta: dict[str, Tensor], loss: Tensor, theta0: dict[str, Tensor], ms: dict[str, Tensor],
            rel: dict[str, Tensor], log_s: dict[str, Tensor], decay: Tensor, settings: DynamicSettings,
            eps: float) -> dict[str, Tensor]:  # fmt: skip
    """One adaptation step, :meth:`.dynamic.DynamicAdapter.step`'s rule as a function of the step sizes and the
    decay (the normalised gradient a constant of them: first order); updates the running ``ms`` in place."""
    grads = torch.autograd.grad(loss, list(theta.values()), retain_graph=True, allow_unused=True)
    out = {}
    for (name, value), g in zip(theta.items(), grads, strict=True):
        rate = torch.clamp(rel[name] * decay, max=1.0)  # DynamicAdapter.rate: min(r, 1 / decay) * decay
        new = value + rate * (theta0[name] - value)
        if g is not None:
            if settings.ms_beta < 1:
                ms[name].mul_(settings.ms_beta).addcmul_(g, g, value=1 - settings.ms_beta)
            new = new - settings.lr * log_s[name].exp() * (g / (ms[name].sqrt() + eps))
        out[name] = new
    return out


def meta_fit(model: nn.Module, stream: Tensor, context_length: int, stride: int, start: DynamicSettings,
             options: MetaOptions = MetaOptions(), document_starts: Tensor | None = None) -> DynamicSettings:
    """Learn per-tensor step sizes and the decay on ``stream`` (N + 1,) from the grid's settings ``start``
    (module docstring); with ``start.reset_at_documents`` the weights go back to theta_0 after scoring a chunk
    that holds one of ``document_starts``, as in the scored pass. The model's weights are unchanged afterwards.
    The returned settings' ``fit["meta"]`` holds the meta-training curve (mean NLL per token of each epoch's
    adapting pass, before that epoch's meta-updates took effect on later chunks)."""
    if start.lr <= 0:
        raise ValueError("meta_fit starts from a fitted step size: the grid chose lr 0 (no adaptation pays)")
    params = subset_parameters(model, "all")
    inside = set(subset_parameters(model, start.subset))
    missing = sorted(set(params) - set(start.ms))
    if missing:
        raise ValueError(f"the held-out MS lacks {missing[:3]}: refit the dynamic settings on this model")
    device = model_device(model)
    theta0 = {n: p.detach().clone() for n, p in params.items()}
    ms0 = {n: start.ms[n].to(device, torch.float32) for n in params}
    mean_rms, eps = ms_scale(start.ms, start.eps_rel)
    rel = {n: ms0[n].sqrt() / mean_rms for n in params}  # the decay's per-element rate, before its cap
    log_s = {n: torch.tensor(0.0 if n in inside else math.log(options.outside_scale), device=device,
                             requires_grad=True) for n in params}  # fmt: skip
    log_decay = torch.tensor(math.log(max(start.decay, options.min_decay)), device=device, requires_grad=True)
    optimizer = torch.optim.Adam([*log_s.values(), log_decay], lr=options.meta_lr)
    max_log_s = math.log(options.max_scale)
    starts = document_starts if start.reset_at_documents and document_starts is not None else None
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    curve: list[dict[str, float]] = []
    batches = list(window_batches(sliding_windows(stream.numel(), context_length, stride), start.windows_per_step))
    began = time.perf_counter()
    try:
        for p in model.parameters():
            p.requires_grad_(False)  # the weights are functional inputs here; only the step sizes learn
        for epoch in range(options.epochs):
            theta = {n: v.clone() for n, v in theta0.items()}
            ms = {n: v.clone() for n, v in ms0.items()}
            total, count, segment = 0.0, 0, []
            for i, batch in enumerate(batches):
                ids = torch.stack([stream[w.begin : w.end] for w in batch]).to(device)
                n = batch[0].num_scored
                theta = {k: v if v.requires_grad else v.requires_grad_(True) for k, v in theta.items()}
                loss = _chunk_loss(model, theta, ids, n)
                total += float(loss.detach()) * ids.shape[0] * n
                count += ids.shape[0] * n
                segment.append(loss)
                # a document starts inside this chunk: back to theta_0 after scoring it, no update (as in
                # dynamic.adapting_chunks); a non-finite loss takes no update (DynamicAdapter.step)
                reset = starts is not None and bool(((starts >= batch[0].first_target)
                                                     & (starts <= batch[-1].end - 1)).any())  # fmt: skip
                if not reset and bool(torch.isfinite(loss)):
                    theta = _update(theta, loss, theta0, ms, rel, log_s, log_decay.exp(), start, eps)
                if reset or len(segment) == options.unroll or i == len(batches) - 1:
                    optimizer.zero_grad()
                    torch.stack(segment).mean().backward()
                    optimizer.step()
                    with torch.no_grad():
                        for v in log_s.values():
                            v.clamp_(max=max_log_s)
                        log_decay.clamp_(min=math.log(options.min_decay), max=0.0)
                    theta = {k: (theta0[k] if reset else v).detach().clone() for k, v in theta.items()}
                    segment = []
            curve.append({"epoch": epoch, "nll_per_token": total / max(count, 1),
                          "seconds": time.perf_counter() - began})  # fmt: skip
            logger.info("dynamic meta-fit epoch %d: adapting NLL/token %.4f (decay %.2e)", epoch, total / count,
                        float(log_decay.detach().exp()))  # fmt: skip
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
    scales = {n: float(v.detach().exp()) for n, v in log_s.items()}
    decay = float(log_decay.detach().exp())
    meta = {"options": dataclasses.asdict(options), "curve": curve, "start": {"lr": start.lr, "decay": start.decay,
            "subset": start.subset}, "seconds": time.perf_counter() - began}  # fmt: skip
    return dataclasses.replace(start, subset="all", lr_scale=scales, decay=decay,
                               fit={**start.fit, "meta": meta})  # fmt: skip


__all__ = ["MetaOptions", "meta_fit"]
