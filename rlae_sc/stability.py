"""Direction stability: the expected ``|cos|`` between a principal direction and its value when cells are resampled.

Fast method: a Poisson bootstrap restricted to the trained subspace. Resampling
cells with Poisson(1) weights ``w`` changes the scatter matrix within the span
of the k directions to ``Z^T diag(w) Z`` (less the weighted mean), with ``Z``
the cells' scores (n x k); its eigenvectors, compared with the axes, give each
direction's ``|cos|`` under that resample at a cost of n k^2 per sample (a scatter
pass costs n m^2). Leakage out of the subspace is added to first order: the
directions outside it move direction i by ``sum_c z_ci^2 r_c^2 / (e_i -
e_out)^2`` in squared norm, ``r_c`` the norm of cell c's residual outside the
subspace and ``e_out`` the largest eigenvalue outside.
"""

from __future__ import annotations

import numpy as np

N_BOOTSTRAP = 50  # Poisson resamples of the cells
BLOCK = 8_192  # cells whose resampled scatter is accumulated at a time (~85 MB of products at k = 50)
IDENTIFIABLE = 0.9  # a direction whose expected |cos| is below this is flagged as not identifiable


def stability(
    scores: np.ndarray,
    *,
    residual_sq: np.ndarray | None = None,
    eigenvalues: np.ndarray | None = None,
    outside_eigenvalue: float | None = None,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
) -> np.ndarray:
    """Expected ``|cos|`` (k,) between each direction and its resampled value.

    Parameters
    ----------
    scores
        Centred cell scores ``Z = X P`` (n x k) on orthonormal directions ``P`` (m x k) that span
        the top-k eigenvectors of ``C = X^T X`` (their own basis: ``Z^T Z`` diagonal, decreasing).
    residual_sq, eigenvalues, outside_eigenvalue
        Per-cell squared norm of ``x_c - P z_c`` (n,), the k eigenvalues and ``e_(k+1)`` (units of
        ``C``), for the first-order leakage out of the subspace; left out: none is added.
    n_bootstrap, seed
        Poisson resamples and their seed.
    """
    n, k = scores.shape
    rng = np.random.default_rng(seed)
    upper = np.triu_indices(k)
    weight = np.zeros(n_bootstrap)  # per resample: total weight, weighted score sums, weighted scatter's upper half
    sums = np.zeros((n_bootstrap, k))
    products = np.zeros((n_bootstrap, len(upper[0])))
    leak = np.zeros(k)
    for start in range(0, n, BLOCK):  # blocks of cells: memory does not grow with n; one product for all resamples
        Z = np.asarray(scores[start : start + BLOCK], dtype=np.float64)
        w = rng.poisson(1.0, size=(n_bootstrap, len(Z))).astype(np.float64)  # row b: resample b's weights
        weight += w.sum(axis=1)
        sums += w @ Z
        products += w @ _pair_products(Z).T
        if residual_sq is not None:
            leak += np.asarray(residual_sq[start : start + BLOCK], dtype=np.float64) @ np.square(Z)
    scatter = np.zeros((n_bootstrap, k, k))
    scatter[:, upper[0], upper[1]] = products
    scatter[:, upper[1], upper[0]] = products
    total = np.zeros(k)
    for b in range(n_bootstrap):  # the resample's centred scatter within the subspace, and its eigenvectors
        V = np.linalg.eigh(scatter[b] - np.outer(sums[b], sums[b]) / weight[b])[1][:, ::-1]
        total += np.abs(np.diag(V))
    cos = total / n_bootstrap
    if residual_sq is not None:
        cos /= np.sqrt(1 + leak / (np.asarray(eigenvalues) - outside_eigenvalue) ** 2)
    return cos


def _pair_products(Z: np.ndarray) -> np.ndarray:
    """``z_i z_j`` of each cell for the pairs ``i <= j`` in ``np.triu_indices(k)``'s order ((k (k + 1) / 2) x
    cells, float64) of scores ``Z`` (cells x k), built a score at a time from the transposed block (contiguous
    rows: about four times faster than gathering the pairs' columns)."""
    ZT = np.ascontiguousarray(Z.T)
    k = len(ZT)
    out = np.empty((k * (k + 1) // 2, Z.shape[0]))
    row = 0
    for i in range(k):
        np.multiply(ZT[i], ZT[i:], out=out[row : row + k - i])
        row += k - i
    return out


def direction_stability(model, scores: np.ndarray, residual_sq: np.ndarray) -> np.ndarray:
    """:func:`stability` (k,) of ``model``'s directions (an :class:`~rlae_sc.model.RLAEModel`), leakage included.

    ``scores`` (n x k) and ``residual_sq`` (n,) are the scores ``X P`` of the
    rows the model was trained on and each row's squared distance from the
    directions' span, as one pass gives them
    (``model.scores(X, residuals=True)``); ``e_(k+1)`` is bounded from above by the model's certificate
    (``model.reference['next_eigenvalue_bound']``, 0 when every direction is trained).
    """
    outside = float(model.reference["next_eigenvalue_bound"])
    return stability(scores, residual_sq=residual_sq, eigenvalues=model.eigenvalues, outside_eigenvalue=outside)


def not_identifiable(scores: np.ndarray) -> list[int]:
    """The components (1-based) whose stability ``scores`` (k,) is below :data:`IDENTIFIABLE`."""
    return [int(i) + 1 for i in np.flatnonzero(np.asarray(scores) < IDENTIFIABLE)]
