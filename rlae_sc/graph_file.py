"""A neighbour graph set aside on disk while the cluster stage does the rest of its work.

At five million cells the two graphs (``obsp['distances']`` and ``obsp['connectivities']``) take 1.6 GB. Once
built, the stage needs of them only the neighbours' columns, a block at a time (batch mixing, label agreement),
and their fingerprint; they go to a file of their own in anndata's sparse encoding, are read back in blocks for
those, and are copied from it into the stage's output on disk.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import scipy.sparse as sp

from rlae_sc.atomic import atomic_path

GRAPHS = ("distances", "connectivities")


class CSRGroup:
    """A CSR matrix in an open h5py group (anndata's ``csr_matrix`` encoding), read by slices: ``indptr``,
    ``indices`` and ``data`` are h5py datasets. Written in canonical form (sorted columns, none repeated)."""

    has_canonical_format = True

    def __init__(self, group: h5py.Group):
        self.indptr, self.indices, self.data = group["indptr"], group["indices"], group["data"]
        self.shape = tuple(int(n) for n in group.attrs["shape"])


def spill_graph(graph: tuple, path: str | Path) -> tuple[CSRGroup, CSRGroup, str | None]:
    """Write the two graphs of ``graph`` (distances, connectivities, index SHA-256: as from
    :func:`rlae_sc.cluster.neighbour_graph`) to ``path`` as ``obsp/distances`` and ``obsp/connectivities``;
    returns the same triple with the graphs read from the file (kept open for reading)."""
    from anndata.io import write_elem

    for name, matrix in zip(GRAPHS, graph[:2], strict=True):
        if not (sp.isspmatrix_csr(matrix) and matrix.has_canonical_format):
            raise ValueError(f"the {name} graph must be a CSR matrix in canonical form")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name, matrix in zip(GRAPHS, graph[:2], strict=True):
            write_elem(f, f"obsp/{name}", matrix)
    f = h5py.File(path, "r")
    return CSRGroup(f["obsp/distances"]), CSRGroup(f["obsp/connectivities"]), graph[2]


def close_graph(graph: tuple) -> None:
    """Close the file of a graph from :func:`spill_graph`."""
    graph[0].indptr.file.close()
