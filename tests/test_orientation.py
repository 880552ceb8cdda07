"""Orientation by evidence (issue 24, part 1): a table, a .loom or a 10x matrix is read as cells x genes or genes x
cells from its names and shape; when they do not tell, or a declared orientation goes against them, one named error
that asks for --orientation. Never a run on a transposed matrix."""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from rlae_sc.errors import InputError
from rlae_sc.io import guess_orientation, name_evidence, read
from tests.conftest import rlae_cli, shared_file

ASK = "Give --orientation genes_x_cells if the rows are genes, or --orientation cells_x_genes if they are cells"


@pytest.fixture(scope="module")
def garnett():
    """800 PBMCs x 32,738 genes (13 MT- genes), barcodes like AAGCACTGCACACA-1."""
    return ad.read_h5ad(shared_file("garnett_pbmc800.h5ad"))


@pytest.fixture(scope="module")
def tables(garnett, tmp_path_factory):
    """garnett as text: genes x cells (.tsv, 32,738 rows), its first 200 cells as cells x genes (.csv.gz, 32,738
    columns; pandas writes wide tables slowly), and genes x cells with no names (pandas's 0, 1, 2, ... both ways)."""
    d = tmp_path_factory.mktemp("orientation")
    X = garnett.X.toarray().astype(np.int32)
    paths = {"genes_x_cells": d / "garnett_genes_x_cells.tsv", "cells_x_genes": d / "garnett200.csv.gz"}
    pd.DataFrame(X.T, index=garnett.var_names, columns=garnett.obs_names).to_csv(paths["genes_x_cells"], sep="\t")
    pd.DataFrame(X[:200], index=garnett.obs_names[:200], columns=garnett.var_names).to_csv(paths["cells_x_genes"])
    paths["no_names"] = d / "garnett_no_names.tsv"
    pd.DataFrame(X.T).to_csv(paths["no_names"], sep="\t")
    return paths


def same_cells(adata: ad.AnnData, garnett: ad.AnnData) -> None:
    assert adata.n_vars == 32_738 and adata.n_obs in (200, 800)
    garnett = garnett[: adata.n_obs]
    assert list(adata.obs_names) == list(garnett.obs_names)
    assert list(adata.var_names) == list(garnett.var_names)
    assert (adata.X != garnett.X).nnz == 0


def test_names_are_recognised(garnett):
    cells, genes = name_evidence(garnett.obs_names), name_evidence(garnett.var_names)
    assert (cells.kind, cells.strong) == ("cells", True) and "cell barcodes (AAGCACTGCACACA-1" in cells.what
    assert (genes.kind, genes.strong) == ("genes", True) and "13 MT- genes (MT-ND1" in genes.what
    ensembl = name_evidence([f"ENSG{i:011d}" for i in range(50)])
    assert (ensembl.kind, ensembl.strong) == ("genes", True)
    symbols = name_evidence(["CD3E", "MS4A1", "LYZ", "NKG7"])  # symbol-like, but so are plate wells: weak
    assert (symbols.kind, symbols.strong) == ("genes", False)
    assert name_evidence([f"cell{i}" for i in range(9)]).kind == "cells"
    assert name_evidence(["sample1:AAACCTGAGAAGGCCTx", "sample1:AAACCTGAGACAGACCx"]).kind == "cells"  # velocyto
    assert name_evidence(map(str, range(100))).kind == "none"
    assert name_evidence(["1772071015_C02", "1772071017_G12"]).kind == "unknown"


@pytest.mark.parametrize("orientation", ["genes_x_cells", "cells_x_genes"])
def test_garnett_as_text_is_read_right_without_a_flag(garnett, tables, orientation):
    same_cells(read(tables[orientation]), garnett)
    same_cells(read(tables[orientation], orientation=orientation), garnett)  # declared, agreeing


def test_a_tall_table_without_names_asks_for_orientation_and_the_run_writes_nothing(garnett, tables, tmp_path):
    with pytest.raises(InputError, match="cannot tell whether the rows are cells or genes") as err:
        read(tables["no_names"])
    assert "rows (32,738): no names" in str(err.value) and ASK in str(err.value)
    out = tmp_path / "run"
    result = rlae_cli("run", tables["no_names"], "--out", out, check=False)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "--orientation genes_x_cells" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())
    adata = read(tables["no_names"], orientation="genes_x_cells")  # the flag reads it
    assert adata.shape == (800, 32_738) and (adata.X != garnett.X).nnz == 0


def test_a_declared_orientation_the_names_contradict_is_an_error(tables, tmp_path):
    with pytest.raises(InputError, match="orientation cells_x_genes was given, but the names say genes_x_cells") as e:
        read(tables["genes_x_cells"], orientation="cells_x_genes")
    assert "MT-ND1" in str(e.value) and "AAGCACTGCACACA-1" in str(e.value)  # the evidence, named
    assert "Give --orientation genes_x_cells" in str(e.value)
    result = rlae_cli(
        "run", tables["cells_x_genes"], "--out", tmp_path / "o", "--orientation", "genes_x_cells", check=False
    )
    assert result.returncode == 2 and "the names say cells_x_genes" in result.stderr, result.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def write_table(path, X, rows, cols):
    pd.DataFrame(X, index=rows, columns=cols).to_csv(path, sep="\t")
    return path


@pytest.mark.parametrize(
    ("rows", "cols", "expected"),
    [
        (["AAACCTGAGAAGGCCT-1", "AAACCTGAGACAGACC-1"], ["u1", "u2", "u3"], "cells_x_genes"),  # barcodes suffice
        ([f"ENSMUSG{i:011d}" for i in range(3)], ["a_1", "b_2"], "genes_x_cells"),  # so do Ensembl ids
        ([f"G{i}" for i in range(50)], [str(j) for j in range(5)], "genes_x_cells"),  # symbol-like + tall shape
        ([f"G{i}" for i in range(20)], [str(j) for j in range(5)], None),  # symbol-like, 4x taller only
        (["AAACCTGAGAAGGCCT-1", "AAACCTGAGACAGACC-1"], ["AAACCTGAGATGTGGC-1"], None),  # barcodes both ways
        ([f"G{i}" for i in range(50)], [f"s{j}" for j in range(5)], None),  # symbol-like both ways
    ],
)
def test_weak_or_conflicting_evidence_stops(tmp_path, rows, cols, expected):
    X = np.arange(len(rows) * len(cols)).reshape(len(rows), len(cols)) % 5
    path = write_table(tmp_path / "x.tsv", X, rows, cols)
    if expected is None:
        with pytest.raises(InputError, match=f"cannot tell whether the rows are cells or genes.*{ASK}"):
            read(path)
        # a declared orientation reads it when the evidence is weak
        assert read(path, orientation="cells_x_genes").shape == X.shape
    else:
        adata = read(path)
        assert adata.shape == (X.shape if expected == "cells_x_genes" else X.T.shape)


def test_shape_alone_never_decides():
    assert guess_orientation(map(str, range(5000)), map(str, range(10)), shape=(5000, 10)).value is None


def test_tables_without_a_header_or_a_column_of_names_are_named(tmp_path):
    X = np.arange(24).reshape(6, 4) % 3
    headless = tmp_path / "headless.tsv"
    np.savetxt(headless, X, fmt="%d", delimiter="\t")
    with pytest.raises(InputError, match=r"first line holds numbers \(0, 1, 2, 0, ...\).*no header row"):
        read(headless, orientation="cells_x_genes")
    nameless = tmp_path / "nameless.csv"
    pd.DataFrame(X, columns=["CD3E", "LYZ", "MS4A1", "NKG7"]).to_csv(nameless, index=False)
    with pytest.raises(InputError, match="first column holds repeated numbers.*no column of row names"):
        read(nameless, orientation="cells_x_genes")


def write_loom(path, M, row_names, col_names):
    with h5py.File(path, "w") as f:
        f.create_dataset("matrix", data=M, chunks=(2, 2))
        f.create_group("row_attrs")["Gene"] = np.array(row_names, dtype="S")
        f.create_group("col_attrs")["CellID"] = np.array(col_names, dtype="S")
    return path


def test_loom_is_genes_x_cells_unless_the_names_say_otherwise(tmp_path):
    genes = ["MT-CO1", "MT-ND1", "CD3E", "LYZ", "MS4A1"]
    cells = ["AAACCTGAGAAGGCCT-1", "AAACCTGAGACAGACC-1", "AAACCTGAGATGTGGC-1"]
    X = np.arange(15).reshape(3, 5)  # cells x genes
    good = write_loom(tmp_path / "good.loom", X.T, genes, cells)
    adata = read(good)
    assert list(adata.obs_names) == cells and (adata.X.toarray() == X).all()
    flipped = write_loom(tmp_path / "flipped.loom", X, cells, genes)  # a writer that stored cells as rows
    with pytest.raises(InputError, match="the format stores genes x cells, but the names say cells_x_genes"):
        read(flipped)
    adata = read(flipped, orientation="cells_x_genes")
    assert list(adata.obs_names) == cells and list(adata.var_names) == genes and (adata.X.toarray() == X).all()
    with pytest.raises(InputError, match="orientation genes_x_cells was given, but the names say cells_x_genes"):
        read(flipped, orientation="genes_x_cells")
    unnamed = tmp_path / "unnamed.loom"
    with h5py.File(unnamed, "w") as f:
        f["matrix"] = X.T
    assert read(unnamed).shape == (3, 5)  # no names: the format's layout


def write_10x(path, M, features, barcodes):
    path.mkdir()
    scipy.io.mmwrite(path / "matrix.mtx", sp.coo_matrix(M))
    (path / "features.tsv").write_text("".join(f"ID{i}\t{g}\tGene Expression\n" for i, g in enumerate(features)))
    (path / "barcodes.tsv").write_text("".join(f"{b}\n" for b in barcodes))
    return path


def test_a_10x_matrix_written_cells_x_genes_is_recognised_by_its_shape(tmp_path):
    genes = ["MT-CO1", "CD3E", "LYZ", "MS4A1"]
    cells = ["AAACCTGAGAAGGCCT-1", "AAACCTGAGACAGACC-1", "AAACCTGAGATGTGGC-1"]
    X = np.arange(12).reshape(3, 4)  # cells x genes
    for name, M in (("standard", X.T), ("transposed", X)):
        adata = read(write_10x(tmp_path / name, M, genes, cells))
        assert list(adata.obs_names) == cells and list(adata.var_names) == genes and (adata.X.toarray() == X).all()
    with pytest.raises(InputError, match="orientation genes_x_cells was given, but matrix.mtx is 3 x 4"):
        read(tmp_path / "transposed", orientation="genes_x_cells")
    with pytest.raises(InputError, match="matrix.mtx is 4 x 3, but features.tsv lists 5 features"):
        read(write_10x(tmp_path / "mismatch", X.T, [*genes, "NKG7"], cells))
    with pytest.raises(InputError, match="features.tsv holds what look like cells and barcodes.tsv what look like"):
        read(write_10x(tmp_path / "swapped", X, cells, genes))


def test_h5ad_layout_is_fixed(tmp_path, garnett):
    small = garnett[:50, garnett.var_names.str.startswith("MT-") | (np.arange(garnett.n_vars) < 30)].copy()
    path = tmp_path / "small.h5ad"
    small.write_h5ad(path)
    assert read(path, orientation="cells_x_genes").shape == small.shape
    with pytest.raises(InputError, match="a h5ad file is cells x genes by its format"):
        read(path, orientation="genes_x_cells")
    small.T.write_h5ad(tmp_path / "transposed.h5ad")
    with pytest.raises(InputError, match=r"its cells \(obs\) look like genes.*transpose it in Python"):
        read(tmp_path / "transposed.h5ad")


def test_a_bare_matrix_market_file_is_named(tmp_path):
    scipy.io.mmwrite(tmp_path / "counts.mtx", sp.coo_matrix(np.eye(3)))
    with pytest.raises(InputError, match="a Matrix Market file on its own has no cell or gene names"):
        read(tmp_path / "counts.mtx")
