"""The trained sum-regularized LAE against closed forms and exact linear algebra (numpy/scipy eigh)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from rlae_sc.lae import theory
from rlae_sc.lae.model import LinearAutoencoder, regularized_loss
from rlae_sc.lae.solvers import fit_tied_exact, ridge_decoder


def paper_matrix(seed: int = 0) -> np.ndarray:
    """Kunin et al.'s synthetic data: 20 x 20, singular values 1..20, random orthogonal singular vectors."""
    U = scipy.stats.ortho_group.rvs(20, random_state=seed)
    V = scipy.stats.ortho_group.rvs(20, random_state=seed + 1)
    return U @ np.diag(np.arange(20, 0, -1.0)) @ V.T


@pytest.fixture(scope="module")
def paper_fit():
    X = paper_matrix()
    C = X.T @ X
    fit = fit_tied_exact(torch.from_numpy(C), 10, lam=10.0, oversample=5, tol=1e-14, max_iter=5000)
    e, U = np.linalg.eigh(C)
    return C, fit, e[::-1], U[:, ::-1]


def test_sum_loss_is_symmetric_at_the_optimum(paper_fit):
    _, fit, _, _ = paper_fit
    # Kunin et al.: W1 = W2^T at every critical point of the sum loss
    assert theory.transpose_distance(fit.encoder, fit.decoder) < 1e-8


def test_decoder_singular_values_match_closed_form(paper_fit):
    _, fit, e, _ = paper_fit
    s = np.linalg.svd(fit.decoder, compute_uv=False)
    np.testing.assert_allclose(s, np.sqrt(1 - 10.0 / e[:10]), atol=1e-8)


def test_decoder_left_singular_vectors_are_principal_directions(paper_fit):
    _, fit, e, U = paper_fit
    P, _, e_hat = theory.decoder_directions(fit.decoder, fit.lam)
    assert theory.alignment(P, U[:, :10]).min() > 1 - 1e-10
    np.testing.assert_allclose(e_hat, e[:10], rtol=1e-8)


def test_closed_form_optimum_is_stationary_under_autograd():
    X = paper_matrix(3)
    C = X.T @ X
    e, U = theory.exact_pca(C, 10)
    W2 = theory.sum_loss_optimum(e, U, 10.0)
    W1 = torch.tensor(W2.T.copy(), requires_grad=True)
    W2t = torch.tensor(W2, requires_grad=True)
    loss = regularized_loss(W1, W2t, 10.0, "sum", scatter=torch.from_numpy(C))
    loss.backward()
    scale = float(torch.linalg.norm(torch.from_numpy(C))) * float(np.linalg.norm(W2))
    assert float(torch.linalg.norm(W1.grad)) / scale < 1e-12
    assert float(torch.linalg.norm(W2t.grad)) / scale < 1e-12


def test_losses_from_scatter_equal_losses_from_rows():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(50, 8, dtype=torch.float64, generator=gen)
    model = LinearAutoencoder(8, 3, generator=gen)
    C = X.T @ X
    for kind, lam in [
        ("unregularized", 0.0),
        ("product", 2.0),
        ("sum", 2.0),
        ("nonuniform", torch.tensor([1.0, 2.0, 3.0])),
    ]:
        a = model.loss_from_scatter(C, lam, kind)
        b = model.loss_from_batch(X, lam, kind)
        assert torch.allclose(a, b, rtol=1e-12), kind


def test_ridge_decoder_is_the_exact_minimiser():
    X = paper_matrix(5)
    C = torch.from_numpy(X.T @ X)
    W1 = torch.randn(4, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    W2 = ridge_decoder(C, W1, 3.0).requires_grad_(True)
    regularized_loss(W1, W2, 3.0, "sum", scatter=C).backward()
    assert float(torch.linalg.norm(W2.grad)) < 1e-9 * float(torch.linalg.norm(C))


def test_too_large_lambda_names_the_collapsing_units():
    X = paper_matrix()
    with pytest.raises(ValueError, match="collapse"):
        fit_tied_exact(torch.from_numpy(X.T @ X), 10, lam=150.0, oversample=5)  # e_10 = 121


def test_metrics_on_known_cases():
    eye = np.eye(6)
    assert theory.subspace_distance(eye[:, :3], eye[:, :3]) == pytest.approx(0, abs=1e-15)
    assert theory.subspace_distance(eye[:, 3:], eye[:, :3]) == pytest.approx(1)
    np.testing.assert_allclose(theory.alignment(-eye[:, :3], eye[:, :3]), 1)
    assert theory.axis_alignment(eye[:, :3], eye[:, [2, 0, 1]] * 5) == pytest.approx(0)
    assert theory.transpose_distance(eye[:3], eye[:, :3]) == 0
    np.testing.assert_allclose(theory.eigengaps(np.array([4.0, 2.0, 1.0])), [2, 2])
