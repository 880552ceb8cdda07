"""Closed forms and metrics of regularized linear autoencoders (numpy, float64).

Conventions (the theory page, ``docs/theory.rst``, derives the results):

* ``X`` is cells x genes, centred per gene; ``C = X.T @ X`` is the scatter
  matrix, a **sum** over cells (not divided by n).
* The encoder ``W1`` is k x m, the decoder ``W2`` is m x k.
* ``lam`` (lambda) is in the units of ``C``: the loss is
  ``||X - X W1^T W2^T||_F^2 + lam (||W1||_F^2 + ||W2||_F^2)`` summed over cells.
* Eigenvalues ``e_i`` of ``C`` are sums of squares over cells; the variance
  explained by component i is ``e_i / (n - 1)``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg


def exact_pca(C: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` eigenpairs of the scatter matrix ``C`` (m x m).

    Returns ``(e, U)``: eigenvalues (k,) in decreasing order and eigenvectors
    (m x k) as columns, each with its largest-magnitude entry positive.
    """
    m = C.shape[0]
    e, U = scipy.linalg.eigh(C, subset_by_index=[m - k, m - 1])
    e, U = e[::-1].copy(), U[:, ::-1].copy()
    return e, orient_columns(U)


def orient_columns(P: np.ndarray) -> np.ndarray:
    """Flip column signs so that each column's largest-magnitude entry is positive."""
    idx = np.argmax(np.abs(P), axis=0)
    signs = np.sign(P[idx, np.arange(P.shape[1])])
    signs[signs == 0] = 1.0
    return P * signs


def sum_loss_optimum(e: np.ndarray, U: np.ndarray, lam: float | np.ndarray) -> np.ndarray:
    """Decoder at the global minimum of the sum (or non-uniform) loss, with O = I.

    ``W2 = U diag(sqrt(max(0, 1 - lam_i / e_i)))``; the encoder is its transpose.
    ``e`` (k,) and ``U`` (m x k) are the top-k eigenpairs of ``C``; ``lam`` is a
    scalar or one value per latent unit.
    """
    return U * np.sqrt(np.clip(1.0 - np.asarray(lam) / e, 0.0, None))


def decoder_directions(W2: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal directions recovered from a sum-regularized decoder.

    Returns ``(P, s, e)``: the left singular vectors of ``W2`` (m x k, oriented
    by :func:`orient_columns`), its singular values (k,), and the eigenvalues
    of ``C`` they imply, ``e_i = lam / (1 - s_i^2)`` (inf where ``s_i >= 1``).
    """
    P, s, _ = np.linalg.svd(np.asarray(W2, dtype=np.float64), full_matrices=False)
    with np.errstate(divide="ignore"):
        e = np.where(s < 1.0, lam / (1.0 - s**2), np.inf)
    return orient_columns(P), s, e


def rayleigh_ritz_decoder(C: np.ndarray, W: np.ndarray, lam: float) -> np.ndarray:
    """Minimiser of the sum loss over decoders whose columns span ``range(W)``.

    Projects ``C`` on an orthonormal basis Q of ``range(W)``, solves the k x k
    eigenproblem ``Q^T C Q = V diag(r) V^T`` and returns the tied optimum
    ``Q V diag(sqrt(max(0, 1 - lam / r)))`` (m x k) inside that subspace.
    """
    Q, _ = np.linalg.qr(W)
    r, V = np.linalg.eigh(Q.T @ C @ Q)
    r, V = r[::-1], V[:, ::-1]
    return sum_loss_optimum(r, Q @ V, lam)


def transpose_distance(W1: np.ndarray, W2: np.ndarray) -> float:
    """``||W1 - W2^T||_F / ||W2||_F``; zero at every critical point of the sum loss."""
    return float(np.linalg.norm(W1 - W2.T) / np.linalg.norm(W2))


def alignment(P: np.ndarray, U: np.ndarray) -> np.ndarray:
    """Per-component ``|cos(p_i, u_i)|`` between matching columns (unit vectors assumed)."""
    k = min(P.shape[1], U.shape[1])
    Pn = P[:, :k] / np.linalg.norm(P[:, :k], axis=0)
    Un = U[:, :k] / np.linalg.norm(U[:, :k], axis=0)
    return np.abs(np.sum(Pn * Un, axis=0))


def subspace_distance(P: np.ndarray, U: np.ndarray) -> float:
    """``1 - ||U^T Q||_F^2 / k`` with Q an orthonormal basis of ``range(P)``; 0 when equal."""
    Q, _ = np.linalg.qr(P)
    k = U.shape[1]
    return float(max(0.0, 1.0 - np.linalg.norm(U.T @ Q) ** 2 / k))  # clamp rounding below zero


def axis_alignment(U: np.ndarray, W2: np.ndarray) -> float:
    """Bao et al.'s ``mean_i (1 - max_j cos^2(u_i, col_j W2))``; 0 when columns are axis-aligned."""
    norms = np.linalg.norm(W2, axis=0)
    norms[norms == 0] = 1.0
    cos = (U.T @ W2) / norms / np.linalg.norm(U, axis=0)[:, None]
    return float(max(0.0, np.mean(1.0 - np.max(cos**2, axis=1))))  # clamp rounding below zero


def singular_value_error(s: np.ndarray, e: np.ndarray, lam: float | np.ndarray) -> float:
    """``max_i |s_i - sqrt(max(0, 1 - lam_i/e_i))|``, both sides sorted in decreasing order.

    ``lam`` is a scalar or one value per unit (non-uniform loss), paired with ``e`` in order.
    """
    theory = np.sqrt(np.clip(1.0 - np.asarray(lam) / e, 0.0, None))
    return float(np.max(np.abs(np.sort(s)[::-1] - np.sort(theory)[::-1])))


def eigengaps(e: np.ndarray) -> np.ndarray:
    """``e_i / e_{i+1}`` for i = 1..k-1: near 1 means component i is not individually identifiable."""
    return e[:-1] / e[1:]


def mode_strengths(W1: np.ndarray, W2: np.ndarray, U: np.ndarray) -> np.ndarray:
    """Strength of each principal mode in the global map: ``u_i = u_i^T W2 W1 u_i`` (k,).

    ``W1`` is k' x m, ``W2`` is m x k' (any number k' of latent units) and ``U`` (m x k)
    holds the exact principal directions as columns. At the sum-loss optimum
    ``u_i = max(0, 1 - lam / e_i)``; dimensionless.
    """
    return np.sum((U.T @ W2) * (W1 @ U).T, axis=1)


def mode_fixed_point(e: np.ndarray, lam: float | np.ndarray) -> np.ndarray:
    """``u*_i = 1 - lam / e_i``: the strength gradient flow settles at (0 is the fixed point where negative)."""
    return 1.0 - np.asarray(lam) / np.asarray(e)


def mode_rate(e: np.ndarray, lam: float | np.ndarray) -> np.ndarray:
    """``r_i = 4 (e_i - lam)``: the logistic rate of mode i, per unit of ``t = lr x steps`` (units of 1 / C)."""
    return 4.0 * (np.asarray(e) - np.asarray(lam))


def mode_strength_flow(t: np.ndarray, *, e: np.ndarray, lam: float | np.ndarray, u0: np.ndarray) -> np.ndarray:
    """Closed-form mode strengths of gradient flow on the sum loss from a small balanced start.

    Derivation, in the units of :mod:`rlae_sc.lae.rules` (``C`` and ``lam`` sums over
    cells, the loss ``||X - X W1^T W2^T||^2 + lam (||W1||^2 + ||W2||^2)``, its gradient
    taken as is, no factor 1/2 or 1/n). Its gradients are
    ``dL/dW2 = -2 (C - W2 W1 C) W1^T + 2 lam W2`` and ``dL/dW1 = -2 W2^T (C - W2 W1 C) + 2 lam W1``.
    Start aligned and balanced: ``W2 = U_k diag(s) O``, ``W1 = O^T diag(s) U_k^T`` (O orthogonal
    k x k). Both gradients keep that form, and mode i's singular value s_i (the same in W1 and
    W2) obeys ``ds_i/dt = 2 s_i (e_i - lam - e_i s_i^2)`` with ``t = lr x steps``. Its strength
    ``u_i = s_i^2 = u_i^T W2 W1 u_i`` then follows the logistic equation
    ``du_i/dt = r_i u_i (1 - u_i / u*_i)``, ``r_i = 4 (e_i - lam)``, ``u*_i = 1 - lam / e_i``,
    whose solution, written to hold also for ``e_i <= lam`` (decay to 0), is

        ``u_i(t) = u_i(0) / (exp(-r_i t) + 4 e_i u_i(0) (1 - exp(-r_i t)) / r_i)``

    (``= u*_i / (1 + (u*_i / u_i(0) - 1) exp(-r_i t))`` when ``e_i != lam``; at ``e_i = lam``
    the curve is ``u_i(0) / (1 + 4 e_i u_i(0) t)``). Modes rise along sigmoids in order of
    eigenvalue, half-way at :func:`mode_half_time`; the imbalance ``W1 W1^T - W2^T W2`` decays
    as ``exp(-4 lam t)``, so balanced starts attract. Gradient descent with step ``lr``
    follows this curve only while ``lr r_1`` is small (on Kunin et al.'s 20 x 20 matrix
    with lam = 10 and u(0) = 1e-6, within 0.014 at ``lr r_1 = 0.019``, 0.13 at 0.19);
    :func:`mode_strength_steps` is the exact discrete-time solution.

    Parameters
    ----------
    t
        Times ``lr x steps`` (T,), units of 1 / C.
    e, lam
        Eigenvalues of ``C`` (k,) and lambda (scalar or (k,)), units of C.
    u0
        Strengths at t = 0 (k,), positive.

    Returns
    -------
    numpy.ndarray
        Strengths (T x k).
    """
    e, u0 = np.asarray(e, dtype=np.float64), np.asarray(u0, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)[:, None]
    x = -t * mode_rate(e, lam)
    safe = np.where(x == 0, 1.0, x)
    growth = t * np.where(x == 0, 1.0, np.expm1(safe) / safe)  # (1 - exp(-r t)) / r, also at r = 0
    with np.errstate(over="ignore"):  # a decaying mode's exp(-r t) may overflow: its strength is then 0
        return u0 / (np.exp(x) + 4.0 * e * u0 * growth)


def mode_strength_steps(
    n_steps: int, *, e: np.ndarray, lam: float | np.ndarray, lr: float, u0: np.ndarray
) -> np.ndarray:
    """Exact mode strengths of gradient descent (step ``lr``) on the sum loss from an aligned balanced start.

    With the start of :func:`mode_strength_flow`, one step of
    :func:`rlae_sc.lae.rules.train_rule` (``"gd"``, loss ``"sum"``) maps each mode's singular value
    to ``s + 2 lr s (e - lam - e s^2)`` in both W1 and W2, so ``u = s^2`` follows
    ``u <- u (1 + 2 lr (e - lam - e u))^2`` exactly. For small ``lr r_1`` this is the
    logistic curve; for larger steps it rises later (a small ``u`` grows by
    ``(1 + 2 lr (e - lam))^2 < exp(4 lr (e - lam))`` per step), and where ``lr (e_i - lam) > 1/4``
    (the linearised factor ``1 - 4 lr (e_i - lam)`` of ``s_i`` about its fixed point is then
    negative) it oscillates about ``u*_i`` while settling; it diverges beyond 1/2.

    Returns strengths ((n_steps + 1) x k), row j after j steps; units as in :func:`mode_strength_flow`.
    """
    e = np.asarray(e, dtype=np.float64)
    rows = [np.asarray(u0, dtype=np.float64)]
    for _ in range(n_steps):
        u = rows[-1]
        rows.append(u * (1.0 + 2.0 * lr * (e - np.asarray(lam) - e * u)) ** 2)
    return np.vstack(rows)


def mode_half_time(*, e: np.ndarray, lam: float | np.ndarray, u0: np.ndarray) -> np.ndarray:
    """``ln(u*_i / u_i(0) - 1) / r_i``: the time (``lr x steps``) at which mode i reaches ``u*_i / 2``.

    NaN for modes with ``e_i <= lam`` (they never rise).
    """
    u_star, r = mode_fixed_point(e, lam), mode_rate(e, lam)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(r > 0, np.log(u_star / np.asarray(u0) - 1.0) / r, np.nan)


def half_way_iterations(iterations: np.ndarray, u: np.ndarray, u_star: np.ndarray) -> np.ndarray:
    """First traced iteration at which each mode's strength reaches half its fixed point (NaN: never).

    ``iterations`` (T,), ``u`` (T x k) measured strengths, ``u_star`` (k,) fixed points.
    """
    reached = u >= 0.5 * u_star
    first = np.argmax(reached, axis=0)
    return np.where(reached.any(axis=0) & (u_star > 0), np.asarray(iterations, dtype=np.float64)[first], np.nan)
