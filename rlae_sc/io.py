"""Reading count matrices in the common single-cell formats, with validation; atomic writes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from rlae_sc.atomic import atomic_path
from rlae_sc.errors import InputError
from rlae_sc.params import ReadParams

INTEGER_TOLERANCE = 1e-6


FORMATS = ("h5ad", "10x_mtx", "10x_h5", "loom", "csv")


def detect_format(path: Path) -> str:
    """The format of ``path`` from its name: a 10x matrix directory, ``.h5ad``, ``.h5``, ``.loom``,
    or ``.csv``/``.tsv``/``.txt`` (optionally ``.gz``)."""
    if path.is_dir():
        return "10x_mtx"
    name = path.name.lower().removesuffix(".gz")
    for suffix, fmt in (
        (".h5ad", "h5ad"),
        (".h5", "10x_h5"),
        (".loom", "loom"),
        (".csv", "csv"),
        (".tsv", "csv"),
        (".txt", "csv"),
    ):
        if name.endswith(suffix):
            return fmt
    raise InputError(
        path,
        "unrecognised file type",
        "Give an .h5ad, a 10x matrix directory, a 10x .h5, a .loom, or a .csv/.tsv (optionally .gz).",
    )


def read(
    path: str | Path,
    *,
    layer: str | None = ReadParams.layer,
    input_kind: str = ReadParams.input_kind,
    orientation: str = ReadParams.orientation,
    var_names: str = ReadParams.var_names,
) -> ad.AnnData:
    """Read a matrix of cells x genes in any supported format and validate its values.

    Parameters
    ----------
    path
        ``.h5ad``; a 10x Cell Ranger matrix directory (``matrix.mtx[.gz]`` with
        ``features.tsv[.gz]`` or the older ``genes.tsv``, and ``barcodes.tsv[.gz]``);
        a 10x ``.h5``; a ``.loom``; or a dense ``.csv``/``.tsv`` (optionally gzipped)
        with cell or gene names in the first column and a header row.
    layer, input_kind, orientation, var_names
        The reader options (:class:`rlae_sc.params.ReadParams`). Counts must be
        whole numbers within 1e-6.

    Returns
    -------
    AnnData with the validated matrix in ``X`` (CSR, float32) and unique gene names.
    """
    path = Path(path)
    ReadParams.of(layer=layer, input_kind=input_kind, orientation=orientation, var_names=var_names, source=path)
    if not path.exists():
        raise InputError(path, "file not found", "Check the path in the config or on the command line.")
    fmt = detect_format(path)
    if layer is not None and fmt not in ("h5ad", "loom"):
        raise InputError(path, f"layers exist only in .h5ad and .loom files, not in {fmt}", "Leave layer unset.")
    try:
        adata = _READERS[fmt](path, layer=layer, orientation=orientation, var_names=var_names)
    except InputError:
        raise
    except Exception as exc:  # readers raise many types for damaged files
        raise InputError(
            path,
            f"cannot be read as {fmt} ({type(exc).__name__}: {exc})",
            "The file may be truncated, damaged or of another format; re-export it.",
        ) from None
    validate_matrix(adata.X, source=path, input_kind=input_kind, names=(adata.obs_names, adata.var_names))
    if not adata.var_names.is_unique:
        n_dup = int(adata.var_names.duplicated().sum())
        warnings.warn(f"{path}: {n_dup} duplicate gene names made unique by appending '-1', '-2', ...", stacklevel=2)
        adata.var_names_make_unique()
    if not adata.obs_names.is_unique:
        adata.obs_names_make_unique()
    return adata


def _matrix_adata(X, obs: pd.DataFrame, var: pd.DataFrame) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are handled, with our own warning, by read()
        return ad.AnnData(X=sp.csr_matrix(X, dtype=np.float32), obs=obs, var=var)


def _read_h5ad(path: Path, *, layer, **_) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = ad.read_h5ad(path)
    if layer is not None:
        if layer not in adata.layers:
            raise InputError(
                path,
                f"has no layer {layer!r} (layers: {sorted(adata.layers) or 'none'})",
                "Name an existing layer, or leave layer unset to use X.",
            )
        matrix = adata.layers[layer]
    else:
        matrix = adata.X
    if matrix is None:
        raise InputError(path, "has no matrix in X", "Store the counts in X or name a layer.")
    return _matrix_adata(matrix, adata.obs.copy(), adata.var.copy())


def _read_10x_mtx(path: Path, *, var_names, **_) -> ad.AnnData:
    files = {f.name for f in path.iterdir()}
    if not files & {"matrix.mtx", "matrix.mtx.gz"}:
        raise InputError(
            path,
            "is a directory without matrix.mtx or matrix.mtx.gz",
            "Point to the Cell Ranger folder that holds matrix.mtx(.gz), features.tsv(.gz) or "
            "genes.tsv, and barcodes.tsv(.gz).",
        )
    for need in (("barcodes.tsv", "barcodes.tsv.gz"), ("features.tsv", "features.tsv.gz", "genes.tsv")):
        if not files & set(need):
            raise InputError(path, f"has no {' or '.join(need)}", "Copy the complete Cell Ranger output folder.")
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = sc.read_10x_mtx(path, var_names=var_names, make_unique=False)
    return _matrix_adata(adata.X, adata.obs, adata.var)


def _read_10x_h5(path: Path, *, var_names, **_) -> ad.AnnData:
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = sc.read_10x_h5(path)
    if var_names == "gene_ids":
        adata.var["gene_symbols"] = adata.var_names
        adata.var_names = adata.var["gene_ids"].astype(str)
    return _matrix_adata(adata.X, adata.obs, adata.var)


def _read_loom(path: Path, *, layer, **_) -> ad.AnnData:
    """Loom (genes x cells on disk): ``/matrix`` or ``/layers/<layer>``; names from the usual attributes."""
    import h5py

    with h5py.File(path, "r") as f:
        data = f["matrix"] if layer is None else f.get(f"layers/{layer}")
        if data is None:
            raise InputError(path, f"has no layer {layer!r}", "Name an existing layer, or leave layer unset.")
        X = np.asarray(data[...]).T

        def names(group: str, keys: tuple[str, ...], n: int, prefix: str) -> list[str]:
            for key in keys:
                if key in f.get(group, {}):
                    return [v.decode() if isinstance(v, bytes) else str(v) for v in f[group][key][...]]
            return [f"{prefix}{i}" for i in range(n)]

        cells = names("col_attrs", ("CellID", "obs_names", "cell_names"), X.shape[0], "cell")
        genes = names("row_attrs", ("Gene", "var_names", "gene_names", "Accession"), X.shape[1], "gene")
    return _matrix_adata(X, pd.DataFrame(index=pd.Index(cells)), pd.DataFrame(index=pd.Index(genes)))


def _read_text(path: Path, *, orientation, **_) -> ad.AnnData:
    name = path.name.lower().removesuffix(".gz")
    sep = "," if name.endswith(".csv") else "\t"
    table = pd.read_csv(path, sep=sep, index_col=0)
    if orientation == "genes_x_cells":
        table = table.T
    bad = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    if bad:
        raise InputError(
            path,
            f"column {bad[0]!r} is not numeric",
            "The first column must hold names and every other column numbers; check the separator.",
        )
    return _matrix_adata(
        table.to_numpy(dtype=np.float64),
        pd.DataFrame(index=table.index.astype(str)),
        pd.DataFrame(index=table.columns.astype(str)),
    )


_READERS = {"h5ad": _read_h5ad, "10x_mtx": _read_10x_mtx, "10x_h5": _read_10x_h5, "loom": _read_loom, "csv": _read_text}


def validate_matrix(X: sp.csr_matrix, *, source: str | Path, input_kind: str, names: tuple) -> None:
    """Raise :class:`InputError` for an empty matrix, NaN/inf, negatives, or non-integer counts."""
    cells, genes = names
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(
            source,
            f"the matrix is empty ({X.shape[0]} cells x {X.shape[1]} genes)",
            "Check that the file holds cells as rows and genes as columns.",
        )
    data = X.data

    def where(mask: np.ndarray) -> str:
        pos = int(np.flatnonzero(mask)[0])
        row = int(np.searchsorted(X.indptr, pos, side="right") - 1)
        return f"first at cell {cells[row]!r}, gene {genes[X.indices[pos]]!r}"

    bad = ~np.isfinite(data)
    if bad.any():
        raise InputError(
            source,
            f"{int(bad.sum())} NaN or infinite values ({where(bad)})",
            "Remove or repair those entries before running rlae-sc.",
        )
    bad = data < 0
    if bad.any():
        raise InputError(
            source,
            f"{int(bad.sum())} negative values ({where(bad)})",
            "Give raw counts, or log-normalised values (non-negative), not scaled data.",
        )
    if input_kind == "counts":
        bad = np.abs(data - np.round(data)) > INTEGER_TOLERANCE
        if bad.any():
            raise InputError(
                source,
                f"{int(bad.sum())} non-integer values in a counts input ({where(bad)})",
                "If the data are already log-normalised, declare input_kind: log_normalized "
                "(CLI: --input-kind log_normalized).",
            )


def write_h5ad(adata: ad.AnnData, path: str | Path, *, x_from: str | Path | None = None) -> None:
    """Write ``adata`` to ``path`` atomically (gzip-free, fast).

    ``x_from``: an ``.h5ad`` whose ``X`` is copied into the file as it is, on
    disk, never loaded (``adata`` then has no ``X`` of its own, e.g. read backed).
    """
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
        if x_from is not None:
            with h5py.File(x_from, "r") as src, h5py.File(tmp, "a") as dst:
                if "X" in src:
                    src.copy(src["X"], dst, "X")


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
