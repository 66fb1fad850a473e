"""Loading a checkpoint for inference (fp32 or 8-bit) and streaming generation: the library behind s3cmn-generate.

``load_for_inference(checkpoint, quantize="int8", backend="auto")`` accepts a ``save_pretrained`` folder (fp32,
quantised here when asked) or a ``save_quantized`` folder (already int8; loaded as saved); the tokenizer is
the one saved beside the model. ``generate_text`` runs ``model.generate`` for one prompt, hands each piece
of text to a callback as soon as it is decoded, and returns the timing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from s3cmn.modeling.loading import load_model
from s3cmn.quantization.backends import Backend, QuantizationReport, quantize_model
from s3cmn.quantization.checkpoint import is_quantized_checkpoint, load_quantized

logger = logging.getLogger(__name__)

@dataclass
class GenerationResult:
    """One prompt's generation: the whole text (prompt + continuation), the new tokens and the wall time."""

    text: str
    new_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def load_for_inference(
    checkpoint: str | os.PathLike,
    quantize: Literal["none", "int8"] = "none",
    backend: Backend = "auto",
    threshold: float = 6.0,
    memory_int8: bool = True,
) -> tuple[nn.Module, Any, QuantizationReport | None]:
    """(model in eval mode, its tokenizer, the quantization report or None for fp32).

    ``quantize="int8"`` quantises an fp32 checkpoint with ``quantize_model`` (and its FAISS memories to SQ8
    when ``memory_int8``); a quantized checkpoint is loaded as saved whatever ``quantize`` says.
    Raises a :class:`~s3cmn.utils.checkpoints.CheckpointError` with a one-line reason.
    """
    import s3cmn  # noqa: F401  (registers the model with the Auto classes)
    from s3cmn.data.tokenizer import checkpoint_tokenizer

    root = Path(checkpoint)
    if is_quantized_checkpoint(root):
        model, report = load_quantized(root)
        if quantize == "none":
            logger.info("%s is an int8 checkpoint (%s backend): loaded as int8", root, report.backend)
    else:
        model, report = load_model(root), None
        if quantize == "int8":
            model, report = quantize_model(model, backend, threshold)
            if memory_int8:
                quantize_memories(model)
    tokenizer = checkpoint_tokenizer(root, required=True)
    return model, tokenizer, report


def quantize_memories(model: nn.Module) -> None:
    """Replace each FAISS memory of ``model`` (``model.memory_bank``) by its SQ8 twin, in place."""
    from s3cmn.quantization.memory_int8 import quantize_memory

    bank = getattr(model, "memory_bank", None)
    for layer, memory in bank or []:
        bank[layer] = quantize_memory(memory)


def _streamer(tokenizer: Any, on_text: Callable[[str], None]):
    from transformers import TextStreamer

    class CallbackStreamer(TextStreamer):
        """TextStreamer handing each finished piece of text to ``on_text`` instead of printing it."""

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            on_text(text + ("\n" if stream_end else ""))

    return CallbackStreamer(tokenizer, skip_prompt=False, skip_special_tokens=True)


@torch.no_grad()
def generate_text(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    *,
    max_new_tokens: int = 50,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    use_memory: bool = True,
    dynamic: bool = False,
    on_text: Callable[[str], None] | None = None,
) -> GenerationResult:
    """Continue ``prompt`` by up to ``max_new_tokens`` tokens: greedy when ``temperature`` is 0, else sampling
    with ``temperature`` / ``top_k`` (0 = off) / ``top_p`` (1 = off), seeded by ``seed``. ``on_text``
    receives the text piece by piece as it is produced (prompt first). ``dynamic``: dynamic evaluation (the
    weights adapt to the prompt and the text generated so far, :mod:`s3cmn.nexttoken.generate`; the
    FAISS memory off, ``top_p`` 1)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(f"need temperature >= 0, 0 < top_p <= 1, top_k >= 0; got {temperature}, {top_p}, {top_k}")
    if dynamic and top_p < 1:
        raise ValueError(f"top_p {top_p} is not supported with dynamic evaluation: sample with top_k")
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]  # (1, T)
    if ids.shape[1] == 0:  # an empty prompt: start from the beginning-of-text token
        candidates = (tokenizer.bos_token_id, tokenizer.cls_token_id, tokenizer.eos_token_id)
        start = next(t for t in candidates if t is not None)
        ids = torch.tensor([[start]])
    ids = ids.to(next(model.parameters()).device)
    if seed is not None:
        torch.manual_seed(seed)
    sample = temperature > 0
    kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=sample,
                                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    if sample:
        kwargs.update(temperature=temperature, top_k=top_k or None)
        if not dynamic:  # the read-out loop samples from the top k only
            kwargs["top_p"] = top_p
    if on_text is not None:
        kwargs["streamer"] = _streamer(tokenizer, on_text)
    if dynamic:
        kwargs["memory"] = "dynamic"
    else:
        kwargs.update(attention_mask=torch.ones_like(ids), use_memory=use_memory)
        if use_memory and not getattr(model, "memory_bank", None):
            logger.info("the model has no memory: generating without")
    start_time = time.perf_counter()
    out = model.generate(ids, **kwargs)  # (1, T + new)
    seconds = time.perf_counter() - start_time
    new = int(out.shape[1] - ids.shape[1])
    return GenerationResult(tokenizer.decode(out[0], skip_special_tokens=True), new, seconds)
