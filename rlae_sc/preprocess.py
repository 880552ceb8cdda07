"""Preprocessing as a replayable recipe: QC, normalisation, log1p, HVG selection, scaling.

:func:`preprocess` fits a :class:`Recipe` on a reference and returns the
matrix the autoencoder trains on; :meth:`Recipe.transform` replays the same
steps on any cells (new experiments included) without refitting anything.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

from rlae_sc.errors import InputError

HVG_FLAVORS = ("seurat_v3", "seurat", "cell_ranger")
MITO_PREFIXES = ("MT-", "mt-")


@dataclass
class Recipe:
    """Every parameter and fitted statistic needed to replay preprocessing.

    Attributes
    ----------
    input_kind
        ``"counts"`` or ``"log_normalized"`` (normalisation and log1p skipped).
    min_genes, min_cells, max_pct_mito
        QC thresholds: genes detected per cell, cells detecting a gene, and the
        largest percentage of counts from mitochondrial genes (``None``: off).
    target_sum
        Counts per cell after normalisation (the median of the reference's
        totals when not given). A cell's total is taken over all its genes.
    n_top_genes, hvg_flavor
        Highly variable gene selection; all QC-passing genes are used when
        there are no more than ``n_top_genes`` of them.
    clip
        Clip scaled values to ``[-clip, clip]`` (``None``: no clipping); the
        columns are re-centred afterwards so the trained matrix stays centred.
    input_genes
        Gene names of the reference input, in order.
    genes
        Genes used, in input order (length m).
    mean, std
        Per-gene mean and standard deviation (ddof=1) of log-normalised values
        over reference cells (m,); ``std`` is 1 where a gene is constant.
    offset
        Per-gene mean subtracted after clipping (m,), zeros without clipping.
    stats
        Counts from fitting: cells and genes in, removed by each filter, kept.
    """

    input_kind: str = "counts"
    min_genes: int = 200
    min_cells: int = 3
    max_pct_mito: float | None = 20.0
    target_sum: float | None = None
    n_top_genes: int = 2000
    hvg_flavor: str = "seurat_v3"
    clip: float | None = None
    input_genes: list[str] = field(default_factory=list)
    genes: list[str] = field(default_factory=list)
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    std: np.ndarray = field(default_factory=lambda: np.zeros(0))
    offset: np.ndarray = field(default_factory=lambda: np.zeros(0))
    stats: dict = field(default_factory=dict)

    # -- replay -----------------------------------------------------------------

    def qc_metrics(self, adata: ad.AnnData) -> pd.DataFrame:
        """Per-cell ``n_genes``, ``total_counts`` and ``pct_mito`` (NaN when no mito genes are named)."""
        X = sp.csr_matrix(adata.X)
        mito = _mito_mask(adata.var_names)
        total = np.asarray(X.sum(axis=1)).ravel()
        if mito.any():
            pct = 100 * np.asarray(X[:, mito].sum(axis=1)).ravel() / np.where(total > 0, total, 1.0)
        else:
            pct = np.full(len(total), np.nan)
        return pd.DataFrame(
            {"n_genes": np.diff(X.indptr), "total_counts": total, "pct_mito": pct}, index=adata.obs_names
        )

    def qc_pass(self, adata: ad.AnnData) -> np.ndarray:
        """Boolean mask (n_cells,) of cells that pass the recipe's cell filters."""
        qc = self.qc_metrics(adata)
        keep = (qc["n_genes"].to_numpy() >= max(self.min_genes, 1)) & (qc["total_counts"].to_numpy() > 0)
        if self.max_pct_mito is not None and qc["pct_mito"].notna().all():
            keep &= qc["pct_mito"].to_numpy() <= self.max_pct_mito
        return keep

    def normalize(self, adata: ad.AnnData) -> sp.csr_matrix:
        """Log-normalised values of all of ``adata``'s genes (CSR, float32, cells x genes)."""
        X = sp.csr_matrix(adata.X, dtype=np.float64)
        if self.input_kind == "log_normalized":
            return X.astype(np.float32)
        total = np.asarray(X.sum(axis=1)).ravel()
        total[total == 0] = 1.0
        X = sp.diags(self.target_sum / total) @ X
        X.data = np.log1p(X.data)
        return sp.csr_matrix(X, dtype=np.float32)

    def transform(self, adata: ad.AnnData, *, min_overlap: float = 0.5, source: str = "query") -> np.ndarray:
        """Replay the recipe on ``adata`` (any cells, any gene order) -> float32 (n_cells x m).

        Genes are matched by name; genes of the recipe missing from ``adata``
        count as zero expression (a warning gives the overlap). Fewer than
        ``min_overlap`` of the recipe's genes present is an :class:`InputError`.
        No cell is dropped: use :meth:`qc_pass` to flag cells QC would remove.
        """
        idx = pd.Index(adata.var_names).get_indexer(self.genes)
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
                stacklevel=2,
            )
        return self._scale(self.normalize(adata), idx)

    def _scale(self, L: sp.csr_matrix, idx: np.ndarray) -> np.ndarray:
        """Centre, scale and clip log-normalised values ``L``; ``idx[j]`` is the column of recipe gene j
        in ``L`` (-1: missing, taken as zero). Returns float32 (n_cells x m)."""
        present = idx >= 0
        Z = np.zeros((L.shape[0], len(self.genes)), dtype=np.float64)
        Z[:, present] = L[:, idx[present]].toarray()
        Z = (Z - self.mean) / self.std
        if self.clip is not None:
            np.clip(Z, -self.clip, self.clip, out=Z)
        Z -= self.offset
        return Z.astype(np.float32)

    # -- serialisation ------------------------------------------------------------

    def to_dict(self) -> dict:
        """A JSON-ready dict; arrays become lists of floats (exact round trip)."""
        d = asdict(self)
        for key in ("mean", "std", "offset"):
            d[key] = np.asarray(d[key], dtype=np.float64).tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        for key in ("mean", "std", "offset"):
            d[key] = np.asarray(d[key], dtype=np.float64)
        return cls(**d)


def _mito_mask(var_names: pd.Index) -> np.ndarray:
    return np.asarray(pd.Index(var_names).str.startswith(MITO_PREFIXES), dtype=bool)


def preprocess(
    adata: ad.AnnData,
    *,
    input_kind: str = "counts",
    min_genes: int = 200,
    min_cells: int = 3,
    max_pct_mito: float | None = 20.0,
    target_sum: float | None = None,
    n_top_genes: int = 2000,
    hvg_flavor: str = "seurat_v3",
    clip: float | None = None,
    source: str = "input",
) -> tuple[ad.AnnData, Recipe]:
    """Fit a :class:`Recipe` on ``adata`` (cells x genes) and apply it.

    Returns
    -------
    pre
        Cells kept by QC x genes used: ``X`` is the centred, scaled float32
        matrix the autoencoder trains on; ``raw`` holds the log-normalised
        values of all input genes; ``obs`` the QC metrics; ``var`` the
        per-gene ``mean`` and ``std``; ``uns['rlae_preprocess']`` the counts.
    recipe
        The fitted recipe (see :meth:`Recipe.to_dict`).
    """
    if hvg_flavor not in HVG_FLAVORS:
        raise InputError(source, f"unknown hvg_flavor {hvg_flavor!r}", f"Use one of {', '.join(HVG_FLAVORS)}.")
    if input_kind == "log_normalized" and hvg_flavor == "seurat_v3":
        hvg_flavor = "seurat"  # seurat_v3 models raw counts; on log data scanpy's 'seurat' flavor applies
    recipe = Recipe(
        input_kind=input_kind,
        min_genes=min_genes,
        min_cells=min_cells,
        max_pct_mito=max_pct_mito,
        target_sum=target_sum,
        n_top_genes=n_top_genes,
        hvg_flavor=hvg_flavor,
        clip=clip,
        input_genes=list(map(str, adata.var_names)),
    )
    qc = recipe.qc_metrics(adata)
    keep_cells = recipe.qc_pass(adata)
    mito_on = max_pct_mito is not None and qc["pct_mito"].notna().all()
    if recipe.max_pct_mito is not None and not mito_on:
        recipe.max_pct_mito = None  # no gene names start with MT-/mt-: nothing to filter on
    median_genes = float(qc["n_genes"].median())
    if not keep_cells.any():
        raise InputError(
            source,
            f"no cells pass QC (min_genes={min_genes}, max_pct_mito={max_pct_mito}; cells "
            f"detect a median of {median_genes:g} genes)",
            "Lower min_genes or raise max_pct_mito, or check that the input holds counts.",
        )
    if keep_cells.mean() < 0.5:
        warnings.warn(
            f"{source}: QC keeps only {int(keep_cells.sum())} of {adata.n_obs} cells ({keep_cells.mean():.0%}); "
            f"cells detect a median of {median_genes:g} genes against min_genes={min_genes}. For sparse data, "
            "lower min_genes (e.g. --min-genes 50).",
            stacklevel=2,
        )
    cells = adata[keep_cells]
    X = sp.csr_matrix(cells.X)
    n_cells_per_gene = np.diff(X.tocsc().indptr)
    keep_genes = n_cells_per_gene >= max(min_cells, 1)
    if not keep_genes.any():
        raise InputError(source, f"no genes are detected in at least {min_cells} cells after QC", "Lower min_cells.")
    if recipe.target_sum is None and input_kind == "counts":
        recipe.target_sum = float(np.median(np.asarray(X.sum(axis=1)).ravel()))
    L = recipe.normalize(cells)
    hvg = _select_genes(cells, L, keep_genes, recipe)
    recipe.genes = [recipe.input_genes[i] for i in np.flatnonzero(hvg)]
    Lg = L[:, hvg].toarray().astype(np.float64)
    recipe.mean = Lg.mean(axis=0)
    std = Lg.std(axis=0, ddof=1) if Lg.shape[0] > 1 else np.ones(Lg.shape[1])
    std[std == 0] = 1.0
    recipe.std = std
    recipe.offset = np.zeros(len(recipe.genes))
    if clip is not None:
        Z = np.clip((Lg - recipe.mean) / recipe.std, -clip, clip)
        recipe.offset = Z.mean(axis=0)
    recipe.stats = {
        "n_cells_in": int(adata.n_obs),
        "n_genes_in": int(adata.n_vars),
        "n_cells_all_zero": int((qc["total_counts"] == 0).sum()),
        "n_cells_removed": int((~keep_cells).sum()),
        "n_cells_kept": int(keep_cells.sum()),
        "n_genes_all_zero": int((np.diff(sp.csc_matrix(adata.X).indptr) == 0).sum()),
        "n_genes_below_min_cells": int((~keep_genes).sum()),
        "n_genes_used": len(recipe.genes),
        "mito_filter_applied": bool(mito_on),
    }
    Z = recipe._scale(L, np.flatnonzero(hvg))  # the same steps as Recipe.transform, on L already normalised
    pre = ad.AnnData(
        X=Z,
        obs=pd.concat([cells.obs, qc[keep_cells]], axis=1),
        var=pd.DataFrame({"mean": recipe.mean, "std": recipe.std}, index=pd.Index(recipe.genes)),
    )
    pre.raw = ad.AnnData(X=L, obs=pre.obs[[]], var=pd.DataFrame(index=cells.var_names))
    pre.uns["rlae_preprocess"] = recipe.stats
    return pre, recipe


def _select_genes(cells: ad.AnnData, L: sp.csr_matrix, candidates: np.ndarray, recipe: Recipe) -> np.ndarray:
    """Boolean mask over input genes: the ``n_top_genes`` most variable among ``candidates``."""
    if candidates.sum() <= recipe.n_top_genes:
        return candidates
    cand = np.flatnonzero(candidates)
    if recipe.hvg_flavor == "seurat_v3":
        sub = ad.AnnData(X=sp.csr_matrix(cells.X)[:, cand])
    else:
        sub = ad.AnnData(X=L[:, cand])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = sc.pp.highly_variable_genes(
            sub, flavor=recipe.hvg_flavor, n_top_genes=recipe.n_top_genes, inplace=False
        )
    mask = np.zeros(len(candidates), dtype=bool)
    mask[cand[np.asarray(table["highly_variable"], dtype=bool)]] = True
    return mask
