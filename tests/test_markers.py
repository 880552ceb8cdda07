"""Marker genes per group (rlae_sc/markers.py): scanpy's Wilcoxon test and fold changes, passes over blocks of
cells, markers.tsv, and known PBMC markers on the real sets."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

from rlae_sc.errors import InputError
from rlae_sc.io import read
from rlae_sc.markers import COLUMNS, group_codes, markers, wilcoxon_cells, write_markers
from rlae_sc.preprocess import preprocess
from rlae_sc.simulate import synthetic_counts
from tests.conftest import SHARED_DATA, shared_file

TOLERANCE = {  # ours against scanpy's, which stores scores and fold changes as float32
    "score": dict(rtol=1e-6, atol=1e-5),
    "pval": dict(rtol=1e-6, atol=1e-12),
    "pval_adj": dict(rtol=1e-6, atol=1e-12),
    "logfoldchange": dict(rtol=1e-6, atol=1e-5),
    "frac_in": dict(rtol=0, atol=1e-12),
    "frac_out": dict(rtol=0, atol=1e-12),
}


def log_normalized(counts: ad.AnnData, target_sum: float | None = None) -> ad.AnnData:
    """scanpy's normalize_total (to ``target_sum``; None: the median total) and log1p, on a copy."""
    cells = counts.copy()
    sc.pp.normalize_total(cells, target_sum=target_sum)
    sc.pp.log1p(cells)
    return cells


@pytest.fixture(scope="module")
def cells():
    """500 synthetic cells x 300 genes, 4 types, log-normalised (many ties: sparse counts)."""
    return log_normalized(synthetic_counts(n_cells=500, n_genes=300, n_types=4, rank=5, seed=3))


def scanpy_table(cells: ad.AnnData, groupby: str, *, tie_correct: bool = False) -> pd.DataFrame:
    """``sc.tl.rank_genes_groups(method="wilcoxon")`` for every gene, as one table with our column names."""
    cells = cells.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(
            cells, groupby, method="wilcoxon", n_genes=cells.n_vars, pts=True, tie_correct=tie_correct
        )
    table = sc.get.rank_genes_groups_df(cells, group=None)
    names = {"names": "gene", "scores": "score", "pvals": "pval", "pvals_adj": "pval_adj"}
    names |= {"logfoldchanges": "logfoldchange", "pct_nz_group": "frac_in", "pct_nz_reference": "frac_out"}
    return table.rename(columns=names).assign(cluster=lambda t: t["group"].astype(str))


def assert_matches_scanpy(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    both = ours.merge(theirs, on=["cluster", "gene"], suffixes=("", "_scanpy"), validate="one_to_one")
    assert len(both) == len(ours) == len(theirs)
    for column, tol in TOLERANCE.items():
        np.testing.assert_allclose(both[column], both[f"{column}_scanpy"], **tol, err_msg=column)


@pytest.mark.parametrize("tie_correct", [False, True])
def test_wilcoxon_and_fold_changes_match_scanpy(cells, tie_correct):
    ours = markers(cells, groupby="cell_type", n_genes=None, tie_correct=tie_correct)
    assert_matches_scanpy(ours, scanpy_table(cells, "cell_type", tie_correct=tie_correct))
    X = cells.X.toarray()
    for name, table in ours.groupby("cluster"):
        inside = (cells.obs["cell_type"] == name).to_numpy()
        mean = pd.Series(X[inside].mean(axis=0), index=cells.var_names)
        np.testing.assert_allclose(table["mean_in"], mean[table["gene"]], rtol=1e-6)
        assert list(table["rank"]) == list(range(1, cells.n_vars + 1))


def test_passes_over_a_file_equal_the_matrix_in_memory(cells, tmp_path):
    cells.write_h5ad(tmp_path / "cells.h5ad")
    backed = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    try:
        streamed = markers(backed, groupby="cell_type", chunk_size=128)  # four blocks
    finally:
        backed.file.close()
    pd.testing.assert_frame_equal(streamed, markers(cells, groupby="cell_type"))


def test_counts_are_log_normalised_first():
    """values='counts': each cell scaled to target_sum (None: the median total, as scanpy's normalize_total), then
    log1p; the same as giving those log values."""
    counts = synthetic_counts(n_cells=300, n_genes=200, n_types=3, rank=4, seed=5)
    X = counts.X.toarray().astype(np.float64)
    totals = X.sum(axis=1, keepdims=True)
    for target_sum in (1e4, None):
        logged = counts.copy()
        logged.X = sp.csr_matrix(np.log1p(X / totals * (target_sum or np.median(totals))).astype(np.float32))
        ours = markers(counts, groupby="cell_type", n_genes=None, values="counts", target_sum=target_sum)
        given = markers(logged, groupby="cell_type", n_genes=None)
        both = ours.merge(given, on=["cluster", "gene"], suffixes=("", "_given"), validate="one_to_one")
        for column in ("score", "pval", "logfoldchange", "mean_in", "frac_in", "frac_out"):
            np.testing.assert_allclose(both[column], both[f"{column}_given"], rtol=1e-5, atol=1e-7, err_msg=column)


def test_above_max_cells_the_test_runs_on_a_seeded_sample(cells):
    codes, _ = group_codes(cells.obs, groupby="cell_type")
    tested = wilcoxon_cells(codes, max_cells=200, seed=4)
    assert tested.sum() == 200 and (wilcoxon_cells(codes, max_cells=200, seed=4) == tested).all()
    ours = markers(cells, groupby="cell_type", n_genes=None, max_cells=200, seed=4)
    sample = scanpy_table(cells[tested], "cell_type")
    both = ours.merge(sample, on=["cluster", "gene"], suffixes=("", "_scanpy"))
    for column in ("score", "pval"):  # the test: on the 200 cells
        np.testing.assert_allclose(both[column], both[f"{column}_scanpy"], **TOLERANCE[column])
    full = ours.merge(scanpy_table(cells, "cell_type"), on=["cluster", "gene"], suffixes=("", "_scanpy"))
    for column in ("logfoldchange", "frac_in", "frac_out"):  # the sums: over every cell
        np.testing.assert_allclose(full[column], full[f"{column}_scanpy"], **TOLERANCE[column])


def test_markers_tsv_has_every_column(cells, tmp_path):
    table = markers(cells, groupby="cell_type", n_genes=5)
    assert len(table) == 4 * 5 and list(table.columns) == COLUMNS
    path = write_markers(table, tmp_path / "markers.tsv")
    back = pd.read_csv(path, sep="\t")
    assert list(back.columns) == COLUMNS and len(back) == 20
    np.testing.assert_allclose(back["score"], table["score"], rtol=1e-5)
    assert (back["pval_adj"] >= back["pval"] - 1e-12).all() and back["pval_adj"].le(1).all()
    with pytest.raises(InputError, match="lacks"):
        write_markers(table.drop(columns="frac_out"), tmp_path / "bad.tsv")


def test_bad_groups_are_named(cells):
    with pytest.raises(InputError, match="no obs column 'leiden'"):
        markers(cells, groupby="leiden")
    one = cells.copy()
    one.obs["one"] = "all"
    with pytest.raises(InputError, match="fewer than two groups"):
        markers(one, groupby="one")


KNOWN = {"B": {"MS4A1", "CD79A"}, "NK": {"GNLY", "NKG7"}, "CD14 monocytes": {"LYZ", "CD14", "S100A8"}}
SETS = {  # file -> the label of each known type in its cell_type column
    "soupx_pbmc4k_2170.h5ad": {"B": "B", "NK": "NK", "CD14 monocytes": "MNP"},
    "kang_se_12261.h5ad": {"B": "B cells", "NK": "NK cells", "CD14 monocytes": "CD14+ Monocytes"},
}


def labelled_log_values(name: str) -> ad.AnnData:
    """The cells passing QC with the log-normalised values of all genes, as the pipeline keeps them
    (``preprocessed.h5ad``'s raw, ``embedding.h5ad``'s X), gene symbols as names."""
    pre, _ = preprocess(read(shared_file(name)), scale=False)
    cells = pre.raw.to_adata()
    cells.obs = pre.obs
    if name.startswith("kang"):
        symbols = pd.read_csv(SHARED_DATA / "kang_se_gene_symbols.tsv", sep="\t", index_col=0)["gene_symbol"]
        cells.var_names = symbols.reindex(cells.var_names).fillna(pd.Series(cells.var_names, cells.var_names))
        cells.var_names_make_unique()
    return cells


@pytest.mark.parametrize("name", list(SETS))
def test_known_pbmc_markers_are_in_the_top_10(name):
    """Issue 23's known-biology check, on the labelled groups: B cells have MS4A1 or CD79A among their top 10
    markers, NK cells GNLY or NKG7, CD14 monocytes LYZ, CD14 or S100A8."""
    cells = labelled_log_values(name)
    table = markers(cells, groupby="cell_type", n_genes=10)
    for kind, label in SETS[name].items():
        top = set(table.loc[table["cluster"] == label, "gene"])
        assert top & KNOWN[kind], f"{name} {label}: {sorted(top)}"


def test_scanpy_agrees_on_real_counts():
    """The test's numbers equal scanpy's on 600 soupx cells and all their genes (real ties and sparsity)."""
    cells = labelled_log_values("soupx_pbmc4k_2170.h5ad")[:600].copy()
    cells = cells[:, np.asarray((cells.X > 0).sum(axis=0)).ravel() > 0].copy()
    assert_matches_scanpy(markers(cells, groupby="cell_type", n_genes=None), scanpy_table(cells, "cell_type"))
