"""preprocess normalization pearson_residuals against scanpy.experimental, in memory and streaming."""

import warnings

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

from rlae_sc import pipeline
from rlae_sc.errors import InputError
from rlae_sc.preprocess import preprocess, trained_rows
from rlae_sc.recipe import COUNTS

from .conftest import shared_file

STEPS = {"normalization": "pearson_residuals", "min_genes": 200, "min_cells": 3, "max_pct_mito": None}


def scanpy_pearson(counts: ad.AnnData, n_top_genes: int) -> tuple[np.ndarray, np.ndarray]:
    """scanpy.experimental's recipe: filters, HVG by residual variance, residuals of the selected genes."""
    a = counts.copy()
    sc.pp.filter_cells(a, min_genes=STEPS["min_genes"])
    sc.pp.filter_genes(a, min_cells=STEPS["min_cells"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.experimental.pp.highly_variable_genes(a, flavor="pearson_residuals", n_top_genes=n_top_genes)
    sub = a[:, a.var["highly_variable"].to_numpy()].copy()
    sc.experimental.pp.normalize_pearson_residuals(sub)
    return sub.var_names.to_numpy(), np.asarray(sub.X)


def residuals_of(pre: ad.AnnData) -> np.ndarray:
    """The uncentred residuals a preprocessed AnnData trains on: its trained rows plus the recipe's mean."""
    rows = trained_rows(pre)
    return rows.read(0, rows.shape[0]).astype(np.float64) + pre.var["mean"].to_numpy()


@pytest.fixture(scope="module")
def garnett():
    return ad.read_h5ad(shared_file("garnett_pbmc800.h5ad"))


def test_pearson_residuals_equal_scanpy_on_garnett(garnett, tmp_path):
    genes, expected = scanpy_pearson(garnett, 2000)
    pre, recipe = preprocess(garnett, scale=False, **STEPS)
    assert pre.uns["rlae_preprocess"]["X"] == COUNTS and recipe.hvg_flavor == "pearson_residuals"
    np.testing.assert_array_equal(pre.var_names.to_numpy(), genes)
    assert np.max(np.abs(residuals_of(pre) - expected)) <= 1e-5
    np.testing.assert_allclose(pre.var["std"], 1.0)
    dense, _ = preprocess(garnett, **STEPS)  # the trained matrix itself, computed in float64: centred residuals
    np.testing.assert_allclose(dense.X, expected - expected.mean(0), atol=1e-5)
    # replaying the recipe on the input's cells (RLAEModel.embed's path) gives the same rows
    np.testing.assert_allclose(recipe.transform(garnett[pre.obs_names]), dense.X, atol=1e-5)

    path = tmp_path / "garnett.h5ad"
    garnett.write_h5ad(path)
    pipeline.preprocess_file(path, tmp_path / "pre.h5ad", streaming=True, **STEPS)
    streamed = ad.read_h5ad(tmp_path / "pre.h5ad")
    assert sp.issparse(streamed.X) and streamed.uns["rlae_preprocess"]["X"] == COUNTS
    np.testing.assert_array_equal(streamed.var_names.to_numpy(), genes)
    assert np.max(np.abs(residuals_of(streamed) - expected)) <= 1e-5


def test_pearson_residuals_need_counts(small_counts):
    with pytest.raises(InputError, match="pearson_residuals needs raw counts"):
        preprocess(small_counts, input_kind="log_normalized", normalization="pearson_residuals")
