"""The Gram matrix ``Y^T Y`` of sparse rows, by a compiled kernel that never densifies them.

Each row ``y`` with ``s`` stored values adds ``y y^T``: ``s (s + 1) / 2`` products into the upper triangle of an
m x m accumulator, against BLAS's m (m + 1) / 2 for the dense row. The kernel takes four of a row's values at a
time and runs over the rest of the row once for the four, so each index and value it loads feeds four
accumulator rows (measured on this 2-core machine at 2,000 genes and 179 values per row: about 3x faster than
one value at a time, and about 4x faster than densifying the rows for BLAS's float32 product).

The rows are cut into :data:`PARTS` fixed parts, each summed into its own accumulator by its own thread (numba
releases the GIL) and the parts added in order, so the result has the same bytes with one thread or two.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import scipy.sparse as sp

PARTS = 2  # fixed parts of a block's rows, summed separately and added in order (at most this many threads)


@numba.njit(cache=True, nogil=True, fastmath=True, boundscheck=False)
def _upper(indptr, indices, data, r0, r1, C):  # pragma: no cover - compiled by numba
    """Add ``y y^T`` for CSR rows ``r0:r1`` (sorted column indices) to the upper triangle of ``C`` (m x m)."""
    for r in range(r0, r1):
        b = indptr[r + 1]
        p = indptr[r]
        while p + 4 <= b:
            j0, j1, j2, j3 = indices[p], indices[p + 1], indices[p + 2], indices[p + 3]
            v0, v1, v2, v3 = data[p], data[p + 1], data[p + 2], data[p + 3]
            C0, C1, C2, C3 = C[j0], C[j1], C[j2], C[j3]
            C0[j0] += v0 * v0
            C0[j1] += v0 * v1
            C0[j2] += v0 * v2
            C0[j3] += v0 * v3
            C1[j1] += v1 * v1
            C1[j2] += v1 * v2
            C1[j3] += v1 * v3
            C2[j2] += v2 * v2
            C2[j3] += v2 * v3
            C3[j3] += v3 * v3
            for q in range(p + 4, b):
                j = indices[q]
                d = data[q]
                C0[j] += v0 * d
                C1[j] += v1 * d
                C2[j] += v2 * d
                C3[j] += v3 * d
            p += 4
        while p < b:
            Ci = C[indices[p]]
            v = data[p]
            for q in range(p, b):
                Ci[indices[q]] += v * data[q]
            p += 1


def sparse_gram(Y: sp.csr_matrix, *, dtype: str = "float64", threads: int = PARTS) -> np.ndarray:
    """The upper triangle of ``Y^T Y`` (m x m, float64, zero below the diagonal) of CSR rows ``Y`` (rows x m).

    ``dtype``: the precision of the products and of each part's sums (``"float32"``: relative errors of about
    1e-6 in the entries, as BLAS's float32 product; ``"float64"``: exact to rounding); the parts are added in
    float64. ``threads``: how many of the :data:`PARTS` run at once (the result does not depend on it).
    """
    Y = Y if Y.has_sorted_indices else Y.sorted_indices()
    n, m = Y.shape
    data = Y.data.astype(dtype, copy=False)
    indptr, indices = Y.indptr.astype(np.int64, copy=False), Y.indices
    bounds = np.linspace(0, n, PARTS + 1).astype(np.int64)
    parts = [np.zeros((m, m), dtype=dtype) for _ in range(PARTS)]

    def part(i: int) -> None:
        _upper(indptr, indices, data, bounds[i], bounds[i + 1], parts[i])

    if threads > 1 and n > 1:
        with ThreadPoolExecutor(min(threads, PARTS)) as pool:
            list(pool.map(part, range(PARTS)))
    else:
        for i in range(PARTS):
            part(i)
    upper = parts[0].astype(np.float64, copy=False)
    for other in parts[1:]:
        upper += other
    return upper
