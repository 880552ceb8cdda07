"""SHA-256 fingerprints of a run's results, so that two runs (two machines, thread counts, users) can be
compared by one line of their ``metrics.json``.

Each fingerprint hashes the exact bytes of one result in a fixed layout: the array's dtype, shape and
C-ordered values; for a sparse graph, its canonical CSR form (sorted indices); for clusters, the labels as
text in cell order. Equal fingerprints mean equal results to the last bit.
"""

from __future__ import annotations

import hashlib

import anndata as ad
import numpy as np
import scipy.sparse as sp

from rlae_sc.keys import EMBEDDING_KEY

HASH_ROWS = 1_048_576  # rows (or entries) hashed at a time, so that no copy of a whole result is made


def array_sha256(values) -> str:
    """SHA-256 of an array's dtype, shape and C-ordered bytes; ``values`` may be an h5py dataset, read
    :data:`HASH_ROWS` rows at a time."""
    digest = hashlib.sha256(f"{np.dtype(values.dtype).str}{tuple(values.shape)}".encode())
    for start in range(0, len(values), HASH_ROWS):
        digest.update(np.ascontiguousarray(values[start : start + HASH_ROWS]).tobytes())
    return digest.hexdigest()


def graph_sha256(graph) -> str:
    """SHA-256 of a sparse matrix (n x n) in canonical CSR form: shape, indptr, sorted indices, values (indices
    as int64). A graph already in that form, in memory or on disk (:class:`rlae_sc.graph_file.CSRGroup`), is
    hashed in place, a block at a time."""
    in_place = getattr(graph, "has_canonical_format", False) and (sp.isspmatrix_csr(graph) or not sp.issparse(graph))
    csr = graph if in_place else sp.csr_matrix(graph, copy=True)  # not sparse: on disk (rlae_sc.graph_file)
    if not in_place:
        csr.sum_duplicates()
        csr.sort_indices()
    digest = hashlib.sha256(str(csr.shape).encode())
    for part, dtype in ((csr.indptr, np.int64), (csr.indices, np.int64), (csr.data, csr.data.dtype)):
        for start in range(0, len(part), HASH_ROWS):
            digest.update(np.ascontiguousarray(part[start : start + HASH_ROWS], dtype=dtype).tobytes())
    return digest.hexdigest()


def labels_sha256(labels) -> str:
    """SHA-256 of labels (n,) as text, one per line in cell order."""
    return hashlib.sha256("\n".join(map(str, labels)).encode()).hexdigest()


def result_fingerprints(adata: ad.AnnData, *, embedding=None, graph=None) -> dict[str, str]:
    """Fingerprints of the clustered cells' results that are present: ``embedding`` (``obsm['X_rlae']``, or
    the ``embedding`` given, e.g. that dataset of an ``.h5ad`` on disk), ``graph`` (``obsp['connectivities']``,
    or the ``graph`` given), ``leiden`` (``obs['leiden']``) and ``umap`` (``obsm['X_umap']``)."""
    out = {}
    embedding = adata.obsm.get(EMBEDDING_KEY) if embedding is None else embedding
    if embedding is not None:
        out["embedding"] = array_sha256(embedding)
    graph = adata.obsp.get("connectivities") if graph is None else graph
    if graph is not None:
        out["graph"] = graph_sha256(graph)
    if "leiden" in adata.obs:
        out["leiden"] = labels_sha256(adata.obs["leiden"].astype(str))
    if "X_umap" in adata.obsm:
        out["umap"] = array_sha256(np.asarray(adata.obsm["X_umap"]))
    return out
