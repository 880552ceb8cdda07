"""Acceptance on real count matrices from ../shared/data (skipped when absent).

Each bar is recomputed here from the written outputs with scipy's eigh, not read from metrics.json.
"""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import scipy.linalg
from sklearn.metrics import adjusted_rand_score

from rlae_sc.pipeline import run
from tests.conftest import shared_file

pytestmark = pytest.mark.slow


def recompute(out, k):
    pre = ad.read_h5ad(out / "preprocessed.h5ad")
    emb = ad.read_h5ad(out / "embedding.h5ad")
    X = pre.X.astype(np.float64)
    X -= X.mean(axis=0)
    m = X.shape[1]
    e, U = scipy.linalg.eigh(X.T @ X, subset_by_index=[m - k, m - 1])
    e, U = e[::-1], U[:, ::-1]
    P = emb.varm["rlae_directions"][emb.var["rlae_used"].to_numpy()].astype(np.float64)
    cos = np.abs(np.sum(P * U, axis=0)) / np.linalg.norm(P, axis=0)
    rel = np.abs(emb.uns["rlae"]["eigenvalues"] - e) / e
    Q = np.linalg.qr(P)[0]
    return {
        "min_abs_cos_top10": cos[:10].min(),
        "eigenvalue_max_rel_err_top10": rel[:10].max(),
        "subspace_distance": 1 - np.linalg.norm(U.T @ Q) ** 2 / k,
        "ari": adjusted_rand_score(emb.obs["cell_type"].astype(str), emb.obs["leiden"].astype(str)),
    }


def test_garnett_pbmc800_meets_the_accuracy_bar(tmp_path):
    metrics = run(shared_file("garnett_pbmc800.h5ad"), tmp_path, label_key="cell_type",
                  train_params={"n_components": 50})
    got = recompute(tmp_path, 50)
    assert got["min_abs_cos_top10"] >= 0.999
    assert got["eigenvalue_max_rel_err_top10"] <= 1e-3
    assert got["subspace_distance"] <= 1e-3
    assert got["ari"] >= 0.75
    assert metrics["ari"] == pytest.approx(got["ari"])
    assert json.loads((tmp_path / "metrics.json").read_text())["k"] == 50


def test_kang_12k_cells_end_to_end(tmp_path):
    run(shared_file("kang_se_12261.h5ad"), tmp_path, label_key="cell_type")
    got = recompute(tmp_path, 50)
    assert got["ari"] >= 0.55
    assert got["min_abs_cos_top10"] >= 0.999
