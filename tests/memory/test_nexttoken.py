"""Next-token read-outs: the mixture is a distribution, lambda 0 is the LM, fast == reference, the cache is
causal and chunking-invariant, the datastore's index choice, approximate search vs exact, settings round-trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from s3cmn.nexttoken.datastore import NextTokenDatastore, choose_index
from s3cmn.nexttoken.fit import nearest, restrict, restrict_ref, target_prob
from s3cmn.nexttoken.fitted import CacheSettings, KnnSettings, ReadoutSettings
from s3cmn.nexttoken.readout import (
    Component,
    Neighbours,
    StreamCache,
    cache_neighbours,
    cache_neighbours_ref,
    mixture_log_probs,
    mixture_log_probs_ref,
    mixture_target_log_probs,
)


def _neighbours(n: int, k: int, vocab: int, seed: int, misses: float = 0.3) -> Neighbours:
    g = torch.Generator().manual_seed(seed)
    dist = torch.rand(n, k, generator=g) * 10
    values = torch.randint(0, vocab, (n, k), generator=g)
    miss = torch.rand(n, k, generator=g) < misses
    miss[0] = True  # one row retrieves nothing (an empty cache)
    return Neighbours(dist.masked_fill(miss, math.inf), values.masked_fill(miss, -1))


def _lm(n: int, vocab: int, seed: int) -> torch.Tensor:
    return torch.log_softmax(torch.randn(n, vocab, generator=torch.Generator().manual_seed(seed)).double() * 3, -1)


def test_mixture_sums_to_one_over_the_vocabulary():
    lm = _lm(6, 50, 0)
    comps = [Component(_neighbours(6, 8, 50, 1), 0.3, 2.0), Component(_neighbours(6, 5, 50, 2), 0.25, 0.5)]
    p = mixture_log_probs(lm, comps).exp().sum(-1)
    torch.testing.assert_close(p, torch.ones(6, dtype=torch.float64), atol=1e-12, rtol=0)


def test_lambda_zero_gives_exactly_the_lm():
    lm = _lm(6, 50, 0)
    targets = torch.randint(0, 50, (6,))
    comps = [Component(_neighbours(6, 8, 50, 1), 0.0, 1.0)]
    assert torch.equal(mixture_log_probs(lm, comps), lm.double())
    lm_t = lm.gather(1, targets[:, None]).squeeze(1)
    assert torch.equal(mixture_target_log_probs(lm_t, targets, comps), lm_t.double())


def test_mixture_fast_equals_reference_and_target_path():
    lm = _lm(7, 40, 3)
    comps = [Component(_neighbours(7, 6, 40, 4), 0.4, 1.5), Component(_neighbours(7, 3, 40, 5), 0.2, 3.0)]
    fast = mixture_log_probs(lm, comps)
    torch.testing.assert_close(fast, mixture_log_probs_ref(lm, comps), atol=1e-10, rtol=1e-10)
    targets = torch.randint(0, 40, (7,))
    lm_t = lm.gather(1, targets[:, None]).squeeze(1)
    torch.testing.assert_close(mixture_target_log_probs(lm_t, targets, comps), fast.gather(1, targets[:, None])[:, 0])


def test_a_row_without_hits_keeps_the_lm():
    lm = _lm(3, 20, 0)
    nb = Neighbours(torch.full((3, 4), math.inf), torch.full((3, 4), -1))
    torch.testing.assert_close(mixture_log_probs(lm, [Component(nb, 0.5, 1.0)]), lm.double())


def test_bad_lambdas_are_refused():
    lm = _lm(2, 10, 0)
    with pytest.raises(ValueError, match="sum to"):
        mixture_log_probs(lm, [Component(_neighbours(2, 2, 10, 0), 0.6, 1.0)] * 2)
    with pytest.raises(ValueError, match="lam"):
        CacheSettings(lam=1.0)


def test_cache_neighbours_fast_equals_reference_and_is_causal():
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(30, 8, generator=g)
    key_pos = torch.arange(30)
    values = torch.randint(0, 9, (30,), generator=g)
    queries, query_pos = keys[10:20] + 0.01, torch.arange(10, 20)
    fast = cache_neighbours(queries, query_pos, keys, key_pos, values, window=6, k=4)
    ref = cache_neighbours_ref(queries, query_pos, keys, key_pos, values, window=6, k=4)
    torch.testing.assert_close(fast.distances, ref.distances, atol=1e-4, rtol=1e-5)
    assert torch.equal(fast.values, ref.values)
    age = query_pos[:, None] - fast.positions
    assert bool(((age >= 1) & (age <= 6))[fast.hit].all())  # never itself, never later, never beyond the window


@pytest.mark.parametrize(("window", "k"), [(None, 1), (None, 5), (None, 64), (7, 3), (20, 12), (1000, 64)])
def test_restricted_neighbours_fast_equals_reference(window, k):
    # sorted by distance, as retrieved; a cache's positions, so a window drops some hits in the middle of a row
    nb = _neighbours(200, 48, 11, seed=3)
    order = nb.distances.argsort(-1)
    pos = torch.arange(1000, 1200)
    entry_pos = pos[:, None] - torch.randint(1, 40, (200, 48), generator=torch.Generator().manual_seed(4))
    nb = Neighbours(nb.distances.gather(1, order), nb.values.gather(1, order), entry_pos)
    targets = torch.randint(0, 11, (200,), generator=torch.Generator().manual_seed(5))
    fast, ref = restrict(nb, pos, window, k), restrict_ref(nb, pos, window, k)
    assert fast.distances.shape == (200, min(k, 48))
    sliced = nearest(restrict(nb, pos, window, 48), k)  # the grid search's one restriction a window, then k
    assert torch.equal(sliced.distances, fast.distances) and torch.equal(sliced.values, fast.values)
    assert torch.equal(fast.hit.sum(-1), ref.hit.sum(-1)) and bool((ref.hit.sum(-1) <= k).all())
    for temperature in (0.1, 1.0, 30.0):
        p_fast, hit_fast = target_prob(fast, targets, temperature)
        p_ref, hit_ref = target_prob(ref, targets, temperature)
        torch.testing.assert_close(p_fast, p_ref, rtol=1e-12, atol=1e-15)
        assert torch.equal(hit_fast, hit_ref)


def test_stream_cache_is_chunking_invariant():
    g = torch.Generator().manual_seed(1)
    h, nxt = torch.randn(50, 8, generator=g), torch.randint(0, 20, (50,), generator=g)
    whole = StreamCache(window=16, k=5).read(h, torch.arange(50), nxt)
    cache, parts = StreamCache(window=16, k=5), []
    for lo, hi in ((0, 7), (7, 30), (30, 31), (31, 50)):
        parts.append(cache.read(h[lo:hi], torch.arange(lo, hi), nxt[lo:hi]))
    torch.testing.assert_close(torch.cat([p.distances for p in parts]), whole.distances)
    assert torch.equal(torch.cat([p.values for p in parts]), whole.values)
    assert int(cache.pos.min()) >= 49 - 16  # bounded by the window


def test_index_is_chosen_by_size():
    assert choose_index(10_000, 128) == "Flat"
    assert choose_index(211_403, 128) == "IVF2048,Flat"
    assert choose_index(5_000_000, 128).endswith(",SQ8")
    assert choose_index(50_000_000, 128).endswith(",PQ32")
    assert choose_index(1_000, 128, "ivfpq", pca_dim=64).startswith("PCA64,IVF")
    with pytest.raises(ValueError, match="not one of"):
        choose_index(10, 8, "hnsw")


@pytest.mark.parametrize("kind", ["ivfflat", "sq8", "ivfpq"])
def test_approximate_datastore_search_agrees_with_exact(clustered_data, kind, tmp_path):
    keys = clustered_data(4000, 32, 20, seed=0)
    values = np.arange(4000) % 97
    queries = clustered_data(100, 32, 20, seed=0, sample_seed=1)
    exact = NextTokenDatastore.build(keys, values, np.arange(4000), kind="flat")
    approx = NextTokenDatastore.build(keys, values, np.arange(4000), kind=kind, nprobe=16)
    approx.save(tmp_path / "ds")
    loaded = NextTokenDatastore.load(tmp_path / "ds")
    e, a = exact.search(queries, 10), loaded.search(queries, 10)
    recall = np.mean([len(set(x.tolist()) & set(y.tolist())) / 10 for x, y in zip(e.values, a.values, strict=True)])
    assert recall > (0.9 if kind != "ivfpq" else 0.3)
    assert torch.equal(a.values, approx.search(queries, 10).values)  # save -> load gives the same answers


def test_corrupt_datastore_is_refused(clustered_data, tmp_path):
    keys = clustered_data(100, 8, 4, seed=0)
    NextTokenDatastore.build(keys, np.zeros(100), np.arange(100)).save(tmp_path)
    (tmp_path / "values.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        NextTokenDatastore.load(tmp_path)


def test_fitted_settings_round_trip(tmp_path):
    settings = ReadoutSettings(cache=CacheSettings(0.31, 2.5, 32, 1024), knn=KnnSettings(0.12, 7.0, 16, 8),
                               combined=(0.25, 0.1), fitted_on={"path": "/x/heldout.raw", "sha256": "ab" * 32},
                               context_length=128, stride=64, fit={"tokens": 10})  # fmt: skip
    loaded = ReadoutSettings.load(settings.save(tmp_path / "readout.json"))
    assert loaded == settings
    data = settings.to_dict() | {"lamda": 1}
    with pytest.raises(ValueError, match="unknown keys"):
        ReadoutSettings.from_dict(data)
