"""UMAP's neighbour graph built in place by compiled kernels, against scipy's sparse algebra; fingerprints
computed in place, against copies."""

from __future__ import annotations

import h5py
import numpy as np
import scipy.sparse as sp

from rlae_sc import fuzzy_graph
from rlae_sc.fingerprints import array_sha256, graph_sha256


def neighbours(n: int, k: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random distinct neighbours of each of ``n`` cells (never itself) and increasing distances, as
    :func:`rlae_sc.neighbors.knn` returns them (n x (k - 1), float32 and int32)."""
    rng = np.random.default_rng(seed)
    idx = np.array([rng.choice(np.delete(np.arange(n), i), k - 1, replace=False) for i in range(n)], np.int32)
    dist = np.sort(rng.gamma(4.0, 0.5, size=(n, k - 1)), axis=1).astype(np.float32)
    dist[:20, :3] = 0  # twins: distance 0
    return dist, idx


def scipy_union(dist: np.ndarray, idx: np.ndarray, strengths: np.ndarray) -> sp.csr_matrix:
    """``a + a^T - a * a^T`` by scipy's operations on float32, as umap-learn and scanpy compute it."""
    n, width = idx.shape
    a = sp.csr_matrix((strengths.ravel(), idx.ravel(), np.arange(0, n * width + 1, width)), shape=(n, n), copy=True)
    a.eliminate_zeros()
    a_t = a.T.tocsr()
    union = (a + a_t) - a.multiply(a_t).tocsr()
    union.sort_indices()
    return union


def test_the_union_equals_scipys_to_the_bit_with_dropped_strengths(monkeypatch):
    dist, idx = neighbours(3000, 15)
    strengths = fuzzy_graph.membership_strengths(dist)
    strengths[np.random.default_rng(1).random(strengths.shape) < 0.1] = 0  # strengths that underflowed
    expected = scipy_union(dist, idx, strengths)
    indptr = np.arange(0, dist.size + 1, 14)
    expected_distances = sp.csr_matrix((dist.ravel(), idx.ravel(), indptr), (3000, 3000), copy=True)
    expected_distances.sort_indices()
    monkeypatch.setattr(fuzzy_graph, "membership_strengths", lambda d: strengths.copy())
    distances, connectivities = fuzzy_graph.umap_graph(dist.copy(), idx.copy())
    for got, want in ((distances, expected_distances), (connectivities, expected)):
        assert got.dtype == np.float32 and got.indices.dtype == np.int32 and got.has_canonical_format
        np.testing.assert_array_equal(got.indptr, want.indptr)
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_array_equal(got.data, want.data)


def test_membership_strengths_meet_umaps_equation():
    dist, _ = neighbours(500, 15, seed=2)
    strengths = fuzzy_graph.membership_strengths(dist).astype(np.float64)
    # each row's strengths sum to log2(k) (the bandwidth's equation; rows with twins start above it), and the
    # nearest positive distance has strength 1
    np.testing.assert_allclose(strengths[20:].sum(axis=1), np.log2(15), atol=1e-4)
    nearest = np.argmax(dist > 0, axis=1)
    assert (strengths[np.arange(500), nearest] == 1).all()


def test_fingerprints_in_place_and_from_disk_equal_those_of_copies(tmp_path):
    X = np.random.default_rng(3).normal(size=(2500, 7)).astype(np.float32)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["x"] = X
    with h5py.File(tmp_path / "x.h5", "r") as f:
        assert array_sha256(f["x"]) == array_sha256(X.copy())
    assert array_sha256(X) != array_sha256(X.astype(np.float64))
    dist, idx = neighbours(400, 10, seed=4)
    graph = fuzzy_graph.umap_graph(dist, idx)[1]
    shuffled = graph.tocoo()
    order = np.random.default_rng(5).permutation(shuffled.nnz)
    shuffled = sp.coo_matrix((shuffled.data[order], (shuffled.row[order], shuffled.col[order])), graph.shape)
    assert graph_sha256(graph) == graph_sha256(shuffled.tocsr()) == graph_sha256(shuffled)
    graph.data[0] += 1e-6
    assert graph_sha256(graph) != graph_sha256(shuffled)
