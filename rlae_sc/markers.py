"""Marker genes per cluster: expression statistics by passes over the cells, and a Wilcoxon rank-sum test.

For each group of cells (a Leiden cluster, a label) against the rest:

- ``mean_in``: the group's mean log-normalised value of each gene;
- ``frac_in`` / ``frac_out``: the fraction of the group's / the other cells
  expressing it (value > 0);
- ``logfoldchange``: ``log2((expm1(mean_in) + 1e-9) / (expm1(mean_out) + 1e-9))``,
  the means taken in log space and the ratio in expression space, as
  scanpy's ``rank_genes_groups`` reports ``logfoldchanges``.

These are sums over cells, computed in one pass over blocks of rows
(:func:`rlae_sc.engine.run_pass`: in memory, from an ``.h5ad`` file, or on
Dask), so every cell counts and memory is one block plus groups x genes sums.

- ``score``, ``pval``, ``pval_adj``: the Wilcoxon rank-sum test of the
  group against the rest, as ``sc.tl.rank_genes_groups(method="wilcoxon")``
  computes it: the z-score of the group's rank sum under the normal
  approximation, without tie correction unless asked (scanpy's default),
  two-sided p-values, Benjamini-Hochberg adjustment over all genes of the
  group. It runs on at most :data:`MAX_TEST_CELLS` cells (a seeded uniform
  sample above that, the size of the clustering sketch), collected in the
  same pass.
- ``rank``: genes ordered by the sum of their rank by ``score`` and their
  rank by ``logfoldchange`` (1 = highest; ties by ``score``). The score
  alone (scanpy's order) puts first genes found in nearly every cell and
  somewhat higher in the group: ferritins, ribosomal and HLA genes (on
  kang_se's CD14 monocytes, FTL first and S100A8 12th; 17th for the Leiden
  cluster that matches them); the fold change alone puts first genes seen in
  few cells. Their rank sum puts S100A8 3rd there and kept MS4A1/CD79A,
  GNLY/NKG7 and LYZ/CD14/S100A8 in the top 10 of B, NK and CD14-monocyte
  groups (labels and matched Leiden clusters) on soupx, kang_se and garnett,
  where the score's order missed 2 of 13.

Cell-level p-values treat cells as independent replicates; cells of one
sample are not, so the p-values are far smaller than a test between samples
would give (use them to rank genes, not as evidence of differential expression).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from rlae_sc.atomic import atomic_path
from rlae_sc.engine import run_pass
from rlae_sc.errors import InputError
from rlae_sc.rows import Rows, matrix_of

MAX_TEST_CELLS = 50_000  # cells the Wilcoxon test runs on (a seeded sample above), as the clustering sketch
PSEUDOCOUNT = 1e-9  # added to both means in expression space before their ratio (scanpy's)
COLUMNS = ["cluster", "gene", "rank", "score", "logfoldchange", "pval", "pval_adj", "mean_in", "frac_in", "frac_out"]
VALUES = ("log_normalized", "counts")


def markers(
    adata: ad.AnnData,
    *,
    groupby: str,
    n_genes: int | None = 100,
    max_cells: int = MAX_TEST_CELLS,
    tie_correct: bool = False,
    values: str = "log_normalized",
    target_sum: float | None = None,
    matrix: Rows | None = None,
    genes=None,
    seed: int = 0,
    client=None,
    chunk_size: int | None = None,
    source: str = "input",
) -> pd.DataFrame:
    """Marker genes of each group of ``adata.obs[groupby]`` against the rest (see the module's doc).

    Parameters
    ----------
    adata
        Cells x genes, in memory or backed; its ``X`` holds ``values``
        (log-normalised values of all genes, as ``embedding.h5ad`` does), unless ``matrix`` is given.
    groupby
        The ``obs`` column of the groups; cells without one (NaN) are left out.
    n_genes
        Genes kept per group, the best ``rank`` first; ``None``: all.
    max_cells
        Most cells in the Wilcoxon test (a seeded uniform sample of the grouped cells above it).
    tie_correct
        Correct the test's variance for ties (scanpy's ``tie_correct``; off by default there and here).
    values
        ``log_normalized`` (natural log1p of normalised counts, as scanpy's ``log1p``) or ``counts``,
        normalised here to ``target_sum`` per cell (``None``: the median total of the grouped cells)
        and log1p-transformed.
    matrix
        The rows to read instead of ``adata.X`` (n_cells x n_genes, aligned with ``adata.obs``), e.g. an
        :class:`~rlae_sc.rows.H5adMatrix`; ``genes`` then names its columns (default ``adata.var_names``).
    seed
        Seed of the test's sample of cells.
    client, chunk_size
        The pass's Dask client (``None``: serial) and rows per block (``None``: ``rl.settings.block_size``).
    source
        Named in errors.

    Returns
    -------
    DataFrame with :data:`COLUMNS`, one row per group and gene (``n_genes`` per group at most), groups in
    their category order, each group's genes by ``rank`` (1: the best marker, see the module's doc);
    ``score`` (z, unitless), ``logfoldchange`` in log2 units, ``mean_in`` in log1p units, ``pval``,
    ``pval_adj`` and the fractions in 0..1.
    """
    if values not in VALUES:
        raise InputError(source, f"unknown values {values!r}", f"Use one of {', '.join(VALUES)}.")
    codes, groups = group_codes(adata.obs, groupby=groupby, source=source)
    matrix = matrix if matrix is not None else matrix_of(adata)
    genes = pd.Index(genes if genes is not None else adata.var_names).astype(str)
    if matrix.shape != (len(codes), len(genes)):
        raise InputError(
            source,
            f"the matrix is {matrix.shape[0]} x {matrix.shape[1]}, the cells and genes {len(codes)} x {len(genes)}",
            "Give a matrix whose rows are adata's cells and whose columns are the genes named.",
        )
    tested = wilcoxon_cells(codes, max_cells=max_cells, seed=seed)
    if values == "counts" and target_sum is None:
        target_sum = _median_total(matrix, codes, client=client, chunk_size=chunk_size)
    stats = group_statistics(
        matrix, codes, len(groups), tested=tested, target_sum=target_sum, client=client, chunk_size=chunk_size
    )
    if stats["sample"].nnz and stats["sample"].data.min() < 0:
        raise InputError(source, "has negative values", "Give log-normalised values (or counts, with values='counts').")
    scores, pvals = wilcoxon(stats["sample"], codes[tested], len(groups), tie_correct=tie_correct)
    return _table(stats, scores, pvals, groups=groups, genes=genes, n_genes=n_genes)


def group_codes(obs: pd.DataFrame, *, groupby: str, source: str = "input") -> tuple[np.ndarray, pd.Index]:
    """Each cell's group number (n_cells,, -1 for cells without a group) and the groups' names, in
    category order (sorted when the column is not categorical); at least two groups are required."""
    if groupby not in obs:
        raise InputError(
            source,
            f"has no obs column {groupby!r} (columns: {', '.join(map(str, obs.columns)) or 'none'})",
            "Name the column of the clusters or labels, e.g. leiden.",
        )
    column = obs[groupby]
    column = column if isinstance(column.dtype, pd.CategoricalDtype) else column.astype("category")
    column = column.cat.remove_unused_categories()
    if len(column.cat.categories) < 2:
        raise InputError(source, f"obs[{groupby!r}] has fewer than two groups", "Markers compare a group to the rest.")
    return column.cat.codes.to_numpy().astype(np.int64), pd.Index(column.cat.categories).astype(str)


def wilcoxon_cells(codes: np.ndarray, *, max_cells: int = MAX_TEST_CELLS, seed: int = 0) -> np.ndarray:
    """The cells of the Wilcoxon test (n_cells,, bool): every grouped cell, or a seeded uniform sample of
    ``max_cells`` of them."""
    grouped = np.flatnonzero(codes >= 0)
    if len(grouped) > max_cells:
        grouped = np.random.default_rng(seed).choice(grouped, max_cells, replace=False)
    mask = np.zeros(len(codes), dtype=bool)
    mask[grouped] = True
    return mask


def group_statistics(
    matrix: Rows,
    codes: np.ndarray,
    n_groups: int,
    *,
    tested: np.ndarray,
    target_sum: float | None = None,
    client=None,
    chunk_size: int | None = None,
) -> dict:
    """One pass over ``matrix`` (n_cells x n_genes): per-group sums, and the tested cells' rows.

    With ``target_sum``, each row (counts) is first normalised to that total and log1p-transformed.

    Returns
    -------
    dict with ``sum`` and ``nnz`` (n_groups x n_genes, float64: sums of the values and counts of values
    > 0 over each group's cells), ``n`` (n_groups,, cells per group) and ``sample`` (CSR, the rows of the
    ``tested`` cells in order, float32).
    """
    pieces: list[sp.csr_matrix] = []
    fn = partial(_group_block, codes=codes, n_groups=n_groups, tested=tested, target_sum=target_sum)
    sums, _ = run_pass(
        matrix, fn, client=client, chunk_size=chunk_size, desc="marker sums",
        consume=lambda start, rows: pieces.append(rows["sample"]),
    )  # fmt: skip
    sample = sp.vstack(pieces, format="csr") if pieces else sp.csr_matrix((0, matrix.shape[1]), dtype=np.float32)
    n = np.bincount(codes[codes >= 0], minlength=n_groups).astype(np.float64)
    return {"sum": sums["sum"], "nnz": sums["nnz"], "n": n, "sample": sample}


def _group_block(
    block, start: int, *, codes: np.ndarray, n_groups: int, tested: np.ndarray, target_sum: float | None
) -> tuple[dict, dict]:
    """A block's per-group sums of values and of values > 0 (n_groups x genes) and its tested rows (CSR)."""
    X = sp.csr_matrix(block, dtype=np.float64)
    if target_sum is not None:
        X = _log_normalize(X, target_sum)
    rows = slice(start, start + X.shape[0])
    code = codes[rows]
    inside = np.flatnonzero(code >= 0)
    member = sp.csr_matrix((np.ones(len(inside)), (code[inside], inside)), shape=(n_groups, X.shape[0]))
    positive = X.copy()
    positive.data = (positive.data > 0).astype(np.float64)
    sums = {"sum": (member @ X).toarray(), "nnz": (member @ positive).toarray()}
    return sums, {"sample": sp.csr_matrix(X[tested[rows]], dtype=np.float32)}


def _log_normalize(X: sp.csr_matrix, target_sum: float) -> sp.csr_matrix:
    """``log1p(target_sum * x / total)`` per row of counts (rows without counts stay zero)."""
    total = np.asarray(X.sum(axis=1)).ravel()
    total[total == 0] = 1.0
    X = sp.csr_matrix(sp.diags(target_sum / total) @ X)
    X.data = np.log1p(X.data)
    return X


def _median_total(matrix, codes: np.ndarray, *, client=None, chunk_size: int | None = None) -> float:
    """The median total count of the grouped cells (one pass)."""
    _, rows = run_pass(matrix, _totals_block, client=client, chunk_size=chunk_size, desc="cell totals")
    return float(np.median(rows["total"][codes >= 0]))


def _totals_block(block, start: int) -> tuple[dict, dict]:
    return {}, {"total": np.asarray(sp.csr_matrix(block, dtype=np.float64).sum(axis=1)).ravel()}


def wilcoxon(
    X: sp.csr_matrix, codes: np.ndarray, n_groups: int, *, tie_correct: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Wilcoxon rank-sum z-scores and two-sided p-values (each n_groups x n_genes) of each group against the rest.

    ``X`` (n_cells x n_genes, sparse) holds the cells' values and ``codes`` (n_cells,) their groups (0..n_groups-1).
    Each gene's values are ranked over all cells (ties share their mean rank; the cells without a stored value
    are one tie at zero), so only the stored values are sorted. For a group of n cells among N, rank sum R:
    ``z = (R - n (N + 1) / 2) / sqrt(t n (N - n) (N + 1) / 12)``, ``t = 1 - sum(ties^3 - ties) / (N^3 - N)``
    with ``tie_correct``, else 1; z is 0 where undefined, as in scanpy.
    """
    from scipy.stats import norm, rankdata

    X = sp.csc_matrix(X, dtype=np.float64)
    X.eliminate_zeros()
    N = X.shape[0]
    n = np.bincount(codes, minlength=n_groups).astype(np.float64)
    rank_sums = np.empty((n_groups, X.shape[1]))
    tie = np.ones(X.shape[1])
    for gene in range(X.shape[1]):
        lo, hi = X.indptr[gene], X.indptr[gene + 1]
        values, group = X.data[lo:hi], codes[X.indices[lo:hi]]
        n_zero = N - (hi - lo)
        n_below = np.count_nonzero(values < 0)
        ranks = rankdata(values)
        ranks[values > 0] += n_zero  # the zeros sit between the negative and the positive values
        zero_rank = n_below + (n_zero + 1) / 2
        stored = np.bincount(group, minlength=n_groups)
        rank_sums[:, gene] = np.bincount(group, weights=ranks, minlength=n_groups) + (n - stored) * zero_rank
        if tie_correct:
            counts = np.unique(values, return_counts=True)[1].astype(np.float64)
            ties = np.sum(counts**3 - counts) + float(n_zero) ** 3 - n_zero
            tie[gene] = 1 - ties / (float(N) ** 3 - N) if N > 1 else 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.sqrt(tie[None, :] * (n * (N - n) * (N + 1) / 12)[:, None])
        scores = (rank_sums - (n * (N + 1) / 2)[:, None]) / sd
    scores[~np.isfinite(scores)] = 0.0
    return scores, 2 * norm.sf(np.abs(scores))


def benjamini_hochberg(pvals: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (same shape as the 1-d ``pvals``; NaN taken as 1), capped at 1."""
    p = np.nan_to_num(np.asarray(pvals, dtype=np.float64), nan=1.0)
    order = np.argsort(p)
    scaled = p[order] * len(p) / np.arange(1, len(p) + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty_like(p)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def _table(
    stats: dict, scores: np.ndarray, pvals: np.ndarray, *, groups: pd.Index, genes: pd.Index, n_genes: int | None
) -> pd.DataFrame:
    """The long table of :func:`markers` from the pass's sums and the test."""
    n = stats["n"][:, None]
    rest = n.sum() - n
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_in = stats["sum"] / n
        mean_out = (stats["sum"].sum(axis=0) - stats["sum"]) / rest
        frac_in = stats["nnz"] / n
        frac_out = (stats["nnz"].sum(axis=0) - stats["nnz"]) / rest
    lfc = np.log2((np.expm1(mean_in) + PSEUDOCOUNT) / (np.expm1(mean_out) + PSEUDOCOUNT))
    frames = []
    for g, name in enumerate(groups):
        order = marker_order(scores[g], lfc[g])[: n_genes if n_genes is not None else None]
        frames.append(
            pd.DataFrame(
                {
                    "cluster": name,
                    "gene": genes[order],
                    "rank": np.arange(1, len(order) + 1),
                    "score": scores[g, order],
                    "logfoldchange": lfc[g, order],
                    "pval": pvals[g, order],
                    "pval_adj": benjamini_hochberg(pvals[g])[order],
                    "mean_in": mean_in[g, order],
                    "frac_in": frac_in[g, order],
                    "frac_out": frac_out[g, order],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def marker_order(score: np.ndarray, logfoldchange: np.ndarray) -> np.ndarray:
    """Gene indices (n_genes,), best marker first: by the sum of each gene's rank by ``score`` and by
    ``logfoldchange`` (both n_genes,; 1 = highest, ties share their mean rank; NaN ranks last), then by
    ``score``."""
    from scipy.stats import rankdata

    by_score = rankdata(-np.nan_to_num(score, nan=-np.inf))
    by_change = rankdata(-np.nan_to_num(logfoldchange, nan=-np.inf))
    return np.lexsort((-np.nan_to_num(score, nan=-np.inf), by_score + by_change))


def write_markers(df: pd.DataFrame, path: str | Path) -> Path:
    """Write :func:`markers`'s table to ``path`` as tab-separated text (``markers.tsv``), atomically: a
    header row of :data:`COLUMNS`, numbers to 6 significant digits."""
    missing = [c for c in COLUMNS if c not in df]
    if missing:
        raise InputError(path, f"the table lacks {', '.join(missing)}", "Write the table markers() returns.")
    path = Path(path)
    with atomic_path(path) as tmp:
        df[COLUMNS].to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    return path


def marker_summary(table: pd.DataFrame, *, n_dot: int = 3, n_list: int = 10) -> dict:
    """What the report shows of a :func:`markers` table of every gene (``n_genes=None``): each group's first
    ``n_list`` genes by ``rank`` (``top``: group -> genes), and the dot plot of each group's first ``n_dot``
    genes in every group (``genes`` (g,), ``groups`` (c,), ``mean`` and ``frac``: c x g, the groups' mean
    log-normalised value and fraction of cells expressing each gene). Lists and nested lists, ready for
    ``uns`` and JSON."""
    ranked = table.sort_values(["cluster", "rank"])
    groups = list(dict.fromkeys(ranked["cluster"].astype(str)))
    top = {g: ranked.loc[ranked["cluster"].astype(str) == g, "gene"].head(n_list).astype(str).tolist() for g in groups}
    genes = list(dict.fromkeys(gene for g in groups for gene in top[g][:n_dot]))
    rows = table[table["gene"].astype(str).isin(genes)].assign(cluster=lambda t: t["cluster"].astype(str))
    mean = rows.pivot(index="cluster", columns="gene", values="mean_in").reindex(index=groups, columns=genes)
    frac = rows.pivot(index="cluster", columns="gene", values="frac_in").reindex(index=groups, columns=genes)
    return {
        "top": top,
        "genes": genes,
        "groups": groups,
        "mean": mean.fillna(0.0).to_numpy().tolist(),
        "frac": frac.fillna(0.0).to_numpy().tolist(),
    }
