"""PCA compression of memory keys: a fixed linear map ``z = P (x - mu)`` fitted on stored values.

The map is plain numpy (fitted in float64 from the covariance eigen-decomposition, stored in float32) so it
can be saved without pickle, applied to numpy keys in the store, and applied to torch queries in the reader
as a constant linear map that gradients flow *through* (never into).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class PCA:
    """A fitted PCA: ``encode(x) = (x - mean) @ components.T``.

    Attributes:
        mean: (D,) float32, the mean of the fit data.
        components: (d, D) float32, orthonormal rows, in decreasing order of explained variance.
        explained_variance_ratio: (D,) float64, the whole spectrum (variance share of every component),
            kept for the variance curve and for choosing an adaptive dimension.
        fit_error: relative reconstruction error on the fit data, ``sum ||xc - P^T P xc||^2 / sum ||xc||^2``
            (= 1 - kept variance share).
        num_samples: number of rows the PCA was fitted on.
        held_out_error: the same error out of sample (2-fold: fit on one half, measure on the other, averaged),
            the reference for drift detection: new data is always out of sample, and the in-sample error
            underestimates it by roughly d * D / N, so comparing with ``fit_error`` would refit on noise.
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray
    fit_error: float
    num_samples: int
    held_out_error: float = 0.0

    @property
    def in_dim(self) -> int:
        return int(self.components.shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.components.shape[0])

    @property
    def explained_variance(self) -> float:
        """Share of the fit data's variance kept by the ``out_dim`` components."""
        return float(self.explained_variance_ratio[: self.out_dim].sum())

    @classmethod
    def fit(cls, x: np.ndarray, dim: int, variance: float) -> PCA:
        """Fit on ``x`` (N, D). ``dim > 0``: keep ``dim`` components; ``dim == 0``: keep the smallest number
        of components whose cumulative explained-variance share is ``>= variance``."""
        pca = cls._fit(x, dim, variance)
        if len(x) >= 4:
            halves = (x[0::2], x[1::2])
            errors = [cls._fit(a, pca.out_dim, variance).reconstruction_error(b) for a, b in (halves, halves[::-1])]
            pca.held_out_error = float(np.mean(errors))
        else:
            pca.held_out_error = pca.fit_error
        return pca

    @classmethod
    def _fit(cls, x: np.ndarray, dim: int, variance: float) -> PCA:
        n, d_in = x.shape
        if n < 2:
            raise ValueError(f"PCA.fit needs at least 2 samples, got {n}")
        if dim > d_in:
            raise ValueError(f"PCA.fit: target dim {dim} > input dim {d_in}")
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=0)
        xc = x64 - mean
        cov = xc.T @ xc / (n - 1)  # (D, D)
        eigval, eigvec = np.linalg.eigh(cov)  # ascending
        eigval = np.clip(eigval[::-1], 0.0, None)
        eigvec = eigvec[:, ::-1].T  # (D, D) rows = components, descending variance
        # Fix the sign ambiguity (largest-|.| coordinate positive) so fits are reproducible bit for bit.
        flip = np.sign(eigvec[np.arange(d_in), np.abs(eigvec).argmax(axis=1)])
        eigvec = eigvec * np.where(flip == 0, 1.0, flip)[:, None]
        total = float(eigval.sum())
        ratio = eigval / total if total > 0 else np.zeros_like(eigval)
        if dim == 0:
            cumulative = np.cumsum(ratio)
            dim = int(np.searchsorted(cumulative, variance - 1e-12) + 1) if total > 0 else 1
            dim = min(max(dim, 1), d_in)
        components = np.ascontiguousarray(eigvec[:dim], dtype=np.float32)  # layout fixed: same BLAS path
        pca = cls(mean.astype(np.float32), components, ratio, 0.0, n)
        pca.fit_error = pca.reconstruction_error(x)
        return pca

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(N, D) -> (N, d) float32."""
        return ((x.astype(np.float32) - self.mean) @ self.components.T).astype(np.float32)

    def encode_torch(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., d), differentiable in ``x``; the map itself is a constant."""
        mean = torch.from_numpy(self.mean).to(device=x.device, dtype=x.dtype)
        comp = torch.from_numpy(self.components).to(device=x.device, dtype=x.dtype)
        return (x - mean) @ comp.T

    def reconstruction_error(self, x: np.ndarray) -> float:
        """Relative reconstruction error ``sum ||xc - P^T P xc||^2 / sum ||xc||^2`` of ``x`` (N, D)."""
        xc = x.astype(np.float64) - self.mean
        comp = self.components.astype(np.float64)
        residual = xc - (xc @ comp.T) @ comp
        denom = float((xc**2).sum())
        return float((residual**2).sum() / denom) if denom > 0 else 0.0

    # --- persistence (no pickle: arrays go to safetensors, scalars to JSON) ------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "pca_mean": self.mean,
            "pca_components": self.components,
            "pca_explained_variance_ratio": self.explained_variance_ratio.astype(np.float64),
        }

    def meta(self) -> dict[str, float | int]:
        return {
            "fit_error": self.fit_error,
            "held_out_error": self.held_out_error,
            "num_samples": self.num_samples,
            "out_dim": self.out_dim,
        }

    @classmethod
    def from_saved(cls, arrays: dict[str, np.ndarray], meta: dict) -> PCA:
        return cls(
            arrays["pca_mean"].astype(np.float32),
            arrays["pca_components"].astype(np.float32),
            arrays["pca_explained_variance_ratio"].astype(np.float64),
            float(meta["fit_error"]),
            int(meta["num_samples"]),
            float(meta["held_out_error"]),
        )
