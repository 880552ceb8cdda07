"""Every input format read back to the same counts (property-based), and corrupted files give named errors."""

from __future__ import annotations

import gzip
import json
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


# -- metadata: loom attributes, and a table of cell metadata for every format (issue 24, part 2) ----------------


def test_loom_attributes_become_obs_and_var_and_the_matrix_is_read_block_by_block(tmp_path, monkeypatch):
    import rlae_sc.io

    rng = np.random.default_rng(0)
    X = rng.poisson(2.0, (30, 20))  # cells x genes
    path = tmp_path / "x.loom"
    with h5py.File(path, "w") as f:
        f.create_dataset("matrix", data=X.T.astype(np.float32), chunks=(4, 4))
        rows = f.create_group("row_attrs")
        rows["Gene"] = np.array([f"G{j}" for j in range(20)], dtype="S")
        rows["Accession"] = np.array([f"ENSG{j:011d}" for j in range(20)], dtype="S")
        rows["highly_variable"] = np.arange(20) % 2
        cols = f.create_group("col_attrs")
        cols["CellID"] = np.array([f"cell{i}" for i in range(30)], dtype="S")
        cols["cell_type"] = np.array(["B", "T", "NK"] * 10, dtype="S")
        cols["n_counts"] = X.sum(axis=1)
        cols["X_pca"] = rng.normal(size=(30, 2))
    reads = []
    getitem = h5py.Dataset.__getitem__

    def spy(self, key):
        out = getitem(self, key)
        if self.name == "/matrix":
            reads.append(np.asarray(out).size)
        return out

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    monkeypatch.setattr(rlae_sc.io, "_LOOM_BLOCK", 100)  # 5 cells of 20 genes: rounded to the chunks' 4 cells
    adata = read(path)
    assert reads == [80] * 7 + [40]  # 8 blocks of 4 cells (the last 2), never the whole matrix
    np.testing.assert_array_equal(adata.X.toarray(), X)
    assert list(adata.obs.columns) == ["cell_type", "n_counts"] and list(adata.obs["cell_type"][:3]) == ["B", "T", "NK"]
    np.testing.assert_array_equal(adata.obs["n_counts"], X.sum(axis=1))
    assert list(adata.var.columns) == ["Accession", "highly_variable"] and adata.obsm["X_pca"].shape == (30, 2)
    assert read(path, var_names="gene_ids").var_names[0] == "ENSG00000000000"


def metadata_table(cells, path: Path, *, extra: int = 0, drop: int = 0) -> Path:
    """A table of cell metadata for ``cells`` (shuffled; ``extra`` rows for other barcodes, the last ``drop``
    cells left out): barcode, cell_type, donor."""
    cells = list(cells)[: len(cells) - drop] + [f"OTHER{i}" for i in range(extra)]
    table = pd.DataFrame(
        {"barcode": cells, "cell_type": [f"type_{c}" for c in cells], "donor": [i % 2 for i in range(len(cells))]}
    )
    table.sample(frac=1, random_state=0).to_csv(path, sep="," if path.suffix == ".csv" else "\t", index=False)
    return path


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_a_metadata_table_joins_every_format(fmt, tmp_path):
    X = np.arange(24).reshape(4, 6) % 5
    cells, genes = [f"cell{i}" for i in range(4)], [f"G{j}" for j in range(6)]
    path, options = WRITERS[fmt](X, cells, genes, tmp_path)
    table = metadata_table(cells, tmp_path / "meta.tsv", extra=2)
    with pytest.warns(UserWarning, match="2 rows for barcodes not in .* ignored"):
        adata = read(path, obs=table, **options)
    assert list(adata.obs_names) == cells
    assert list(adata.obs["cell_type"]) == [f"type_{c}" for c in cells]
    assert list(adata.obs["donor"]) == [0, 1, 0, 1]  # sample(frac=1) shuffled the rows; the join put them back


def test_cells_missing_from_the_table_are_named(tmp_path):
    cells = [f"AAACCTGAGAAGG{i:03d}-1" for i in range(10)]
    path = write_10x_dir(np.ones((10, 3)), cells, ["x", "y", "z"], tmp_path / "d", v3=True)
    table = metadata_table(cells, tmp_path / "meta.csv", drop=7)
    with pytest.raises(InputError, match="7 of the 10 cells of .* have no row in column 'barcode'") as err:
        read(path, obs=table)
    assert "first: AAACCTGAGAAGG003-1, AAACCTGAGAAGG004-1" in str(err.value) and str(table) in str(err.value)
    stripped = tmp_path / "stripped.csv"
    pd.DataFrame({"barcode": [c[:-2] for c in cells], "cell_type": "B"}).to_csv(stripped, index=False)
    with pytest.raises(InputError, match="differ here only in a '-1'-style suffix"):
        read(path, obs=stripped)


def garnett_files(tmp_path):
    """garnett (800 cells x 32,738 genes) as a 10x v3 directory with a metadata table (barcode, cell_type)
    beside it, and as a .loom with cell_type as a column attribute (gzip-compressed in 64 x 64 chunks, as
    loompy writes it)."""
    from tests.conftest import shared_file

    garnett = ad.read_h5ad(shared_file("garnett_pbmc800.h5ad"))
    X = garnett.X.toarray().astype(np.int32)
    tenx = write_10x_dir(X, list(garnett.obs_names), list(garnett.var_names), tmp_path / "garnett_10x", v3=True)
    table = garnett.obs[["cell_type"]].rename_axis("barcode")
    table.to_csv(tmp_path / "garnett_cells.tsv", sep="\t")
    loom = tmp_path / "garnett.loom"
    with h5py.File(loom, "w") as f:
        f.create_dataset("matrix", data=X.T, chunks=(64, 64), compression="gzip")
        f.create_group("row_attrs")["Gene"] = np.array(garnett.var_names, dtype="S")
        cols = f.create_group("col_attrs")
        cols["CellID"] = np.array(garnett.obs_names, dtype="S")
        cols["cell_type"] = np.array(garnett.obs["cell_type"].astype(str), dtype="S")
    return garnett, tenx, tmp_path / "garnett_cells.tsv", loom


def test_label_key_works_on_10x_with_a_table_and_on_loom_with_a_column_attribute(tmp_path):
    from tests.conftest import rlae_cli

    garnett, tenx, table, loom = garnett_files(tmp_path)
    short = tmp_path / "short.tsv"
    pd.read_csv(table, sep="\t").iloc[:-3].to_csv(short, sep="\t", index=False)
    result = rlae_cli("run", tenx, "--out", tmp_path / "bad", "--obs", short, "--label-key", "cell_type", check=False)
    assert result.returncode == 2 and "3 of the 800 cells" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
    fast = ("--n-components", "10", "--n-top-genes", "500", "--label-key", "cell_type")
    for name, inputs in (("10x", [tenx, "--obs", table]), ("loom", [loom])):
        rlae_cli("run", *inputs, "--out", tmp_path / name, *fast)
        embedding = ad.read_h5ad(tmp_path / name / "embedding.h5ad", backed="r")
        kept = embedding.obs_names
        assert (embedding.obs["cell_type"].astype(str) == garnett.obs.loc[kept, "cell_type"].astype(str)).all()
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert metrics["n_labelled"] == len(kept) and metrics["ari"] > 0.5, (name, metrics)
