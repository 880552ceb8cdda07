"""Nearest neighbours of cells in the embedding: exact up to ``EXACT_MAX_CELLS``, approximate above.

The index is faiss's: a flat (exact) index for small data, an inverted-file
index (IVF-flat) above ``EXACT_MAX_CELLS`` cells. IVF-flat was chosen by
``benchmarks/knn.py`` (``benchmarks/knn.md``): at the same recall it was the
fastest of pynndescent, hnswlib and faiss on two cores, its results do not
depend on the number of threads (an HNSW graph built on several threads
does), and faiss saves it in its own binary format, so a saved index is read
without unpickling anything.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from rlae_sc.atomic import atomic_path
from rlae_sc.errors import InputError

EXACT_MAX_CELLS = 50_000  # up to this many cells, neighbours are exact
NPROBE = 16  # IVF lists searched per query (recall@15 >= 0.95 in benchmarks/knn.md)
TRAIN_PER_LIST = 64  # cells per IVF list used to train the coarse quantiser
DISTANCE_BLOCK = 16_384  # cells whose neighbour distances are recomputed at a time (~100 MB at k=15, d=50)
# UMAP's membership strengths (McInnes, Healy, Melville 2018, section 3), with umap-learn's constants:
BANDWIDTH_STEPS = 64  # bisection steps for each cell's bandwidth sigma
BANDWIDTH_TOLERANCE = 1e-5  # |sum of memberships - log2(k)| at which the bisection stops
MIN_BANDWIDTH_SCALE = 1e-3  # sigma is at least this times the cell's mean neighbour distance
MEMBERSHIP_BLOCK = 65_536  # cells whose bandwidths are found at a time (~7 MB per array at k = 15)


def build_index(X: np.ndarray, *, seed: int = 0, exact: bool | None = None):
    """A faiss index over the rows of ``X`` (n x d, Euclidean): exact (``exact=None``: when
    ``n <= EXACT_MAX_CELLS``), else IVF-flat with ``4 sqrt(n)`` lists trained on a seeded sample,
    searched ``NPROBE`` lists at a time."""
    import faiss

    X = np.ascontiguousarray(X, dtype=np.float32)
    n, d = X.shape
    if exact if exact is not None else n <= EXACT_MAX_CELLS:
        index = faiss.IndexFlatL2(d)
    else:
        nlist = int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
        index.cp.seed = seed
        sample = np.random.default_rng(seed).choice(n, min(n, TRAIN_PER_LIST * nlist), replace=False)
        index.train(X[np.sort(sample)])
        index.nprobe = NPROBE
    index.add(X)
    return index


def search(index, Y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest indexed cells of each row of ``Y`` (m x d): Euclidean distances (m x k, float32)
    and row numbers (m x k, int64), nearest first; with an IVF index, approximately."""
    D, idx = index.search(np.ascontiguousarray(Y, dtype=np.float32), k)
    return np.sqrt(np.maximum(D, 0)), idx


def knn(index, X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each indexed cell's ``k`` nearest cells, itself first: Euclidean distances (n x k, float32, recomputed
    from ``X`` in float64 for the pairs found, so they do not carry the index's rounding) and row numbers
    (n x k, int64). ``X`` (n x d) holds the cells ``index`` was built on, in order.

    An approximate search can rank a duplicate cell (distance 0) before the cell itself, or miss the cell;
    either way the cell takes column 0 at distance 0 and the ``k - 1`` other cells follow, nearest first.
    """
    n = len(X)
    dist, idx = search(index, X, k)
    if (idx < 0).any():  # IVF lists near an isolated cell held fewer than k cells
        raise ValueError("the neighbour search returned fewer than k neighbours; raise NPROBE")
    rows = np.arange(n)
    is_self = idx == rows[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k - 1)
    keep = np.ones((n, k), dtype=bool)
    keep[rows, drop] = False
    idx = np.hstack([rows[:, None], idx[keep].reshape(n, k - 1)])
    for start in range(0, n, DISTANCE_BLOCK):
        block = slice(start, start + DISTANCE_BLOCK)
        diff = X[idx[block]].astype(np.float64) - X[block, None, :]
        dist[block] = np.sqrt(np.einsum("ikd,ikd->ik", diff, diff))
    order = np.argsort(dist[:, 1:], axis=1, kind="stable") + 1
    idx[:, 1:] = np.take_along_axis(idx, order, axis=1)
    dist[:, 1:] = np.take_along_axis(dist, order, axis=1)
    return dist, idx


def umap_graph(dist: np.ndarray, idx: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """scanpy's neighbour graph (``method="umap"``) from each cell's ``k`` nearest cells, itself first
    (``dist`` float32 and ``idx``: n x k, as from :func:`knn`).

    Returns
    -------
    distances
        n x n CSR, float32: the ``k - 1`` nearest other cells of each row and their Euclidean distances
        (``obsp['distances']``).
    connectivities
        n x n CSR, float32, symmetric: UMAP's fuzzy union ``a + a^T - a * a^T`` of the per-cell membership
        strengths (``obsp['connectivities']``), as scanpy's ``neighbors`` computes it with umap-learn's
        functions, but with 32-bit indices and one temporary at a time, so that a graph of 1M cells costs
        about 0.5 GB beyond the result.
    """
    n, k = idx.shape
    indptr = np.arange(0, n * (k - 1) + 1, k - 1)
    cols = idx[:, 1:].ravel().astype(np.int32)
    distances = sp.csr_matrix((dist[:, 1:].ravel(), cols.copy(), indptr), shape=(n, n))
    distances.sort_indices()  # in place, on its own copy of the columns
    a = sp.csr_matrix((membership_strengths(dist).ravel(), cols, indptr), shape=(n, n))
    del cols
    a.eliminate_zeros()  # strengths that underflow, as scanpy drops them
    a_t = a.T.tocsr()
    both = a.multiply(a_t).tocsr()
    union = a + a_t
    del a, a_t
    connectivities = union - both
    connectivities.sort_indices()
    return distances, connectivities


def membership_strengths(dist: np.ndarray) -> np.ndarray:
    """UMAP's membership strength of each cell's neighbours (n x (k - 1), float32) from its distances to its
    ``k`` nearest cells, itself first (``dist``: n x k, as from :func:`knn`).

    For cell i, ``rho_i`` is its smallest positive neighbour distance and the bandwidth ``sigma_i`` solves
    ``sum_j exp(-max(0, d_ij - rho_i) / sigma_i) = log2(k)`` over its ``k - 1`` neighbours, by bisection
    (``BANDWIDTH_STEPS`` steps from 1, doubling while unbounded; stopped within ``BANDWIDTH_TOLERANCE``),
    then raised to at least ``MIN_BANDWIDTH_SCALE`` times the mean of its row of ``dist`` (of all of
    ``dist`` when every distance of the row is 0). The strength is ``exp(-(d_ij - rho_i) / sigma_i)``, and
    1 where ``d_ij <= rho_i``. These are umap-learn's rules with local connectivity 1 (its
    ``smooth_knn_dist`` and ``compute_membership_strengths``), which scanpy's ``neighbors`` uses; computed
    here with numpy, block by block, so that no process compiles them.
    """
    n, k = dist.shape
    target = np.log2(k)
    out = np.empty((n, k - 1), dtype=np.float32)
    floor_all = MIN_BANDWIDTH_SCALE * float(np.mean(dist, dtype=np.float64))
    for start in range(0, n, MEMBERSHIP_BLOCK):
        d = np.asarray(dist[start : start + MEMBERSHIP_BLOCK], dtype=np.float64)
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


def save_index(index, path: str | Path) -> str:
    """Write ``index`` to ``path`` (faiss's own format, atomically); returns the file's SHA-256."""
    import faiss

    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    return _sha256(path)


def load_index(path: str | Path, *, sha256: str):
    """Read an index written by :func:`save_index`, after checking its SHA-256 against ``sha256``."""
    import faiss

    path = Path(path)
    if not path.exists():
        raise InputError(path, "not found", "Run `rlae-sc cluster` again to write the neighbour index.")
    if _sha256(path) != sha256:
        raise InputError(
            path, "does not match the checksum recorded with the reference", "Run `rlae-sc cluster` again."
        )
    return faiss.read_index(str(path))


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
