"""The S³CMN networks of the vision and robotics tasks: the same blocks as the language model, with a task
front end and head.

- :class:`BlockStack`: ``num_layers`` :class:`~s3cmn.modeling.block.S3CMNBlock` s and a final norm, with
  ``forward`` over a sequence and ``step`` over one position, both taking and returning the per-block states.
- :class:`VisionS3CMN`: images -> :class:`ConvFrontEnd` (ReLU or LIF after each conv) -> the feature map's
  positions in raster order as a sequence -> blocks -> mean over the sequence -> class logits.
- :class:`DynamicsS3CMN`: (state, action) at each time step -> blocks -> the change to the next state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.block import S3CMNBlock
from s3cmn.modeling.cache import LayerState
from s3cmn.ops.lif import lif_scan
from s3cmn.tasks.config import TaskConfig
from s3cmn.utils.fields import ConfigError

__all__ = ["BlockStack", "ConvFrontEnd", "DynamicsModel", "DynamicsOutput", "DynamicsS3CMN", "SpikingActivation",
           "VisionOutput", "VisionS3CMN", "conv_output_shape"]

BETA_INIT = 0.9  # the spiking front end's initial membrane decay


def conv_output_shape(task: TaskConfig, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """(C, H, W) of the conv front end's output for images (C, H, W); an error if a layer shrinks it to nothing."""
    _, H, W = image_shape
    for i, (k, s, p) in enumerate(zip(task.conv_kernel_sizes, task.conv_strides, task.conv_padding, strict=True)):
        H, W = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
        if H < 1 or W < 1:
            raise ConfigError(f"conv layer {i} (kernel {k}, stride {s}, padding {p}) leaves no pixels of the "
                             f"{image_shape[1]}x{image_shape[2]} images: use smaller kernels / strides or more padding")
    return task.conv_channels[-1], H, W


# --------------------------------------------------------------------------------------------------
# the shared backbone


@dataclass
class StackOutput:
    hidden: Tensor  # (B, T, D) or (B, D) in step mode, after the final norm
    states: list[LayerState]
    spike_stats: list[Any] = field(default_factory=list)  # one per block with a spiking layer


class BlockStack(nn.Module):
    """The S³CMN blocks of a task model and their final LayerNorm (no external memory)."""

    def __init__(self, config: S3CMNConfig) -> None:
        super().__init__()
        if config.use_memory:
            raise ConfigError("the vision and robotics tasks read no external memory: set use_memory = false")
        self.blocks = nn.ModuleList(S3CMNBlock(config, i) for i in range(config.num_layers))
        self.norm = nn.LayerNorm(config.hidden_dim, eps=config.layer_norm_eps)

    def forward(self, x: Tensor, states: list[LayerState] | None = None) -> StackOutput:
        """x (B, T, D) -> hidden (B, T, D); ``states`` None starts from zeros, otherwise continues from them."""
        return self._run(x, states, step=False)

    def step(self, x: Tensor, states: list[LayerState] | None) -> StackOutput:
        """x (B, D) -> hidden (B, D) for one position."""
        return self._run(x, states, step=True)

    def _run(self, x: Tensor, states: list[LayerState] | None, step: bool) -> StackOutput:
        states = states or [None] * len(self.blocks)
        new_states, spike_stats = [], []
        for block, state in zip(self.blocks, states, strict=True):
            out = block.step(x, state) if step else block(x, state)
            x = out.hidden  # (B, T, D) or (B, D)
            new_states.append(out.state)
            if out.spike_stats is not None:
                spike_stats.append(out.spike_stats)
        return StackOutput(self.norm(x), new_states, spike_stats)


# --------------------------------------------------------------------------------------------------
# vision


class SpikingActivation(nn.Module):
    """LIF neurons after a conv, one β and θ per channel; the output is the spike rate over ``num_steps``.

    The conv output is a constant input current I (B, C, H, W) over ``num_steps`` micro-steps of
    :func:`s3cmn.ops.lif.lif_scan` (``U = βV + I; S = H(U − θ); V = U − Sθ``, surrogate gradient), from rest.
    """

    def __init__(self, channels: int, num_steps: int, config: S3CMNConfig) -> None:
        super().__init__()
        self.num_steps = num_steps
        self.surrogate, self.alpha = config.surrogate, config.surrogate_alpha
        self.beta_logit = nn.Parameter(torch.full((channels,), math.log(BETA_INIT / (1 - BETA_INIT))))
        self.threshold = nn.Parameter(torch.full((channels,), float(config.spike_threshold)))
        self.beta_logit._no_weight_decay = True  # decay would pull β toward 1/2
        self.threshold._no_weight_decay = True  # decay would pull θ toward 0

    def forward(self, current: Tensor) -> tuple[Tensor, Tensor]:
        """current (B, C, H, W) -> (spike rate (B, C, H, W) in [0, 1], the mean firing rate () detached)."""
        B, C, H, W = current.shape
        flat = current.permute(0, 2, 3, 1).reshape(B, 1, H * W * C)  # (B, 1, N): N neurons, channel last
        beta = torch.sigmoid(self.beta_logit).repeat(H * W)  # (N,)
        threshold = self.threshold.clamp(min=1e-3).repeat(H * W)  # (N,)
        v0 = flat.new_zeros(B, H * W * C)
        out = lif_scan(flat, beta, threshold, v0, "subtract", self.surrogate, self.alpha, self.num_steps)
        rate = out.spikes.reshape(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, H, W)
        return rate, rate.detach().mean()


class ConvFrontEnd(nn.Module):
    """Conv2d -> BatchNorm -> ReLU (or :class:`SpikingActivation`) per entry of the task's conv lists."""

    def __init__(self, task: TaskConfig, in_channels: int, config: S3CMNConfig | None = None) -> None:
        super().__init__()
        layers = zip(task.conv_channels, task.conv_kernel_sizes, task.conv_strides, task.conv_padding, strict=True)
        self.convs, self.norms, self.acts = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        spiking = task.spiking_conv and config is not None
        for channels, k, s, p in layers:
            self.convs.append(nn.Conv2d(in_channels, channels, k, stride=s, padding=p, bias=False))
            self.norms.append(nn.BatchNorm2d(channels))
            self.acts.append(SpikingActivation(channels, task.conv_spike_steps, config) if spiking else nn.ReLU())
            in_channels = channels

    def forward(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """images (B, C, H, W) -> (features (B, C', H', W'), the firing rate of each spiking layer)."""
        x, rates = images, []
        for conv, norm, act in zip(self.convs, self.norms, self.acts, strict=True):
            x = norm(conv(x))  # (B, C_i, H_i, W_i)
            if isinstance(act, SpikingActivation):
                x, rate = act(x)
                rates.append(rate)
            else:
                x = act(x)
        return x, rates


@dataclass
class VisionOutput:
    """Class logits (B, K); the firing rate of each spiking conv layer; the blocks' SpikeStats."""

    logits: Tensor
    conv_spike_rates: list[Tensor] = field(default_factory=list)
    spike_stats: list[Any] = field(default_factory=list)


class VisionS3CMN(nn.Module):
    """Image classifier on the S³CMN blocks (module docstring)."""

    def __init__(self, config: S3CMNConfig, task: TaskConfig, image_shape: tuple[int, int, int],
                 num_classes: int) -> None:
        super().__init__()
        C, H, W = conv_output_shape(task, image_shape)
        self.frontend = ConvFrontEnd(task, image_shape[0], config)
        self.patch_proj = nn.Linear(C, config.hidden_dim)
        self.position = nn.Parameter(torch.zeros(H * W, config.hidden_dim))  # raster order is not shift-invariant
        nn.init.normal_(self.position, std=config.initializer_range)
        self.backbone = BlockStack(config)
        self.head = nn.Linear(config.hidden_dim, num_classes)

    def forward(self, images: Tensor) -> VisionOutput:
        """images (B, C, H, W) -> VisionOutput with logits (B, K)."""
        features, rates = self.frontend(images)  # (B, C', H', W')
        tokens = features.flatten(2).transpose(1, 2)  # (B, T = H'W', C') raster order
        x = self.patch_proj(tokens) + self.position  # (B, T, D)
        out = self.backbone(x)
        logits = self.head(out.hidden.mean(dim=1))  # (B, D) -> (B, K)
        return VisionOutput(logits, rates, out.spike_stats)


# --------------------------------------------------------------------------------------------------
# robotics


@dataclass
class DynamicsOutput:
    """Predicted next states (B, T, S) or (B, S); the recurrent state to continue from; the blocks' SpikeStats."""

    next_states: Tensor
    cache: Any = None
    spike_stats: list[Any] = field(default_factory=list)


class DynamicsModel(nn.Module):
    """What every next-state model shares: the data's normalisation (buffers, saved with the weights).

    A model sees z = (s − mean) / std and a / action_std, and predicts the change of the state in units of
    ``delta_std``: ŝ[t+1] = s[t] + delta_std · f(z[≤t], a[≤t]). Subclasses implement ``forward`` over a
    sequence and ``step`` over one time step with the same numbers.
    """

    def __init__(self, state_dim: int, action_dim: int) -> None:
        super().__init__()
        self.state_dim, self.action_dim = state_dim, action_dim
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_std", torch.ones(state_dim))
        self.register_buffer("delta_std", torch.ones(state_dim))
        self.register_buffer("action_std", torch.ones(max(action_dim, 1)))

    @torch.no_grad()
    def fit_normalisation(self, states: Tensor, actions: Tensor) -> None:
        """Set the normalisation from training trajectories: states (n, L, S), actions (n, L, A)."""
        self.state_mean.copy_(states.mean(dim=(0, 1)))
        self.state_std.copy_(states.std(dim=(0, 1)).clamp(min=1e-6))
        self.delta_std.copy_(states.diff(dim=1).std(dim=(0, 1)).clamp(min=1e-6))
        if self.action_dim:
            self.action_std.copy_(actions.std(dim=(0, 1)).clamp(min=1e-6))

    def encode(self, states: Tensor, actions: Tensor) -> Tensor:
        """(…, S), (…, A) -> the normalised input (…, S + A)."""
        z = (states - self.state_mean) / self.state_std
        if self.action_dim:
            z = torch.cat([z, actions / self.action_std[: self.action_dim]], dim=-1)
        return z

    def decode(self, states: Tensor, change: Tensor) -> Tensor:
        """The next state from the current one and the predicted normalised change."""
        return states + self.delta_std * change

    def next_state_loss(self, states: Tensor, actions: Tensor) -> Tensor:
        """states (B, T+1, S), actions (B, T+1, A) -> MSE of the T predicted next states, in units of the state
        change's std (so every state value counts): the training loss, and the test-time adaptation's."""
        predicted = self(states[:, :-1], actions[:, :-1]).next_states  # (B, T, S)
        return ((predicted - states[:, 1:]) / self.delta_std).pow(2).mean()


class DynamicsS3CMN(DynamicsModel):
    """Next-state predictor on the S³CMN blocks: ``forward`` over a trajectory, ``step`` one time step."""

    def __init__(self, config: S3CMNConfig, task: TaskConfig) -> None:
        super().__init__(task.state_dim, task.action_dim)
        self.in_proj = nn.Linear(task.state_dim + task.action_dim, config.hidden_dim)
        self.backbone = BlockStack(config)
        self.head = nn.Linear(config.hidden_dim, task.state_dim)

    def forward(self, states: Tensor, actions: Tensor, cache: list[LayerState] | None = None) -> DynamicsOutput:
        """states (B, T, S), actions (B, T, A) -> next states (B, T, S); continues from ``cache``."""
        x = self.in_proj(self.encode(states, actions))  # (B, T, D)
        out = self.backbone(x, cache)
        return DynamicsOutput(self.decode(states, self.head(out.hidden)), out.states, out.spike_stats)

    def step(self, states: Tensor, actions: Tensor, cache: list[LayerState] | None) -> DynamicsOutput:
        """states (B, S), actions (B, A) -> next state (B, S), with ``block.step``."""
        x = self.in_proj(self.encode(states, actions))  # (B, D)
        out = self.backbone.step(x, cache)
        return DynamicsOutput(self.decode(states, self.head(out.hidden)), out.states, out.spike_stats)
