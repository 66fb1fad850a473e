"""The models users would pick instead of s3cmn, sized to match it, behind s3cmn's training/scoring interface.

Used by ``benchmarks/compare.py``, ``benchmarks/scaling.py``, ``scripts/ablation.py`` and the tests.

Every builder returns a module whose ``forward(input_ids, labels=None, use_cache=False, use_memory=...,
write_memory=..., logits_to_keep=0)`` returns an object with ``.loss`` (mean next-token cross-entropy of
``logits[:, :-1]`` against ``labels[:, 1:]``, the same formula as ``S3CMNForCausalLM``), ``.logits`` (B, T, V),
``.spike_rate`` and ``.memory_hit_rate``; ``save_pretrained(folder)``; and ``memory_bank``. So
``s3cmn.training.fit`` (same optimizer, schedule, precision, limits) and
``s3cmn.evaluation.perplexity.score_stream`` (same windows, same NLL) drive all models identically.

How each baseline is matched to the reference s3cmn config (``reference``: width D, depth L, vocabulary V,
memory off), so that the total parameter counts agree within ~1%:

- **gpt2**: ``transformers.GPT2LMHeadModel`` with n_embd = D, n_layer = L, n_head = num_attention_heads, tied
  embeddings, learned positions for the training length, the same residual/embedding dropout and no attention
  dropout (it would push torch off its fused SDPA kernel); the MLP inner width ``n_inner`` is
  solved so the total parameters match (a Transformer layer of width D has fewer parameters than an s3cmn
  block of width D, so its MLP gets wider).
- **lstm**: PyTorch's ``word_language_model`` ``RNNModel`` with ``--tied`` (embedding -> dropout -> LSTM ->
  dropout -> decoder tied to the embedding, uniform(-0.1, 0.1) init); tying needs nhid = emsize = D, so the
  number of LSTM layers is what is solved to match the parameters (an LSTM layer of width D has fewer
  parameters than an s3cmn block). Not an LSTM with projections (``proj_size``): PyTorch runs those without
  oneDNN, ~15% slower here.
- **mamba**: ``S3CMNForCausalLM`` with only the Mamba mixer (``use_hyena=False, use_spiking=False,
  use_memory=False, ssm_type="mamba"``), width D and depth L; ``mlp_ratio`` is solved to match parameters.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3cmn.memory.bank import MemoryBank
from s3cmn.model_config import S3CMNConfig

MODEL_KINDS = ("s3cmn", "s3cmn+mem", "gpt2", "lstm", "mamba")


@dataclass
class BaselineOutput:
    """The parts of ``S3CMNCausalLMOutput`` that ``fit`` and ``score_stream`` read."""

    loss: Tensor | None
    logits: Tensor
    spike_rate: Tensor | None = None
    memory_hit_rate: Tensor | None = None


def shifted_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of logits (B, T, V) at positions < T-1 against labels (B, T) at positions >= 1."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                           ignore_index=-100)


class BaselineLM(nn.Module):
    """Base of the adapters: loss, the memory arguments accepted and ignored, a safetensors save."""

    def __init__(self, description: dict[str, Any]) -> None:
        super().__init__()
        self.description = description  # JSON-ready: what the model is and how it was matched
        self.memory_bank = MemoryBank()  # no stores: fit() records its write counter; a baseline never writes

    def logits(self, input_ids: Tensor, logits_to_keep: int) -> Tensor:
        raise NotImplementedError

    def forward(self, input_ids: Tensor, labels: Tensor | None = None, use_cache: bool | None = False,
                use_memory: bool = False, write_memory: bool = False, logits_to_keep: int = 0) -> BaselineOutput:
        """ids (B, T) -> logits (B, T or logits_to_keep, V); the memory flags are accepted for interface parity."""
        logits = self.logits(input_ids, logits_to_keep)  # (B, T, V)
        loss = shifted_loss(logits, labels) if labels is not None else None
        return BaselineOutput(loss=loss, logits=logits.float())

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        from safetensors.torch import save_model

        Path(folder).mkdir(parents=True, exist_ok=True)
        save_model(self, str(Path(folder) / "model.safetensors"))  # handles the tied embedding / decoder
        (Path(folder) / "baseline.json").write_text(json.dumps(self.description, indent=1), encoding="utf-8")


# ------------------------------------------------------------------------------------------------------
# GPT-2


class GPT2Adapter(BaselineLM):
    """``transformers.GPT2LMHeadModel`` behind the s3cmn interface (no KV cache in training or scoring)."""

    def __init__(self, config: Any, description: dict[str, Any]) -> None:
        from transformers import GPT2LMHeadModel

        super().__init__(description)
        self.gpt2 = GPT2LMHeadModel(config)
        self.config = config

    def get_input_embeddings(self) -> nn.Embedding:
        return self.gpt2.get_input_embeddings()

    def logits(self, input_ids: Tensor, logits_to_keep: int) -> Tensor:
        return self.gpt2(input_ids, use_cache=False, logits_to_keep=logits_to_keep).logits


def gpt2_config(reference: S3CMNConfig, n_inner: int, positions: int) -> Any:
    from transformers import GPT2Config

    r = reference
    return GPT2Config(
        vocab_size=r.vocab_size, n_embd=r.hidden_dim, n_layer=r.num_layers, n_head=r.num_attention_heads,
        n_inner=n_inner, n_positions=positions, resid_pdrop=r.dropout, embd_pdrop=r.embedding_dropout,
        # attn_pdrop 0: attention dropout pushes PyTorch's CPU attention off its fused SDPA kernel (about 4x
        # slower per forward + backward at T = 2048); a user would not pay that, so neither does the baseline.
        attn_pdrop=0.0, tie_word_embeddings=True, bos_token_id=r.bos_token_id, eos_token_id=r.eos_token_id,
        pad_token_id=r.pad_token_id,
    )


def _gpt2_params(reference: S3CMNConfig, n_inner: int, positions: int) -> int:
    from transformers import GPT2LMHeadModel

    with torch.device("meta"):
        return count_params(GPT2LMHeadModel(gpt2_config(reference, n_inner, positions)))


def build_gpt2(reference: S3CMNConfig, target_params: int, positions: int,
               sizing_positions: int | None = None) -> GPT2Adapter:
    """GPT-2 of the reference's width and depth; ``n_inner`` solved so that, with a position table of
    ``sizing_positions`` (default ``positions``), its parameters match ``target_params``; built with ``positions``."""
    sizing = sizing_positions or positions
    lo, hi = _gpt2_params(reference, 64, sizing), _gpt2_params(reference, 128, sizing)
    per_unit = (hi - lo) / 64  # parameters are linear in n_inner
    n_inner = max(16, round(64 + (target_params - lo) / per_unit))
    cfg = gpt2_config(reference, n_inner, positions)
    matched = "same width and depth as s3cmn; n_inner solved to match the parameter count"
    if sizing != positions:
        matched += f" with {sizing} learned positions (built with {positions})"
    description = {"kind": "gpt2", "class": "transformers.GPT2LMHeadModel", "n_embd": cfg.n_embd,
                   "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": n_inner, "n_positions": positions,
                   "tied_embeddings": True, "matched": matched}
    return GPT2Adapter(cfg, description)


# ------------------------------------------------------------------------------------------------------
# LSTM (PyTorch examples, word_language_model/model.py RNNModel, LSTM with tie_weights)


class LSTMLM(BaselineLM):
    """Embedding -> dropout -> L-layer LSTM (hidden = embedding width D) -> dropout -> decoder tied to the embedding."""

    def __init__(self, vocab_size: int, emsize: int, nlayers: int, dropout: float, description: dict[str, Any]) -> None:
        super().__init__(description)
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocab_size, emsize)
        self.rnn = nn.LSTM(emsize, emsize, nlayers, dropout=dropout if nlayers > 1 else 0.0, batch_first=True)
        self.decoder = nn.Linear(emsize, vocab_size)
        self.decoder.weight = self.encoder.weight  # tie_weights (Press & Wolf 2016; Inan et al. 2016)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)  # the example's init_weights
        nn.init.zeros_(self.decoder.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder

    def logits(self, input_ids: Tensor, logits_to_keep: int) -> Tensor:
        emb = self.drop(self.encoder(input_ids))  # (B, T, D)
        out, _ = self.rnn(emb)  # (B, T, D): zero initial state, as for every fixed-length window
        if logits_to_keep:
            out = out[:, -logits_to_keep:]
        return self.decoder(self.drop(out))  # (B, T, V)


def lstm_params(vocab: int, emsize: int, nlayers: int) -> int:
    """Parameters of :class:`LSTMLM`: embedding, decoder bias (the weight is tied), 4 gates x (W_ih, W_hh, 2 biases)."""
    return vocab * emsize + vocab + nlayers * (4 * emsize * 2 * emsize + 8 * emsize)


def build_lstm(reference: S3CMNConfig, target_params: int) -> LSTMLM:
    """LSTM LM of the reference's embedding width; the number of layers solved to match ``target_params``."""
    V, D = reference.vocab_size, reference.embedding_dim
    nlayers = min(range(1, 33), key=lambda n: abs(lstm_params(V, D, n) - target_params))
    description = {"kind": "lstm", "class": "word_language_model RNNModel (LSTM, tied)", "emsize": D, "nhid": D,
                   "nlayers": nlayers, "dropout": reference.dropout,
                   "matched": "same width as s3cmn (nhid = emsize, which tying needs); the number of layers solved "
                              "to match the parameter count"}
    return LSTMLM(V, D, nlayers, reference.dropout, description)


# ------------------------------------------------------------------------------------------------------
# Mamba only (s3cmn blocks with the Mamba mixer and the MLP, nothing else)


def mamba_config(reference: S3CMNConfig, mlp_ratio: float) -> S3CMNConfig:
    # The plain Mamba stack a user would pick: the reference's block order and LayerScale are not inherited.
    return reference.replace(use_hyena=False, use_spiking=False, use_memory=False, ssm_type="mamba",
                             mlp_ratio=mlp_ratio, block_mixers=None, layer_scale_init=None)


def build_mamba(reference: S3CMNConfig, target_params: int) -> nn.Module:
    """Mamba-only S3CMNForCausalLM of the reference's width and depth; ``mlp_ratio`` solved to match parameters."""
    from s3cmn.modeling.lm import S3CMNForCausalLM

    def params(ratio: float) -> int:
        return count_params(S3CMNForCausalLM(mamba_config(reference, ratio)))

    with torch.random.fork_rng(devices=[]):  # sizing must not change the draws of the model's own init
        lo, hi = params(2.0), params(4.0)
    ratio = max(0.5, 2.0 + 2.0 * (target_params - lo) / (hi - lo))
    ratio = math.floor(ratio * reference.hidden_dim) / reference.hidden_dim  # a whole inner width
    model = S3CMNForCausalLM(mamba_config(reference, ratio))
    model.description = {"kind": "mamba", "class": "S3CMNForCausalLM (Mamba mixer + MLP only)",
                         "hidden_dim": reference.hidden_dim, "num_layers": reference.num_layers, "mlp_ratio": ratio,
                         "matched": "same width and depth as s3cmn; mlp_ratio solved to match the parameter count"}
    return model


# ------------------------------------------------------------------------------------------------------
# s3cmn and the dispatcher


def build_model(kind: str, reference: S3CMNConfig, positions: int, sizing_positions: int | None = None) -> nn.Module:
    """The model ``kind`` (one of ``MODEL_KINDS``) matched to ``reference`` (memory off) as the module docstring says.

    ``positions``: GPT-2's learned position table (at least the longest input); ``sizing_positions``: the table
    size its parameters are matched at (default ``positions``). Draws its initial weights from torch's global
    RNG: seed before calling.
    """
    from s3cmn.modeling.lm import S3CMNForCausalLM

    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}: expected one of {', '.join(MODEL_KINDS)}")
    reference = reference.replace(use_memory=False)
    if kind in ("s3cmn", "s3cmn+mem"):
        model = S3CMNForCausalLM(reference.replace(use_memory=kind == "s3cmn+mem"))
        model.description = {"kind": kind, "class": "S3CMNForCausalLM", "hidden_dim": reference.hidden_dim,
                             "num_layers": reference.num_layers, "use_memory": kind == "s3cmn+mem",
                             "matched": "the reference"}
        return model
    with torch.random.fork_rng(devices=[]):  # sizing must not change the draws of the model's own init
        target = count_params(S3CMNForCausalLM(reference))
    if kind == "gpt2":
        return build_gpt2(reference, target, positions, sizing_positions)
    if kind == "lstm":
        return build_lstm(reference, target)
    return build_mamba(reference, target)


def count_params(model: nn.Module) -> int:
    """Parameters, each counted once (tied weights once)."""
    return sum(p.numel() for p in model.parameters())


def embedding_params(model: nn.Module) -> int:
    """Parameters of the input embedding (the tied output matrix is the same tensor)."""
    return model.get_input_embeddings().weight.numel()
