"""The trained sum-regularized LAE against closed forms and exact linear algebra (numpy/scipy eigh)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from rlae_sc.lae import theory
from rlae_sc.lae.losses import regularized_loss
from rlae_sc.lae.solvers import fit_tied_exact, ridge_decoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    W1 = torch.randn(3, 8, dtype=torch.float64, generator=gen) / 8**0.5
    W2 = torch.randn(8, 3, dtype=torch.float64, generator=gen) / 8**0.5
    C = X.T @ X
    for kind, lam in [
        ("unregularized", 0.0),
        ("product", 2.0),
        ("sum", 2.0),
        ("nonuniform", torch.tensor([1.0, 2.0, 3.0])),
    ]:
        a = regularized_loss(W1, W2, lam, kind, scatter=C)
        b = regularized_loss(W1, W2, lam, kind, batch=X)
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


# --- exact learning dynamics (Saxe, McClelland, Ganguli) on the sum loss, in the rules' units ---

PAPER_LAM = 10.0


def paper_step(e1: float) -> float:
    """The figures' step on the 20 x 20 matrix: ``0.5 / (e_1 + lam)`` (train_rule's default for gd)."""
    return 0.5 / (e1 + PAPER_LAM)


def test_docstring_gradients_are_the_rules_gradients():
    X = paper_matrix(2)
    C = torch.from_numpy(X.T @ X)
    gen = torch.Generator().manual_seed(3)
    W1 = torch.randn(4, 20, dtype=torch.float64, generator=gen, requires_grad=True)
    W2 = torch.randn(20, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    g1, g2 = torch.autograd.grad(regularized_loss(W1, W2, 3.0, "sum", scatter=C), [W1, W2])
    with torch.no_grad():
        R = C - W2 @ W1 @ C
        torch.testing.assert_close(g2, -2 * R @ W1.T + 2 * 3.0 * W2, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(g1, -2 * W2.T @ R + 2 * 3.0 * W1, rtol=1e-12, atol=1e-9)


def test_flow_solves_the_logistic_equation_including_decaying_and_critical_modes():
    from scipy.integrate import solve_ivp

    e = np.array([400.0, 100.0, 10.0, 4.0])  # the last two: e = lam (critical) and e < lam (decays)
    u0 = np.array([1e-3, 1e-3, 0.5, 0.5])
    t = np.linspace(0, 0.05, 50)
    r, u_star = theory.mode_rate(e, PAPER_LAM), theory.mode_fixed_point(e, PAPER_LAM)
    ode = solve_ivp(lambda _, u: 4 * u * (e - PAPER_LAM - e * u), (0, t[-1]), u0, t_eval=t, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(theory.mode_strength_flow(t, e=e, lam=PAPER_LAM, u0=u0), ode.y.T, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(r * u_star, 4 * e - 8 * PAPER_LAM + 4 * PAPER_LAM**2 / e)  # r u* = 4 (e - lam)^2 / e
    half = theory.mode_half_time(e=e, lam=PAPER_LAM, u0=u0)
    at_half = theory.mode_strength_flow(half[:2], e=e[:2], lam=PAPER_LAM, u0=u0[:2])
    np.testing.assert_allclose(np.diag(at_half), u_star[:2] / 2, rtol=1e-10)
    assert np.isnan(half[2:]).all()


def test_mode_strengths_at_the_optimum_are_one_minus_lambda_over_e():
    X = paper_matrix()
    C = X.T @ X
    e, U = theory.exact_pca(C, 10)
    W2 = theory.sum_loss_optimum(e, U, PAPER_LAM) @ scipy.stats.ortho_group.rvs(10, random_state=0)
    np.testing.assert_allclose(theory.mode_strengths(W2.T, W2, U), 1 - PAPER_LAM / e, atol=1e-12)


@pytest.fixture(scope="module")
def paper_dynamics():
    from rlae_sc.papers.dynamics import mode_dynamics

    X = paper_matrix()
    C = X.T @ X
    e1 = theory.exact_pca(C, 1)[0][0]
    return C, e1, mode_dynamics(C, k=10, lam=PAPER_LAM, lr=paper_step(e1), n_iter=80)


def test_gradient_descent_stays_within_0_02_of_the_closed_form_and_learns_in_eigenvalue_order(paper_dynamics):
    _, _, run = paper_dynamics
    np.testing.assert_allclose(run["measured"][0], 1e-6, rtol=1e-9)  # balanced start of scale 1e-3
    assert np.max(np.abs(run["measured"] - run["steps"])) <= 0.02
    assert np.max(np.abs(run["measured"] - run["steps"])) <= 1e-9  # exact up to rounding
    np.testing.assert_allclose(run["measured"][-1], 1 - PAPER_LAM / run["e"], atol=1e-3)  # mode 1 still rings
    assert np.all(np.diff(run["half"]) > 0)  # half-way iterations strictly increasing with the mode's rank


def test_the_flow_holds_for_small_steps_and_not_at_the_figures_step(paper_dynamics):
    from rlae_sc.papers.dynamics import SMALL_STEP, mode_dynamics

    C, e1, big = paper_dynamics
    assert np.max(np.abs(big["measured"] - big["flow"])) > 0.1  # the figures' step: lr r_1 = 1.9
    lr = SMALL_STEP * paper_step(e1)
    small = mode_dynamics(C, k=10, lam=PAPER_LAM, lr=lr, n_iter=4000, trace_every=10)
    assert lr * theory.mode_rate(e1, PAPER_LAM) < 0.02
    assert np.max(np.abs(small["measured"] - small["flow"])) <= 0.02
    assert np.all(np.diff(small["half"]) > 0)
    # the half-way iterations of the flow, read in steps, within the trace stride and the discretisation
    predicted = theory.mode_half_time(e=small["e"], lam=PAPER_LAM, u0=small["measured"][0]) / lr
    np.testing.assert_allclose(small["half"], predicted, rtol=0.03, atol=10)
