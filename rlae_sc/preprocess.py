"""Preprocessing as a replayable recipe: QC, normalisation (log1p or Pearson residuals), HVG selection, scaling.

:func:`preprocess` fits a :class:`Recipe` on a reference and returns the
matrix the autoencoder trains on; :meth:`Recipe.transform` replays the same
steps on any cells (new experiments included) without refitting anything.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from functools import partial

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from rlae_sc.chunks import CHUNK_SIZE, H5adMatrix, InMemory, matrix_of, run_pass
from rlae_sc.errors import InputError
from rlae_sc.io import validate_matrix
from rlae_sc.params import MappingParams, PreprocessParams, ReadParams
from rlae_sc.residuals import THETA, default_clip, pearson_residuals, residual_sums, residual_variance, select_genes

MITO_PREFIXES = ("MT-", "mt-")


@dataclass
class Recipe:
    """Every parameter and fitted statistic needed to replay preprocessing.

    Attributes
    ----------
    input_kind
        See :class:`rlae_sc.params.ReadParams`.
    min_genes, min_cells, max_pct_mito, target_sum, normalization, n_top_genes, hvg_flavor, clip
        The parameters as applied (see :class:`rlae_sc.params.PreprocessParams`):
        ``target_sum`` is the median of the reference's totals when not given
        (a cell's total is taken over all its genes; not used by Pearson
        residuals), ``hvg_flavor`` is ``seurat`` for log-normalised input given
        ``seurat_v3`` and ``pearson_residuals`` with that normalisation, and
        ``max_pct_mito`` is ``None`` when no gene is mitochondrial.
    input_genes
        Gene names of the reference input, in order.
    genes
        Genes used, in input order (length m).
    mean, std
        Per-gene mean and standard deviation (ddof=1) of log-normalised values
        over reference cells (m,); ``std`` is 1 where a gene is constant, and
        for Pearson residuals (centred, not scaled: ``mean`` is their mean).
    gene_sums, theta, residual_clip
        Pearson residuals only: each gene's count total over the reference
        cells (m,), the overdispersion and the clipping bound
        (``sqrt(n reference cells)``); a cell's total is taken over the genes
        used (see :mod:`rlae_sc.residuals`).
    offset
        Per-gene mean subtracted after clipping (m,), zeros without clipping.
    stats
        Counts from fitting: cells and genes in, removed by each filter, kept.
    """

    input_kind: str = ReadParams.input_kind
    min_genes: int = PreprocessParams.min_genes
    min_cells: int = PreprocessParams.min_cells
    max_pct_mito: float | None = PreprocessParams.max_pct_mito
    target_sum: float | None = PreprocessParams.target_sum
    normalization: str = PreprocessParams.normalization
    n_top_genes: int = PreprocessParams.n_top_genes
    hvg_flavor: str = PreprocessParams.hvg_flavor
    clip: float | None = PreprocessParams.clip
    input_genes: list[str] = field(default_factory=list)
    genes: list[str] = field(default_factory=list)
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    std: np.ndarray = field(default_factory=lambda: np.zeros(0))
    offset: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gene_sums: np.ndarray = field(default_factory=lambda: np.zeros(0))
    theta: float = THETA
    residual_clip: float | None = None
    stats: dict = field(default_factory=dict)

    @property
    def pearson(self) -> bool:
        """Whether the recipe computes Pearson residuals of counts (else log-normalised values)."""
        return self.normalization == "pearson_residuals"

    @property
    def stored(self) -> str:
        """What a preprocessed file's sparse ``X`` holds for the genes used: :data:`LOG_NORMALIZED` values,
        or :data:`COUNTS` for Pearson residuals (computed from them block by block)."""
        return COUNTS if self.pearson else LOG_NORMALIZED

    # -- replay -----------------------------------------------------------------

    def qc_metrics(self, adata: ad.AnnData) -> pd.DataFrame:
        """Per-cell ``n_genes``, ``total_counts`` and ``pct_mito`` (NaN when no mito genes are named)."""
        n_genes, total, pct = cell_qc(sp.csr_matrix(adata.X), mito_mask(adata.var_names))
        return pd.DataFrame({"n_genes": n_genes, "total_counts": total, "pct_mito": pct}, index=adata.obs_names)

    def qc_pass(self, adata: ad.AnnData) -> np.ndarray:
        """Boolean mask (n_cells,) of cells that pass the recipe's cell filters."""
        qc = self.qc_metrics(adata)
        return self._keep(qc["n_genes"].to_numpy(), qc["total_counts"].to_numpy(), qc["pct_mito"].to_numpy())

    def _keep(self, n_genes: np.ndarray, total: np.ndarray, pct_mito: np.ndarray) -> np.ndarray:
        keep = (n_genes >= max(self.min_genes, 1)) & (total > 0)
        if self.max_pct_mito is not None and not np.isnan(pct_mito).all():
            keep &= pct_mito <= self.max_pct_mito
        return keep

    def normalize(self, adata: ad.AnnData) -> sp.csr_matrix:
        """Log-normalised values of all of ``adata``'s genes (CSR, float32, cells x genes); the counts
        themselves for Pearson residuals (which :meth:`transform` computes over the genes used)."""
        return self._normalize(sp.csr_matrix(adata.X))

    def _normalize(self, X: sp.csr_matrix) -> sp.csr_matrix:
        """``log1p(target_sum * x / cell total)`` (totals over all genes), or ``X`` for log-normalised input
        and for Pearson residuals."""
        if self.input_kind == "log_normalized" or self.pearson:
            return sp.csr_matrix(X, dtype=np.float32)
        X = sp.csr_matrix(X, dtype=np.float64, copy=True)
        total = np.asarray(X.sum(axis=1)).ravel()
        total[total == 0] = 1.0
        X.data *= np.repeat(self.target_sum / total, np.diff(X.indptr))
        np.log1p(X.data, out=X.data)
        return X.astype(np.float32)

    def transform(
        self, adata: ad.AnnData, *, min_overlap: float = MappingParams.min_overlap, source: str = "query"
    ) -> np.ndarray:
        """Replay the recipe on ``adata`` (any cells, any gene order) -> float32 (n_cells x m).

        Genes are matched by name; genes of the recipe missing from ``adata``
        count as zero expression (a warning gives the overlap). Fewer than
        ``min_overlap`` of the recipe's genes present is an :class:`InputError`.
        No cell is dropped: use :meth:`qc_pass` to flag cells QC would remove.
        """
        return self._scale(
            self.normalize(adata), self.gene_index(adata.var_names, min_overlap=min_overlap, source=source)
        )

    def gene_index(
        self, var_names, *, min_overlap: float = MappingParams.min_overlap, source: str = "query"
    ) -> np.ndarray:
        """Column of each recipe gene in ``var_names`` (-1: missing), checked against ``min_overlap``."""
        idx = pd.Index(var_names).get_indexer(self.genes)
        present = idx >= 0
        overlap = float(present.mean())
        if overlap < min_overlap:
            raise InputError(
                source,
                f"only {int(present.sum())} of the model's {len(self.genes)} genes ({overlap:.0%}) are present, "
                f"below the minimum overlap of {min_overlap:.0%}",
                "Check that genes are named the same way as in the reference (symbols vs Ensembl ids), "
                "or lower min_overlap if you accept the loss.",
            )
        if overlap < 1:
            warnings.warn(
                f"{source}: {len(self.genes) - int(present.sum())} of the model's {len(self.genes)} genes are missing "
                f"(overlap {overlap:.1%}); they are treated as zero expression",
                stacklevel=3,
            )
        return idx

    def _scale(self, L: sp.csr_matrix, idx: np.ndarray, *, dtype=np.float32, compute=np.float64) -> np.ndarray:
        """Centre, scale and clip log-normalised values ``L`` (or, for Pearson residuals, compute the
        residuals of counts ``L`` in float64, cell totals over the recipe's genes, and centre them);
        ``idx[j]`` is the column of recipe gene j in ``L`` (-1: missing, taken as zero). Computed in
        ``compute`` precision, in place (memory: one dense copy, two for residuals); returns ``dtype``
        (n_cells x m)."""
        present = idx >= 0
        if present.all() and np.array_equal(idx, np.arange(L.shape[1])):
            Z = L.toarray().astype(compute, copy=False)  # the columns are the recipe's genes, in order
        else:
            Z = np.zeros((L.shape[0], len(self.genes)), dtype=compute)
            Z[:, present] = L[:, idx[present]].toarray()
        if self.pearson:
            Z = self.residuals(Z).astype(compute, copy=False)
        Z -= self.mean.astype(compute, copy=False)
        Z /= self.std.astype(compute, copy=False)
        if self.clip is not None:
            np.clip(Z, -self.clip, self.clip, out=Z)
        Z -= self.offset.astype(compute, copy=False)
        return Z.astype(dtype, copy=False)

    def residuals(self, counts) -> np.ndarray:
        """Pearson residuals (float64, n_cells x m) of ``counts`` of the recipe's genes (n_cells x m),
        uncentred: scanpy's ``normalize_pearson_residuals`` of the genes used."""
        return pearson_residuals(counts, gene_sums=self.gene_sums, theta=self.theta, clip=self.residual_clip)

    # -- serialisation ------------------------------------------------------------

    def to_dict(self) -> dict:
        """A JSON-ready dict; arrays become lists of floats (exact round trip)."""
        d = asdict(self)
        for key in ARRAYS:
            d[key] = np.asarray(d[key], dtype=np.float64).tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        for key in ARRAYS:
            d[key] = np.asarray(d[key], dtype=np.float64)
        return cls(**d)


ARRAYS = ("mean", "std", "offset", "gene_sums")  # the recipe's per-gene arrays (lists in JSON)


def mito_mask(var_names: pd.Index) -> np.ndarray:
    """True for mitochondrial genes: names starting with ``MT-`` or ``mt-``."""
    return np.asarray(pd.Index(var_names).astype(str).str.startswith(MITO_PREFIXES), dtype=bool)


def cell_qc(X: sp.csr_matrix, mito: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(n_genes, total_counts, pct_mito)`` per cell of ``X`` (cells x genes); pct_mito is NaN without mito genes."""
    total = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
    if mito.any():
        pct = 100 * np.asarray(X[:, mito].sum(axis=1, dtype=np.float64)).ravel() / np.where(total > 0, total, 1.0)
    else:
        pct = np.full(len(total), np.nan)
    return np.diff(X.indptr), total, pct


def new_recipe(
    var_names: pd.Index, *, input_kind: str = ReadParams.input_kind, source: str = "input", **params
) -> tuple[Recipe, np.ndarray]:
    """An unfitted :class:`Recipe` for input genes ``var_names`` and the mito mask (genes,).

    ``params`` are fields of :class:`rlae_sc.params.PreprocessParams` (checked; the others take their
    defaults). ``seurat_v3`` becomes ``seurat`` for log-normalised input, the flavor is
    ``pearson_residuals`` with that normalisation (counts input only); the mito filter
    is off when no gene name starts with ``MT-``/``mt-``.
    """
    ReadParams.of(input_kind=input_kind, source=source)
    p = PreprocessParams.of(params, source=source)
    hvg_flavor = p.hvg_flavor
    if input_kind == "log_normalized" and hvg_flavor == "seurat_v3":
        hvg_flavor = "seurat"  # seurat_v3 models raw counts; on log data scanpy's 'seurat' flavor applies
    if p.normalization == "pearson_residuals":
        if input_kind != "counts":
            raise InputError(
                source,
                "normalization pearson_residuals needs raw counts, but the input is declared log-normalised",
                "Give the counts (input_kind: counts), or use normalization: log1p.",
            )
        hvg_flavor = "pearson_residuals"  # genes are ranked by the variance of their residuals
    var_names = pd.Index(var_names).astype(str)
    mito = mito_mask(var_names)
    recipe = Recipe(
        input_kind=input_kind,
        min_genes=p.min_genes,
        min_cells=p.min_cells,
        max_pct_mito=p.max_pct_mito if mito.any() else None,  # no gene names start with MT-/mt-: nothing to filter
        target_sum=p.target_sum,
        normalization=p.normalization,
        n_top_genes=p.n_top_genes,
        hvg_flavor=hvg_flavor,
        clip=p.clip,
        input_genes=list(var_names),
    )
    return recipe, mito


def check_qc(recipe: Recipe, n_in: int, n_kept: int, median_genes: float | None, *, source: str = "input") -> None:
    """Stop when no cell of ``n_in`` passes QC; warn when under half do.

    ``median_genes`` (genes detected by the median cell) is quoted in the
    messages when known (``None``: not available, e.g. to a federated coordinator).
    """
    detect = "" if median_genes is None else f"; cells detect a median of {median_genes:g} genes"
    if n_kept == 0:
        raise InputError(
            source,
            f"no cells pass QC (min_genes={recipe.min_genes}, max_pct_mito={recipe.max_pct_mito}{detect})",
            "Lower min_genes or raise max_pct_mito, or check that the input holds counts.",
        )
    if n_kept / n_in < 0.5:
        against = "" if median_genes is None else f" against min_genes={recipe.min_genes}"
        warnings.warn(
            f"{source}: QC keeps only {n_kept} of {n_in} cells ({n_kept / n_in:.0%}){detect}{against}. "
            "For sparse data, lower min_genes (e.g. --min-genes 50).",
            stacklevel=3,
        )


def gene_candidates(recipe: Recipe, n_cells: np.ndarray, *, source: str = "input") -> np.ndarray:
    """Genes (mask over input genes) detected in at least ``min_cells`` QC-passing cells (``n_cells``: genes,)."""
    candidates = n_cells >= max(recipe.min_cells, 1)
    if not candidates.any():
        raise InputError(
            source, f"no genes are detected in at least {recipe.min_cells} cells after QC", "Lower min_cells."
        )
    return candidates


def seurat_v3_clip(gene: dict, candidates: np.ndarray, n: int) -> dict:
    """Seurat v3's first step (as scanpy's ``flavor="seurat_v3"``, one batch), from per-gene count sums.

    A loess fit (span 0.3, degree 2) of log10 variance on log10 mean gives
    each candidate gene's expected standard deviation ``reg_std``; counts are
    clipped at ``clip_val = mean + sqrt(n) * reg_std``. ``gene['sum']`` and
    ``gene['sumsq']`` (input genes,) are sums over the ``n`` QC-passing cells.
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


def seurat_v3_select(fit: dict, clipped: dict, n: int, n_genes: int, n_top_genes: int) -> np.ndarray:
    """Seurat v3's ranking: the ``n_top_genes`` candidates with the largest variance of standardised clipped
    counts. ``fit`` is :func:`seurat_v3_clip`'s, ``clipped`` the sums and sums of squares of clipped counts
    (candidates,) over the ``n`` cells; returns a mask over the ``n_genes`` input genes."""
    mean, reg_std = fit["mean"], fit["reg_std"]
    norm_var = (n * mean**2 + clipped["sumsq"] - 2 * clipped["sum"] * mean) / ((n - 1) * reg_std**2)
    rank = np.argsort(np.argsort(-norm_var))  # the ranking scanpy uses
    hvg = np.zeros(n_genes, dtype=bool)
    hvg[fit["cand"][rank < n_top_genes]] = True
    return hvg


def set_genes(recipe: Recipe, hvg: np.ndarray) -> np.ndarray:
    """Record the genes of mask ``hvg`` (input genes,) as the recipe's genes; returns their input columns."""
    idx = np.flatnonzero(hvg)
    recipe.genes = [recipe.input_genes[i] for i in idx]
    return idx


def set_scale(recipe: Recipe, sums: dict, n: int) -> None:
    """Per-gene mean and standard deviation (ddof=1; 1 for constant genes, and for Pearson residuals, which
    are centred only) from sums and sums of squares of log-normalised values or residuals (genes used,) over
    ``n`` cells; the offset is reset to zero."""
    recipe.mean = sums["sum"] / n
    var = (sums["sumsq"] - n * recipe.mean**2) / (n - 1) if n > 1 else np.ones(len(recipe.genes))
    std = np.sqrt(np.maximum(var, 0.0))
    std[(std == 0) | recipe.pearson] = 1.0
    recipe.std = std
    recipe.offset = np.zeros(len(recipe.genes))


def set_stats(recipe: Recipe, counts: dict, gene: dict, candidates: np.ndarray) -> None:
    """Record the counts of fitting: ``counts`` holds ``n_cells_in``, ``n_cells_all_zero`` and ``n_cells_kept``;
    ``gene['n_cells_all']`` (input genes,) the cells detecting each gene before QC."""
    recipe.stats = {
        "n_cells_in": int(counts["n_cells_in"]),
        "n_genes_in": len(recipe.input_genes),
        "n_cells_all_zero": int(counts["n_cells_all_zero"]),
        "n_cells_removed": int(counts["n_cells_in"] - counts["n_cells_kept"]),
        "n_cells_kept": int(counts["n_cells_kept"]),
        "n_genes_all_zero": int((gene["n_cells_all"] == 0).sum()),
        "n_genes_below_min_cells": int((~candidates).sum()),
        "n_genes_used": len(recipe.genes),
        "mito_filter_applied": recipe.max_pct_mito is not None,
    }


def fit_recipe(
    matrix: InMemory | H5adMatrix,
    var_names: pd.Index,
    *,
    input_kind: str = ReadParams.input_kind,
    source: str = "input",
    validate: bool = False,
    chunk_size: int = CHUNK_SIZE,
    client=None,
    **params,
) -> tuple[Recipe, pd.DataFrame]:
    """Fit a :class:`Recipe` with passes over the rows of ``matrix`` (cells x genes), never holding it whole.

    ``params`` are the preprocessing parameters, fields of :class:`rlae_sc.params.PreprocessParams`
    (``min_genes``, ``n_top_genes``, ``clip``, ...); those not given take their defaults.

    Pass 1: per-cell QC and, over cells passing QC, per-gene detection, sums
    and sums of squares. Pass 2 (``seurat_v3`` selection): per-gene sums of
    counts clipped as in Seurat v3 (the same statistics as scanpy's
    ``highly_variable_genes(flavor="seurat_v3")``); with Pearson residuals,
    the sums of squares of the candidate genes' residuals instead (cell
    totals over the candidates, as scanpy's ``flavor="pearson_residuals"``
    after its gene filter). Pass 3: mean and standard deviation of the
    selected genes' log-normalised values (the mean of their residuals, cell
    totals over the selected genes). Pass 4 (``clip``):
    the mean of the clipped scaled values. ``validate`` checks each block's
    values (NaN, negatives, non-integer counts) in pass 1. The ``seurat`` and
    ``cell_ranger`` flavors call scanpy and need ``matrix`` in memory.
    Every pass returns sums over cells, and every decision taken from them is
    a function of its own (:func:`check_qc`, :func:`gene_candidates`,
    :func:`seurat_v3_clip`, :func:`seurat_v3_select`, :func:`set_scale`), which
    the federated coordinator (:mod:`rlae_sc.federated`) calls on sums over sites.
    Returns the recipe and the QC table of all cells (``n_genes``,
    ``total_counts``, ``pct_mito``, ``qc_pass``).
    """
    recipe, mito = new_recipe(var_names, input_kind=input_kind, source=source, **params)
    passes = {"chunk_size": chunk_size, "client": client}
    genes = pd.Index(recipe.input_genes)
    check = {"source": str(source), "input_kind": input_kind, "genes": genes} if validate else None
    gene, cells = run_pass(matrix, partial(_qc_block, recipe=recipe, mito=mito, check=check), desc="QC", **passes)
    keep = cells["qc_pass"]
    qc = pd.DataFrame(cells)
    n = int(keep.sum())
    check_qc(recipe, len(keep), n, float(np.median(qc["n_genes"])), source=source)
    candidates = gene_candidates(recipe, gene["n_cells"], source=source)
    if recipe.target_sum is None and input_kind == "counts" and not recipe.pearson:
        recipe.target_sum = float(np.median(qc["total_counts"].to_numpy()[keep]))
    if recipe.pearson:
        recipe.residual_clip = default_clip(n)
    if candidates.sum() <= recipe.n_top_genes:
        hvg = candidates
    elif recipe.pearson:
        cand = np.flatnonzero(candidates)
        block = partial(_residual_block, keep=keep, cand=cand, gene_sums=gene["sum"][cand], recipe=recipe)
        sums, _ = run_pass(matrix, block, desc="HVG", **passes)
        hvg = np.zeros(len(candidates), dtype=bool)
        hvg[cand[select_genes(residual_variance(sums, n), recipe.n_top_genes)]] = True
    elif recipe.hvg_flavor == "seurat_v3":
        fit = seurat_v3_clip(gene, candidates, n)
        block = partial(_clipped_block, keep=keep, cand=fit["cand"], clip_val=fit["clip_val"])
        clipped, _ = run_pass(matrix, block, desc="HVG", **passes)
        hvg = seurat_v3_select(fit, clipped, n, len(candidates), recipe.n_top_genes)
    elif isinstance(matrix, InMemory):
        hvg = _scanpy_hvg(recipe, sp.csr_matrix(matrix.array)[keep], candidates)
    else:
        raise InputError(
            source,
            f"hvg_flavor {recipe.hvg_flavor!r} needs the matrix in memory",
            "Use hvg_flavor: seurat_v3 with counts input for streaming, or turn streaming off.",
        )
    idx = set_genes(recipe, hvg)
    if recipe.pearson:
        recipe.gene_sums = gene["sum"][idx]
        block = partial(_residual_block, keep=keep, cand=idx, gene_sums=recipe.gene_sums, recipe=recipe)
    else:
        block = partial(_lognorm_block, recipe=recipe, keep=keep, idx=idx)
    sums, _ = run_pass(matrix, block, desc="gene means", **passes)
    set_scale(recipe, sums, n)
    if recipe.clip is not None:
        sums, _ = run_pass(matrix, partial(_offset_block, recipe=recipe, keep=keep, idx=idx), desc="clip", **passes)
        recipe.offset = sums["sum"] / n
    counts = {"n_cells_in": len(keep), "n_cells_all_zero": (qc["total_counts"] == 0).sum(), "n_cells_kept": n}
    set_stats(recipe, counts, gene, candidates)
    return recipe, qc


def preprocess(
    adata: ad.AnnData,
    *,
    input_kind: str = ReadParams.input_kind,
    source: str = "input",
    scale: bool = True,
    **params,
) -> tuple[ad.AnnData, Recipe]:
    """Fit a :class:`Recipe` on ``adata`` (cells x genes, in memory; see :func:`fit_recipe`) and apply it.

    ``params`` are the preprocessing parameters, fields of :class:`rlae_sc.params.PreprocessParams`.

    ``scale``: store the trained matrix itself in ``X`` (dense); ``False``
    stores the log-normalised values of the genes used (CSR, about a fifth of
    the size), or their counts for Pearson residuals, from which
    :func:`trained_rows` scales each block of rows on the fly, as the
    preprocessed file does.

    Returns
    -------
    pre
        Cells kept by QC x genes used: ``X`` is the centred, scaled float32
        matrix the autoencoder trains on (``scale``) or the log-normalised
        values (counts) it is computed from (``uns['rlae_preprocess']['X']``
        says which); ``raw`` holds the log-normalised values of all input
        genes (their counts for Pearson residuals); ``obs`` the
        QC metrics; ``var`` the per-gene ``mean`` and ``std``;
        ``uns['rlae_preprocess']`` the counts.
    recipe
        The fitted recipe (see :meth:`Recipe.to_dict`).
    """
    X = sp.csr_matrix(adata.X)
    recipe, qc = fit_recipe(InMemory(X), adata.var_names, input_kind=input_kind, source=source, **params)
    pre, keep = preprocessed_adata(recipe, adata.obs, qc, stored=SCALED if scale else recipe.stored)
    L = recipe._normalize(X[keep])
    idx = recipe.gene_index(recipe.input_genes)
    pre.X = recipe._scale(L, idx) if scale else L[:, idx]
    pre.raw = ad.AnnData(X=L, obs=pre.obs[[]], var=pd.DataFrame(index=adata.var_names))
    return pre, recipe


def preprocessed_adata(
    recipe: Recipe, obs: pd.DataFrame, qc: pd.DataFrame, *, stored: str
) -> tuple[ad.AnnData, np.ndarray]:
    """The cells passing QC x genes used, without a matrix, and the mask of those cells.

    ``obs`` is the input's (all cells) and ``qc`` the table of :func:`fit_recipe`;
    the result's ``obs`` holds both for the kept cells, ``var`` the per-gene
    ``mean`` and ``std``, ``uns['rlae_recipe']`` the recipe as JSON (replayed by
    the stages after and by :meth:`Recipe.from_dict`), ``uns['rlae_preprocess']``
    the recipe's counts and, under ``"X"``, what ``X`` will hold: ``stored``
    (:data:`SCALED`, :data:`LOG_NORMALIZED` or :data:`COUNTS`).
    """
    keep = qc["qc_pass"].to_numpy()
    qc = qc.drop(columns="qc_pass").set_axis(obs.index)
    pre = ad.AnnData(
        obs=pd.concat([obs[keep], qc[keep]], axis=1),
        var=pd.DataFrame({"mean": recipe.mean, "std": recipe.std}, index=pd.Index(recipe.genes)),
        uns={"rlae_preprocess": {**recipe.stats, "X": stored}, "rlae_recipe": json.dumps(recipe.to_dict())},
    )
    return pre, keep


def _qc_block(block: sp.csr_matrix, start: int, *, recipe: Recipe, mito: np.ndarray, check: dict | None):
    """Pass 1: per-cell QC; per-gene detection (all cells) and count sums (cells passing QC)."""
    X = sp.csr_matrix(block)
    if check is not None:
        validate_matrix(
            X,
            source=check["source"],
            input_kind=check["input_kind"],
            names=(pd.RangeIndex(start, start + X.shape[0]), check["genes"]),
        )
    n_genes, total, pct = cell_qc(X, mito)
    keep = recipe._keep(n_genes, total, pct)
    K = X[keep]
    m = X.shape[1]
    sums = {
        "n_cells_all": np.bincount(X.indices, minlength=m),
        "n_cells": np.bincount(K.indices, minlength=m),
        "sum": np.bincount(K.indices, weights=K.data.astype(np.float64), minlength=m),
        "sumsq": np.bincount(K.indices, weights=np.square(K.data, dtype=np.float64), minlength=m),
    }
    return sums, {"n_genes": n_genes, "total_counts": total, "pct_mito": pct, "qc_pass": keep}


def _clipped_block(block, start: int, *, keep: np.ndarray, cand: np.ndarray, clip_val: np.ndarray):
    """Pass 2: sums and sums of squares of clipped counts of the candidate genes over cells passing QC."""
    X = _kept_rows(block, start, keep)[:, cand]
    data = np.minimum(X.data.astype(np.float64), clip_val[X.indices])
    m = len(cand)
    return {
        "sum": np.bincount(X.indices, weights=data, minlength=m),
        "sumsq": np.bincount(X.indices, weights=data**2, minlength=m),
    }, {}


def _residual_block(block, start: int, *, keep: np.ndarray, cand: np.ndarray, gene_sums: np.ndarray, recipe: Recipe):
    """Passes 2 and 3 with Pearson residuals: sums and sums of squares of the residuals of genes ``cand``
    (their count totals ``gene_sums``; cell totals over them) over cells passing QC."""
    X = _kept_rows(block, start, keep)[:, cand]
    return residual_sums(X, gene_sums=gene_sums, theta=recipe.theta, clip=recipe.residual_clip), {}


def _kept_rows(block, start: int, keep: np.ndarray) -> sp.csr_matrix:
    """The rows of a block (starting at row ``start``) of cells that pass QC (``keep`` over all cells), as CSR."""
    return sp.csr_matrix(block)[keep[start : start + block.shape[0]]]


def _scanpy_hvg(recipe: Recipe, counts: sp.csr_matrix, candidates: np.ndarray) -> np.ndarray:
    """scanpy's ``seurat`` or ``cell_ranger`` selection on the log-normalised candidate genes."""
    import scanpy as sc  # here: importing rlae_sc (and `rlae-sc --help`) does not load scanpy

    cand = np.flatnonzero(candidates)
    sub = ad.AnnData(X=recipe._normalize(counts)[:, cand])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = sc.pp.highly_variable_genes(
            sub, flavor=recipe.hvg_flavor, n_top_genes=recipe.n_top_genes, inplace=False
        )
    mask = np.zeros(len(candidates), dtype=bool)
    mask[cand[np.asarray(table["highly_variable"], dtype=bool)]] = True
    return mask


def _lognorm_block(block, start: int, *, recipe: Recipe, keep: np.ndarray, idx: np.ndarray):
    """Pass 3: sums and sums of squares of the selected genes' log-normalised values over cells passing QC."""
    L = recipe._normalize(_kept_rows(block, start, keep))[:, idx]
    data = L.data.astype(np.float64)
    return {
        "sum": np.bincount(L.indices, weights=data, minlength=len(idx)),
        "sumsq": np.bincount(L.indices, weights=data**2, minlength=len(idx)),
    }, {}


def _offset_block(block, start: int, *, recipe: Recipe, keep: np.ndarray, idx: np.ndarray):
    """Pass 4: sums of the clipped scaled values over cells passing QC (``recipe.offset`` still zero)."""
    L = recipe._normalize(_kept_rows(block, start, keep))
    return {"sum": recipe._scale(L, idx, dtype=np.float64).sum(axis=0)}, {}


def lognorm_rows_block(block, start: int, *, recipe: Recipe, keep: np.ndarray, idx: np.ndarray):
    """The log-normalised values of the genes used (cells passing QC) of a block of counts, as the
    ``data``, ``indices`` and per-row ``nnz`` of CSR rows (float32, int32, int64)."""
    L = recipe._normalize(_kept_rows(block, start, keep))[:, idx]
    L.sort_indices()
    return {}, {"data": L.data, "indices": L.indices.astype(np.int32), "nnz": np.diff(L.indptr).astype(np.int64)}


SCALED = "scaled"  # X holds the trained matrix
LOG_NORMALIZED = "log_normalized"  # X holds log-normalised values of the genes used; the recipe scales them
COUNTS = "counts"  # X holds counts of the genes used; the recipe computes their Pearson residuals and centres them


@dataclass(frozen=True)
class ScaledRows:
    """Rows of the trained matrix (float32, cells x genes used), scaled block by block by ``recipe``
    (centring, scaling, clipping) from ``rows`` of log-normalised values of the recipe's genes (or their
    Pearson residuals, computed in float64, from rows of counts),
    computed in float32 (about six times faster than in float64 at 2,000 genes; the values differ from
    float64's rounded to float32 by about 1e-7 relative).

    Reads like :class:`~rlae_sc.chunks.InMemory` and :class:`~rlae_sc.chunks.H5adMatrix`
    (and is picklable, for Dask); memory is one dense block.
    """

    rows: InMemory | H5adMatrix
    recipe: Recipe

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.shape

    def read(self, start: int, stop: int) -> np.ndarray:
        block = sp.csr_matrix(self.rows.read(start, stop))
        return self.recipe._scale(block, np.arange(self.shape[1]), compute=np.float32)

    def fingerprint(self) -> str:
        return f"scaled {self.rows.fingerprint()}"


def trained_rows(pre: ad.AnnData) -> InMemory | H5adMatrix | ScaledRows:
    """The rows of the matrix the autoencoder trains on, for passes over a preprocessed AnnData (in memory
    or backed): ``X`` itself, or ``X`` scaled on the fly when it holds log-normalised values or counts."""
    rows = matrix_of(pre)
    if pre.uns["rlae_preprocess"].get("X") in (LOG_NORMALIZED, COUNTS):
        return ScaledRows(rows, Recipe.from_dict(json.loads(pre.uns["rlae_recipe"])))
    return rows
