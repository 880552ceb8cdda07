"""Passes over the preprocessed matrix: the centred scatter matrix and the embedding."""

from __future__ import annotations

import numpy as np

from rlae_sc.progress import progress


def scatter_matrix(X: np.ndarray, *, chunk_size: int = 8192) -> np.ndarray:
    """Centred scatter ``C = (X - 1 mu^T)^T (X - 1 mu^T)`` (m x m, float64, sum over cells).

    One pass over the rows of ``X`` (n x m, any float dtype) in chunks, each
    chunk promoted to float64, so memory beyond ``C`` is one chunk.
    """
    n, m = X.shape
    C = np.zeros((m, m))
    total = np.zeros(m)
    with progress(total=n, desc="scatter pass") as bar:
        for start in range(0, n, chunk_size):
            chunk = np.asarray(X[start : start + chunk_size], dtype=np.float64)
            C += chunk.T @ chunk
            total += chunk.sum(axis=0)
            bar.update(len(chunk))
    mu = total / n
    C -= n * np.outer(mu, mu)
    return C
