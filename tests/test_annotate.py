"""Names for clusters (rlae_sc/annotate.py): the marker list's reader and its errors, the score against scanpy's
score_genes, planted markers, and the bundled PBMC list on the shared PBMC sets (labels as clusters)."""

from __future__ import annotations

import tomllib
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

from rlae_sc.annotate import (
    COLUMNS,
    PBMC_MARKERS_PATH,
    UNASSIGNED,
    cluster_names,
    marker_coverage,
    read_marker_list,
    type_scores,
)
from rlae_sc.errors import InputError
from rlae_sc.io import read
from rlae_sc.markers import group_codes, group_statistics, markers
from rlae_sc.preprocess import preprocess
from rlae_sc.rows import matrix_of
from tests.conftest import ROOT, shared_file

PLANTED = {"A": 5, "B": 5, "C": 5, "D": 5}  # group -> marker genes planted in it (named A1..A5, ...)


def planted_cells(seed: int = 0) -> ad.AnnData:
    """Log-normalised values of 840 cells x 420 genes: groups A-D (150 cells each) express their 5 planted
    markers (A1..A5, ...) about 20 times above their background; group AB (90 cells) those of both A and B;
    group O (150 cells) none. Background rates are log-normal per gene (so the genes span the expression bins)."""
    rng = np.random.default_rng(seed)
    names = [f"{g}{i}" for g, n in PLANTED.items() for i in range(1, n + 1)]
    names += [f"bg{i}" for i in range(420 - len(names))]
    groups = np.repeat(["A", "B", "C", "D", "AB", "O"], [150, 150, 150, 150, 90, 150])
    rate = np.exp(rng.normal(-1.0, 1.2, size=len(names)))[None, :].repeat(len(groups), axis=0)
    for g in PLANTED:
        cols = [names.index(f"{g}{i}") for i in range(1, PLANTED[g] + 1)]
        rows = np.flatnonzero(np.char.find(groups.astype(str), g) >= 0)
        rate[np.ix_(rows, cols)] = rate[np.ix_(rows, cols)] * 20 + 1.0
    cells = ad.AnnData(
        X=rng.poisson(rate).astype(np.float64),
        obs=pd.DataFrame({"group": pd.Categorical(groups)}, index=[f"c{i}" for i in range(len(groups))]),
        var=pd.DataFrame(index=names),
    )
    sc.pp.normalize_total(cells, target_sum=1e4)
    sc.pp.log1p(cells)
    return cells


def statistics(cells: ad.AnnData, groupby: str) -> tuple[dict, pd.Index]:
    """:func:`group_statistics` of ``cells`` by ``groupby`` (no test cells) and the groups' names."""
    codes, groups = group_codes(cells.obs, groupby=groupby)
    stats = group_statistics(matrix_of(cells), codes, len(groups), tested=np.zeros(len(codes), dtype=bool))
    return stats, groups


@pytest.fixture(scope="module")
def planted():
    cells = planted_cells()
    stats, groups = statistics(cells, "group")
    return cells, stats, groups


PLANTED_SETS = {g: [f"{g}{i}" for i in range(1, n + 1)] for g, n in PLANTED.items()}


def test_planted_markers_name_their_groups(planted):
    cells, stats, groups = planted
    table = cluster_names(stats, PLANTED_SETS, genes=cells.var_names, clusters=groups)
    assert list(table.columns) == COLUMNS
    names = dict(zip(table["cluster"], table["name"]))
    assert {g: names[g] for g in PLANTED} == {g: g for g in PLANTED}
    assert names["O"] == UNASSIGNED  # no planted markers: every score near 0
    assert names["AB"] == UNASSIGNED  # A and B score alike: the margin rule
    ab = table.set_index("cluster").loc["AB"]
    assert {ab["best"], ab["second"]} == {"A", "B"} and ab["margin"] < 0.2
    a = table.set_index("cluster").loc["A"]
    assert a["score"] > 1.5 and a["n_found"] == a["n_listed"] == 5 and a["genes_found"] == "A1,A2,A3,A4,A5"
    assert 0.9 < a["frac_expressing"] <= 1.0


def test_the_markers_table_gives_the_same_names_and_scores(planted):
    """From :func:`markers`'s table of every gene, with the clusters' sizes, the result equals the one from the
    statistics; without sizes (genes binned by their mean over clusters), the names stay."""
    cells, stats, groups = planted
    from_stats = cluster_names(stats, PLANTED_SETS, genes=cells.var_names, clusters=groups)
    table = markers(cells, groupby="group", n_genes=None)
    sizes = cells.obs["group"].value_counts()
    from_table = cluster_names(table, PLANTED_SETS, sizes=sizes)
    pd.testing.assert_frame_equal(from_table, from_stats, rtol=1e-9, atol=1e-12)
    assert list(cluster_names(table, PLANTED_SETS)["name"]) == list(from_stats["name"])
    with pytest.raises(InputError, match="every gene for every cluster"):
        cluster_names(table.groupby("cluster", observed=True).head(100), PLANTED_SETS)


def test_scores_equal_the_cluster_means_of_scanpys_score_genes(planted):
    """With every gene of a bin as reference (ctrl_size above the bin size), scanpy's cell scores averaged over
    each group equal the group's score from the sums alone."""
    cells, stats, groups = planted
    genes = ["A1", "A2", "B3", "C1", "bg7", "bg100"]  # markers and background genes, several bins
    ours = type_scores(stats, {"set": genes}, genes=cells.var_names, clusters=groups)["set"]
    dense = cells.copy()
    dense.X = np.asarray(dense.X, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.score_genes(dense, genes, ctrl_size=10**6, n_bins=25, score_name="s")
    theirs = dense.obs.groupby("group", observed=True)["s"].mean().reindex(groups)
    np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(), rtol=0, atol=1e-10)


def test_negative_genes_only_lower_a_score(planted):
    """A negative gene lowers the score where it is expressed above its reference (group AB for A with B's
    markers as negative) and changes nothing where it is not (group A)."""
    cells, stats, groups = planted
    plain = type_scores(stats, {"A": PLANTED_SETS["A"], "C": ["C1"]}, genes=cells.var_names, clusters=groups)
    sets = {"A": {"genes": PLANTED_SETS["A"], "negative": ["B1", "B2"]}, "C": ["C1"]}
    negative = type_scores(stats, sets, genes=cells.var_names, clusters=groups)
    assert negative.loc["A", "A"] == plain.loc["A", "A"]
    assert negative.loc["AB", "A"] < plain.loc["AB", "A"] - 1.0
    table = cluster_names(stats, sets, genes=cells.var_names, clusters=groups).set_index("cluster")
    assert table.loc["A", "name"] == "A" and table.loc["AB", "name"] != "A"


def test_genes_alias_and_coverage(planted):
    """Data named by ids: genes_alias maps them to the list's names; a type's missing markers are counted,
    and a type none of whose markers is found is not scored."""
    cells, stats, groups = planted
    ids = pd.Index([f"ENSG{i:011d}" for i in range(cells.n_vars)])
    alias = pd.Series(cells.var_names, index=ids)
    sets = {**PLANTED_SETS, "A": [*PLANTED_SETS["A"], "NOTHERE"], "Z": ["Z1", "Z2"]}
    with pytest.raises(InputError, match="ids such as ENSG"):
        cluster_names(stats, sets, genes=ids, clusters=groups)
    table = cluster_names(stats, sets, genes=ids, clusters=groups, genes_alias=alias).set_index("cluster")
    assert table.loc["A", "name"] == "A" and (table.loc["A", "n_found"], table.loc["A", "n_listed"]) == (5, 6)
    assert type_scores(stats, sets, genes=ids, clusters=groups, genes_alias=alias)["Z"].isna().all()
    coverage = marker_coverage(sets, ids, genes_alias=dict(alias)).set_index("type")
    assert coverage.loc["A", ["n_listed", "n_found", "missing"]].tolist() == [6, 5, "NOTHERE"]
    assert coverage.loc["Z", "n_found"] == 0


def test_a_type_found_only_through_shared_markers_is_not_scored(planted):
    cells, stats, groups = planted
    sets = {"A": PLANTED_SETS["A"], "A-sub": ["A1", "A2", "MISSING"]}  # A-sub's found markers are all A's
    scores = type_scores(stats, sets, genes=cells.var_names, clusters=groups)
    assert scores["A-sub"].isna().all() and scores["A"].notna().all()


def test_the_table_can_be_stored_in_an_h5ad(planted, tmp_path):
    cells, stats, groups = planted
    table = cluster_names(stats, PLANTED_SETS, genes=cells.var_names, clusters=groups)
    cells = cells.copy()
    cells.uns["names"] = table
    cells.write_h5ad(tmp_path / "x.h5ad")
    back = ad.read_h5ad(tmp_path / "x.h5ad").uns["names"]
    pd.testing.assert_frame_equal(back.reset_index(drop=True), table, check_dtype=False, check_index_type=False)


# -- the marker list -------------------------------------------------------------------------------------


def test_the_bundled_pbmc_list():
    sets = read_marker_list("pbmc")
    assert read_marker_list(PBMC_MARKERS_PATH) == sets
    assert {
        "B cells",
        "Plasma cells",
        "CD4 T cells",
        "CD8 T cells",
        "NK cells",
        "CD14 monocytes",
        "FCGR3A monocytes",
        "Dendritic cells",
        "Plasmacytoid DC",
        "Megakaryocytes/platelets",
    } == set(sets)
    for kind, genes in {
        "B cells": {"MS4A1", "CD79A"},
        "CD4 T cells": {"CD3E", "IL7R"},
        "CD8 T cells": {"CD8A"},
        "NK cells": {"GNLY", "NKG7"},
        "CD14 monocytes": {"LYZ", "CD14", "S100A8"},
        "FCGR3A monocytes": {"FCGR3A", "MS4A7"},
        "Dendritic cells": {"FCER1A", "CST3"},
        "Plasmacytoid DC": {"LILRA4"},
        "Megakaryocytes/platelets": {"PPBP", "PF4"},
        "Plasma cells": {"JCHAIN"},
    }.items():
        assert genes <= set(sets[kind]["genes"]), kind


def test_the_bundled_list_is_package_data():
    """pyproject's setuptools configuration ships rlae_sc/data/*.yaml with the package."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["rlae_sc"]
    assert any(PBMC_MARKERS_PATH.relative_to(ROOT / "rlae_sc").match(p) for p in patterns)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("B cells: [MS4A1\n  CD79A: [", "not a readable YAML file"),
        ("- MS4A1\n- CD79A\n", "a list, not a mapping"),
        ("", "the marker list is empty"),
        ("B: [MS4A1]\nB: [CD79A]\n", "'B' appears twice"),
        ("B: [MS4A1, NO]\n", "False is not a gene name"),
        ("B: []\n", "not a list of gene names"),
        ("B: MS4A1\n", "not a list of gene names"),
        ("B: {genes: [MS4A1], negatives: [CD3E]}\n", "unknown key"),
        ("B: {genes: [MS4A1], negative: [MS4A1]}\n", "both marker and negative"),
        ("B: [MS4A1, MS4A1]\n", "listed twice"),
    ],
)
def test_malformed_marker_lists_are_named_errors(tmp_path, text, problem):
    path = tmp_path / "markers.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=problem) as err:
        read_marker_list(path)
    assert str(path) in str(err.value)


def test_a_missing_marker_list(tmp_path):
    with pytest.raises(InputError, match="marker list not found.*pbmc"):
        read_marker_list(tmp_path / "nothere.yaml")
    with pytest.raises(InputError, match="not a list of gene names"):
        cluster_names({"sum": np.ones((2, 3)), "n": np.ones(2)}, {"B": "MS4A1"}, genes=["a", "b", "c"])


def test_the_long_and_short_forms(tmp_path):
    path = tmp_path / "markers.yaml"
    path.write_text("B cells: [MS4A1, CD79A]\nNK cells:\n  genes: [GNLY]\n  negative: [CD3E]\n")
    assert read_marker_list(path) == {
        "B cells": {"genes": ["MS4A1", "CD79A"], "negative": []},
        "NK cells": {"genes": ["GNLY"], "negative": ["CD3E"]},
    }


# -- the shared PBMC sets --------------------------------------------------------------------------------

# label -> the name it gets from the bundled list, per file (clusters = the labels). Measured (scores, log1p):
# soupx: ? (20 cells) pDC 1.27, B 0.78, MNP CD14 monocytes 1.54, NK 0.70, T_CD4 CD4 T 0.43, T_CD8 CD8 T 0.37;
# garnett: B 0.33, CD4 T 0.25 (CD8 T second, 0.16), CD8 T 0.36. kang_se's 1,287 genes hold 1 of the 10 B
# markers (CD79A), none of CD8A/CD8B/GZMK (so CD8 T is not scored; its cells, cytotoxic, score as NK cells
# 0.21) and none of the megakaryocyte markers (unassigned, best score 0.02).
EXPECTED = {
    "soupx_pbmc4k_2170.h5ad": {
        "?": "Plasmacytoid DC",
        "B": "B cells",
        "MNP": "CD14 monocytes",
        "NK": "NK cells",
        "T_CD4": "CD4 T cells",
        "T_CD8": "CD8 T cells",
    },
    "garnett_pbmc800.h5ad": {"B cells": "B cells", "CD4 T cells": "CD4 T cells", "CD8 T cells": "CD8 T cells"},
    "kang_se_12261.h5ad": {
        "B cells": "B cells",
        "CD14+ Monocytes": "CD14 monocytes",
        "CD4 T cells": "CD4 T cells",
        "Dendritic cells": "Dendritic cells",
        "FCGR3A+ Monocytes": "FCGR3A monocytes",
        "NK cells": "NK cells",
        "Megakaryocytes": UNASSIGNED,
    },
}


def log_values(name: str) -> tuple[ad.AnnData, ad.AnnData]:
    """A shared file's QC-passing cells: the log-normalised values of all genes (as ``embedding.h5ad`` holds
    them) and the preprocessed highly variable genes."""
    pre, _ = preprocess(read(shared_file(name)), scale=False)
    cells = pre.raw.to_adata()
    cells.obs = pre.obs
    return cells, pre


def labelled_statistics(name: str) -> tuple[dict, pd.Index, pd.Index, pd.Series | None]:
    """The per-label statistics of a shared file's QC-passing cells over all genes, the genes, the labels, and
    kang_se's id -> symbol map."""
    cells, _ = log_values(name)
    stats, groups = statistics(cells, "cell_type")
    alias = None
    if name.startswith("kang"):
        alias = pd.read_csv(shared_file("kang_se_gene_symbols.tsv"), sep="\t", index_col=0)["gene_symbol"]
    return stats, cells.var_names, groups, alias


@pytest.mark.parametrize("name", list(EXPECTED))
def test_the_pbmc_list_names_the_known_types(name):
    stats, genes, groups, alias = labelled_statistics(name)
    sets = read_marker_list("pbmc")
    table = cluster_names(stats, sets, genes=genes, clusters=groups, genes_alias=alias).set_index("cluster")
    named = {label: table.loc[label, "name"] for label in EXPECTED[name]}
    assert named == EXPECTED[name], table.drop(columns="genes_found").round(2).to_string()
    if name.startswith("kang"):
        coverage = marker_coverage(sets, genes, genes_alias=alias).set_index("type")
        assert coverage.loc["CD8 T cells", "missing"] == "CD8A,CD8B,GZMK"
        assert coverage.loc["Megakaryocytes/platelets", "n_found"] == 0
        assert np.isnan(type_scores(stats, sets, genes=genes, clusters=groups, genes_alias=alias)["CD8 T cells"]).all()
        with pytest.raises(InputError, match="ids such as ENSG"):
            cluster_names(stats, sets, genes=genes, clusters=groups)


# soupx's labels -> the names their Leiden clusters may get.
SOUPX_ALLOWED = {
    "?": {"Plasmacytoid DC"},
    "B": {"B cells"},
    "MNP": {"CD14 monocytes", "FCGR3A monocytes", "Dendritic cells"},
    "NK": {"NK cells"},
    "T_CD4": {"CD4 T cells"},
    "T_CD8": {"CD8 T cells"},
}


def test_the_clusters_of_soupx():
    """soupx's own 12 clusters (obs['seurat_cluster'], which its labels were drawn from) named from their
    statistics: no cluster gets a name outside its label's (MNP: either monocyte type or DC), and at least 85%
    of the cells are in named clusters. Measured: 10 clusters named, 91.5% of the cells; unassigned are 71 MNP
    cells (DC 0.96 against CD14 monocytes 0.84, margin 0.12) and 113 cells labelled NK that express CD3E, CD3D
    and GZMK (CD4 T 0.23 against CD8 T 0.19); scanpy's Leiden clusters (resolution 1) gave the same picture."""
    cells, _ = log_values("soupx_pbmc4k_2170.h5ad")
    stats, groups = statistics(cells, "seurat_cluster")
    sizes = pd.Series(stats["n"], index=groups)
    table = cluster_names(stats, read_marker_list("pbmc"), genes=cells.var_names, clusters=groups)
    main = pd.crosstab(cells.obs["seurat_cluster"], cells.obs["cell_type"]).idxmax(axis=1).rename(index=str)
    report = table.assign(label=main.reindex(table["cluster"]).to_numpy()).drop(columns="genes_found").round(2)
    named = table["name"] != UNASSIGNED
    for _, row in table[named].iterrows():
        assert row["name"] in SOUPX_ALLOWED[main[row["cluster"]]], report.to_string()
    assert sizes[table.loc[named, "cluster"]].sum() >= 0.85 * sizes.sum(), report.to_string()
