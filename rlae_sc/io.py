"""Reading count matrices in the common single-cell formats (.h5ad, anndata zarr stores, TileDB-SOMA experiments,
10x, .loom, text), with validation; opening an input to stream; atomic writes, of a matrix too block by block."""

from __future__ import annotations

import gzip
import json
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from rlae_sc.atlas import (
    RowSubset,
    filter_rows,
    is_soma,
    is_uri,
    is_zarr,
    open_soma,
    open_zarr,
    read_blocks,
    read_elem,
)
from rlae_sc.atomic import atomic_path, names_store
from rlae_sc.engine import PassFn, run_pass
from rlae_sc.errors import InputError
from rlae_sc.params import ReadParams
from rlae_sc.room import array_bytes, check_disk
from rlae_sc.rows import H5adMatrix, h5ad_matrix

INTEGER_TOLERANCE = 1e-6


FORMATS = ("h5ad", "zarr", "soma", "10x_mtx", "10x_h5", "loom", "csv")


def detect_format(path: Path) -> str:
    """The format of ``path`` from its name: an anndata zarr store (a directory with ``.zgroup`` or
    ``zarr.json``), a TileDB-SOMA experiment (a TileDB group directory, or a ``tiledb://``/``s3://`` URI), a 10x
    matrix directory, ``.h5ad``, ``.h5``, ``.loom``, or ``.csv``/``.tsv``/``.txt`` (optionally ``.gz``)."""
    if is_uri(path):
        return "soma"
    path = Path(path)
    if is_zarr(path):
        return "zarr"
    if is_soma(path):
        return "soma"
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
    if name.endswith(".mtx"):
        raise InputError(
            path,
            "a Matrix Market file on its own has no cell or gene names",
            "Give the folder that holds it with features.tsv (or genes.tsv) and barcodes.tsv, as Cell Ranger "
            "writes it.",
        )
    raise InputError(
        path,
        "unrecognised file type",
        "Give an .h5ad, an anndata zarr store, a TileDB-SOMA experiment, a 10x matrix directory, a 10x .h5, a "
        ".loom, or a .csv/.tsv (optionally .gz).",
    )


def read(
    path: str | Path,
    *,
    layer: str | None = ReadParams.layer,
    input_kind: str = ReadParams.input_kind,
    orientation: str = ReadParams.orientation,
    var_names: str = ReadParams.var_names,
    obs: str | Path | None = ReadParams.obs,
    measurement: str = ReadParams.measurement,
    obs_filter: str | None = ReadParams.obs_filter,
) -> ad.AnnData:
    """Read a matrix of cells x genes in any supported format and validate its values.

    Parameters
    ----------
    path
        ``.h5ad``; a 10x Cell Ranger matrix directory (``matrix.mtx[.gz]`` with
        ``features.tsv[.gz]`` or the older ``genes.tsv``, and ``barcodes.tsv[.gz]``);
        a 10x ``.h5``; a ``.loom``; or a dense ``.csv``/``.tsv`` (optionally gzipped)
        with cell or gene names in the first column and a header row; an anndata zarr store (a directory written
        by ``AnnData.write_zarr``); a TileDB-SOMA experiment (a directory or URI; needs ``rlae-sc[atlas]``), its
        genes from measurement ``measurement`` and its counts from the X layer ``layer``
        (:func:`rlae_sc.atlas.open_soma`).
    layer, input_kind, var_names, measurement
        The reader options (:class:`rlae_sc.params.ReadParams`). Counts must be
        whole numbers within 1e-6.
    orientation
        What the rows of a text table, a ``.loom``'s ``/matrix`` or a 10x
        ``matrix.mtx`` are: ``cells_x_genes``, ``genes_x_cells``, or ``auto``
        (:func:`guess_orientation`: from the names and the shape; an
        :class:`~rlae_sc.errors.InputError` asking for this option when they do
        not tell). ``.loom`` and 10x files are genes x cells by their format,
        and a 10x ``matrix.mtx`` written the other way round is recognised by
        its shape against ``features.tsv`` and ``barcodes.tsv``. A declared
        value that the names clearly contradict is an error too, as is
        ``genes_x_cells`` for ``.h5ad`` and 10x ``.h5`` files, whose layout is fixed.
    obs
        A ``.csv``/``.tsv`` (optionally gzipped) of cell metadata joined into
        ``obs`` on the cell barcode (:func:`join_obs`).
    obs_filter
        Keep only the cells that pass this condition on ``obs`` (``"tissue == 'blood'"``): TileDB-SOMA's
        ``value_filter`` for an experiment, :func:`rlae_sc.atlas.filter_rows` on the file's own ``obs`` (before
        ``obs`` is joined) otherwise.

    Returns
    -------
    AnnData (n_cells x n_genes) with the validated matrix in ``X`` (CSR, float32),
    unique gene names, and per-cell metadata in ``obs`` (from the file, and
    from ``obs``), per-gene metadata in ``var``.
    """
    path = path if is_uri(path) else Path(path)
    obs = None if obs is None else str(obs)
    ReadParams.of(
        layer=layer, input_kind=input_kind, orientation=orientation, var_names=var_names, obs=obs, source=path,
        measurement=measurement, obs_filter=obs_filter,
    )  # fmt: skip
    if not is_uri(path) and not path.exists():
        raise InputError(path, "file not found", "Check the path in the config or on the command line.")
    fmt = detect_format(path)
    if layer is not None and fmt not in ("h5ad", "zarr", "soma", "loom"):
        raise InputError(
            path, f"layers exist only in .h5ad, zarr, TileDB-SOMA and .loom inputs, not in {fmt}", "Leave layer unset."
        )
    if orientation == "genes_x_cells" and fmt in ("h5ad", "10x_h5"):
        raise InputError(
            path,
            f"orientation genes_x_cells was given, but a {fmt} file is cells x genes by its format",
            "Leave orientation unset (it applies to .csv/.tsv, .loom and 10x matrix directories); to read an "
            ".h5ad stored the wrong way round, transpose it in Python (adata.T) and write it again.",
        )
    if obs is not None and not Path(obs).is_file():
        raise InputError(obs, "metadata table not found", "Check the path given as obs (CLI: --obs).")
    try:
        adata = _READERS[fmt](
            path, layer=layer, orientation=orientation, var_names=var_names, measurement=measurement,
            obs_filter=obs_filter,
        )  # fmt: skip
        if obs_filter is not None and fmt != "soma":  # a SOMA experiment is filtered as it is read
            adata = adata[filter_rows(adata.obs, obs_filter, source=path)].copy()
    except InputError:
        raise
    except Exception as exc:  # readers raise many types for damaged files
        raise InputError(
            path,
            f"cannot be read as {fmt} ({type(exc).__name__}: {exc})",
            "The file may be truncated, damaged or of another format; re-export it.",
        ) from None
    validate_matrix(adata.X, source=path, input_kind=input_kind, names=(adata.obs_names, adata.var_names))
    if obs is not None:
        adata.obs = join_obs(adata.obs, obs, source=path)
    if not adata.var_names.is_unique:
        n_dup = int(adata.var_names.duplicated().sum())
        warnings.warn(f"{path}: {n_dup} duplicate gene names made unique by appending '-1', '-2', ...", stacklevel=2)
        adata.var_names_make_unique()
    if not adata.obs_names.is_unique:
        adata.obs_names_make_unique()
    return adata


# -- orientation: which axis holds the cells --------------------------------------------------------------------

_BARCODE = re.compile(r"(?:^|[_:.|#-])[ACGTN]{8,}x?(?:$|[_:.|#-])")  # 10x, Drop-seq; velocyto's sample:ACGT...x
_CELL_ID = re.compile(r"(?:^|[_.-])cells?[_.-]?\d+(?:$|[_.-])|^(?:SRR|ERR|DRR|SRX|ERX|GSM)\d+$", re.IGNORECASE)
_GENE_ID = re.compile(r"(?:^|[_.|:-])(?:ENS[A-Z]{0,6}G\d{6,}|FBgn\d{7}|WBGene\d{8})(?:\.\d+)?(?:$|[_.|:-])")
_MITO = re.compile(r"(?:MT|mt|Mt)[-.:_][A-Za-z]{1,5}\d{0,2}[A-Za-z]?")  # MT-CO1, mt-Nd4l, MT.ATP6 (R's names)
_SYMBOL = re.compile(r"(?=[^.-]*[A-Za-z])[A-Za-z0-9]+(?:[-.][A-Za-z0-9]+)*")  # CD3E, RP11-34P13.7, Gm1992
_NO_NAME = re.compile(r"\d+(?:\.\d+)?|Unnamed: \d+(?:_level_\d+)?|")  # numbers, pandas's names for none
_SAMPLE = 20_000  # names per axis looked at for the shares (the mitochondrial genes are looked for among all)


@dataclass(frozen=True)
class NameEvidence:
    """What the names along one axis look like.

    Attributes
    ----------
    kind
        ``cells`` (barcodes or cell ids), ``genes`` (gene ids or symbols),
        ``unknown`` (names that look like neither), or ``none`` (no names,
        or numbers).
    strong
        For ``cells`` always; for ``genes``, Ensembl (FlyBase, WormBase) ids
        or symbols among which there are mitochondrial genes (``MT-``/``mt-``);
        symbol-like names alone are weak evidence.
    what
        A description with the first names, for messages.
    """

    kind: str
    strong: bool
    what: str


@dataclass(frozen=True)
class Orientation:
    """What the names and the shape of a matrix say about its rows (:func:`guess_orientation`).

    Attributes
    ----------
    value
        ``cells_x_genes``, ``genes_x_cells``, or None when they do not tell.
    strength
        3: both axes named and agreeing; 2: one axis clearly named (barcodes,
        cell ids, gene ids, symbols with MT- genes) and the other not against
        it; 1: symbol-like names on one axis and a shape that agrees (at least
        5 times more genes than cells); 0: no verdict.
    seen
        What was seen on each axis, for messages.
    """

    value: str | None
    strength: int
    seen: str


def name_evidence(names) -> NameEvidence:
    """What the names along one axis (a sequence of n strings) look like; see :class:`NameEvidence`."""
    names = pd.Index(names).astype(str)
    n = len(names)
    example = ", ".join(names[:3]) + (", ..." if n > 3 else "")
    if n == 0:
        return NameEvidence("none", False, "no names")
    sample = pd.Series(names if n <= _SAMPLE else names[np.linspace(0, n - 1, _SAMPLE).astype(int)])
    if sample.str.fullmatch(_NO_NAME).mean() >= 0.8:
        return NameEvidence("none", False, f"no names, only numbers ({example})")
    barcode = sample.str.contains(_BARCODE)
    cell = barcode | sample.str.contains(_CELL_ID)
    if cell.mean() >= 0.8:
        what = "cell barcodes" if barcode.mean() >= 0.5 else "cell ids"
        return NameEvidence("cells", True, f"{what} ({example})")
    gene_id = sample.str.contains(_GENE_ID) & ~cell
    symbol = sample.str.fullmatch(_SYMBOL) & (sample.str.len() <= 30) & ~cell
    if gene_id.mean() >= 0.5:
        return NameEvidence("genes", True, f"gene ids ({example})")
    if (gene_id | symbol).mean() >= 0.8 and cell.mean() < 0.2:
        mito = names[pd.Series(names).str.fullmatch(_MITO).to_numpy()]
        if len(mito):
            shown = ", ".join(mito[:3]) + (", ..." if len(mito) > 3 else "")
            return NameEvidence("genes", True, f"gene symbols ({example}) with {len(mito)} MT- genes ({shown})")
        return NameEvidence("genes", False, f"names like gene symbols ({example}), no MT- genes among them")
    return NameEvidence("unknown", False, f"names that look like neither genes nor cell barcodes ({example})")


def guess_orientation(row_names, col_names, *, shape: tuple[int, int]) -> Orientation:
    """Whether a matrix of ``shape`` (n_rows, n_cols) is cells x genes or genes x cells, from its row names
    (n_rows) and column names (n_cols) and, when the names are only symbol-like, its shape.

    Barcodes (``[ACGTN]{8,}``, with ``-1``-style suffixes or sample prefixes) and cell ids (``cell12``, ``SRR...``)
    mark cells; Ensembl ids (``ENS...G\\d+``) and gene symbols with mitochondrial genes (``MT-``/``mt-``) mark
    genes. Names that are symbol-like only (``CD3E``, but also ``A1``) count when the other axis is unnamed and
    the shape agrees: a count table has far more genes than cells when it holds few cells, so at least 5 times
    more rows than columns suggests genes x cells. Shape alone never decides.
    """
    rows, cols = name_evidence(row_names), name_evidence(col_names)
    seen = f"rows ({shape[0]:,}): {rows.what}; columns ({shape[1]:,}): {cols.what}"
    cxg, gxc = "cells_x_genes", "genes_x_cells"
    kinds = (rows.kind, cols.kind)
    if kinds == ("cells", "genes"):
        return Orientation(cxg, 3, seen)
    if kinds == ("genes", "cells"):
        return Orientation(gxc, 3, seen)
    if kinds in (("cells", "cells"), ("genes", "genes")):
        if kinds[0] == "genes" and rows.strong != cols.strong:  # MT- genes or Ensembl ids against mere symbols
            return Orientation(gxc if rows.strong else cxg, 2, seen)
        return Orientation(None, 0, seen)
    if rows.kind == "cells" or (cols.kind == "genes" and cols.strong):
        return Orientation(cxg, 2, seen)
    if cols.kind == "cells" or (rows.kind == "genes" and rows.strong):
        return Orientation(gxc, 2, seen)
    if rows.kind == "genes" and shape[0] >= 5 * shape[1]:
        return Orientation(gxc, 1, seen + f"; {shape[0]:,} rows against {shape[1]:,} columns")
    if cols.kind == "genes" and shape[1] >= 5 * shape[0]:
        return Orientation(cxg, 1, seen + f"; {shape[1]:,} columns against {shape[0]:,} rows")
    return Orientation(None, 0, seen)


_ASK = (
    "Give --orientation genes_x_cells if the rows are genes, or --orientation cells_x_genes if they are cells "
    "(config: orientation)."
)


def _settle(guess: Orientation, declared: str, *, source, convention: str | None = None) -> str:
    """The orientation to read with: ``declared`` unless the names clearly contradict it (an error);
    for ``auto``, the ``convention`` of the format (loom, 10x) unless the names clearly contradict it (an
    error), else the guess, unless it is no verdict (an error)."""
    if declared != "auto":
        if guess.strength >= 2 and guess.value != declared:
            raise InputError(
                source,
                f"orientation {declared} was given, but the names say {guess.value} ({guess.seen})",
                f"Give --orientation {guess.value}, or leave it unset to read it so.",
            )
        return declared
    if convention is not None:
        if guess.strength >= 2 and guess.value != convention:
            raise InputError(
                source,
                f"the format stores {convention.replace('_x_', ' x ')}, but the names say {guess.value} ({guess.seen})",
                f"Give --orientation {guess.value} if the file was written the other way round, or --orientation "
                f"{convention} to read it as the format says.",
            )
        return convention
    if guess.value is None:
        raise InputError(source, f"cannot tell whether the rows are cells or genes ({guess.seen})", _ASK)
    return guess.value


# -- the readers ------------------------------------------------------------------------------------------------


def _matrix_adata(X, obs: pd.DataFrame, var: pd.DataFrame, **more) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are handled, with our own warning, by read()
        return ad.AnnData(X=sp.csr_matrix(X, dtype=np.float32), obs=obs, var=var, **more)


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
    _check_fixed_layout(path, adata.obs_names, adata.var_names)
    return _matrix_adata(matrix, adata.obs.copy(), adata.var.copy())


def _check_fixed_layout(path: Path, cells, genes) -> None:
    """An .h5ad or 10x .h5 is cells x genes by its format; clear evidence that its cells are genes is an error."""
    guess = guess_orientation(cells, genes, shape=(len(cells), len(genes)))
    if guess.strength >= 2 and guess.value == "genes_x_cells":
        raise InputError(
            path,
            f"its cells (obs) look like genes and its genes (var) like cells ({guess.seen})",
            "The matrix was stored transposed: transpose it in Python (adata.T) and write it again.",
        )


def _open_table(path: Path, *, sep: str, header):
    return pd.read_csv(path, sep=sep, header=header, dtype=str, keep_default_na=False)


FEATURES = ("features.tsv", "features.tsv.gz", "genes.tsv")


def _read_10x_mtx(path: Path, *, orientation, var_names, **_) -> ad.AnnData:
    """A Cell Ranger matrix directory: ``matrix.mtx`` (genes x cells as Cell Ranger writes it; cells x genes is
    recognised by its shape against the two lists), ``features.tsv`` or ``genes.tsv`` (id, symbol[, type]) and
    ``barcodes.tsv``; only the ``Gene Expression`` features are kept when there are others."""
    files = {f.name: f for f in path.iterdir()}

    def find(*names: str) -> Path | None:
        return next((files[n] for n in names if n in files), None)

    matrix = find("matrix.mtx.gz", "matrix.mtx")
    if matrix is None:
        raise InputError(
            path,
            "is a directory without matrix.mtx or matrix.mtx.gz",
            "Point to the Cell Ranger folder that holds matrix.mtx(.gz), features.tsv(.gz) or "
            "genes.tsv, and barcodes.tsv(.gz).",
        )
    barcodes = find("barcodes.tsv.gz", "barcodes.tsv")
    features = find("features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv")
    for found, need in ((barcodes, ("barcodes.tsv", "barcodes.tsv.gz")), (features, FEATURES)):
        if found is None:
            raise InputError(path, f"has no {' or '.join(need)}", "Copy the complete Cell Ranger output folder.")
    import scipy.io

    feats = _open_table(features, sep="\t", header=None)
    cells = pd.Index(_open_table(barcodes, sep="\t", header=None).iloc[:, 0].to_numpy())
    n_rows, n_cols = (int(n) for n in scipy.io.mminfo(matrix)[:2])
    n_genes, n_cells = len(feats), len(cells)
    if (n_rows, n_cols) == (n_genes, n_cells):
        on_disk = "genes_x_cells" if n_genes != n_cells else None  # a square matrix: the shape cannot tell
    elif (n_rows, n_cols) == (n_cells, n_genes):
        on_disk = "cells_x_genes"
    else:
        raise InputError(
            path,
            f"{matrix.name} is {n_rows:,} x {n_cols:,}, but {features.name} lists {n_genes:,} features and "
            f"{barcodes.name} {n_cells:,} barcodes",
            "The three files must come from one Cell Ranger output; copy them together.",
        )
    guess = guess_orientation(feats.iloc[:, 0], cells, shape=(n_genes, n_cells))
    if guess.strength >= 2 and guess.value == "cells_x_genes":
        raise InputError(
            path,
            f"{features.name} holds what look like cells and {barcodes.name} what look like genes "
            f"({guess.seen.replace('rows', features.name).replace('columns', barcodes.name)})",
            f"Put the genes in {features.name} and the cell barcodes in {barcodes.name}.",
        )
    layout = on_disk or "genes_x_cells"
    if orientation != "auto":
        if on_disk is not None and orientation != on_disk:
            raise InputError(
                path,
                f"orientation {orientation} was given, but {matrix.name} is {n_rows:,} x {n_cols:,} with "
                f"{n_genes:,} features and {n_cells:,} barcodes: its rows are "
                f"{'genes' if on_disk == 'genes_x_cells' else 'cells'}",
                "Leave orientation unset: the shape decides it.",
            )
        layout = orientation
    M = scipy.io.mmread(matrix)
    X = sp.csr_matrix(M.T if layout == "genes_x_cells" else M, dtype=np.float32)
    ids = feats.iloc[:, 0].to_numpy()
    symbols = feats.iloc[:, 1].to_numpy() if feats.shape[1] > 1 else ids
    var = pd.DataFrame(
        {"gene_symbols" if var_names == "gene_ids" else "gene_ids": symbols if var_names == "gene_ids" else ids},
        index=pd.Index(ids if var_names == "gene_ids" else symbols),
    )
    if feats.shape[1] > 2:
        var["feature_types"] = feats.iloc[:, 2].to_numpy()
        expression = (var["feature_types"] == "Gene Expression").to_numpy()
        if expression.any() and not expression.all():
            other = sorted(set(var["feature_types"][~expression]))
            warnings.warn(
                f"{path}: {int((~expression).sum())} features that are not Gene Expression ({', '.join(other)}) "
                "left out",
                stacklevel=4,
            )
            X, var = X[:, expression], var[expression]
    return _matrix_adata(X, pd.DataFrame(index=cells), var)


def _read_10x_h5(path: Path, *, var_names, **_) -> ad.AnnData:
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = sc.read_10x_h5(path)
    if var_names == "gene_ids":
        adata.var["gene_symbols"] = adata.var_names
        adata.var_names = adata.var["gene_ids"].astype(str)
    _check_fixed_layout(path, adata.obs_names, adata.var_names)
    return _matrix_adata(adata.X, adata.obs, adata.var)


_LOOM_CELL_NAMES = ("CellID", "obs_names", "cell_names", "cell_ids", "Barcode", "barcode")
_LOOM_GENE_NAMES = ("Gene", "var_names", "gene_names", "Accession", "gene_ids")
_LOOM_BLOCK = 1 << 24  # values of a dense block of a .loom's matrix held at once (64 MiB as float32)


def _read_loom(path: Path, *, layer, orientation, var_names, **_) -> ad.AnnData:
    """Loom: ``/matrix`` (genes x cells by the format) or ``/layers/<layer>``, read a block of cells at a
    time; 1-d column attributes (per cell) become ``obs`` and row attributes (per gene) ``var``, 2-d ones
    ``obsm``/``varm``; names from ``CellID`` and ``Gene`` (``Accession`` with ``var_names`` gene_ids) or the
    other usual attributes."""
    with h5py.File(path, "r") as f:
        if "matrix" not in f:
            raise InputError(path, "has no /matrix", "Give a .loom file as loompy or scanpy write it.")
        data = f["matrix"] if layer is None else f.get(f"layers/{layer}")
        if data is None:
            raise InputError(path, f"has no layer {layer!r}", "Name an existing layer, or leave layer unset.")
        if data.ndim != 2:
            raise InputError(path, f"its matrix has {data.ndim} dimensions", "Give a .loom with a 2-d /matrix.")
        n_rows, n_cols = data.shape
        gene_keys = ("Accession", *_LOOM_GENE_NAMES) if var_names == "gene_ids" else _LOOM_GENE_NAMES
        rows, row_names, row_key = _loom_attrs(f, "row_attrs", n_rows, (*gene_keys, *_LOOM_CELL_NAMES))
        cols, col_names, col_key = _loom_attrs(f, "col_attrs", n_cols, (*_LOOM_CELL_NAMES, *gene_keys))
        guess = guess_orientation(
            [] if row_names is None else row_names, [] if col_names is None else col_names, shape=(n_rows, n_cols)
        )
        layout = _settle(guess, orientation, source=path, convention="genes_x_cells")
        if var_names == "gene_ids" and (row_key if layout == "genes_x_cells" else col_key) != "Accession":
            raise InputError(path, "has no Accession attribute of gene ids", "Leave var_names unset (gene_symbols).")
        X = _loom_matrix(data, cells_on_rows=layout == "cells_x_genes")
    if layout == "cells_x_genes":
        rows, row_names, cols, col_names = cols, col_names, rows, row_names
    cells = pd.Index(col_names if col_names is not None else [f"cell{i}" for i in range(X.shape[0])])
    genes = pd.Index(row_names if row_names is not None else [f"gene{j}" for j in range(X.shape[1])])
    obs = pd.DataFrame({k: v for k, v in cols.items() if v.ndim == 1}, index=cells)
    var = pd.DataFrame({k: v for k, v in rows.items() if v.ndim == 1}, index=genes)
    obsm = {k: v for k, v in cols.items() if v.ndim == 2}
    varm = {k: v for k, v in rows.items() if v.ndim == 2}
    return _matrix_adata(X, obs, var, obsm=obsm, varm=varm)


def _loom_attrs(f: h5py.File, group: str, n: int, name_keys: tuple[str, ...]) -> tuple[dict, np.ndarray | None, str]:
    """The attributes of ``group`` with ``n`` entries (1-d or 2-d arrays, strings decoded), less the one that
    names them; those names (None when there is none) and that attribute's key. Others are skipped with a
    warning."""
    values, skipped = {}, []
    for key, item in f[group].items() if group in f else ():
        if not isinstance(item, h5py.Dataset) or item.shape[:1] != (n,) or item.ndim > 2 or item.dtype.names:
            skipped.append(key)
        elif h5py.check_string_dtype(item.dtype) is not None:
            values[key] = np.asarray(item.asstr()[...], dtype=object)
        else:
            values[key] = np.asarray(item[...])
    if skipped:
        warnings.warn(
            f"{f.filename}: {group} {', '.join(skipped)} left out (not one value or row per entry)", stacklevel=5
        )
    key = next((k for k in name_keys if k in values and values[k].ndim == 1), "")
    names = values.pop(key).astype(str) if key else None
    return values, names, key


def _loom_matrix(data: h5py.Dataset, *, cells_on_rows: bool) -> sp.csr_matrix:
    """``data`` (genes x cells, or cells x genes) as CSR cells x genes (float32), read in blocks of whole
    cells of at most ``_LOOM_BLOCK`` values, aligned to the dataset's chunks."""
    n_cells, n_genes = data.shape if cells_on_rows else data.shape[::-1]
    chunk = data.chunks[0 if cells_on_rows else 1] if data.chunks else 1
    step = max(chunk, _LOOM_BLOCK // max(n_genes, 1) // chunk * chunk)
    blocks = []
    for start in range(0, n_cells, step):
        stop = min(start + step, n_cells)
        block = data[start:stop, :] if cells_on_rows else data[:, start:stop].T
        blocks.append(sp.csr_matrix(block, dtype=np.float32))
    return sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, n_genes), dtype=np.float32)


def _read_text(path: Path, *, orientation, **_) -> ad.AnnData:
    """A dense table with a header row and a first column of names; its orientation from the names
    (:func:`guess_orientation`) unless given."""
    name = path.name.lower().removesuffix(".gz")
    sep = "," if name.endswith(".csv") else "\t"
    table = pd.read_csv(path, sep=sep, index_col=0, low_memory=False)  # in one piece: 7x faster for 30k columns
    header = [str(table.index.name or ""), *map(str, table.columns)]
    if all(_NUMBER.fullmatch(h) for h in header):
        with gzip.open(path, "rt") if path.name.lower().endswith(".gz") else open(path) as f:
            first = f.readline(200).strip().split(sep)[:4]
        raise InputError(
            path,
            f"its first line holds numbers ({', '.join(first)}, ...), not names: the table has no header row",
            "Write the table with a header row of cell or gene names and a first column of names (pandas: "
            "to_csv(); R: write.table(x, sep='\\t', col.names=NA)).",
        )
    if pd.api.types.is_numeric_dtype(table.index.dtype) and table.index.has_duplicates:
        raise InputError(
            path,
            f"its first column holds repeated numbers ({', '.join(map(str, table.index[:4]))}, ...), not names: "
            "the table has no column of row names",
            "Write the table with a first column of cell or gene names (pandas: to_csv() with the index).",
        )
    bad = [c for c, kind in table.dtypes.items() if not pd.api.types.is_numeric_dtype(kind)]
    if bad:
        raise InputError(
            path,
            f"column {bad[0]!r} is not numeric",
            "The first column must hold names and every other column numbers; check the separator.",
        )
    guess = guess_orientation(table.index, table.columns, shape=table.shape)
    if _settle(guess, orientation, source=path) == "genes_x_cells":
        table = table.T
    return _matrix_adata(
        table.to_numpy(dtype=np.float64),
        pd.DataFrame(index=table.index.astype(str)),
        pd.DataFrame(index=table.columns.astype(str)),
    )


_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def _read_zarr(path: Path, *, layer, **_) -> ad.AnnData:
    """An anndata zarr store, read whole (``X`` or ``layer``), with its ``obs`` and ``var``."""
    import zarr

    matrix, obs, genes = open_zarr(path, layer)
    var = read_elem(zarr.open_group(str(path), mode="r")["var"])
    _check_fixed_layout(path, obs.index, genes)
    return _matrix_adata(read_blocks(matrix), obs, var.set_axis(genes))


def _read_soma(path, *, layer, var_names, measurement, obs_filter, **_) -> ad.AnnData:
    """The cells of a TileDB-SOMA experiment that ``obs_filter`` selects (:func:`rlae_sc.atlas.open_soma`)."""
    options = {"measurement": measurement, "layer": layer, "obs_filter": obs_filter, "var_names": var_names}
    matrix, obs, genes = open_soma(path, **options)
    return _matrix_adata(read_blocks(matrix), obs, pd.DataFrame(index=genes))


_READERS = {
    "h5ad": _read_h5ad, "zarr": _read_zarr, "soma": _read_soma, "10x_mtx": _read_10x_mtx, "10x_h5": _read_10x_h5,
    "loom": _read_loom, "csv": _read_text,
}  # fmt: skip


# -- cell metadata from a table ---------------------------------------------------------------------------------

_BARCODE_COLUMNS = {"barcode", "barcodes", "cell", "cells", "cellid", "cellids", "cellbarcode", "cellbarcodes",
                    "cellname", "cellnames", "obsnames"}  # fmt: skip


def join_obs(obs: pd.DataFrame, table: str | Path, *, source: str | Path) -> pd.DataFrame:
    """``obs`` with the columns of a metadata ``table`` joined on the cell barcode.

    Parameters
    ----------
    obs
        The cells' metadata (n_cells rows), indexed by barcode.
    table
        A ``.csv`` (comma-separated) or ``.tsv``/``.txt`` (tab-separated), optionally
        gzipped, with a header row: one row per cell (n_rows, in any order),
        the barcode in a column named like ``barcode``/``cell``/``cell_id``
        (any case, ``_`` or ``-`` ignored), else in the row names of an R
        table (a header one field short), else in the first column.
    source
        The input file, named in messages.

    Returns
    -------
    ``obs`` (n_cells rows, same order) with the table's other columns; a column
    of ``obs`` that the table also has is replaced, with a warning.

    Raises
    ------
    InputError
        When cells of ``obs`` have no row (the first five and their number are
        named), a barcode has several rows, or the table has no columns
        besides the barcodes. Rows for other barcodes are ignored with a warning.
    """
    table = Path(table)
    meta, key = _read_metadata(table)
    if meta.index.has_duplicates:
        dup = meta.index[meta.index.duplicated()]
        raise InputError(
            table,
            f"barcode {dup[0]!r} has {int((meta.index == dup[0]).sum())} rows ({len(dup.unique()):,} barcodes "
            f"repeat) in {key}",
            "Give one row per cell.",
        )
    if meta.shape[1] == 0:
        raise InputError(table, f"has no columns besides the barcodes ({key})", "Add the cells' metadata columns.")
    cells = pd.Index(obs.index.astype(str))
    missing = ~cells.isin(meta.index)
    if missing.any():
        first = cells[missing][:5]
        fix = "Give every cell of the input a row, with its barcode exactly as in the input"
        strip = r"[-.]\d+$"
        if cells[missing].str.replace(strip, "", regex=True).isin(meta.index.str.replace(strip, "", regex=True)).all():
            fix += " (they differ here only in a '-1'-style suffix)"
        raise InputError(
            table,
            f"{int(missing.sum()):,} of the {len(cells):,} cells of {source} have no row in {key} "
            f"(first: {', '.join(first)}{', ...' if missing.sum() > 5 else ''}; the table's first: "
            f"{', '.join(meta.index[:3])})",
            fix,
        )
    extra = ~meta.index.isin(cells)
    if extra.any():
        warnings.warn(
            f"{table}: {int(extra.sum()):,} rows for barcodes not in {source} ignored "
            f"(first: {', '.join(meta.index[extra][:3])})",
            stacklevel=3,
        )
    clash = [c for c in meta.columns if c in obs.columns]
    if clash:
        warnings.warn(f"{table}: columns {', '.join(map(str, clash))} replace those of {source}", stacklevel=3)
    added = meta.reindex(cells)
    added.index = obs.index
    return pd.concat([obs.drop(columns=clash), added], axis=1)


def _read_metadata(table: Path) -> tuple[pd.DataFrame, str]:
    """The metadata table indexed by its barcodes (strings), and where the barcodes were found."""
    sep = "," if table.name.lower().removesuffix(".gz").endswith(".csv") else "\t"
    try:
        head = pd.read_csv(table, sep=sep, nrows=5)
        named = [c for c in head.columns if re.sub(r"[\s_.-]", "", str(c)).lower() in _BARCODE_COLUMNS]
        implicit = not named and not isinstance(head.index, pd.RangeIndex)  # R: a header one field short
        key = named[0] if named else None if implicit else head.columns[0]
        meta = pd.read_csv(table, sep=sep, dtype=None if key is None else {key: str}, keep_default_na=True)
        if key is None:
            meta.index = meta.index.astype(str)
        else:
            meta = meta.set_index(key)
            meta.index = meta.index.astype(str)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(
            table,
            f"cannot be read as a table of cell metadata ({type(exc).__name__}: {exc})",
            "Give a .csv or .tsv (optionally .gz) with a header row and a column of cell barcodes.",
        ) from None
    return meta, "the row names" if key is None else f"column {key!r}"


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


def write_anndata(adata: ad.AnnData, path: str | Path, *, copies: tuple | list = ()) -> None:
    """Write ``adata`` to ``path`` atomically: an ``.h5ad`` file (uncompressed, fast), or, when ``path`` ends in
    ``.zarr``, an anndata zarr store (zarr format 2; arrays copied from ``copies`` are compressed by Blosc's zstd
    with bit shuffling, in chunks of :data:`ZARR_CHUNK_VALUES` values).

    ``copies``: pairs of an ``.h5ad`` (or another HDF5 file in its layout) and the elements of it to copy into the
    output as they are, on disk, never loaded whole (paths in the file: ``X``, ``obsm/X_rlae``, ``obsp/distances``),
    where the source has them and ``adata`` has none of its own. The disk must hold the arrays' bytes
    (:func:`rlae_sc.room.check_disk`) before anything is written.
    """
    path = Path(path)
    copy_bytes = sum(Path(source).stat().st_size for source, _ in copies if Path(source).exists())
    check_disk(path, array_bytes(adata) + copy_bytes, what=path.name)
    store = names_store(path)
    with atomic_path(path) as tmp:
        if store:
            import zarr

            adata.write_zarr(tmp)
            dst = zarr.open_group(str(tmp), mode="a")
        else:
            adata.write_h5ad(tmp)
            dst = h5py.File(tmp, "a")
        try:
            for source, keys in copies:
                if not Path(source).exists():
                    continue
                with h5py.File(source, "r") as src:
                    for key in keys:
                        if key in src and key not in dst:
                            parent, _, name = key.rpartition("/")
                            into = dst[parent] if parent else dst
                            if store:
                                _copy_into_zarr(src[key], into, name)
                            else:
                                src.copy(src[key], into, name)
        finally:
            if not store:
                dst.close()
        if store:  # anndata reads a store's consolidated metadata, which must list the copied arrays
            zarr.consolidate_metadata(str(tmp))


ZARR_CHUNK_VALUES = 1 << 20  # values per chunk of an array copied into a zarr store (4-8 MB before compression)


def _copy_into_zarr(obj, parent, name: str) -> None:
    """Copy the h5py group or dataset ``obj``, with its attributes (anndata's encoding), into the zarr group
    ``parent`` as ``name``: datasets in whole chunks of rows, a few chunks at a time, never whole."""
    import numcodecs

    attrs = {
        key: value.tolist() if isinstance(value, np.ndarray | np.generic) else value for key, value in obj.attrs.items()
    }
    if isinstance(obj, h5py.Group):
        group = parent.create_group(name)
        group.attrs.update(attrs)
        for child in obj:
            _copy_into_zarr(obj[child], group, child)
        return
    row_values = int(np.prod(obj.shape[1:], dtype=np.int64))
    rows = max(1, ZARR_CHUNK_VALUES // max(row_values, 1))
    blosc = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE)
    array = parent.create_array(
        name, shape=obj.shape, dtype=obj.dtype, chunks=(rows, *obj.shape[1:]) if obj.ndim else (), compressors=blosc
    )
    array.attrs.update(attrs)
    if obj.ndim == 0:
        array[()] = obj[()]
    for start in range(0, obj.shape[0] if obj.ndim else 0, 8 * rows):
        array[start : start + 8 * rows] = obj[start : start + 8 * rows]


def open_streaming(
    path: str | Path,
    layer: str | None,
    *,
    measurement: str = ReadParams.measurement,
    obs_filter: str | None = ReadParams.obs_filter,
    var_names: str = ReadParams.var_names,
) -> tuple[H5adMatrix, pd.DataFrame, pd.Index]:
    """The matrix of an ``.h5ad``, an anndata zarr store or a TileDB-SOMA experiment to stream (cells x genes,
    ``X`` or ``layer``, read block by block), with its ``obs`` (cells,) and gene names (genes,, made unique);
    nothing else is loaded.

    ``obs_filter`` keeps the cells whose ``obs`` values pass it: for a SOMA experiment TileDB applies it and only
    those cells' rows are ever read (:func:`rlae_sc.atlas.open_soma`, with ``measurement`` and ``var_names``);
    for the others the row source is restricted to them (:class:`rlae_sc.atlas.RowSubset`)."""
    if not is_uri(path):
        path = Path(path)
        if not path.exists():
            raise InputError(path, "file not found", "Check the path in the config or on the command line.")
    fmt = detect_format(path)
    if fmt not in ("h5ad", "zarr", "soma"):
        raise InputError(
            path,
            "streaming reads .h5ad files, anndata zarr stores and TileDB-SOMA experiments only",
            "Convert the input once (rlae_sc.io.read(path).write_h5ad(...)), or turn streaming off.",
        )
    if fmt == "soma":
        matrix, obs, genes = open_soma(
            path, measurement=measurement, layer=layer, obs_filter=obs_filter, var_names=var_names
        )
    elif fmt == "zarr":
        matrix, obs, genes = open_zarr(path, layer)
    else:
        matrix = h5ad_matrix(str(path), layer)
        with reading(path):
            cells = ad.read_h5ad(path, backed="r")
            obs, genes = cells.obs.copy(), pd.Index(cells.var_names)
            cells.file.close()
    if obs_filter is not None and fmt != "soma":
        rows = filter_rows(obs, obs_filter, source=path)
        matrix, obs = RowSubset(matrix, rows), obs.iloc[rows]
    if not genes.is_unique:
        warnings.warn(f"{path}: {int(genes.duplicated().sum())} duplicate gene names made unique", stacklevel=3)
        genes = ad.utils.make_index_unique(genes)
    return matrix, obs, genes


@contextmanager
def reading(path: str | Path):
    """Turn errors of h5py/anndata/zarr on a damaged ``.h5ad`` file or zarr store into an :class:`InputError`
    naming it; an :class:`InputError` raised inside passes unchanged."""
    try:
        yield
    except InputError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        soma = is_uri(path) or is_soma(Path(path))
        kind = "a zarr store" if is_zarr(Path(path)) else "a TileDB-SOMA experiment" if soma else "h5ad"
        raise InputError(
            path, f"cannot be read as {kind} ({type(exc).__name__}: {exc})", "The file may be truncated; re-export it."
        ) from None


@contextmanager
def open_stored(path: str | Path):
    """The root group of an ``.h5ad`` file (h5py) or of an anndata zarr store (zarr), open for reading."""
    if is_zarr(Path(path)):
        import zarr

        yield zarr.open_group(str(path), mode="r")
        return
    with h5py.File(path, "r") as f:
        yield f


def write_csr_rows(adata: ad.AnnData, path: str | Path, matrix, fn: PassFn, *, client=None) -> None:
    """Write ``adata`` (without ``X``) to ``path`` atomically, with ``X`` (``adata.shape``) written as CSR rows
    block by block from one pass of ``fn`` over ``matrix`` (:func:`rlae_sc.engine.run_pass`, on Dask when
    ``client`` is given), never whole.

    ``fn(block, start)`` returns, for the block's rows of ``X``, the ``data`` (float32) and ``indices`` (int32)
    of their stored values and each row's count of them, ``nnz`` (rows,, int64), as
    :func:`rlae_sc.blocks.lognorm_rows_block` does.
    """
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
        with h5py.File(tmp, "a") as f:
            g = f.create_group("X")
            g.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": adata.shape})
            data = g.create_dataset("data", shape=(0,), maxshape=(None,), dtype="float32", chunks=(1 << 18,))
            indices = g.create_dataset("indices", shape=(0,), maxshape=(None,), dtype="int32", chunks=(1 << 18,))
            indptr = g.create_dataset("indptr", shape=(adata.n_obs + 1,), dtype="int64")
            indptr[0] = 0
            row, nnz = 0, 0

            def write(start: int, rows: dict) -> None:
                nonlocal row, nnz
                data.resize((nnz + len(rows["data"]),))
                indices.resize((nnz + len(rows["data"]),))
                data[nnz:] = rows["data"]
                indices[nnz:] = rows["indices"]
                indptr[row + 1 : row + 1 + len(rows["nnz"])] = nnz + np.cumsum(rows["nnz"])
                row += len(rows["nnz"])
                nnz += len(rows["data"])

            run_pass(matrix, fn, client=client, desc="write", consume=write)


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
