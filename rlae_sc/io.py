"""Reading count matrices with validation, and writing outputs atomically."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

from rlae_sc.errors import InputError

INPUT_KINDS = ("counts", "log_normalized")
INTEGER_TOLERANCE = 1e-6


def read(path: str | Path, *, layer: str | None = None, input_kind: str = "counts") -> ad.AnnData:
    """Read an ``.h5ad`` file of cells x genes and validate its values.

    Parameters
    ----------
    path
        An ``.h5ad`` file.
    layer
        Take the matrix from ``layers[layer]`` instead of ``X``.
    input_kind
        ``"counts"`` (raw UMI or read counts: whole numbers within 1e-6) or
        ``"log_normalized"`` (already ``log1p`` of normalised counts).

    Returns
    -------
    AnnData with the validated matrix in ``X`` (CSR, float32), unique gene names.
    """
    path = Path(path)
    if input_kind not in INPUT_KINDS:
        raise InputError(path, f"unknown input_kind {input_kind!r}", f"Use one of {', '.join(INPUT_KINDS)}.")
    if not path.exists():
        raise InputError(path, "file not found", "Check the path in the config or on the command line.")
    if path.suffix != ".h5ad":
        raise InputError(path, f"unsupported file type {path.suffix!r}", "Convert it to .h5ad (AnnData) first.")
    try:
        adata = ad.read_h5ad(path)
    except Exception as exc:  # h5py and anndata raise many types for damaged files
        raise InputError(path, f"cannot be read as .h5ad ({type(exc).__name__}: {exc})",
                         "The file may be truncated or not an AnnData file; re-export it.") from None
    if layer is not None:
        if layer not in adata.layers:
            raise InputError(path, f"has no layer {layer!r} (layers: {sorted(adata.layers) or 'none'})",
                             "Name an existing layer, or leave layer unset to use X.")
        matrix = adata.layers[layer]
    else:
        matrix = adata.X
    if matrix is None:
        raise InputError(path, "has no matrix in X", "Store the counts in X or name a layer.")
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    adata = ad.AnnData(X=matrix, obs=adata.obs.copy(), var=adata.var.copy())
    validate_matrix(adata.X, source=path, input_kind=input_kind, names=(adata.obs_names, adata.var_names))
    if not adata.var_names.is_unique:
        n_dup = int(adata.var_names.duplicated().sum())
        warnings.warn(f"{path}: {n_dup} duplicate gene names made unique by appending '-1', '-2', ...", stacklevel=2)
        adata.var_names_make_unique()
    if not adata.obs_names.is_unique:
        adata.obs_names_make_unique()
    return adata


def validate_matrix(X: sp.csr_matrix, *, source: str | Path, input_kind: str, names: tuple) -> None:
    """Raise :class:`InputError` for an empty matrix, NaN/inf, negatives, or non-integer counts."""
    cells, genes = names
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(source, f"the matrix is empty ({X.shape[0]} cells x {X.shape[1]} genes)",
                         "Check that the file holds cells as rows and genes as columns.")
    data = X.data

    def where(mask: np.ndarray) -> str:
        pos = int(np.flatnonzero(mask)[0])
        row = int(np.searchsorted(X.indptr, pos, side="right") - 1)
        return f"first at cell {cells[row]!r}, gene {genes[X.indices[pos]]!r}"

    bad = ~np.isfinite(data)
    if bad.any():
        raise InputError(source, f"{int(bad.sum())} NaN or infinite values ({where(bad)})",
                         "Remove or repair those entries before running rlae-sc.")
    bad = data < 0
    if bad.any():
        raise InputError(source, f"{int(bad.sum())} negative values ({where(bad)})",
                         "Give raw counts, or log-normalised values (non-negative), not scaled data.")
    if input_kind == "counts":
        bad = np.abs(data - np.round(data)) > INTEGER_TOLERANCE
        if bad.any():
            raise InputError(source, f"{int(bad.sum())} non-integer values in a counts input ({where(bad)})",
                             "If the data are already log-normalised, declare input_kind: log_normalized "
                             "(CLI: --input-kind log_normalized).")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the final file the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_h5ad(adata: ad.AnnData, path: str | Path) -> None:
    """Write ``adata`` to ``path`` atomically (gzip-free, fast)."""
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)


def write_json(obj: dict, path: str | Path) -> None:
    """Write a JSON object atomically, indented, with keys in insertion order."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
