"""A per-fit certificate of the read-out's eigenpairs: residual norms and the bounds they imply, in place of a
full eigensolve of the scatter matrix (docs/theory.rst, "The certificate").

:func:`certify` needs ``C`` (m x m) and costs a few products with m x k blocks (O(m^2 k)) plus a short Lanczos
run on the deflated ``C``; :func:`bounds` turns what it returns into per-direction bounds, without ``C``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse.linalg


def certify(C: np.ndarray, V: np.ndarray, e: np.ndarray, *, seed: int = 0) -> dict:
    """The certificate of the pairs ``(e_i, v_i)``: ``V`` (m x k, orthonormal columns) and ``e`` (k,, decreasing)
    against the symmetric ``C`` (m x m, float64), all in the units of ``C``.

    Returns ``residuals`` (k,): ``r_i = ||C v_i - e_i v_i||``; ``residual_norm``: ``||C V - V diag(e)||_2``
    (the spectral norm, radius of Kahan's theorem); ``next_eigenvalue_bound``: an upper bound on
    ``e_(k+1)`` (:func:`next_eigenvalue_bound`).
    """
    R = C @ V - V * e
    return {
        "residuals": np.linalg.norm(R, axis=0),
        "residual_norm": float(np.sqrt(max(np.linalg.eigvalsh(R.T @ R)[-1], 0.0))),
        "next_eigenvalue_bound": next_eigenvalue_bound(C, V, seed=seed),
    }


def next_eigenvalue_bound(C: np.ndarray, V: np.ndarray, *, seed: int = 0) -> float:
    """An upper bound on ``e_(k+1)`` of ``C`` (m x m) from ``V`` (m x k, orthonormal columns).

    By Courant-Fischer, ``e_(k+1) <= lambda_max(A)`` with ``A = (I - V V^T) C (I - V V^T)``, whatever ``V``.
    ``lambda_max(A)`` is estimated by Lanczos (ARPACK, from a random start deflated by ``V``) as a Ritz value
    ``t`` with Ritz vector ``y``; the returned ``t + ||A y - t y||`` bounds ``lambda_max(A)`` when the Ritz pair
    belongs to ``A``'s top eigenvalue, which Lanczos from a random start converges to first (it is missed only
    if the start is orthogonal to the top eigenvector, an event of probability zero). 0 when ``k = m``.
    """
    m, k = V.shape
    if k >= m:
        return 0.0

    def deflated(x: np.ndarray) -> np.ndarray:
        x = x - V @ (V.T @ x)
        y = C @ x
        return y - V @ (V.T @ y)

    A = scipy.sparse.linalg.LinearOperator((m, m), matvec=deflated, dtype=np.float64)
    start = deflated(np.random.default_rng(seed).standard_normal(m))
    (t,), y = scipy.sparse.linalg.eigsh(A, k=1, which="LA", v0=start, tol=1e-12)
    y = y[:, 0]
    return float(t + np.linalg.norm(deflated(y) - t * y))


def bounds(e: np.ndarray, residuals: np.ndarray, residual_norm: float, next_eigenvalue_bound: float) -> dict:
    """Per-direction bounds from a :func:`certify` certificate of the pairs ``(e_i, v_i)`` (``e`` (k,),
    decreasing).

    Let ``rho = residual_norm`` and ``u = next_eigenvalue_bound``. By Kahan's theorem k distinct eigenvalues of
    ``C`` lie within ``rho`` of the ``e_i``, one each; when every interval ``[e_i - rho, e_i + rho]`` lies above
    ``u`` they are the top k. Direction i is *certified* when, in addition, its interval meets no other: then
    ``lambda_i`` (the i-th eigenvalue of ``C``) is the only eigenvalue within ``rho`` of ``e_i``, so
    ``|e_i - lambda_i| <= r_i`` (Weyl), and the other eigenvalues lie at least
    ``gap_i = min(min_{j != i} |e_i - e_j| - rho, e_i - u)`` from ``e_i``, so by Davis-Kahan
    ``sin(theta_i) <= r_i / gap_i`` for the angle ``theta_i`` between ``v_i`` and ``lambda_i``'s eigenvector.

    Returns, each (k,): ``relative_residuals`` ``r_i / e_i``; ``gaps`` ``gap_i`` (units of ``C``);
    ``cos_lower``, a lower bound on ``|cos(theta_i)|`` (0 where not certified); ``eigenvalue_error``, a bound on
    ``|e_i - lambda_i| / lambda_i`` (``r_i / (e_i - r_i)``; NaN where not certified).
    """
    e, r = np.asarray(e, dtype=np.float64), np.asarray(residuals, dtype=np.float64)
    k = len(e)
    apart = np.abs(e[:, None] - e[None, :]) + np.diag(np.full(k, np.inf))  # |e_i - e_j|, inf on the diagonal
    above = np.all(e - residual_norm > next_eigenvalue_bound)
    certified = above & (apart.min(axis=1) > 2 * residual_norm)
    gaps = np.minimum(apart.min(axis=1) - residual_norm, e - next_eigenvalue_bound)
    sin = np.where(certified & (gaps > r), r / np.where(gaps > 0, gaps, 1.0), 1.0)
    return {
        "relative_residuals": r / e,
        "gaps": gaps,
        "cos_lower": np.sqrt(1.0 - sin**2),
        "eigenvalue_error": np.where(certified & (e > r), r / np.where(e > r, e - r, 1.0), np.nan),
    }
