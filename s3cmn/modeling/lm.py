"""S3CMNForCausalLM: embedding → N S³CMN blocks → norm → tied LM head, a transformers model with generate()."""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel

from s3cmn.memory.bank import MemoryBank
from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.block import S3CMNBlock
from s3cmn.modeling.cache import S3CMNCache
from s3cmn.modeling.decode import linear
from s3cmn.modeling.outputs import S3CMNCausalLMOutput, S3CMNModelOutput
from s3cmn.modeling.spiking import SpikeStats
from s3cmn.ops.dropout import Dropout
from s3cmn.ops.linear_cross_entropy import linear_cross_entropy

logger = logging.getLogger(__name__)

MEMORY_DIR = "memory"
DECODE_ROWS = 8  # logits of at most this many positions take the decode head (generation, logits_to_keep)
WEIGHTS_NAME = "model.safetensors"
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "subfolder", "token")
# Loading keywords transformers / lm-eval pass to every from_pretrained (mostly as None). None is ignored;
# a real value is honoured where it means something here (see _apply_loading_kwargs), else refused.
_LOADING_KWARGS = (
    "device_map", "gguf_file", "max_memory", "quantization_config", "offload_folder", "offload_state_dict",
    "offload_buffers", "low_cpu_mem_usage", "attn_implementation", "tp_plan", "tp_size", "load_in_8bit",
    "load_in_4bit", "use_safetensors", "variant", "key_mapping", "output_loading_info", "weights_only",
    "use_kernels", "distributed_config", "device_mesh",
)
TRAINER_STATE = "trainer_state.json"


def sinusoidal_positions(positions: Tensor, dim: int) -> Tensor:
    """Fixed sin/cos encodings (Vaswani et al. 2017) of integer positions (T,) -> (T, dim)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device) / max(half, 1))
    angles = positions.float()[:, None] * freq[None, :]  # (T, dim/2)
    enc = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return F.pad(enc, (0, dim - enc.shape[-1]))  # (T, dim)


def _check_loading_kwargs(owner: str, loading: dict[str, Any]) -> str | None:
    """The device to move the loaded model to, from transformers' loading keywords; refuse what cannot be honoured.

    ``None`` values (what lm-eval and pipelines pass) are ignored. ``device_map`` may name one device
    ("cpu", "cuda", "cuda:1", or "auto" = cuda when available): the model is not split across devices.
    ``low_cpu_mem_usage`` is a hint with no effect here; ``use_safetensors`` may only be True.
    """
    device = None
    for name, value in loading.items():
        if value is None or (name == "low_cpu_mem_usage") or (name == "use_safetensors" and value is True):
            continue
        if name in ("load_in_8bit", "load_in_4bit", "output_loading_info", "use_kernels") and value is False:
            continue
        if name == "attn_implementation" and value in ("eager", "sdpa"):
            continue  # the recurrent mixers have no attention implementation to choose
        if name == "device_map" and isinstance(value, (str, torch.device)):
            device = str(value)
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            continue
        if name == "device_map" and isinstance(value, dict) and len(set(value.values())) == 1:
            device = str(next(iter(value.values())))
            device = f"cuda:{device}" if device.isdigit() else device
            continue
        hint = {
            "quantization_config": "load the fp32 model, then s3cmn.quantization.quantize_model (or s3cmn-eval "
                                   "--quantize int8)",
            "load_in_8bit": "use s3cmn.quantization.quantize_model(model, backend='bnb')",
            "gguf_file": "s3cmn checkpoints are safetensors folders",
            "device_map": "pass one device (device_map='cpu' / 'cuda'); the model is not split across devices",
            "max_memory": "the model is not split across devices",
        }.get(name, "the option does not apply to S3CMN checkpoints")
        raise TypeError(f"{owner}.from_pretrained cannot honour {name}={value!r}: {hint}")
    return device


def _trained_sequence_length(path: str) -> int | None:
    """The sequence length the checkpoint in folder ``path`` was trained at (``trainer_state.json``), if known."""
    import json

    state_file = os.path.join(path, TRAINER_STATE)
    if not os.path.isfile(state_file):
        return None
    try:
        length = json.loads(open(state_file, encoding="utf-8").read()).get("sequence_length")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        logger.warning("%s is unreadable (%s): the trained sequence length is unknown", state_file, err)
        return None
    return int(length) if isinstance(length, int) and length > 0 else None


def save_config(config: S3CMNConfig, directory: str | os.PathLike) -> None:
    """``config.save_pretrained(directory)`` without the runtime-only ``n_positions`` (see ``from_pretrained``)."""
    trained_length = config.__dict__.pop("n_positions", None)
    try:
        config.save_pretrained(str(directory))
    finally:
        if trained_length is not None:
            config.n_positions = trained_length


class S3CMNPreTrainedModel(PreTrainedModel):
    """Weight init and the transformers plumbing shared by S³CMN models."""

    config_class = S3CMNConfig
    config: S3CMNConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _is_stateful = True
    _no_split_modules = ["S3CMNBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, initializer_range) for the embedding, the projections and the MLPs; ones/zeros for norms.

        Mixers (Hyena, Mamba, S4D, LIF, memory reader) initialise their own parameters in their
        constructors (dt bias, A_log, filters, thresholds), so they are left untouched here.
        """
        std = self.config.initializer_range
        from s3cmn.modeling.mlp import MLP

        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (MLP, S3CMNModel)):
            for child in module.children():
                if isinstance(child, nn.Linear):
                    nn.init.normal_(child.weight, std=std)
                    if child.bias is not None:
                        nn.init.zeros_(child.bias)
            if isinstance(module, MLP):  # GPT-2's scaled init of the residual projection
                nn.init.normal_(module.proj.weight, std=std / math.sqrt(2 * self.config.num_layers))

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # The recurrent states are not key/value caches: the model builds its own S3CMNCache.
        return False


class S3CMNModel(S3CMNPreTrainedModel):
    """The backbone: token embedding (+ positions) → blocks → final norm, returning hidden states (B, T, D)."""

    def __init__(self, config: S3CMNConfig) -> None:
        super().__init__(config)
        E, D = config.embedding_dim, config.hidden_dim
        self.embed_tokens = nn.Embedding(config.vocab_size, E)
        self.embed_positions = (
            nn.Embedding(config.max_position_embeddings, E) if config.position_embedding == "learned" else None
        )
        self.embed_dropout = Dropout(config.embedding_dropout)
        self.in_proj = nn.Linear(E, D) if E != D else None
        # every layout, LiquidLM's reservoir one included, is an S3CMNBlock (config.resolved_block_mixers())
        self.layers = nn.ModuleList(S3CMNBlock(config, i) for i in range(config.num_layers))
        self.norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.out_proj = nn.Linear(D, E) if E != D else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def embed(self, input_ids: Tensor, start: int) -> Tensor:
        """Token (+ position) embeddings of ids (B, T) whose first token sits at position ``start``."""
        x = self.embed_tokens(input_ids)  # (B, T, E)
        T = input_ids.shape[1]
        if self.config.position_embedding != "none":
            positions = torch.arange(start, start + T, device=input_ids.device)
            if self.embed_positions is not None:
                if start + T > self.config.max_position_embeddings:
                    raise ValueError(
                        f"position {start + T - 1} is beyond max_position_embeddings = "
                        f"{self.config.max_position_embeddings} (learned positions); use a shorter context or "
                        "position_embedding = 'none' / 'sinusoidal'"
                    )
                x = x + self.embed_positions(positions)
            else:
                x = x + sinusoidal_positions(positions, x.shape[-1]).to(x.dtype)
        x = self.embed_dropout(x)
        return self.in_proj(x) if self.in_proj is not None else x  # (B, T, D)

    def forward(
        self,
        input_ids: Tensor,
        cache: S3CMNCache | None = None,
        use_cache: bool = False,
        memory_bank: MemoryBank | None = None,
        output_hidden_states: bool = False,
    ) -> S3CMNModelOutput:
        """ids (B, T) -> S3CMNModelOutput(hidden (B, T, E), cache, blocks [BlockOutput], hidden_states).

        With a cache and T == 1 each block runs its recurrent ``step``; otherwise the parallel ``forward``,
        continuing from the cached state when there is one. ``memory_bank`` goes to every block as its
        ``memory``: a block reads ``memory_bank.store(i)`` and stages what it writes (None: no memory).
        """
        B, T = input_ids.shape
        start = cache.seen_tokens if cache is not None else 0
        if use_cache and cache is None:
            cache = S3CMNCache(len(self.layers))
        step = cache is not None and start > 0 and T == 1
        x = self.embed(input_ids, start)  # (B, T, D)
        if step:
            x = x[:, 0]  # (B, D)
        hidden_states: list[Tensor] = []
        blocks = []
        for i, block in enumerate(self.layers):
            if output_hidden_states:
                hidden_states.append(x if not step else x[:, None])
            layer_state = cache.layers[i] if cache is not None else None
            out = block.step(x, layer_state, memory_bank) if step else block(x, layer_state, memory_bank)
            if cache is not None:
                cache.layers[i] = out.state
            blocks.append(out)
            x = out.hidden
        if step:
            x = x[:, None]  # (B, 1, D)
        x = self.norm(x)
        if output_hidden_states:
            hidden_states.append(x)
        if self.out_proj is not None:
            x = self.out_proj(x)  # (B, T, E)
        if cache is not None:
            cache.seen_tokens = start + T
        return S3CMNModelOutput(hidden=x, cache=cache, blocks=blocks, hidden_states=tuple(hidden_states) or None)


class S3CMNForCausalLM(S3CMNPreTrainedModel, GenerationMixin):
    """The S³CMN language model: ``forward(input_ids, labels=...)`` → loss and logits; ``generate()``.

    The external FAISS memories (one per block in ``config.memory_layers``) live in ``self.memory_bank``
    (:class:`~s3cmn.memory.bank.MemoryBank`, stores by layer index); they are not parameters.
    ``forward(..., write_memory=True)`` commits the states the blocks staged after the whole forward pass, so
    no position of a segment can read what the segment itself wrote.
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    # transformers.Trainer: the loss is a mean over the batch's tokens (no num_items_in_batch argument), so the
    # Trainer scales it for gradient accumulation itself.
    accepts_loss_kwargs = False

    def __init__(self, config: S3CMNConfig) -> None:
        super().__init__(config)
        self.model = S3CMNModel(config)
        self.lm_head = nn.Linear(config.embedding_dim, config.vocab_size, bias=False)
        self.memory_bank = MemoryBank.from_config(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    # ------------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: Tensor,
        labels: Tensor | None = None,
        cache: S3CMNCache | None = None,
        use_cache: bool | None = None,
        attention_mask: Tensor | None = None,
        output_hidden_states: bool = False,
        logits_to_keep: int = 0,
        use_memory: bool = True,
        write_memory: bool = False,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> S3CMNCausalLMOutput:
        """ids (B, T) -> S3CMNCausalLMOutput (loss when labels are given, logits (B, T, V), statistics).

        ``cache`` continues from an earlier call (generation); ``use_memory`` False skips the memory read
        (the ablation); ``write_memory`` True adds this segment's states to the memory after the forward.
        ``attention_mask`` may only mark every token as real: padding is not supported by the recurrences.
        """
        cache = kwargs.pop("past_key_values", None) if cache is None else cache
        for ignored in ("cache_position", "position_ids"):  # generate() may pass them; positions come from the cache
            kwargs.pop(ignored, None)
        if kwargs:
            raise TypeError(f"S3CMNForCausalLM.forward got unexpected arguments: {sorted(kwargs)}")
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError(
                "attention_mask contains padding: S3CMN's recurrent mixers do not support padded batches; "
                "generate prompts of equal length or one at a time"
            )
        if labels is not None and logits_to_keep:
            raise ValueError("logits_to_keep cannot be combined with labels: the loss needs every position's logits")
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, tokens), got shape {tuple(input_ids.shape)}")
        use_cache = self.config.use_cache and not self.training if use_cache is None else use_cache
        bank = self.memory_bank
        if self._compiled_decoder is not None and self._takes_compiled_step(input_ids, cache, labels, use_memory,
                                                                            write_memory, output_hidden_states):
            return self._compiled_step(input_ids, cache, logits_to_keep, use_cache)
        # 1. the backbone: blocks read the stores (use_memory) and stage their writes (write_memory)
        with bank.forward_pass(read=use_memory, write=write_memory):
            out = self.model(input_ids, cache, use_cache, bank, output_hidden_states)
            # 2. the head and the loss
            loss, logits = self._head(out.hidden, labels, logits_to_keep)
            # 3. the writes, after the whole forward
            if bank.pending:  # a NaN/inf loss would poison the stores: discarded (on every rank if on any)
                finite = loss is None or bool(torch.isfinite(loss))
                if not finite:
                    logger.debug("loss is %s: this segment is not written to the memory", loss.item())
                bank.finish(input_ids, finite)
        return self._output(out, loss, logits, use_cache)

    # ------------------------------------------------------------------------------------------------
    _compiled_decoder: Any = None

    def compile_decode(self, compile_options: dict[str, Any] | None = None, weights: str = "fp32",
                       gemv: str = "auto") -> S3CMNForCausalLM:
        """Decode one token at a time through a ``torch.compile``d step of the whole model
        (:mod:`s3cmn.modeling.compiled_decode`): the same logits and states as the eager step within fp32
        rounding, ~2x faster at batch 1, after a compile of tens of seconds on the first token of each batch
        size. ``weights`` "bf16" / "fp16": the weight matrices stored at half the bytes, "int8": at a quarter
        (one scale per row); arithmetic in fp32, the logits of the model with those matrices rounded. Raises
        ValueError for a model it does not cover (the reason says which part). Returns self."""
        from s3cmn.modeling.compiled_decode import INDUCTOR_OPTIONS, CompiledDecoder

        options = {"options": dict(INDUCTOR_OPTIONS)} if compile_options is None else compile_options
        self._compiled_decoder = CompiledDecoder(self, options, weights, gemv)
        logger.info("decode: compiled step (torch.compile, %s), %s weight matrices, %s GEMV", options, weights,
                    self._compiled_decoder.gemv)
        return self

    def _takes_compiled_step(self, input_ids: Tensor, cache: S3CMNCache | None, labels: Tensor | None,
                             use_memory: bool, write_memory: bool, output_hidden_states: bool) -> bool:
        """Whether this call is a one-token decode step the compiled step covers (else the eager path)."""
        return (
            cache is not None and cache.seen_tokens > 0 and input_ids.shape[1] == 1 and labels is None
            and not self.training and not torch.is_grad_enabled() and not output_hidden_states and not write_memory
            and not (use_memory and self.memory_bank.searchable)
            and input_ids.device.type == "cpu"
        )

    def _compiled_step(self, input_ids: Tensor, cache: S3CMNCache, logits_to_keep: int,
                       use_cache: bool) -> S3CMNCausalLMOutput:
        logits, states, stats, spike_rate = self._compiled_decoder(input_ids, cache.layers)
        cache.layers = states
        cache.seen_tokens += 1
        steps = self._compiled_decoder.spike[0] * input_ids.shape[0]
        spike_stats = [SpikeStats(count, steps, rate, mean, std) for count, rate, mean, std in stats]
        return S3CMNCausalLMOutput(logits=logits, cache=cache if use_cache else None, spike_stats=spike_stats or None,
                                   spike_rate=spike_rate)

    def _head(self, hidden: Tensor, labels: Tensor | None, logits_to_keep: int) -> tuple[Tensor | None, Tensor | None]:
        """hidden (B, T, E) -> (loss, logits (B, T or k, V)); training computes the loss in chunks, logits None."""
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        loss = logits = None
        if labels is not None:
            # Shift the labels, not the logits: slicing (B, T, V) logits would copy them (the largest tensor).
            targets = F.pad(labels[:, 1:], (0, 1), value=-100).reshape(-1)  # (B*T,); the last predicts nothing
            if self.training and torch.is_grad_enabled():
                # Training: the head and its loss in row chunks, never the (B, T, V) float32 logits (logits=None).
                loss = linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), self.lm_head.weight, targets)
            else:
                logits = self.lm_head(hidden).float()  # (B, T, V)
                loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets, ignore_index=-100)
        elif hidden.shape[0] * hidden.shape[1] <= DECODE_ROWS and not torch.is_grad_enabled():
            logits = linear(self.lm_head, hidden).float()  # decoding: the decode path's GEMV (B, T, V)
        else:
            logits = self.lm_head(hidden).float()  # (B, T, V)
        return loss, logits

    def _output(
        self, out: S3CMNModelOutput, loss: Tensor | None, logits: Tensor | None, use_cache: bool
    ) -> S3CMNCausalLMOutput:
        """The typed output, with the blocks' spike and memory-read statistics and their means."""
        spike_stats = [b.spike_stats for b in out.blocks if b.spike_stats is not None]
        memory_stats = [b.memory_stats for b in out.blocks if b.memory_stats is not None]
        spike_rate = torch.stack([torch.as_tensor(s.firing_rate) for s in spike_stats]).mean() if spike_stats else None
        hit_rate = (
            torch.tensor([float(s.hit_rate) for s in memory_stats]).mean() if memory_stats else None
        )
        return S3CMNCausalLMOutput(
            loss=loss,
            logits=logits,
            cache=out.cache if use_cache else None,
            hidden_states=out.hidden_states,
            spike_stats=spike_stats or None,
            memory_stats=memory_stats or None,
            spike_rate=spike_rate,
            memory_hit_rate=hit_rate,
        )

    # ------------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """transformers' save (config + safetensors weights), plus each memory store under ``memory/<layer>/``."""
        trained_length = self.config.__dict__.pop("n_positions", None)  # runtime only (see from_pretrained)
        try:
            super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            if trained_length is not None:
                self.config.n_positions = trained_length
        self.memory_bank.save(os.path.join(save_directory, MEMORY_DIR))

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, config: S3CMNConfig | None = None,
        **kwargs: Any,
    ) -> S3CMNForCausalLM:
        """Load config + safetensors weights (a local folder or a hub id), plus the saved memory stores.

        The model is built normally and its ``state_dict`` loaded strictly (no meta-device construction, no
        pickle): a missing, corrupt or mismatched checkpoint raises an error that names the file and the keys.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        from transformers.utils import cached_file

        hub_kwargs = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}
        dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
        for ignored in ("_from_auto", "trust_remote_code", "adapter_kwargs", "_commit_hash", "code_revision"):
            kwargs.pop(ignored, None)
        loading = {k: kwargs.pop(k) for k in _LOADING_KWARGS if k in kwargs}
        device = _check_loading_kwargs(cls.__name__, loading)
        if args or kwargs:
            raise TypeError(f"{cls.__name__}.from_pretrained got unsupported arguments: {sorted(kwargs) or args}")
        path = str(pretrained_model_name_or_path)
        if config is None:
            config = S3CMNConfig.from_pretrained(path, **hub_kwargs)
        weights = cached_file(path, WEIGHTS_NAME, **hub_kwargs)
        try:
            state = load_file(weights)
        except (SafetensorError, OSError) as err:
            raise ValueError(
                f"checkpoint weights {weights} are unreadable or corrupt ({err}); re-save the model"
            ) from None
        model = cls(config)
        tied = set(cls._tied_weights_keys) if config.tie_word_embeddings else set()
        expected = model.state_dict()
        mismatched = [f"{k} is {tuple(v.shape)} in the weights but {tuple(expected[k].shape)} by the config"
                      for k, v in state.items() if k in expected and v.shape != expected[k].shape]
        if mismatched:  # load_state_dict would raise a RuntimeError listing every tensor
            more = f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
            raise ValueError(
                f"checkpoint {weights} does not match its config: {mismatched[0]}{more}; the config.json was "
                "edited or belongs to another model: restore it, or pass the settings the model was trained with"
            )
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if k not in tied]
        if missing or unexpected:
            raise ValueError(
                f"checkpoint {weights} does not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        model.tie_weights()
        if dtype is not None and dtype != "auto":
            model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        folder = os.path.join(path, MEMORY_DIR)
        if os.path.isdir(folder):
            model.memory_bank.load(folder)
        trained_length = _trained_sequence_length(path)
        if trained_length is not None:
            # What harnesses read as the context length (lm-eval checks n_positions first); runtime only,
            # never saved (save_pretrained drops it), because it describes training, not the network.
            model.config.n_positions = trained_length
        model.name_or_path = model.config.name_or_path = path  # where generate(memory=...) finds fitted read-outs
        if device is not None:
            model = model.to(device)
        return model.eval()

    # ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, inputs: Tensor | None = None, *args: Any, **kwargs: Any) -> Any:
        """transformers' ``generate``; a padded batch is refused before any work.

        The recurrences (Hyena, Mamba, S4D, LIF) would fold pad tokens into every later state, so prompts of
        different lengths are generated one at a time (lm-eval: ``--model s3cmn`` does that for batches).
        """
        mask = kwargs.get("attention_mask")
        if mask is not None and not bool(mask.all()):
            side = "left" if bool(mask[:, -1].all()) else "right"
            raise ValueError(
                f"generate got a {side}-padded batch (attention_mask has zeros): S3CMN's recurrent mixers cannot "
                "skip pad tokens; generate prompts of equal length or one at a time (batch_size=1), or use the "
                "lm-eval model 's3cmn' (s3cmn.integrations.lm_eval), which splits padded batches by row"
            )
        self._check_generation_length(inputs if inputs is not None else kwargs.get("input_ids"), kwargs)
        memory = kwargs.pop("memory", None)  # off | learned | a read-out or dynamic mode (s3cmn.nexttoken)
        readouts = ("cache", "knn", "cache+knn", "dynamic", "cache+dynamic", "knn+dynamic", "cache+knn+dynamic")
        if memory in readouts:
            return self._generate_with_readout(inputs, memory, args, kwargs)
        if memory is not None:
            if memory not in ("off", "learned"):
                raise ValueError(f"generate: memory={memory!r} must be one of off, learned, {', '.join(readouts)}")
            kwargs["use_memory"] = memory == "learned"
        return super().generate(inputs, *args, **kwargs)

    def _generate_with_readout(self, inputs: Tensor | None, memory: str, args: tuple, kwargs: dict[str, Any]) -> Tensor:
        """generate(memory="cache" | "knn" | "cache+knn" | "dynamic" | ...): the next-token read-outs mixed into every
        step, dynamic evaluation adapting the weights to the text read so far."""
        from s3cmn.nexttoken.generate import generate_with_readout

        ids = inputs if inputs is not None else kwargs.pop("input_ids", None)
        options = {"settings": kwargs.pop("readout_settings", None), "datastore": kwargs.pop("datastore", None),
                   "dynamic": kwargs.pop("dynamic_settings", None), "streamer": kwargs.pop("streamer", None),
                   "max_new_tokens": kwargs.pop("max_new_tokens", 20), "do_sample": kwargs.pop("do_sample", False),
                   "temperature": kwargs.pop("temperature", 1.0), "top_k": kwargs.pop("top_k", 0) or 0,
                   "eos_token_id": kwargs.pop("eos_token_id", None), "generator": kwargs.pop("generator", None)}
        for ignored in ("attention_mask", "pad_token_id", "use_cache"):
            kwargs.pop(ignored, None)
        if args or kwargs:
            raise TypeError(f"generate(memory={memory!r}) does not support {sorted(kwargs) or args}: it takes "
                            f"{sorted(options)}")  # fmt: skip
        return generate_with_readout(self, ids, memory, **options)

    def _check_generation_length(self, inputs: Tensor | None, kwargs: dict[str, Any]) -> None:
        """With learned positions, the prompt and the new tokens must fit the table: said before any token."""
        table = self.config.max_position_embeddings
        if self.config.position_embedding != "learned" or inputs is None:
            return
        prompt = inputs.shape[-1]
        generation = kwargs.get("generation_config") or self.generation_config
        new = kwargs.get("max_new_tokens", generation.max_new_tokens)
        total = prompt + new if new is not None else kwargs.get("max_length", generation.max_length)
        if total <= table:
            return
        room = table - prompt
        fits = f"at most {room} new tokens fit (--max-new-tokens {room})" if room > 0 else "shorten the prompt"
        asked = f"{new} new tokens" if new is not None else f"max_length {total}"
        raise ValueError(
            f"the prompt ({prompt} tokens) and {asked} need {total} positions, but the learned position table "
            f"has {table} (max_position_embeddings): {fits}"
        )

    def prepare_inputs_for_generation(
        self,
        input_ids: Tensor,
        cache: S3CMNCache | None = None,
        use_cache: bool | None = None,
        attention_mask: Tensor | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Feed only the tokens the cache has not consumed yet (all of them at the first call)."""
        cache = kwargs.get("past_key_values") if cache is None else cache
        if cache is not None and cache.seen_tokens > 0:
            input_ids = input_ids[:, cache.seen_tokens :]
        return {"input_ids": input_ids, "cache": cache, "use_cache": use_cache, "attention_mask": attention_mask,
                "use_memory": kwargs.get("use_memory", True)}

    def _update_model_kwargs_for_generation(
        self, outputs: Any, model_kwargs: dict[str, Any], is_encoder_decoder: bool = False, num_new_tokens: int = 1
    ) -> dict[str, Any]:
        model_kwargs["cache"] = outputs.cache
        if (mask := model_kwargs.get("attention_mask")) is not None:
            model_kwargs["attention_mask"] = torch.cat([mask, mask.new_ones((mask.shape[0], num_new_tokens))], -1)
        return model_kwargs

    def _reorder_cache(self, cache: S3CMNCache, beam_idx: torch.LongTensor) -> S3CMNCache:
        cache.reorder_cache(beam_idx)
        return cache


# ``import s3cmn`` registered a stand-in (s3cmn.modeling.auto) that imports this module; now the real class
AutoModelForCausalLM.register(S3CMNConfig, S3CMNForCausalLM, exist_ok=True)
