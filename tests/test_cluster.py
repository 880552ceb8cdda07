"""Neighbours (exact below the threshold, faiss IVF above), the sketch, and the saved neighbour index."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from sklearn.neighbors import NearestNeighbors

from rlae_sc import neighbors
from rlae_sc.cluster import cluster
from rlae_sc.errors import InputError
from rlae_sc.fuzzy_graph import umap_graph
from rlae_sc.keys import EMBEDDING_KEY


def blobs(n: int, *, d: int = 20, n_types: int = 5, seed: int = 0) -> ad.AnnData:
    """``n`` cells in ``n_types`` Gaussian blobs in ``d`` dimensions whose spread falls with the dimension
    as PCA scores' does (standard deviation ``(j + 1)^-0.75`` in dimension j), labels in ``obs['type']``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(n_types, d))
    types = rng.integers(0, n_types, n)
    X = (centres[types] + rng.normal(size=(n, d)) / np.arange(1, d + 1) ** 0.75).astype(np.float32)
    obs = pd.DataFrame({"type": pd.Categorical(types.astype(str))}, index=map(str, range(n)))
    return ad.AnnData(obs=obs, obsm={EMBEDDING_KEY: X})


def test_below_the_threshold_the_graph_is_scanpys_exact_graph():
    a = blobs(800)
    cluster(a)
    b = ad.AnnData(obsm={EMBEDDING_KEY: a.obsm[EMBEDDING_KEY].copy()})
    sc.pp.neighbors(b, use_rep=EMBEDDING_KEY, n_neighbors=15, transformer="sklearn")
    for key in ("distances", "connectivities"):  # same cells, distances and weights as scanpy's exact graph
        diff = a.obsp[key] - b.obsp[key]
        assert (a.obsp[key] != 0).nnz == (b.obsp[key] != 0).nnz
        assert abs(diff).max() <= 1e-5 * abs(b.obsp[key]).max()
    assert a.uns["neighbors"]["params"]["use_rep"] == EMBEDDING_KEY


def test_duplicate_cells_are_neighbours_and_the_cell_itself_is_left_out():
    X = blobs(300).obsm[EMBEDDING_KEY]
    X = np.vstack([X, X[:50]])  # cells 300-349 duplicate cells 0-49: distance 0 to another cell
    dist, idx = neighbors.knn(neighbors.build_index(X), 15)
    assert dist.shape == idx.shape == (len(X), 14) and idx.dtype == np.int32
    assert not (idx == np.arange(len(X))[:, None]).any()
    assert (idx[:50, 0] == np.arange(300, 350)).all() and (dist[:50, 0] == 0).all()
    exact, _ = NearestNeighbors(n_neighbors=15).fit(X).kneighbors(X)  # the cell itself (or its twin) first
    np.testing.assert_allclose(dist, exact[:, 1:], atol=1e-6)
    distances, connectivities = umap_graph(dist, idx)
    assert distances.diagonal().sum() == 0 and distances.getnnz(axis=1).tolist() == [14] * len(X)
    assert abs(connectivities - connectivities.T).max() == 0 and connectivities.diagonal().sum() == 0


def test_an_embedding_on_disk_gives_the_in_memory_results(tmp_path):
    """The cluster stage's way (embedding read from an .h5ad block by block, graph built before obs is read)
    gives the bytes of the Python API's results, above the exact-search threshold and with a sketch."""
    import h5py

    from rlae_sc.cluster import neighbour_graph
    from rlae_sc.embedding_rows import EmbeddingRows

    a = blobs(3000, seed=4)
    with h5py.File(tmp_path / "e.h5", "w") as f:
        f["X_rlae"] = a.obsm[EMBEDDING_KEY]
    options = {"sketch_cells": 1000, "n_dims": 12, "label_key": "type"}
    in_memory = cluster(a.copy(), **options)
    b = ad.AnnData(obs=a.obs.copy())
    with h5py.File(tmp_path / "e.h5", "r") as f:
        rows = EmbeddingRows(f["X_rlae"], 12)
        np.testing.assert_array_equal(rows.take(np.array([2999, 5, 1024])), a.obsm[EMBEDDING_KEY][[2999, 5, 1024], :12])
        graph = neighbour_graph(rows, n_neighbors=15, seed=0)
        on_disk = cluster(b, embedding=f["X_rlae"], graph=graph, **options)
    assert on_disk["sha256"] == in_memory["sha256"] and on_disk["ari"] == in_memory["ari"]
    assert EMBEDDING_KEY not in b.obsm


def test_ivf_index_recall_above_the_threshold(monkeypatch):
    monkeypatch.setattr(neighbors, "EXACT_MAX_CELLS", 1000)
    X = blobs(20_000, d=30).obsm[EMBEDDING_KEY]
    index = neighbors.build_index(X)
    assert index.nprobe == neighbors.NPROBE and index.ntotal == len(X)
    q = np.random.default_rng(1).choice(len(X), 500, replace=False)
    _, approx = neighbors.search(index, X[q], 16)
    _, exact = NearestNeighbors(n_neighbors=16).fit(X).kneighbors(X[q])
    recall = np.mean([len(np.intersect1d(a[1:], b[1:])) / 15 for a, b in zip(approx, exact, strict=True)])
    assert recall >= 0.95
    # the whole graph, searched list by list: each cell's results are its own search's, in row order
    dist, idx = neighbors.knn(index, 15)
    _, alone = neighbors.search(index, X, 15)
    has_self = (alone == np.arange(len(X))[:, None]).any(axis=1)
    assert has_self.mean() > 0.99
    for i in np.flatnonzero(has_self)[::97]:
        assert sorted(idx[i]) == sorted(set(alone[i]) - {i})
    np.testing.assert_allclose(dist, np.linalg.norm(X[idx] - X[:, None, :], axis=2), rtol=1e-6, atol=1e-6)
    index.nprobe = 1  # the same index searching one list: the bar above is not met by chance
    _, one = neighbors.search(index, X[q], 16)
    assert np.mean([len(np.intersect1d(a[1:], b[1:])) / 15 for a, b in zip(one, exact, strict=True)]) < recall


def test_the_approximate_graph_has_the_same_bytes_with_one_thread_and_two():
    """faiss trains, adds and searches with OpenMP threads and its own BLAS; the IVF index's neighbours and
    distances must not depend on how many there are (issue 27: the same bytes on every machine)."""
    import faiss

    X = blobs(30_000, d=30, seed=7).obsm[EMBEDDING_KEY]
    before = faiss.omp_get_max_threads()
    results = []
    try:
        for threads in (1, 2):
            faiss.omp_set_num_threads(threads)
            results.append(neighbors.knn(neighbors.build_index(X, exact=False), 15))
    finally:
        faiss.omp_set_num_threads(before)
    (d1, i1), (d2, i2) = results
    assert np.array_equal(i1, i2) and np.array_equal(d1, d2)


def test_sketch_cells_vote_for_the_rest():
    a = blobs(1500, seed=3)
    result = cluster(a, sketch_cells=400, label_key="type")
    sketch = a.obs["rlae_sketch"].to_numpy()
    assert sketch.sum() == 400 and a.uns["rlae_cluster"]["sketch_cells"] == 400
    assert result["n_clusters"] == a.obs["leiden"].nunique() and result["ari"] > 0.9
    # each other cell: the kernel-weighted majority of its 15 nearest sketch cells, recomputed by brute force
    X, labels = a.obsm[EMBEDDING_KEY], a.obs["leiden"].astype(str).to_numpy()
    dist, idx = NearestNeighbors(n_neighbors=15).fit(X[sketch]).kneighbors(X[~sketch])
    h = np.median(dist, axis=1, keepdims=True)
    w = np.exp(-((dist / h) ** 2))
    for i in range(0, (~sketch).sum(), 50):
        votes = pd.Series(w[i]).groupby(labels[sketch][idx[i]]).sum()
        assert labels[~sketch][i] == votes.idxmax()
    np.testing.assert_allclose(
        a.obsm["X_umap"][~sketch][::50], a.obsm["X_umap"][sketch][idx[::50]].mean(axis=1), rtol=1e-5
    )


def test_saved_index_is_checked(tmp_path):
    X = blobs(300).obsm[EMBEDDING_KEY]
    sha = neighbors.save_index(neighbors.build_index(X), tmp_path / "a.faiss")
    again = neighbors.load_index(tmp_path / "a.faiss", sha256=sha)
    np.testing.assert_array_equal(neighbors.search(again, X[:5], 3)[1][:, 0], np.arange(5))
    data = bytearray((tmp_path / "a.faiss").read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "a.faiss").write_bytes(bytes(data))
    with pytest.raises(InputError, match="checksum"):
        neighbors.load_index(tmp_path / "a.faiss", sha256=sha)


def test_the_cluster_stage_sets_its_graph_aside_and_gives_the_in_memory_results(tmp_path):
    """Above sketch_cells the stage builds the graph from the embedding on disk, writes it to a file of its own
    and copies it into its output: the results and the output's graphs are those of cluster() in memory."""
    from rlae_sc.pipeline import cluster_file, directions_file, preprocess_file, train_file
    from rlae_sc.simulate import synthetic_counts

    counts, pre, model, directions = (tmp_path / f for f in ("c.h5ad", "p.h5ad", "m.npz", "d.h5ad"))
    synthetic_counts(n_cells=900, n_genes=300, n_types=3, rank=4, seed=1).write_h5ad(counts)
    preprocess_file(counts, pre, n_top_genes=100, min_genes=10)
    train_file(pre, model, n_components=6)
    directions_file(pre, model, directions)
    out = tmp_path / "embedding.h5ad"
    metrics = cluster_file(directions, out, tmp_path / "metrics.json", sketch_cells=300, label_key="cell_type")
    assert not (tmp_path / "embedding.h5ad.graph.h5").exists()
    reference = ad.read_h5ad(directions)
    expected = cluster(reference, sketch_cells=300, label_key="cell_type")
    assert metrics["sha256"] == expected["sha256"] and metrics["label_agreement"] == expected["label_agreement"]
    written = ad.read_h5ad(out)
    for key in ("distances", "connectivities"):
        assert (written.obsp[key] != reference.obsp[key]).nnz == 0
    np.testing.assert_array_equal(written.obsm[EMBEDDING_KEY], reference.obsm[EMBEDDING_KEY])
    assert (written.obs["leiden"] == reference.obs["leiden"]).all()
