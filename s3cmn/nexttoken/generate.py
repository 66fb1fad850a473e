"""Generation with the next-token read-outs and with dynamic evaluation: ``model.generate(ids, memory=...)`` with
``cache``, ``knn``, ``cache+knn``, ``dynamic``, ``cache+dynamic``, ``knn+dynamic`` or ``cache+knn+dynamic``.

The prompt is prefilled once (its positions become cache entries: hidden state at t -> prompt token t + 1);
then each step reads the cache (the prompt and the tokens generated so far) and / or the datastore with the
last hidden state, mixes p_LM with p_mem exactly as in scoring (:mod:`.readout`), picks the next token
(greedy, or sampled with ``temperature`` / ``top_k``), writes (hidden state, chosen token) to the cache and
steps the recurrent model by one token. Batch 1 per row; rows are generated one after another.

Dynamic evaluation (:mod:`.dynamic`, Krause et al. 2018) adapts the weights to the text as it is read, with
the settings ``s3cmn-memory fit --dynamic`` saved (lr, decay, subset, windows per step, context and stride):

0. before the prefill the prompt is read as scoring reads a text (:func:`.dynamic.adapting_chunks`: sliding
   windows of ``context_length`` / ``stride``, one update per ``windows_per_step`` windows);
5. after every ``segment = windows_per_step * stride`` generated tokens (the targets one scoring update
   learns from), one update on those tokens: ``windows_per_step`` windows of one length (``context_length``,
   or what the text holds) ending ``stride`` apart at the last token, each scoring its last ``stride`` tokens,
   the shape of a scoring chunk.

The recurrent state is carried across updates, as Krause et al. carry an RNN's hidden state across segments:
each token is stepped through by the weights of its time and never recomputed. So the token at position t is
produced by weights that have learned from tokens before t only. The trained weights are restored when the
generation ends (also on an error). ``reset_at_documents`` does not apply (a prompt has no article marks).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from s3cmn.data.windows import Window
from s3cmn.nexttoken.datastore import NextTokenDatastore
from s3cmn.nexttoken.dynamic import (
    DYNAMIC_MODES,
    DynamicAdapter,
    DynamicSettings,
    adapting_chunks,
    base_mode,
    check_dynamic,
    load_dynamic,
    read_batch,
)
from s3cmn.nexttoken.dynamic_fit import dynamic_readouts
from s3cmn.nexttoken.fitted import ReadoutSettings, datastore_path, settings_path
from s3cmn.nexttoken.readout import StreamCache, mixture_log_probs
from s3cmn.nexttoken.stream import check_settings, components, mode_sources


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
                          datastore: NextTokenDatastore | None = None, dynamic: DynamicSettings | None = None,
                          max_new_tokens: int = 20, do_sample: bool = False, temperature: float = 1.0,
                          top_k: int = 0, eos_token_id: int | None = None, generator: torch.Generator | None = None,
                          streamer: Any = None) -> Tensor:  # fmt: skip
    """``input_ids`` (B, T) -> (B, T + new) with the read-out ``memory`` mixed into every step's distribution.

    ``settings`` / ``datastore`` / ``dynamic`` (dynamic evaluation's, for the modes ending in ``dynamic``) default
    to those saved beside the model (``model.name_or_path``). ``streamer``: transformers' ``TextStreamer``
    protocol (``put`` the prompt, then each token; ``end``), batch 1.
    """
    checkpoint = getattr(model, "name_or_path", None) or None
    base = base_mode(memory) if memory in DYNAMIC_MODES else memory
    if base != "off" and settings is None and datastore is None:
        settings, datastore = load_readouts(checkpoint)
    if memory in DYNAMIC_MODES:
        dynamic = dynamic if dynamic is not None else load_dynamic(checkpoint)
        check_dynamic([memory], dynamic)
        if not 1 <= dynamic.stride < dynamic.context_length:
            raise ValueError(f"dynamic settings: context_length {dynamic.context_length}, stride {dynamic.stride}: "
                             "generation reads in the fit's windows (1 <= stride < context_length)")  # fmt: skip
        settings = dynamic_readouts(settings, dynamic)  # the read-outs' weights refitted with dynamic on
    check_settings([base], settings, datastore)
    if input_ids.dim() != 2 or input_ids.shape[1] < 1:
        raise ValueError(f"generate(memory=...): input_ids must be (batch, tokens >= 1), got {tuple(input_ids.shape)}")
    if streamer is not None and input_ids.shape[0] != 1:
        raise ValueError(f"generate(memory=...): a streamer takes batch 1, got {input_ids.shape[0]} rows")

    def choose(logp: Tensor) -> int:
        return _pick(logp, do_sample, temperature, top_k, generator)

    rows = [generate_row(model, row[None], memory, choose, max_new_tokens, settings=settings, datastore=datastore,
                         dynamic=dynamic, eos_token_id=eos_token_id, streamer=streamer)
            for row in input_ids]  # fmt: skip
    width = max(r.shape[1] for r in rows)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    return torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[1]), value=pad) for r in rows])


@torch.no_grad()
def generate_row(model: Any, ids: Tensor, memory: str, choose: Callable[[Tensor], int], max_new_tokens: int, *,
                 settings: ReadoutSettings | None = None, datastore: NextTokenDatastore | None = None,
                 dynamic: DynamicSettings | None = None, eos_token_id: int | None = None,
                 streamer: Any = None) -> Tensor:  # fmt: skip
    """One prompt ``ids`` (1, T) -> (1, T + new), the steps of the module docstring; ``choose`` maps a step's
    log-probabilities (V,) to the next token (greedy, sampled, or a test's forced text). The settings are used
    as given: :func:`generate_with_readout` loads and checks them."""
    base = base_mode(memory) if memory in DYNAMIC_MODES else memory
    sources = mode_sources(base)
    T = ids.shape[1]
    if streamer is not None:
        streamer.put(ids.cpu())
    with DynamicAdapter(model, dynamic) if memory in DYNAMIC_MODES else contextlib.nullcontext() as adapter:
        if adapter is not None and T > 1:  # 0. read the prompt as scoring reads a text
            for _ in adapting_chunks(model, adapter, ids[0], dynamic.context_length, dynamic.stride):
                pass
        out = model.model(ids, use_cache=True, memory_bank=None)  # 1. prefill
        hidden, state = out["hidden"][0], out["cache"]  # (T, E), in the model's dtype (the head's input)
        cache = StreamCache(settings.cache.window, settings.cache.k) if "cache" in sources else None
        if cache is not None and T > 1:
            cache.append(hidden[:-1].float().cpu(), torch.arange(T - 1), ids[0, 1:].cpu())
        h_model, generated = hidden[-1:], []  # (1, E)
        for step in range(max_new_tokens):
            h, pos = h_model.float(), torch.tensor([T - 1 + step])
            lm = torch.log_softmax(model.lm_head(h_model).float(), -1)  # (1, V)
            cache_nb = cache.neighbours(h.cpu(), pos) if cache is not None else None  # 2. read the memories
            knn_nb = datastore.search(h, settings.knn.k) if "knn" in sources else None
            comps = components(base, settings, cache_nb, knn_nb)
            token = choose(mixture_log_probs(lm.cpu(), comps)[0])  # 3. choose from (V,)
            generated.append(token)
            if streamer is not None:
                streamer.put(torch.tensor([token]))
            if cache is not None:  # 4. the chosen token becomes the value of this position's entry
                cache.append(h.cpu(), pos, torch.tensor([token]))
            if token == eos_token_id or step == max_new_tokens - 1:
                break
            if adapter is not None and len(generated) % (dynamic.windows_per_step * dynamic.stride) == 0:
                text = torch.cat([ids[0], ids.new_tensor(generated)])  # (T + step + 1,)
                read_batch(model, adapter, text, segment_windows(text.numel(), dynamic))  # 5. learn the segment
            step_ids = torch.tensor([[token]], device=ids.device)
            out = model.model(step_ids, cache=state, use_cache=True, memory_bank=None)  # 6. one recurrent step
            h_model, state = out["hidden"][0], out["cache"]
    if streamer is not None:
        streamer.end()
    return torch.cat([ids, torch.tensor([generated], dtype=ids.dtype, device=ids.device)], 1)


def segment_windows(end: int, settings: DynamicSettings) -> list[Window]:
    """The windows of the update on the last ``windows_per_step * stride`` targets before ``end`` (step 5):
    ``windows_per_step`` windows of one length, ``context_length`` or as long as the text allows, ending
    ``stride`` apart at ``end``, each scoring its last ``stride`` targets. Needs ``end > windows_per_step * stride``."""
    W, S = settings.windows_per_step, settings.stride
    length = min(settings.context_length, end - (W - 1) * S)  # >= S + 1: every target has a token before it
    return [Window(e - length, e, e - S) for e in range(end - (W - 1) * S, end + 1, S)]


def _pick(logp: Tensor, do_sample: bool, temperature: float, top_k: int, gen: Any) -> int:
    if not do_sample:
        return int(logp.argmax())
    logits = logp / max(temperature, 1e-6)
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return int(torch.multinomial(torch.softmax(logits, -1).float(), 1, generator=gen))
