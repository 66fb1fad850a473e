"""The size guard: estimate a run's parameters and training memory from its config alone, before anything is
allocated, and refuse a run that cannot fit (``--num-layers 1000000000`` would otherwise allocate until the
machine swaps).

The estimate, in bytes (fp32 everywhere, the widest the training loop uses)::

    weights     4 · (params + buffers)
    gradients   4 · params
    AdamW       8 · params                               (exp_avg and exp_avg_sq)
    activations 4 · B · T · (L · ACTIVATION_WIDTHS · D + 2 · E)
    memory      4 · Σ over memory blocks of memory_max_size · (D + 2 · key dim)

with B = batch_size (one micro-batch: gradient accumulation frees the activations between micro-batches),
T = sequence_length, L = num_layers, D = hidden_dim, E = embedding_dim. The parameters are counted exactly:
one block of each kind is built on the ``meta`` device (shapes only, no storage) and multiplied by the
number of blocks of that kind; the embedding, projections, final norm and head are counted from the config.

``ACTIVATION_WIDTHS`` is the tensors autograd keeps per token and block, in units of D: measured with
``torch.autograd.graph.saved_tensors_hooks`` (parameters excluded) on the CPU in fp32, the slope over T of
the tiny, small, base, demo, small-test and liquidlm presets was 50 to 63 D; 64 rounds it up. It leaves
out the per-sequence terms (Hyena's filters, FFT buffers), allocator slack and the framework itself, so
the estimate is a floor: a run it refuses cannot fit, one it passes may still be tight.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from s3cmn.model_config import S3CMNConfig
from s3cmn.run_config import TrainingConfig
from s3cmn.training.state import TrainingError

logger = logging.getLogger(__name__)

ACTIVATION_WIDTHS = 64  # floats of width hidden_dim kept for backward per token and block (module docstring)
FLOAT_BYTES = 4
GIB = 2**30


@dataclass(frozen=True)
class SizeEstimate:
    """A training run's size from its config: parameter count and the bytes of each part of its memory."""

    parameters: int
    buffers: int
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    memory_bytes: int

    @property
    def total_bytes(self) -> int:
        return (self.weights_bytes + self.gradients_bytes + self.optimizer_bytes + self.activations_bytes
                + self.memory_bytes)

    def describe(self) -> str:
        """``~X GiB to train (N params: weights W, gradients G, AdamW A, activations C, memory M)``."""
        parts = [("weights", self.weights_bytes), ("gradients", self.gradients_bytes),
                 ("AdamW", self.optimizer_bytes), ("activations", self.activations_bytes)]
        if self.memory_bytes:
            parts.append(("memory stores", self.memory_bytes))
        return (f"~{_gib(self.total_bytes)} to train ({_count(self.parameters)} params; "
                + ", ".join(f"{name} {_gib(size)}" for name, size in parts) + ")")


def count_parameters(config: S3CMNConfig) -> tuple[int, int]:
    """(parameters, buffer elements) of ``S3CMNForCausalLM(config)``, without building it.

    One block per distinct layout is built on the meta device: every memory-reading block (their memory
    settings may differ by layer) and one block standing for all the others.
    """
    from s3cmn.modeling.block import S3CMNBlock

    E, D, V = config.embedding_dim, config.hidden_dim, config.vocab_size
    params = V * E + 2 * D  # token embedding, final LayerNorm
    if config.position_embedding == "learned":
        params += config.max_position_embeddings * E
    if E != D:
        params += 2 * E * D + D + E  # in_proj and out_proj, with biases
    if not config.tie_word_embeddings:
        params += V * E  # the LM head (bias-free)
    buffers = 0
    memory_layers = config.memory_layer_indices()
    plain = config.num_layers - len(memory_layers)
    plain_idx = next(i for i in range(len(memory_layers) + 1) if i not in memory_layers) if plain else None
    with torch.device("meta"):
        for layer, count in [*((i, 1) for i in memory_layers), *([(plain_idx, plain)] if plain else [])]:
            block = S3CMNBlock(config, layer)
            params += count * sum(p.numel() for p in block.parameters())
            buffers += count * sum(b.numel() for b in block.buffers())
    return params, buffers


def estimate_training_size(config: S3CMNConfig, training: TrainingConfig) -> SizeEstimate:
    """The memory a training run of ``config`` with ``training``'s batch shape needs (module docstring)."""
    params, buffers = count_parameters(config)
    tokens = training.batch_size * training.sequence_length
    activations = tokens * (config.num_layers * ACTIVATION_WIDTHS * config.hidden_dim + 2 * config.embedding_dim)
    memory = 0
    for layer in config.memory_layer_indices():
        fields = config.layer_memory_fields(layer)
        key_dim = config.hidden_dim
        if fields["memory_compression"] and fields["memory_compression_dim"]:  # 0: adaptive, at most D
            key_dim = fields["memory_compression_dim"]
        memory += fields["memory_max_size"] * (config.hidden_dim + 2 * key_dim)
    return SizeEstimate(params, buffers, FLOAT_BYTES * (params + buffers), FLOAT_BYTES * params,
                        2 * FLOAT_BYTES * params, FLOAT_BYTES * activations, FLOAT_BYTES * memory)


def available_memory(device: torch.device) -> tuple[int, str] | None:
    """(bytes free, where) for training on ``device``: the GPU's free memory on CUDA, else MemAvailable of
    /proc/meminfo; None where neither can be read (then nothing is checked)."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free on {torch.cuda.get_device_name(device)}"
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024, "available in RAM (MemAvailable)"
    return None


def check_training_fits(config: S3CMNConfig, training: TrainingConfig, device: torch.device) -> SizeEstimate:
    """Raise TrainingError (one line, both numbers) when the run's estimate exceeds the memory available on
    ``device``; ``training.force`` logs a warning instead. Returns the estimate."""
    estimate = estimate_training_size(config, training)
    free = available_memory(device)
    if free is None:
        logger.warning("cannot read the free memory of %s: the model's size (%s) is not checked", device,
                       estimate.describe())
        return estimate
    available, where = free
    if estimate.total_bytes <= available:
        logger.info("size estimate: %s; %s %s", estimate.describe(), _gib(available), where)
        return estimate
    message = f"the model needs {estimate.describe()}, but only {_gib(available)} is {where}"
    if training.force:
        logger.warning("%s; training anyway (--force)", message)
        return estimate
    raise TrainingError(f"{message}; lower num_layers/hidden_dim/batch_size/sequence_length or pass --force")


def _gib(size: int) -> str:
    gib = size / GIB
    return f"{gib:.3g} GiB" if gib < 1000 else f"{gib:,.0f} GiB"


def _count(n: int) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)
