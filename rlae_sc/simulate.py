"""Synthetic count data with known cell types and a known low-rank structure."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def synthetic_counts(
    *,
    n_cells: int = 2000,
    n_genes: int = 1500,
    n_types: int = 6,
    rank: int = 8,
    n_mito: int = 13,
    seed: int = 0,
    cell_seed: int | None = None,
) -> ad.AnnData:
    """Poisson counts whose log-rates are a gene baseline plus a rank-``rank`` term.

    Each cell type has a centre in a ``rank``-dimensional latent space; a
    cell's latent position is its type's centre plus noise; each gene loads
    on two latent factors. Counts are Poisson with a log-normal library size
    (their means: :func:`synthetic_rates`). The last ``n_mito`` genes are
    named ``MT-...`` so mitochondrial QC applies.
    ``seed`` fixes the structure (type centres, loadings, baselines);
    ``cell_seed`` (default: ``seed``) draws the cells, so two calls with the
    same ``seed`` and different ``cell_seed`` are two batches of the same tissue.

    Returns
    -------
    AnnData (n_cells x n_genes): integer counts in ``X`` (CSR float32),
    ``obs['cell_type']``, the true loadings in ``varm['true_loadings']``
    (n_genes x rank) and the parameters in ``uns['simulation']``.
    """
    cell_seed = seed if cell_seed is None else cell_seed
    shape = {"n_cells": n_cells, "n_genes": n_genes, "n_types": n_types, "rank": rank}
    rng, types, rate, loadings = _draw(**shape, seed=seed, cell_seed=cell_seed)
    counts = rng.poisson(rate).astype(np.float32)
    names = [f"Gene{g:05d}" for g in range(n_genes - n_mito)] + [f"MT-G{g:02d}" for g in range(n_mito)]
    adata = ad.AnnData(
        X=sp.csr_matrix(counts),
        obs=pd.DataFrame(
            {"cell_type": pd.Categorical([f"type_{t + 1}" for t in types])},
            index=[f"cell{c:05d}" for c in range(n_cells)],
        ),
        var=pd.DataFrame(index=names),
    )
    adata.varm["true_loadings"] = loadings
    adata.uns["simulation"] = {**shape, "seed": seed, "cell_seed": cell_seed, "model": "poisson log-linear"}
    return adata


def synthetic_rates(adata: ad.AnnData) -> np.ndarray:
    """The Poisson means the counts of ``adata`` were drawn from.

    Parameters
    ----------
    adata
        A result of :func:`synthetic_counts`, all its cells and genes; the means are recomputed from the
        parameters it records in ``uns['simulation']``.

    Returns
    -------
    ``library_size * exp(baseline + latent @ loadings.T)``, float64 (n_cells x n_genes), counts per cell.
    """
    sim = adata.uns["simulation"]
    if (sim["n_cells"], sim["n_genes"]) != adata.shape:
        raise ValueError(
            f"the simulation drew {sim['n_cells']} x {sim['n_genes']} counts, this AnnData holds "
            f"{adata.n_obs} x {adata.n_vars}: give synthetic_rates the AnnData synthetic_counts returned"
        )
    keys = ("n_cells", "n_genes", "n_types", "rank", "seed", "cell_seed")
    return _draw(**{key: int(sim[key]) for key in keys})[2]


def _structure(*, n_genes: int, n_types: int, rank: int, seed: int):
    """The tissue's structure: type centres (n_types x rank), loadings (n_genes x rank), log baselines (n_genes,)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.2, size=(n_types, rank))
    loadings = np.zeros((n_genes, rank))
    for g in range(n_genes):
        loadings[g, rng.choice(rank, size=2, replace=False)] = rng.normal(0, 0.5, size=2)
    baseline = rng.normal(-1.0, 1.0, size=n_genes)
    return centres, loadings, baseline


def _draw(*, n_cells: int, n_genes: int, n_types: int, rank: int, seed: int, cell_seed: int):
    """The tissue's structure and its cells: (the cells' generator, left where the counts are drawn from it,
    cell types (n_cells,), Poisson means (n_cells x n_genes), loadings (n_genes x rank))."""
    centres, loadings, baseline = _structure(n_genes=n_genes, n_types=n_types, rank=rank, seed=seed)
    rng = np.random.default_rng([seed, cell_seed])
    types = rng.integers(0, n_types, size=n_cells)
    z = centres[types] + rng.normal(0, 0.35, size=(n_cells, rank))
    library = rng.lognormal(0, 0.3, size=n_cells)
    return rng, types, library[:, None] * np.exp(baseline + z @ loadings.T), loadings


def batch_confounded(
    *,
    n_cells: int = 6000,
    n_genes: int = 1500,
    n_types: int = 6,
    rank: int = 8,
    n_batches: int = 3,
    shift: float = 0.5,
    n_mito: int = 13,
    seed: int = 0,
    batch_effect: bool = True,
) -> ad.AnnData:
    """Poisson counts of one tissue measured in ``n_batches`` batches that hold its cell types in unequal shares.

    The tissue is :func:`synthetic_counts`'s (type centres, loadings and baselines from ``seed``). Batch
    ``b`` holds type ``t`` with share ``s_bt`` from a Dirichlet law (concentration 0.7, so shares differ
    several-fold between batches and a type can be nearly absent from one), and shifts every gene's
    log-rate by its own ``delta_bg ~ N(0, shift^2)`` and every cell's library size by a factor
    ``exp(N(0, 0.3^2))`` per batch. ``batch_effect=False`` draws the same cells (types, latent positions,
    libraries, Poisson noise) without the shifts: the batch-free truth to compare an integration against.

    Returns
    -------
    AnnData (n_cells x n_genes): counts in ``X`` (CSR float32), ``obs['cell_type']``, ``obs['batch']``
    (``batch_1``...), the true loadings in ``varm['true_loadings']`` and the parameters in ``uns['simulation']``.
    """
    centres, loadings, baseline = _structure(n_genes=n_genes, n_types=n_types, rank=rank, seed=seed)
    rng = np.random.default_rng([seed, 1])
    shares = rng.dirichlet(np.full(n_types, 0.7), size=n_batches)
    delta = rng.normal(0, shift, size=(n_batches, n_genes)) * batch_effect
    depth = rng.normal(0, 0.3, size=n_batches) * batch_effect
    batch = np.sort(rng.integers(0, n_batches, size=n_cells))
    types = np.array([rng.choice(n_types, p=shares[b]) for b in batch])
    z = centres[types] + rng.normal(0, 0.35, size=(n_cells, rank))
    library = rng.lognormal(0, 0.3, size=n_cells) * np.exp(depth[batch])
    rate = library[:, None] * np.exp(baseline + z @ loadings.T + delta[batch])
    counts = rng.poisson(rate).astype(np.float32)
    names = [f"Gene{g:05d}" for g in range(n_genes - n_mito)] + [f"MT-G{g:02d}" for g in range(n_mito)]
    adata = ad.AnnData(
        X=sp.csr_matrix(counts),
        obs=pd.DataFrame(
            {
                "cell_type": pd.Categorical([f"type_{t + 1}" for t in types]),
                "batch": pd.Categorical([f"batch_{b + 1}" for b in batch]),
            },
            index=[f"cell{c:05d}" for c in range(n_cells)],
        ),
        var=pd.DataFrame(index=names),
    )
    adata.varm["true_loadings"] = loadings
    adata.uns["simulation"] = {
        "n_cells": n_cells,
        "n_genes": n_genes,
        "n_types": n_types,
        "rank": rank,
        "n_batches": n_batches,
        "shift": shift,
        "seed": seed,
        "batch_effect": batch_effect,
        "shares": shares.tolist(),
        "model": "poisson log-linear with per-batch gene shifts",
    }
    return adata


BUNDLED = ("synthetic", "synthetic_query", "pbmc68k_reduced")


def bundled(name: str, *, seed: int = 0) -> ad.AnnData:
    """Demo datasets that need no download: ``"synthetic"``, ``"synthetic_query"`` or ``"pbmc68k_reduced"``.

    ``synthetic_query`` is a second batch of 1,000 cells from the same
    synthetic tissue, for the mapping demo.

    ``pbmc68k_reduced`` ships with scanpy (700 cells x 765 genes); its
    log-normalised values (``raw``) are returned in ``X``, with the labels in
    ``obs['bulk_labels']``. Declare it ``input_kind: log_normalized``.
    """
    if name == "synthetic":
        return synthetic_counts(seed=seed)
    if name == "synthetic_query":
        q = synthetic_counts(seed=seed, cell_seed=seed + 1, n_cells=1000)
        q.obs_names = [f"query_{c}" for c in q.obs_names]
        return q
    if name == "pbmc68k_reduced":
        import scanpy as sc

        src = sc.datasets.pbmc68k_reduced()
        return ad.AnnData(
            X=sp.csr_matrix(src.raw.X, dtype=np.float32),
            obs=src.obs[["bulk_labels"]].copy(),
            var=pd.DataFrame(index=src.raw.var_names),
        )
    raise ValueError(f"unknown bundled dataset {name!r}; choose one of {', '.join(BUNDLED)}")
