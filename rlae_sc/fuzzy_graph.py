"""scanpy's neighbour graph (``method="umap"``) from each cell's nearest neighbours, built in place.

UMAP's graph (McInnes, Healy, Melville 2018, section 3) weights each directed edge ``i -> j`` by a membership
strength ``a_ij`` and joins the two directions by the fuzzy union ``a_ij + a_ji - a_ij a_ji``. scanpy builds it
with scipy's sparse algebra, which holds ``a``, its transpose, their sum and their product at once. Here the
neighbour arrays become the distance graph's own arrays, the transpose is kept as edge numbers only, and the
union is counted, then filled, row by row by compiled kernels: at five million cells and 15 neighbours the
graph costs about 0.6 GB beyond the two results (1.6 GB), against 4 GB by scipy's operations.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

# UMAP's membership strengths, with umap-learn's constants:
BANDWIDTH_STEPS = 64  # bisection steps for each cell's bandwidth sigma
BANDWIDTH_TOLERANCE = 1e-5  # |sum of memberships - log2(k)| at which the bisection stops
MIN_BANDWIDTH_SCALE = 1e-3  # sigma is at least this times the cell's mean neighbour distance
MEMBERSHIP_BLOCK = 65_536  # cells whose bandwidths are found at a time (~7 MB per array at k = 15)


def umap_graph(dist: np.ndarray, idx: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """scanpy's neighbour graph from each cell's ``k - 1`` nearest other cells (``dist`` float32 and ``idx``
    int32: n x (k - 1), as from :func:`rlae_sc.neighbors.knn`). Both arrays are taken over: their rows are
    put in column order in place, and they become the distance graph's values and columns.

    Returns
    -------
    distances
        n x n CSR, float32: each row's ``k - 1`` neighbours and their Euclidean distances
        (``obsp['distances']``).
    connectivities
        n x n CSR, float32, symmetric: the fuzzy union ``a + a^T - a * a^T`` of the membership strengths
        (:func:`membership_strengths`), with the values scanpy's ``neighbors`` computes by umap-learn's
        functions (float32 arithmetic; strengths that underflow to 0 are dropped, as there)
        (``obsp['connectivities']``).
    """
    n, width = idx.shape
    strengths = membership_strengths(dist)
    _sort_rows(idx, dist, strengths)
    index_dtype = _index_dtype(n * width)
    indptr = np.arange(0, n * width + 1, width, dtype=index_dtype)
    distances = sp.csr_matrix((dist.reshape(-1), idx.reshape(-1), indptr), shape=(n, n), copy=False)
    distances.has_canonical_format = True  # rows sorted, no repeated column
    t_indptr, t_edges = _transpose(idx, strengths)
    counts = np.zeros(n + 1, dtype=np.int64)
    _union(idx, strengths, t_indptr, t_edges, counts, np.empty(0, np.int32), np.empty(0, np.float32), False)
    np.cumsum(counts, out=counts)  # each row's first entry
    c_indptr = counts.astype(_index_dtype(int(counts[-1])))
    del counts
    c_indices = np.empty(int(c_indptr[-1]), dtype=c_indptr.dtype)
    c_data = np.empty(int(c_indptr[-1]), dtype=np.float32)
    _union(idx, strengths, t_indptr, t_edges, c_indptr, c_indices, c_data, True)
    connectivities = sp.csr_matrix((c_data, c_indices, c_indptr), shape=(n, n), copy=False)
    connectivities.has_canonical_format = True
    return distances, connectivities


def _index_dtype(nnz: int):
    """int32 for sparse index arrays while ``nnz`` fits, as scipy chooses, else int64."""
    return np.int32 if nnz < np.iinfo(np.int32).max else np.int64


@numba.njit(cache=True, nogil=True)
def _sort_rows(idx, dist, strengths):  # pragma: no cover - compiled by numba
    """Put each row of ``idx`` in increasing order, moving ``dist`` and ``strengths`` with it (insertion sort:
    rows hold k - 1 entries)."""
    n, width = idx.shape
    for i in range(n):
        for p in range(1, width):
            j, d, s = idx[i, p], dist[i, p], strengths[i, p]
            q = p - 1
            while q >= 0 and idx[i, q] > j:
                idx[i, q + 1], dist[i, q + 1], strengths[i, q + 1] = idx[i, q], dist[i, q], strengths[i, q]
                q -= 1
            idx[i, q + 1], dist[i, q + 1], strengths[i, q + 1] = j, d, s


def _transpose(idx: np.ndarray, strengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The transpose of the strength graph as edge numbers: row j lists ``e = i * (k - 1) + p`` for every edge
    ``i -> j = idx[i, p]`` of nonzero strength, in increasing i. Returns (indptr (n + 1,) int64, edges)."""
    n, width = idx.shape
    indptr = np.zeros(n + 1, dtype=np.int64)
    _column_counts(idx, strengths, indptr)
    np.cumsum(indptr, out=indptr)
    edges = np.empty(int(indptr[-1]), dtype=_index_dtype(n * width))
    _fill_transpose(idx, strengths, indptr, edges)
    return indptr, edges


@numba.njit(cache=True, nogil=True)
def _column_counts(idx, strengths, counts):  # pragma: no cover - compiled by numba
    """``counts[j + 1]``: the edges of nonzero strength into cell j."""
    n, width = idx.shape
    for i in range(n):
        for p in range(width):
            if strengths[i, p] != 0:
                counts[idx[i, p] + 1] += 1


@numba.njit(cache=True, nogil=True)
def _fill_transpose(idx, strengths, indptr, edges):  # pragma: no cover - compiled by numba
    """Write each edge's number into its target cell's row of ``edges`` (rows start at ``indptr``)."""
    n, width = idx.shape
    fill = indptr[:-1].copy()
    for i in range(n):
        for p in range(width):
            if strengths[i, p] != 0:
                j = idx[i, p]
                edges[fill[j]] = i * width + p
                fill[j] += 1


@numba.njit(cache=True, nogil=True)
def _union(idx, strengths, t_indptr, t_edges, indptr, indices, data, write):  # pragma: no cover - numba
    """Merge each row's own edges (``idx``, ``strengths``; columns increasing) with its transposed ones into
    the fuzzy union. With ``write`` False, count each row's entries into ``indptr[i + 1]``; with True, write
    the row's columns and values from ``indptr[i]`` on."""
    n, width = idx.shape
    for i in range(n):
        p, q, end = 0, t_indptr[i], t_indptr[i + 1]
        out = indptr[i] if write else 0
        while p < width or q < end:
            if p < width and strengths[i, p] == 0:
                p += 1
                continue
            mine = idx[i, p] if p < width else n
            theirs = t_edges[q] // width if q < end else n
            if mine < theirs:
                column, value = mine, strengths[i, p]
                p += 1
            elif theirs < mine:
                e = t_edges[q]
                column, value = theirs, strengths[e // width, e % width]
                q += 1
            else:
                e = t_edges[q]
                a, b = strengths[i, p], strengths[e // width, e % width]
                column, value = mine, (a + b) - a * b
                p += 1
                q += 1
            if write:
                indices[out] = column
                data[out] = value
            out += 1
        if not write:
            indptr[i + 1] = out


def membership_strengths(dist: np.ndarray) -> np.ndarray:
    """UMAP's membership strength of each cell's neighbours (n x (k - 1), float32) from its distances to its
    ``k - 1`` nearest other cells (``dist``: n x (k - 1), as from :func:`rlae_sc.neighbors.knn`; the cell
    itself counts as its own nearest, at distance 0).

    For cell i, ``rho_i`` is its smallest positive neighbour distance and the bandwidth ``sigma_i`` solves
    ``sum_j exp(-max(0, d_ij - rho_i) / sigma_i) = log2(k)`` over its ``k - 1`` neighbours, by bisection
    (``BANDWIDTH_STEPS`` steps from 1, doubling while unbounded; stopped within ``BANDWIDTH_TOLERANCE``),
    then raised to at least ``MIN_BANDWIDTH_SCALE`` times its mean distance to its ``k`` nearest cells (the
    mean over all cells when every distance of its row is 0). The strength is ``exp(-(d_ij - rho_i) /
    sigma_i)``, and 1 where ``d_ij <= rho_i``. These are umap-learn's rules with local connectivity 1 (its
    ``smooth_knn_dist`` and ``compute_membership_strengths``), which scanpy's ``neighbors`` uses; computed
    here with numpy, block by block, so that no process compiles them.
    """
    n, width = dist.shape
    k = width + 1
    target = np.log2(k)
    out = np.empty((n, width), dtype=np.float32)
    floor_all = MIN_BANDWIDTH_SCALE * float(np.sum(dist, dtype=np.float64)) / (n * k)
    for start in range(0, n, MEMBERSHIP_BLOCK):
        d = np.zeros((min(MEMBERSHIP_BLOCK, n - start), k))  # the cell itself first, at distance 0
        d[:, 1:] = dist[start : start + MEMBERSHIP_BLOCK]
        positive = np.where(d > 0, d, np.inf).min(axis=1)
        rho = np.where(np.isfinite(positive), positive, 0.0)
        excess = d[:, 1:] - rho[:, None]
        lo, hi = np.zeros(len(d)), np.full(len(d), np.inf)
        sigma = np.ones(len(d))
        active = np.arange(len(d))  # rows still bisecting
        for _ in range(BANDWIDTH_STEPS):
            total = _strengths(excess[active], sigma[active]).sum(axis=1)
            moving = np.abs(total - target) >= BANDWIDTH_TOLERANCE
            active, total = active[moving], total[moving]
            if not len(active):
                break
            above = total > target
            hi[active[above]] = sigma[active[above]]
            lo[active[~above]] = sigma[active[~above]]
            h = hi[active]
            sigma[active] = np.where(np.isinf(h), 2 * sigma[active], (lo[active] + h) / 2)
        minimum = np.where(rho > 0, MIN_BANDWIDTH_SCALE * d.mean(axis=1), floor_all)
        sigma = np.maximum(sigma, minimum)
        out[start : start + len(d)] = _strengths(excess, sigma)
    return out


def _strengths(excess: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """``exp(-excess / sigma)`` row by row (excess: rows x neighbours, sigma: rows), 1 where ``excess <= 0``."""
    return np.where(excess > 0, np.exp(-np.maximum(excess, 0) / sigma[:, None]), 1.0)
