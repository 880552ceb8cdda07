"""Direction stability: the expected |cos| between a principal direction and its value when cells are resampled.

Fast method: a Poisson bootstrap restricted to the trained subspace. Resampling
cells with Poisson(1) weights ``w`` changes the scatter matrix within the span
of the k directions to ``Z^T diag(w) Z`` (less the weighted mean), with ``Z``
the cells' scores (n x k); its eigenvectors, compared with the axes, give each
direction's |cos| under that resample at a cost of n k^2 per sample (a scatter
pass costs n m^2). Leakage out of the subspace is added to first order: the
directions outside it move direction i by ``sum_c z_ci^2 r_c^2 / (e_i -
e_out)^2`` in squared norm, ``r_c`` the norm of cell c's residual outside the
subspace and ``e_out`` the largest eigenvalue outside.
"""

from __future__ import annotations

import numpy as np

N_BOOTSTRAP = 50  # Poisson resamples of the cells
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
    """Expected |cos| (k,) between each direction and its resampled value.

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
    Z = np.asarray(scores, dtype=np.float64)
    n, k = Z.shape
    rng = np.random.default_rng(seed)
    total = np.zeros(k)
    for _ in range(n_bootstrap):
        w = rng.poisson(1.0, size=n).astype(np.float64)
        mean = (w @ Z) / w.sum()
        Y = (Z - mean) * np.sqrt(w)[:, None]
        V = np.linalg.eigh(Y.T @ Y)[1][:, ::-1]
        total += np.abs(np.diag(V))
    cos = total / n_bootstrap
    if residual_sq is not None:
        leak = (Z**2 * np.asarray(residual_sq, dtype=np.float64)[:, None]).sum(axis=0)
        cos /= np.sqrt(1 + leak / (np.asarray(eigenvalues) - outside_eigenvalue) ** 2)
    return cos
