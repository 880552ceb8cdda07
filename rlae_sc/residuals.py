"""Analytic Pearson residuals of counts (Lause, Berens and Kobak 2021), from gene and cell sums only.

Under a negative binomial model with a cell's expected count of gene g
``mu_cg = n_c p_g`` (``n_c`` the cell's total over the genes considered, ``p_g``
the gene's share of all counts) and overdispersion ``theta``, the residual of a
count ``x`` is ``(x - mu) / sqrt(mu + mu^2 / theta)``, clipped to ``[-clip,
clip]`` (``sqrt(n_cells)`` by default). Gene selection ranks genes by the
variance of their residuals. The same definitions as scanpy's
``scanpy.experimental.pp.highly_variable_genes(flavor="pearson_residuals")`` and
``normalize_pearson_residuals``; everything needed is the genes' sums (one pass)
and, per cell, its row (each block carries its own totals), so they stream.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

THETA = 100.0  # overdispersion shared by all genes (scanpy's and Lause et al.'s default)
GENE_CHUNK = 1024  # genes per dense piece of a block when summing residuals over cells


def default_clip(n_cells: int) -> float:
    """The residuals' clipping bound for ``n_cells`` reference cells: ``sqrt(n_cells)``."""
    return float(np.sqrt(n_cells))


def pearson_residuals(
    counts, *, gene_sums: np.ndarray, theta: float = THETA, clip: float, totals: np.ndarray | None = None
) -> np.ndarray:
    """Pearson residuals (n x g, float64) of ``counts`` (n cells x g genes, CSR or dense).

    Parameters
    ----------
    counts
        Counts of the genes considered.
    gene_sums
        Each gene's count total over the reference cells (g,): ``p_g = gene_sums / gene_sums.sum()``.
    theta, clip
        Overdispersion and clipping bound (see :func:`default_clip`).
    totals
        Each cell's total ``n_c`` (n,); by default the row sums of ``counts``.
    """
    gene_sums = np.asarray(gene_sums, dtype=np.float64)
    return _residuals(counts, gene_sums / gene_sums.sum(), _totals(counts, totals), theta, clip)


def residual_sums(
    counts, *, gene_sums: np.ndarray, theta: float = THETA, clip: float, totals: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Sums and sums of squares over cells (g,) of the residuals of ``counts`` (n x g; see
    :func:`pearson_residuals`), ``GENE_CHUNK`` genes at a time (memory: n x ``GENE_CHUNK`` floats)."""
    X = sp.csc_matrix(counts) if sp.issparse(counts) else np.asarray(counts)
    gene_sums = np.asarray(gene_sums, dtype=np.float64)
    p, totals = gene_sums / gene_sums.sum(), _totals(X, totals)
    out = {"sum": np.zeros(len(p)), "sumsq": np.zeros(len(p))}
    for lo in range(0, len(p), GENE_CHUNK):
        hi = min(lo + GENE_CHUNK, len(p))
        z = _residuals(X[:, lo:hi], p[lo:hi], totals, theta, clip)
        out["sum"][lo:hi] = z.sum(axis=0)
        out["sumsq"][lo:hi] = np.square(z).sum(axis=0)
    return out


def residual_variance(sums: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Each gene's residual variance over ``n`` cells (ddof=0, as scanpy) from :func:`residual_sums`' sums."""
    mean = sums["sum"] / n
    return np.maximum(sums["sumsq"] / n - mean**2, 0.0)


def select_genes(variance: np.ndarray, n_top_genes: int) -> np.ndarray:
    """Mask (genes,) of the ``n_top_genes`` genes with the largest residual variance (scanpy's ranking)."""
    rank = np.argsort(np.argsort(-variance))
    return rank < n_top_genes


def _totals(counts, totals: np.ndarray | None) -> np.ndarray:
    """``totals`` as float64, or the row sums of ``counts``."""
    if totals is None:
        return np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    return np.asarray(totals, dtype=np.float64)


def _residuals(counts, p: np.ndarray, totals: np.ndarray, theta: float, clip: float) -> np.ndarray:
    """Clipped residuals (n x g, float64) of ``counts`` for gene shares ``p`` (g,) and cell totals (n,)."""
    X = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    mu = totals[:, None] * p[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (X.astype(np.float64) - mu) / np.sqrt(mu + mu**2 / theta)
    z[mu == 0] = 0.0  # a cell or a gene without counts: x = mu = 0
    return np.clip(z, -clip, clip, out=z)
