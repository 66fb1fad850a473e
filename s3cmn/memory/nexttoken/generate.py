"""Generation with the next-token read-outs: ``model.generate(ids, memory="cache" | "knn" | "cache+knn")``.

The prompt is prefilled once (its positions become cache entries: hidden state at t -> prompt token t + 1);
then each step reads the cache (the prompt and the tokens generated so far) and / or the datastore with the
last hidden state, mixes p_LM with p_mem exactly as in scoring (:mod:`.readout`), picks the next token
(greedy, or sampled with ``temperature`` / ``top_k``), writes (hidden state, chosen token) to the cache and
steps the recurrent model by one token. Batch 1 per row; rows are generated one after another.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from s3cmn.memory.nexttoken.datastore import NextTokenDatastore
from s3cmn.memory.nexttoken.fitted import ReadoutSettings, datastore_path, settings_path
from s3cmn.memory.nexttoken.readout import Component, StreamCache, mixture_log_probs
from s3cmn.memory.nexttoken.stream import check_settings, mode_sources


def load_readouts(checkpoint: str | os.PathLike | None) -> tuple[ReadoutSettings | None, NextTokenDatastore | None]:
    """The fitted settings and the datastore saved beside ``checkpoint`` (None where absent)."""
    if checkpoint is None:
        return None, None
    settings = ReadoutSettings.load(settings_path(checkpoint)) if settings_path(checkpoint).is_file() else None
    store_dir = datastore_path(checkpoint)
    store = NextTokenDatastore.load(store_dir) if (Path(store_dir) / "datastore.json").is_file() else None
    return settings, store


@torch.no_grad()
def generate_with_readout(model: Any, input_ids: Tensor, memory: str, *, settings: ReadoutSettings | None = None,
                          datastore: NextTokenDatastore | None = None, max_new_tokens: int = 20,
                          do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
                          eos_token_id: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """``input_ids`` (B, T) -> (B, T + new) with the read-out ``memory`` mixed into every step's distribution.

    ``settings`` / ``datastore`` default to those saved beside the model (``model.name_or_path``).
    """
    if settings is None and datastore is None:
        settings, datastore = load_readouts(getattr(model, "name_or_path", None) or None)
    check_settings([memory], settings, datastore)
    if input_ids.dim() != 2 or input_ids.shape[1] < 1:
        raise ValueError(f"generate(memory=...): input_ids must be (batch, tokens >= 1), got {tuple(input_ids.shape)}")
    rows = [_generate_row(model, row[None], memory, settings, datastore, max_new_tokens, do_sample, temperature,
                          top_k, eos_token_id, generator) for row in input_ids]  # fmt: skip
    width = max(r.shape[1] for r in rows)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    return torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[1]), value=pad) for r in rows])


def _generate_row(model: Any, ids: Tensor, memory: str, settings: ReadoutSettings, datastore: Any, new: int,
                  do_sample: bool, temperature: float, top_k: int, eos: int | None, gen: Any) -> Tensor:
    sources = mode_sources(memory)
    T = ids.shape[1]
    out = model.model(ids, use_cache=True, memory_bank=None)  # 1. prefill
    hidden, state = out["hidden"][0], out["cache"]  # (T, E), in the model's dtype (the head's input)
    cache = StreamCache(settings.cache.window, settings.cache.k) if "cache" in sources else None
    if cache is not None and T > 1:
        cache.append(hidden[:-1].float().cpu(), torch.arange(T - 1), ids[0, 1:].cpu())
    h_model, generated = hidden[-1:], []  # (1, E)
    for step in range(new):
        h = h_model.float()
        pos = torch.tensor([T - 1 + step])
        lm = torch.log_softmax(model.lm_head(h_model).float(), -1)  # (1, V)
        comps = []  # 2. read the memories with the last hidden state
        lams = dict(zip(("cache", "knn"), settings.combined, strict=True)) if len(sources) == 2 else {}
        if cache is not None:
            comps.append(Component(cache.neighbours(h.cpu(), pos), lams.get("cache", settings.cache.lam),
                                   settings.cache.temperature))  # fmt: skip
        if "knn" in sources:
            comps.append(Component(datastore.search(h, settings.knn.k), lams.get("knn", settings.knn.lam),
                                   settings.knn.temperature))  # fmt: skip
        logp = mixture_log_probs(lm.cpu(), comps)[0]  # (V,)
        token = _pick(logp, do_sample, temperature, top_k, gen)  # 3. choose
        generated.append(token)
        if cache is not None:  # 4. the chosen token becomes the value of this position's entry
            cache.append(h.cpu(), pos, torch.tensor([token]))
        if eos is not None and token == eos:
            break
        step_ids = torch.tensor([[token]], device=ids.device)
        out = model.model(step_ids, cache=state, use_cache=True, memory_bank=None)  # 5. one recurrent step
        h_model, state = out["hidden"][0], out["cache"]
    return torch.cat([ids, torch.tensor([generated], dtype=ids.dtype, device=ids.device)], 1)


def _pick(logp: Tensor, do_sample: bool, temperature: float, top_k: int, gen: Any) -> int:
    if not do_sample:
        return int(logp.argmax())
    logits = logp / max(temperature, 1e-6)
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return int(torch.multinomial(torch.softmax(logits, -1).float(), 1, generator=gen))
