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

from rlae_sc.gram import sparse_gram
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

    def parts(self) -> Iterator[tuple[int, np.ndarray, sp.csr_matrix, np.ndarray]]:
        """For each group ``g`` present: ``g``, its rows' positions in the block (rows_g,), ``Y = L_g
        diag(scale[g])`` (rows_g x m, CSR) and ``shift[g]`` (m,); the block's rows are ``Y - 1 shift[g]^T``."""
        groups = np.unique(self.group)
        for g in groups:
            if len(groups) == 1:  # the whole block: no copy of it
                rows, L = np.arange(self.shape[0]), self.L
            else:
                rows = np.flatnonzero(self.group == g)
                L = self.L[rows]
            Y = sp.csr_matrix((L.data * self.scale[g][L.indices], L.indices, L.indptr), shape=L.shape)
            yield g, rows, Y, self.shift[g]


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


def affine_sums(block: AffineBlock, *, precision: str = "float64", threads: int = 1) -> dict:
    """One block's sums for the scatter pass from sparse products (:func:`affine_scatter` turns them into
    ``Z^T Z`` once the pass is over), for the block's rows ``Z = Y - 1 a^T`` of each group (see
    :meth:`AffineBlock.parts`), with ``s = Y^T 1`` and ``n`` the group's rows:

    - ``gram``: the upper triangle of the sum over groups of ``Y^T Y`` (m x m, float64), by
      :func:`rlae_sc.gram.sparse_gram` in ``precision`` on ``threads`` threads (the same bytes with any number);
    - ``cross``: ``s - n a / 2`` of each group (groups x m, float64; zero for a group not in the block);
    - ``sum``: the column sums ``1^T Z = sum of s - n a`` (m,, float64); ``n``: the block's rows.
    """
    gram, cross, total = None, np.zeros_like(block.shift), np.zeros(block.shape[1])
    for g, rows, Y, a in block.parts():
        s = np.asarray(Y.sum(axis=0)).ravel()
        upper = sparse_gram(Y, dtype=precision, threads=threads)
        gram = upper if gram is None else np.add(gram, upper, out=gram)
        cross[g] += s - 0.5 * len(rows) * a
        total += s - len(rows) * a
    return {"gram": gram, "cross": cross, "sum": total, "n": block.shape[0]}


def affine_scatter(gram: np.ndarray, cross: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The uncentred ``Z^T Z`` (m x m, float64) of rows ``Z = Y - 1 a^T`` from :func:`affine_sums`'s ``gram`` and
    ``cross`` summed over blocks, and each group's ``a``, ``shift`` (groups x m): ``Y^T Y - s a^T - a s^T + n a
    a^T``, that is ``gram + gram^T - diag(gram) - sum over groups of (cross a^T + a cross^T)``."""
    C = gram + gram.T
    C[np.diag_indices_from(C)] = np.diag(gram)
    for c, a in zip(cross, shift):
        C -= np.outer(c, a)
        C -= np.outer(a, c)
    return C


def affine_scores(block: AffineBlock, P: np.ndarray, *, residuals: bool) -> dict:
    """:func:`rlae_sc.products.scores_block`'s rows for an :class:`AffineBlock`: ``Z P = Y P - 1 (a^T P)`` per
    group, and with ``residuals`` ``|z|^2 - |z P|^2`` with ``|z|^2 = |y|^2 - 2 y.a + |a|^2``; float64 products."""
    Z = np.empty((block.shape[0], P.shape[1]))
    sq = np.empty(block.shape[0])
    for _, rows, Y, a in block.parts():
        Z[rows] = Y @ P - (P * a[:, None]).sum(axis=0)  # numpy's own sum: the same bits with any BLAS threads
        sq[rows] = np.asarray(Y.power(2).sum(axis=1)).ravel() - 2 * (Y @ a) + a @ a
    out = {"scores": Z.astype(np.float32)}
    if residuals:
        out["residual_sq"] = np.maximum(sq - np.sum(Z * Z, axis=1), 0.0)
    return out
