"""PCA compression of memory keys: target and adaptive dimension, explained variance, buffering, drift refit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s3cmn.memory import PCA, FaissMemory
from s3cmn.memory.settings import MemorySettings


def test_pca_matches_svd_and_reports_variance(low_rank_data):
    x = low_rank_data(400, 24, rank=6, seed=0)
    pca = PCA.fit(x, dim=6, variance=0.95)
    assert pca.out_dim == 6 and pca.explained_variance > 0.999
    assert pca.fit_error == pytest.approx(1 - pca.explained_variance, abs=1e-6)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(6), atol=1e-5)
    xc = x - x.mean(0)
    singular = np.linalg.svd(xc, compute_uv=False)
    np.testing.assert_allclose(pca.explained_variance_ratio[:6], (singular**2 / (singular**2).sum())[:6], rtol=1e-4)
    # torch twin == numpy encode, and is differentiable in its input
    xt = torch.from_numpy(x[:5]).requires_grad_()
    np.testing.assert_allclose(pca.encode_torch(xt).detach().numpy(), pca.encode(x[:5]), atol=1e-5)
    pca.encode_torch(xt).sum().backward()
    assert xt.grad is not None and xt.grad.abs().sum() > 0


def test_adaptive_dim_keeps_the_requested_variance(low_rank_data):
    x = low_rank_data(400, 24, rank=5, seed=1)
    pca = PCA.fit(x, dim=0, variance=0.9)
    cumulative = np.cumsum(pca.explained_variance_ratio)
    assert cumulative[pca.out_dim - 1] >= 0.9 > cumulative[pca.out_dim - 2]
    assert pca.out_dim <= 5
    assert PCA.fit(x, dim=0, variance=1.0).out_dim >= 5


def test_memory_searches_raw_keys_until_the_pca_can_be_fitted(low_rank_data):
    # Issue 15: searchable from the first write (before, writes were buffered unsearchable until the PCA fit).
    x = low_rank_data(100, 24, rank=4, seed=2)
    # pca_min_samples = D = 24
    mem = FaissMemory(MemorySettings(dim=24, memory_size=200, num_clusters=4, memory_compression_dim=4))
    mem.write(x[:10])
    assert mem.num_entries == 10 and mem.searchable and mem.stats().pending == 0 and mem.key_dim == 24
    assert mem.pca is None and mem.search(x[:2], k=1).ids[:, 0].tolist() == [0, 1]  # exact, raw keys
    mem.write(x[10:30])
    assert mem.searchable and mem.key_dim == 4 and mem.stats().pending == 0
    stats = mem.stats()
    assert stats.compression_ratio == 6.0 and stats.pca_explained_variance > 0.99
    res = mem.search(x[:3], k=1)
    assert res.ids[:, 0].tolist() == [0, 1, 2]  # each stored point finds itself
    assert res.keys.shape == (3, 1, 4)
    np.testing.assert_allclose(np.linalg.norm(res.keys.numpy(), axis=-1), 1.0, atol=1e-5)


def test_adaptive_memory_dimension(low_rank_data):
    settings = MemorySettings(dim=24, memory_size=200, memory_compression_dim=0, memory_compression_variance=0.95)
    mem = FaissMemory(settings)
    mem.write(low_rank_data(50, 24, rank=3, seed=3))
    assert 1 <= mem.key_dim <= 3 and mem.stats().pca_explained_variance >= 0.95


def test_refit_when_the_distribution_drifts(low_rank_data):
    settings = MemorySettings(dim=24, memory_size=1000, num_clusters=4, memory_compression_dim=4,
                              memory_refit_drift=0.25)
    mem = FaissMemory(settings)
    mem.write(low_rank_data(100, 24, rank=4, seed=4))
    same = low_rank_data(50, 24, rank=4, seed=4)  # same subspace: no refit
    mem.write(same)
    assert mem.stats().refits == 0
    first_components = mem.pca.components.copy()
    mem.write(low_rank_data(400, 24, rank=4, seed=5))  # another subspace: the error jumps
    assert mem.stats().refits == 1
    assert not np.allclose(mem.pca.components, first_components)
    assert mem.pca.num_samples == 550 and mem.index.ntotal == 550
    # after the refit, every key is the re-encoded stored value
    entries = mem.entries()
    np.testing.assert_allclose(entries["keys"], mem.encode(entries["values"]), atol=1e-6)
