"""Batches: gene selection across batches as scanpy's, per-batch centres, exact directions of the within-batch
scatter, confounded composition, new batches at embedding, Harmony and the integration scores."""

from __future__ import annotations

import json
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

from rlae_sc.batches import align_centres, mutual_pairs
from rlae_sc.cluster import batch_mixing, cluster, label_agreement
from rlae_sc.errors import InputError
from rlae_sc.preprocess import fit_recipe, preprocess, trained_rows
from rlae_sc.rows import H5adMatrix, InMemory
from rlae_sc.simulate import batch_confounded
from rlae_sc.train import fit
from tests.conftest import shared_file

K = 10


@pytest.fixture(scope="module")
def confounded():
    """3 batches with unequal cell-type shares and planted gene shifts (3,000 cells x 800 genes)."""
    return batch_confounded(n_cells=3000, n_genes=800, seed=0)


def scanpy_batch_hvg(cells: ad.AnnData, key: str, n_top_genes: int) -> np.ndarray:
    """scanpy's selection on ``cells`` (counts): genes in at least 3 cells, then ``seurat_v3`` with ``batch_key``;
    the names of the genes chosen."""
    import scanpy as sc

    ref = cells.copy()
    sc.pp.filter_genes(ref, min_cells=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.highly_variable_genes(ref, flavor="seurat_v3", n_top_genes=n_top_genes, batch_key=key)
    return ref.var_names[ref.var["highly_variable"].to_numpy()]


def log_values(pre: ad.AnnData) -> np.ndarray:
    """The log-normalised values of the genes used (float64, dense) of an unscaled preprocessed AnnData."""
    return pre.X.toarray().astype(np.float64)


def knn_agreement(X: np.ndarray, labels: np.ndarray, k: int = 15) -> float:
    """Mean fraction of each cell's k nearest neighbours (itself left out) that share its label."""
    idx = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X, return_distance=False)[:, 1:]
    return float((labels[idx] == labels[:, None]).mean())


def test_batch_aware_genes_equal_scanpys(confounded):
    pre, recipe = preprocess(confounded, scale=False, batch_key="batch", n_top_genes=300, min_genes=50)
    ref = scanpy_batch_hvg(confounded[pre.obs_names], "batch", 300)
    assert recipe.batches == ["batch_1", "batch_2", "batch_3"]
    assert set(recipe.genes) == set(ref)
    one, _ = preprocess(confounded, scale=False, n_top_genes=300, min_genes=50)
    assert set(one.var_names) != set(ref)  # the batches change the choice: the test can tell the two apart


@pytest.mark.slow
def test_batch_aware_genes_equal_scanpys_on_kang_donors():
    counts = ad.read_h5ad(shared_file("kang_se_12261.h5ad"))
    pre, recipe = preprocess(counts, scale=False, batch_key="sample_id", n_top_genes=500)
    ref = scanpy_batch_hvg(counts[pre.obs_names], "sample_id", 500)
    assert len(recipe.batches) == 8
    assert set(recipe.genes) == set(ref)


def test_mean_centring_is_each_batchs_mean_and_directions_are_exact(confounded):
    pre, recipe = preprocess(confounded, scale=False, batch_key="batch", batch_centering="mean", min_genes=50)
    L = log_values(pre)
    batch = pre.obs["batch"].astype(str).to_numpy()
    means = pd.DataFrame(L).groupby(batch).mean().loc[recipe.batches].to_numpy()
    np.testing.assert_allclose(recipe.batch_centre, means, rtol=1e-10, atol=1e-12)
    Z = L - means[pd.Index(recipe.batches).get_indexer(batch)]
    std = Z.std(axis=0, ddof=1)
    np.testing.assert_allclose(recipe.std, np.where(std > 0, std, 1.0), rtol=1e-9)
    Z /= recipe.std
    np.testing.assert_allclose(trained_rows(pre).read(0, pre.n_obs), Z, atol=2e-5)  # float32 blocks
    model = fit(pre, n_components=K, scatter_precision="float64")
    e, U = scipy.linalg.eigh(Z.T @ Z, subset_by_index=[Z.shape[1] - K, Z.shape[1] - 1])
    cos = np.abs(np.sum(model.directions * U[:, ::-1], axis=0))
    assert cos.min() >= 1 - 1e-6
    np.testing.assert_allclose(model.eigenvalues, e[::-1], rtol=1e-6)


def test_known_groups_give_the_two_way_model(confounded):
    """With keep_key and two batches, the centres are the least-squares fit of value = batch + group, by
    numpy on the cells (each connected set of batches keeps its mean)."""
    two = confounded[confounded.obs["batch"].isin(["batch_1", "batch_3"])].copy()
    pre, recipe = preprocess(two, scale=False, batch_key="batch", keep_key="cell_type", min_genes=50)
    L = log_values(pre)
    b = pd.Index(recipe.batches).get_indexer(pre.obs["batch"].astype(str))
    g = pd.Categorical(pre.obs["cell_type"]).codes
    shared = np.isin(g, np.intersect1d(g[b == 0], g[b == 1]))  # groups in one batch only carry no batch effect
    counts = pd.crosstab(b, g)
    shared &= np.isin(g, counts.columns[(counts >= 10).all(axis=0)])
    D = np.column_stack([b[shared] == 1, *(g[shared] == c for c in np.unique(g[shared]))]).astype(float)
    beta = np.linalg.lstsq(D, L[shared], rcond=None)[0]
    np.testing.assert_allclose(recipe.batch_centre[1] - recipe.batch_centre[0], beta[0], atol=1e-8)
    n = np.bincount(b)
    np.testing.assert_allclose(n @ recipe.batch_centre / n.sum(), L.mean(axis=0), atol=1e-10)


def test_align_centres_superposes_matched_clusters():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(3, 5))  # batch shifts
    types = rng.normal(size=(2, 5)) * 3
    means = np.vstack([types[t] + truth[b] for b in range(3) for t in range(2)])
    sizes = np.array([50, 20, 30, 60, 40, 40])
    cluster_batch = np.repeat(np.arange(3), 2)
    pairs = mutual_pairs(means - means.mean(axis=0), cluster_batch, sizes)
    assert {tuple(p) for p in pairs} == {(0, 2), (1, 3), (0, 4), (1, 5), (2, 4), (3, 5)}
    batch_n = np.array([70, 90, 80])
    batch_mean = np.vstack([(sizes[2 * b] * means[2 * b] + sizes[2 * b + 1] * means[2 * b + 1]) / batch_n[b]
                            for b in range(3)])  # fmt: skip
    centres = align_centres(means, sizes, cluster_batch, pairs, batch_mean, batch_n)
    np.testing.assert_allclose(centres - centres[0], truth - truth[0], atol=1e-12)
    lone = align_centres(means, sizes, cluster_batch, pairs[:0], batch_mean, batch_n)
    np.testing.assert_allclose(lone, batch_mean)  # no match: each batch on its own mean


def test_anchors_keep_unequal_shares_separated(confounded):
    truth = batch_confounded(n_cells=3000, n_genes=800, seed=0, batch_effect=False)
    labels = confounded.obs["cell_type"].astype(str).to_numpy()
    scores = {}
    for name, data, params in (
        ("truth", truth, {}),
        ("none", confounded, {}),
        ("anchors", confounded, {"batch_key": "batch"}),
    ):
        pre, _ = preprocess(data, scale=False, min_genes=50, **params)
        model = fit(pre, n_components=20)
        X = model.scores(trained_rows(pre))
        kept = labels[confounded.obs_names.get_indexer(pre.obs_names)]
        scores[name] = (knn_agreement(X, kept), _mixing(X, pre.obs["batch"]))
    assert scores["anchors"][0] >= scores["truth"][0] - 0.02
    assert scores["anchors"][1] > scores["none"][1] + 0.05  # the batches mix where they did not


def _mixing(X: np.ndarray, batches: pd.Series) -> float:
    idx = NearestNeighbors(n_neighbors=16).fit(X).kneighbors(X, return_distance=False)
    graph = sp.csr_matrix((np.ones(idx[:, 1:].size), idx[:, 1:].ravel(), np.arange(0, idx[:, 1:].size + 1, 15)))
    return batch_mixing(graph, batches)


def test_streaming_gives_the_in_memory_centres(confounded, tmp_path):
    path = tmp_path / "c.h5ad"
    confounded.write_h5ad(path)
    params = {"batch_key": "batch", "min_genes": 50, "n_top_genes": 300}
    memory, _ = fit_recipe(InMemory(confounded.X), confounded.var_names, obs=confounded.obs, **params)
    stream, _ = fit_recipe(
        H5adMatrix(str(path), "X"), confounded.var_names, obs=confounded.obs, chunk_size=700, **params
    )
    assert stream.genes == memory.genes
    np.testing.assert_allclose(stream.batch_centre, memory.batch_centre, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stream.std, memory.std, rtol=1e-9)


def test_recipe_round_trip_and_scaled_batches(confounded):
    pre, recipe = preprocess(confounded, scale=False, batch_key="batch", batch_scale=True, min_genes=50)
    again = type(recipe).from_dict(json.loads(json.dumps(recipe.to_dict())))
    np.testing.assert_array_equal(again.batch_centre, recipe.batch_centre)
    assert again.batch_std.shape == (3, len(recipe.genes))
    Z = trained_rows(pre).read(0, pre.n_obs).astype(np.float64)
    for b, name in enumerate(recipe.batches):
        rows = (pre.obs["batch"] == name).to_numpy()
        used = recipe.batch_std[b] != 1.0  # genes constant in the batch keep 1
        rms = np.sqrt((Z[rows][:, used] ** 2).sum(axis=0) / (rows.sum() - 1))
        np.testing.assert_allclose(rms, 1.0, rtol=1e-4)  # unit spread about the batch's own centre


def test_a_new_batch_is_centred_on_its_own_mean(confounded):
    pre, recipe = preprocess(confounded, scale=False, batch_key="batch", batch_centering="mean", min_genes=50)
    model = fit(pre, n_components=K)
    train = model.scores(trained_rows(pre))
    cells = confounded[pre.obs_names].copy()
    known = model.embed(cells.copy()).obsm["X_rlae"]
    np.testing.assert_allclose(known, train, atol=1e-4)
    relabelled = cells.copy()
    relabelled.obs["batch"] = relabelled.obs["batch"].astype(str).str.replace("batch_", "site_")
    new = model.embed(relabelled)
    assert new.uns["rlae_embed"]["new_batches"] == ["site_1", "site_2", "site_3"]
    np.testing.assert_allclose(new.obsm["X_rlae"], train, atol=1e-4)  # its own mean is the batch's mean
    unnamed = cells[cells.obs["batch"] == "batch_2"].copy()
    del unnamed.obs["batch"]
    alone = model.embed(unnamed)
    assert alone.uns["rlae_embed"]["new_batches"] == ["query"]
    np.testing.assert_allclose(alone.obsm["X_rlae"], train[(pre.obs["batch"] == "batch_2").to_numpy()], atol=1e-4)


def test_harmony_and_integration_scores(confounded):
    pre, _ = preprocess(confounded, scale=False, batch_key="batch", min_genes=50)
    model = fit(pre, n_components=20)
    adata = ad.AnnData(obs=pre.obs.copy(), obsm={"X_rlae": model.scores(trained_rows(pre))})
    plain = cluster(adata.copy(), batch_key="batch", label_key="cell_type")
    corrected = adata.copy()
    harmonised = cluster(corrected, batch_key="batch", label_key="cell_type", harmony=True)
    assert corrected.obsm["X_rlae_harmony"].shape == (adata.n_obs, 20)
    assert corrected.uns["neighbors"]["params"]["use_rep"] == "X_rlae_harmony"
    assert harmonised["batch_mixing"] > plain["batch_mixing"]
    assert 0 <= plain["batch_mixing"] <= 1 and 0 <= plain["label_agreement"] <= 1
    with pytest.raises(InputError, match="harmony needs a batch_key"):
        cluster(adata.copy(), harmony=True)


def test_mixing_and_agreement_count_neighbours():
    # 4 cells, 2 neighbours each: cell 0 -> 1, 2; cell 1 -> 0, 3; cell 2 -> 3, 0; cell 3 -> 2, 1
    graph = sp.csr_matrix((np.ones(8), [1, 2, 0, 3, 3, 0, 2, 1], [0, 2, 4, 6, 8]), shape=(4, 4))
    batches = pd.Series(["a", "a", "b", "b"])
    # neighbours' batches: (a, b), (a, b), (b, a), (b, a): inverse Simpson 2 everywhere -> 1
    assert batch_mixing(graph, batches) == pytest.approx(1.0)
    assert batch_mixing(graph, pd.Series(["a", "b", "b", "a"])) == pytest.approx(0.0)  # each sees one batch
    labels = pd.Series(["x", "x", "y", np.nan])
    # labelled cells 0, 1, 2: 0 -> (x, y) 1/2; 1 -> (x, nan) 1/2; 2 -> (nan, x) 0
    assert label_agreement(graph, labels) == pytest.approx(1 / 3)


def test_missing_columns_are_named_before_any_work(confounded):
    with pytest.raises(InputError, match="no batch column 'donor'"):
        preprocess(confounded, batch_key="donor")
    with pytest.raises(InputError, match="no keep column 'type'"):
        preprocess(confounded, batch_key="batch", keep_key="type")
    with pytest.raises(InputError, match="pearson_residuals"):
        preprocess(confounded, batch_key="batch", normalization="pearson_residuals")
    with pytest.raises(InputError, match="unknown batch_centering"):
        preprocess(confounded, batch_key="batch", batch_centering="median")


def test_dask_gives_the_serial_centres(confounded, tmp_path):
    """The batch passes (per-batch sums, the first pass's scatter and scores, the clusters' sums) on a Dask
    worker process give the serial recipe exactly: the same blocks, added in the same order."""
    from rlae_sc.dask_engine import dask_client

    path = tmp_path / "c.h5ad"
    confounded.write_h5ad(path)
    params = {"batch_key": "batch", "min_genes": 50, "n_top_genes": 300, "chunk_size": 1000}
    serial, _ = fit_recipe(H5adMatrix(str(path), "X"), confounded.var_names, obs=confounded.obs, **params)
    with dask_client(1) as client:
        rows = H5adMatrix(str(path), "X")
        on_dask, _ = fit_recipe(rows, confounded.var_names, obs=confounded.obs, client=client, **params)
    assert on_dask.genes == serial.genes
    np.testing.assert_array_equal(on_dask.batch_centre, serial.batch_centre)
    np.testing.assert_array_equal(on_dask.std, serial.std)
