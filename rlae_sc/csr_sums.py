"""Sums over the stored values of a CSR block of cells, by compiled loops (numba) that read each value once.

The preprocessing passes need, per block, each cell's total counts and per-gene sums of the cells passing QC,
often of some genes only and clipped. Written with numpy, each of those made a copy of the block (the rows kept,
then the columns selected) and a float64 temporary per sum; at a million cells those copies cost more than the
reading. Here the row filter (a group code of -1), the column selection and the clipping happen inside one loop.
The values are added one at a time in the order they are stored, row by row, which is the order ``np.bincount``
adds its weights in, so :func:`grouped_sums` gives the bytes of the ``np.bincount`` expression it replaced.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp


@numba.njit(cache=True, nogil=True)
def _grouped(indptr, indices, data, codes, position, clip, total, squares):  # pragma: no cover - compiled by numba
    """Add row ``r``'s values (clipped at ``clip[g, j]``) and their squares to row ``g = codes[r]`` of ``total`` and
    ``squares`` at column ``j = position[column]``, skipping rows with ``g < 0`` and columns with ``j < 0``."""
    for r in range(len(indptr) - 1):
        g = codes[r]
        if g < 0:
            continue
        for p in range(indptr[r], indptr[r + 1]):
            j = position[indices[p]]
            if j < 0:
                continue
            v = np.float64(data[p])
            if v > clip[g, j]:  # NaN stays NaN, as with np.minimum
                v = clip[g, j]
            total[g, j] += v
            squares[g, j] += v * v


@numba.njit(cache=True, nogil=True)
def _row_totals(indptr, indices, data, mask, total, masked):  # pragma: no cover - compiled by numba
    """Each row's sum of values (``total``) and of the values in columns where ``mask`` is true (``masked``)."""
    for r in range(len(indptr) - 1):
        s = 0.0
        t = 0.0
        for p in range(indptr[r], indptr[r + 1]):
            v = np.float64(data[p])
            s += v
            if mask[indices[p]]:
                t += v
        total[r] = s
        masked[r] = t


def grouped_sums(
    L, codes: np.ndarray, n_groups: int, *, columns: np.ndarray | None = None, clip: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sums and sums of squares (float64, n_groups x genes) of the rows of ``L`` (rows x all genes, CSR) by
    ``codes`` (rows,; -1: left out), over the genes ``columns`` (column numbers of ``L``, in the output's order;
    ``None``: all) with each value first clipped at ``clip`` (genes, or n_groups x genes; ``None``: no clipping)."""
    L = sp.csr_matrix(L)
    position = np.arange(L.shape[1], dtype=np.int64)
    if columns is not None:
        position = np.full(L.shape[1], -1, dtype=np.int64)
        position[columns] = np.arange(len(columns))
    width = L.shape[1] if columns is None else len(columns)
    limit = np.broadcast_to(np.inf if clip is None else np.asarray(clip, dtype=np.float64), (n_groups, width))
    total, squares = np.zeros((n_groups, width)), np.zeros((n_groups, width))
    codes = np.asarray(codes, dtype=np.int64)
    _grouped(L.indptr, L.indices, L.data, codes, position, np.ascontiguousarray(limit), total, squares)
    return total, squares


def row_totals(X, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's sum (float64, rows,) of ``X`` (rows x genes, CSR) and its sum over the genes where ``mask``
    (genes,, bool) is true."""
    X = sp.csr_matrix(X)
    total, masked = np.empty(X.shape[0]), np.empty(X.shape[0])
    _row_totals(X.indptr, X.indices, X.data, np.asarray(mask, dtype=np.bool_), total, masked)
    return total, masked
