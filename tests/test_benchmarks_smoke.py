"""benchmarks/bench.py's pieces on a small matrix: the scaled matrix every method gets (from a preprocessed file as
the pipeline writes it, sparse and unscaled), a worker per kind of method, and a failed row stopping the run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from rlae_sc import preprocess

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench  # noqa: E402

PARAMS = {"n_top_genes": 150, "min_genes": 50}
K = 5


@pytest.fixture(scope="module")
def matrix(small_counts, tmp_path_factory):
    """The scaled matrix and its uns, as bench.py saves them, from a sparse, unscaled preprocessed file."""
    folder = tmp_path_factory.mktemp("bench")
    stored, _ = preprocess(small_counts, scale=False, **PARAMS)
    stored.write_h5ad(folder / "preprocessed.h5ad")
    X, uns = bench.scaled_matrix(ad.read_h5ad(folder / "preprocessed.h5ad", backed="r"))
    path = folder / "X.npy"
    np.save(path, X)
    path.with_suffix(".uns.json").write_text(json.dumps(uns))
    return path, X


def test_scaled_matrix_is_the_trained_one(small_counts, matrix):
    _, X = matrix
    dense, _ = preprocess(small_counts, **PARAMS)
    assert X.dtype == np.float32 and X.flags.c_contiguous
    np.testing.assert_allclose(X, dense.X, atol=1e-4)


@pytest.mark.parametrize("method", ["rlae_sc", "scanpy_covariance_eigh"])
def test_worker_fits_and_scores(matrix, method, tmp_path):
    path, X = matrix
    out = tmp_path / f"{method}.json"
    bench.worker(method, path, K, out, warmup_rows=200)
    result = json.loads(out.read_text())
    P = np.load(out.with_suffix(".npy"))
    assert P.shape == (X.shape[1], K) and result["call_seconds"] > 0
    e, U, _ = bench.exact_reference(X, K)
    scores = bench.score(P, np.asarray(result["eigenvalues"]), U, e)
    if method == "rlae_sc":  # no eigh in the fit by default: its certificate bounds the directions instead
        assert result["check_seconds"] is None
        # the certificate bounds the directions against the exact eigenvectors of the fit's own C, whose float32
        # products differ from the float64 reference's by about 1e-7 relative: that moves the top-10 directions by
        # about 1e-6 rad here, so 1 - |cos| against the reference may exceed the certified value by about 1e-12
        assert 0.99 < result["certificate_min_cos_top10"] <= scores["min_abs_cos_top10"] + 1e-11
    assert scores["subspace_distance"] < 1e-6 and scores["max_angle_rad"] < 1e-2
    assert scores["eigenvalue_max_rel_err_top10"] < 1e-4


def test_a_failed_row_is_named(matrix, tmp_path):
    path, _ = matrix
    with pytest.raises(bench.RowFailed, match="row 600 cells / no_such_method failed"):
        bench.run_worker("no_such_method", path, K, tmp_path / "x.json", row="600 cells / no_such_method")
