"""Plots of a trained LAE, each drawn into one matplotlib Axes (``ax=``, or a new figure) and returning it.

The style (:data:`STYLE`) applies only while a plot draws; nothing in matplotlib's global state changes.
The per-model plots read ``uns[key]`` as written by :func:`rlae_sc.tl.rlae` (and by the pipeline's
``directions`` stage): ``variance_ratio``, ``singular_values``, ``lambda``, ``reference_pca`` and ``trace``.
"""

from __future__ import annotations

import functools

import anndata as ad
import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from rlae_sc.keys import DIRECTIONS_KEY, UNS_KEY
from rlae_sc.lae.theory import mode_fixed_point

STYLE = {"figure.dpi": 110, "font.size": 9, "axes.spines.top": False, "axes.spines.right": False}
RASTER_MIN_CELLS = 50_000  # from this many points on, scatter plots are drawn as density-shaded rasters

# trace column -> (axis label, log scale): what :func:`training` can draw
TRAINING_METRICS = {
    "loss": ("sum loss (units of C)", False),
    "transpose_distance": ("||W1 - W2^T|| / ||W2||", True),
    "subspace_distance": ("subspace distance to exact PCA", True),
    "readout_change": ("change of the top-k read-out", True),
}


def styled(draw):
    """Run a plot function inside ``matplotlib.rc_context(STYLE)``, so its style stays inside its own figure."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with mpl.rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """``ax`` itself, or the axes of a new pyplot figure of ``figsize`` inches (shown inline in a notebook)."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt  # only when the caller asked for a new figure

    return plt.figure(figsize=figsize).add_subplot()


def offscreen_figure(
    figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, **kwargs
) -> tuple[Figure, np.ndarray]:
    """A figure outside pyplot (no backend, no global state) and its axes (nrows x ncols), in :data:`STYLE`.

    ``kwargs`` go to :meth:`matplotlib.figure.Figure.subplots`.
    """
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=figsize)
        return fig, fig.subplots(nrows, ncols, squeeze=False, **kwargs)


def _uns(adata: ad.AnnData, key: str) -> dict:
    if key not in adata.uns:
        raise KeyError(f"adata.uns has no {key!r}: run rlae_sc.tl.rlae(adata) first (or pass its key_added as key)")
    return adata.uns[key]


@styled
def variance_ratio(adata: ad.AnnData, *, key: str = UNS_KEY, ax: Axes | None = None) -> Axes:
    """Variance ratio per component: the LAE's (from the decoder's singular values) beside exact PCA's.

    Parameters
    ----------
    adata
        Annotated by :func:`rlae_sc.tl.rlae`.
    key
        The entry of ``adata.uns`` to read (``key_added`` of :func:`rlae_sc.tl.rlae`).
    ax
        Axes to draw into; a new figure when ``None``.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn into.
    """
    u = _uns(adata, key)
    ax = new_axes(ax, (6, 3.4))
    i = np.arange(1, len(u["variance_ratio"]) + 1)
    total = u["reference_pca"]["eigenvalues"][0] / u["reference_pca"]["variance_ratio"][0]  # tr(C)
    exact = str(u["reference_pca"].get("kind", "eigh")) == "eigh"
    label = "exact PCA (eigh)" if exact else "certified eigenvalues (residual certificate)"
    ax.plot(i, u["reference_pca"]["variance_ratio"], "o", ms=7, mfc="none", color="0.3", label=label)
    ax.plot(i, u["variance_ratio"], ".", ms=5, color="C3", label="LAE: lam / (1 - s_i^2) / tr(C)")
    floor = u["params"].get("noise_floor")
    if floor is not None:  # n_components auto: lambda is the floor
        spread = u["params"]["noise_floor_spread"]
        ax.axhspan((floor - spread) / total, (floor + spread) / total, color="C0", alpha=0.15, lw=0)
        ax.axhline(floor / total, color="C0", ls="--", lw=1, label="noise floor (parallel analysis) +- spread")
    else:
        ax.axhline(u["lambda"] / total, color="0.5", ls=":", lw=1, label="lambda / tr(C)")
    ax.set_yscale("log")
    ax.set_xlabel("component i")
    ax.set_ylabel("fraction of total variance")
    ax.set_title(f"Variance ratio per component (k = {len(i)}{', lambda at the noise floor' if floor else ''})")
    ax.legend(frameon=False)
    return ax


@styled
def stability(adata: ad.AnnData, *, key: str = UNS_KEY, ax: Axes | None = None) -> Axes:
    """Per kept unit: its shrinkage ``1 - lambda / e_i`` (the decoder's ``s_i^2``) and its direction's stability
    (expected ``|cos|`` under resampling of cells), the components below
    :data:`rlae_sc.stability.IDENTIFIABLE` marked as not identifiable.

    Parameters and the return value are those of :func:`rlae_sc.pl.variance_ratio`.
    """
    from rlae_sc.stability import IDENTIFIABLE

    u = _uns(adata, key)
    ax = new_axes(ax, (6, 2.6))
    i = np.arange(1, len(u["eigenvalues"]) + 1)
    ax.bar(i, 1 - u["lambda"] / u["eigenvalues"], color="C3", alpha=0.35, label="shrinkage 1 - lambda / e_i")
    if "stability" in u:
        low = u["stability"] < IDENTIFIABLE
        ax.plot(i[~low], u["stability"][~low], "o", ms=4, color="C0", label="stability (expected |cos|)")
        ax.plot(i[low], u["stability"][low], "x", ms=5, color="C1", label="not identifiable")
        ax.axhline(IDENTIFIABLE, color="0.5", ls=":", lw=1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("component i")
    ax.legend(frameon=False, fontsize=7, ncols=3, loc="lower left")
    return ax


@styled
def alignment(adata: ad.AnnData, *, key: str = UNS_KEY, ax: Axes | None = None) -> Axes:
    """``1 - |cos(p_i, u_i)|`` per component between the LAE's directions and exact PCA's (log scale, floor 1e-16);
    without the eigh, the certificate's upper bound on it (``reference_pca['kind']``).

    Parameters and the return value are those of :func:`rlae_sc.pl.variance_ratio`.
    """
    ref = _uns(adata, key)["reference_pca"]
    ax = new_axes(ax, (6, 3))
    i = np.arange(1, len(ref["alignment"]) + 1)
    ax.semilogy(i, np.maximum(1 - ref["alignment"], 1e-16), "o-", ms=3, color="C0")
    ax.axhline(1e-3, ls=":", color="0.5")
    ax.text(i[-1], 7e-4, "|cos| = 0.999", ha="right", va="top", color="0.4", fontsize=8)
    ax.set_xlabel("component i")
    certified = str(ref.get("kind", "eigh")) == "certificate"
    ax.set_ylabel("1 - |cos(LAE_i, PCA_i)|" + (", bound" if certified else ""))
    ax.set_title(
        "Per-component alignment with exact PCA" + (", certified bound" if certified else "") + " (floor 1e-16)"
    )
    return ax


@styled
def eigengaps(adata: ad.AnnData, *, key: str = UNS_KEY, ax: Axes | None = None) -> Axes:
    """Relative eigengap ``e_i / e_(i+1) - 1`` of exact PCA per component (log scale): where it is near zero,
    the directions of that cluster of eigenvalues are not identifiable one by one.

    Parameters and the return value are those of :func:`rlae_sc.pl.variance_ratio`.
    """
    ref = _uns(adata, key)["reference_pca"]
    ax = new_axes(ax, (6, 2.4))
    i = np.arange(1, len(ref["eigengaps"]) + 1)
    ax.semilogy(i, ref["eigengaps"] - 1, "s-", ms=3, color="C2")
    ax.set_xlabel("component i")
    ax.set_ylabel("relative eigengap\ne_i / e_(i+1) - 1")
    return ax


@styled
def shrinkage(adata: ad.AnnData, *, key: str = UNS_KEY, ax: Axes | None = None) -> Axes:
    """Decoder singular values against ``e_i / lambda`` with the theory curve ``sqrt(max(0, 1 - lambda / e))``.

    Parameters and the return value are those of :func:`rlae_sc.pl.variance_ratio`.
    """
    u = _uns(adata, key)
    ax = new_axes(ax, (6, 3.4))
    ratio = u["reference_pca"]["eigenvalues"] / u["lambda"]
    x = np.logspace(np.log10(min(ratio.min(), 1) * 0.5), np.log10(ratio.max() * 2), 300)
    ax.plot(x, np.sqrt(np.clip(1 - 1 / x, 0, None)), color="0.3", label="theory: sqrt(max(0, 1 - lam/e))")
    ax.plot(ratio, u["singular_values"], "o", ms=4, color="C3", label="decoder singular values s_i")
    ax.set_xscale("log")
    ax.set_xlabel("e_i / lambda  (exact eigenvalue of C over lambda, both sums over cells)")
    ax.set_ylabel("singular value")
    ax.set_title(f"Shrinkage of the decoder (lambda = {u['lambda']:.4g})")
    ax.legend(frameon=False, loc="lower right")
    return ax


@styled
def training(
    adata: ad.AnnData, *, metric: str = "transpose_distance", key: str = UNS_KEY, ax: Axes | None = None
) -> Axes:
    """One column of the training history against iterations.

    Parameters
    ----------
    adata
        Annotated by :func:`rlae_sc.tl.rlae`.
    metric
        A column that the trace holds: ``"loss"`` (linear scale), or the
        dimensionless ``"transpose_distance"``, ``"subspace_distance"`` (traced with
        ``trace_metrics``) and ``"readout_change"`` (default solver) on a log scale (floor 1e-16).
    key, ax
        As in :func:`rlae_sc.pl.variance_ratio`, which returns the axes as this does.
    """
    trace = _uns(adata, key)["trace"]
    if metric not in TRAINING_METRICS or metric not in trace:
        traced = [name for name in TRAINING_METRICS if name in trace]
        raise ValueError(f"the trace holds no {metric!r}; use one of {', '.join(traced)}")
    label, logy = TRAINING_METRICS[metric]
    ax = new_axes(ax, (4, 3))
    values = np.asarray(trace[metric])
    ax.plot(trace["iteration"], np.maximum(values, 1e-16) if logy else values, ".-", ms=3)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_title(label, fontsize=9)
    return ax


@styled
def mode_strengths(adata: ad.AnnData, *, n_modes: int = 10, key: str = UNS_KEY, ax: Axes | None = None) -> Axes:
    """Strength ``u_i^T W2 W1 u_i`` of the first principal modes during training, with each mode's fixed point
    ``1 - lambda / e_i`` (dashed; Saxe et al.'s analysis, ``rlae_sc.lae.theory.mode_fixed_point``).

    Parameters
    ----------
    adata
        Annotated by :func:`rlae_sc.tl.rlae` trained with ``trace_metrics=True`` (the default), whose trace
        holds ``strength_1``, ``strength_2``, ...
    n_modes
        How many modes to draw, from the largest eigenvalue down.
    key, ax
        As in :func:`rlae_sc.pl.variance_ratio`, which returns the axes as this does.
    """
    u = _uns(adata, key)
    trace = u["trace"]
    if "strength_1" not in trace:
        raise ValueError("the trace holds no mode strengths: train with trace_metrics=True")
    e = np.asarray(u["reference_pca"]["eigenvalues"])[:n_modes]
    fixed = mode_fixed_point(e, u["lambda"])
    ax = new_axes(ax, (6, 3.4))
    colors = mpl.colormaps["viridis"](np.linspace(0, 0.9, len(e)))
    for i, color in enumerate(colors):
        ax.plot(trace["iteration"], trace[f"strength_{i + 1}"], ".-", ms=3, lw=0.8, color=color, label=f"mode {i + 1}")
        ax.axhline(fixed[i], ls="--", lw=0.7, color=color)
    ax.set_xlabel("iteration")
    ax.set_ylabel("mode strength u_i^T W2 W1 u_i")
    ax.set_title("Mode strengths (dashed: 1 - lambda / e_i)")
    ax.legend(frameon=False, fontsize=7, ncol=2)
    return ax


def _scatter_categories(ax: Axes, xy: np.ndarray, values, title: str) -> None:
    values = values.astype(str)
    cats = sorted(values.unique(), key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0, c))
    cmap = mpl.colormaps["tab20" if len(cats) > 10 else "tab10"]
    colors = [cmap(j % cmap.N) for j in range(len(cats))]
    if len(values) >= RASTER_MIN_CELLS:
        codes = pd.Categorical(values, categories=cats).codes
        image, extent = _category_raster(xy, codes, colors)
        ax.imshow(image, extent=extent, origin="lower", interpolation="nearest", aspect="auto")
        for cat, color in zip(cats, colors, strict=True):
            ax.scatter([], [], s=12, color=color, label=f"{cat} ({int((values == cat).sum())})")
    else:
        size = max(2, min(12, 20000 / len(values)))
        for cat, color in zip(cats, colors, strict=True):
            sel = (values == cat).to_numpy()
            ax.scatter(xy[sel, 0], xy[sel, 1], s=size, color=color, label=f"{cat} ({sel.sum()})", lw=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title(title, fontsize=9)
    ax.legend(frameon=False, fontsize=7, markerscale=2, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3)


def _category_raster(xy: np.ndarray, codes: np.ndarray, colors: list, *, size: int = 400) -> tuple[np.ndarray, tuple]:
    """An RGBA image (size x size) of many points (n x 2), and its extent in their coordinates: each pixel
    takes the mean colour of its points (``colors[codes]``), and its opacity grows with the logarithm of
    their number (density shading, as in datashader's categorical plots)."""
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    cell = np.clip(((xy - lo) / np.where(hi > lo, hi - lo, 1) * size).astype(np.int64), 0, size - 1)
    pixel = cell[:, 1] * size + cell[:, 0]
    rgb = np.asarray(colors)[:, :3][codes]
    count = np.bincount(pixel, minlength=size * size).astype(np.float64)
    image = np.zeros((size * size, 4))
    for channel in range(3):
        image[:, channel] = np.bincount(pixel, weights=rgb[:, channel], minlength=size * size) / np.maximum(count, 1)
    image[:, 3] = np.log1p(count) / np.log1p(count.max())
    image[count > 0, 3] = np.maximum(image[count > 0, 3], 0.25)
    return image.reshape(size, size, 4), (lo[0], hi[0], lo[1], hi[1])


@styled
def umap(adata: ad.AnnData, *, color: str = "leiden", ax: Axes | None = None) -> Axes:
    """UMAP (``obsm['X_umap']``) coloured by the categories of ``obs[color]``, drawn as a density-shaded raster
    from :data:`RASTER_MIN_CELLS` cells on; returns the axes."""
    ax = new_axes(ax, (4.8, 5.6))
    name = "Leiden cluster" if color == "leiden" else f"label ({color})"
    _scatter_categories(ax, adata.obsm["X_umap"], adata.obs[color], f"coloured by {name}")
    return ax


@styled
def top_genes(adata: ad.AnnData, *, direction: int = 0, n_genes: int = 10, ax: Axes | None = None) -> Axes:
    """The ``n_genes`` genes with the largest |loading| on direction ``direction`` (0-based) of
    ``varm['rlae_directions']``; returns the axes."""
    L = adata.varm[DIRECTIONS_KEY]
    ax = new_axes(ax, (3, 2.6))
    order = np.argsort(-np.abs(L[:, direction]))[:n_genes][::-1]
    ax.barh(range(len(order)), L[order, direction], color=np.where(L[order, direction] > 0, "C3", "C0"))
    ax.set_yticks(range(len(order)), np.asarray(adata.var_names)[order], fontsize=7)
    ax.set_title(f"direction {direction + 1}", fontsize=9)
    ax.axvline(0, color="0.5", lw=0.6)
    ax.set_xlabel("loading (unit vector)", fontsize=8)
    return ax


@styled
def mapped_umap(reference: ad.AnnData, query: ad.AnnData, *, ax: Axes | None = None) -> Axes:
    """Reference UMAP in grey with query cells on top, coloured by their transferred label; returns the axes."""
    ax = new_axes(ax, (6.2, 5.6))
    ref = reference.obsm["X_umap"]
    ax.scatter(ref[:, 0], ref[:, 1], s=3, color="0.85", lw=0, label=f"reference ({reference.n_obs})", rasterized=True)
    _scatter_categories(ax, query.obsm["X_umap"], query.obs["rlae_label"], "query cells placed in the reference UMAP")
    return ax


@styled
def confidence(query: ad.AnnData, *, ax: Axes | None = None) -> Axes:
    """Box plot of the label-transfer confidence per predicted label; returns the axes."""
    labels = query.obs["rlae_label"].astype(str)
    cats = sorted(labels.unique())
    ax = new_axes(ax, (6, 3.4))
    ax.boxplot([query.obs["rlae_label_confidence"][labels == c] for c in cats], tick_labels=cats)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("confidence (weight share, 0-1)")
    ax.set_xlabel("transferred label")
    ax.tick_params(axis="x", rotation=30)
    ax.set_title("Label transfer confidence")
    return ax


@styled
def confusion(query: ad.AnnData, truth_key: str, *, ax: Axes | None = None) -> Axes:
    """Counts of known labels ``obs[truth_key]`` (rows) against transferred labels (columns) as a heat map,
    each count written in its cell; returns the axes."""
    table = pd.crosstab(query.obs[truth_key].astype(str), query.obs["rlae_label"].astype(str))
    counts = table.to_numpy()
    ax = new_axes(ax, (1.2 + 0.7 * table.shape[1], 1.2 + 0.5 * table.shape[0]))
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=30, ha="right")
    ax.set_yticks(range(table.shape[0]), table.index)
    for (i, j), v in np.ndenumerate(counts):
        color = "white" if v > counts.max() / 2 else "black"
        ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color=color)
    ax.set_xlabel("transferred label")
    ax.set_ylabel(f"known label ({truth_key})")
    ax.set_title("Known vs transferred labels (cells)")
    return ax


@styled
def batch_composition(adata: ad.AnnData, batch_key: str, *, groupby: str = "leiden", ax: Axes | None = None) -> Axes:
    """Each cluster's (``obs[groupby]``) cells by batch (``obs[batch_key]``) as stacked bars of shares, with the
    cluster's cell count above its bar; returns the axes. A cluster of one batch among several is either a
    cell type that batch alone holds or a batch effect left in the embedding."""
    table = pd.crosstab(adata.obs[groupby].astype(str), adata.obs[batch_key].astype(str))
    order = sorted(table.index, key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0, c))
    table = table.loc[order]
    shares = table.to_numpy() / table.to_numpy().sum(axis=1, keepdims=True)
    ax = new_axes(ax, (1.5 + 0.35 * len(table), 3.6))
    cmap = mpl.colormaps["tab20" if table.shape[1] > 10 else "tab10"]
    bottom = np.zeros(len(table))
    for j, batch in enumerate(table.columns):
        ax.bar(range(len(table)), shares[:, j], bottom=bottom, color=cmap(j % cmap.N), label=batch, width=0.8)
        bottom += shares[:, j]
    for i, n in enumerate(table.to_numpy().sum(axis=1)):
        ax.text(i, 1.01, str(n), ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(range(len(table)), table.index)
    ax.set_ylim(0, 1.15)
    ax.set_xlabel(f"cluster ({groupby})")
    ax.set_ylabel("share of the cluster's cells")
    ax.set_title(f"Batches ({batch_key}) in each cluster", fontsize=9)
    ax.legend(frameon=False, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=4)
    return ax


@styled
def qc_by_batch(adata: ad.AnnData, batch_key: str, *, metric: str = "n_genes", ax: Axes | None = None) -> Axes:
    """The distribution of a per-cell QC metric (``obs[metric]``: ``n_genes``, ``total_counts`` or ``pct_mito``)
    in each batch, as box plots (log scale for counts); returns the axes."""
    groups = adata.obs.groupby(adata.obs[batch_key].astype(str), observed=True)[metric]
    names = list(groups.groups)
    ax = new_axes(ax, (1.5 + 0.5 * len(names), 3.2))
    ax.boxplot([groups.get_group(name).dropna().to_numpy() for name in names], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
    if metric != "pct_mito":
        ax.set_yscale("log")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by batch", fontsize=9)
    return ax


@styled
def qc_histogram(
    adata: ad.AnnData, *, metric: str = "n_genes", threshold: float | None = None, ax: Axes | None = None
) -> Axes:
    """Histogram of a per-cell QC metric (``obs[metric]``), log-spaced bins for counts, with ``threshold`` as a
    dashed line when given; returns the axes."""
    values = adata.obs[metric].dropna().to_numpy(dtype=float)
    ax = new_axes(ax, (3.6, 3.2))
    if metric == "pct_mito":
        bins = np.linspace(0, max(values.max(), threshold or 0, 1e-9), 50)
    else:
        bins = np.geomspace(max(values.min(), 1), max(values.max(), 2), 50)
        ax.set_xscale("log")
    ax.hist(values, bins=bins, color="0.4")
    if threshold is not None:
        ax.axvline(threshold, color="C3", ls="--", lw=1, label=f"threshold {threshold:g}")
        ax.legend(frameon=False, fontsize=7)
    ax.set_xlabel(metric)
    ax.set_ylabel("cells")
    return ax


@styled
def dotplot(summary: dict, *, ax: Axes | None = None) -> Axes:
    """A dot plot of marker genes (:func:`rlae_sc.markers.marker_summary`: ``genes``, ``groups``, ``mean``,
    ``frac``): one row per group, one column per gene, dot area the fraction of the group's cells expressing
    the gene, colour its mean log-normalised value; returns the axes."""
    genes, groups = list(summary["genes"]), list(summary["groups"])
    mean, frac = np.asarray(summary["mean"], dtype=float), np.asarray(summary["frac"], dtype=float)
    ax = new_axes(ax, (1.5 + 0.28 * len(genes), 1.2 + 0.3 * len(groups)))
    ax.figure.set_size_inches(2.2 + 0.28 * len(genes), 1.6 + 0.3 * len(groups))
    yy, xx = np.mgrid[: len(groups), : len(genes)]
    dots = ax.scatter(xx.ravel(), yy.ravel(), s=frac.ravel() * 120, c=mean.ravel(), cmap="Reds", edgecolors="0.5",
                      linewidths=0.3, vmin=0)  # fmt: skip
    ax.set_xticks(range(len(genes)), genes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(groups)), groups, fontsize=7)
    ax.set_xlim(-0.6, len(genes) - 0.4)
    ax.set_ylim(len(groups) - 0.4, -0.6)
    ax.set_ylabel("cluster")
    ax.figure.colorbar(dots, ax=ax, shrink=0.5, label="mean value")
    for share in (0.25, 0.5, 1.0):
        ax.scatter([], [], s=share * 120, color="0.6", label=f"{share:.0%}")
    ax.legend(frameon=False, fontsize=7, title="cells expressing", title_fontsize=7, loc="upper left",
              bbox_to_anchor=(1.15, 1.0))  # fmt: skip
    ax.set_title("Marker genes", fontsize=9)
    return ax
