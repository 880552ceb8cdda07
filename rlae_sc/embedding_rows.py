"""Rows of an embedding read block by block, from memory or from an ``.h5ad`` on disk.

The cluster stage of an atlas never holds its embedding whole: at five million cells and 50 components the
float32 scores alone take 1 GB, as much as the neighbour index built from them. :class:`EmbeddingRows` gives
the neighbour search, the sketch and the fingerprints the same row blocks whether the scores are a numpy array
(the Python API) or an h5py dataset (``obsm/X_rlae`` of the directions stage's file).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

READ_ROWS = 65_536  # rows read at a time (13 MB at 50 float32 components)


class EmbeddingRows:
    """The first ``dims`` columns (all when None) of ``source``, a cells x k array in memory or an h5py
    dataset, served as C-contiguous float32 blocks (rows x dims)."""

    def __init__(self, source, dims: int | None = None):
        self.source = source
        n, k = source.shape
        self.dims = k if dims is None else min(dims, k)
        self.shape = (n, self.dims)

    def __len__(self) -> int:
        return self.shape[0]

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (rows x dims, float32)."""
        return np.ascontiguousarray(self.source[start:stop, : self.dims], dtype=np.float32)

    def blocks(self, size: int = READ_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, rows start:start + size)`` over all rows in order."""
        for start in range(0, len(self), size):
            yield start, self.block(start, min(start + size, len(self)))

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The rows numbered ``rows`` (m,) in that order (m x dims, float32); from disk, by one pass over the
        file in :data:`READ_ROWS` blocks, never one row at a time."""
        rows = np.asarray(rows)
        if isinstance(self.source, np.ndarray):
            return np.ascontiguousarray(self.source[rows, : self.dims], dtype=np.float32)
        out = np.empty((len(rows), self.dims), dtype=np.float32)
        order = np.argsort(rows, kind="stable")
        wanted = rows[order]
        for start in range(0, len(self), READ_ROWS):
            lo, hi = np.searchsorted(wanted, [start, start + READ_ROWS])
            if hi > lo:
                out[order[lo:hi]] = self.block(start, min(start + READ_ROWS, len(self)))[wanted[lo:hi] - start]
        return out

    def array(self) -> np.ndarray:
        """All rows (cells x dims, float32) in memory."""
        return self.block(0, len(self))


def as_rows(X) -> EmbeddingRows:
    """``X`` as :class:`EmbeddingRows` (itself when it already is)."""
    return X if isinstance(X, EmbeddingRows) else EmbeddingRows(X)
