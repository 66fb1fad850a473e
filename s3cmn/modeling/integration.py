"""Mamba–liquid–spiking integration: the mixer that replaces the block's state-space mixer + LIF layer when
``config.use_liquid`` is set.

For x (B, T, D) (the block's normed input), c the spike path and L, M the liquid and Mamba paths:

1. spike path (when ``use_spiking``): the LIF layer (``PopulationLIFLayer`` with ``use_population_coding``)
   and a spike → continuous adapter (``spike_adapter``):
   ``rate`` c = the layer's read-out of its spike rates; ``temporal`` c[t] = λ c[t-1] + (1 − λ) · rate read-out,
   λ = exp(−1/``spike_adapter_tau``) (exponentially weighted spike history); ``potential`` c = rate read-out
   + W_v V[t] (the membrane potential after the token: the sub-threshold information the spikes drop).
   The liquid path reads u = x + c (u = x without spiking).
2. liquid path: L = LiquidMixer(u); with ``use_cross_modal_attention`` L += CrossModalAttention(L, c)
   (``cross_modal_mode``: the liquid path queries the spike path; bidirectional adds the reverse direction).
3. ``integration_mode``:
   - ``sequential`` (spike → liquid → Mamba): y = Mamba(u + L).
   - ``parallel``: M = Mamba(x); y = GatedFusion(L, M).
   - ``bidirectional``: state exchange inside one per-token loop, then cross attention and fusion::

         B'[t] = B[t] ⊙ (1 + tanh(W_B h[t-1])),  C'[t] = C[t] ⊙ (1 + tanh(W_C h[t-1]))   liquid state → Mamba
         M[t]  = Mamba step with B', C'
         τ[t]  = liquid_tau_base · (0.5 + σ(W_τ M[t]))                                   Mamba → liquid τ
         h[t]  = liquid cell (u[t], h[t-1], Δt = 1/τ[t]);  L[t] = out_proj(h[t])
         (a_L, a_M) = CrossModalAttention_bidirectional(L, M);  y = GatedFusion(L + a_L, M + a_M)

     W_B, W_C, W_τ start at zero (plain Mamba, τ = τ_base at init). Mamba is composed here from
     ``MambaMixer``'s own submodules (no hook in mamba.py); both directions of the exchange make the two
     recurrences one joint per-token loop, so this mode runs Mamba token by token too (slow in training).

GatedFusion (``gating_heads`` H, ``gating_temperature`` T): w = softmax(W_g [a, b] / T) per head (H, 2);
each head's D/H channels are w_a · a + w_b · b.

``forward``/``step`` return ``(y, state, spike_stats)``. The state is flat, ``{"<submodule>.<key>": tensor}``
(all batch-first). Cross-attention caches grow with the context (see ``cross_modal``).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3cmn.config import S3CMNConfig
from s3cmn.modeling.cross_modal import CrossModalAttention
from s3cmn.modeling.liquid import LiquidMixer
from s3cmn.modeling.mamba import MambaMixer
from s3cmn.modeling.spiking import LIFLayer, SpikeStats

logger = logging.getLogger(__name__)

__all__ = [
    "IntegratedMixer", "GatedFusion", "SpikeAdapter", "ema_scan", "ema_scan_ref",
    "mamba_step_modulated",
]

State = dict[str, Tensor]


# ----------------------------------------------------------------------------------------------------------
# spike -> continuous adapter
# ----------------------------------------------------------------------------------------------------------


def ema_scan_ref(y: Tensor, c0: Tensor, lam: float) -> Tensor:
    """c[t] = λ c[t-1] + (1 − λ) y[t], one token at a time: y (B, T, D), c0 (B, D) -> (B, T, D)."""
    c, out = c0, []
    for t in range(y.shape[1]):
        c = lam * c + (1 - lam) * y[:, t]
        out.append(c)
    return torch.stack(out, dim=1)


def ema_scan(y: Tensor, c0: Tensor, lam: float) -> Tensor:
    """Same as :func:`ema_scan_ref` in closed form: c[t] = Σ_{k<=t} (1 − λ) λ^(t−k) y[k] + λ^(t+1) c0."""
    T = y.shape[1]
    t = torch.arange(T, device=y.device, dtype=y.dtype)
    lag = t[:, None] - t[None, :]  # (T, T) t - k
    W = torch.where(lag >= 0, (1 - lam) * lam ** lag.clamp(min=0), torch.zeros((), dtype=y.dtype))
    return torch.einsum("tk,bkd->btd", W, y) + (lam ** (t + 1))[None, :, None] * c0[:, None]  # (B, T, D)


class SpikeAdapter(nn.Module):
    """Spike layer output (read-out y, membrane) -> continuous stream c (B, T, D); module docstring, step 1."""

    def __init__(self, config: S3CMNConfig, num_neurons: int) -> None:
        super().__init__()
        self.kind = config.spike_adapter
        self.lam = math.exp(-1.0 / config.spike_adapter_tau)
        self.potential_proj = nn.Linear(num_neurons, config.hidden_dim) if self.kind == "potential" else None

    def forward(self, y: Tensor, membrane: Tensor | None, state: State | None) -> tuple[Tensor, State]:
        """y (B, T, D), membrane (B, T, neurons) (potential only) -> (c (B, T, D), state)."""
        if self.kind == "temporal":
            c0 = y.new_zeros(y.shape[0], y.shape[2]) if state is None else state["trace"]
            c = ema_scan(y, c0, self.lam)  # (B, T, D)
            return c, {"trace": c[:, -1] if c.shape[1] else c0}
        if self.kind == "potential":
            return y + self.potential_proj(membrane), {}
        return y, {}

    def step(self, y: Tensor, membrane: Tensor | None, state: State | None) -> tuple[Tensor, State]:
        """y (B, D), membrane (B, neurons) -> (c (B, D), state)."""
        if self.kind == "temporal":
            c0 = torch.zeros_like(y) if state is None else state["trace"]
            c = self.lam * c0 + (1 - self.lam) * y
            return c, {"trace": c}
        if self.kind == "potential":
            return y + self.potential_proj(membrane), {}
        return y, {}


class GatedFusion(nn.Module):
    """Multi-head adaptive gate: per head, a softmax (temperature T) over the two streams; position-wise."""

    def __init__(self, config: S3CMNConfig) -> None:
        super().__init__()
        self.num_heads = config.gating_heads
        self.temperature = config.gating_temperature
        self.gate = nn.Linear(2 * config.hidden_dim, 2 * self.num_heads)

    def weights(self, a: Tensor, b: Tensor) -> Tensor:
        """(..., D), (..., D) -> gate weights (..., H, 2), summing to 1 over the last axis."""
        logits = self.gate(torch.cat([a, b], dim=-1)).unflatten(-1, (self.num_heads, 2))
        return torch.softmax(logits / self.temperature, dim=-1)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        w = self.weights(a, b)  # (..., H, 2)
        H = self.num_heads
        a_h, b_h = a.unflatten(-1, (H, -1)), b.unflatten(-1, (H, -1))  # (..., H, D/H)
        return (w[..., :1] * a_h + w[..., 1:] * b_h).flatten(-2)  # (..., D)


# ----------------------------------------------------------------------------------------------------------
# Mamba with modulated B, C (composition of MambaMixer's submodules)
# ----------------------------------------------------------------------------------------------------------


def mamba_step_modulated(
    mamba: MambaMixer, x: Tensor, state: State | None, scale_B: Tensor | None = None, scale_C: Tensor | None = None
) -> tuple[Tensor, State]:
    """``MambaMixer.step`` with B and C multiplied by ``scale_B``, ``scale_C`` (B, N): x (B, D) -> (y (B, D), state).

    The same numbered steps as ``MambaMixer.step``, on its parameters; with no scales it is that step.
    """
    batch = x.shape[0]
    # 1. input projection
    xs, z = mamba.in_proj(x).chunk(2, dim=-1)  # (B, E) each
    # 2. causal depthwise conv over [kept inputs, x]
    conv = x.new_zeros(batch, mamba.d_inner, mamba.d_conv - 1) if state is None else state["conv"].to(x.dtype)
    window = torch.cat([conv, xs.unsqueeze(-1)], dim=2)  # (B, E, d_conv)
    xs = F.silu((window * mamba.conv1d.weight.squeeze(1)).sum(-1) + mamba.conv1d.bias)  # (B, E)
    # 3. input-dependent Δ, B, C, then the exchange: B, C scaled by the liquid state
    dt, B, C = torch.split(mamba.x_proj(xs), [mamba.dt_rank, mamba.d_state, mamba.d_state], dim=-1)
    if scale_B is not None:
        B = B * scale_B  # (B, N)
    if scale_C is not None:
        C = C * scale_C
    dt = F.softplus(mamba.dt_proj(dt).float())  # (B, E)
    # 4. h = exp(Δ A) h + Δ B u;  y = C·h + D u, gated
    A = -torch.exp(mamba.A_log.float())  # (E, N)
    h0 = xs.new_zeros(batch, mamba.d_inner, mamba.d_state, dtype=torch.float32) if state is None else state["ssm"]
    h = torch.exp(dt.unsqueeze(-1) * A) * h0.float()  # (B, E, N)
    h = h + (dt * xs.float()).unsqueeze(-1) * B.float().unsqueeze(1)
    y = (h @ C.float().unsqueeze(-1)).squeeze(-1) + mamba.D.float() * xs.float()  # (B, E)
    y = (y * F.silu(z.float())).to(x.dtype)
    # 5. output projection
    return mamba.out_proj(y), {"conv": window[:, :, 1:], "ssm": h}


# ----------------------------------------------------------------------------------------------------------
# the integrated mixer
# ----------------------------------------------------------------------------------------------------------


def _sub(state: State, prefix: str) -> State | None:
    """The sub-state of one submodule from the flat state (None if it has none yet)."""
    n = len(prefix) + 1
    sub = {k[n:]: v for k, v in state.items() if k.startswith(prefix + ".")}
    return sub or None


def _put(new: State, prefix: str, sub: State) -> None:
    new.update({f"{prefix}.{k}": v for k, v in sub.items()})


class IntegratedMixer(nn.Module):
    """Mamba–liquid–spiking integration (module docstring): ``forward``/``step`` -> ``(y, state, spike_stats)``."""

    def __init__(self, config: S3CMNConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.mode = config.integration_mode
        self.tau_base = config.liquid_tau_base
        self.spiking: nn.Module | None = None
        self.adapter: SpikeAdapter | None = None
        if config.use_spiking:
            from s3cmn.modeling.population import PopulationLIFLayer

            self.spiking = (PopulationLIFLayer if config.use_population_coding else LIFLayer)(config, layer_idx)
            self.adapter = SpikeAdapter(config, self.spiking.num_neurons)
        self.liquid = LiquidMixer(config, layer_idx)
        self.mamba = MambaMixer(config, layer_idx)
        self.cross_modal = CrossModalAttention(config, layer_idx) if config.use_cross_modal_attention else None
        self.fusion = GatedFusion(config) if self.mode != "sequential" else None
        self.mamba_cross = self.exchange_B = self.exchange_C = self.exchange_tau = None
        if self.mode == "bidirectional":
            U, N, D = config.liquid_units, config.mamba_d_state, config.hidden_dim
            self.mamba_cross = CrossModalAttention(config, layer_idx, mode="bidirectional")
            self.exchange_B, self.exchange_C, self.exchange_tau = nn.Linear(U, N), nn.Linear(U, N), nn.Linear(D, U)
            for lin in (self.exchange_B, self.exchange_C, self.exchange_tau):
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State, SpikeStats | None]:
        """x (B, T, D) -> (y (B, T, D), state, spike_stats); ``state`` None = zeros, otherwise continue from it."""
        return self._run(x, state or {}, step=False)

    def step(self, x: Tensor, state: State | None) -> tuple[Tensor, State, SpikeStats | None]:
        """x (B, D) -> (y (B, D), state, spike_stats): one token."""
        return self._run(x, state or {}, step=True)

    # ------------------------------------------------------------------------------------------------
    def _spikes(self, x: Tensor, state: State | None, step: bool) -> tuple[Tensor, Tensor | None, State, SpikeStats]:
        """The spike layer: (read-out y, membrane or None, state, stats); x (B, T, D) or (B, D) in step mode."""
        if self.adapter.kind != "potential":
            y, st, stats = (self.spiking.step if step else self.spiking.forward)(x, state)
            return y, None, st, stats
        if step:
            y, st, stats = self.spiking.step(x, state)
            return y, st["v"], st, stats
        # the membrane after every token: the layer's own step, token by token
        ys, vs, stats, st = [], [], None, state
        for x_t in x.unbind(1):
            y, st, s = self.spiking.step(x_t, st)
            ys.append(y)
            vs.append(st["v"])
            stats = s if stats is None else stats.merge(s)
        if self.training and self.spiking.adaptive_threshold and stats is not None:
            self.spiking._homeostasis(stats.spike_count / stats.num_steps)  # what the layer's forward does
        return torch.stack(ys, 1), torch.stack(vs, 1), st, stats

    def _exchange(
        self, u: Tensor, x: Tensor, liquid_state: State | None, mamba_state: State | None
    ) -> tuple[Tensor, Tensor, State, State]:
        """One token of the bidirectional state exchange: u, x (B, D) -> (L, M (B, D), liquid, mamba states)."""
        h = self.liquid.init_state(x.shape[0], x)["h"] if liquid_state is None else liquid_state["h"]  # (B, U)
        scale_B = 1 + torch.tanh(self.exchange_B(h))  # (B, N)
        scale_C = 1 + torch.tanh(self.exchange_C(h))
        m, mamba_state = mamba_step_modulated(self.mamba, x, mamba_state, scale_B, scale_C)  # (B, D)
        tau = self.tau_base * (0.5 + torch.sigmoid(self.exchange_tau(m)))  # (B, U)
        liquid_out, liquid_state = self.liquid.step(u, liquid_state, tau)  # (B, D)
        return liquid_out, m, liquid_state, mamba_state

    def _run(self, x: Tensor, state: State, step: bool) -> tuple[Tensor, State, SpikeStats | None]:
        new: State = {}

        def run(name: str, module: nn.Module, *inputs: Tensor) -> tuple:
            out = (module.step if step else module.forward)(*inputs, _sub(state, name))
            _put(new, name, out[-1])
            return out

        # 1. spike path and adapter: u = x + c
        c, stats, u = None, None, x
        if self.spiking is not None:
            y_spk, membrane, st, stats = self._spikes(x, _sub(state, "spiking"), step)
            _put(new, "spiking", st)
            c, _ = run("adapter", self.adapter, y_spk, membrane)
            u = x + c  # (B, T, D)
        # 2. liquid path (and, bidirectional mode, Mamba with the state exchange)
        if self.mode == "bidirectional":
            ls, ms = _sub(state, "liquid"), _sub(state, "mamba")
            if step:
                L, M, ls, ms = self._exchange(u, x, ls, ms)
            else:
                Ls, Ms = [], []
                for u_t, x_t in zip(u.unbind(1), x.unbind(1), strict=True):  # unbind: O(T) backward
                    L, M, ls, ms = self._exchange(u_t, x_t, ls, ms)
                    Ls.append(L)
                    Ms.append(M)
                L, M = torch.stack(Ls, 1), torch.stack(Ms, 1)  # (B, T, D)
            if ls is not None:
                _put(new, "liquid", ls)
                _put(new, "mamba", ms)
        else:
            L, _ = run("liquid", self.liquid, u)
        if self.cross_modal is not None:  # the liquid path queries the spike path
            a_L, a_c, _ = run("cross_modal", self.cross_modal, L, c)
            L = L + a_L if a_c is None else L + a_L + a_c
        # 3. combine with Mamba
        if self.mode == "sequential":
            y, _ = run("mamba", self.mamba, u + L)
        elif self.mode == "parallel":
            M, _ = run("mamba", self.mamba, x)
            y = self.fusion(L, M)
        else:
            a_L, a_M, _ = run("mamba_cross", self.mamba_cross, L, M)
            y = self.fusion(L + a_L, M + a_M)
        return y, new, stats

    def extra_repr(self) -> str:
        adapter = self.adapter.kind if self.adapter is not None else None
        return f"mode={self.mode}, spike_adapter={adapter}, cross_modal={self.cross_modal is not None}"
