"""Analytic Pearson residuals against scanpy.experimental (garnett; skipped without ../shared/data, failed instead
under RLAE_SC_REQUIRE_DATA)."""

import warnings

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

from rlae_sc.residuals import default_clip, pearson_residuals, residual_sums, residual_variance, select_genes
from tests.conftest import shared_file


def test_residuals_by_formula_on_a_small_matrix():
    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.gamma(1.0, 2.0, size=(1, 30)) * rng.gamma(3.0, 1.0, size=(50, 1))).astype(float)
    counts[:, 0] = 0  # a gene without counts: residual 0, as no count is expected
    gene_sums = counts.sum(0)
    z = pearson_residuals(sp.csr_matrix(counts), gene_sums=gene_sums, theta=10.0, clip=2.5)
    n_c = counts.sum(1, keepdims=True)
    mu = n_c * gene_sums / gene_sums.sum()
    with np.errstate(invalid="ignore"):
        expected = np.clip(np.nan_to_num((counts - mu) / np.sqrt(mu + mu**2 / 10.0)), -2.5, 2.5)
    np.testing.assert_allclose(z, expected, atol=1e-12)
    sums = residual_sums(counts, gene_sums=gene_sums, theta=10.0, clip=2.5)
    np.testing.assert_allclose(sums["sum"], expected.sum(0), atol=1e-10)
    np.testing.assert_allclose(residual_variance(sums, 50), expected.var(0), atol=1e-10)


@pytest.fixture(scope="module")
def garnett_filtered():
    a = ad.read_h5ad(shared_file("garnett_pbmc800.h5ad"))
    sc.pp.filter_cells(a, min_genes=200)
    sc.pp.filter_genes(a, min_cells=3)
    return a


def test_gene_selection_and_residuals_equal_scanpy_on_garnett(garnett_filtered):
    a = garnett_filtered
    X = sp.csr_matrix(a.X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = sc.experimental.pp.highly_variable_genes(a, flavor="pearson_residuals", n_top_genes=2000, inplace=False)
    gene_sums = np.asarray(X.sum(0), dtype=np.float64).ravel()
    clip = default_clip(a.n_obs)
    variance = residual_variance(residual_sums(X, gene_sums=gene_sums, clip=clip), a.n_obs)
    # scanpy sums float32 counts in float32
    np.testing.assert_allclose(variance, table["residual_variances"].to_numpy(), rtol=1e-7)
    hvg = select_genes(variance, 2000)
    np.testing.assert_array_equal(hvg, table["highly_variable"].to_numpy())
    sub = a[:, hvg].copy()  # scanpy's recipe: the residuals of the selected genes, totals over them
    sc.experimental.pp.normalize_pearson_residuals(sub)
    ours = pearson_residuals(X[:, hvg], gene_sums=gene_sums[hvg], clip=clip)
    assert np.max(np.abs(ours - np.asarray(sub.X))) <= 1e-5
