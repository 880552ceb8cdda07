"""Block kernels: what one pass of preprocessing computes on one block of cells.

Each kernel is ``fn(block, start, **fixed) -> (sums, rows)`` for
:func:`rlae_sc.engine.run_pass`: ``block`` is a block of cells x input genes
(counts, CSR or dense) whose first row is cell ``start`` of the whole input;
``sums`` (arrays) are added over blocks, ``rows`` (per-cell arrays) are
concatenated in cell order. Masks and codes over all cells (``keep``,
``batch``, ``codes``) are sliced to the block here. The pooled fit
(:func:`rlae_sc.preprocess.fit_recipe`) and a federated site
(:mod:`rlae_sc.federated.statistics`) run the same kernels, so the sites'
sums add up to the pooled ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rlae_sc.csr_sums import grouped_sums
from rlae_sc.io import validate_matrix
from rlae_sc.recipe import Recipe, cell_qc
from rlae_sc.residuals import residual_sums


def kept_rows(block, start: int, keep: np.ndarray) -> sp.csr_matrix:
    """The rows of a block (starting at row ``start``) of cells that pass QC (``keep`` over all cells), as CSR."""
    return sp.csr_matrix(block)[keep[start : start + block.shape[0]]]


def kept_codes(codes: np.ndarray, block, start: int, keep: np.ndarray) -> np.ndarray:
    """``codes`` (over all cells) of a block's cells that pass QC, as :func:`kept_rows` keeps them."""
    stop = start + block.shape[0]
    return codes[start:stop][keep[start:stop]]


def cell_qc_block(block, start: int, *, mito: np.ndarray) -> tuple[dict, dict]:
    """Per-cell QC metrics only (``qc: mad`` reads them before it can tell which cells pass): genes detected,
    total counts and the mitochondrial share in percent (rows,); ``mito`` masks the input genes."""
    n_genes, total, pct = cell_qc(sp.csr_matrix(block), mito)
    return {}, {"n_genes": n_genes, "total_counts": total, "pct_mito": pct}


def qc_block(
    block,
    start: int,
    *,
    recipe: Recipe,
    mito: np.ndarray,
    check: dict | None,
    batch: np.ndarray | None = None,
    n_batches: int = 1,
) -> tuple[dict, dict]:
    """Pass 1: per-cell QC; per-gene detection (all cells) and count sums (cells passing QC), with ``batch``
    (all cells,) also per batch (``batch_sum``, ``batch_sumsq``: batches x genes).

    ``check`` (``source``, ``input_kind``, ``genes``) validates the block's values first
    (:func:`rlae_sc.io.validate_matrix`); ``None``: no check. Sums are over input genes (genes,): cells detecting
    each gene (``n_cells_all``: all cells; ``n_cells``: cells passing QC), counts and squared counts; rows are
    the QC table's columns (``n_genes``, ``total_counts``, ``pct_mito``, ``qc_pass``).
    """
    X = sp.csr_matrix(block)
    if check is not None:
        validate_matrix(
            X,
            source=check["source"],
            input_kind=check["input_kind"],
            names=(pd.RangeIndex(start, start + X.shape[0]), check["genes"]),
        )
    n_genes, total, pct = cell_qc(X, mito)
    keep = recipe.keep(n_genes, total, pct)
    m = X.shape[1]
    counts, squares = grouped_sums(X, np.where(keep, 0, -1), 1)
    sums = {
        "n_cells_all": np.bincount(X.indices, minlength=m),
        "n_cells": np.bincount(X.indices[np.repeat(keep, n_genes)], minlength=m),
        "sum": counts[0],
        "sumsq": squares[0],
    }
    if batch is not None:
        codes = np.where(keep, batch[start : start + X.shape[0]], -1)
        sums["batch_sum"], sums["batch_sumsq"] = grouped_sums(X, codes, n_batches)
    return sums, {"n_genes": n_genes, "total_counts": total, "pct_mito": pct, "qc_pass": keep}


def clipped_block(
    block, start: int, *, keep: np.ndarray, cand: np.ndarray, clip_val: np.ndarray, batch: np.ndarray | None = None
) -> tuple[dict, dict]:
    """Pass 2: sums and sums of squares of clipped counts of the candidate genes (input columns ``cand``) over
    cells passing QC (candidates,); with ``batch`` (all cells,), per batch (batches x candidates), ``clip_val``
    then each batch's (batches x candidates)."""
    stop = start + block.shape[0]
    codes = np.where(keep[start:stop], 0 if batch is None else batch[start:stop], -1)
    n_groups = 1 if batch is None else len(clip_val)
    total, squares = grouped_sums(block, codes, n_groups, columns=cand, clip=clip_val)
    return ({"sum": total[0], "sumsq": squares[0]} if batch is None else {"sum": total, "sumsq": squares}), {}


def residual_block(
    block, start: int, *, keep: np.ndarray, cand: np.ndarray, gene_sums: np.ndarray, recipe: Recipe
) -> tuple[dict, dict]:
    """Passes 2 and 3 with Pearson residuals: sums and sums of squares of the residuals of genes ``cand``
    (their count totals ``gene_sums``; cell totals over them) over cells passing QC (see
    :func:`rlae_sc.residuals.residual_sums`)."""
    X = kept_rows(block, start, keep)[:, cand]
    return residual_sums(X, gene_sums=gene_sums, theta=recipe.theta, clip=recipe.residual_clip), {}


def lognorm_block(
    block,
    start: int,
    *,
    recipe: Recipe,
    keep: np.ndarray,
    idx: np.ndarray,
    codes: np.ndarray | None = None,
    n_codes: int = 1,
) -> tuple[dict, dict]:
    """Pass 3: sums and sums of squares of the selected genes' (input columns ``idx``) log-normalised values
    over cells passing QC (genes,); with ``codes`` (all cells,; -1: none), also per code (``group_sum``,
    ``group_sumsq``: n_codes x genes)."""
    L = recipe.normalize_rows(kept_rows(block, start, keep), idx)
    total, squares = grouped_sums(L, np.zeros(L.shape[0]), 1)
    sums = {"sum": total[0], "sumsq": squares[0]}
    if codes is not None:
        sums["group_sum"], sums["group_sumsq"] = grouped_sums(L, kept_codes(codes, block, start, keep), n_codes)
    return sums, {}


def first_pass_block(
    block, start: int, *, recipe: Recipe, keep: np.ndarray, idx: np.ndarray, batch: np.ndarray, P: np.ndarray | None
) -> tuple[dict, dict]:
    """The batch-centred scaled rows of a block's cells passing QC: their scatter ``C`` (m x m, float64 sums
    of float32 products) when ``P`` is None, else their scores on ``P`` (m x d; rows x d, float32)."""
    L = recipe.normalize_rows(kept_rows(block, start, keep))
    Z = recipe.scale_rows(L, idx, batch=kept_codes(batch, block, start, keep), compute=np.float32)
    if P is None:
        return {"C": (Z.T @ Z).astype(np.float64)}, {}
    return {}, {"scores": Z @ P.astype(np.float32)}


def offset_block(
    block, start: int, *, recipe: Recipe, keep: np.ndarray, idx: np.ndarray, batch: np.ndarray | None = None
) -> tuple[dict, dict]:
    """Pass 4: sums of the clipped scaled values over cells passing QC (genes used,; ``recipe.offset`` still
    zero)."""
    L = recipe.normalize_rows(kept_rows(block, start, keep))
    codes = None if batch is None else kept_codes(batch, block, start, keep)
    return {"sum": recipe.scale_rows(L, idx, batch=codes, dtype=np.float64).sum(axis=0)}, {}


def lognorm_rows_block(block, start: int, *, recipe: Recipe, keep: np.ndarray, idx: np.ndarray) -> tuple[dict, dict]:
    """The log-normalised values of the genes used (cells passing QC) of a block of counts, as the
    ``data``, ``indices`` and per-row ``nnz`` of CSR rows (float32, int32, int64), for
    :func:`rlae_sc.io.write_csr_rows`."""
    L = recipe.normalize_rows(kept_rows(block, start, keep), idx)
    L.sort_indices()
    return {}, {"data": L.data, "indices": L.indices.astype(np.int32), "nnz": np.diff(L.indptr).astype(np.int64)}
