"""Pseudobulk marker tests (rlae_sc.pseudobulk): exact sums per sample and cluster, and DESeq2 between samples."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from rlae_sc.markers import markers
from rlae_sc.pseudobulk import deseq_cluster, pseudobulk_markers, sample_cluster_sums
from rlae_sc.rows import InMemory

N_SAMPLES, CELLS, GENES = 4, 150, 300  # cells per sample and cluster


def planted(seed=0):
    """Counts of 4 samples x 2 clusters; gene ``up_all`` is 4x higher in cluster 1 in every sample, gene
    ``up_one`` 12x higher in cluster 1 of sample s0 only; every other gene is the same everywhere (each sample
    has its own depth and its own gene-level offsets)."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 0.5, size=GENES)
    genes = [f"g{j}" for j in range(GENES - 2)] + ["up_all", "up_one"]
    blocks, obs = [], []
    for s in range(N_SAMPLES):
        offset = base * rng.lognormal(0, 0.2, size=GENES)
        for c in (0, 1):
            mean = offset.copy()
            if c == 1:
                mean[-2] *= 4.0
                mean[-1] *= 12.0 if s == 0 else 1.0
            depth = rng.lognormal(0, 0.3, size=(CELLS, 1)) * (1 + s / 2)
            blocks.append(rng.poisson(mean * depth))
            obs += [(f"s{s}", str(c))] * CELLS
    obs = pd.DataFrame(obs, columns=["sample", "leiden"], index=[f"c{i}" for i in range(len(obs))])
    return ad.AnnData(X=sp.csr_matrix(np.vstack(blocks).astype(np.float32)), obs=obs, var=pd.DataFrame(index=genes))


def log_normalized(counts: ad.AnnData, target: float = 1e4) -> sp.csr_matrix:
    X = counts.X.tocsr().astype(np.float64)
    X = sp.diags(target / np.asarray(X.sum(axis=1)).ravel()) @ X
    return sp.csr_matrix(np.log1p(X.toarray()).astype(np.float32))


def test_sums_equal_numpy_and_come_back_from_log_values():
    cells = planted()
    clusters = cells.obs["leiden"].astype(int).to_numpy()
    samples = cells.obs["sample"].str[1:].astype(int).to_numpy()
    samples[::7] = -1  # cells without a sample are left out
    dense = cells.X.toarray().astype(np.float64)
    expected = np.zeros((N_SAMPLES, 2, GENES))
    for s in range(N_SAMPLES):
        for c in (0, 1):
            expected[s, c] = dense[(samples == s) & (clusters == c)].sum(axis=0)
    sums, n = sample_cluster_sums(InMemory(cells.X), clusters, samples, n_clusters=2, n_samples=N_SAMPLES)
    np.testing.assert_array_equal(sums, expected)
    assert n.sum() == (samples >= 0).sum()
    totals = dense.sum(axis=1)
    back, _ = sample_cluster_sums(
        InMemory(log_normalized(cells)), clusters, samples, n_clusters=2, n_samples=N_SAMPLES, totals=totals
    )
    np.testing.assert_allclose(back, expected, rtol=1e-5, atol=1e-2)  # float32 log values: 1e-5 relative


def test_a_gene_up_in_every_sample_is_found_and_one_donors_gene_is_not():
    """The point of pseudobulk: a gene up in one donor only is significant between cells (Wilcoxon over 600
    cells per cluster), not between samples."""
    cells = planted(seed=1)
    clusters = cells.obs["leiden"].astype(int).to_numpy()
    samples = cells.obs["sample"].str[1:].astype(int).to_numpy()
    sums, n = sample_cluster_sums(InMemory(cells.X), clusters, samples, n_clusters=2, n_samples=N_SAMPLES)
    genes = cells.var_names
    result = deseq_cluster(
        sums, n, 1, genes=genes, candidates=["up_all", "up_one"], controls=list(genes[:200]),
        sample_names=[f"s{s}" for s in range(N_SAMPLES)],
    ).set_index("gene")  # fmt: skip
    assert result.loc["up_all", "padj"] < 1e-3 and result.loc["up_all", "log2FoldChange"] == pytest.approx(2, abs=0.3)
    assert result.loc["up_one", "padj"] > 0.05
    assert (result["n_samples"] == N_SAMPLES).all()
    cells.X = log_normalized(cells)
    cell_level = markers(cells, groupby="leiden", n_genes=None).set_index(["cluster", "gene"])
    assert cell_level.loc[("1", "up_one"), "pval_adj"] < 1e-10  # the cell-level test calls it


def test_clusters_without_enough_samples_are_named_not_tested():
    cells = planted(seed=2)
    cells.obs.loc[(cells.obs["leiden"] == "1") & (cells.obs["sample"] != "s0"), "leiden"] = "2"  # cluster 1: s0 only
    cells.obs["leiden"] = cells.obs["leiden"].astype("category")
    totals = np.asarray(cells.X.sum(axis=1)).ravel()
    cells.X = log_normalized(cells)
    table = markers(cells, groupby="leiden", n_genes=None)
    result, skipped = pseudobulk_markers(
        InMemory(cells.X), cells.obs, table, genes=cells.var_names, groupby="leiden", sample_key="sample", totals=totals
    )
    assert set(skipped) == {"1"} and "1 sample(s)" in skipped["1"]
    assert set(result["cluster"]) == {"0", "2"} and (result["log2FoldChange"] > 0).all()


def test_the_pipeline_writes_the_table_and_the_report_says_why(tmp_path):
    from rlae_sc.errors import InputError
    from rlae_sc.pipeline import run
    from rlae_sc.simulate import batch_confounded

    counts = batch_confounded(n_cells=900, n_genes=400, n_batches=3, seed=4)
    counts.write_h5ad(tmp_path / "counts.h5ad")
    small = {"preprocess_params": {"min_genes": 20, "n_top_genes": 300}, "train_params": {"n_components": 8}}
    with pytest.raises(InputError, match="no sample column 'donor'"):
        run(tmp_path / "counts.h5ad", tmp_path / "bad", cluster_params={"sample_key": "donor"}, **small)
    assert not list((tmp_path / "bad").glob("*.h5ad")) and not (tmp_path / "bad" / "pseudobulk.tsv").exists()
    run(tmp_path / "counts.h5ad", tmp_path / "out", cluster_params={"sample_key": "batch"}, **small)
    table = pd.read_csv(tmp_path / "out" / "pseudobulk.tsv", sep="\t")
    assert list(table.columns[:3]) == ["cluster", "gene", "log2FoldChange"] and (table["log2FoldChange"] > 0).all()
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Markers between samples (pseudobulk)" in page and "independent replicate" in page
    stored = ad.read_h5ad(tmp_path / "out" / "embedding.h5ad", backed="r").uns["rlae_pseudobulk"]
    assert stored["sample_key"] == "batch"
    assert set(stored["top"]) | set(stored["skipped"]) == set(
        ad.read_h5ad(tmp_path / "out" / "embedding.h5ad").obs["leiden"].astype(str)
    )
