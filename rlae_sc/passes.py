"""Passes over the preprocessed matrix: the centred scatter matrix and the embedding."""

from __future__ import annotations

import numpy as np

from rlae_sc.progress import progress


def scatter_matrix(X: np.ndarray, *, precision: str = "float64", chunk_size: int = 4096) -> np.ndarray:
    """Centred scatter ``C = (X - 1 mu^T)^T (X - 1 mu^T)`` (m x m, float64, sum over cells).

    One pass over the rows of ``X`` (n x m) in chunks; memory beyond ``C`` is
    one chunk. Each chunk's product ``chunk^T chunk`` is computed in
    ``precision`` and accumulated in float64: ``"float64"`` is exact to
    rounding; ``"float32"`` is about twice as fast, with relative errors of
    about 1e-6 in the entries of ``C``.
    """
    if precision not in ("float32", "float64"):
        raise ValueError(f"precision must be float32 or float64, got {precision!r}")
    n, m = X.shape
    C = np.zeros((m, m))
    total = np.zeros(m)
    with progress(total=n, desc="scatter pass") as bar:
        for start in range(0, n, chunk_size):
            chunk = np.asarray(X[start : start + chunk_size], dtype=precision)
            C += chunk.T @ chunk
            total += chunk.sum(axis=0, dtype=np.float64)
            bar.update(len(chunk))
    mu = total / n
    C -= n * np.outer(mu, mu)
    return C
