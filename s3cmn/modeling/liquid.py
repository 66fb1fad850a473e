"""Liquid units: CfC (Hasani et al. 2022, "Closed-form continuous-time neural networks") and LTC (Hasani et al.
2021, "Liquid time-constant networks"), optionally with NCP sparse wiring (Lechner et al. 2020), from ``ncps``.

For x (B, T, D) and U = ``config.liquid_units``::

    u[t]      = in_proj(x[t])                                   (B, U)
    h[t]      = cell(u[t], h[t-1], Δt[t]),  Δt = 1 / τ           (B, U) one cell update per token
    y[t]      = out_proj(o[t])                                  (B, D), o the cell's output (all U units, or the
                                                                NCP motor neurons)

``liquid_backbone``:

- ``cfc``: ``ncps.torch.CfCCell`` (mode "default", one LeCun-tanh backbone layer of U units):
  ``h = tanh(f1) ⊙ (1 − σ(a·Δt + b)) + σ(a·Δt + b) ⊙ tanh(f2)``, with f1, f2, a, b affine in [u, h].
- ``ltc``: ``ncps.torch.LTCCell`` on a fully connected wiring: the LTC ODE
  ``dh/dt = −(1/τ_leak + f(h, u)) ⊙ h + f(h, u) ⊙ E`` solved by ``config.ltc_ode_unfolds`` semi-implicit Euler
  steps over Δt (positivity of the conductances by softplus, so no post-step clipping is needed).
- ``ncp``: ``ncps.torch.WiredCfCCell`` on an ``AutoNCP`` wiring (inter → command → motor layers, sparsity
  ``config.ncp_sparsity``; 30 % of the units are motor neurons, the output).

The time step is Δt = 1/τ, τ = ``config.liquid_tau_base`` unless a per-token, per-unit τ (B, T, U) is given
(the integration's "Mamba adapts the liquid time constants").

Each token needs the previous state, so ``forward`` is a Python loop over ``_cell_step``, the same function
``step`` runs: step == forward by construction. The loop cannot be parallelised over T and is slow in training
(Python and autograd overhead per token; measured tokens/s are in the ablation report).
State: ``{"h": (B, U)}``.

``ncps`` is an optional extra (``pip install 's3cmn[liquid]'``), imported when a liquid mixer is built, so the
block's registry of mixers imports this module without it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.mixer import MixerOutput, MixerState

__all__ = ["LiquidMixer", "import_ncps", "ncp_motor_size"]

NCP_SEED = 22222  # ncps' default wiring seed; layer_idx is added so that layers get different wirings
LTC_EREV_SEED = 1111  # ncps' default seed of the reversal potentials' signs
NCP_MOTOR_FRACTION = 0.3  # ncps' recommendation: motor (output) neurons ≈ 0.3 × units


NCPS_INSTALL = "pip install 's3cmn[liquid]' (ncps>=1.0)"


def import_ncps() -> Any:
    """The ``ncps`` package with its torch cells and wirings; without it, an ImportError that says what to install."""
    try:
        import ncps.torch
        import ncps.wirings
    except ImportError as err:
        raise ImportError(f"the liquid mixer (use_liquid = True) needs ncps ({err}): {NCPS_INSTALL}") from err
    return ncps


def ncp_motor_size(units: int) -> int:
    """Motor (output) neurons of the AutoNCP wiring of ``units`` neurons."""
    return max(1, round(NCP_MOTOR_FRACTION * units))


class LiquidMixer(nn.Module):
    """Liquid (CfC / LTC / NCP) sequence mixer: x (B, T, D) -> y (B, T, D), a per-token recurrence.

    A :class:`~s3cmn.modeling.mixer.Mixer` whose ``forward``/``step`` also take optional time constants ``tau``.
    """

    def __init__(self, config: S3CMNConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        D, U = config.hidden_dim, config.liquid_units
        self.units = U
        self.backbone = config.liquid_backbone
        self.tau_base = config.liquid_tau_base
        self.in_proj = nn.Linear(D, U)
        ncps = import_ncps()
        if self.backbone == "cfc":
            self.cell = ncps.torch.CfCCell(U, U, mode="default", backbone_activation="lecun_tanh", backbone_units=U,
                                           backbone_layers=1)
            out_units = U
        elif self.backbone == "ltc":
            wiring = ncps.wirings.FullyConnected(U, output_dim=U, erev_init_seed=LTC_EREV_SEED + layer_idx)
            self.cell = ncps.torch.LTCCell(wiring, in_features=U, ode_unfolds=config.ltc_ode_unfolds,
                                           implicit_param_constraints=True)
            out_units = U
        else:  # "ncp"; the config checks that AutoNCP can wire liquid_units at ncp_sparsity
            wiring = ncps.wirings.AutoNCP(U, ncp_motor_size(U), sparsity_level=config.ncp_sparsity,
                                          seed=NCP_SEED + layer_idx)
            self.cell = ncps.torch.WiredCfCCell(U, wiring, mode="default")
            out_units = ncp_motor_size(U)
        self.out_units = out_units
        self.out_proj = nn.Linear(out_units, D)

    def init_state(self, batch: int, like: Tensor) -> MixerState:
        """The zero state."""
        return {"h": like.new_zeros(batch, self.units)}

    def time_step(self, tau: Tensor | None, like: Tensor) -> Tensor:
        """Δt = 1/τ: (B, U) from a given τ (B, U), or the constant 1/τ_base broadcast as (B, 1)."""
        if tau is None:
            return like.new_full((like.shape[0], 1), 1.0 / self.tau_base)
        return 1.0 / tau

    def _cell_step(self, u: Tensor, h: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
        """One cell update: u (B, U) input, h (B, U) state, dt (B, U) or (B, 1) -> (output (B, U_out), h (B, U))."""
        if self.backbone in ("cfc", "ltc"):
            out, h = self.cell(u, h, dt)
        else:
            # WiredCfCCell.forward with the time step split per NCP layer, so a per-unit Δt is possible
            sizes = self.cell.layer_sizes
            hs = torch.split(h, sizes, dim=1)
            dts = torch.split(dt, sizes, dim=1) if dt.shape[1] == self.units else [dt] * len(sizes)
            new, inp = [], u
            for i in range(self.cell.num_layers):
                inp, _ = getattr(self.cell, f"layer_{i}")(inp, hs[i], dts[i])
                new.append(inp)
            out, h = inp, torch.cat(new, dim=1)
        return out, h  # (B, U_out), (B, U)

    def forward(self, x: Tensor, state: MixerState | None = None, tau: Tensor | None = None) -> MixerOutput:
        """x (B, T, D) -> y (B, T, D), state {"h": (B, U)}; ``tau`` (B, T, U) optional per-token time constants."""
        B, T, _ = x.shape
        h = self.init_state(B, x)["h"] if state is None else state["h"]  # (B, U)
        u = self.in_proj(x)  # (B, T, U), all tokens in one matmul
        taus = [None] * T if tau is None else tau.unbind(1)
        outs = []
        for u_t, tau_t in zip(u.unbind(1), taus, strict=True):  # unbind: one gradient copy, not one per token
            out, h = self._cell_step(u_t, h, self.time_step(tau_t, u_t))
            outs.append(out)
        o = torch.stack(outs, dim=1) if outs else u.new_zeros(B, 0, self.out_units)  # (B, T, U_out)
        return MixerOutput(self.out_proj(o), {"h": h})  # (B, T, D)

    def step(self, x: Tensor, state: MixerState | None, tau: Tensor | None = None) -> MixerOutput:
        """x (B, D) -> y (B, D): one token; ``tau`` (B, U) optional."""
        h = self.init_state(x.shape[0], x)["h"] if state is None else state["h"]
        u = self.in_proj(x)  # (B, U)
        out, h = self._cell_step(u, h, self.time_step(tau, u))
        return MixerOutput(self.out_proj(out), {"h": h})

    def extra_repr(self) -> str:
        return f"backbone={self.backbone}, units={self.units}, out_units={self.out_units}, tau_base={self.tau_base}"
