"""One function per report figure; each takes the embedding AnnData and returns a matplotlib Figure."""

from __future__ import annotations

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from rlae_sc.keys import DIRECTIONS_KEY  # noqa: E402

plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.spines.top": False, "axes.spines.right": False})


def variance_ratio(adata: ad.AnnData) -> plt.Figure:
    """Variance ratio per component, LAE (from decoder singular values) beside exact PCA."""
    u = adata.uns["rlae"]
    i = np.arange(1, len(u["variance_ratio"]) + 1)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(i, u["reference_pca"]["variance_ratio"], "o", ms=7, mfc="none", color="0.3", label="exact PCA (eigh)")
    ax.plot(i, u["variance_ratio"], ".", ms=5, color="C3", label="LAE: lam / (1 - s_i^2) / tr(C)")
    ax.set_yscale("log")
    ax.set_xlabel("component i")
    ax.set_ylabel("fraction of total variance")
    ax.set_title("Variance ratio per component")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def alignment(adata: ad.AnnData) -> plt.Figure:
    """``1 - |cos(p_i, u_i)|`` per component (log scale) with the eigengap ``e_i / e_{i+1}`` beside it."""
    ref = adata.uns["rlae"]["reference_pca"]
    i = np.arange(1, len(ref["alignment"]) + 1)
    fig, (ax, gx) = plt.subplots(2, 1, figsize=(6, 4.6), sharex=True, height_ratios=[3, 2])
    ax.semilogy(i, np.maximum(1 - ref["alignment"], 1e-16), "o-", ms=3, color="C0")
    ax.axhline(1e-3, ls=":", color="0.5")
    ax.text(i[-1], 7e-4, "|cos| = 0.999", ha="right", va="top", color="0.4", fontsize=8)
    ax.set_ylabel("1 - |cos(LAE_i, PCA_i)|")
    ax.set_title("Per-component alignment with exact PCA (floor 1e-16)")
    gx.semilogy(i, ref["eigengaps"] - 1, "s-", ms=3, color="C2")
    gx.set_ylabel("relative eigengap\ne_i / e_(i+1) - 1")
    gx.set_xlabel("component i")
    fig.tight_layout()
    return fig


def singular_values(adata: ad.AnnData) -> plt.Figure:
    """Decoder singular values against ``e_i / lambda`` with the theory curve ``sqrt(max(0, 1 - lam/e))``."""
    u = adata.uns["rlae"]
    ratio = u["reference_pca"]["eigenvalues"] / u["lambda"]
    x = np.logspace(np.log10(min(ratio.min(), 1) * 0.5), np.log10(ratio.max() * 2), 300)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(x, np.sqrt(np.clip(1 - 1 / x, 0, None)), color="0.3", label="theory: sqrt(max(0, 1 - lam/e))")
    ax.plot(ratio, u["singular_values"], "o", ms=4, color="C3", label="decoder singular values s_i")
    ax.set_xscale("log")
    ax.set_xlabel("e_i / lambda  (exact eigenvalue of C over lambda, both sums over cells)")
    ax.set_ylabel("singular value")
    ax.set_title(f"Shrinkage of the decoder (lambda = {u['lambda']:.4g})")
    ax.legend(frameon=False, loc="lower right")
    fig.tight_layout()
    return fig


def training(adata: ad.AnnData) -> plt.Figure:
    """Training history against iterations (log scales): loss, transpose distance, and, where traced,
    the subspace distance to exact PCA and the read-out change of the default solver."""
    t = adata.uns["rlae"]["trace"]
    panels = [
        ("loss", "sum loss (units of C)", False),
        ("transpose_distance", "||W1 - W2^T|| / ||W2||", True),
        ("subspace_distance", "subspace distance to exact PCA", True),
        ("readout_change", "change of the top-k read-out", True),
    ]
    panels = [p for p in panels if p[0] in t]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3), squeeze=False)
    for ax, (key, label, logy) in zip(axes[0], panels):
        ax.plot(t["iteration"], np.maximum(t[key], 1e-16) if logy else t[key], ".-", ms=3)
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_title(label, fontsize=9)
    fig.suptitle("Training history", fontsize=10)
    fig.tight_layout()
    return fig


RASTER_MIN_CELLS = 50_000  # from this many points on, scatter plots are drawn as density-shaded rasters


def _scatter_categories(ax: plt.Axes, xy: np.ndarray, values, title: str) -> None:
    values = values.astype(str)
    cats = sorted(values.unique(), key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0, c))
    cmap = plt.get_cmap("tab20" if len(cats) > 10 else "tab10")
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


def umap(adata: ad.AnnData, label_key: str | None = None) -> plt.Figure:
    """UMAP of the LAE embedding coloured by Leiden cluster, and by the labels beside it when given."""
    keys = ["leiden"] + ([label_key] if label_key else [])
    fig, axes = plt.subplots(1, len(keys), figsize=(4.8 * len(keys), 5.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        name = "Leiden cluster" if key == "leiden" else f"label ({key})"
        _scatter_categories(ax, adata.obsm["X_umap"], adata.obs[key], f"coloured by {name}")
    fig.suptitle("UMAP of the LAE embedding", fontsize=10)
    fig.tight_layout()
    return fig


def top_genes(adata: ad.AnnData, *, n_directions: int = 6, n_genes: int = 10) -> plt.Figure:
    """Genes with the largest |loading| on each of the first directions."""
    L = adata.varm[DIRECTIONS_KEY]
    n_directions = min(n_directions, L.shape[1])
    ncol = 3
    nrow = int(np.ceil(n_directions / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(9, 2.6 * nrow), squeeze=False)
    names = np.asarray(adata.var_names)
    for d, ax in enumerate(axes.ravel()):
        if d >= n_directions:
            ax.axis("off")
            continue
        order = np.argsort(-np.abs(L[:, d]))[:n_genes][::-1]
        ax.barh(range(len(order)), L[order, d], color=np.where(L[order, d] > 0, "C3", "C0"))
        ax.set_yticks(range(len(order)), names[order], fontsize=7)
        ax.set_title(f"direction {d + 1}", fontsize=9)
        ax.axvline(0, color="0.5", lw=0.6)
        ax.set_xlabel("loading (unit vector)", fontsize=8)
    fig.suptitle("Top genes of the first principal directions", fontsize=10)
    fig.tight_layout()
    return fig


def mapped_umap(reference: ad.AnnData, query: ad.AnnData) -> plt.Figure:
    """Reference UMAP in grey with query cells on top, coloured by their transferred label."""
    fig, ax = plt.subplots(figsize=(6.2, 5.6))
    ref = reference.obsm["X_umap"]
    ax.scatter(ref[:, 0], ref[:, 1], s=3, color="0.85", lw=0, label=f"reference ({reference.n_obs})", rasterized=True)
    _scatter_categories(ax, query.obsm["X_umap"], query.obs["rlae_label"], "query cells placed in the reference UMAP")
    return fig


def confidence(query: ad.AnnData) -> plt.Figure:
    """Box plot of the label-transfer confidence per predicted label."""
    labels = query.obs["rlae_label"].astype(str)
    cats = sorted(labels.unique())
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.boxplot([query.obs["rlae_label_confidence"][labels == c] for c in cats], tick_labels=cats)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("confidence (weight share, 0-1)")
    ax.set_xlabel("transferred label")
    ax.tick_params(axis="x", rotation=30)
    ax.set_title("Label transfer confidence")
    fig.tight_layout()
    return fig


def confusion(query: ad.AnnData, truth_key: str) -> plt.Figure:
    """Counts of known labels (rows) against transferred labels (columns)."""
    import pandas as pd

    table = pd.crosstab(query.obs[truth_key].astype(str), query.obs["rlae_label"].astype(str))
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * table.shape[1], 1.2 + 0.5 * table.shape[0]))
    ax.imshow(table.to_numpy(), cmap="Blues")
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=30, ha="right")
    ax.set_yticks(range(table.shape[0]), table.index)
    for (i, j), v in np.ndenumerate(table.to_numpy()):
        ax.text(
            j,
            i,
            str(v),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if v > table.to_numpy().max() / 2 else "black",
        )
    ax.set_xlabel("transferred label")
    ax.set_ylabel(f"known label ({truth_key})")
    ax.set_title("Known vs transferred labels (cells)")
    fig.tight_layout()
    return fig
