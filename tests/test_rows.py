"""The row protocol (rlae_sc/rows.py): every source of rows a pass reads says that it is one, and is one."""

from __future__ import annotations

import ast

import numpy as np
import pytest

from rlae_sc.affine import AffineRows
from rlae_sc.atlas import RowSubset, SomaMatrix, ZarrMatrix
from rlae_sc.engine import run_pass
from rlae_sc.noise_floor import DeflatedRows, PermutedRows
from rlae_sc.preprocess import ScaledRows, preprocess, trained_rows
from rlae_sc.rows import H5adMatrix, InMemory, Rows, as_rows
from tests.test_structure import MODULES

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # anndata's and zarr's notices


def row_classes() -> list[str]:
    """``module.Class`` of every class of the package that defines ``read`` and ``fingerprint``."""
    found = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                methods = {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
                if {"read", "fingerprint"} <= methods:
                    found.append(f"{module}.{node.name}")
    return found


def test_every_source_of_rows_declares_the_protocol():
    """A class with ``read`` and ``fingerprint`` lists :class:`Rows` among its bases, so a reader finds what it
    promises (the checks below hold it to it)."""
    undeclared = []
    for name in row_classes():
        module, _, cls = name.rpartition(".")
        node = next(
            n for n in ast.walk(ast.parse(MODULES[module].read_text())) if isinstance(n, ast.ClassDef) and n.name == cls
        )
        if "Rows" not in {ast.unparse(base) for base in node.bases} and name != "rlae_sc.rows.Rows":
            undeclared.append(name)
    assert len(row_classes()) >= 10
    assert not undeclared, f"classes that read rows without declaring Rows: {undeclared}"


def test_each_source_is_rows_and_reads_its_blocks(small_counts, tmp_path):
    """One instance of every class that declares the protocol is an instance of :class:`Rows` (checked by its
    members, as ``runtime_checkable`` does), and its blocks have its shape's columns."""
    X = small_counts.X[:200]
    small_counts[:200].write_h5ad(tmp_path / "x.h5ad")
    small_counts[:200].write_zarr(tmp_path / "x.zarr")
    pre, _ = preprocess(small_counts, scale=False, n_top_genes=100, min_genes=20)
    scaled = trained_rows(pre)
    U = np.linalg.qr(np.random.default_rng(0).standard_normal((scaled.shape[1], 3)))[0]
    sources = [
        InMemory(X),
        H5adMatrix(str(tmp_path / "x.h5ad")),
        ZarrMatrix(str(tmp_path / "x.zarr")),
        RowSubset(H5adMatrix(str(tmp_path / "x.h5ad")), np.array([1, 5, 9, 150])),
        scaled,
        scaled.sparse,
        PermutedRows(scaled, seed=0),
        DeflatedRows(scaled, U),
        SomaMatrix("experiment", "RNA", "raw", np.arange(4), np.arange(3)),  # shape only: no tiledbsoma needed
    ]
    declared = {name.rpartition(".")[2] for name in row_classes()} - {"Rows"}
    assert {type(source).__name__ for source in sources} == declared
    for source in sources:
        assert isinstance(source, Rows), type(source).__name__
        if not isinstance(source, SomaMatrix):
            assert source.read(0, 3).shape == (3, source.shape[1]), type(source).__name__
    assert isinstance(scaled, ScaledRows) and isinstance(scaled.sparse, AffineRows)
    assert not isinstance(X, Rows) and not isinstance(np.zeros((2, 2)), Rows)  # arrays are wrapped, not rows


def test_as_rows_wraps_arrays_and_keeps_rows(small_counts, tmp_path):
    X = small_counts.X
    assert isinstance(as_rows(X), InMemory) and as_rows(X).array is X
    rows = InMemory(X)
    assert as_rows(rows) is rows


def test_a_pass_over_any_rows_gives_the_same_sums(small_counts, tmp_path):
    """The engine reads rows through the protocol alone: the same pass over the same cells in memory, from a file
    and through a subset of every row gives the same column sums."""
    small_counts.write_h5ad(tmp_path / "x.h5ad")
    n = small_counts.n_obs

    sums = [
        run_pass(rows, column_sums, chunk_size=128)[0]["sum"]
        for rows in (
            InMemory(small_counts.X),
            H5adMatrix(str(tmp_path / "x.h5ad")),
            RowSubset(H5adMatrix(str(tmp_path / "x.h5ad")), np.arange(n)),
        )
    ]
    assert all(np.array_equal(sums[0], other) for other in sums[1:])
    assert np.allclose(sums[0], np.asarray(small_counts.X.sum(axis=0)).ravel())


def column_sums(block, start: int) -> tuple[dict, dict]:
    return {"sum": np.asarray(block.sum(axis=0), dtype=np.float64).ravel()}, {}
