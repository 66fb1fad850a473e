"""The Mamba mixer (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces"; the
layout and initialisation of ``mamba_ssm/modules/mamba_simple.py``).

For x (B, T, D), inner width E = mamba_expand·D, state size N, dt rank R::

    x, z   = in_proj(x)                                   two (B, T, E) branches
    x      = SiLU(depthwise causal conv1d(x))             kernel mamba_d_conv
    Δ, B, C = x_proj(x)                                   (R, N, N): input-dependent
    Δ      = softplus(dt_proj(Δ))                         (B, T, E)
    y      = selective_scan(x, Δ, A = −exp(A_log), B, C, D) · SiLU(z)
    out    = out_proj(y)

State: ``{"conv": (B, E, d_conv − 1)`` the last raw inputs of the conv, ``"ssm": (B, E, N)`` fp32 ``}``.
``forward`` continues from a given state (prefill continuation); ``step`` decodes one token in O(E·N). ``step``
optionally scales B and C per token (``scale_B``, ``scale_C`` (B, N)): the Mamba–liquid state exchange of
:mod:`s3cmn.modeling.integration` (B' = B ⊙ scale_B, C' = C ⊙ scale_C).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.decode import derived, linear
from s3cmn.modeling.mixer import MixerOutput, MixerState
from s3cmn.ops.decode_step import ssm_step, window_step
from s3cmn.ops.selective_scan import selective_scan

__all__ = ["MambaMixer"]

DT_MIN, DT_MAX, DT_INIT_FLOOR, DT_SCALE = 1e-3, 1e-1, 1e-4, 1.0


class MambaMixer(nn.Module):
    """Mamba (S6) sequence mixer, a :class:`~s3cmn.modeling.mixer.Mixer`: x (B, T, D) -> y (B, T, D).
    Parameter names follow mamba_simple.py."""

    def __init__(self, config: S3CMNConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        D = config.hidden_dim
        self.d_inner = E = config.mamba_expand * D
        self.d_state = N = config.mamba_d_state
        self.d_conv = config.mamba_d_conv
        self.dt_rank = R = config.mamba_dt_rank_resolved

        self.in_proj = nn.Linear(D, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, kernel_size=self.d_conv, groups=E, padding=self.d_conv - 1, bias=True)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        # dt init: weight U(±R^-1/2), bias = softplus^-1(dt) with dt log-uniform in [DT_MIN, DT_MAX]
        dt_init_std = R**-0.5 * DT_SCALE
        nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        dt = torch.exp(torch.rand(E) * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN))
        dt = dt.clamp(min=DT_INIT_FLOOR)
        inv_dt = dt + torch.log(-torch.expm1(-dt))  # inverse of softplus
        with torch.no_grad():
            self.dt_proj.bias.copy_(inv_dt)
        self.dt_proj.bias._no_reinit = True
        # S4D-real init: A[e, n] = -(n + 1), stored as log, kept in fp32
        A = torch.arange(1, N + 1, dtype=torch.float32).repeat(E, 1)  # (E, N)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(E))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(E, D, bias=False)

    def init_state(self, batch: int, like: Tensor) -> MixerState:
        """The zero state: no conv input kept, SSM state 0 (fp32)."""
        return {
            "conv": like.new_zeros(batch, self.d_inner, self.d_conv - 1),
            "ssm": like.new_zeros(batch, self.d_inner, self.d_state, dtype=torch.float32),
        }

    def forward(self, x: Tensor, state: MixerState | None = None) -> MixerOutput:
        """x (B, T, D) -> y (B, T, D) and the state after the last token; ``state`` None = zero state."""
        batch, T, _ = x.shape
        state = self.init_state(batch, x) if state is None else state
        # 1. input projection into the SSM branch x and the gate z; everything stays (B, T, E) in memory and
        #    is handed to the scan as transposed (B, E, T) views (the scan works in that layout: no copies)
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # (B, T, E) each
        # 2. depthwise causal conv over [kept inputs, x], as d_conv shifted multiply-adds (F.conv1d would need
        #    (B, E, T) copies); its last d_conv-1 raw inputs are the new conv state
        history = state["conv"].to(xs.dtype).transpose(1, 2)  # (B, d_conv-1, E)
        xs_full = torch.cat([history, xs], dim=1)  # (B, d_conv-1+T, E)
        weight = self.conv1d.weight[:, 0, :]  # (E, d_conv); conv1d is a cross-correlation
        conv = self.conv1d.bias + xs_full[:, :T] * weight[:, 0]
        for j in range(1, self.d_conv):
            conv = torch.addcmul(conv, xs_full[:, j : j + T], weight[:, j])  # (B, T, E)
        xs = F.silu(conv)  # (B, T, E)
        conv_state = xs_full[:, T:].transpose(1, 2).contiguous()  # (B, E, d_conv-1)
        # 3. input-dependent Δ, B, C
        dt, B, C = torch.split(self.x_proj(xs), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = dt @ self.dt_proj.weight.t()  # (B, T, E), bias and softplus inside the scan
        # 4. selective scan with the gate, from the given SSM state
        A = -torch.exp(self.A_log.float())  # (E, N)
        y, ssm_state = selective_scan(
            xs.transpose(1, 2), dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), self.D.float(),
            z=z.transpose(1, 2), delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
            return_last_state=True, initial_state=state["ssm"],
        )  # (B, E, T), (B, E, N)
        # 5. output projection
        out = self.out_proj(y.transpose(1, 2))  # (B, T, D)
        return MixerOutput(out, {"conv": conv_state, "ssm": ssm_state})

    def step(
        self, x: Tensor, state: MixerState | None, scale_B: Tensor | None = None, scale_C: Tensor | None = None
    ) -> MixerOutput:
        """x (B, D) -> y (B, D): one token, same numbered steps as ``forward``; B, C optionally scaled (B, N).

        The decode path (no gradients, fp32, a state given): :meth:`step_ref`'s steps with ``A`` computed once
        per weights version, the layers applied as functions, and the conv and the SSM update each one C pass
        (:mod:`s3cmn.ops.decode_step`). Otherwise :meth:`step_ref`.
        """
        if torch.is_grad_enabled() or state is None or x.dtype != torch.float32 or type(self.dt_proj) is not nn.Linear:
            return self.step_ref(x, state, scale_B, scale_C)
        E = self.d_inner
        # 1. input projection
        xz = linear(self.in_proj, x)  # (B, 2E)
        xs, z = xz[:, :E], xz[:, E:]  # (B, E) each
        # 2. conv over the window [kept inputs, x], then SiLU
        xs, conv_state = window_step(state["conv"], xs, self.conv1d.weight[:, 0], add=self.conv1d.bias, silu=True)
        # 3. input-dependent Δ (raw: bias and softplus in the SSM step), B, C
        dt, B, C = torch.split(linear(self.x_proj, xs), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        if scale_B is not None:
            B = B * scale_B  # (B, N)
        if scale_C is not None:
            C = C * scale_C
        # 4. one step of the recurrence h = exp(Δ A) h + Δ B u, y = C·h + D u, gated
        A = derived(self, "A", [self.A_log], lambda: -torch.exp(self.A_log.float()))  # (E, N)
        y, h = ssm_step(state["ssm"], xs, linear(self.dt_proj, dt, bias=False), self.dt_proj.bias, A, B, C, self.D, z)
        # 5. output projection
        return MixerOutput(linear(self.out_proj, y), {"conv": conv_state, "ssm": h})

    def step_ref(
        self, x: Tensor, state: MixerState | None, scale_B: Tensor | None = None, scale_C: Tensor | None = None
    ) -> MixerOutput:
        """The readable one-token step (any precision, with gradients): what :meth:`step` computes, op by op."""
        batch = x.shape[0]
        state = self.init_state(batch, x) if state is None else state
        # 1. input projection
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # (B, E) each
        # 2. conv over the window [kept inputs, x]
        window = torch.cat([state["conv"].to(xs.dtype), xs.unsqueeze(-1)], dim=2)  # (B, E, d_conv)
        xs = (window * self.conv1d.weight.squeeze(1)).sum(-1) + self.conv1d.bias  # (B, E)
        xs = F.silu(xs)
        # 3. input-dependent Δ, B, C
        dt, B, C = torch.split(self.x_proj(xs), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        if scale_B is not None:
            B = B * scale_B  # (B, N)
        if scale_C is not None:
            C = C * scale_C
        dt = F.softplus(self.dt_proj(dt).float())  # (B, E)
        # 4. one step of the recurrence h = exp(Δ A) h + Δ B u, y = C·h + D u, gated
        A = -torch.exp(self.A_log.float())  # (E, N)
        h = torch.exp(dt.unsqueeze(-1) * A) * state["ssm"].float()  # (B, E, N)
        h = h + (dt * xs.float()).unsqueeze(-1) * B.float().unsqueeze(1)
        y = (h @ C.float().unsqueeze(-1)).squeeze(-1) + self.D.float() * xs.float()  # (B, E)
        y = (y * F.silu(z.float())).to(x.dtype)
        # 5. output projection
        return MixerOutput(self.out_proj(y), {"conv": window[:, :, 1:], "ssm": h})

    def extra_repr(self) -> str:
        return f"d_inner={self.d_inner}, d_state={self.d_state}, d_conv={self.d_conv}, dt_rank={self.dt_rank}"
