"""Dynamic evaluation (Krause et al. 2018, "Dynamic Evaluation of Neural Sequence Models", §5): the weights
adapt to the text being scored, a next-token read-out beside the cache and the kNN datastore.

The LM pass is :func:`s3cmn.nexttoken.stream.lm_chunks`'s sliding windows, memory off, with one change:
after a chunk (``windows_per_step`` windows) is scored, the selected parameters take one gradient step on the
mean NLL of that chunk's scored targets, and the next chunk is scored with the new weights. A position is
therefore scored by weights that have seen only earlier text. The update (RMS-normalised SGD with decay back
to the trained weights theta0: Krause et al. 2018's RMS-norm rule with decay to the global weights, in this form)::

    MS_t   = ms_beta * MS_t-1 + (1 - ms_beta) * g^2,  MS_0 = MS  a running RMS that starts from the held-out MS
    theta <- theta - lr * g / (sqrt(MS_t) + eps) + decay * r * (theta0 - theta)
    r      = min(sqrt(MS) / mean(sqrt(MS)), 1 / decay)        per element; the mean over every parameter
    eps    = eps_rel * mean(sqrt(MS))                          a floor for elements with tiny held-out gradients

MS: per element, the mean squared gradient of the same chunk loss over the held-out fit text at theta0
(Krause: over training data), saved as ``nexttoken/dynamic_ms.safetensors``. ``ms_beta`` = 1 is Krause's fixed
MS; below 1 the running MS bounds every normalised step by lr / sqrt(1 - ms_beta): a token the held-out text
lacks has an embedding row with almost no held-out gradient, and the fixed MS let its first gradient take a step
large enough to wreck the model (an untrained tiny model: token ppl 3e4 -> 7e18 at lr 1e-4).

With ``reset_at_documents`` a chunk that holds a document's first token is scored, then the weights go back to
theta0 with no update from that chunk (a reset after scoring: earlier scores never depend on where a later
document starts).

The parameter subsets (:data:`SUBSETS`): ``all``; ``norms_biases`` (every normalisation layer and every bias);
``head`` (the LM head, tied to the input embedding when ``tie_word_embeddings``); ``ssm`` (the Mamba mixers'
``x_proj`` and ``dt_proj``: the input-dependent dt, B and C). The model's parameters are restored after the pass.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3cmn.data.windows import Window, sliding_windows, window_batches
from s3cmn.nexttoken.stream import Chunk
from s3cmn.ops.dynamic_update import dynamic_update
from s3cmn.ops.nll import model_device, nll_float64

logger = logging.getLogger(__name__)

Subset = Literal["all", "norms_biases", "head", "ssm"]
SUBSETS: tuple[str, ...] = get_args(Subset)
FORMAT = "s3cmn-dynamic-eval"
VERSION = 1
SETTINGS_FILE = "dynamic.json"  # in CHECKPOINT/nexttoken/, beside readout.json
MS_FILE = "dynamic_ms.safetensors"
DYNAMIC_MODES = ("dynamic", "cache+dynamic", "knn+dynamic", "cache+knn+dynamic")


def base_mode(mode: str) -> str:
    """The static read-out a dynamic mode mixes in: ``dynamic`` -> off, ``cache+dynamic`` -> cache, ..."""
    if mode not in DYNAMIC_MODES:
        raise ValueError(f"dynamic mode {mode!r} is not one of {DYNAMIC_MODES}")
    return "off" if mode == "dynamic" else mode.removesuffix("+dynamic")


# --------------------------------------------------------------------------------------------------
# settings


def _check(name: str, ok: bool, allowed: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"DynamicSettings: {name} = {value!r} must be {allowed}")


@dataclass
class DynamicSettings:
    """What ``s3cmn-memory fit`` chose for dynamic evaluation, and the held-out MS it normalises with.

    ``lr`` step size (0 = no adaptation), ``decay`` pull back to the trained weights per step, ``subset`` the
    adapted parameters, ``reset_at_documents`` back to the trained weights at each WikiText article,
    ``windows_per_step`` windows scored per update, ``eps_rel`` the MS floor relative to its mean RMS,
    ``ms_beta`` the running MS's decay (1 = the held-out MS, fixed). ``lr_scale``: parameter name -> its own
    step size as a multiple of ``lr`` (meta-learned, :mod:`.dynamic_meta`; a name it lacks steps at ``lr``).
    ``cache_lam`` / ``knn_lam`` / ``combined``: the read-outs' weights refitted with dynamic on (their
    temperature, k and window are the static fit's). ``fitted_on``: the held-out text; ``fit``: the grid and
    its held-out NLL per token. ``ms``: parameter name -> mean squared gradient (not in the JSON file).
    """

    lr: float = 0.0
    decay: float = 0.0
    subset: Subset = "all"
    reset_at_documents: bool = False
    windows_per_step: int = 1
    eps_rel: float = 0.1
    ms_beta: float = 0.99
    lr_scale: dict[str, float] = field(default_factory=dict)
    cache_lam: float | None = None
    knn_lam: float | None = None
    combined: tuple[float, float] | None = None
    fitted_on: dict[str, Any] = field(default_factory=dict)
    context_length: int = 0
    stride: int = 0
    fit: dict[str, Any] = field(default_factory=dict)
    ms: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        _check("lr", self.lr >= 0 and math.isfinite(self.lr), "a finite number >= 0", self.lr)
        _check("decay", 0 <= self.decay < 1, "in [0, 1)", self.decay)
        _check("subset", self.subset in SUBSETS, f"one of {SUBSETS}", self.subset)
        _check("reset_at_documents", isinstance(self.reset_at_documents, bool), "a bool", self.reset_at_documents)
        _check("windows_per_step", self.windows_per_step >= 1, ">= 1", self.windows_per_step)
        _check("eps_rel", self.eps_rel > 0, "> 0", self.eps_rel)
        _check("ms_beta", 0 < self.ms_beta <= 1, "in (0, 1]", self.ms_beta)
        bad = {n: v for n, v in self.lr_scale.items() if not (isinstance(v, (int, float)) and 0 <= v < math.inf)}
        _check("lr_scale", not bad, "a mapping of parameter names to finite numbers >= 0", bad)
        for name in ("cache_lam", "knn_lam"):
            lam = getattr(self, name)
            _check(name, lam is None or 0 <= lam < 1, "None or in [0, 1)", lam)
        if self.combined is not None:
            self.combined = (float(self.combined[0]), float(self.combined[1]))
            _check("combined", min(self.combined) >= 0 and sum(self.combined) < 1, "two weights >= 0 summing to < 1",
                   self.combined)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The JSON body (everything but ``ms``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "ms"}
        out["combined"] = list(self.combined) if self.combined is not None else None
        return {"format": FORMAT, "version": VERSION, **json.loads(json.dumps(out))}

    @classmethod
    def from_dict(cls, data: dict[str, Any], ms: dict[str, Tensor] | None = None) -> DynamicSettings:
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ValueError(f"not a {FORMAT} v{VERSION} settings file; refit with `s3cmn-memory fit`")
        body = {k: v for k, v in data.items() if k not in ("format", "version")}
        allowed = {f.name for f in fields(cls)} - {"ms"}
        unknown = set(body) - allowed
        if unknown:
            raise ValueError(f"dynamic settings: unknown keys {sorted(unknown)}; allowed {sorted(allowed)}")
        body["combined"] = tuple(body["combined"]) if body.get("combined") else None
        return cls(**body, ms=dict(ms or {}))

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``dynamic.json`` and ``dynamic_ms.safetensors`` into ``folder``; returns the JSON's path."""
        from safetensors.torch import save_file

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.ms.items()}, str(out / MS_FILE))
        tmp = out / f".{SETTINGS_FILE}.tmp"
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, out / SETTINGS_FILE)
        return out / SETTINGS_FILE

    @classmethod
    def load(cls, folder: str | os.PathLike) -> DynamicSettings:
        from safetensors.torch import load_file

        path = Path(folder) / SETTINGS_FILE
        if not path.is_file() or not (Path(folder) / MS_FILE).is_file():
            raise FileNotFoundError(f"{path} (and {MS_FILE}) not found: fit dynamic evaluation with "
                                    "`s3cmn-memory fit CKPT --text HELDOUT --dynamic`")  # fmt: skip
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); refit it") from err
        return cls.from_dict(data, load_file(str(Path(folder) / MS_FILE)))

    def summary(self) -> dict[str, Any]:
        """The settings a report shows (no MS, no grid)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("ms", "fit", "lr_scale")}
        if self.lr_scale:  # meta-learned: the spread of the per-tensor step sizes, not ~100 names
            scales = sorted(self.lr_scale.values())
            out["lr_scale"] = {"tensors": len(scales), "min": scales[0], "median": scales[len(scales) // 2],
                               "max": scales[-1]}  # fmt: skip
        return out


def dynamic_path(checkpoint: str | os.PathLike) -> Path:
    """The folder holding ``dynamic.json`` for a checkpoint (its ``nexttoken/`` folder)."""
    from s3cmn.nexttoken.fitted import FOLDER

    return Path(checkpoint) / FOLDER


def load_dynamic(checkpoint: str | os.PathLike | None) -> DynamicSettings | None:
    """The fitted dynamic settings saved beside ``checkpoint``, None where absent."""
    if checkpoint is None or not (dynamic_path(checkpoint) / SETTINGS_FILE).is_file():
        return None
    return DynamicSettings.load(dynamic_path(checkpoint))


def check_dynamic(modes: list[str], settings: DynamicSettings | None) -> None:
    """Raise ValueError naming what a requested dynamic mode lacks: fitted settings, or the cache / kNN weight
    refitted with dynamic on."""
    modes = [m for m in modes if m in DYNAMIC_MODES]
    if modes and settings is None:
        raise ValueError(f"memory modes {modes} need fitted dynamic evaluation settings: run `s3cmn-memory fit CKPT "
                         "--text HELDOUT --dynamic` first")  # fmt: skip
    for m in modes:
        if m in ("cache+dynamic", "cache+knn+dynamic") and settings.cache_lam is None:
            raise ValueError(f"memory mode {m}: the dynamic settings hold no cache weight fitted with dynamic on; "
                             "refit with `s3cmn-memory fit --dynamic` after the cache settings")  # fmt: skip
        if m in ("knn+dynamic", "cache+knn+dynamic") and settings.knn_lam is None:
            raise ValueError(f"memory mode {m}: the dynamic settings hold no kNN weight fitted with dynamic on; "
                             "build the datastore, then refit with `s3cmn-memory fit --dynamic`")  # fmt: skip


# --------------------------------------------------------------------------------------------------
# parameter subsets and the update rule


def subset_parameters(model: nn.Module, subset: str) -> dict[str, nn.Parameter]:
    """The named parameters ``subset`` adapts (names as ``model.named_parameters()`` gives them, tied once)."""
    if subset not in SUBSETS:
        raise ValueError(f"dynamic subset {subset!r} is not one of {SUBSETS}")
    named = dict(model.named_parameters())
    if subset == "all":
        chosen = set(named.values())
    elif subset == "head":
        chosen = {model.get_output_embeddings().weight}
    elif subset == "norms_biases":
        norms = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, getattr(nn, "RMSNorm", nn.LayerNorm))
        chosen = {p for m in model.modules() if isinstance(m, norms) for p in m.parameters(recurse=False)}
        chosen |= {p for m in model.modules() for n, p in m.named_parameters(recurse=False) if n == "bias"}
    else:  # ssm: the selective-scan projections of every mixer that has them
        chosen = {p for m in model.modules() if hasattr(m, "x_proj") and hasattr(m, "dt_proj")
                  for proj in (m.x_proj, m.dt_proj) for p in proj.parameters()}  # fmt: skip
    out = {n: p for n, p in named.items() if p in chosen and p.is_floating_point()}
    if not out:
        raise ValueError(f"dynamic subset {subset!r} selects no floating-point parameter of this model")
    return out


def ms_scale(ms: dict[str, Tensor], eps_rel: float) -> tuple[Tensor, float]:
    """The mean RMS over every parameter's held-out MS (the decay's and the floor's unit) and the floor eps.

    Summed in float64, by parameter name: the same settings give the same bits however the MS dict is ordered
    (a loaded ``dynamic_ms.safetensors`` comes back sorted by name, a fitted one in the model's order)."""
    rms = torch.cat([ms[name].flatten().double() for name in sorted(ms)]).sqrt()
    mean = rms.mean().float().clamp_min(1e-30)
    return mean, float(eps_rel * mean)


class DynamicAdapter:
    """The adapted parameters, their trained values theta0 and the update; restores theta0 on exit.

    ``with DynamicAdapter(model, settings) as a: ... a.step(loss)``: gradients only for the subset (the others
    are frozen for the pass), the model's ``requires_grad`` flags and weights are put back afterwards.
    """

    def __init__(self, model: nn.Module, settings: DynamicSettings) -> None:
        self.model, self.settings = model, settings
        self.params = subset_parameters(model, settings.subset)
        unknown = sorted(set(settings.lr_scale) - set(self.params))
        if unknown:
            raise ValueError(f"dynamic settings scale the step of {unknown[:3]}, which subset {settings.subset!r} of "
                             "this model does not adapt: the settings were fitted on another model; refit")  # fmt: skip
        missing = sorted(set(self.params) - set(settings.ms))
        if missing:
            raise ValueError(f"dynamic settings hold no MS for {missing[:3]}{'...' if len(missing) > 3 else ''}: "
                             "the MS was fitted on another model; refit")  # fmt: skip
        rms = {n: settings.ms[n].to(p.device, torch.float32).sqrt() for n, p in self.params.items()}
        mean, self.eps = ms_scale(settings.ms, settings.eps_rel)
        self.ms = {n: settings.ms[n].to(p.device, torch.float32).clone() for n, p in self.params.items()}
        cap = 1.0 / settings.decay if settings.decay > 0 else math.inf
        self.rate = {n: (r / mean).clamp(max=cap) * settings.decay for n, r in rms.items()}
        self.theta0: dict[str, Tensor] = {}
        self.flags: dict[str, bool] = {}
        self.steps = 0

    def __enter__(self) -> DynamicAdapter:
        self.flags = {n: p.requires_grad for n, p in self.model.named_parameters()}
        for n, p in self.model.named_parameters():
            p.requires_grad_(n in self.params)
        self.theta0 = {n: p.detach().clone() for n, p in self.params.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        self.reset()
        for n, p in self.model.named_parameters():
            p.requires_grad_(self.flags[n])

    @torch.no_grad()
    def reset(self) -> None:
        """Back to the trained weights theta0."""
        for n, p in self.params.items():
            p.copy_(self.theta0[n])

    def step(self, loss: Tensor) -> None:
        """One update on ``loss`` (the module docstring's rule); a non-finite loss is skipped."""
        if not bool(torch.isfinite(loss)):
            logger.debug("dynamic evaluation: non-finite loss %s, no update", float(loss.detach()))
            return
        names = list(self.params)
        grads = torch.autograd.grad(loss, [self.params[n] for n in names], allow_unused=True)
        lr, scale, beta = self.settings.lr, self.settings.lr_scale, self.settings.ms_beta
        with torch.no_grad():
            for n, g in zip(names, grads, strict=True):  # one pass per tensor (ops.dynamic_update, its _ref twin)
                dynamic_update(self.params[n], self.theta0[n], g, self.ms[n], self.rate[n], lr * scale.get(n, 1.0),
                               beta, self.eps)
        self.steps += 1


# --------------------------------------------------------------------------------------------------
# the adapting LM pass


def _forward_chunk(model: nn.Module, ids: Tensor, n: int) -> tuple[Tensor, Tensor, list | None]:
    """ids (B, T) -> hidden (B*n, E) of the last n predictions (with grad), their logits (B*n, V), spikes."""
    B, T = ids.shape
    out = model.model(ids, use_cache=False, memory_bank=None)
    hidden = out["hidden"][:, T - n - 1 : T - 1].reshape(B * n, -1)  # (B*n, E): the head's input
    spikes = [b.spike_stats for b in out["blocks"] if getattr(b, "spike_stats", None) is not None]
    return hidden, model.lm_head(hidden), spikes or None


def read_batch(model: nn.Module, adapter: DynamicAdapter, stream: Tensor, batch: list[Window],
               reset: bool = False) -> tuple[Tensor, Tensor, Tensor, list | None]:  # fmt: skip
    """One step of dynamic evaluation on ``batch`` (windows of ``stream`` of one length and score count): a
    forward with gradients, then one update on the mean NLL of the scored targets (``reset``: back to theta0
    instead, no update). Returns hidden (B*n, E) and logits (B*n, V), detached (what the weights before the
    update predicted), the targets (B*n,) and the spike stats."""
    ids = torch.stack([stream[w.begin : w.end] for w in batch]).to(model_device(model))  # (B, T)
    n = batch[0].num_scored
    targets = ids[:, ids.shape[1] - n :].reshape(-1)  # (B*n,)
    with torch.enable_grad():
        hidden, logits, spikes = _forward_chunk(model, ids, n)
        if reset:
            adapter.reset()
        else:
            adapter.step(F.cross_entropy(logits.float(), targets))
    return hidden.detach(), logits.detach(), targets, spikes


def dynamic_chunks(model: nn.Module, stream: Tensor, context_length: int, stride: int, settings: DynamicSettings,
                   document_starts: Tensor | None = None) -> Iterator[Chunk]:  # fmt: skip
    """The LM pass over ``stream`` (N + 1,) with dynamic evaluation: each :class:`Chunk` is scored by the
    weights before its own update; the chunk's ``seconds`` include the update. ``document_starts``: stream
    indices of each document's first token (used with ``settings.reset_at_documents``)."""
    with DynamicAdapter(model, settings) as adapter:
        yield from adapting_chunks(model, adapter, stream, context_length, stride, document_starts)


def adapting_chunks(model: nn.Module, adapter: DynamicAdapter, stream: Tensor, context_length: int, stride: int,
                    document_starts: Tensor | None = None) -> Iterator[Chunk]:  # fmt: skip
    """:func:`dynamic_chunks` with an open ``adapter``, whose weights stay adapted to ``stream`` afterwards (the
    reading of a prompt before generation)."""
    settings = adapter.settings
    starts = document_starts if settings.reset_at_documents and document_starts is not None else None
    for batch in window_batches(sliding_windows(stream.numel(), context_length, stride), settings.windows_per_step):
        start = time.perf_counter()
        pos = torch.cat([torch.arange(w.first_target - 1, w.end - 1) for w in batch])  # (B*n,)
        # a document starts inside this chunk: back to theta0 after scoring it, no update
        reset = starts is not None and bool(((starts >= pos[0] + 1) & (starts <= pos[-1] + 1)).any())
        hidden, logits, targets, spikes = read_batch(model, adapter, stream, batch, reset)
        lm = -nll_float64(logits, targets).cpu()  # scored before this chunk's update
        yield Chunk(pos, hidden.float().cpu(), targets.cpu(), lm, time.perf_counter() - start, spikes)


def gradient_ms(model: nn.Module, stream: Tensor, context_length: int, stride: int, windows_per_step: int = 1,
                max_chunks: int = 0) -> dict[str, Tensor]:
    """Per parameter (every floating-point one): the mean over the chunks of ``stream`` of the squared gradient
    of the chunk's mean NLL at the current weights, as dynamic evaluation's steps see it (Krause et al.'s MS_g).
    ``max_chunks`` > 0 stops after that many chunks."""
    device = model_device(model)
    named = {n: p for n, p in model.named_parameters() if p.is_floating_point()}
    flags = {n: p.requires_grad for n, p in named.items()}
    ms = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in named.items()}
    chunks = 0
    try:
        for p in named.values():
            p.requires_grad_(True)
        for batch in window_batches(sliding_windows(stream.numel(), context_length, stride), windows_per_step):
            ids = torch.stack([stream[w.begin : w.end] for w in batch]).to(device)  # (B, T)
            n = batch[0].num_scored
            with torch.enable_grad():
                _, logits, _ = _forward_chunk(model, ids, n)
                loss = F.cross_entropy(logits.float(), ids[:, ids.shape[1] - n :].reshape(-1))
                grads = torch.autograd.grad(loss, list(named.values()), allow_unused=True)
            for name, g in zip(named, grads, strict=True):
                if g is not None:
                    ms[name] += g.float().square()
            chunks += 1
            if 0 < max_chunks <= chunks:
                break
    finally:
        for n, p in named.items():
            p.requires_grad_(flags[n])
    return {n: (v / max(chunks, 1)).cpu() for n, v in ms.items()}


def document_starts(text: str, tokenizer: Any, num_tokens: int | None = None) -> Tensor:
    """Stream indices ([prefix] + ids(text)) of the first token of every WikiText article after the first;
    empty when the text has no article headings. Tokenised line by line, as the scored stream is; with
    ``num_tokens`` (the stream's text tokens) a count that disagrees raises."""
    from s3cmn.data import encode_text
    from s3cmn.data.validation import split_documents

    documents, unit = split_documents(text)
    if unit != "articles":
        return torch.zeros(0, dtype=torch.long)
    counts = torch.tensor([len(encode_text(d, tokenizer)) for d in documents], dtype=torch.long)
    if num_tokens is not None and int(counts.sum()) != num_tokens:
        raise ValueError(f"the documents tokenise to {int(counts.sum())} tokens, the scored stream has {num_tokens}: "
                         "document starts would be misplaced")  # fmt: skip
    return 1 + torch.cumsum(counts, 0)[:-1]  # (documents - 1,)
