"""Fixtures of the memory tests: seeded data generators."""

from __future__ import annotations

import numpy as np
import pytest


def clustered(
    n: int, dim: int, num_centers: int, seed: int, spread: float = 0.3, sample_seed: int | None = None
) -> np.ndarray:
    """``n`` float32 points (n, dim) around ``num_centers`` Gaussian centres drawn with ``seed``; the points
    themselves are drawn with ``sample_seed`` (default: ``seed``), so queries can share the data's centres."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((num_centers, dim))
    rng = rng if sample_seed is None else np.random.default_rng(sample_seed)
    labels = rng.integers(0, num_centers, n)
    return (centers[labels] + spread * rng.standard_normal((n, dim))).astype(np.float32)


def low_rank(n: int, dim: int, rank: int, seed: int, noise: float = 0.01) -> np.ndarray:
    """``n`` points in a random ``rank``-dimensional subspace of R^dim plus small isotropic noise."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0].T  # (rank, dim) orthonormal
    scales = np.linspace(3.0, 1.0, rank)
    z = rng.standard_normal((n, rank)) * scales
    return (z @ basis + noise * rng.standard_normal((n, dim))).astype(np.float32)


@pytest.fixture
def clustered_data():
    return clustered


@pytest.fixture
def low_rank_data():
    return low_rank
