"""Pseudobulk tests of each cluster's marker genes: counts summed per sample, then DESeq2 (pydeseq2).

A cell-level test treats every cell as an independent replicate, but cells of one sample (a donor, a mouse,
a well) share its biology and its handling, so cell-level p-values come out far smaller than the number of
samples can support. Here the unit of replication is the sample:

1. One pass over the cells sums the counts of each sample in each cluster (:func:`sample_cluster_sums`).
   Values stored as log-normalised (``log1p`` of counts scaled to a common total) are turned back into counts
   from each cell's ``total_counts``.
2. For each cluster, each sample with at least :data:`MIN_CELLS` cells both in the cluster and outside it
   gives two pseudobulk profiles, "in" and "out". With at least :data:`MIN_SAMPLES` such samples, DESeq2's
   negative binomial model ``~ sample + group`` (paired by sample: between-sample differences are absorbed by
   the sample term) tests ``group in`` against ``out`` for each candidate gene (:func:`deseq_cluster`).
3. The candidates are the cluster's best :data:`N_CANDIDATES` cell-level markers (``markers.tsv``'s rank); the
   :data:`N_CONTROLS` expressed genes whose cell-level score is nearest zero are tested too and set the size
   factors (DESeq2's median of ratios over genes that do not change), so that testing a few hundred genes
   instead of all keeps the normalisation sound.

Clusters with too few samples are listed with the reason and not tested.
"""

from __future__ import annotations

import warnings
from functools import partial

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rlae_sc.csr_sums import grouped_sums
from rlae_sc.engine import run_pass

MIN_CELLS = 10  # cells of a sample on each side (in the cluster, outside it) for its pair of pseudobulks
MIN_SAMPLES = 2  # samples with such a pair for a cluster to be tested
N_CANDIDATES = 200  # the cluster's best cell-level markers that are tested
N_CONTROLS = 200  # expressed genes with the cell-level score nearest zero: tested, and they set the size factors
COLUMNS = ["cluster", "gene", "log2FoldChange", "lfcSE", "stat", "pvalue", "padj", "baseMean", "n_samples"]


def sample_cluster_sums(
    matrix, clusters: np.ndarray, samples: np.ndarray, *, n_clusters: int, n_samples: int, totals=None, client=None
) -> tuple[np.ndarray, np.ndarray]:
    """Counts summed per sample and cluster, in one pass over the cells.

    Parameters
    ----------
    matrix
        The cells' values (n_cells x n_genes, :class:`~rlae_sc.rows.Rows`): counts, or,
        when ``totals`` is given, ``log1p`` of counts scaled to a common total per cell.
    clusters, samples
        Each cell's cluster (n_cells,, 0..n_clusters-1) and sample (n_cells,, 0..n_samples-1; -1: none).
    totals
        Each cell's total count over all genes (n_cells,), to turn log-normalised values back into counts.

    Returns
    -------
    sums
        Counts (float64, n_samples x n_clusters x n_genes), whole numbers up to float rounding.
    cells
        Cells per sample and cluster (n_samples x n_clusters).
    """
    pair = np.where(samples >= 0, samples * n_clusters + clusters, -1)
    fn = partial(_sums_block, pair=pair, n_pairs=n_samples * n_clusters, totals=totals)
    sums = run_pass(matrix, fn, client=client, desc="pseudobulk")[0]
    m = matrix.shape[1]
    cells = np.bincount(pair[pair >= 0], minlength=n_samples * n_clusters)
    return sums["counts"].reshape(n_samples, n_clusters, m), cells.reshape(n_samples, n_clusters)


def _sums_block(block, start: int, *, pair: np.ndarray, n_pairs: int, totals) -> tuple[dict, dict]:
    """One block's counts summed by (sample, cluster) pair (n_pairs x genes)."""
    X = sp.csr_matrix(block, dtype=np.float64)
    if totals is not None:
        np.expm1(X.data, out=X.data)
        scaled = np.asarray(X.sum(axis=1)).ravel()
        scaled[scaled == 0] = 1.0
        X.data *= np.repeat(totals[start : start + X.shape[0]] / scaled, np.diff(X.indptr))
    return {"counts": grouped_sums(X, pair[start : start + X.shape[0]], n_pairs)[0]}, {}


def deseq_cluster(
    sums: np.ndarray, cells: np.ndarray, cluster: int, *, genes: pd.Index, candidates, controls, sample_names
) -> pd.DataFrame | str:
    """DESeq2 of one cluster against the rest, paired by sample (see the module's doc).

    ``sums`` and ``cells`` as :func:`sample_cluster_sums` returns them; ``candidates`` and ``controls``: gene
    names (the controls set the size factors). Returns the results (one row per gene tested, :data:`COLUMNS`
    but ``cluster``; log2 fold changes of in over out) or, when the cluster cannot be tested, why not.
    """
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    inside = sums[:, cluster]
    outside = sums.sum(axis=1) - inside
    n_in, n_out = cells[:, cluster], cells.sum(axis=1) - cells[:, cluster]
    paired = np.flatnonzero((n_in >= MIN_CELLS) & (n_out >= MIN_CELLS))
    if len(paired) < MIN_SAMPLES:
        return (
            f"{len(paired)} sample(s) with at least {MIN_CELLS} cells in and out of the cluster (needs {MIN_SAMPLES})"
        )
    tested = pd.Index(list(dict.fromkeys([*candidates, *controls])))
    columns = genes.get_indexer(tested)
    counts = np.rint(np.vstack([inside[paired][:, columns], outside[paired][:, columns]])).astype(np.int64)
    names = [str(sample_names[s]) for s in paired]
    meta = pd.DataFrame({"sample": names * 2, "group": ["in"] * len(paired) + ["out"] * len(paired)})
    meta.index = [f"{s}|{g}" for s, g in zip(meta["sample"], meta["group"], strict=True)]
    keep = counts.sum(axis=0) > 0
    table = pd.DataFrame(counts[:, keep], index=meta.index, columns=tested[keep])
    inference = DefaultInference(n_cpus=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dds = DeseqDataSet(
            counts=table, metadata=meta, design="~sample + group", inference=inference, quiet=True,
            control_genes=list(table.columns.intersection(controls)),
        )  # fmt: skip
        dds.deseq2()
        stats = DeseqStats(dds, contrast=["group", "in", "out"], inference=inference, quiet=True)
        stats.summary()
    result = stats.results_df.rename_axis("gene").reset_index()
    result["n_samples"] = len(paired)
    return result[COLUMNS[1:]]


def pseudobulk_markers(
    matrix,
    obs: pd.DataFrame,
    markers: pd.DataFrame,
    *,
    genes,
    groupby: str,
    sample_key: str,
    totals=None,
    n_genes: int = 100,
    client=None,
) -> tuple[pd.DataFrame, dict]:
    """Each cluster's markers tested between samples (see the module's doc).

    Parameters
    ----------
    matrix
        The cells' values (n_cells x n_genes; counts, or log-normalised with ``totals``, as
        :func:`sample_cluster_sums`).
    obs
        The cells' annotations (n_cells rows), with the ``groupby`` clusters and the ``sample_key`` samples.
    markers
        The cell-level marker table (:func:`rlae_sc.markers.markers`, all genes): candidates and controls are
        taken from its ``rank`` and ``score``.
    genes
        Names of the matrix's columns (n_genes,).
    n_genes
        Up-regulated genes kept per cluster (by DESeq2's statistic).

    Returns
    -------
    table
        :data:`COLUMNS`, up to ``n_genes`` rows per tested cluster: genes with a positive log2 fold change, by
        Wald statistic (largest first).
    skipped
        Cluster -> why it was not tested.
    """
    genes = pd.Index(genes).astype(str)
    clusters = obs[groupby].astype("category")
    samples = pd.Categorical(obs[sample_key].astype(str).where(obs[sample_key].notna()))
    sums, cells = sample_cluster_sums(
        matrix, clusters.cat.codes.to_numpy(), samples.codes.astype(np.int64),
        n_clusters=len(clusters.cat.categories), n_samples=len(samples.categories), totals=totals, client=client,
    )  # fmt: skip
    tables, skipped = [], {}
    for code, name in enumerate(clusters.cat.categories):
        own = markers[markers["cluster"].astype(str) == str(name)]
        candidates = own.nsmallest(N_CANDIDATES, "rank")["gene"]
        expressed = own[(own["frac_in"] >= 0.1) & (own["frac_out"] >= 0.1)]
        controls = expressed.loc[expressed["score"].abs().nsmallest(N_CONTROLS).index, "gene"]
        result = deseq_cluster(
            sums, cells, code, genes=genes, candidates=candidates, controls=controls, sample_names=samples.categories
        )
        if isinstance(result, str):
            skipped[str(name)] = result
            continue
        up = result[result["log2FoldChange"] > 0].nlargest(n_genes, "stat")
        tables.append(up.assign(cluster=str(name))[COLUMNS])
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=COLUMNS)
    return table, skipped
