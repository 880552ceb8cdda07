"""Rows to read in blocks: the protocol every pass over cells reads (:class:`Rows`), and its plain sources.

A pass (:func:`rlae_sc.engine.run_pass`) reads the rows of a matrix ``start:stop`` at a time from any object with
``shape``, ``read(start, stop)`` and ``fingerprint()``. Besides :class:`InMemory` and :class:`H5adMatrix` here, the
scaled rows of the recipe (:class:`rlae_sc.preprocess.ScaledRows`), their sparse form
(:class:`rlae_sc.affine.AffineRows`), the permuted and deflated rows of the noise floor
(:class:`rlae_sc.noise_floor.PermutedRows`, :class:`~rlae_sc.noise_floor.DeflatedRows`) and the atlas stores
(:class:`rlae_sc.atlas.ZarrMatrix`, :class:`~rlae_sc.atlas.SomaMatrix`, :class:`~rlae_sc.atlas.RowSubset`) are
rows. Rows that a Dask worker reads are small and picklable and open their file themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import h5py
import numpy as np
import scipy.sparse as sp

from rlae_sc.errors import InputError

Block = np.ndarray | sp.csr_matrix


@runtime_checkable
class Rows(Protocol):
    """Rows of a matrix (cells x genes) read a block at a time.

    ``shape``: (rows, columns). ``read(start, stop)``: the rows ``start:stop`` (a dense array, a CSR matrix, or
    a block its products know, such as :class:`rlae_sc.affine.AffineBlock`). ``fingerprint()``: a string that
    changes when the rows do (the file, its size and modification time, the transformation applied), so that a
    checkpointed pass resumes only over the same rows; rows that cannot say raise ``ValueError``.
    """

    @property
    def shape(self) -> tuple[int, int]: ...

    def read(self, start: int, stop: int): ...

    def fingerprint(self) -> str: ...


@dataclass(frozen=True)
class InMemory(Rows):
    """Rows of an array or CSR matrix held in memory (serial passes only)."""

    array: object

    @property
    def shape(self) -> tuple[int, int]:
        return self.array.shape

    def read(self, start: int, stop: int) -> Block:
        return self.array[start:stop]

    def fingerprint(self) -> str:
        raise ValueError("passes over a matrix in memory cannot be checkpointed: give an H5adMatrix")


@dataclass(frozen=True)
class H5adMatrix(Rows):
    """Rows of the matrix stored at ``key`` (``"X"`` or ``"layers/<name>"``) in an ``.h5ad`` file.

    Only the requested rows are read (dense datasets and CSR groups); the
    object is small and picklable, so Dask workers open the file themselves.
    """

    path: str
    key: str = "X"

    @property
    def shape(self) -> tuple[int, int]:
        with h5py.File(self.path, "r") as f:
            elem = f[self.key]
            return tuple(int(v) for v in (elem.shape if isinstance(elem, h5py.Dataset) else elem.attrs["shape"]))

    def fingerprint(self) -> str:
        """Path, key, size and modification time: a checkpoint of a pass over another file is not resumed."""
        st = os.stat(self.path)
        return f"{os.path.abspath(self.path)}:{self.key}:{st.st_size}:{st.st_mtime_ns}"

    def read(self, start: int, stop: int) -> Block:
        with h5py.File(self.path, "r") as f:
            elem = f[self.key]
            if isinstance(elem, h5py.Dataset):
                return elem[start:stop]
            if elem.attrs.get("encoding-type") != "csr_matrix":
                raise InputError(
                    self.path,
                    f"{self.key} is stored as {elem.attrs.get('encoding-type')}, and only CSR or dense rows can be "
                    "streamed",
                    "Rewrite the file with cells as CSR rows (adata.X = scipy.sparse.csr_matrix(adata.X)).",
                )
            lo, hi = (int(v) for v in elem["indptr"][[start, stop]])
            indptr = elem["indptr"][start : stop + 1] - lo
            n_genes = int(elem.attrs["shape"][1])
            return sp.csr_matrix((elem["data"][lo:hi], elem["indices"][lo:hi], indptr), shape=(stop - start, n_genes))


def h5ad_matrix(path: str, layer: str | None = None) -> H5adMatrix:
    """The matrix of an ``.h5ad`` file (``X``, or ``layer``), checked to exist, for streaming passes."""
    key = "X" if layer is None else f"layers/{layer}"
    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                raise InputError(path, f"has no matrix at {key!r}", "Store the counts in X or name an existing layer.")
    except OSError as exc:
        raise InputError(path, f"cannot be opened as HDF5 ({exc})", "Re-export the .h5ad file.") from None
    return H5adMatrix(str(path), key)


def matrix_of(adata) -> InMemory | H5adMatrix:
    """The rows of ``adata.X``: read from its file when ``adata`` is backed, else from memory."""
    if adata.isbacked:
        return H5adMatrix(str(adata.filename), "X")
    return InMemory(adata.X)


def as_rows(X) -> Rows:
    """``X`` when it is :class:`Rows`, else an array (or CSR matrix) wrapped as :class:`InMemory`."""
    return X if isinstance(X, Rows) else InMemory(X)
