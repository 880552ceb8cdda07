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


def array_sha256(values: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and C-ordered bytes."""
    values = np.ascontiguousarray(values)
    digest = hashlib.sha256(f"{values.dtype.str}{values.shape}".encode())
    digest.update(values.tobytes())
    return digest.hexdigest()


def graph_sha256(graph) -> str:
    """SHA-256 of a sparse matrix (n x n) in canonical CSR form: shape, indptr, sorted indices, values."""
    csr = sp.csr_matrix(graph, copy=True)
    csr.sum_duplicates()
    csr.sort_indices()
    digest = hashlib.sha256(str(csr.shape).encode())
    for part in (csr.indptr.astype(np.int64), csr.indices.astype(np.int64), csr.data):
        digest.update(np.ascontiguousarray(part).tobytes())
    return digest.hexdigest()


def labels_sha256(labels) -> str:
    """SHA-256 of labels (n,) as text, one per line in cell order."""
    return hashlib.sha256("\n".join(map(str, labels)).encode()).hexdigest()


def result_fingerprints(adata: ad.AnnData) -> dict[str, str]:
    """Fingerprints of the clustered cells' results that are present: ``embedding`` (``obsm['X_rlae']``),
    ``graph`` (``obsp['connectivities']``), ``leiden`` (``obs['leiden']``) and ``umap`` (``obsm['X_umap']``)."""
    out = {}
    if EMBEDDING_KEY in adata.obsm:
        out["embedding"] = array_sha256(np.asarray(adata.obsm[EMBEDDING_KEY]))
    if "connectivities" in adata.obsp:
        out["graph"] = graph_sha256(adata.obsp["connectivities"])
    if "leiden" in adata.obs:
        out["leiden"] = labels_sha256(adata.obs["leiden"].astype(str))
    if "X_umap" in adata.obsm:
        out["umap"] = array_sha256(np.asarray(adata.obsm["X_umap"]))
    return out
