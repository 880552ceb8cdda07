"""Highly variable genes from sums over cells: Seurat v3's selection, one batch or several, as scanpy computes it.

scanpy's ``highly_variable_genes(flavor="seurat_v3", batch_key=...)`` fits,
in each batch, a loess of log10 variance on log10 mean, clips counts at
``mean + sqrt(n_b) * reg_std``, ranks genes by the variance of their
standardised clipped counts, and then orders genes by their median rank over
the batches in which they are among the ``n_top_genes`` (ties: by the number of
such batches). Every quantity is a per-batch sum over cells, so the same
selection is made here from streamed sums (:func:`seurat_v3_clip` on the
first pass's sums, :func:`seurat_v3_select` on the second's).
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def seurat_v3_clip(gene: dict, candidates: np.ndarray, n: int) -> dict:
    """Seurat v3's first step in one batch, from per-gene count sums.

    A loess fit (span 0.3, degree 2) of log10 variance on log10 mean gives
    each candidate gene's expected standard deviation ``reg_std``; counts are
    clipped at ``clip_val = mean + sqrt(n) * reg_std``. ``gene['sum']`` and
    ``gene['sumsq']`` (input genes,) are sums over the batch's ``n`` QC-passing cells.
    Returns ``cand`` (indices of candidates), ``mean``, ``reg_std`` and ``clip_val`` (each candidates,).
    """
    from skmisc.loess import loess

    cand = np.flatnonzero(candidates)
    mean = gene["sum"][cand] / n
    var = (gene["sumsq"][cand] / n - mean**2) * (n / (n - 1))
    not_const = var > 0
    fitted = np.zeros(len(cand))
    model = loess(np.log10(mean[not_const]), np.log10(var[not_const]), span=0.3, degree=2)
    model.fit()
    fitted[not_const] = model.outputs.fitted_values
    reg_std = np.sqrt(10**fitted)
    return {"cand": cand, "mean": mean, "reg_std": reg_std, "clip_val": reg_std * np.sqrt(n) + mean}


def seurat_v3_select(fits: list[dict], clipped: list[dict], n: list[int], n_genes: int, n_top_genes: int) -> np.ndarray:
    """Seurat v3's ranking over batches: a mask over the ``n_genes`` input genes of the ``n_top_genes`` selected.

    ``fits`` are :func:`seurat_v3_clip`'s per batch, ``clipped`` the sums and
    sums of squares of clipped counts (candidates,) over each batch's ``n``
    cells. In each batch, genes are ranked by the variance of their
    standardised clipped counts; genes are then ordered by their median rank
    over the batches where the rank is below ``n_top_genes`` (genes in no such
    batch last), ties broken by the number of those batches (more first), then
    by input order, as scanpy's ``flavor="seurat_v3"`` orders them. With one batch this is the top
    ``n_top_genes`` by normalised variance.
    """
    norm_var = np.stack(
        [
            (nb * fit["mean"] ** 2 + c["sumsq"] - 2 * c["sum"] * fit["mean"]) / ((nb - 1) * fit["reg_std"] ** 2)
            for fit, c, nb in zip(fits, clipped, n, strict=True)
        ]
    )
    rank = np.argsort(np.argsort(-norm_var, axis=1), axis=1).astype(np.float64)
    top = rank < n_top_genes
    rank[~top] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: genes in no batch's top
        median = np.nanmedian(rank, axis=0)
    order = pd.DataFrame({"rank": median, "nbatches": top.sum(axis=0)}).sort_values(
        ["rank", "nbatches"], ascending=[True, False], na_position="last", kind="stable"
    )
    hvg = np.zeros(n_genes, dtype=bool)
    hvg[fits[0]["cand"][order.index[:n_top_genes]]] = True
    return hvg


def scanpy_hvg(
    log_values: sp.csr_matrix, candidates: np.ndarray, *, flavor: str, n_top_genes: int, batch: np.ndarray | None
) -> np.ndarray:
    """scanpy's ``seurat`` or ``cell_ranger`` selection on log-normalised values (cells x input genes, in
    memory) of the candidate genes (mask over input genes), per batch when ``batch`` (cells,) is given;
    returns a mask over the input genes."""
    import scanpy as sc  # here: importing rlae_sc (and `rlae-sc --help`) does not load scanpy

    cand = np.flatnonzero(candidates)
    sub = ad.AnnData(X=sp.csr_matrix(log_values)[:, cand])
    if batch is not None:
        sub.obs["batch"] = pd.Categorical(batch.astype(str))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = sc.pp.highly_variable_genes(
            sub,
            flavor=flavor,
            n_top_genes=n_top_genes,
            batch_key=None if batch is None else "batch",
            inplace=False,
        )
    mask = np.zeros(len(candidates), dtype=bool)
    mask[cand[np.asarray(table["highly_variable"], dtype=bool)]] = True
    return mask
