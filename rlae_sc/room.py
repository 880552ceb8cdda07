"""Room on disk for a stage's output, checked before the pass that writes it, and room in memory for the one stage
that holds every cell at once (clustering), so that an atlas run stops with a clear message at its start instead of
failing hours later on a full disk or in the kernel's out-of-memory killer.
"""

from __future__ import annotations

import ctypes
import shutil
from pathlib import Path

from rlae_sc.errors import InputError

HEADROOM = 1.1  # free space asked for, as a multiple of the estimated size
CSR_BYTES_PER_VALUE = 8  # a float32 value and its int32 column index
CSR_BYTES_PER_ROW = 8  # one int64 entry of indptr
# the cluster stage's memory (rlae_sc.cluster, rlae_sc.pipeline.cluster_file): the process with its libraries and
# obs, then per cell the larger of two phases, counted here as their sum: the neighbour search (the faiss index's
# float32 copy of the embedding, per dimension; the neighbours' ids and distances, per neighbour) and the graph (ids,
# distances, strengths, the transposed edges and the fuzzy union: 32 bytes per neighbour). Measured with
# /usr/bin/time (50 dimensions, 15 neighbours): 1.18 GB at 1M cells and 2.72 GB at 5M, against 1.18 and 3.9 GB
CLUSTER_BASE_BYTES = 500_000_000
CLUSTER_BYTES_PER_DIM = 4
CLUSTER_BYTES_PER_NEIGHBOUR = 32


def free_bytes(path: str | Path) -> int:
    """Free bytes on the file system that holds ``path`` (its nearest existing folder when it does not exist)."""
    folder = Path(path).resolve()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_disk(path: str | Path, need: float, *, what: str) -> None:
    """Raise :class:`~rlae_sc.errors.InputError` naming ``path`` unless its disk has :data:`HEADROOM` times
    ``need`` bytes free; ``what`` names the output in the message."""
    free = free_bytes(path)
    if need * HEADROOM > free:
        raise InputError(
            path,
            f"writing {what} needs about {need / 1e9:.2f} GB and its disk has {free / 1e9:.2f} GB free",
            "Free space on that disk or write the output to a larger one (--out, or the workflow's results folder)",
        )


def available_memory() -> int | None:
    """Bytes of memory the kernel can give a new process without swapping (``MemAvailable`` of ``/proc/meminfo``);
    ``None`` where that is not known (not Linux)."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
    except OSError:
        return None
    value = fields.get("MemAvailable", "").split()
    return int(value[0]) * 1024 if value else None


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``; nothing elsewhere). Memory freed
    in many small pieces, such as a faiss index's inverted lists, otherwise stays in the process's resident
    set."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.malloc_trim(0)


def check_memory(source: str | Path, need: float, *, what: str, fix: str) -> None:
    """Raise :class:`~rlae_sc.errors.InputError` naming ``source`` unless :data:`HEADROOM` times ``need`` bytes of
    memory are available (:func:`available_memory`; no check where it is not known); ``what`` names the work."""
    available = available_memory()
    if available is not None and need * HEADROOM > available:
        raise InputError(
            source,
            f"{what} needs about {need / 1e9:.1f} GB of memory and {available / 1e9:.1f} GB is available",
            fix,
        )


def cluster_bytes(n_cells: int, n_dims: int, n_neighbors: int) -> int:
    """The cluster stage's memory (bytes, estimated) for ``n_cells`` cells, ``n_dims`` embedding dimensions and
    ``n_neighbors`` neighbours per cell."""
    return CLUSTER_BASE_BYTES + n_cells * (CLUSTER_BYTES_PER_DIM * n_dims + CLUSTER_BYTES_PER_NEIGHBOUR * n_neighbors)


def array_bytes(adata) -> int:
    """Bytes of an AnnData's arrays in memory (``X`` unless backed, ``layers``, ``obsm``, ``varm``, ``obsp``): about
    what writing it without compression takes."""

    def size(a) -> int:
        if hasattr(a, "indptr"):  # CSR or CSC
            return a.data.nbytes + a.indices.nbytes + a.indptr.nbytes
        return int(getattr(a, "nbytes", 0))

    arrays = [] if adata.isbacked or adata.X is None else [adata.X]
    for mapping in (adata.layers, adata.obsm, adata.varm, adata.obsp):
        arrays += list(mapping.values())
    return sum(size(a) for a in arrays)


def csr_bytes(n_rows: int, n_values: int) -> int:
    """Bytes of a float32 CSR matrix of ``n_rows`` rows holding ``n_values`` stored values."""
    return n_values * CSR_BYTES_PER_VALUE + (n_rows + 1) * CSR_BYTES_PER_ROW
