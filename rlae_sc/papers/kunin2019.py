"""Kunin, Bloom, Goeva, Seed (ICML 2019), 'Loss landscapes of regularized linear autoencoders': figures 3-8.

Figures 3-6 use their synthetic data (:func:`rlae_sc.papers.data.paper_matrix`, k = 10, lambda = 10);
figures 7-8 run on single cells. Each figure function returns ``(figure, caption, numbers)``.
"""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import torch
from matplotlib.figure import Figure

from rlae_sc.lae import theory
from rlae_sc.lae.rules import train_rule
from rlae_sc.products import scatter_matrix

LOSS_NAMES = ("unregularized", "product", "sum")
THEORY_CURVES = {"unregularized": "1", "product": "e/(e+lam)", "sum": "max(0, 1-lam/e)"}


def losses_on(C: np.ndarray, k: int, lam: float, n_iter: int, seed: int = 0, tilt: float = 1.0) -> dict:
    """GD from one random start on each of the three losses.

    ``tilt`` scales the start's latent units unevenly (encoder rows by ``tilt^(+-1)``,
    decoder columns inversely), so an unbalanced start is visible where the loss does not remove it.
    """
    init = train_rule("gd", k=k, lam=lam, C=torch.from_numpy(C), n_iter=0, seed=seed)
    scale = tilt ** np.linspace(1, -1, k)
    start = (torch.from_numpy(init.encoder * scale[:, None]), torch.from_numpy(init.decoder / scale))
    return {
        loss: train_rule(
            "gd",
            k=k,
            lam=0.0 if loss == "unregularized" else lam,
            C=torch.from_numpy(C),
            loss=loss,
            n_iter=n_iter,
            trace_every=max(1, n_iter // 200),
            init=start,
        )
        for loss in LOSS_NAMES
    }


def fig3_transpose_distance(fits: dict) -> tuple[Figure, str, dict]:
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    final = {}
    for loss, fit in fits.items():
        td2 = np.maximum(np.asarray(fit.trace["transpose_distance"]) ** 2, 1e-32)
        ax.semilogy(fit.trace["iteration"], td2, label=loss)
        final[loss] = float(fit.trace["transpose_distance"][-1])
    ax.set_xlabel("gradient-descent iteration")
    ax.set_ylabel("(||W1 - W2^T||_F / ||W2||_F)^2")
    ax.set_title("Fig. 3: distance between encoder and decoder transpose")
    ax.legend(frameon=False)
    fig.tight_layout()
    caption = (
        "Kunin et al. fig. 3 on their synthetic 20 x 20 matrix (k = 10, lambda = 10), gradient descent from one random "
        "start for each loss. Theory: only the sum-regularized loss forces W1 = W2^T at every critical point. "
        f"Measured transpose distance at the end: sum {final['sum']:.1e}, product {final['product']:.2f}, "
        f"unregularized {final['unregularized']:.2f}."
    )
    return fig, caption, {f"fig3_transpose_distance_{k}": v for k, v in final.items()}


def fig4_heatmaps(fits: dict, U: np.ndarray) -> tuple[Figure, str, dict]:
    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 3)
    diag = {}
    for ax, (loss, fit) in zip(axes, fits.items()):
        P = np.linalg.svd(fit.decoder @ fit.encoder)[0][:, : U.shape[1]]
        M = np.abs(U.T @ P)
        diag[loss] = float(np.diag(M).min())
        im = ax.imshow(M, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(f"{loss}\nmin diagonal {diag[loss]:.3f}", fontsize=9)
        ax.set_xlabel("singular vector j of W2 W1")
        ax.set_ylabel("principal direction i")
    fig.colorbar(im, ax=axes, shrink=0.8, label="|<u_i, v_j>|")
    fig.suptitle("Fig. 4: principal directions vs singular vectors of the global map", fontsize=10)
    caption = (
        "Inner products between the data's principal directions and the left singular vectors of the learned global "
        "map W2 W1. Theory: with any regularization (product or sum) the singular vectors of the global map are the "
        "principal directions (identity pattern); without it only the subspace is identified. Measured min |diagonal|: "
        + ", ".join(f"{k} {v:.3f}" for k, v in diag.items())
        + "."
    )
    return fig, caption, {f"fig4_min_diagonal_{k}": v for k, v in diag.items()}


def fig5_shrinkage(C: np.ndarray, e: np.ndarray, k: int = 10, n_iter: int = 3000) -> tuple[Figure, str, dict]:
    lams = [(2 * j + 1) ** 2 for j in range(11)]  # 1, 9, 25, ..., 441
    Ct = torch.from_numpy(C)
    fig = Figure(figsize=(11, 3.6))
    axes = fig.subplots(1, 3, sharey=True)
    grid = np.linspace(1, e.max() * 1.05, 400)
    errors = {loss: 0.0 for loss in LOSS_NAMES}
    colors = mpl.colormaps["viridis"](np.linspace(0, 0.9, len(lams)))
    for ax, loss in zip(axes, LOSS_NAMES):
        for lam, color in zip(lams if loss != "unregularized" else [0.0], colors):
            if loss == "sum":
                fit = train_rule("alternating", k=k, lam=lam, C=Ct, n_iter=300, trace_every=300)
            else:  # one unregularized run: give it the steps of all the product runs
                steps = n_iter * (len(lams) if loss == "unregularized" else 1)
                fit = train_rule("gd", k=k, lam=lam, C=Ct, loss=loss, n_iter=steps, trace_every=steps)
            s = np.linalg.svd(fit.decoder @ fit.encoder, compute_uv=False)[:k]
            theory_s = {"unregularized": np.ones(k), "product": e / (e + lam), "sum": np.clip(1 - lam / e, 0, None)}[
                loss
            ]
            errors[loss] = max(errors[loss], float(np.max(np.abs(np.sort(s)[::-1] - np.sort(theory_s)[::-1]))))
            ax.plot(e, np.sort(s)[::-1][: len(e)], "o", ms=3.5, color=color, label=f"lambda={lam:g}")
            curve = {
                "unregularized": np.ones_like(grid),
                "product": grid / (grid + lam),
                "sum": np.clip(1 - lam / grid, 0, None),
            }[loss]
            ax.plot(grid, curve, "-", lw=0.8, color=color)
        ax.set_title(
            f"{loss}: theory {THEORY_CURVES[loss]}",
            fontsize=9,
        )
        ax.set_xlabel("eigenvalue e_i of C")
    axes[0].set_ylabel("singular value of W2 W1")
    axes[1].legend(frameon=False, fontsize=6, ncol=2)
    fig.suptitle("Fig. 5: shrinkage of the global map's singular values", fontsize=10)
    fig.tight_layout()
    caption = (
        "Singular values of the learned global map W2 W1 (points) against the eigenvalues of C for lambda = 1, 9, "
        "25, ..., 441, with the theory curves (lines): 1 without regularization, e/(e+lambda) for the product loss, "
        "max(0, 1 - lambda/e) for the sum loss (units with e <= lambda collapse). Sum: exact alternating updates; "
        "product and unregularized: gradient descent. Measured largest distance from the curves: "
        + ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
        + "."
    )
    return fig, caption, {f"fig5_max_error_{k}": v for k, v in errors.items()}


def fig6_unit_circle(C: np.ndarray, U: np.ndarray, lam: float = 10.0, n_iter: int = 20000) -> tuple[Figure, str, dict]:
    fits = losses_on(C, 2, lam, n_iter, seed=3, tilt=2.0)
    U2 = U[:, :2]
    t = np.linspace(0, 2 * np.pi, 200)
    circle = np.vstack([np.cos(t), np.sin(t)])
    fig = Figure(figsize=(8, 8))
    axes = fig.subplots(3, 3)
    ratios = {}
    for j, (loss, fit) in enumerate(fits.items()):
        maps = {
            "decoder": U2.T @ fit.decoder,
            "encoder": (fit.encoder @ U2).T,
            "product": U2.T @ fit.decoder @ fit.encoder @ U2,
        }
        for i, (name, M) in enumerate(maps.items()):
            sv = np.linalg.svd(M, compute_uv=False)
            ratios[f"{loss}_{name}"] = float(sv[1] / sv[0])
            img = (M / sv[0]) @ circle
            ax = axes[i, j]
            ax.plot(circle[0], circle[1], color="0.8", lw=0.8)
            ax.plot(img[0], img[1], color="C3")
            ax.set_aspect("equal")
            ax.set_xlim(-1.1, 1.1)
            ax.set_ylim(-1.1, 1.1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{loss}: {name}\naxis ratio {sv[1] / sv[0]:.3f}", fontsize=8)
    fig.suptitle("Fig. 6: unit circle under the normalised maps (k = 2, top-2 principal plane)", fontsize=10)
    fig.tight_layout()
    caption = (
        "For k = 2, the image of the unit circle under the decoder and encoder restricted to the top-2 principal "
        "plane, and under their product, each divided by its largest singular value (grey: the unit circle); "
        "gradient descent from one unbalanced random start (latent units scaled by 2 and 1/2). "
        "Theory: at the sum-loss optimum W2 = U diag(sqrt(1 - lambda/e)) O, so encoder and decoder map the circle to "
        f"a near-circle (axis ratio sqrt((1-10/361)/(1-10/400)) = {np.sqrt((1 - 10 / 361) / (1 - 10 / 400)):.3f}); "
        "without the sum penalty the decoder is U_k A for an arbitrary invertible A, an ellipse. Measured decoder axis "
        "ratios: " + ", ".join(f"{loss} {ratios[f'{loss}_decoder']:.3f}" for loss in fits) + "."
    )
    return fig, caption, {f"fig6_axis_ratio_{k}": v for k, v in ratios.items()}


def fig7_directions(X: np.ndarray, name: str, k: int = 10, n_iter: int = 2000) -> tuple[Figure, str, dict, object]:
    C = scatter_matrix(X)
    e, U = theory.exact_pca(C, k + 1)
    lam = 0.3 * e[k - 1]
    fit = train_rule("tied_ridge", k=k, lam=lam, C=torch.from_numpy(C), n_iter=n_iter, trace_every=100)
    P, _, _ = theory.decoder_directions(fit.decoder, lam)
    cos = theory.alignment(P, U[:, :k])
    gaps = theory.eigengaps(e)
    fig = Figure(figsize=(8.4, 8))
    axes = fig.subplots(3, 3)
    for i, ax in enumerate(axes.ravel()):
        sign = np.sign(P[:, i] @ U[:, i]) or 1.0
        ax.plot(U[:, i], sign * P[:, i], ".", ms=2.5, color="C0")
        lim = np.abs(U[:, i]).max() * 1.1
        ax.plot([-lim, lim], [-lim, lim], color="0.6", lw=0.6)
        ax.set_title(f"direction {i + 1}: |cos| {cos[i]:.4f}\neigengap e_i/e_(i+1) {gaps[i]:.3f}", fontsize=8)
        ax.set_xlabel("PCA loading", fontsize=7)
        ax.set_ylabel("LAE loading", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"Fig. 7: the first nine learned directions against PCA's ({name}, one point per gene)", fontsize=10)
    fig.tight_layout()
    caption = (
        f"Gene loadings of the first nine left singular vectors of the decoder (tied ridge updates from a random "
        f"start, {n_iter} iterations, k = {k}, lambda = 0.3 e_k) against exact PCA of the same {X.shape[0]} x "
        f"{X.shape[1]} matrix; each point is a gene, the line is y = x. Theory: the decoder's singular vectors are "
        f"the principal directions. Measured |cos| for directions 1-9: min {cos[:9].min():.4f}; components with an "
        "eigengap near 1 converge last."
    )
    return fig, caption, {"fig7_min_abs_cos_top9": float(cos[:9].min())}, (P, U)


def fig8_embeddings(
    X: np.ndarray, labels: np.ndarray, name: str, P: np.ndarray, U: np.ndarray
) -> tuple[Figure, str, dict]:
    lae, pca = X @ P[:, :2], X @ U[:, :2]
    lae = lae * np.sign(np.sum(lae * pca, axis=0))
    fig = Figure(figsize=(10, 4.6))
    axes = fig.subplots(1, 2)
    cats = sorted(set(labels))
    cmap = mpl.colormaps["tab20" if len(cats) > 10 else "tab10"]
    for ax, (title, Y) in zip(axes, [("LAE (decoder's singular vectors)", lae), ("PCA (eigh)", pca)]):
        for j, c in enumerate(cats):
            sel = labels == c
            ax.scatter(Y[sel, 0], Y[sel, 1], s=6, color=cmap(j % cmap.N), label=c, lw=0)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("component 1 (score)")
        ax.set_ylabel("component 2 (score)")
    axes[1].legend(frameon=False, fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5))
    corr = [abs(np.corrcoef(lae[:, i], pca[:, i])[0, 1]) for i in range(2)]
    fig.suptitle(f"Fig. 8: 2-D embeddings of {name}, coloured by cell type", fontsize=10)
    fig.tight_layout()
    caption = (
        "Cells projected on the first two LAE directions (left) and the first two principal directions (right), "
        f"coloured by cell type ({name}). Theory: identical up to sign. Measured correlation of the scores: "
        f"{corr[0]:.5f} and {corr[1]:.5f}."
    )
    return fig, caption, {"fig8_score_correlation_min": float(min(corr))}
