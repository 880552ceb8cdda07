"""`rlae-sc run --n-components auto` end to end (Pearson residuals input): k, lambda and the noise floor in
metrics.json and the model, stability in uns, the report's figures; checked against exact eigh of the C trained on."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import scipy.linalg

from rlae_sc.preprocess import trained_rows
from tests.conftest import rlae_cli


@pytest.fixture(scope="module")
def auto_run(small_counts_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("auto")
    rlae_cli(
        "run", small_counts_file, "--out", out, "--label-key", "cell_type", "--n-components", "auto",
        "--normalization", "pearson_residuals", "--n-top-genes", "200", "--min-genes", "50",
    )  # fmt: skip
    return out


def test_auto_k_counts_the_eigenvalues_above_the_noise_floor(auto_run):
    metrics = json.loads((auto_run / "metrics.json").read_text())
    for key in ("k", "lambda", "lambda_rule", "noise_floor", "noise_floor_spread", "mp_edge", "not_identifiable"):
        assert key in metrics, key
    assert metrics["lambda"] == metrics["noise_floor"] and metrics["lambda_rule"].startswith("noise floor")
    assert metrics["noise_floor_spread"] > 0
    pre = ad.read_h5ad(auto_run / "preprocessed.h5ad")
    rows = trained_rows(pre)
    X = rows.read(0, rows.shape[0]).astype(np.float64)
    X -= X.mean(axis=0)
    e = scipy.linalg.eigh(X.T @ X, eigvals_only=True)[::-1]
    assert metrics["k"] == int(np.sum(e > metrics["noise_floor"])) >= 1
    emb = ad.read_h5ad(auto_run / "embedding.h5ad")
    u = emb.uns["rlae"]
    assert emb.obsm["X_rlae"].shape[1] == metrics["k"] == len(u["stability"])
    np.testing.assert_allclose(u["eigenvalues"], e[: metrics["k"]], rtol=1e-4)
    assert np.all((u["stability"] > 0) & (u["stability"] <= 1))
    assert metrics["not_identifiable"] == [i + 1 for i in np.flatnonzero(u["stability"] < 0.9)]
    # each kept unit is shrunk by 1 - lambda / e_i: the decoder's singular values squared
    np.testing.assert_allclose(u["singular_values"] ** 2, 1 - metrics["lambda"] / u["eigenvalues"], atol=1e-4)


def test_report_shows_the_noise_floor_and_stability(auto_run):
    html = (auto_run / "report.html").read_text()
    for label in ("noise floor (parallel analysis", "directions are identifiable one by one", "how lambda was set"):
        assert label in html, label
    assert (auto_run / "figures" / "variance_ratio.png").stat().st_size > 0
