"""The baselines of the task runs, sized to the S³CMN model's parameter count: a plain CNN (vision) and a GRU
(robotics). Both train in the same loop, on the same data and budget, as the S³CMN model."""

from __future__ import annotations

import logging
from collections.abc import Callable

from torch import Tensor, nn

from s3cmn.tasks.config import TaskConfig
from s3cmn.tasks.models import ConvFrontEnd, DynamicsModel, DynamicsOutput, VisionOutput, conv_output_shape
from s3cmn.utils.fields import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["CNNBaseline", "GRUBaseline", "count_parameters", "match_parameters"]

PARAMETER_TOLERANCE = 0.1  # a baseline's parameter count is within 10% of its target


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (tied ones once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())


def match_parameters(build: Callable[[int], nn.Module], target: int) -> nn.Module:
    """``build(width)`` for the width whose parameter count is closest to ``target`` (counts grow with width)."""
    hi = 1
    while count_parameters(build(hi)) < target:  # doubling: no model built is over twice the needed width
        hi *= 2
    lo = max(1, hi // 2)
    while lo < hi:  # the smallest width with at least `target` parameters
        mid = (lo + hi) // 2
        if count_parameters(build(mid)) < target:
            lo = mid + 1
        else:
            hi = mid
    candidates = [w for w in (lo - 1, lo) if w >= 1]
    width = min(candidates, key=lambda w: abs(count_parameters(build(w)) - target))
    model = build(width)
    n = count_parameters(model)
    if abs(n - target) > PARAMETER_TOLERANCE * target:
        raise ConfigError(f"no width of {type(model).__name__} has {target:,} parameters within "
                         f"{PARAMETER_TOLERANCE:.0%} (closest: {n:,} at width {width}); change the model size")
    logger.info("%s width %d: %s parameters (target %s)", type(model).__name__, width, f"{n:,}", f"{target:,}")
    return model


class CNNBaseline(nn.Module):
    """The same conv front end (ReLU), flattened, then an MLP of hidden width ``width`` to the class logits."""

    def __init__(self, task: TaskConfig, image_shape: tuple[int, int, int], num_classes: int, width: int) -> None:
        super().__init__()
        self.width = width
        C, H, W = conv_output_shape(task, image_shape)
        self.frontend = ConvFrontEnd(task, image_shape[0])  # no config: ReLU whatever spiking_conv says
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, width), nn.ReLU(), nn.Linear(width, num_classes))

    def forward(self, images: Tensor) -> VisionOutput:
        """images (B, C, H, W) -> VisionOutput with logits (B, K)."""
        features, _ = self.frontend(images)  # (B, C', H', W')
        return VisionOutput(self.head(features))


class GRUBaseline(DynamicsModel):
    """A one-layer GRU of ``width`` units over the normalised (state, action) sequence, a linear head."""

    def __init__(self, task: TaskConfig, width: int) -> None:
        super().__init__(task.state_dim, task.action_dim)
        self.width = width
        self.gru = nn.GRU(task.state_dim + task.action_dim, width, batch_first=True)
        self.head = nn.Linear(width, task.state_dim)

    def forward(self, states: Tensor, actions: Tensor, cache: Tensor | None = None) -> DynamicsOutput:
        """states (B, T, S), actions (B, T, A) -> next states (B, T, S); ``cache`` the GRU state (1, B, width)."""
        h, cache = self.gru(self.encode(states, actions), cache)  # (B, T, width), (1, B, width)
        return DynamicsOutput(self.decode(states, self.head(h)), cache)

    def step(self, states: Tensor, actions: Tensor, cache: Tensor | None) -> DynamicsOutput:
        """states (B, S), actions (B, A) -> next state (B, S)."""
        out = self.forward(states[:, None], actions[:, None], cache)
        return DynamicsOutput(out.next_states[:, 0], out.cache)
