"""Neighbours, Leiden clusters and UMAP on the LAE embedding; agreement with known labels."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from rlae_sc.errors import InputError
from rlae_sc.model import EMBEDDING_KEY

MISSING_LABELS = ("", "?", "nan", "NaN", "unknown", "Unknown", "NA")


def labelled_mask(values: pd.Series) -> np.ndarray:
    """True where a label is present: not NaN and not one of ``MISSING_LABELS``."""
    return values.notna().to_numpy() & ~values.astype(str).isin(MISSING_LABELS).to_numpy()


def cluster(
    adata: ad.AnnData,
    *,
    n_neighbors: int = 15,
    n_dims: int | None = None,
    resolution: float = 0.3,
    label_key: str | None = None,
    seed: int = 0,
    source: str = "input",
) -> dict:
    """kNN graph on ``obsm['X_rlae']``, Leiden and UMAP, in place.

    Uses exact neighbours (scikit-learn) on the first ``n_dims`` components
    (all when ``None``) and fills ``obsp['distances'|'connectivities']``,
    ``obs['leiden']`` and ``obsm['X_umap']``; the call's parameters go to
    ``uns['rlae_cluster']``. With ``label_key``, returns ``ari`` and ``nmi``
    between Leiden clusters and the labels, over cells with a label (values
    in ``MISSING_LABELS`` or NaN are left out).

    Returns
    -------
    dict with ``n_clusters`` and, with labels, ``ari``, ``nmi``, ``n_labelled``.
    """
    if label_key is not None and label_key not in adata.obs:
        raise InputError(
            source,
            f"has no label column {label_key!r} (columns: {', '.join(map(str, adata.obs.columns))})",
            "Set label_key to an existing obs column, or leave it unset.",
        )
    if EMBEDDING_KEY not in adata.obsm:
        raise InputError(source, f"has no obsm[{EMBEDDING_KEY!r}]", "Run `rlae-sc directions` first.")
    k = adata.obsm[EMBEDDING_KEY].shape[1]
    n_dims = k if n_dims is None else min(n_dims, k)
    n_neighbors = min(n_neighbors, adata.n_obs - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(
            adata,
            use_rep=EMBEDDING_KEY,
            n_pcs=n_dims,
            n_neighbors=n_neighbors,
            transformer="sklearn",
            random_state=seed,
        )
        sc.tl.leiden(adata, resolution=resolution, flavor="igraph", n_iterations=2, directed=False, random_state=seed)
        sc.tl.umap(adata, random_state=seed)
    result = {"n_clusters": int(adata.obs["leiden"].nunique())}
    if label_key is not None:
        labels = adata.obs[label_key].astype(str)
        has = labelled_mask(adata.obs[label_key])
        truth, pred = labels[has].to_numpy(), adata.obs["leiden"].astype(str)[has].to_numpy()
        result.update(
            ari=float(adjusted_rand_score(truth, pred)),
            nmi=float(normalized_mutual_info_score(truth, pred)),
            n_labelled=int(has.sum()),
        )
    adata.uns["rlae_cluster"] = {
        "n_neighbors": n_neighbors,
        "n_dims": n_dims,
        "resolution": resolution,
        "label_key": label_key or "",
        "seed": seed,
        "neighbors": "exact (scikit-learn)",
    }
    return result
