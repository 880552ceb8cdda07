"""Sparse products (rlae_sc.affine.AffineRows): C and the scores from sparse blocks, the recipe's centring and
scaling applied outside the products, equal the dense path's to rounding, with and without batches."""

import numpy as np
import pytest
import scipy.sparse as sp
from distributed import Client

from rlae_sc import products
from rlae_sc.affine import AffineRows
from rlae_sc.lae import theory
from rlae_sc.preprocess import preprocess, trained_rows
from rlae_sc.products import scatter_matrix, scores
from rlae_sc.simulate import synthetic_counts
from tests.test_dask import tcp_cluster

K = 10
CASES = {
    "no batches": {},
    "batches": {"batch_key": "batch"},
    "batches, own scale": {"batch_key": "batch", "batch_scale": True},
    "batches, mean centring": {"batch_key": "batch", "batch_centering": "mean"},
}


@pytest.fixture(scope="module")
def counts():
    adata = synthetic_counts(n_cells=900, n_genes=300, n_types=4, rank=5, seed=3)
    adata.obs["batch"] = np.random.default_rng(0).choice(["a", "b", "c"], adata.n_obs)
    return adata


def dense_rows(rows) -> np.ndarray:
    """The trained matrix of ``rows`` (:class:`rlae_sc.preprocess.ScaledRows`) scaled densely in float64."""
    L = sp.csr_matrix(rows.rows.read(0, rows.shape[0]))
    return rows.recipe.scale_rows(L, np.arange(rows.shape[1]), batch=rows.batch, dtype=np.float64)


@pytest.mark.parametrize("density", [1.0, 0.0], ids=["sparse products", "dense blocks"])
@pytest.mark.parametrize("case", CASES)
def test_sparse_products_equal_the_dense_path(counts, case, density, monkeypatch):
    monkeypatch.setattr(products, "SPARSE_DENSITY", density)  # the test's blocks are about 30% full
    pre, recipe = preprocess(counts, scale=False, n_top_genes=200, min_genes=50, **CASES[case])
    rows = trained_rows(pre)
    assert isinstance(rows.sparse, AffineRows) and bool(recipe.batches) == ("batch_key" in CASES[case])
    X = dense_rows(rows)
    C_dense = scatter_matrix(X, precision="float64", device="cpu")
    C_sparse = scatter_matrix(rows, precision="float64", device="cpu", chunk_size=128)  # blocks mix batches
    assert np.max(np.abs(C_sparse - C_dense)) <= 1e-9 * np.max(np.abs(C_dense))
    e, U = theory.exact_pca(C_dense, K)
    _, V = theory.exact_pca(C_sparse, K)
    assert theory.alignment(V, U).min() >= 1 - 1e-9
    got, got_sq = scores(rows, U, residuals=True, chunk_size=128, device="cpu")
    want, want_sq = scores(X, U, residuals=True, device="cpu")
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))  # float32 scores
    assert np.allclose(got_sq, want_sq, rtol=1e-9, atol=1e-9 * want_sq.max())


def test_clipping_keeps_the_dense_path(counts):
    pre, _ = preprocess(counts, scale=False, n_top_genes=200, min_genes=50, clip=3.0)
    assert trained_rows(pre).sparse is None


def sparse_products_everywhere() -> None:
    """On a Dask worker: every block by sparse products, as the single-process test's monkeypatch."""
    products.SPARSE_DENSITY = 1.0


def test_sparse_products_on_dask_equal_the_dense_path(counts, tmp_path):
    pre, _ = preprocess(counts, scale=False, n_top_genes=200, min_genes=50, batch_key="batch")
    rows = trained_rows(pre)
    X = dense_rows(rows)
    C_dense = scatter_matrix(X, precision="float64", device="cpu")
    _, U = theory.exact_pca(C_dense, K)
    with tcp_cluster(2, tmp_path) as (address, _), Client(address) as client:
        client.run(sparse_products_everywhere)
        C = scatter_matrix(rows, precision="float64", chunk_size=128, client=client)
        got = scores(rows, U, chunk_size=128, client=client)
    assert np.max(np.abs(C - C_dense)) <= 1e-9 * np.max(np.abs(C_dense))
    assert np.max(np.abs(got - X @ U)) <= 1e-5 * np.max(np.abs(X @ U))
