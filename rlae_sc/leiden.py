"""Leiden clustering, and its resolution chosen from the data: the partition most stable under subsampling.

:func:`leiden` runs scanpy's Leiden as every stage does. The resolution rule (``resolution: auto``,
:func:`stability_curve` then :func:`choose_resolution`):

1. For each resolution in :data:`RESOLUTIONS`, Leiden runs :data:`RUNS` times, each time on a different
   seeded subsample of :data:`FRACTION` of the cells (the neighbour graph restricted to them) with a
   different seed.
2. A resolution's stability is the mean adjusted Rand index between every two runs, over the cells both
   runs kept: 1 when every subsample and seed gives the same partition.
3. The chosen resolution is the most stable one; among resolutions within :data:`TIE` of the best, the
   largest (the finest partition the data support equally well).

The grid stops at 1.0, scanpy's default: finer partitions are sub-clusterings of one population, for which a
user sets the resolution. Above :data:`CURVE_CELLS` cells the curve is measured on a seeded sample of that many
cells with a neighbour graph of their own (so that a run takes well under a second); the chosen resolution is
then used on the whole graph.

``benchmarks/resolution.py`` compares the clusters it gives with scanpy's default pipeline on five labelled
datasets (``benchmarks/resolution.md``).
"""

from __future__ import annotations

import itertools
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from sklearn.metrics import adjusted_rand_score

RESOLUTIONS = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)  # the grid searched (scanpy's default, 1.0, is the top)
RUNS = 5  # Leiden runs per resolution, each on its own subsample and seed
FRACTION = 0.8  # share of the cells in each subsample
TIE = 0.005  # stabilities this close to the best count as equal; the largest such resolution is chosen
CURVE_CELLS = 5_000  # above this many cells, the curve is measured on a seeded sample of this many


def stability_curve(connectivities, *, seed: int = 0) -> pd.DataFrame:
    """Stability of Leiden's partition at each resolution of :data:`RESOLUTIONS`.

    Parameters
    ----------
    connectivities
        The neighbour graph's weights (n_cells x n_cells, sparse, symmetric), as
        ``obsp['connectivities']``.
    seed
        Seeds the subsamples and the Leiden runs.

    Returns
    -------
    DataFrame with one row per resolution: ``resolution``, ``stability`` (mean pairwise ARI of the runs over
    their shared cells, 0..1), ``stability_min`` (the least of those ARIs) and ``n_clusters`` (median number of
    clusters over the runs).
    """
    graph = connectivities.tocsr()
    n = graph.shape[0]
    rng = np.random.default_rng(seed)
    subsamples = [np.sort(rng.choice(n, max(2, int(FRACTION * n)), replace=False)) for _ in range(RUNS)]
    subgraphs = [graph[cells][:, cells] for cells in subsamples]  # the same at every resolution
    rows = []
    for resolution in RESOLUTIONS:
        runs, sizes = [], []
        for run, (cells, subgraph) in enumerate(zip(subsamples, subgraphs, strict=True)):
            codes = np.full(n, -1)
            codes[cells] = _leiden_codes(subgraph, resolution=resolution, seed=seed + run)
            runs.append(codes)
            sizes.append(codes.max() + 1)
        aris = [_shared_ari(a, b) for a, b in itertools.combinations(runs, 2)]
        rows.append(
            {
                "resolution": resolution,
                "stability": float(np.mean(aris)),
                "stability_min": float(np.min(aris)),
                "n_clusters": float(np.median(sizes)),
            }
        )
    return pd.DataFrame(rows)


def _shared_ari(a: np.ndarray, b: np.ndarray) -> float:
    """ARI of two runs' codes (n_cells,; -1: left out of that run's subsample) over the cells both kept."""
    both = (a >= 0) & (b >= 0)
    return adjusted_rand_score(a[both], b[both])


def choose_resolution(curve: pd.DataFrame) -> float:
    """The largest resolution of ``curve`` (from :func:`stability_curve`) whose stability is within
    :data:`TIE` of the best."""
    close = curve[curve["stability"] >= curve["stability"].max() - TIE]
    return float(close["resolution"].max())


def curve_graph(X: np.ndarray, connectivities, *, n_neighbors: int, seed: int):
    """The graph the curve is measured on (cells x cells): ``connectivities`` itself up to
    :data:`CURVE_CELLS` cells, else a neighbour graph of its own over a seeded sample of that many of the
    cells ``X`` (n_cells x n_dims)."""
    from rlae_sc.fuzzy_graph import umap_graph
    from rlae_sc.neighbors import build_index, knn

    if len(X) <= CURVE_CELLS:
        return connectivities
    sample = np.sort(np.random.default_rng(seed).choice(len(X), CURVE_CELLS, replace=False))
    dist, idx = knn(build_index(X[sample], seed=seed), n_neighbors)
    return umap_graph(dist, idx)[1]


def leiden(adata: ad.AnnData, *, resolution: float, seed: int, key_added: str = "leiden", adjacency=None) -> None:
    """scanpy's Leiden (igraph flavour, two iterations, undirected) on ``adata``'s neighbour graph, in place.

    Parameters
    ----------
    adata
        Cells with ``obsp['connectivities']`` (n_cells x n_cells, as :func:`rlae_sc.cluster.cluster` builds
        it), or any cells when ``adjacency`` is given.
    resolution
        Leiden's resolution (higher: more, smaller clusters).
    seed
        Leiden's random state.
    key_added
        Writes the clusters to ``obs[key_added]`` (categorical, n_cells) and the parameters to ``uns[key_added]``.
    adjacency
        A graph (n_cells x n_cells, sparse) to partition instead of ``obsp['connectivities']``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.leiden(
            adata, adjacency=adjacency, resolution=resolution, flavor="igraph", n_iterations=2, directed=False,
            random_state=seed, key_added=key_added,
        )  # fmt: skip


def _leiden_codes(adjacency, *, resolution: float, seed: int) -> np.ndarray:
    """Leiden clusters (n_cells,, integer codes) of a weighted graph (n_cells x n_cells, sparse)."""
    cells = ad.AnnData(obs=pd.DataFrame(index=np.arange(adjacency.shape[0]).astype(str)))
    leiden(cells, adjacency=adjacency, resolution=resolution, seed=seed)
    return cells.obs["leiden"].cat.codes.to_numpy()
