"""Preprocessing, as scanpy's ``pp``: functions that change an AnnData in place (or a copy of it)."""

from __future__ import annotations

import anndata as ad

from rlae_sc.params import PreprocessParams, ReadParams
from rlae_sc.preprocess import preprocess


def recipe(
    adata: ad.AnnData,
    *,
    qc: str = PreprocessParams.qc,
    n_mads: float = PreprocessParams.n_mads,
    min_genes: int = PreprocessParams.min_genes,
    min_cells: int = PreprocessParams.min_cells,
    max_pct_mito: float | None = PreprocessParams.max_pct_mito,
    target_sum: float | None = PreprocessParams.target_sum,
    normalization: str = PreprocessParams.normalization,
    n_top_genes: int = PreprocessParams.n_top_genes,
    hvg_flavor: str = PreprocessParams.hvg_flavor,
    clip: float | None = PreprocessParams.clip,
    batch_key: str | None = PreprocessParams.batch_key,
    batch_centering: str = PreprocessParams.batch_centering,
    batch_scale: bool = PreprocessParams.batch_scale,
    keep_key: str | None = PreprocessParams.keep_key,
    input_kind: str = ReadParams.input_kind,
    copy: bool = False,
) -> ad.AnnData | None:
    """Preprocess counts with rlae-sc's replayable recipe, in place.

    Fits a :class:`~rlae_sc.Recipe` on ``adata`` (QC, normalisation to a common total, ``log1p``,
    highly variable genes, per-gene centring and scaling; see :func:`rlae_sc.preprocess`) and
    applies it: ``adata`` keeps the cells that pass QC and the genes used, and its ``X`` becomes the matrix
    :func:`rlae_sc.tl.rlae` trains on.

    Parameters
    ----------
    adata
        Cells x genes, raw counts in ``X`` (or log-normalised values with ``input_kind="log_normalized"``).
    qc, n_mads, min_genes, min_cells, max_pct_mito, target_sum, normalization
        Cell QC and normalisation: fields of :class:`~rlae_sc.params.PreprocessParams`, whose defaults and
        documentation these are.
    n_top_genes, hvg_flavor, clip, batch_key, batch_centering, batch_scale, keep_key
        Gene selection and scaling, fields of :class:`~rlae_sc.params.PreprocessParams`; with ``batch_key``,
        genes are chosen across batches and each batch is centred on its own centre.
    input_kind
        ``counts`` or ``log_normalized`` (:class:`~rlae_sc.params.ReadParams`).
    copy
        Return a preprocessed copy and leave ``adata`` as it is.

    Returns
    -------
    anndata.AnnData or None
        The copy when ``copy``, else ``None``. The AnnData is subset to n cells passing QC x m genes used
        (every other slot subset alike) and holds:

        ``X``
            The centred, scaled matrix (n x m, dense float32).
        ``raw``
            Log-normalised values of all input genes.
        ``obs``
            QC metrics: ``n_genes``, ``total_counts``, ``pct_mito`` (percent; NaN without mitochondrial genes).
        ``var``
            Per-gene ``mean`` and ``std`` (ddof=1) of the log-normalised values.
        ``uns['rlae_recipe']``
            The recipe as JSON, replayed on new cells by :func:`rlae_sc.tl.embed`.
        ``uns['rlae_preprocess']``
            Cells and genes in, removed by each filter, and kept.
    """
    steps = PreprocessParams.of(
        qc=qc,
        n_mads=n_mads,
        min_genes=min_genes,
        min_cells=min_cells,
        max_pct_mito=max_pct_mito,
        target_sum=target_sum,
        normalization=normalization,
        n_top_genes=n_top_genes,
        hvg_flavor=hvg_flavor,
        clip=clip,
        batch_key=batch_key,
        batch_centering=batch_centering,
        batch_scale=batch_scale,
        keep_key=keep_key,
        source="input",
    )
    pre, fitted = preprocess(adata, input_kind=input_kind, steps=steps)
    adata = adata.copy() if copy else adata
    keep = fitted.qc_pass(adata)  # the recipe's own cell filter, as preprocess applied it
    adata._inplace_subset_obs(keep)  # as scanpy's pp.filter_cells does
    adata._inplace_subset_var(adata.var_names.get_indexer(fitted.genes))
    adata.X = pre.X
    adata.raw = pre.raw.to_adata()
    qc = pre.obs.iloc[:, adata.obs.shape[1] :]  # pre.obs is the input's obs, then the QC table
    for frame, target in ((qc, adata.obs), (pre.var, adata.var)):
        for column, values in frame.items():
            target[column] = values.to_numpy()
    adata.uns.update(pre.uns)
    return adata if copy else None


__all__ = ["recipe"]


def __dir__() -> list[str]:
    return sorted(__all__)  # the namespace's public functions only, as a notebook's completion shows them
