"""The per-dataset report: PNG figures and one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import anndata as ad
import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rlae_sc import plots
from rlae_sc.atomic import atomic_path
from rlae_sc.keys import DIRECTIONS_KEY, UNS_KEY
from rlae_sc.leiden import FRACTION, RUNS, TIE


def _single(draw, figsize: tuple[float, float]):
    """A report figure of one plot: ``draw(ax)`` into an off-screen figure of ``figsize`` inches."""
    fig, axes = plots.offscreen_figure(figsize)
    draw(axes[0, 0])
    fig.tight_layout()
    return fig


def _stacked(adata: ad.AnnData, top, bottom, height: float) -> Figure:
    """Two per-component plots of ``adata`` (``top(adata, ax=)`` over ``bottom``) sharing the component axis."""
    fig, axes = plots.offscreen_figure((6, height), 2, 1, sharex=True, height_ratios=[3, 2])
    top(adata, ax=axes[0, 0])
    axes[0, 0].set_xlabel("")
    bottom(adata, ax=axes[1, 0])
    fig.tight_layout()
    return fig


def _row(draw, keys: list[str], panel: tuple[float, float], title: str) -> Figure:
    """A row of panels of ``panel`` inches, ``draw(ax, key)`` for each of ``keys``, under ``title``."""
    fig, axes = plots.offscreen_figure((panel[0] * len(keys), panel[1]), 1, len(keys))
    for ax, key in zip(axes[0], keys, strict=True):
        draw(ax, key)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _training_figure(adata: ad.AnnData) -> Figure:
    metrics = [name for name in plots.TRAINING_METRICS if name in adata.uns[UNS_KEY]["trace"]]
    return _row(lambda ax, metric: plots.training(adata, metric=metric, ax=ax), metrics, (3, 3), "Training history")


def _umap_figure(adata: ad.AnnData, label_key: str | None) -> Figure:
    keys = ["leiden"] + ([label_key] if label_key else [])
    return _row(lambda ax, key: plots.umap(adata, color=key, ax=ax), keys, (4.8, 5.6), "UMAP of the LAE embedding")


def _top_genes_figure(adata: ad.AnnData, *, n_directions: int = 6, ncol: int = 3) -> Figure:
    n_directions = min(n_directions, adata.varm[DIRECTIONS_KEY].shape[1])
    nrow = -(-n_directions // ncol)
    fig, axes = plots.offscreen_figure((9, 2.6 * nrow), nrow, ncol)
    for d, ax in enumerate(axes.ravel()):
        if d < n_directions:
            plots.top_genes(adata, direction=d, ax=ax)
        else:
            ax.axis("off")
    fig.suptitle("Top genes of the first principal directions", fontsize=10)
    fig.tight_layout()
    return fig


# name -> (function of (adata, label_key) returning an off-screen Figure, caption: what it shows / what the theory
# predicts). workflow/report/<name>.rst repeats each caption for `snakemake --report` (a test keeps them equal).
FIGURES = {
    "variance_ratio": (
        lambda a, key: _stacked(a, plots.variance_ratio, plots.stability, 5.6),
        "Top: fraction of the total variance carried by each component: LAE values come from the decoder's singular "
        "values alone (e_i = lambda / (1 - s_i^2)); open circles are exact PCA of the same matrix. "
        "Theory: at the optimum of the sum-regularized loss the two coincide. With n_components auto, the dashed "
        "line is the noise floor (parallel analysis, band: its spread), lambda is set there and k counts the units "
        "above it. Bottom: each kept unit's shrinkage 1 - lambda / e_i, and its direction's stability (expected "
        "|cos| under resampling of cells); crosses below the dotted line (0.9) mark directions that are not "
        "identifiable one by one.",
    ),
    "alignment": (
        lambda a, key: _stacked(a, plots.alignment, plots.eigengaps, 4.6),
        "Top: 1 - |cos| between each LAE direction (left singular vector of the decoder) and the matching exact "
        "principal direction (without the eigh, the certificate's upper bound on it); lower is better. Bottom: "
        "relative eigengap e_i / e_(i+1) - 1. Theory: a direction is "
        "identifiable only where its gap is clearly above zero; inside a near-degenerate cluster it may mix.",
    ),
    "singular_values": (
        lambda a, key: _single(lambda ax: plots.shrinkage(a, ax=ax), (6, 3.4)),
        "Decoder singular values against each component's eigenvalue in units of lambda. Theory (Kunin et al. 2019): "
        "s_i = sqrt(max(0, 1 - lambda / e_i)); components with e_i below lambda would collapse to zero.",
    ),
    "training": (
        lambda a, key: _training_figure(a),
        "Training history of the tied exact updates: the sum loss, the transpose distance between the encoder and "
        "its optimal (ridge) decoder, and the change of the top-k read-out between checks. Theory: every critical "
        "point of the sum loss has W1 = W2^T, so the transpose distance falls towards zero.",
    ),
    "umap": (
        _umap_figure,
        "UMAP of the cells from the LAE embedding (exact kNN graph), coloured by Leiden cluster and, where a label "
        "column is configured, by the known labels (agreement: ARI and NMI in the table). The embedding equals PCA "
        "scores, so clusters should match a standard PCA-based analysis.",
    ),
    "top_genes": (
        lambda a, key: _top_genes_figure(a),
        "Genes with the largest loadings on the first directions (unit vectors over the genes used). "
        "Signs are arbitrary per direction; genes on one side of a direction are co-expressed across cells.",
    ),
}


def _batch_figure(adata: ad.AnnData, batch_key: str) -> Figure:
    fig, axes = plots.offscreen_figure((11, 5.2), 1, 2, width_ratios=[1, 1.2])
    plots.umap(adata, color=batch_key, ax=axes[0, 0])
    plots.batch_composition(adata, batch_key, ax=axes[0, 1])
    fig.tight_layout()
    return fig


def _qc_batch_figure(adata: ad.AnnData, batch_key: str) -> Figure:
    metrics = [key for key in ("n_genes", "total_counts", "pct_mito") if adata.obs[key].notna().any()]
    return _row(
        lambda ax, key: plots.qc_by_batch(adata, batch_key, metric=key, ax=ax), metrics, (3.6, 3.4), "QC by batch"
    )


# With a batch key: name -> (function of (adata, batch_key), caption).
BATCH_FIGURES = {
    "batches": (
        _batch_figure,
        "Left: the UMAP coloured by batch. Right: each Leiden cluster's cells by batch (shares; counts above the "
        "bars). After integration a cell type that every batch holds forms clusters of every batch; a cluster of one "
        "batch is a type only that batch holds, or a batch effect the correction left (see the batch mixing in the "
        "table: 0 when every cell's neighbours come from its own batch, 1 when all batches are equally present).",
    ),
    "qc_by_batch": (
        _qc_batch_figure,
        "Genes detected, total counts and mitochondrial share per cell in each batch, for the cells kept by QC. "
        "Batches of different depth or chemistry differ here before any biology does.",
    ),
}


def _confusion_figure(query: ad.AnnData, truth_key: str) -> Figure:
    shape = query.obs[truth_key].nunique(), query.obs["rlae_label"].nunique()
    return _single(lambda ax: plots.confusion(query, truth_key, ax=ax), (1.2 + 0.7 * shape[1], 1.2 + 0.5 * shape[0]))


# The mapping page's figures: name -> (function of (reference, query, truth_key), caption).
MAPPING_FIGURES = {
    "mapped_umap": (
        lambda ref, query, truth: _single(lambda ax: plots.mapped_umap(ref, query, ax=ax), (6.2, 5.6)),
        "Reference cells (grey) in their UMAP, with the query cells placed at the mean position of their nearest "
        "reference cells in the model's embedding, coloured by the transferred label. A placement does not show "
        "distance: query cells farther from their nearest reference cells than the reference's own cells of that "
        "label are (0.99 quantile), or whose vote is split, are labelled unassigned: cell states the reference lacks.",
    ),
    "confidence": (
        lambda ref, query, truth: _single(lambda ax: plots.confidence(query, ax=ax), (6, 3.4)),
        "Per-cell confidence of the transferred label (the classifier's probability, or the winning label's share "
        "of the neighbours' vote, times the share of the model's signal on genes the query has), per predicted "
        "label. Low values mark cells between reference populations or queries missing many of the model's genes.",
    ),
    "confusion": (
        lambda ref, query, truth: _confusion_figure(query, truth),
        "Known query labels ({truth_key}) against transferred labels, as counts; a good mapping puts most cells "
        "on matching labels.",
    ),
}

METRIC_ROWS = [
    ("n_cells_in", "cells in the input"),
    ("n_cells_all_zero", "cells with no counts (removed)"),
    ("n_cells_removed", "cells removed by QC, all-zero included"),
    ("n_genes_in", "genes in the input"),
    ("n_genes_all_zero", "genes with no counts (removed)"),
    ("n_genes_below_min_cells", "genes in too few cells (removed), all-zero included"),
    ("n_cells", "cells (after QC)"),
    ("n_genes", "genes used"),
    ("k", "latent units k"),
    ("lambda", "lambda (units of C = X^T X, sum over cells)"),
    ("lambda_rule", "how lambda was set"),
    ("noise_floor", "noise floor (parallel analysis, units of C)"),
    ("noise_floor_spread", "noise floor's spread (sd over permutations)"),
    ("mp_edge", "Marchenko-Pastur edge (units of C)"),
    ("lambda_over_e_k", "lambda / e_k"),
    ("fit_seconds", "fit time, s (scatter pass + training)"),
    ("certificate_seconds", "certificate time, s (residuals of the directions against the training C)"),
    ("exact_pca_seconds", "exact PCA time, s (eigh of the training C, reference)"),
    ("n_iter", "training iterations"),
    ("certificate_min_cos_top10", "certified lower bound on min |cos| with exact PCA, top 10"),
    ("certificate_max_eigenvalue_error_top10", "certified bound on the relative eigenvalue error, top 10"),
    ("certificate_max_residual", "max relative residual ||C p_i - e_i p_i|| / e_i"),
    ("min_abs_cos_top10", "min |cos| with exact PCA, top 10"),
    ("min_abs_cos", "min |cos| with exact PCA, all k"),
    ("subspace_distance", "subspace distance"),
    ("eigenvalue_max_rel_err_top10", "max relative eigenvalue error, top 10"),
    ("transpose_distance", "transpose distance ||W1 - W2^T|| / ||W2||"),
    ("singular_value_error", "max |s_i - sqrt(1 - lambda/e_i)|"),
    ("n_clusters", "Leiden clusters"),
    ("ari", "ARI vs labels"),
    ("nmi", "NMI vs labels"),
    ("label_agreement", "label agreement: share of a cell's graph neighbours with its label"),
    ("batch_key", "batch key"),
    ("n_batches", "batches"),
    ("batch_centering", "batch centring"),
    ("harmony_seconds", "Harmony on the embedding, s"),
    ("batch_mixing", "batch mixing of graph neighbours (0 none .. 1 even)"),
]


def _fmt(value, key: str = "") -> str:
    """A table cell: |cos| near 1 as ``1 - 2.0e-15`` (4 significant digits would print 1), floats to 4 digits."""
    if isinstance(value, float) and key.startswith(("min_abs_cos", "certificate_min_cos")) and 0.999 < value < 1:
        return f"1 - {1 - value:.1e}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return html.escape(", ".join(map(str, value)) or "none")
    return html.escape(str(value))


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 980px; margin: 1.5em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; } .scroll { overflow-x: auto; }
th, td { padding: 3px 10px; border-bottom: 1px solid #ddd; }
th { text-align: left; font-weight: normal; color: #444; } td { font-variant-numeric: tabular-nums; }
figure { margin: 2em 0; } img { max-width: 100%; height: auto; }
figcaption { color: #444; font-size: 0.92em; max-width: 760px; }
"""


def write_page(
    out_dir: str | Path,
    *,
    title: str,
    intro: str,
    table: list[tuple[str, str, object]],
    figures: list[tuple[str, Figure, str]],
    blocks: list[tuple[str, str]] = (),
    page: str = "report.html",
) -> Path:
    """Save each ``(name, figure, caption)`` as ``figures/<name>.png`` and write a self-contained HTML page.

    ``table`` rows are ``(key, label, value)`` (the key picks the number format); ``blocks`` are
    ``(heading, html)`` blocks placed after the table; images are embedded as base64 so the page stands alone.
    """
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    for name, fig, caption in figures:
        png = fig_dir / f"{name}.png"
        with atomic_path(png) as tmp, mpl.rc_context(plots.STYLE):
            fig.savefig(tmp, format="png", bbox_inches="tight")
        if fig.canvas.manager is not None:  # a pyplot figure (the papers'): pyplot holds it until closed
            import matplotlib.pyplot as plt

            plt.close(fig)
        data = base64.b64encode(png.read_bytes()).decode()
        sections.append(
            f'<figure id="{name}"><img src="data:image/png;base64,{data}" alt="{html.escape(name)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    rows = "".join(f"<tr><th>{html.escape(label)}</th><td>{_fmt(value, key)}</td></tr>" for key, label, value in table)
    extra = "".join(f"<h2>{html.escape(heading)}</h2>{body}" for heading, body in blocks)
    text = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(intro)}</p>
<div class="scroll"><table>{rows}</table></div>
{extra}
{"".join(sections)}
</body></html>
"""
    path = out_dir / page
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def write_report(
    adata: ad.AnnData, metrics: dict, out_dir: str | Path, *, dataset: str, label_key: str | None = None
) -> Path:
    """Write ``figures/*.png`` and ``report.html`` (images embedded) under ``out_dir``; return the page's path.
    With a batch key (``uns['rlae_cluster']['batch_key']``), the batch figures (:data:`BATCH_FIGURES`) follow."""
    batch_key = adata.uns.get("rlae_cluster", {}).get("batch_key") or None
    figures = [(name, fn(adata, label_key), caption) for name, (fn, caption) in FIGURES.items()]
    figures.append(("qc", _qc_figure(adata, metrics), QC_CAPTION))
    if "rlae_markers" in adata.uns:
        figures.insert(
            0, ("markers", _single(lambda ax: plots.dotplot(adata.uns["rlae_markers"], ax=ax), (1, 1)), MARKERS_CAPTION)
        )
    if batch_key:
        figures += [(name, fn(adata, batch_key), caption) for name, (fn, caption) in BATCH_FIGURES.items()]
    cells = write_cells_csv(adata, Path(out_dir) / CELLS_CSV, label_key=label_key, batch_key=batch_key)
    return write_page(
        out_dir,
        title=f"rlae-sc report: {dataset}",
        intro="A linear autoencoder with L2 weight decay on encoder and decoder (sum-regularized) was trained on "
        "the preprocessed matrix; its decoder's left singular vectors are the principal directions (Kunin et al., "
        "ICML 2019). Every number below is checked against exact PCA of the same matrix.",
        table=[(key, label, metrics[key]) for key, label in METRIC_ROWS if key in metrics],
        figures=figures,
        blocks=_cluster_sections(adata, metrics, label_key=label_key, cells=cells),
    )


MARKERS_CAPTION = (
    "Marker genes: each cluster's first three genes (ranked by the Wilcoxon rank-sum score of the cluster "
    "against the other cells together with the fold change), and their expression in every cluster: dot size is "
    "the fraction of the cluster's cells that express the gene, colour its mean log-normalised value. The full "
    "table, 100 genes per cluster with fold changes and p-values, is markers.tsv beside the page. The p-values "
    "treat every cell as an independent replicate; cells of one sample or donor are not, so with thousands of "
    "cells they are many orders of magnitude smaller than a test between samples (pseudobulk) would give: use "
    "them to rank genes, not as evidence of differential expression between conditions."
)

CELLS_CSV = "cells.csv"  # every cell's cluster, label, batch and UMAP position, beside report.html

QC_CAPTION = (
    "Per-cell quality measures of the cells QC kept: genes detected, total counts and the share of counts in "
    "mitochondrial genes (MT-), with the thresholds applied (dashed). Cells QC removed are counted in the table "
    "above. A second peak at low genes or high mitochondrial share marks damaged cells or empty droplets."
)


def _qc_figure(adata: ad.AnnData, metrics: dict) -> Figure:
    limits = {
        "n_genes": metrics.get("qc_min_genes"),
        "total_counts": metrics.get("qc_min_counts") or None,
        "pct_mito": metrics.get("qc_max_pct_mito"),
    }
    keys = [key for key in ("n_genes", "total_counts", "pct_mito") if key in adata.obs and adata.obs[key].notna().any()]
    return _row(
        lambda ax, key: plots.qc_histogram(adata, metric=key, threshold=limits.get(key), ax=ax),
        keys,
        (3.6, 3.2),
        "Quality control",
    )


def write_cells_csv(
    adata: ad.AnnData, path: Path, *, label_key: str | None = None, batch_key: str | None = None
) -> Path:
    """``cells.csv``: one row per cell (its name), its Leiden ``cluster``, its ``label`` and ``batch`` (when
    set) and its UMAP position (``umap_1``, ``umap_2``); returns the path."""
    table = pd.DataFrame({"cluster": adata.obs["leiden"].astype(str).to_numpy()}, index=adata.obs_names)
    for column, key in (("label", label_key), ("batch", batch_key)):
        if key:
            table[column] = adata.obs[key].astype(str).to_numpy()
    table["umap_1"], table["umap_2"] = np.asarray(adata.obsm["X_umap"])[:, :2].T
    table.index.name = "cell"
    with atomic_path(path) as tmp:
        table.to_csv(tmp)
    return path


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [frame.index.name or "", *frame.columns])
    body = "".join(
        "<tr>" + f"<th>{html.escape(str(i))}</th>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>"
        for i, row in zip(frame.index, frame.itertuples(index=False), strict=True)
    )
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def _cluster_sections(adata: ad.AnnData, metrics: dict, *, label_key: str | None, cells: Path) -> list:
    """The page's blocks for a biologist: the clusters with their sizes (and best-matching labels), the
    cluster x label counts, the directions' stability in a sentence and the link to the cells' table."""
    clusters = adata.obs["leiden"].astype(str)
    order = sorted(clusters.unique(), key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0, c))
    sizes = clusters.value_counts().reindex(order)
    table = pd.DataFrame({"cells": sizes.to_numpy(), "share": sizes.to_numpy() / sizes.sum()}, index=order)
    table.index.name = "cluster"
    if "rlae_markers" in adata.uns:
        top = adata.uns["rlae_markers"]["top"]
        table["top markers"] = [", ".join(list(top.get(c, []))[:5]) for c in order]
    if "rlae_cluster_names" in adata.uns:
        names = pd.DataFrame(adata.uns["rlae_cluster_names"]).astype({"cluster": str}).set_index("cluster")
        table.insert(0, "name (marker list)", names["name"].reindex(order).to_numpy())
        table.insert(1, "score", names["score"].reindex(order).to_numpy())
    blocks = []
    if label_key:
        cross = pd.crosstab(clusters, adata.obs[label_key].astype(str)).reindex(order)
        table["most common label"] = cross.idxmax(axis=1)
        table["its share"] = cross.max(axis=1) / cross.sum(axis=1)
        cross.index.name = "cluster"
        blocks.append(("Clusters by known label (cells)", _html_table(cross)))
    blocks.insert(0, ("Clusters", _html_table(table)))
    if "rlae_pseudobulk" in adata.uns:
        blocks.append(_pseudobulk_block(adata.uns["rlae_pseudobulk"], order))
    blocks.append(_resolution_block(adata.uns.get("rlae_cluster", {})))
    unstable = metrics.get("not_identifiable", [])
    if "k" in metrics:
        k = metrics["k"]
        blocks.append(
            (
                "How stable are the directions?",
                f"<p>{k - len(unstable)} of the {k} directions are identifiable one by one (stability, the expected "
                f"|cos| of a direction under resampling of cells, at least 0.9); {len(unstable)} are not. A direction "
                "below 0.9 shares its variance with its neighbours (their eigenvalues are close), so it can rotate "
                "among them from one sample of cells to another. Distances in the embedding depend only on the "
                "subspace the directions span together, not on how it is split into directions, so this alone does "
                "not make the clusters or the UMAP unstable. It is expected with few cells or many components, and "
                "is not a failed run.</p>",
            )
        )
    link = html.escape(cells.name)
    blocks.append(
        (
            "Download",
            f'<p><a href="{link}">{link}</a>: every cell with its cluster'
            + (", known label" if label_key else "")
            + ", batch (when set) and UMAP position, to open in a spreadsheet or join to your own tables.</p>",
        )
    )
    return blocks


def _pseudobulk_block(pseudobulk: dict, order: list[str]) -> tuple[str, str]:
    """Each cluster's markers that hold between samples (pseudobulk DESeq2), and why the cell-level p-values
    are not evidence on their own."""
    top, skipped = pseudobulk["top"], pseudobulk["skipped"]
    table = pd.DataFrame(
        {"markers that hold between samples (DESeq2, adjusted p < 0.05)": [
            ", ".join(list(top[c])) or "none" if c in top else f"not tested: {skipped.get(c, 'no result')}"
            for c in order
        ]},
        index=pd.Index(order, name="cluster"),
    )  # fmt: skip
    text = (
        "<p>The marker table's p-values come from a test between cells, which treats every cell as an independent "
        "replicate. Cells of one sample share that sample's donor and handling, so those p-values are far smaller "
        "than the evidence supports: use them to rank genes. Here each sample's counts are summed within the "
        f"cluster and outside it (samples in <code>{html.escape(str(pseudobulk['sample_key']))}</code>), and "
        "DESeq2 (pydeseq2) tests the two sums against each other, paired by sample: a gene listed here is higher "
        "in the cluster across samples. <code>pseudobulk.tsv</code> holds the numbers.</p>"
    )
    return "Markers between samples (pseudobulk)", text + _html_table(table)


def _resolution_block(params: dict) -> tuple[str, str]:
    """The Leiden resolution used, and the stability curve it was chosen from (``resolution: auto``)."""
    resolution = params.get("resolution")
    if "resolution_curve" not in params:
        return "How many clusters?", f"<p>Leiden ran at resolution {_fmt(resolution)}, set in the configuration.</p>"
    curve = pd.DataFrame(params["resolution_curve"]).set_index("resolution")
    curve.columns = ["stability (mean ARI)", "least ARI", "clusters (median)"]
    text = (
        f"<p>Leiden ran at resolution {_fmt(resolution)}, chosen from the data: for each resolution below, Leiden "
        f"ran on {RUNS} random {FRACTION:.0%} subsamples of the cells with different seeds, and the stability is "
        "the mean adjusted Rand index between every two runs over the cells they share. The chosen resolution is "
        f"the most stable (the largest of those within {TIE} of the best): the partition these cells support most "
        "reproducibly. A finer split of one population needs a resolution set by hand "
        "(<code>cluster: resolution</code>).</p>"
    )
    return "How many clusters?", text + _html_table(curve)


# The mapping page's table: summary key -> label (keys not listed follow with their names).
MAPPING_ROWS = [
    ("n_query_cells", "query cells"),
    ("label_key", "reference labels transferred"),
    ("classifier", "classifier"),
    ("n_neighbors", "reference neighbours per query cell"),
    ("gene_overlap", "model genes present in the query (fraction)"),
    ("signal_present", "model signal on genes present in the query (fraction; scales the confidence)"),
    ("median_confidence", "median confidence"),
    ("n_unassigned", "cells unassigned"),
    ("unassigned_fraction", "cells unassigned (fraction)"),
    ("n_beyond_reference", "unassigned: beyond the reference's neighbour distances"),
    ("n_split_vote", "unassigned: split vote (below the minimum confidence)"),
    ("distance_quantile", "distance quantile (per reference label)"),
    ("min_confidence", "minimum confidence"),
    ("n_scored", "cells whose known label is a reference label"),
    ("accuracy", "accuracy (unassigned counted as wrong)"),
    ("accuracy_assigned", "accuracy of the assigned cells"),
    ("macro_f1", "macro-F1 over the reference labels present (unassigned counted as misses)"),
    ("unassigned_known", "unassigned among cells of types the reference has (fraction)"),
    ("n_novel", "cells of types the reference lacks"),
    ("unassigned_novel", "unassigned among cells of types the reference lacks (fraction)"),
    ("n_flagged_by_qc", "cells the reference QC would have removed (mapped all the same)"),
]


def _mapping_intro(summary: dict) -> str:
    """The mapping page's opening paragraph: how cells were labelled and when they are left unassigned."""
    classifier = {
        "knn": "a kernel-weighted vote of their nearest reference cells",
        "logistic": "a logistic regression on the reference's embedding",
    }.get(summary.get("classifier"), "their nearest reference cells")
    rules = [f"its label holds less than {summary.get('min_confidence')} of the vote (probability)"]
    if summary.get("distance_quantile") is not None:
        rules.insert(
            0,
            f"it lies farther from its nearest reference cells than the {summary['distance_quantile']} quantile of "
            "the same distance among reference cells of the label its neighbours carry (on components weighted by "
            "their stability)",
        )
    return (
        "Query cells were embedded with the reference's model (its recipe and principal directions, no "
        f"refitting) and labelled by {classifier}. A cell is left 'unassigned' when {', or when '.join(rules)}. "
        "Accuracy and macro-F1 count unassigned cells as wrong. The confidence is the vote share (probability) "
        "times the share of the model's signal on genes the query has."
    )


def _mapping_table(summary: dict) -> list[tuple[str, str, object]]:
    """The summary's scalar numbers as ``(key, label, value)`` rows, in ``MAPPING_ROWS``'s order, then the rest."""
    labels = dict(MAPPING_ROWS)
    scalars = {key: value for key, value in summary.items() if not isinstance(value, dict) and value is not None}
    ordered = [key for key, _ in MAPPING_ROWS if key in scalars] + [key for key in scalars if key not in labels]
    return [(key, labels.get(key, key.replace("_", " ")), scalars[key]) for key in ordered]


def write_mapping_report(
    reference: ad.AnnData,
    query: ad.AnnData,
    summary: dict,
    out_dir: str | Path,
    *,
    title: str,
    truth_key: str | None = None,
) -> Path:
    """The mapping page: query cells in the reference UMAP, confidence, unassigned cells, and agreement with
    known labels (accuracy and macro-F1 with unassigned cells counted as wrong)."""
    figures = [
        (name, fn(reference, query, truth_key), caption.format(truth_key=truth_key))
        for name, (fn, caption) in MAPPING_FIGURES.items()
        if truth_key or name != "confusion"
    ]
    return write_page(
        out_dir,
        title=title,
        figures=figures,
        table=_mapping_table(summary),
        intro=_mapping_intro(summary),
    )


INDEX_COLUMNS = [
    ("n_cells", "cells"),
    ("n_genes", "genes"),
    ("k", "k"),
    ("lambda", "lambda"),
    ("fit_seconds", "fit s"),
    ("certificate_min_cos_top10", "min |cos| top 10, certified"),
    ("min_abs_cos_top10", "min |cos| top 10"),
    ("subspace_distance", "subspace dist."),
    ("eigenvalue_max_rel_err_top10", "eig. rel. err. top 10"),
    ("ari", "ARI"),
    ("nmi", "NMI"),
]


def write_index(results: str | Path, *, out: str | Path | None = None) -> Path:
    """``results/index.html``: a row per dataset (``results/<name>/metrics.json``) linking to its page,
    the mappings (``results/mapping/<name>/mapping.json``), the federated fits (``results/federation/<name>/
    federation.json``, with links to each site's page) and the papers' figures when present."""
    results = Path(results)
    rows = []
    for metrics_file in sorted(results.glob("*/metrics.json")):
        name = metrics_file.parent.name
        m = json.loads(metrics_file.read_text())
        cells = "".join(f"<td>{_fmt(m[key], key) if key in m else '-'}</td>" for key, _ in INDEX_COLUMNS)
        thumb = f"{name}/figures/umap.png"
        img = (
            f'<img src="{html.escape(thumb)}" alt="UMAP of {html.escape(name)}" width="120">'
            if (results / thumb).exists()
            else ""
        )
        rows.append(
            f'<tr><th><a href="{html.escape(name)}/report.html">{html.escape(name)}</a></th>{cells}<td>{img}</td></tr>'
        )
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in INDEX_COLUMNS)
    maps = []
    for summary_file in sorted(results.glob("mapping/*/mapping.json")):
        s = json.loads(summary_file.read_text())
        name = summary_file.parent.name
        acc = f", accuracy {s['accuracy']:.3f}" if s.get("accuracy") is not None else ""
        maps.append(
            f'<li><a href="mapping/{html.escape(name)}/report.html">{html.escape(name)}</a>: '
            f"{s['n_query_cells']} cells, median confidence {s['median_confidence']:.3f}{acc}</li>"
        )
    feds = []
    for summary_file in sorted(results.glob("federation/*/federation.json")):
        s = json.loads(summary_file.read_text())
        name = html.escape(summary_file.parent.name)
        sites = ", ".join(
            f'<a href="federation/{name}/sites/{html.escape(site)}/report.html">{html.escape(site)}</a>'
            for site in s["sites"]
            if (summary_file.parent / "sites" / site / "report.html").exists()
        )
        secure = " with secure aggregation" if s["secure"] else " (trusted)"
        feds.append(
            f"<li>{name}: {s['n_sites']} sites{secure}, {s['n_cells']} cells x {s['n_genes']} genes, k {s['k']}; "
            f"sites' pages: {sites or '-'}</li>"
        )
    figures = (
        '<p><a href="figures/figures.html">The papers\' figures reproduced</a></p>'
        if (results / "figures" / "figures.html").exists()
        else ""
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>rlae-sc results</title><style>{STYLE}
table {{ font-size: 0.9em; }}</style></head><body>
<h1>rlae-sc results</h1>
<p>One row per dataset: the principal directions recovered from the sum-regularized linear autoencoder's decoder,
compared with exact PCA of the same matrix (|cos| per component, subspace distance, eigenvalue error), and the
agreement of Leiden clusters with known labels. Lambda is in the units of C = X^T X (a sum over cells).</p>
<div class="scroll"><table><tr><th>dataset</th>{head}<th>UMAP</th></tr>{"".join(rows)}</table></div>
{"<h2>Mapped queries</h2><ul>" + "".join(maps) + "</ul>" if maps else ""}
{"<h2>Federated fits</h2><ul>" + "".join(feds) + "</ul>" if feds else ""}
{figures}
</body></html>
"""
    out = Path(out) if out is not None else results / "index.html"
    with atomic_path(out) as tmp:
        tmp.write_text(page)
    return out
