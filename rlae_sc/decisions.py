"""The recipe's decisions taken from sums over cells, shared by the pooled and the federated fit.

A recipe is fitted by passes whose per-block sums (:mod:`rlae_sc.blocks`) add up over blocks, or over
sites; every decision taken from those sums is a function here, called by the pooled
:func:`rlae_sc.preprocess.fit_recipe` on its own sums and by the federated coordinator
(:class:`rlae_sc.federated.plan.Plan`) on the sums over sites, so both take the same decisions
from the same numbers. :func:`new_recipe` starts every fit.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from rlae_sc.errors import InputError
from rlae_sc.params import PreprocessParams, ReadParams
from rlae_sc.recipe import Recipe, mito_mask


def new_recipe(
    var_names: pd.Index,
    *,
    input_kind: str = ReadParams.input_kind,
    source: str = "input",
    steps: PreprocessParams | None = None,
    **params,
) -> tuple[Recipe, np.ndarray]:
    """An unfitted :class:`Recipe` for input genes ``var_names`` and the mito mask (genes,).

    ``steps`` are the preprocessing parameters, built once by the caller; without them, ``params`` are fields of
    :class:`rlae_sc.params.PreprocessParams` (checked; the others take their defaults). ``seurat_v3`` becomes
    ``seurat`` for log-normalised input, the flavor is ``pearson_residuals`` with that normalisation (counts
    input only); the mito filter is off when no gene name starts with ``MT-``/``mt-``.
    """
    ReadParams.of(input_kind=input_kind, source=source)
    p = steps if steps is not None else PreprocessParams.of(params, source=source)
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
        if p.batch_key is not None:
            raise InputError(
                source,
                "batch_key is not available with normalization pearson_residuals",
                "Use normalization: log1p with batch_key, or leave batch_key unset.",
            )
    var_names = pd.Index(var_names).astype(str)
    mito = mito_mask(var_names)
    recipe = Recipe(
        input_kind=input_kind,
        qc=p.qc,
        n_mads=p.n_mads,
        min_genes=p.min_genes,
        min_cells=p.min_cells,
        max_pct_mito=p.max_pct_mito if mito.any() else None,  # no gene names start with MT-/mt-: nothing to filter
        target_sum=p.target_sum,
        normalization=p.normalization,
        n_top_genes=p.n_top_genes,
        hvg_flavor=hvg_flavor,
        clip=p.clip,
        input_genes=list(var_names),
        batch_key=p.batch_key,
        batch_centering=p.batch_centering,
        batch_scale=p.batch_scale,
        keep_key=p.keep_key,
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
            "For sparse data, take thresholds from the data (--qc mad) or lower min_genes (e.g. --min-genes 50).",
            stacklevel=3,
        )


def mad_thresholds(recipe: Recipe, n_genes: np.ndarray, total: np.ndarray, pct_mito: np.ndarray) -> None:
    """Set the recipe's cell thresholds from the data (``qc: mad``): a cell is an outlier below the median minus
    ``n_mads`` median absolute deviations of log1p(genes detected) or of log1p(total counts), or above the
    median plus ``n_mads`` of the mitochondrial share (percent; capped by the given ``max_pct_mito``), each
    over all cells (cells,). Sets ``min_genes``, ``min_counts`` and ``max_pct_mito``."""

    def lower(values: np.ndarray) -> float:
        x = np.log1p(values.astype(np.float64))
        centre = np.median(x)
        return float(np.expm1(centre - recipe.n_mads * np.median(np.abs(x - centre))))

    recipe.min_genes = max(int(np.ceil(lower(n_genes))), 1)
    recipe.min_counts = max(lower(total), 0.0)
    if recipe.max_pct_mito is not None and not np.isnan(pct_mito).all():
        centre = float(np.nanmedian(pct_mito))
        upper = centre + recipe.n_mads * float(np.nanmedian(np.abs(pct_mito - centre)))
        recipe.max_pct_mito = min(recipe.max_pct_mito, upper)


def gene_candidates(recipe: Recipe, n_cells: np.ndarray, *, source: str = "input") -> np.ndarray:
    """Genes (mask over input genes) detected in at least ``min_cells`` QC-passing cells (``n_cells``: genes,)."""
    candidates = n_cells >= max(recipe.min_cells, 1)
    if not candidates.any():
        raise InputError(
            source, f"no genes are detected in at least {recipe.min_cells} cells after QC", "Lower min_cells."
        )
    return candidates


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
    ``gene['n_cells_all']`` and ``gene['n_cells']`` (input genes,) the cells detecting each gene before QC and
    among the cells kept. ``n_values``: the stored values of the preprocessed matrix (cells kept x genes used)."""
    recipe.stats = {
        "n_cells_in": int(counts["n_cells_in"]),
        "n_genes_in": len(recipe.input_genes),
        "n_cells_all_zero": int(counts["n_cells_all_zero"]),
        "n_cells_removed": int(counts["n_cells_in"] - counts["n_cells_kept"]),
        "n_cells_kept": int(counts["n_cells_kept"]),
        "n_genes_all_zero": int((gene["n_cells_all"] == 0).sum()),
        "n_genes_below_min_cells": int((~candidates).sum()),
        "n_genes_used": len(recipe.genes),
        "n_values": int(gene["n_cells"][np.isin(recipe.input_genes, recipe.genes)].sum()),
        "mito_filter_applied": recipe.max_pct_mito is not None,
    }
