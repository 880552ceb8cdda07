"""Nearest neighbours of cells in the embedding: exact up to ``EXACT_MAX_CELLS``, approximate above.

The index is faiss's: a flat (exact) index for small data, an inverted-file
index (IVF-flat) above ``EXACT_MAX_CELLS`` cells. IVF-flat was chosen by
``benchmarks/knn.py`` (``benchmarks/knn.md``): at the same recall it was the
fastest of pynndescent, hnswlib and faiss on two cores, its results do not
depend on the number of threads (an HNSW graph built on several threads
does), and faiss saves it in its own binary format, so a saved index is read
without unpickling anything.

faiss computes the distances of many cells to many vectors (k-means of the coarse quantiser, assigning cells to
lists, choosing the lists a cell searches, a flat index's search) with BLAS, and its BLAS splits a product among
its threads in a way that changes the last bits of some distances: with one thread and with two, a cell near the
border of two lists searches other lists, and the graph changes. So faiss always runs single-threaded here, on
fixed blocks of cells, and the blocks are spread over :func:`_workers` threads of our own
(:func:`_blockwise`): every distance is computed by the same single-threaded code whatever the number of
threads, which only sets how many blocks run at once. The k-means training is one call, run on one thread.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from rlae_sc.atomic import atomic_path
from rlae_sc.embedding_rows import as_rows
from rlae_sc.errors import InputError

EXACT_MAX_CELLS = 50_000  # up to this many cells, neighbours are exact
NPROBE = 16  # IVF lists searched per query (recall@15 >= 0.95 in benchmarks/knn.md)
TRAIN_PER_LIST = 64  # cells per IVF list used to train the coarse quantiser
SEARCH_BLOCK = 16_384  # cells searched at a time (their neighbours' vectors: ~100 MB at k=15, d=50)


def build_index(X, *, seed: int = 0, exact: bool | None = None):
    """A faiss index over the rows of ``X`` (n x d, Euclidean; an array or
    :class:`~rlae_sc.embedding_rows.EmbeddingRows`, added block by block): exact (``exact=None``: when
    ``n <= EXACT_MAX_CELLS``), else IVF-flat with ``4 sqrt(n)`` lists trained on a seeded sample, searched
    ``NPROBE`` lists at a time."""
    import faiss

    rows = as_rows(X)
    n, d = rows.shape
    if exact if exact is not None else n <= EXACT_MAX_CELLS:
        index = faiss.IndexFlatL2(d)
        for _, block in rows.blocks():
            index.add(block)
        return index
    nlist = int(4 * np.sqrt(n))
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
    index.cp.seed = seed
    sample = np.random.default_rng(seed).choice(n, min(n, TRAIN_PER_LIST * nlist), replace=False)
    with _one_thread():
        index.train(rows.take(np.sort(sample)))
    index.nprobe = NPROBE

    def assign(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # each cell's list, by the coarse quantiser
        return block, index.quantizer.search(block, 1)[1].ravel()

    for block, lists in _blockwise(assign, (block for _, block in rows.blocks(SEARCH_BLOCK))):
        index.add_core(len(block), faiss.swig_ptr(block), None, faiss.swig_ptr(lists))  # in row order
    return index


def search(index, Y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest indexed cells of each row of ``Y`` (m x d): Euclidean distances (m x k, float32)
    and row numbers (m x k, int64), nearest first; with an IVF index, approximately."""
    Y = np.ascontiguousarray(Y, dtype=np.float32)
    blocks = (Y[start : start + SEARCH_BLOCK] for start in range(0, len(Y), SEARCH_BLOCK))
    found = list(_blockwise(lambda block: index.search(block, k), blocks))
    D = np.concatenate([f[0] for f in found]) if found else np.empty((0, k), dtype=np.float32)
    idx = np.concatenate([f[1] for f in found]) if found else np.empty((0, k), dtype=np.int64)
    return np.sqrt(np.maximum(D, 0)), idx


def knn(index, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each indexed cell's ``k - 1`` nearest other cells, nearest first: Euclidean distances (n x (k - 1),
    float32, recomputed in float64 from the indexed vectors for the pairs found, so they do not carry the
    index's rounding) and row numbers (n x (k - 1), int32), for the n cells ``index`` holds. The cells are read
    back from the index and searched about :data:`SEARCH_BLOCK` at a time (:func:`_query_blocks`), so nothing of
    size n x d is made here.

    An approximate search can rank a duplicate cell (distance 0) before the cell itself, or miss the cell;
    either way the cell is left out and its ``k - 1`` nearest other cells are kept.
    """
    return nearest_others(index, k, _query_blocks(index))


def nearest_others(index, k: int, queries: Iterable) -> tuple[np.ndarray, np.ndarray]:
    """:func:`knn` with the indexed cells searched in the blocks ``queries`` gives, in any order: pairs of their row
    numbers (int64) and vectors (float32, as indexed), which together hold every indexed cell once. :func:`knn`
    gives them list by list; ``benchmarks/search_order.py`` compares row order."""
    import faiss

    n = index.ntotal
    ivf = isinstance(index, faiss.IndexIVF)
    if ivf:
        index.make_direct_map()  # the found cells' vectors are read back from the index by row number
    dist = np.empty((n, k - 1), dtype=np.float32)
    idx = np.empty((n, k - 1), dtype=np.int32)

    def searched(query: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return *query, index.search(query[1], k)[1]

    for cells, block, found in _blockwise(searched, queries):
        m = len(block)
        if (found < 0).any():  # IVF lists near an isolated cell held fewer than k cells
            raise ValueError("the neighbour search returned fewer than k neighbours; raise NPROBE")
        is_self = found == cells[:, None]
        drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k - 1)
        keep = np.ones((m, k), dtype=bool)
        keep[np.arange(m), drop] = False
        others = found[keep].reshape(m, k - 1)
        vectors = index.reconstruct_batch(others.ravel()).reshape(m, k - 1, -1)
        diff = vectors.astype(np.float64) - block[:, None, :]
        d = np.sqrt(np.einsum("ikd,ikd->ik", diff, diff))
        order = np.argsort(d, axis=1, kind="stable")
        dist[cells] = np.take_along_axis(d, order, axis=1)
        idx[cells] = np.take_along_axis(others, order, axis=1)
    if ivf:
        index.set_direct_map_type(faiss.DirectMap.NoMap)  # saved as it was built
    return dist, idx


def _query_blocks(index) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The cells of ``index`` as query blocks of about :data:`SEARCH_BLOCK` cells: their row numbers (int64) and
    vectors (float32, read from the index). A flat index gives them in row order; an IVF index list by list, so
    that the cells of one block lie near the same few lists and the lists they probe stay in the processor's cache
    (about 1.6 times as fast as row order at 1M cells: ``benchmarks/search_order.json``); the results do not
    depend on the order."""
    import faiss

    if not isinstance(index, faiss.IndexIVF):
        for start in range(0, index.ntotal, SEARCH_BLOCK):
            m = min(SEARCH_BLOCK, index.ntotal - start)
            yield np.arange(start, start + m), index.reconstruct_n(start, m)
        return
    lists, d = index.invlists, index.d
    cells, vectors, size = [], [], 0
    for number in range(index.nlist):
        m = lists.list_size(number)
        ids, codes = lists.get_ids(number), lists.get_codes(number)
        cells.append(faiss.rev_swig_ptr(ids, m).copy())
        vectors.append(faiss.rev_swig_ptr(codes, m * lists.code_size).view(np.float32).reshape(m, d).copy())
        lists.release_ids(number, ids)
        lists.release_codes(number, codes)
        size += m
        if size >= SEARCH_BLOCK:
            yield np.concatenate(cells), np.concatenate(vectors)
            cells, vectors, size = [], [], 0
    if size:
        yield np.concatenate(cells), np.concatenate(vectors)


def _workers() -> int:
    """The threads faiss would use (``OMP_NUM_THREADS``, else the cores this process may run on)."""
    import faiss

    return max(1, faiss.omp_get_max_threads())


@contextmanager
def _one_thread():
    """faiss (its OpenMP loops and its BLAS, which follows them) on one thread in the calling thread, for the
    duration. OpenMP's thread count is kept per thread, so other threads are not affected."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _blockwise(fn: Callable, blocks: Iterable) -> Iterator:
    """``fn(block)`` for each block, in order, computed on :func:`_workers` threads that each run faiss on one thread
    (faiss releases the GIL); at most two blocks per thread are read ahead, so memory stays a few blocks."""
    workers = _workers()
    if workers == 1:
        with _one_thread():
            yield from map(fn, blocks)
        return
    import faiss

    with ThreadPoolExecutor(workers, initializer=faiss.omp_set_num_threads, initargs=(1,)) as pool:
        pending: deque = deque()
        for block in blocks:
            pending.append(pool.submit(fn, block))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


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
