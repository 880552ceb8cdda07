"""Atlas inputs streamed by the pass engine: anndata zarr stores and TileDB-SOMA experiments, and ``obs`` filters.

Each row source here is :class:`~rlae_sc.rows.Rows` (``shape``, ``read(start, stop)``, ``fingerprint()``), with
its ``path``: :func:`rlae_sc.engine.run_pass` visits its cells in blocks, serially or on Dask
workers (the objects are small and picklable; each block opens the store itself).

- :class:`ZarrMatrix`: ``X`` (or ``layers/<name>``) of a store written by ``AnnData.write_zarr`` (zarr format 2 or
  3, any compressor), as CSR groups or dense arrays.
- :class:`SomaMatrix`: an X layer of one measurement of a TileDB-SOMA experiment (as written by
  ``tiledbsoma.io.from_anndata``, or the CELLxGENE Census), for the cells an ``obs`` value filter selects.
  ``tiledbsoma`` is optional (``pip install 'rlae-sc[atlas]'``) and imported only here, when such an input is read.
- :class:`RowSubset`: the rows of another source that an ``obs`` filter selects (``.h5ad`` and zarr inputs).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rlae_sc.errors import InputError
from rlae_sc.rows import Rows

SOMA_LAYERS = ("raw", "counts", "data")  # X layers tried, in order, when none is named: Census, common, from_anndata
SOMA_SYMBOLS = ("feature_name", "gene_symbols", "gene_name", "var_id")  # var columns naming genes, in order
SOMA_IDS = ("feature_id", "gene_ids", "gene_id", "var_id")  # ... with var_names: gene_ids
URI_SCHEMES = ("tiledb://", "s3://", "gs://", "gcs://", "az://", "azure://")  # remote SOMA experiments


def is_uri(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a remote TileDB URI (``tiledb://``, ``s3://``, ...) rather than a local path."""
    return str(path).lower().startswith(URI_SCHEMES)


def is_zarr(path: Path) -> bool:
    """Whether the directory ``path`` is a zarr store (format 2: ``.zgroup``; format 3: ``zarr.json``)."""
    return path.is_dir() and ((path / ".zgroup").is_file() or (path / "zarr.json").is_file())


def is_soma(path: Path) -> bool:
    """Whether the directory ``path`` is a TileDB group (a SOMA experiment: ``__group``/``__tiledb_group.tdb``)."""
    return path.is_dir() and ((path / "__tiledb_group.tdb").exists() or (path / "__group").is_dir())


# -- obs filters on .h5ad and zarr inputs ------------------------------------------------------------------------


def filter_rows(obs: pd.DataFrame, expr: str, *, source) -> np.ndarray:
    """Positions (ascending, int64) of the rows of ``obs`` (n_cells rows) that the filter ``expr`` keeps.

    ``expr`` is a comparison of ``obs`` columns as TileDB-SOMA's ``value_filter`` takes it
    (``"tissue == 'blood'"``, ``"n_genes > 200 and donor in ['a', 'b']"``), evaluated here by
    :meth:`pandas.DataFrame.query`. A malformed filter, or one that keeps no cell, is an :class:`InputError`.
    """
    try:
        keep = obs.eval(expr, engine="python")
    except Exception as exc:  # pandas raises many types for a bad expression
        raise InputError(source, *_bad_filter(expr, exc, obs.columns)) from None
    if not isinstance(keep, pd.Series) or keep.dtype != bool:
        raise InputError(
            source,
            f"obs_filter {expr!r} is not a condition (it gives {type(keep).__name__}, not true or false per cell)",
            "Write a comparison of obs columns, such as \"tissue == 'blood'\".",
        )
    rows = np.flatnonzero(keep.to_numpy())
    if len(rows) == 0:
        raise InputError(source, *_no_cell(expr, len(obs)))
    return rows.astype(np.int64)


def _bad_filter(expr: str, exc: Exception, columns) -> tuple[str, str]:
    shown = ", ".join(map(str, list(columns)[:12])) + (", ..." if len(columns) > 12 else "")
    return (
        f"obs_filter {expr!r} cannot be applied ({type(exc).__name__}: {exc})",
        f"Write it as a comparison of obs columns, such as \"tissue == 'blood' and n_genes > 200\" (strings in "
        f"quotes; obs columns: {shown or 'none'}); CLI: --obs-filter.",
    )


def _no_cell(expr: str, n: int) -> tuple[str, str]:
    return (
        f"obs_filter {expr!r} selects none of the {n:,} cells",
        "Check the column's values and the spelling of the value (case matters), or loosen the filter.",
    )


@dataclass(frozen=True, eq=False)
class RowSubset(Rows):
    """The rows ``rows`` (ascending positions, int64) of another row source ``matrix``.

    A block of selected rows is read in windows of at most ``span`` consecutive rows of ``matrix``, each from its
    first selected row to its last, and subset: memory is one window of ``matrix`` plus the block, however sparse
    the selection.
    """

    matrix: Rows
    rows: np.ndarray
    span: int = 16384

    @property
    def path(self) -> str:
        return self.matrix.path

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), self.matrix.shape[1]

    def read(self, start: int, stop: int):
        idx = self.rows[start:stop]
        if len(idx) == 0:
            return self.matrix.read(0, 0)
        parts, i = [], 0
        while i < len(idx):
            lo = int(idx[i])
            j = int(np.searchsorted(idx, lo + self.span, side="left"))  # the selected rows in [lo, lo + span)
            window = self.matrix.read(lo, int(idx[j - 1]) + 1)
            parts.append(window[idx[i:j] - lo])
            i = j
        if len(parts) == 1:
            return parts[0]
        return sp.vstack(parts, format="csr") if sp.issparse(parts[0]) else np.vstack(parts)

    def fingerprint(self) -> str:
        return f"{self.matrix.fingerprint()}:rows={hashlib.sha256(self.rows.tobytes()).hexdigest()[:16]}"


# -- anndata zarr stores --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZarrMatrix(Rows):
    """Rows of the matrix at ``key`` (``"X"`` or ``"layers/<name>"``) in an anndata zarr store (a directory).

    CSR groups (``data``, ``indices``, ``indptr``) are read for the requested rows only (the chunks of ``data``
    and ``indices`` that hold them); dense arrays by row slices. Blocks keep the stored dtype.
    """

    path: str
    key: str = "X"

    def _elem(self):
        import zarr

        return zarr.open_group(self.path, mode="r")[self.key]

    @property
    def shape(self) -> tuple[int, int]:
        elem = self._elem()
        return tuple(int(v) for v in (elem.attrs["shape"] if _is_group(elem) else elem.shape))

    def fingerprint(self) -> str:
        """Path, key, shape and the modification time and size of the matrix's files."""
        root = Path(self.path) / self.key
        stats = [os.stat(p) for p in sorted(root.rglob("*")) if p.is_file()] if root.is_dir() else []
        newest = max((s.st_mtime_ns for s in stats), default=0)
        size = sum(s.st_size for s in stats)
        return f"{os.path.abspath(self.path)}:{self.key}:{self.shape}:{size}:{newest}"

    def read(self, start: int, stop: int):
        elem = self._elem()
        if not _is_group(elem):
            return np.asarray(elem[start:stop])
        kind = elem.attrs.get("encoding-type")
        if kind != "csr_matrix":
            raise InputError(
                self.path,
                f"{self.key} is stored as {kind}, and only CSR or dense rows can be streamed",
                "Write the store with cells as CSR rows (adata.X = scipy.sparse.csr_matrix(adata.X); "
                "adata.write_zarr(...)).",
            )
        indptr = np.asarray(elem["indptr"][start : stop + 1], dtype=np.int64)
        lo, hi = int(indptr[0]), int(indptr[-1])
        n_genes = int(elem.attrs["shape"][1])
        return sp.csr_matrix(
            (np.asarray(elem["data"][lo:hi]), np.asarray(elem["indices"][lo:hi]), indptr - lo),
            shape=(stop - start, n_genes),
        )


def _is_group(elem) -> bool:
    return hasattr(elem, "keys") and not hasattr(elem, "dtype")


def zarr_matrix(path: str | Path, layer: str | None = None) -> ZarrMatrix:
    """The matrix of an anndata zarr store (``X``, or ``layer``), checked to exist, for streaming passes."""
    import zarr

    key = "X" if layer is None else f"layers/{layer}"
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise InputError(
            path, f"cannot be opened as a zarr store ({type(exc).__name__}: {exc})", "Re-export it (adata.write_zarr)."
        ) from None
    if key not in root:
        layers = sorted(root["layers"].keys()) if "layers" in root else []
        raise InputError(
            path,
            f"has no matrix at {key!r} (layers: {', '.join(layers) or 'none'})",
            "Store the counts in X or name an existing layer.",
        )
    return ZarrMatrix(str(path), key)


def read_elem(elem):
    """An element of an anndata store (a data frame, an array) as anndata reads it (``anndata.io.read_elem`` from
    anndata 0.11 on, ``anndata.experimental.read_elem`` before)."""
    import anndata as ad

    reader = getattr(getattr(ad, "io", None), "read_elem", None) or ad.experimental.read_elem
    return reader(elem)


def open_zarr(path: Path, layer: str | None) -> tuple[ZarrMatrix, pd.DataFrame, pd.Index]:
    """An anndata zarr store to stream: its matrix (cells x genes), ``obs`` (cells,) and gene names (genes,)."""
    import zarr

    matrix = zarr_matrix(path, layer)
    try:
        root = zarr.open_group(str(path), mode="r")
        obs = read_elem(root["obs"])
        genes = pd.Index(read_elem(root["var"]).index.astype(str))
    except Exception as exc:
        raise InputError(
            path,
            f"cannot be read as an anndata zarr store ({type(exc).__name__}: {exc})",
            "The store may be incomplete; re-export it (adata.write_zarr).",
        ) from None
    if matrix.shape != (len(obs), len(genes)):
        raise InputError(
            path,
            f"{matrix.key} is {matrix.shape[0]:,} x {matrix.shape[1]:,}, but obs has {len(obs):,} rows and var "
            f"{len(genes):,}",
            "The store may be incomplete; re-export it (adata.write_zarr).",
        )
    return matrix, obs, genes


# -- TileDB-SOMA experiments ---------------------------------------------------------------------------------------


def _tiledbsoma(path):
    """The ``tiledbsoma`` module, or an :class:`InputError` saying how to install it."""
    try:
        import tiledbsoma
    except ImportError:
        raise InputError(
            path,
            "is a TileDB-SOMA experiment, and reading one needs tiledbsoma, which is not installed",
            "pip install 'rlae-sc[atlas]' (tiledbsoma 2.3), or export the cells to .h5ad or zarr.",
        ) from None
    return tiledbsoma


@dataclass(frozen=True, eq=False)
class SomaMatrix(Rows):
    """Rows of the X layer ``layer`` of measurement ``measurement`` in the TileDB-SOMA experiment at ``path``
    (a directory or URI), for the cells ``cells`` (their ``soma_joinid``, ascending, int64, shape (n_cells,)).

    Columns are the measurement's genes in the order of ``genes`` (their ``soma_joinid``, ascending, int64, shape
    (n_genes,)). A block is read as one query of the sparse array: the range of joinids when the block's cells are
    consecutive, else their list. Blocks are CSR with the layer's dtype.
    """

    path: str
    measurement: str
    layer: str
    cells: np.ndarray
    genes: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.cells), len(self.genes)

    def fingerprint(self) -> str:
        """URI, measurement, layer, the selected cells and, for a local experiment, its modification time."""
        local = Path(self.path)
        stamp = max((p.stat().st_mtime_ns for p in local.rglob("*") if p.is_file()), default=0) if local.exists() else 0
        cells = hashlib.sha256(self.cells.tobytes()).hexdigest()[:16]
        return f"{self.path}:{self.measurement}:{self.layer}:{self.shape}:{cells}:{stamp}"

    def read(self, start: int, stop: int) -> sp.csr_matrix:
        ids = self.cells[start:stop]
        n = len(ids)
        if n == 0:
            return sp.csr_matrix((0, len(self.genes)), dtype=np.float32)
        soma = _tiledbsoma(self.path)
        consecutive = int(ids[-1]) - int(ids[0]) + 1 == n
        coords = slice(int(ids[0]), int(ids[-1])) if consecutive else ids  # a SOMA slice includes its end
        with soma.Experiment.open(self.path) as exp:
            table = exp.ms[self.measurement].X[self.layer].read(coords=(coords,)).tables().concat()
        rows = np.searchsorted(ids, table.column("soma_dim_0").to_numpy())
        dim1 = table.column("soma_dim_1").to_numpy()
        cols = np.searchsorted(self.genes, dim1)
        data = table.column("soma_data").to_numpy()
        inside = cols < len(self.genes)
        inside[inside] = self.genes[cols[inside]] == dim1[inside]
        block = sp.coo_matrix((data[inside], (rows[inside], cols[inside])), shape=(n, len(self.genes)))
        return block.tocsr()


def open_soma(
    path: str | Path,
    *,
    measurement: str = "RNA",
    layer: str | None = None,
    obs_filter: str | None = None,
    var_names: str = "gene_symbols",
) -> tuple[SomaMatrix, pd.DataFrame, pd.Index]:
    """A TileDB-SOMA experiment to stream: the cells ``obs_filter`` selects, as a row source (cells x genes),
    their ``obs`` (cells,) and the gene names (genes,).

    ``obs`` is indexed by its ``obs_id`` column (``from_anndata``'s index) when it has one, else by
    ``soma_joinid``; cells are in ``soma_joinid`` order.

    Parameters
    ----------
    path
        The experiment: a directory or a TileDB URI.
    measurement
        The measurement (``ms``) holding the genes: ``RNA`` in the Census and in ``from_anndata``'s output.
    layer
        The X layer; None: the first of ``raw`` (the Census), ``counts`` and ``data`` (``from_anndata``'s X) that
        exists.
    obs_filter
        A TileDB-SOMA ``value_filter`` on ``obs`` (``"tissue == 'blood'"``), applied by TileDB as ``obs`` is read:
        only the selected cells' rows are read, ever. None: all cells.
    var_names
        ``gene_symbols``: genes are named by the first var column of ``feature_name`` (the Census),
        ``gene_symbols``, ``gene_name``, ``var_id`` (``from_anndata``'s index); ``gene_ids``: of ``feature_id``,
        ``gene_ids``, ``gene_id``, ``var_id``; else by their ``soma_joinid``.
    """
    soma = _tiledbsoma(path)
    source = str(path)
    try:
        exp = soma.Experiment.open(source)
    except Exception as exc:
        raise InputError(
            source,
            f"cannot be opened as a TileDB-SOMA experiment ({type(exc).__name__}: {exc})",
            "Give the experiment's directory or URI (the folder that holds obs and ms).",
        ) from None
    with exp:
        measurements = sorted(exp.ms.keys()) if "ms" in exp else []
        if measurement not in measurements:
            raise InputError(
                source,
                f"has no measurement {measurement!r} (measurements: {', '.join(measurements) or 'none'})",
                "Name one with measurement (CLI: --measurement).",
            )
        ms = exp.ms[measurement]
        layers = sorted(ms.X.keys()) if "X" in ms else []
        if layer is None:
            layer = next((name for name in SOMA_LAYERS if name in layers), None)
            if layer is None:
                raise InputError(
                    source,
                    f"measurement {measurement!r} has none of the X layers {', '.join(SOMA_LAYERS)} (layers: "
                    f"{', '.join(layers) or 'none'})",
                    "Name the layer of counts with layer (CLI: --layer).",
                )
        elif layer not in layers:
            raise InputError(
                source,
                f"measurement {measurement!r} has no X layer {layer!r} (layers: {', '.join(layers) or 'none'})",
                "Name an existing layer with layer (CLI: --layer), or leave it unset.",
            )
        if not isinstance(ms.X[layer], soma.SparseNDArray):
            raise InputError(
                source,
                f"X layer {layer!r} of {measurement!r} is dense, and only sparse layers are streamed",
                "Write the counts as a sparse layer (tiledbsoma.io.from_anndata writes X sparse).",
            )
        try:
            obs = exp.obs.read(value_filter=obs_filter).concat().to_pandas()
        except Exception as exc:  # TileDB's parser and schema checks raise several types
            columns = [c for c in exp.obs.schema.names if c != "soma_joinid"]
            raise InputError(source, *_bad_filter(obs_filter or "", exc, columns)) from None
        if len(obs) == 0:
            if obs_filter is None:
                raise InputError(source, "has no cells in obs", "Check that the experiment holds cells.")
            raise InputError(source, *_no_cell(obs_filter, exp.obs.count))
        var = ms.var.read().concat().to_pandas().sort_values("soma_joinid")
    obs = obs.sort_values("soma_joinid", kind="stable")
    cells = obs["soma_joinid"].to_numpy(dtype=np.int64)
    if "obs_id" in obs.columns:
        obs = obs.set_index("obs_id")
        obs.index = obs.index.astype(str)
    else:
        obs.index = obs["soma_joinid"].astype(str).to_numpy()
    obs.index.name = None
    order = SOMA_SYMBOLS if var_names == "gene_symbols" else SOMA_IDS
    column = next((c for c in order if c in var.columns), None)
    genes = pd.Index((var[column] if column else var["soma_joinid"]).astype(str).to_numpy())
    matrix = SomaMatrix(source, measurement, layer, cells, var["soma_joinid"].to_numpy(dtype=np.int64))
    return matrix, obs, genes


def read_blocks(matrix, *, block_rows: int = 16384) -> sp.csr_matrix:
    """All rows of a row source as one CSR matrix (float32, ``matrix.shape``), read in blocks of ``block_rows``."""
    n, m = matrix.shape
    blocks = [sp.csr_matrix(matrix.read(s, min(s + block_rows, n)), dtype=np.float32) for s in range(0, n, block_rows)]
    return sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, m), dtype=np.float32)
