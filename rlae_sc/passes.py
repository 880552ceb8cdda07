"""Passes over the preprocessed matrix: the centred scatter matrix and the scores.

Both run through :func:`rlae_sc.chunks.run_pass`, so the matrix may be in
memory or in an ``.h5ad`` file read block by block, serially or on Dask.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from rlae_sc.chunks import CHUNK_SIZE, InMemory, run_pass

IN_MEMORY_BLOCK = 1 << 17  # rows per product for an in-memory array of the product's dtype (131,072)


def scatter_matrix(
    X, *, precision: str = "float64", chunk_size: int = CHUNK_SIZE, client=None, checkpoint=None
) -> np.ndarray:
    """Centred scatter ``C = (X - 1 mu^T)^T (X - 1 mu^T)`` (m x m, float64, sum over cells).

    One pass over the rows of ``X`` (n x m: an array, or rows to read such as
    :class:`InMemory`, :class:`rlae_sc.chunks.H5adMatrix` or
    :class:`rlae_sc.preprocess.ScaledRows`) in blocks; memory beyond ``C`` is one block. Each
    block's product ``block^T block`` and column sums are computed in
    ``precision`` and accumulated in float64 (blocks of ``chunk_size`` rows; of
    ``IN_MEMORY_BLOCK`` rows for an in-memory array already in ``precision``,
    whose blocks are views): ``"float64"`` is exact to
    rounding; ``"float32"`` is about twice as fast, with relative errors of
    about 1e-6 in the entries of ``C``. ``client``: run on Dask; ``checkpoint``:
    save progress there and resume from it (see :func:`rlae_sc.chunks.run_pass`).
    """
    if precision not in ("float32", "float64"):
        raise ValueError(f"precision must be float32 or float64, got {precision!r}")
    matrix = _rows(X)
    if isinstance(matrix, InMemory) and isinstance(matrix.array, np.ndarray) and matrix.array.dtype == precision:
        chunk_size = max(chunk_size, IN_MEMORY_BLOCK)  # blocks are views here: fewer, larger products
    fn = partial(_scatter_block, precision=precision)
    sums, _ = run_pass(matrix, fn, chunk_size=chunk_size, client=client, desc="scatter pass", checkpoint=checkpoint)
    n = sums["n"]
    mu = sums["sum"] / n
    C = sums["C"]
    C -= n * np.outer(mu, mu)
    return C


def _rows(X):
    """``X`` when it is rows to read (it has ``read``), else an array wrapped as :class:`InMemory`."""
    return X if hasattr(X, "read") else InMemory(X)


def _scatter_block(block, start: int, *, precision: str) -> tuple[dict, dict]:
    B = np.asarray(block.toarray() if hasattr(block, "toarray") else block, dtype=precision)
    ones = np.ones(len(B), dtype=precision)
    return {"C": (B.T @ B).astype(np.float64), "sum": (ones @ B).astype(np.float64), "n": len(B)}, {}


def scores(X, P: np.ndarray, *, chunk_size: int = CHUNK_SIZE, client=None) -> np.ndarray:
    """``X P`` (n x k, float32) for ``X`` (n x m; as in :func:`scatter_matrix`) and directions ``P`` (m x k)."""
    matrix = _rows(X)
    fn = partial(_scores_block, P=np.asarray(P, dtype=np.float64))
    return run_pass(matrix, fn, chunk_size=chunk_size, client=client, desc="embedding")[1]["scores"]


def _scores_block(block, start: int, *, P: np.ndarray) -> tuple[dict, dict]:
    return {}, {"scores": (np.asarray(block, dtype=np.float64) @ P).astype(np.float32)}
