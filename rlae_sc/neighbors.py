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


def knn_graph(index, X: np.ndarray, k: int) -> sp.csr_matrix:
    """Distances from each row of ``X`` (the indexed cells, n x d) to its ``k`` nearest cells, itself
    included, as a CSR matrix (n x n, k entries a row): the form scanpy's ``neighbors`` takes from a transformer."""
    D, idx = search(index, X, k)
    n = len(X)
    if (idx < 0).any():  # IVF lists near an isolated cell held fewer than k cells
        raise ValueError("the neighbour search returned fewer than k neighbours; raise NPROBE")
    return sp.csr_matrix((D.ravel(), idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))


class IndexTransformer:
    """scanpy's ``transformer`` for :func:`scanpy.pp.neighbors`: the kNN graph of the cells from
    :func:`build_index` (scikit-learn's ``KNeighborsTransformer`` interface, ``mode="distance"``)."""

    def __init__(self, n_neighbors: int, *, seed: int = 0) -> None:
        self.n_neighbors = n_neighbors
        self.seed = seed
        self.index_ = None

    def get_params(self, deep: bool = True) -> dict:
        return {"n_neighbors": self.n_neighbors, "seed": self.seed}

    def fit_transform(self, X: np.ndarray) -> sp.csr_matrix:
        self.index_ = build_index(X, seed=self.seed)
        return knn_graph(self.index_, X, self.n_neighbors)


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
