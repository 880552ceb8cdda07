"""The per-fit certificate (rlae_sc.lae.certificate): its bounds hold against an independent scipy eigh, it fails
for a perturbed direction, and a fit without the eigh reports it and nothing that needs the eigh."""

import json

import anndata as ad
import numpy as np
import pytest
import scipy.linalg

from rlae_sc.directions import compare_with_pca
from rlae_sc.lae.certificate import bounds, certify
from rlae_sc.preprocess import preprocess, trained_rows
from rlae_sc.products import scatter_matrix
from rlae_sc.train import fit
from tests.conftest import rlae_cli, shared_file

K = 10
ROUNDING = 1e-12  # |cos| and relative errors computed in float64, eigh's own eigenvectors included


def true_errors(C: np.ndarray, V: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``|cos|`` of each column of ``V`` (m x k) with the matching eigenvector of ``C`` and the relative error of
    ``e`` (k,), both (k,), by scipy's eigh of the whole ``C``."""
    m, k = V.shape
    lam, U = scipy.linalg.eigh(C, subset_by_index=[m - k, m - 1])
    lam, U = lam[::-1], U[:, ::-1]
    return np.abs(np.sum(V * U, axis=0)), np.abs(e - lam) / lam


def assert_bounds_hold(C: np.ndarray, V: np.ndarray, e: np.ndarray) -> dict:
    """The certificate's bounds of ``(e, V)`` at least the true errors (to rounding); returns the bounds."""
    got = bounds(e, **certify(C, V, e))
    cos, rel = true_errors(C, V, e)
    assert np.all(got["cos_lower"] <= cos + ROUNDING)
    certified = ~np.isnan(got["eigenvalue_error"])
    assert np.all(got["eigenvalue_error"][certified] >= rel[certified] - ROUNDING)
    m, k = V.shape
    assert certify(C, V, e)["next_eigenvalue_bound"] >= scipy.linalg.eigvalsh(C, subset_by_index=[m - k - 1] * 2)[0]
    return got


def spiked(seed: int = 0, n: int = 800, m: int = 300) -> np.ndarray:
    """A centred scatter matrix (m x m) with ten spikes above a noise bulk."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, m)) * np.r_[np.linspace(8, 3, K), np.ones(m - K)]
    X -= X.mean(axis=0)
    return X.T @ X


def test_bounds_hold_for_near_eigenpairs_of_a_spiked_matrix():
    C = spiked()
    m = C.shape[0]
    lam, U = scipy.linalg.eigh(C, subset_by_index=[m - K, m - 1])
    rng = np.random.default_rng(1)
    for noise in (1e-9, 1e-6, 1e-3):
        V = np.linalg.qr(U[:, ::-1] + noise * rng.standard_normal((m, K)))[0]
        V *= np.sign(np.sum(V * U[:, ::-1], axis=0))
        e = lam[::-1] * (1 + noise * rng.standard_normal(K))
        got = assert_bounds_hold(C, V, e)
        if noise <= 1e-6:
            assert got["cos_lower"].min() >= 1 - 1e-4 and np.nanmax(got["eigenvalue_error"]) <= 1e-4


def test_a_perturbed_direction_fails_its_certificate():
    C = spiked()
    m = C.shape[0]
    lam, U = scipy.linalg.eigh(C, subset_by_index=[m - K, m - 1])
    lam, U = lam[::-1], U[:, ::-1].copy()
    exact = bounds(lam, **certify(C, U, lam))
    angle = 0.05  # direction 3 turned 0.05 rad towards a noise direction
    noise = np.linalg.qr(np.c_[U, np.random.default_rng(2).standard_normal(m)])[0][:, -1]
    U[:, 2] = np.cos(angle) * U[:, 2] + np.sin(angle) * noise
    bad = assert_bounds_hold(C, U, lam)
    assert exact["cos_lower"].min() >= 1 - 1e-9
    assert bad["cos_lower"][2] <= np.cos(angle) + 1e-12  # the bound no longer certifies a near-exact direction
    assert bad["relative_residuals"][2] > 1e3 * exact["relative_residuals"].max()


def fit_without_eigh(pre: ad.AnnData):
    """A fit with neither ``exact_check`` nor the trace: the certificate alone."""
    return fit(pre, n_components=K, trace_metrics=False, device="cpu", scatter_precision="float64")


@pytest.mark.parametrize("source", ["synthetic", "garnett_pbmc800.h5ad"])
def test_the_certificate_of_a_fit_holds_against_eigh(source, small_counts):
    counts = small_counts if source == "synthetic" else ad.read_h5ad(shared_file(source))
    pre, _ = preprocess(counts, scale=False, n_top_genes=300 if source == "synthetic" else 1000, min_genes=50)
    model = fit_without_eigh(pre)
    assert set(model.reference) == {"residuals", "residual_norm", "next_eigenvalue_bound"}
    C = scatter_matrix(trained_rows(pre), precision="float64")
    got = assert_bounds_hold(C, model.directions, model.eigenvalues)
    metrics, reference = compare_with_pca(model)
    assert reference["kind"] == "certificate" and "min_abs_cos_top10" not in metrics
    assert metrics["certificate_min_cos_top10"] == pytest.approx(got["cos_lower"].min())
    assert metrics["certificate_min_cos_top10"] >= 0.999
    cos, rel = true_errors(C, model.directions, model.eigenvalues)
    assert metrics["certificate_max_eigenvalue_error_top10"] >= rel.max() - ROUNDING


def test_exact_check_adds_the_eigh_metrics(small_counts):
    pre, _ = preprocess(small_counts, scale=False, n_top_genes=300, min_genes=50)
    model = fit(pre, n_components=K, trace_metrics=False, exact_check=True, device="cpu")
    metrics, reference = compare_with_pca(model)
    assert reference["kind"] == "eigh"
    assert metrics["min_abs_cos_top10"] >= metrics["certificate_min_cos_top10"] - ROUNDING
    assert metrics["eigenvalue_max_rel_err_top10"] <= metrics["certificate_max_eigenvalue_error_top10"] + ROUNDING


def test_a_run_without_the_eigh_reports_the_certificate(small_counts_file, tmp_path):
    out = tmp_path / "run"
    result = rlae_cli(
        "run", str(small_counts_file), "--out", str(out), "--label-key", "cell_type", "--n-components", str(K),
        "--n-top-genes", "200", "--min-genes", "50", "--trace-metrics", "false",
    )  # fmt: skip
    assert "certificate_min_cos_top10" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["certificate_min_cos_top10"] >= 0.999 and "min_abs_cos_top10" not in metrics
    assert "exact_pca_seconds" not in metrics and metrics["certificate_seconds"] > 0
    page = (out / "report.html").read_text()
    assert "certified lower bound on min |cos|" in page
