"""Reference mapping: place query cells, embedded with a reference model, among the reference cells.

Both sides live in the reference model's coordinates (``obsm['X_rlae']``), so
neighbours are found there: kNN label transfer with a per-cell confidence,
and a position in the reference UMAP.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from rlae_sc.cluster import kernel_votes, labelled_mask
from rlae_sc.errors import InputError
from rlae_sc.keys import EMBEDDING_KEY
from rlae_sc.neighbors import build_index, search
from rlae_sc.params import MappingParams


def transfer_labels(
    reference: ad.AnnData,
    query: ad.AnnData,
    *,
    label_key: str,
    n_neighbors: int = MappingParams.n_neighbors,
    index=None,
    source: str = "reference",
) -> pd.DataFrame:
    """kNN label transfer from ``reference`` to ``query`` in ``obsm['X_rlae']`` (both n x k, same model).

    Each query cell takes the label with the largest summed weight among its
    ``n_neighbors`` nearest reference cells (Euclidean); weights are a Gaussian
    kernel of the distance, with the bandwidth the cell's median neighbour
    distance (:func:`rlae_sc.cluster.kernel_votes`). Reference cells without a
    label (NaN, ``?``, ``unknown``, ...; see :data:`rlae_sc.cluster.MISSING_LABELS`)
    are not used. ``index``: the reference's saved neighbour index
    (:func:`rlae_sc.neighbors.load_index`), searched when every reference cell is labelled;
    otherwise an index of the labelled cells is built here.

    Returns
    -------
    DataFrame indexed like ``query.obs`` with ``predicted`` (the label),
    ``confidence`` (its share of the weight, 0..1) and ``neighbor_distance``
    (mean distance to the neighbours, units of the embedding).
    """
    if label_key not in reference.obs:
        raise InputError(source, f"has no label column {label_key!r}", "Name an obs column of the reference.")
    labels = reference.obs[label_key]
    has = labelled_mask(labels)
    ref_x, query_x = _embeddings(reference, query)
    if index is None or not has.all():
        index = build_index(ref_x[has])
    ref_labels = labels[has].astype(str).to_numpy()
    dist, idx = search(index, query_x, min(n_neighbors, len(ref_labels)))
    classes, codes = np.unique(ref_labels, return_inverse=True)
    votes = kernel_votes(dist, codes[idx], len(classes))
    best = votes.argmax(axis=1)
    return pd.DataFrame(
        {
            "predicted": pd.Categorical(classes[best], categories=classes),
            "confidence": votes[np.arange(len(best)), best] / votes.sum(axis=1),
            "neighbor_distance": dist.mean(axis=1),
        },
        index=query.obs_names,
    )


def place_in_umap(
    reference: ad.AnnData, query: ad.AnnData, *, n_neighbors: int = MappingParams.n_neighbors, index=None
) -> np.ndarray:
    """Query positions (n_query x 2) in the reference UMAP: the mean UMAP position of each cell's
    ``n_neighbors`` nearest reference cells in ``obsm['X_rlae']`` (through ``index``, the reference's
    saved neighbour index, when given). The reference UMAP is not recomputed."""
    ref_x, query_x = _embeddings(reference, query)
    _, idx = search(index if index is not None else build_index(ref_x), query_x, min(n_neighbors, reference.n_obs))
    return reference.obsm["X_umap"][idx].mean(axis=1)


def _embeddings(reference: ad.AnnData, query: ad.AnnData) -> tuple[np.ndarray, np.ndarray]:
    """Both embeddings, restricted to the components the reference's neighbours were found on."""
    n_dims = reference.uns.get("rlae_cluster", {}).get("n_dims") or reference.obsm[EMBEDDING_KEY].shape[1]
    return reference.obsm[EMBEDDING_KEY][:, :n_dims], query.obsm[EMBEDDING_KEY][:, :n_dims]


def map_query(
    reference: ad.AnnData,
    query: ad.AnnData,
    *,
    label_key: str | None = None,
    n_neighbors: int = MappingParams.n_neighbors,
    truth_key: str | None = None,
    index=None,
    source: str = "reference",
) -> dict:
    """Label transfer and UMAP placement, in place on ``query``; returns summary numbers.

    Uses the reference's ``label_key`` (its Leiden clusters when ``None``).
    Fills ``query.obs['rlae_label']``, ``['rlae_label_confidence']``,
    ``obsm['X_umap']`` (reference UMAP coordinates) and ``uns['rlae_mapping']``.
    With ``truth_key`` (a query obs column), reports ``accuracy`` over cells whose
    true label is present and is also a reference label.
    """
    key = label_key or "leiden"
    result = transfer_labels(reference, query, label_key=key, n_neighbors=n_neighbors, index=index, source=source)
    query.obs["rlae_label"] = result["predicted"]
    query.obs["rlae_label_confidence"] = result["confidence"]
    query.obsm["X_umap"] = place_in_umap(reference, query, n_neighbors=n_neighbors, index=index)
    summary = {
        "n_query_cells": int(query.n_obs),
        "label_key": key,
        "n_neighbors": n_neighbors,
        "median_confidence": float(result["confidence"].median()),
        "predicted_counts": {str(k): int(v) for k, v in result["predicted"].value_counts().items()},
    }
    if truth_key is not None:
        if truth_key not in query.obs:
            raise InputError("query", f"has no label column {truth_key!r}", "Name an obs column of the query.")
        truth = query.obs[truth_key].astype(str)
        shared = labelled_mask(query.obs[truth_key]) & truth.isin(result["predicted"].cat.categories).to_numpy()
        summary["accuracy"] = (
            float((truth[shared] == result["predicted"].astype(str)[shared]).mean()) if shared.any() else float("nan")
        )
        summary["n_scored"] = int(shared.sum())
    query.uns["rlae_mapping"] = {k: v for k, v in summary.items() if k != "predicted_counts"}
    return summary
