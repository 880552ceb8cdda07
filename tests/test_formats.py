"""Every input format read back to the same counts (property-based), and corrupted files give named errors."""

from __future__ import annotations

import gzip
import shutil
import tempfile
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rlae_sc.errors import InputError
from rlae_sc.io import read


def _gz(path: Path) -> None:
    with open(path, "rb") as src, gzip.open(f"{path}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()


def write_10x_dir(X, cells, genes, path: Path, *, v3: bool) -> Path:
    path.mkdir()
    scipy.io.mmwrite(path / "matrix.mtx", sp.coo_matrix(X.T))
    (path / "barcodes.tsv").write_text("".join(f"{c}\n" for c in cells))
    rows = "".join(f"ID{i}\t{g}\tGene Expression\n" if v3 else f"ID{i}\t{g}\n" for i, g in enumerate(genes))
    (path / ("features.tsv" if v3 else "genes.tsv")).write_text(rows)
    if v3:
        for name in ("matrix.mtx", "barcodes.tsv", "features.tsv"):
            _gz(path / name)
    return path


def write_10x_h5(X, cells, genes, path: Path) -> Path:
    M = sp.csc_matrix(X.T)  # genes x cells, compressed over cells
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["data"], g["indices"], g["indptr"] = M.data.astype(np.int32), M.indices, M.indptr
        g["shape"] = np.array(M.shape, dtype=np.int32)
        g["barcodes"] = np.array(cells, dtype="S")
        feats = g.create_group("features")
        feats["id"] = np.array([f"ID{i}" for i in range(len(genes))], dtype="S")
        feats["name"] = np.array(genes, dtype="S")
        feats["feature_type"] = np.array(["Gene Expression"] * len(genes), dtype="S")
        feats["genome"] = np.array(["GRCh38"] * len(genes), dtype="S")
        feats["_all_tag_keys"] = np.array([b"genome"])
    return path


def write_loom(X, cells, genes, path: Path) -> Path:
    with h5py.File(path, "w") as f:
        f["matrix"] = X.T
        f.create_group("row_attrs")["Gene"] = np.array(genes, dtype="S")
        f.create_group("col_attrs")["CellID"] = np.array(cells, dtype="S")
    return path


def write_text(X, cells, genes, path: Path, *, transpose: bool = False) -> Path:
    table = pd.DataFrame(X, index=cells, columns=genes)
    (table.T if transpose else table).to_csv(path, sep="\t" if ".tsv" in path.name else ",")
    return path


WRITERS = {
    "h5ad": lambda X, c, g, d: (
        ad.AnnData(X=sp.csr_matrix(X), obs=pd.DataFrame(index=c), var=pd.DataFrame(index=g)).write_h5ad(d / "x.h5ad")
        or d / "x.h5ad",
        {},
    ),
    "10x_v3": lambda X, c, g, d: (write_10x_dir(X, c, g, d / "v3", v3=True), {}),
    "10x_v2": lambda X, c, g, d: (write_10x_dir(X, c, g, d / "v2", v3=False), {}),
    "10x_h5": lambda X, c, g, d: (write_10x_h5(X, c, g, d / "x.h5"), {}),
    "loom": lambda X, c, g, d: (write_loom(X, c, g, d / "x.loom"), {}),
    "csv": lambda X, c, g, d: (write_text(X, c, g, d / "x.csv"), {}),
    "tsv_gz_genes_x_cells": lambda X, c, g, d: (
        write_text(X, c, g, d / "x.tsv.gz", transpose=True),
        {"orientation": "genes_x_cells"},
    ),
    "tsv_genes_x_cells_by_its_names": lambda X, c, g, d: (write_text(X, c, g, d / "x.tsv", transpose=True), {}),
    "10x_cells_x_genes": lambda X, c, g, d: (  # a matrix.mtx some tools write; square ones need the flag
        write_10x_dir(X.T, c, g, d / "t", v3=True),
        {"orientation": "cells_x_genes"} if X.shape[0] == X.shape[1] else {},
    ),
}

counts = st.integers(1, 6).flatmap(
    lambda n: st.integers(1, 6).flatmap(lambda m: arrays(np.int64, (n, m), elements=st.integers(0, 500)))
)


@pytest.mark.parametrize("fmt", list(WRITERS))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(X=counts)
def test_every_format_reads_back_the_same_counts(fmt, X):
    cells = [f"cell{i}" for i in range(X.shape[0])]
    genes = [f"G{j}" for j in range(X.shape[1])]
    with tempfile.TemporaryDirectory() as tmp:
        path, options = WRITERS[fmt](X, cells, genes, Path(tmp))
        adata = read(path, **options)
        np.testing.assert_array_equal(adata.X.toarray(), X)
        assert list(adata.obs_names) == cells
        assert list(adata.var_names) == genes


def test_10x_gene_ids_are_selectable(tmp_path):
    X = np.arange(6).reshape(2, 3)
    for path in (
        write_10x_dir(X, ["a", "b"], ["x", "y", "z"], tmp_path / "d", v3=True),
        write_10x_h5(X, ["a", "b"], ["x", "y", "z"], tmp_path / "x.h5"),
    ):
        assert list(read(path, var_names="gene_ids").var_names) == ["ID0", "ID1", "ID2"]


@settings(max_examples=30, deadline=None)
@given(
    X=counts,
    where=st.tuples(st.integers(0, 5), st.integers(0, 5)),
    bad=st.sampled_from([(np.nan, "NaN or infinite"), (-3.0, "negative values"), (2.5, "non-integer values")]),
    fmt=st.sampled_from(["csv", "loom", "h5ad"]),
)
def test_corrupted_values_give_the_named_error(X, where, bad, fmt):
    X = X.astype(np.float64)
    i, j = where[0] % X.shape[0], where[1] % X.shape[1]
    X[i, j] = bad[0]
    cells = [f"cell{r}" for r in range(X.shape[0])]
    genes = [f"G{c}" for c in range(X.shape[1])]
    with tempfile.TemporaryDirectory() as tmp:
        path, options = WRITERS[fmt](X, cells, genes, Path(tmp))
        with pytest.raises(InputError, match=bad[1]) as err:
            read(path, **options)
        assert str(path) in str(err.value) and f"cell '{cells[i]}', gene '{genes[j]}'" in str(err.value)


@settings(max_examples=20, deadline=None)
@given(cut=st.floats(0.01, 0.999), fmt=st.sampled_from(["h5ad", "10x_h5", "loom"]))
def test_truncated_binary_files_give_a_named_error_not_a_traceback(cut, fmt):
    """A cut HDF5 file (h5ad, 10x h5, loom) always ends in the named error: never a partial matrix."""
    X = np.arange(40).reshape(5, 8) % 7
    with tempfile.TemporaryDirectory() as tmp:
        path, options = WRITERS[fmt](X, [f"c{i}" for i in range(5)], [f"g{j}" for j in range(8)], Path(tmp))
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * cut)])
        with pytest.raises(InputError, match="truncated") as err:
            read(path, **options)
        assert str(path) in str(err.value)


@settings(max_examples=20, deadline=None)
@given(cut=st.integers(1, 119))
def test_a_truncated_text_table_reads_as_exactly_its_whole_rows_or_gives_the_named_error(cut):
    """A text table cut after whole rows is a shorter table, which no reader can tell from a complete one: it reads
    as exactly those rows. Cut anywhere else (in the header, in a row), it ends in the named error: never a
    partial or altered row."""
    X = np.arange(40).reshape(5, 8) % 7
    cells, genes = [f"c{i}" for i in range(5)], [f"g{j}" for j in range(8)]
    with tempfile.TemporaryDirectory() as tmp:
        path, _ = WRITERS["csv"](X, cells, genes, Path(tmp))
        options = {"orientation": "cells_x_genes"}  # c0 and g0 tell nothing; the subject here is the cut
        text = path.read_text()
        assert len(text) == 120  # a header line of 25 characters, five rows of 19 (one-digit counts)
        path.write_text(text[:cut])
        rows = [line for line in text[:cut].split("\n")[1:] if line]  # what the cut left after the header
        if not rows or any(len(line) < 18 for line in rows):  # no row, or the last one cut short
            with pytest.raises(InputError) as err:
                read(path, **options)
            assert str(path) in str(err.value)
            return
        adata = read(path, **options)
        n = len(rows)
        assert adata.shape == (n, 8) and list(adata.obs_names) == cells[:n] and list(adata.var_names) == genes
        np.testing.assert_array_equal(adata.X.toarray(), X[:n])


def test_incomplete_10x_directory_names_the_missing_file(tmp_path):
    path = write_10x_dir(np.ones((2, 2)), ["a", "b"], ["x", "y"], tmp_path / "d", v3=True)
    (path / "barcodes.tsv.gz").unlink()
    with pytest.raises(InputError, match="has no barcodes.tsv"):
        read(path)
    with pytest.raises(InputError, match="without matrix.mtx"):
        read(tmp_path)


def test_text_with_a_non_numeric_column_is_named(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("cell,g1,g2\na,1,x\nb,2,3\n")
    with pytest.raises(InputError, match="column 'g2' is not numeric"):
        read(path)
