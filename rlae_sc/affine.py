"""Rows of the preprocessed matrix kept sparse, with the recipe's scaling and centring applied outside the
products (numpy and scipy only).

A preprocessed row without clipping or Pearson residuals is ``z = l * scale[g] - shift[g]``: the sparse
log-normalised values ``l`` of a cell of batch ``g``, scaled gene by gene and shifted by the batch's centre (and the
recipe's offset). Its products with other rows or with the directions can be taken on the sparse ``l`` and
corrected by rank-one terms, so a pass costs about the stored values squared per row instead of genes squared.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from rlae_sc.rows import Rows


@dataclass(frozen=True)
class AffineBlock:
    """A block of rows ``z = l * scale[g] - shift[g]`` kept sparse: ``L`` (rows x m, CSR float64) the
    unscaled values, ``scale`` and ``shift`` (groups x m, float64) each group's map, ``group`` (rows,) each
    row's group (its batch, or 0)."""

    L: sp.csr_matrix
    scale: np.ndarray
    shift: np.ndarray
    group: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.L.shape

    @property
    def density(self) -> float:
        """Stored values of ``L`` over its entries."""
        return self.L.nnz / max(self.L.shape[0] * self.L.shape[1], 1)

    def toarray(self) -> np.ndarray:
        """The rows, dense (rows x m, float64)."""
        Z = self.L.toarray()
        Z *= self.scale[self.group]
        Z -= self.shift[self.group]
        return Z

    def parts(self) -> Iterator[tuple[np.ndarray, sp.csr_matrix, np.ndarray]]:
        """For each group present: its rows' positions in the block (rows_g,), ``Y = L_g diag(scale[g])``
        (rows_g x m, CSR) and ``shift[g]`` (m,); the block's rows are ``Y - 1 shift[g]^T``."""
        for g in np.unique(self.group):
            rows = np.flatnonzero(self.group == g)
            yield rows, sp.csr_matrix(self.L[rows].multiply(self.scale[g])), self.shift[g]


@dataclass(frozen=True)
class AffineRows(Rows):
    """Rows (:class:`~rlae_sc.rows.Rows`) read as :class:`AffineBlock`: ``rows`` (:class:`~rlae_sc.rows.Rows`)
    of the unscaled values, ``scale`` and ``shift`` (groups x m) as
    :meth:`rlae_sc.recipe.Recipe.affine` gives them, ``batch`` (rows,; ``None``: one group) each row's group.
    Picklable, for Dask."""

    rows: object
    scale: np.ndarray
    shift: np.ndarray
    batch: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.shape

    def read(self, start: int, stop: int) -> AffineBlock:
        L = sp.csr_matrix(self.rows.read(start, stop), dtype=np.float64)
        group = np.zeros(L.shape[0], dtype=np.intp) if self.batch is None else self.batch[start:stop]
        return AffineBlock(L, self.scale, self.shift, group)

    def fingerprint(self) -> str:
        return f"affine {self.rows.fingerprint()}"


def affine_products(block: AffineBlock) -> tuple[np.ndarray, np.ndarray]:
    """Uncentred ``Z^T Z`` (m x m) and column sums ``1^T Z`` (m,) of the block's rows ``Z = Y - 1 a^T`` (per
    group, see :meth:`AffineBlock.parts`), float64, from sparse products: ``Y^T Y - s a^T - a s^T + n a a^T``
    and ``s - n a`` with ``s = Y^T 1`` and ``n`` the group's rows."""
    m = block.shape[1]
    ZtZ, total = np.zeros((m, m)), np.zeros(m)
    for rows, Y, a in block.parts():
        s = np.asarray(Y.sum(axis=0)).ravel()
        sa = np.outer(s, a)
        ZtZ += (Y.T @ Y).toarray() - sa - sa.T + len(rows) * np.outer(a, a)
        total += s - len(rows) * a
    return ZtZ, total


def affine_scores(block: AffineBlock, P: np.ndarray, *, residuals: bool) -> dict:
    """:func:`rlae_sc.products.scores_block`'s rows for an :class:`AffineBlock`: ``Z P = Y P - 1 (a^T P)`` per
    group, and with ``residuals`` ``|z|^2 - |z P|^2`` with ``|z|^2 = |y|^2 - 2 y.a + |a|^2``; float64 products."""
    Z = np.empty((block.shape[0], P.shape[1]))
    sq = np.empty(block.shape[0])
    for rows, Y, a in block.parts():
        Z[rows] = Y @ P - (P * a[:, None]).sum(axis=0)  # numpy's own sum: the same bits with any BLAS threads
        sq[rows] = np.asarray(Y.multiply(Y).sum(axis=1)).ravel() - 2 * (Y @ a) + a @ a
    out = {"scores": Z.astype(np.float32)}
    if residuals:
        out["residual_sq"] = np.maximum(sq - np.sum(Z * Z, axis=1), 0.0)
    return out
