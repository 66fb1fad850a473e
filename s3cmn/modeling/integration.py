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

     W_B, W_C, W_τ start at zero (plain Mamba, τ = τ_base at init). The Mamba step is ``MambaMixer.step``
     with its ``scale_B``, ``scale_C``; both directions of the exchange make the two recurrences one joint
     per-token loop, so this mode runs Mamba token by token too (slow in training).

GatedFusion (``gating_heads`` H, ``gating_temperature`` T): w = softmax(W_g [a, b] / T) per head (H, 2);
each head's D/H channels are w_a · a + w_b · b.

A :class:`~s3cmn.modeling.mixer.Mixer`: ``forward``/``step`` return ``MixerOutput(y, state, spike_stats)``.
The state is flat, ``{"<submodule>.<key>": tensor}`` (all batch-first). Cross-attention caches grow with the
context (see ``cross_modal``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.cross_modal import CrossModalAttention
from s3cmn.modeling.liquid import LiquidMixer
from s3cmn.modeling.mamba import MambaMixer
from s3cmn.modeling.mixer import MixerOutput
from s3cmn.modeling.mixer import MixerState as State
from s3cmn.modeling.spiking import LIFLayer

__all__ = ["IntegratedMixer", "GatedFusion", "SpikeAdapter", "ema_scan", "ema_scan_ref"]


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

    def init_state(self, batch: int, like: Tensor) -> State:
        """The spike trace before the first token (temporal coding only)."""
        return {"trace": like.new_zeros(batch, like.shape[-1])} if self.kind == "temporal" else {}

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
    """Mamba–liquid–spiking integration (module docstring): ``forward``/``step`` -> ``MixerOutput``."""

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

    def init_state(self, batch: int, like: Tensor) -> State:
        """The zero state of every recurrent part, flat (the attention caches start empty)."""
        state: State = {}
        for name in ("spiking", "adapter", "liquid", "mamba"):
            module = getattr(self, name)
            if module is not None:
                _put(state, name, module.init_state(batch, like))
        return state

    def forward(self, x: Tensor, state: State | None = None) -> MixerOutput:
        """x (B, T, D) -> y (B, T, D), state, spike_stats; ``state`` None = zeros, otherwise continue from it."""
        return self._run(x, state or {}, step=False)

    def step(self, x: Tensor, state: State | None) -> MixerOutput:
        """x (B, D) -> y (B, D), state, spike_stats: one token."""
        return self._run(x, state or {}, step=True)

    # ------------------------------------------------------------------------------------------------
    def _spikes(self, x: Tensor, state: State | None, step: bool) -> tuple[MixerOutput, Tensor | None]:
        """The spike layer's output and, for the potential adapter, its membrane after every token (else None);
        x (B, T, D) or (B, D) in step mode."""
        if self.adapter.kind != "potential":
            return (self.spiking.step if step else self.spiking.forward)(x, state), None
        if step:
            out = self.spiking.step(x, state)
            return out, out.state["v"]
        # the membrane after every token: the layer's own step, token by token
        ys, vs, stats, st = [], [], None, state
        for x_t in x.unbind(1):
            out = self.spiking.step(x_t, st)
            st = out.state
            ys.append(out.y)
            vs.append(st["v"])
            stats = out.stats if stats is None else stats.merge(out.stats)
        if self.training and self.spiking.adaptive_threshold and stats is not None:
            self.spiking._homeostasis(stats.spike_count / stats.num_steps)  # what the layer's forward does
        return MixerOutput(torch.stack(ys, 1), st, stats), torch.stack(vs, 1)

    def _exchange(
        self, u: Tensor, x: Tensor, liquid_state: State | None, mamba_state: State | None
    ) -> tuple[Tensor, Tensor, State, State]:
        """One token of the bidirectional state exchange: u, x (B, D) -> (L, M (B, D), liquid, mamba states)."""
        h = self.liquid.init_state(x.shape[0], x)["h"] if liquid_state is None else liquid_state["h"]  # (B, U)
        scale_B = 1 + torch.tanh(self.exchange_B(h))  # (B, N)
        scale_C = 1 + torch.tanh(self.exchange_C(h))
        m = self.mamba.step(x, mamba_state, scale_B, scale_C)  # (B, D)
        tau = self.tau_base * (0.5 + torch.sigmoid(self.exchange_tau(m.y)))  # (B, U)
        liquid = self.liquid.step(u, liquid_state, tau)  # (B, D)
        return liquid.y, m.y, liquid.state, m.state

    def _exchange_loop(self, u: Tensor, x: Tensor, state: State, new: State, step: bool) -> tuple[Tensor, Tensor]:
        """The liquid and Mamba paths of the bidirectional mode, token by token: (L, M), states put in ``new``."""
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
        return L, M

    def _run(self, x: Tensor, state: State, step: bool) -> MixerOutput:
        new: State = {}

        def run(name: str, *inputs: Tensor) -> MixerOutput:
            module = getattr(self, name)
            out = (module.step if step else module.forward)(*inputs, _sub(state, name))
            _put(new, name, out.state)
            return out

        # 1. spike path and adapter: u = x + c
        c, stats, u = None, None, x
        if self.spiking is not None:
            spikes, membrane = self._spikes(x, _sub(state, "spiking"), step)
            _put(new, "spiking", spikes.state)
            stats = spikes.stats
            adapter = self.adapter.step if step else self.adapter.forward
            c, adapter_state = adapter(spikes.y, membrane, _sub(state, "adapter"))
            _put(new, "adapter", adapter_state)
            u = x + c  # (B, T, D)
        # 2. liquid path (and, bidirectional mode, Mamba with the state exchange)
        if self.mode == "bidirectional":
            L, M = self._exchange_loop(u, x, state, new, step)
        else:
            L = run("liquid", u).y
        if self.cross_modal is not None:  # the liquid path queries the spike path
            a = run("cross_modal", L, c)
            L = L + a.a if a.b is None else L + a.a + a.b
        # 3. combine with Mamba
        if self.mode == "sequential":
            y = run("mamba", u + L).y
        elif self.mode == "parallel":
            y = self.fusion(L, run("mamba", x).y)
        else:
            a = run("mamba_cross", L, M)
            y = self.fusion(L + a.a, M + a.b)
        return MixerOutput(y, new, stats)

    def extra_repr(self) -> str:
        adapter = self.adapter.kind if self.adapter is not None else None
        return f"mode={self.mode}, spike_adapter={adapter}, cross_modal={self.cross_modal is not None}"
