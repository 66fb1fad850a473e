"""The S4D mixer (Gu et al. 2022, "On the Parameterization and Initialization of Diagonal State Space Models",
the S4D minimal example ``models/s4/s4d.py``).

Per channel d of the D-wide input, a diagonal complex SSM with N/2 modes (their conjugates are implied by
taking 2·Re), ZOH-discretised with a learned step Δ_d (see ``s3cmn.ops.s4d_kernel``)::

    x[t] = Ā ⊙ x[t-1] + B̄ · u[t]                     x (N/2,) complex per channel
    y[t] = 2·Re(C · x[t]) + D · u[t]
    out  = GLU(output_linear(GELU(y)))

``forward`` computes the length-T kernel K[l] = 2·Re(Σ_n C B̄ Ā^l) and applies it by FFT causal convolution;
a given initial state adds 2·Re(Σ_n C Ā^{t+1} x0) and the returned state is Ā^T x0 + B̄ Σ_s Ā^{T-1-s} u[s].
``step`` runs the recurrence for one token.

Initialisation (S4D-Lin): A = −1/2 + iπn, Δ log-uniform in [1e-3, 1e-1], C ~ CN(0, 1), D ~ N(0, 1).
``log_dt``, ``log_A_real`` and ``A_imag`` carry ``_no_weight_decay = True``.

State: ``{"ssm": (B, D, N/2, 2)}``, the complex state as a real (re, im) pair (``torch.view_as_real``), so it
is an ordinary float tensor for saving, dtype casts and ``index_select`` reordering.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3cmn.model_config import S3CMNConfig
from s3cmn.modeling.mixer import MixerOutput, MixerState
from s3cmn.ops.fftconv import fft_causal_conv
from s3cmn.ops.s4d_kernel import s4d_discretize, vandermonde_reduce, vandermonde_sum

__all__ = ["S4DMixer"]

DT_MIN, DT_MAX = 1e-3, 1e-1


class S4DMixer(nn.Module):
    """S4D sequence mixer, a :class:`~s3cmn.modeling.mixer.Mixer`: x (B, T, D) -> y (B, T, D);
    ``config.s4d_d_state`` = N (even, checked by the config: N/2 complex modes)."""

    def __init__(self, config: S3CMNConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        D, N = config.hidden_dim, config.s4d_d_state
        self.hidden_dim, self.n_modes = D, N // 2
        log_dt = torch.rand(D) * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN)
        self.log_dt = nn.Parameter(log_dt)  # (D,)
        self.log_A_real = nn.Parameter(torch.full((D, self.n_modes), math.log(0.5)))  # Re A = -1/2
        self.A_imag = nn.Parameter(math.pi * torch.arange(self.n_modes, dtype=torch.float32).repeat(D, 1))
        C = torch.randn(D, self.n_modes, dtype=torch.cfloat)  # CN(0, 1)
        self.C = nn.Parameter(torch.view_as_real(C))  # (D, N/2, 2) real pairs: optimisers and checkpoints
        self.D = nn.Parameter(torch.randn(D))
        for p in (self.log_dt, self.log_A_real, self.A_imag):
            p._no_weight_decay = True
        self.output_linear = nn.Linear(D, 2 * D)  # followed by a GLU

    def _ssm(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(dtA, Ā, B̄, C), each (D, N/2) complex64."""
        A = torch.complex(-torch.exp(self.log_A_real.float()), self.A_imag.float())  # (D, N/2)
        dtA, A_bar, B_bar = s4d_discretize(self.log_dt.float(), A)
        return dtA, A_bar, B_bar, torch.view_as_complex(self.C.float())

    def _output(self, y: Tensor) -> Tensor:
        return F.glu(self.output_linear(F.gelu(y)), dim=-1)  # (..., D)

    def init_state(self, batch: int, like: Tensor) -> MixerState:
        """The zero state, (re, im) pairs in fp32."""
        return {"ssm": like.new_zeros(batch, self.hidden_dim, self.n_modes, 2, dtype=torch.float32)}

    def forward(self, x: Tensor, state: MixerState | None = None) -> MixerOutput:
        """x (B, T, D) -> y (B, T, D) and the state after the last token; ``state`` None = zero state."""
        T = x.shape[1]
        u = x.transpose(1, 2).float()  # (B, D, T)
        dtA, A_bar, B_bar, C = self._ssm()
        # 1. the convolution kernel K[l] = 2 Re(Σ_n C B̄ Ā^l), applied by FFT with the skip D
        K = 2.0 * vandermonde_sum(C * B_bar, dtA, T).real  # (D, T)
        y = fft_causal_conv(u, K, bias=self.D.float())  # (B, D, T)
        # 2. the state after the last token: Ā^T x0 + B̄ Σ_s Ā^{T-1-s} u[s]
        x_last = B_bar * vandermonde_reduce(u.flip(-1), dtA)  # (B, D, N/2)
        if state is not None:
            x0 = torch.view_as_complex(state["ssm"].float().contiguous())  # (B, D, N/2)
            y = y + 2.0 * vandermonde_sum(C * A_bar * x0, dtA, T).real  # (B, D, T) response to x0
            x_last = x_last + torch.exp(dtA * T) * x0
        # 3. GELU, output linear and GLU
        out = self._output(y.transpose(1, 2).to(x.dtype))  # (B, T, D)
        return MixerOutput(out, {"ssm": torch.view_as_real(x_last)})

    def step(self, x: Tensor, state: MixerState | None) -> MixerOutput:
        """x (B, D) -> y (B, D): one token of x[t] = Ā x[t-1] + B̄ u[t]."""
        u = x.float()  # (B, D)
        _, A_bar, B_bar, C = self._ssm()
        h = B_bar * u.unsqueeze(-1)  # (B, D, N/2)
        if state is not None:
            h = h + A_bar * torch.view_as_complex(state["ssm"].float().contiguous())
        y = 2.0 * (h * C).sum(-1).real + self.D.float() * u  # (B, D)
        return MixerOutput(self._output(y.to(x.dtype)), {"ssm": torch.view_as_real(h)})

    def extra_repr(self) -> str:
        return f"hidden_dim={self.hidden_dim}, n_modes={self.n_modes} (d_state={2 * self.n_modes})"
