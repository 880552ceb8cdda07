"""Names for clusters from a list of marker genes per cell type.

A marker list maps each cell type to its marker genes (and optionally to genes it should not express);
:func:`read_marker_list` reads one from YAML, and :data:`PBMC_MARKERS_PATH` is the bundled list of human blood
cell types (``pbmc``)::

    B cells: [MS4A1, CD79A, CD79B]          # short form: the markers
    NK cells:
      genes: [GNLY, NKG7, KLRD1]            # long form: the markers ...
      negative: [CD3E, CD3D]                # ... and genes the type should not express

:func:`cluster_names` scores every type in every cluster and names each cluster after its best type.

**The score.** The score of a gene set in a cluster is scanpy's ``score_genes`` taken at the level of clusters:
the cluster's mean log-normalised value of the set's genes minus its mean over a reference set of genes of
matched expression. Genes are ranked by their mean over all cells and cut into ``n_bins`` bins of equal size
(``score_genes``'s rule: ``rank // round(n_genes / (n_bins - 1))``, ties at their lowest rank); the reference
set holds every gene of each bin that holds a marker, less the markers themselves. Because that score is linear
in the values, it equals the cluster's mean of scanpy's cell scores computed with every gene of a bin as
reference (``ctrl_size`` at least the bin size; scanpy's default samples 50 per bin at random), so it needs only
the clusters' sums: the mean of each gene per cluster (:func:`rlae_sc.markers.group_statistics`, or
:func:`rlae_sc.markers.markers`'s table of every gene). Genes are binned by their mean over all cells when the
clusters' sizes are known (statistics, or ``sizes=``), else by the unweighted mean over clusters.

A type's score is its markers' score less its negative genes' score where that is positive: a negative gene
lowers the score of a cluster that expresses it above genes of matched expression, and its absence adds nothing.
Scores are differences of mean ``log1p`` values (natural log of normalised counts plus one): 1.0 means the
markers are on average ``e``-fold above their reference in the cluster. They depend on the data's depth and gene
set (the reference genes of a filtered gene set are highly expressed ones), so compare them within one dataset.

A type is scored when at least ``min_genes`` of its markers are among the data's genes and at least one of those
is listed for no other type: a type found only through markers it shares (kang_se holds CD3E and CD3D but none
of CD8A, CD8B, GZMK) would otherwise win by the shared genes alone.

**No confident name.** A cluster is named after its best-scoring type when that score is at least ``min_score``
(:data:`MIN_SCORE`, 0.2) and the best score exceeds the second by at least ``min_margin`` (:data:`MIN_MARGIN`,
0.2) of the best score: ``(best - second) / best >= min_margin``. Otherwise it is :data:`UNASSIGNED`; the best
and second types and their scores are reported either way. A relative margin keeps the rule the same across
datasets whose scores differ in scale.

The defaults were chosen on the shared PBMC sets (soupx, garnett, kang_se; clusters = their labels, and scanpy's
Leiden at resolutions 0.5 and 1 judged by each cluster's main label; 71 clusters), so they are not an independent
test: with the bundled list, the best type was right for 62 of them (28 of 29 on
soupx, 10 of 11 on garnett, 24 of 31 on kang_se, whose 1,287 genes lack most B, CD8 T, DC and megakaryocyte
markers); the rule named 57 clusters rightly and 3 wrongly and left 11 unassigned. When a cluster's own type was
taken out of the list, it was still named, by a related type (CD4 and CD8 T, CD8 T and NK, DC and CD14
monocytes), in 10 of the 71 cases: a missing cell type is not always detected.

Genes are matched by name, case-sensitively; ``genes_alias`` renames the data's genes first (e.g. Ensembl ids
to symbols), and the table reports how many of the best type's markers were found
(:func:`marker_coverage`: of every type's).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from rlae_sc.errors import InputError

PBMC_MARKERS_PATH = Path(__file__).resolve().parent / "data" / "pbmc_markers.yaml"
"""The bundled marker list of human blood cell types (B, plasma, CD4 and CD8 T, NK cells, CD14 and FCGR3A
monocytes, dendritic cells, plasmacytoid DC, megakaryocytes/platelets)."""
BUNDLED = {"pbmc": PBMC_MARKERS_PATH}
"""Marker lists that :func:`read_marker_list` knows by name."""
UNASSIGNED = "unassigned"
"""The name of a cluster without a confident name."""
MIN_SCORE = 0.2
"""Default least score (log1p units) of a cluster's name."""
MIN_MARGIN = 0.2
"""Default least difference between the best and the second type's scores, as a fraction of the best."""
MIN_GENES = 1
"""Default fewest of a type's markers that must be among the data's genes for the type to be scored."""
N_BINS = 25
"""Expression bins of the reference genes (scanpy's ``score_genes`` default)."""
COLUMNS = [
    "cluster",
    "name",
    "best",
    "score",
    "second",
    "second_score",
    "margin",
    "n_found",
    "n_listed",
    "genes_found",
    "frac_expressing",
]
"""The columns of :func:`cluster_names`'s table."""
KEYS = ("genes", "negative")


# -- the marker list ---------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a mapping that repeats a key is an error (plain YAML keeps the last)."""


def _construct_unique(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise yaml.constructor.ConstructorError(None, None, f"{key!r} appears twice (line {line})")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique)


def marker_list_path(name_or_path: str | Path) -> Path:
    """The file of a marker list: a bundled list by name (:data:`BUNDLED`: ``pbmc``) or a path."""
    key = str(name_or_path)
    return BUNDLED[key] if key in BUNDLED else Path(name_or_path)


def read_marker_list(path: str | Path) -> dict[str, dict[str, list[str]]]:
    """Read a marker list (see the module's doc) from a YAML file, or a bundled list by name (``pbmc``).

    Parameters
    ----------
    path
        A YAML file mapping each cell type to a list of genes, or to a mapping with ``genes`` (a list) and
        optionally ``negative`` (a list); or a key of :data:`BUNDLED`.

    Returns
    -------
    dict
        Cell type -> ``{"genes": [...], "negative": [...]}`` (gene names as strings, in the file's order;
        ``negative`` empty when not given), types in the file's order.

    Raises
    ------
    InputError
        When the file is missing or not YAML, or is not a mapping of types to gene lists: a repeated type, a
        type without genes, a gene that is not a string (quote it), a gene listed twice or as both marker and
        negative, a key other than ``genes`` and ``negative``.
    """
    file = marker_list_path(path)
    if not file.is_file():
        raise InputError(
            file,
            "marker list not found",
            f"Give a YAML file of cell type -> marker genes, or one of {', '.join(BUNDLED)} for a bundled list.",
        )
    try:
        raw = yaml.load(file.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise InputError(
            file, f"is not a readable YAML file ({' '.join(str(err).split())})", "Fix the YAML at the place named."
        ) from None
    return check_marker_sets(raw, source=file)


def check_marker_sets(raw, *, source: str | Path = "marker_sets") -> dict[str, dict[str, list[str]]]:
    """A marker list as :func:`read_marker_list` returns it, from its parsed form (type -> a list of genes,
    or -> ``{"genes": [...], "negative": [...]}``); the same checks and errors."""
    shape = "a mapping of cell type -> a list of marker genes (or -> genes: [...], negative: [...])"
    if not isinstance(raw, Mapping) or not raw:
        kind = "empty" if not raw else f"a {type(raw).__name__}"
        raise InputError(source, f"the marker list is {kind}, not {shape}", f"Write {shape}.")
    out = {}
    for kind, entry in raw.items():
        if not isinstance(kind, str) or not kind.strip():
            raise InputError(source, f"cell type {kind!r} is not a name", "Name each cell type with text.")
        if isinstance(entry, Mapping):
            unknown = [str(k) for k in entry if k not in KEYS]
            if unknown:
                raise InputError(
                    source, f"{kind}: unknown key(s) {', '.join(unknown)}", "Give only genes: and negative: lists."
                )
            genes, negative = entry.get("genes"), entry.get("negative", [])
        else:
            genes, negative = entry, []
        genes = _gene_list(genes, kind=kind, what="genes", source=source)
        negative = _gene_list(negative, kind=kind, what="negative", source=source, empty=True)
        both = sorted(set(genes) & set(negative))
        if both:
            raise InputError(
                source, f"{kind}: {', '.join(both)} listed as both marker and negative", "Keep each gene in one list."
            )
        out[kind] = {"genes": genes, "negative": negative}
    return out


def _gene_list(genes, *, kind: str, what: str, source, empty: bool = False) -> list[str]:
    """The checked list of gene names of one type's ``what`` (genes or negative)."""
    if genes is None and empty:
        return []
    if isinstance(genes, str) or not isinstance(genes, list | tuple) or (not genes and not empty):
        raise InputError(
            source, f"{kind}: {what} is {genes!r}, not a list of gene names", f"Give {what} as a list, e.g. [A, B]."
        )
    bad = [g for g in genes if not isinstance(g, str) or not g.strip()]
    if bad:
        raise InputError(
            source,
            f"{kind}: {what} {bad[0]!r} is not a gene name (YAML reads some bare words as numbers or booleans)",
            "Quote it: write '\"NAME\"'.",
        )
    genes = [g.strip() for g in genes]
    repeated = sorted({g for g in genes if genes.count(g) > 1})
    if repeated:
        raise InputError(source, f"{kind}: {', '.join(repeated)} listed twice in {what}", "List each gene once.")
    return genes


# -- the statistics --------------------------------------------------------------------------------------


def cluster_means(
    table_or_stats: pd.DataFrame | Mapping,
    *,
    genes=None,
    clusters=None,
    sizes=None,
    source: str | Path = "markers",
) -> tuple[pd.Index, pd.Index, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Each cluster's mean value and fraction of cells expressing each gene, from either source of them.

    Parameters
    ----------
    table_or_stats
        :func:`rlae_sc.markers.markers`'s table of every gene (``n_genes=None``; columns ``cluster``, ``gene``,
        ``mean_in`` and, if present, ``frac_in``), or :func:`rlae_sc.markers.group_statistics`'s dict
        (``sum`` and ``nnz``: n_clusters x n_genes, ``n``: n_clusters,).
    genes
        The genes' names (n_genes,): required with statistics (the columns of ``sum``), unused with a table.
    clusters
        The clusters' names (n_clusters,) with statistics (default ``0 .. n_clusters - 1``), unused with a table.
    sizes
        Cells per cluster (a mapping cluster -> count, or n_clusters,), with a table; statistics carry ``n``.
    source
        Named in errors.

    Returns
    -------
    clusters, genes, mean, frac, sizes
        The clusters (c,) and genes (g,) as string indexes; ``mean`` (c x g, the data's units: log1p),
        ``frac`` (c x g, 0..1, or ``None`` for a table without ``frac_in``) and ``sizes`` (c,, or ``None``).
    """
    if isinstance(table_or_stats, pd.DataFrame):
        table = table_or_stats
        missing = [c for c in ("cluster", "gene", "mean_in") if c not in table]
        if missing:
            raise InputError(
                source, f"the table has no column {', '.join(missing)}", "Give rlae_sc.markers.markers's table."
            )
        table = table.assign(cluster=table["cluster"].astype(str), gene=table["gene"].astype(str))
        order = pd.Index(pd.unique(table["cluster"]))
        gene_order = pd.Index(pd.unique(table["gene"]))
        if table.duplicated(["cluster", "gene"]).any():
            raise InputError(
                source, "the table lists a gene twice for one cluster", "Give one row per cluster and gene."
            )
        mean = table.pivot(index="cluster", columns="gene", values="mean_in").reindex(index=order, columns=gene_order)
        if mean.isna().to_numpy().any():
            raise InputError(
                source,
                "the table does not hold every gene for every cluster (markers.tsv keeps the first 100 per cluster)",
                "Compute the table with rlae_sc.markers.markers(..., n_genes=None), or give group_statistics.",
            )
        frac = None
        if "frac_in" in table:
            frac = table.pivot(index="cluster", columns="gene", values="frac_in")
            frac = frac.reindex(index=order, columns=gene_order).to_numpy(dtype=np.float64)
        n = None
        if sizes is not None:
            n = (
                pd.Series(sizes).rename(index=str).reindex(order).to_numpy(dtype=np.float64)
                if isinstance(sizes, Mapping | pd.Series)
                else np.asarray(sizes, dtype=np.float64)
            )
            if n.shape != (len(order),) or not np.all(np.isfinite(n)) or np.any(n < 0):
                raise InputError(
                    source,
                    f"sizes do not give a count of cells for each of the {len(order)} clusters",
                    "Give every cluster's number of cells.",
                )
        return order, gene_order, mean.to_numpy(dtype=np.float64), frac, n
    if not isinstance(table_or_stats, Mapping) or not {"sum", "n"} <= set(table_or_stats):
        raise InputError(
            source,
            f"expected a markers table or group statistics, got {type(table_or_stats).__name__}",
            "Give rlae_sc.markers.markers(..., n_genes=None) or rlae_sc.markers.group_statistics(...).",
        )
    total = np.asarray(table_or_stats["sum"], dtype=np.float64)
    n = np.asarray(table_or_stats["n"], dtype=np.float64)
    if genes is None or len(genes) != total.shape[1]:
        raise InputError(
            source,
            f"the statistics cover {total.shape[1]} genes; genes= names {'none' if genes is None else len(genes)}",
            "Give genes=, the names of the columns of the statistics.",
        )
    clusters = pd.Index(range(len(n)) if clusters is None else clusters).astype(str)
    if len(clusters) != len(n) or total.shape[0] != len(n):
        raise InputError(source, f"{len(clusters)} cluster names for {len(n)} clusters", "Name every cluster once.")
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / n[:, None]
        frac = np.asarray(table_or_stats["nnz"], dtype=np.float64) / n[:, None] if "nnz" in table_or_stats else None
    return clusters, pd.Index(genes).astype(str), mean, frac, n


def expression_bins(average: np.ndarray, *, n_bins: int = N_BINS) -> np.ndarray:
    """Each gene's expression bin (n_genes,, int; -1 where ``average`` is not finite), from its mean over
    cells ``average`` (n_genes,): ``rank // round(n / (n_bins - 1))``, ranks from 1 with ties at their lowest
    rank, n the genes with a finite mean, as scanpy's ``score_genes`` bins them."""
    from scipy.stats import rankdata

    finite = np.isfinite(average)
    bins = np.full(average.shape, -1, dtype=np.int64)
    width = max(int(np.round(finite.sum() / (n_bins - 1))), 1)
    bins[finite] = rankdata(average[finite], method="min").astype(np.int64) // width
    return bins


def set_score(mean: np.ndarray, columns: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """The score (c,, log1p units) of the genes ``columns`` in each cluster: their mean in ``mean`` (c x g)
    minus the mean of the reference genes (the other genes of the bins in ``bins`` (g,) that hold them);
    NaN where there is no reference gene."""
    reference = np.isin(bins, np.unique(bins[columns])) & (bins >= 0)
    reference[columns] = False
    if not reference.any():
        return np.full(mean.shape[0], np.nan)
    return mean[:, columns].mean(axis=1) - mean[:, reference].mean(axis=1)


# -- scores and names ------------------------------------------------------------------------------------


def _symbols(genes: pd.Index, genes_alias, average: np.ndarray) -> dict[str, int]:
    """Gene name (after ``genes_alias``) -> its column; a name that several columns take is the column with
    the highest ``average``."""
    if genes_alias is not None:
        alias = pd.Series(genes_alias) if not isinstance(genes_alias, pd.Series) else genes_alias
        alias = alias[alias.notna()].astype(str)
        alias = alias[~alias.index.duplicated()]
        names = alias.reindex(genes).fillna(pd.Series(genes, index=genes)).to_numpy()
    else:
        names = genes.to_numpy()
    out: dict[str, int] = {}
    for column, name in enumerate(names):
        if name not in out or np.nan_to_num(average[column], nan=-np.inf) > np.nan_to_num(
            average[out[name]], nan=-np.inf
        ):
            out[name] = column
    return out


def marker_coverage(marker_sets: Mapping, genes, *, genes_alias=None) -> pd.DataFrame:
    """How many of each type's genes the data hold (case-sensitive names, after ``genes_alias``).

    Returns
    -------
    DataFrame, one row per type in the list's order: ``type``, ``n_listed`` and ``n_found`` (markers),
    ``missing`` (the markers not found, comma-separated), ``negative_found`` (negative genes found, of
    ``negative_listed``).
    """
    sets = check_marker_sets(marker_sets)
    genes = pd.Index(genes).astype(str)
    names = _symbols(genes, genes_alias, np.zeros(len(genes)))
    rows = []
    for kind, entry in sets.items():
        rows.append(
            {
                "type": kind,
                "n_listed": len(entry["genes"]),
                "n_found": sum(g in names for g in entry["genes"]),
                "missing": ",".join(g for g in entry["genes"] if g not in names),
                "negative_listed": len(entry["negative"]),
                "negative_found": sum(g in names for g in entry["negative"]),
            }
        )
    return pd.DataFrame(rows)


def type_scores(
    table_or_stats: pd.DataFrame | Mapping,
    marker_sets: Mapping,
    *,
    genes=None,
    clusters=None,
    sizes=None,
    genes_alias=None,
    min_genes: int = MIN_GENES,
    n_bins: int = N_BINS,
    source: str | Path = "markers",
) -> pd.DataFrame:
    """The score of every type in every cluster (see the module's doc).

    Parameters are those of :func:`cluster_names`.

    Returns
    -------
    DataFrame, clusters x types (in the list's order), scores in log1p units; NaN for a type with fewer than
    ``min_genes`` markers among the genes (or without reference genes).
    """
    return _scored(
        table_or_stats,
        check_marker_sets(marker_sets),
        genes=genes,
        clusters=clusters,
        sizes=sizes,
        genes_alias=genes_alias,
        min_genes=min_genes,
        n_bins=n_bins,
        source=source,
    )[0]


def _scored(
    table_or_stats, sets: dict, *, genes, clusters, sizes, genes_alias, min_genes: int, n_bins: int, source
) -> tuple[pd.DataFrame, dict[str, int], np.ndarray | None]:
    """:func:`type_scores`'s table, the data's gene names (after ``genes_alias``) -> column, and the fractions
    expressing (c x g, or None)."""
    if min_genes < 1:
        raise InputError(source, f"min_genes must be at least 1, got {min_genes}", "Give min_genes >= 1.")
    if n_bins < 2:
        raise InputError(source, f"n_bins must be at least 2, got {n_bins}", "Give n_bins >= 2 (scanpy: 25).")
    order, gene_index, mean, frac, n = cluster_means(
        table_or_stats, genes=genes, clusters=clusters, sizes=sizes, source=source
    )
    average = _gene_average(mean, n)
    names = _symbols(gene_index, genes_alias, average)
    _check_found(sets, names, gene_index, source=source)
    bins = expression_bins(average, n_bins=n_bins)
    scores = {}
    for kind, entry in sets.items():
        pos = np.array([names[g] for g in entry["genes"] if g in names], dtype=np.int64)
        others = {g for other, e in sets.items() if other != kind for g in e["genes"]}
        specific = [g for g in entry["genes"] if g in names and g not in others]
        if len(pos) < min_genes or not specific:
            scores[kind] = np.full(len(order), np.nan)
            continue
        score = set_score(mean, pos, bins)
        neg = np.array([names[g] for g in entry["negative"] if g in names], dtype=np.int64)
        if len(neg):
            score = score - np.clip(np.nan_to_num(set_score(mean, neg, bins), nan=0.0), 0.0, None)
        scores[kind] = score
    return pd.DataFrame(scores, index=pd.Index(order, name="cluster")), names, frac


def _gene_average(mean: np.ndarray, n: np.ndarray | None) -> np.ndarray:
    """Each gene's mean over all cells (clusters weighted by ``n``), or over clusters without sizes."""
    if n is not None and n.sum() > 0:
        keep = n > 0
        return (n[keep, None] * mean[keep]).sum(axis=0) / n[keep].sum()
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.where(np.isfinite(mean), mean, np.nan), axis=0) if len(mean) else np.zeros(0)


def _check_found(sets: dict, names: dict, genes: pd.Index, *, source) -> None:
    """An InputError when none of the list's markers is among the data's genes, with a hint at the cause."""
    listed = {g for entry in sets.values() for g in entry["genes"]}
    if listed & set(names):
        return
    lower = {g.lower() for g in names}
    hint = ""
    if any(g.lower() in lower for g in listed):
        hint = " (some match when case is ignored: give a list in the data's case, e.g. mouse symbols)"
    elif len(genes) and str(genes[0]).startswith(("ENSG", "ENSMUSG")):
        hint = f" (the data's genes are ids such as {genes[0]})"
    raise InputError(
        source,
        f"none of the marker list's {len(listed)} genes is among the data's {len(genes)} genes{hint}",
        "Give genes_alias (data gene -> symbol) for data named by ids, or a list of the data's gene names.",
    )


def cluster_names(
    table_or_stats: pd.DataFrame | Mapping,
    marker_sets: Mapping,
    *,
    genes_alias=None,
    genes=None,
    clusters=None,
    sizes=None,
    min_score: float = MIN_SCORE,
    min_margin: float = MIN_MARGIN,
    min_genes: int = MIN_GENES,
    n_bins: int = N_BINS,
    source: str | Path = "markers",
) -> pd.DataFrame:
    """Name each cluster after the cell type of ``marker_sets`` whose markers score best in it.

    Scores are scanpy's ``score_genes`` at the level of clusters, computed from the clusters' mean values of
    every gene (see the module's doc for the score, the reference genes and the rule for no confident name).

    Parameters
    ----------
    table_or_stats
        The clusters' statistics over all genes: :func:`rlae_sc.markers.markers`'s table with
        ``n_genes=None`` (log-normalised values), or :func:`rlae_sc.markers.group_statistics`'s dict (with
        ``genes``, and ``clusters`` for names).
    marker_sets
        Cell type -> list of genes, or -> ``{"genes": [...], "negative": [...]}``
        (:func:`read_marker_list`'s result).
    genes_alias
        Optional renaming of the data's genes before matching (a mapping or Series: data gene -> name in the
        list, e.g. Ensembl id -> symbol); genes it does not name keep their own name.
    genes, clusters
        With statistics: the names of their genes (n_genes,) and clusters (n_clusters,).
    sizes
        With a table: cells per cluster (cluster -> count), so genes are binned by their mean over cells as
        scanpy does (without: by their mean over clusters).
    min_score
        Least best score (log1p units) for a name; below it, :data:`UNASSIGNED`.
    min_margin
        Least ``(best - second) / best`` (0..1) for a name; below it, :data:`UNASSIGNED`.
    min_genes
        Fewest of a type's markers that must be found for it to be scored (one of them must be listed for no
        other type).
    n_bins
        Expression bins of the reference genes (scanpy's default 25).
    source
        Named in errors.

    Returns
    -------
    DataFrame with :data:`COLUMNS`, one row per cluster in the statistics' order: ``name`` (the best type, or
    :data:`UNASSIGNED`), ``best`` and ``score`` (the best type and its score, log1p units; ``""`` and NaN when
    no type could be scored), ``second`` and ``second_score``, ``margin`` (``(score - second_score) / score``;
    NaN with fewer than two scored types or a best score <= 0), ``n_found`` of ``n_listed``
    (the best type's markers among the data's genes) and ``genes_found`` (those markers, comma-separated),
    ``frac_expressing`` (mean over those markers of the fraction of the cluster's cells expressing them, 0..1;
    NaN without fractions). :func:`type_scores` gives every type's score.

    Raises
    ------
    InputError
        On a malformed marker list, statistics that do not cover every gene of every cluster, or when no
        marker is among the data's genes.
    """
    sets = check_marker_sets(marker_sets)
    if not 0 <= min_margin <= 1:
        raise InputError(source, f"min_margin must be within 0..1, got {min_margin}", "Give a fraction, e.g. 0.2.")
    scores, names, frac = _scored(
        table_or_stats,
        sets,
        genes=genes,
        clusters=clusters,
        sizes=sizes,
        genes_alias=genes_alias,
        min_genes=min_genes,
        n_bins=n_bins,
        source=source,
    )
    rows = []
    values = scores.to_numpy()
    for i, cluster in enumerate(scores.index):
        row = values[i]
        order = [j for j in np.argsort(-np.nan_to_num(row, nan=-np.inf), kind="stable") if np.isfinite(row[j])]
        best = scores.columns[order[0]] if order else ""
        second = scores.columns[order[1]] if len(order) > 1 else ""
        score = row[order[0]] if order else np.nan
        second_score = row[order[1]] if len(order) > 1 else np.nan
        margin = (score - second_score) / score if len(order) > 1 and score > 0 else np.nan
        apart = len(order) == 1 or margin >= min_margin  # NaN (a best score <= 0) is not apart
        confident = bool(order) and score >= min_score and apart
        found = [g for g in sets[best]["genes"] if g in names] if best else []
        columns = [names[g] for g in found]
        rows.append(
            {
                "cluster": cluster,
                "name": best if confident else UNASSIGNED,
                "best": best,
                "score": score,
                "second": second,
                "second_score": second_score,
                "margin": margin,
                "n_found": len(found),
                "n_listed": len(sets[best]["genes"]) if best else 0,
                "genes_found": ",".join(found),
                "frac_expressing": float(frac[i, columns].mean()) if frac is not None and columns else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)
