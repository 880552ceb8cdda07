"""Batches: each cell's batch, and the per-batch centres that take shifts between batches out of the trained matrix.

With a ``batch_key``, the recipe centres the log-normalised values of a cell of
batch ``b`` on a centre ``c_b`` (genes,) instead of on the mean of all cells, so
the trained matrix's scatter ``C`` is the within-batch scatter. Every centre
is a function of sums over cells (per batch, or per batch and cluster), so the
streaming passes, Dask and SLURM carry over unchanged, and the autoencoder's
directions are still checked against exact PCA of that ``C``.

Two ways to estimate the centres (``batch_centering``):

``mean``
    ``c_b`` is batch ``b``'s mean. When a cell type's share differs between
    batches, the means differ by biology as well as by the batch effect, and
    that biology is removed with it.
``anchors``
    Clusters of cells are matched between batches: the groups of ``keep_key``
    (the same label in two batches), or, without it, clusters of a first pass
    (k-means within each batch on the top principal components of the
    mean-centred matrix), matched as mutual nearest clusters between every two
    batches and matched again as the centres move. The centres minimise

    ``sum over matched pairs (u, v) of w_uv |(m_u - c_b(u)) - (m_v - c_b(v))|^2``

    with ``m_u`` a cluster's mean and ``w_uv = n_u n_v / (n_u + n_v)``: a
    weighted least-squares problem whose normal equations are a graph
    Laplacian over batches (B x B) with one right-hand side per gene
    (:func:`align_centres`). With two batches and known groups this is the
    two-way additive model (batch + cell type) fitted to the cells. Batches
    without any match keep their own mean, and each connected set of batches
    keeps the mean of its cells, so the corrected matrix is centred.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rlae_sc.errors import InputError

MIN_MATCH_CELLS = 10  # clusters with fewer cells are not matched between batches
CELLS_PER_CLUSTER = 100  # first pass: about one k-means cluster per this many cells of a batch ...
MAX_CLUSTERS = 15  # ... and at most this many per batch
FIRST_PASS_DIMS = 30  # principal components the first-pass clusters and their matches are found in
MATCH_ROUNDS = 10  # most rounds of matching clusters again after the centres move
KMEANS_SAMPLE = 20_000  # k-means is fitted on at most this many cells of a batch, then predicts the rest


def batch_codes(values: pd.Series, *, categories: list[str] | None = None, key: str, source) -> np.ndarray:
    """Each cell's batch as an index into ``categories`` (the sorted batch names when not given).

    ``values`` is the ``obs`` column ``key``; a cell without a batch is an
    :class:`~rlae_sc.errors.InputError`. Returns ``(codes (cells,) int64, categories)``.
    """
    names = values.astype("string")
    if names.isna().any():
        raise InputError(
            source,
            f"{int(names.isna().sum())} cells have no value in batch column {key!r}",
            "Give every cell a batch (e.g. fill missing values with 'unknown').",
        )
    if categories is None:
        categories = sorted(set(names))
    codes = pd.Index(categories).get_indexer(names)
    return codes.astype(np.int64), list(categories)


def centred_scale(
    sums: np.ndarray, sumsq: np.ndarray, n_b: np.ndarray, centres: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Standard deviations (ddof=1) of values centred on each batch's centre, from per-batch sums and sums of
    squares (B x genes) over ``n_b`` (B,) cells: pooled over batches (genes,) and per batch (B x genes).
    Constant genes get 1."""
    ss = sumsq - 2 * centres * sums + n_b[:, None] * centres**2  # sum of (x - c_b)^2 per batch
    pooled = np.sqrt(np.maximum(ss.sum(axis=0), 0.0) / max(n_b.sum() - 1, 1))
    own = np.sqrt(np.maximum(ss, 0.0) / np.maximum(n_b - 1, 1)[:, None])
    pooled[pooled == 0] = 1.0
    own[own == 0] = 1.0
    return pooled, own


def align_centres(
    means: np.ndarray,
    sizes: np.ndarray,
    cluster_batch: np.ndarray,
    pairs: np.ndarray,
    batch_mean: np.ndarray,
    batch_n: np.ndarray,
) -> np.ndarray:
    """Batch centres (B x genes) that best superpose matched clusters (see the module's docstring).

    Parameters
    ----------
    means
        Each cluster's mean (U x genes), in the units the centres are subtracted in (log-normalised values).
    sizes
        Cells per cluster (U,).
    cluster_batch
        Each cluster's batch (U,), in ``0..B-1``.
    pairs
        Matched clusters (P x 2), each pair from two different batches.
    batch_mean, batch_n
        Each batch's own mean (B x genes) and cells (B,): the centre of an unmatched batch, and the mean that
        each connected set of batches keeps.
    """
    B = len(batch_n)
    laplacian = np.zeros((B, B))
    rhs = np.zeros((B, means.shape[1]))
    for u, v in pairs:
        w = sizes[u] * sizes[v] / (sizes[u] + sizes[v])
        a, b = cluster_batch[u], cluster_batch[v]
        laplacian[[a, b], [a, b]] += w
        laplacian[a, b] -= w
        laplacian[b, a] -= w
        diff = w * (means[u] - means[v])
        rhs[a] += diff
        rhs[b] -= diff
    centres = np.linalg.pinv(laplacian) @ rhs  # each connected set's centres sum to zero
    for members in _components(laplacian):
        weights = batch_n[members].astype(np.float64)
        shift = weights @ (batch_mean[members] - centres[members]) / weights.sum()
        centres[members] += shift  # the set's cells keep their mean
    return centres


def _components(laplacian: np.ndarray) -> list[np.ndarray]:
    """The connected sets of batches of a Laplacian's graph (a lone batch is its own set)."""
    from scipy.sparse.csgraph import connected_components

    _, labels = connected_components(sp.csr_matrix(laplacian != 0), directed=False)
    return [np.flatnonzero(labels == c) for c in np.unique(labels)]


def mutual_pairs(points: np.ndarray, cluster_batch: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Mutual nearest clusters (P x 2) between every two batches, Euclidean in ``points`` (U x d); clusters of
    fewer than :data:`MIN_MATCH_CELLS` cells are left out."""
    usable = np.flatnonzero(sizes >= MIN_MATCH_CELLS)
    batches = np.unique(cluster_batch[usable])
    pairs = []
    for i, a in enumerate(batches):
        for b in batches[i + 1 :]:
            ua, ub = usable[cluster_batch[usable] == a], usable[cluster_batch[usable] == b]
            d = ((points[ua, None, :] - points[None, ub, :]) ** 2).sum(axis=2)
            ab, ba = d.argmin(axis=1), d.argmin(axis=0)
            pairs += [(ua[j], ub[ab[j]]) for j in range(len(ua)) if ba[ab[j]] == j]
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def label_pairs(cluster_batch: np.ndarray, cluster_group: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Every two clusters of the same known group in different batches (P x 2), each of at least
    :data:`MIN_MATCH_CELLS` cells."""
    pairs = [
        (u, v)
        for u in range(len(sizes))
        for v in range(u + 1, len(sizes))
        if cluster_group[u] == cluster_group[v]
        and cluster_batch[u] != cluster_batch[v]
        and min(sizes[u], sizes[v]) >= MIN_MATCH_CELLS
    ]
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def clusters_within_batches(
    scores: np.ndarray, codes: np.ndarray, n_batches: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """First-pass clusters: k-means within each batch on ``scores`` (cells x d) -> a cluster per cell (cells,),
    numbered over all batches, and each cluster's batch (clusters,); about one cluster per
    :data:`CELLS_PER_CLUSTER` cells of a batch, 1 to :data:`MAX_CLUSTERS`, each fitted on at most
    :data:`KMEANS_SAMPLE` cells (seeded)."""
    from sklearn.cluster import KMeans

    labels = np.empty(len(codes), dtype=np.int64)
    cluster_batch: list[int] = []
    rng = np.random.default_rng(seed)
    for b in range(n_batches):
        rows = np.flatnonzero(codes == b)
        k = int(np.clip(len(rows) // CELLS_PER_CLUSTER, 1, MAX_CLUSTERS))
        fit_rows = rows if len(rows) <= KMEANS_SAMPLE else np.sort(rng.choice(rows, KMEANS_SAMPLE, replace=False))
        km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(scores[fit_rows])
        labels[rows] = len(cluster_batch) + km.predict(scores[rows])
        cluster_batch += [b] * k
    return labels, np.asarray(cluster_batch, dtype=np.int64)


def match_and_align(
    means: np.ndarray,
    sizes: np.ndarray,
    cluster_batch: np.ndarray,
    batch_mean: np.ndarray,
    batch_n: np.ndarray,
    *,
    project,
) -> tuple[np.ndarray, np.ndarray]:
    """Centres from first-pass clusters: match mutual nearest clusters with every batch on its own mean, align
    (:func:`align_centres`), and match again with the new centres, until the matches stop changing (at most
    :data:`MATCH_ROUNDS` rounds). ``project(values)`` maps rows of centred log-normalised values (rows x genes)
    to the space the matches are found in. Returns the centres (B x genes) and the last matches (P x 2)."""
    centres = batch_mean
    pairs = np.zeros((0, 2), dtype=np.int64)
    for _ in range(MATCH_ROUNDS):
        found = mutual_pairs(project(means - centres[cluster_batch]), cluster_batch, sizes)
        if {tuple(p) for p in found} == {tuple(p) for p in pairs}:
            break
        pairs = found
        centres = align_centres(means, sizes, cluster_batch, pairs, batch_mean, batch_n)
    return centres, pairs
