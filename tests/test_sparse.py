"""The stored preprocessed matrix is sparse (log-normalised values); C and the directions equal the dense path's."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from rlae_sc import pipeline
from rlae_sc.lae import theory
from rlae_sc.preprocess import preprocess, trained_rows
from rlae_sc.products import scatter_matrix
from rlae_sc.recipe import LOG_NORMALIZED
from rlae_sc.train import fit
from tests.conftest import shared_file, trained_matrix

PARAMS = {"n_top_genes": 200, "min_genes": 50}


@pytest.mark.parametrize("clip", [None, 2.0])
def test_scaling_on_the_fly_equals_the_dense_matrix(small_counts, clip):
    dense, _ = preprocess(small_counts, clip=clip, **PARAMS)
    stored, _ = preprocess(small_counts, clip=clip, scale=False, **PARAMS)
    assert sp.issparse(stored.X) and stored.uns["rlae_preprocess"]["X"] == LOG_NORMALIZED
    assert stored.X.nnz < 0.6 * np.prod(stored.shape)
    rows = trained_rows(stored)
    scale = np.abs(dense.X).max()
    np.testing.assert_allclose(rows.read(0, stored.n_obs), dense.X, rtol=0, atol=1e-6 * scale)  # float32 arithmetic
    np.testing.assert_array_equal(rows.read(100, 250), rows.read(0, stored.n_obs)[100:250])
    np.testing.assert_allclose(trained_matrix(stored), dense.X, atol=1e-5)  # independent recomputation
    for precision, tol in (("float64", 1e-6), ("float32", 1e-5)):  # inputs differ by float32 rounding (1e-7)
        C_dense = scatter_matrix(dense.X, precision=precision)
        C_sparse = scatter_matrix(rows, precision=precision, chunk_size=128)
        np.testing.assert_allclose(C_sparse, C_dense, rtol=0, atol=tol * np.abs(C_dense).max())


@pytest.mark.parametrize("name", ["garnett_pbmc800.h5ad", "kang_se_12261.h5ad"])
def test_sparse_file_gives_the_dense_directions_on_real_data(name, tmp_path):
    path = shared_file(name)
    counts = ad.read_h5ad(path)
    dense, _ = preprocess(counts)
    pipeline.preprocess_file(path, tmp_path / "pre.h5ad")
    stored = ad.read_h5ad(tmp_path / "pre.h5ad", backed="r")
    assert stored.uns["rlae_preprocess"]["X"] == LOG_NORMALIZED
    a, b = fit(dense, n_components=30), fit(stored, n_components=30)
    assert theory.alignment(a.directions, b.directions)[:10].min() >= 1 - 1e-9
    np.testing.assert_allclose(b.eigenvalues[:10], a.eigenvalues[:10], rtol=1e-6)
    stored.file.close()
