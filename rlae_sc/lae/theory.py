"""Closed forms and metrics of regularized linear autoencoders (numpy, float64).

Conventions (see ``THEORY.md`` in the shared notes and the README):

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
