"""Neighbours, Leiden clusters and UMAP on the LAE embedding; agreement with known labels.

Up to ``sketch_cells`` cells (:class:`rlae_sc.params.ClusterParams`), Leiden
and UMAP run on every cell, as in a standard scanpy analysis. Above it they
run on a sketch: a seeded uniform sample of ``sketch_cells`` cells, clustered
and laid out exactly as a dataset of that size would be; every other cell
then takes the cluster with the largest kernel-weighted vote among its
nearest sketch cells and the mean UMAP position of those cells (the same
rule as mapping a query onto a reference, :mod:`rlae_sc.mapping`). Leiden's
resolution therefore means the same at every scale: the graph it partitions
never has more than ``sketch_cells`` cells, so the cluster count does not
grow with the number of cells.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

from rlae_sc.embedding_rows import EmbeddingRows
from rlae_sc.errors import InputError
from rlae_sc.fingerprints import result_fingerprints
from rlae_sc.fuzzy_graph import umap_graph
from rlae_sc.keys import EMBEDDING_KEY, HARMONY_KEY
from rlae_sc.labels import kernel_votes, labelled_mask, obs_column, partition_scores
from rlae_sc.leiden import choose_resolution, curve_graph, leiden, stability_curve
from rlae_sc.neighbors import EXACT_MAX_CELLS, build_index, knn, load_index, save_index, search
from rlae_sc.params import ClusterParams
from rlae_sc.room import check_memory, cluster_bytes, release_freed_memory

EXTEND_BLOCK = 65_536  # cells voted and placed at a time (those outside the sketch)
METRIC_BLOCK = 1_048_576  # cells whose neighbours are compared at a time (batch mixing, label agreement)

log = logging.getLogger("rlae_sc")


def cluster(
    adata: ad.AnnData,
    *,
    n_neighbors: int = ClusterParams.n_neighbors,
    n_dims: int | None = ClusterParams.n_dims,
    resolution: float | str = ClusterParams.resolution,
    label_key: str | None = None,
    batch_key: str | None = None,
    harmony: bool = ClusterParams.harmony,
    seed: int = ClusterParams.seed,
    sketch_cells: int = ClusterParams.sketch_cells,
    index_out: str | Path | None = None,
    source: str = "input",
    embedding=None,
    graph: tuple | None = None,
) -> dict:
    """kNN graph on ``obsm['X_rlae']`` (or its Harmony correction), Leiden and UMAP, in place; returns the
    run's numbers.

    With ``harmony``, Harmony (harmonypy) corrects the first ``n_dims`` components for ``batch_key``; the
    result is stored as ``obsm['X_rlae_harmony']`` and the graph, Leiden and UMAP are built on it (the
    neighbour index written to ``index_out`` stays on ``obsm['X_rlae']``, the space query cells are embedded
    in). With ``batch_key``, the result also holds ``batch_mixing``: the mean over cells of the inverse Simpson
    index of batches among each cell's neighbours in the graph, scaled to 0 (one batch) .. 1 (all batches
    equally); with ``label_key``, ``label_agreement``: the mean fraction of each cell's neighbours that share
    its label (cells with a label), a measure that needs no clustering.

    Neighbours are found on the first ``n_dims`` components (all when
    ``None``) with a faiss index: exact (flat) up to
    :data:`rlae_sc.neighbors.EXACT_MAX_CELLS` cells, IVF-flat above. Fills
    ``obsp['distances'|'connectivities']`` and ``uns['neighbors']`` as
    scanpy's ``neighbors`` does (UMAP connectivities, the same graph as
    ``sc.pp.neighbors(adata, use_rep='X_rlae')`` below the threshold),
    ``obs['leiden']`` and ``obsm['X_umap']``. With ``resolution='auto'``, Leiden's resolution is the most
    stable one under subsampling (:mod:`rlae_sc.leiden`); the curve it came from is stored as
    ``uns['rlae_cluster']['resolution_curve']`` (columns of :func:`rlae_sc.leiden.stability_curve`) and the
    resolution used as ``uns['rlae_cluster']['resolution']``. Above ``sketch_cells`` cells,
    Leiden and UMAP run on a sketch (see the module's doc) and
    ``obs['rlae_sketch']`` marks its cells. With ``index_out``, the index of
    all cells is written there (faiss's format, for mapping queries onto
    them; :func:`rlae_sc.neighbors.load_index`) and dropped from memory
    before the graph is built; its SHA-256 goes to
    ``uns['rlae_cluster']['index_sha256']`` with the call's parameters. Before any work, the memory the
    call will need (:func:`rlae_sc.room.cluster_bytes`) is compared with the memory available, and a shortfall
    stops it with an :class:`~rlae_sc.errors.InputError` naming ``source``.

    For an atlas, the embedding can stay on disk: ``embedding`` (cells x k, e.g. the h5py dataset
    ``obsm/X_rlae`` of the directions stage's file) is then read block by block instead of
    ``obsm['X_rlae']``, which ``adata`` need not hold; and ``graph``, the result of :func:`neighbour_graph`
    on the same cells with the same ``n_neighbors``, ``n_dims``, ``seed`` and ``index_out``, can be built
    before ``adata`` is read, so that the two are never in memory together (the cluster stage at five
    million cells). Above ``sketch_cells`` cells the graph may be on disk
    (:func:`rlae_sc.graph_file.spill_graph`): it is then read in blocks and not put in ``obsp``. Neither is
    allowed with ``harmony``.

    Returns
    -------
    dict
        ``n_clusters``, the ``resolution`` used, the seconds of each step, ``sha256`` (the fingerprints of
        the embedding, graph, clusters and UMAP: :func:`rlae_sc.fingerprints.result_fingerprints`; also in
        ``uns['rlae_cluster']``) and, with ``label_key``,
        ``ari`` and ``nmi`` between Leiden clusters and the labels over the
        ``n_labelled`` cells with a label (values in :data:`rlae_sc.labels.MISSING_LABELS` or NaN
        are left out).
    """
    if label_key is not None:
        obs_column(adata.obs, label_key, what="label", source=source)
    if embedding is None and EMBEDDING_KEY not in adata.obsm:
        raise InputError(source, f"has no obsm[{EMBEDDING_KEY!r}]", "Run `rlae-sc directions` first.")
    if harmony and not batch_key:
        raise InputError(
            source, "harmony needs a batch_key (none was set)", "Preprocess with batch_key set, or leave harmony off."
        )
    if harmony and (embedding is not None or graph is not None):
        raise ValueError("harmony corrects the embedding in memory: pass neither embedding nor graph")
    stored = adata.obsm[EMBEDDING_KEY] if embedding is None else embedding
    n_neighbors, n_dims = graph_sizes(stored.shape, n_neighbors=n_neighbors, n_dims=n_dims)
    if graph is None:
        check_room(adata.n_obs, n_neighbors=n_neighbors, n_dims=n_dims, source=source)
    rows = EmbeddingRows(stored, n_dims)
    seconds = {}
    index_sha256 = None
    if harmony:
        t0 = time.perf_counter()
        if index_out is not None:
            index_sha256 = save_index(build_index(rows, seed=seed), index_out)
        rows = EmbeddingRows(run_harmony(rows.array(), adata.obs[batch_key], seed=seed))
        adata.obsm[HARMONY_KEY] = rows.source
        seconds["harmony_seconds"] = time.perf_counter() - t0
        index_out = None
    t0 = time.perf_counter()
    if graph is None:
        graph = neighbour_graph(rows, n_neighbors=n_neighbors, seed=seed, index_out=index_out)
    use_rep = HARMONY_KEY if harmony else EMBEDDING_KEY
    _set_graph(adata, graph, n_neighbors=n_neighbors, n_dims=n_dims, seed=seed, use_rep=use_rep)
    distances, connectivities, written = graph
    index_sha256 = index_sha256 or written
    del graph
    seconds["neighbors_seconds"] = time.perf_counter() - t0
    sketched = adata.n_obs > sketch_cells
    if not sketched and "connectivities" not in adata.obsp:
        raise ValueError("a graph on disk is for sketched runs only: Leiden and UMAP run on it otherwise")
    if sketched:
        sketch = np.sort(np.random.default_rng(seed).choice(adata.n_obs, sketch_cells, replace=False))
        cells = rows.take(sketch)
        small = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names[sketch]), obsm={EMBEDDING_KEY: cells})
        graph = neighbour_graph(cells, n_neighbors=n_neighbors, seed=seed)
        _set_graph(small, graph, n_neighbors=n_neighbors, n_dims=n_dims, seed=seed)
        del graph
    else:
        cells, small = rows.array(), adata
        if embedding is not None:  # scanpy's UMAP reads the graph's representation from obsm; at most sketch_cells
            adata.obsm[EMBEDDING_KEY] = np.asarray(embedding[:])
    curve = None
    if resolution == "auto":
        t0 = time.perf_counter()
        curve = stability_curve(
            curve_graph(cells, small.obsp["connectivities"], n_neighbors=n_neighbors, seed=seed), seed=seed
        )
        resolution = choose_resolution(curve)
        seconds["resolution_seconds"] = time.perf_counter() - t0
        log.info("Leiden resolution %g: the most stable partition under subsampling", resolution)
    t0 = time.perf_counter()
    _leiden_umap(small, cells[:, :2], resolution=resolution, seed=seed)
    seconds["leiden_umap_seconds"] = time.perf_counter() - t0
    if sketched:
        t0 = time.perf_counter()
        _extend_sketch(adata, small, sketch, cells, rows, n_neighbors=n_neighbors, seed=seed)
        seconds["sketch_extension_seconds"] = time.perf_counter() - t0
    result = {"n_clusters": int(adata.obs["leiden"].nunique()), "resolution": resolution, **seconds}
    if batch_key:
        result["batch_mixing"] = batch_mixing(distances, adata.obs[batch_key])
    if label_key is not None:
        result.update(
            **partition_scores(adata.obs[label_key], adata.obs["leiden"]),
            label_agreement=label_agreement(distances, adata.obs[label_key]),
        )
    adata.uns["rlae_cluster"] = {
        "n_neighbors": n_neighbors,
        "n_dims": n_dims,
        "resolution": resolution,
        "resolution_chosen": curve is not None,
        "label_key": label_key or "",
        "batch_key": batch_key or "",
        "harmony": bool(harmony),
        "seed": seed,
        "neighbors": "exact (faiss flat)" if adata.n_obs <= EXACT_MAX_CELLS else "approximate (faiss IVF-flat)",
        "sketch_cells": int(sketch_cells) if sketched else 0,
    }
    result["sha256"] = result_fingerprints(adata, embedding=stored, graph=connectivities)
    adata.uns["rlae_cluster"]["sha256"] = result["sha256"]
    if curve is not None:
        adata.uns["rlae_cluster"]["resolution_curve"] = {c: curve[c].to_numpy() for c in curve.columns}
    if index_sha256 is not None:
        adata.uns["rlae_cluster"]["index_sha256"] = index_sha256
    return result


def graph_sizes(shape: tuple[int, int], *, n_neighbors: int, n_dims: int | None) -> tuple[int, int]:
    """The neighbours per cell and the components the graph is built on, for an embedding of ``shape``
    (cells x k): at most ``cells - 1`` neighbours, at most k components (all when ``n_dims`` is None)."""
    return min(n_neighbors, shape[0] - 1), shape[1] if n_dims is None else min(n_dims, shape[1])


def check_room(n_cells: int, *, n_neighbors: int, n_dims: int, source) -> None:
    """Stop with an :class:`~rlae_sc.errors.InputError` naming ``source`` when clustering ``n_cells`` cells
    needs more memory than is available (:func:`rlae_sc.room.cluster_bytes`)."""
    check_memory(
        source,
        cluster_bytes(n_cells, n_dims, n_neighbors),
        what=f"clustering {n_cells:,} cells",
        fix="Run the cluster stage where more memory is free (a larger machine or SLURM job; the stages before it "
        "stream and need little)",
    )


def run_harmony(X: np.ndarray, batches: pd.Series, *, seed: int = 0) -> np.ndarray:
    """Harmony (harmonypy, its defaults) on the embedding ``X`` (cells x d) for the batches (cells,);
    returns the corrected embedding (cells x d, float32)."""
    import harmonypy

    meta = pd.DataFrame({"batch": batches.astype(str).to_numpy()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Z = np.asarray(harmonypy.run_harmony(X, meta, "batch", random_state=seed, verbose=False).Z_corr)
    return np.ascontiguousarray(Z if Z.shape == X.shape else Z.T, dtype=np.float32)


def _neighbour_pairs(distances, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``start:stop`` of a kNN distance graph (cells x cells, CSR) as pairs: each cell's row number and its
    neighbours' columns (pairs,)."""
    bounds = np.asarray(distances.indptr[start : stop + 1])
    return np.repeat(np.arange(start, stop), np.diff(bounds)), distances.indices[int(bounds[0]) : int(bounds[-1])]


def batch_mixing(distances, batches: pd.Series) -> float:
    """Mean over cells of the inverse Simpson index of batches among each cell's neighbours in the kNN graph
    ``distances`` (cells x cells, CSR), scaled to 0..1 by ``(index - 1) / (batches - 1)``."""
    codes = pd.Categorical(batches.astype(str)).codes
    n_batches = int(codes.max()) + 1
    if n_batches < 2:
        return 0.0
    n = distances.shape[0]
    counts = np.zeros((n, n_batches))
    for start in range(0, n, METRIC_BLOCK):
        rows, cols = _neighbour_pairs(distances, start, min(start + METRIC_BLOCK, n))
        np.add.at(counts, (rows, codes[cols]), 1.0)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    simpson = 1.0 / np.maximum((share**2).sum(axis=1), 1e-12)
    return float(np.mean((simpson - 1) / (n_batches - 1)))


def label_agreement(distances, labels: pd.Series) -> float:
    """Mean over labelled cells of the fraction of their neighbours in the kNN graph ``distances`` (cells x
    cells, CSR) that carry the same label (neighbours without a label count as different)."""
    has = labelled_mask(labels)
    codes = pd.factorize(labels.astype(str))[0]
    n = distances.shape[0]
    same = np.zeros(n)
    for start in range(0, n, METRIC_BLOCK):
        rows, cols = _neighbour_pairs(distances, start, min(start + METRIC_BLOCK, n))
        same += np.bincount(rows, weights=(codes[rows] == codes[cols]) & has[cols], minlength=n)
    k = np.diff(distances.indptr[:])
    return float((same / np.maximum(k, 1))[has].mean())


def neighbour_graph(
    X, *, n_neighbors: int, seed: int, index_out: str | Path | None = None
) -> tuple[sp.csr_matrix, sp.csr_matrix, str | None]:
    """scanpy's neighbour graph of the cells ``X`` (n x n_dims: an array or
    :class:`~rlae_sc.embedding_rows.EmbeddingRows`): ``obsp['distances']`` and ``obsp['connectivities']``
    (n x n CSR, :func:`rlae_sc.fuzzy_graph.umap_graph`) and, with ``index_out``, the SHA-256 of the neighbour
    index written there (else None). The index is written before the search and read back from the file, so that it
    takes its size in memory rather than the capacity its lists grew to while cells were added (about 1.7 times);
    it is dropped, and its memory given back, before the graph is built."""
    index = build_index(X, seed=seed)
    sha256 = None
    if index_out is not None:
        sha256 = save_index(index, index_out)
        del index
        release_freed_memory()
        index = load_index(index_out, sha256=sha256)  # its lists at their size, not at the capacity they grew to
    dist, idx = knn(index, n_neighbors)
    del index
    release_freed_memory()
    log.info("neighbours of %d cells: %s", len(dist), "exact" if len(dist) <= EXACT_MAX_CELLS else "faiss IVF-flat")
    return *umap_graph(dist, idx), sha256


def _set_graph(
    adata: ad.AnnData, graph: tuple, *, n_neighbors: int, n_dims: int, seed: int, use_rep: str = EMBEDDING_KEY
) -> None:
    """Store a :func:`neighbour_graph` in ``adata`` as scanpy's ``neighbors`` does (``obsp``, ``uns['neighbors']``);
    a graph on disk (:func:`rlae_sc.graph_file.spill_graph`) stays there, and only ``uns`` is set."""
    if sp.issparse(graph[0]):
        adata.obsp["distances"], adata.obsp["connectivities"] = graph[0], graph[1]
    adata.uns["neighbors"] = {
        "connectivities_key": "connectivities",
        "distances_key": "distances",
        "params": {
            "n_neighbors": n_neighbors,
            "method": "umap",
            "random_state": seed,
            "metric": "euclidean",
            "use_rep": use_rep,
            "n_pcs": n_dims,
        },
    }


def _leiden_umap(adata: ad.AnnData, init: np.ndarray, *, resolution: float, seed: int) -> None:
    """scanpy's Leiden and UMAP on ``adata``'s graph. The UMAP starts from ``init``, the cells' first two
    principal components (cells x 2, rescaled by umap-learn), instead of a spectral layout of the graph: it
    keeps the global arrangement as well (Kobak and Linderman, Nat. Biotechnol. 2021) and skips an eigensolve
    of the graph, which took as long as the layout itself on a 50,000-cell sketch."""
    leiden(adata, resolution=resolution, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.umap(adata, init_pos=np.ascontiguousarray(init, dtype=np.float32), random_state=seed)


def _extend_sketch(
    adata, small, sketch: np.ndarray, cells: np.ndarray, rows: EmbeddingRows, *, n_neighbors: int, seed: int
) -> None:
    """Give every cell outside the sketch the kernel-weighted majority cluster of its ``n_neighbors`` nearest
    sketch cells and their mean UMAP position, reading ``rows`` (all cells) ``EXTEND_BLOCK`` at a time; sketch
    cells (``cells``: their rows) keep their own."""
    index = build_index(cells, seed=seed, exact=False)
    clusters = small.obs["leiden"]
    sketch_codes, sketch_xy = clusters.cat.codes.to_numpy(), small.obsm["X_umap"]
    in_sketch = np.zeros(adata.n_obs, dtype=bool)
    in_sketch[sketch] = True
    codes = np.empty(adata.n_obs, dtype=np.int64)
    codes[sketch] = sketch_codes
    xy = np.empty((adata.n_obs, 2), dtype=np.float32)
    xy[sketch] = sketch_xy
    for start, block in rows.blocks(EXTEND_BLOCK):
        outside = np.flatnonzero(~in_sketch[start : start + len(block)])
        dist, idx = search(index, block[outside], n_neighbors)
        codes[start + outside] = kernel_votes(dist, sketch_codes[idx], len(clusters.cat.categories)).argmax(axis=1)
        xy[start + outside] = sketch_xy[idx].mean(axis=1)
    adata.obs["leiden"] = pd.Categorical.from_codes(codes, categories=clusters.cat.categories)
    adata.obsm["X_umap"] = xy
    adata.obs["rlae_sketch"] = in_sketch
    adata.uns["leiden"] = small.uns["leiden"]  # the parameters of the sketch's Leiden and UMAP runs
    adata.uns["umap"] = small.uns["umap"]
