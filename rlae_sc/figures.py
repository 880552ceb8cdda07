"""The papers' figures, reproduced: Kunin et al. (ICML 2019) figures 3-8, Bao et al.'s (NeurIPS 2020)
two comparisons of learning rules, the exact learning dynamics of Saxe, McClelland and Ganguli on the sum loss,
and learning without weight transport (Kunin et al. 2020).

Figures 3-6 use Kunin et al.'s synthetic data (20 x 20, singular values 1..20,
random orthogonal singular vectors, k = 10, lambda = 10); figures 7-8 and the
rule comparisons also run on single cells (scanpy's bundled ``pbmc68k_reduced``
through the project's preprocessing, unless another preprocessed file is given).
Each figure function returns ``(figure, caption, numbers)``: the caption states
the theory's prediction and the numbers this run measured.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402
import torch  # noqa: E402

from rlae_sc.io import write_json  # noqa: E402
from rlae_sc.lae import theory  # noqa: E402
from rlae_sc.lae.rules import train_rule  # noqa: E402
from rlae_sc.passes import scatter_matrix  # noqa: E402
from rlae_sc.preprocess import preprocess, trained_rows  # noqa: E402
from rlae_sc.report import write_page  # noqa: E402
from rlae_sc.simulate import bundled  # noqa: E402

LOSS_NAMES = ("unregularized", "product", "sum")
THEORY_CURVES = {"unregularized": "1", "product": "e/(e+lam)", "sum": "max(0, 1-lam/e)"}
COMPARED_RULES = {  # rule -> loss used in the comparison
    "gd": "nonuniform",
    "adam": "nonuniform",
    "rotation": "nonuniform",
    "gha": "nonuniform",
    "oja": "sum",
    "alternating": "sum",
    "tied_ridge": "sum",
}
AXIS_THRESHOLD = 1e-2
FIGURE_NAMES = (  # the files figures/<name>.png; workflow/rules/figures.smk lists the same names
    "kunin_fig3_transpose_distance",
    "kunin_fig4_heatmaps",
    "kunin_fig5_shrinkage",
    "kunin_fig6_unit_circle",
    "kunin_fig7_directions",
    "kunin_fig8_embeddings",
    "bao_rules_synthetic",
    "bao_rules_cells",
    "bao_iterations_vs_k",
    "saxe_mode_strengths",
    "weight_transport",
)
DYNAMICS_START = 1e-3  # each mode's singular value in W1 and W2 at the start of the dynamics runs: u(0) = 1e-6
SMALL_STEP = 0.01  # the dynamics figure's second run: this fraction of the figures' step, where the flow applies
TRANSPORT_RULES = {  # rule -> label in the weight-transport figure
    "gd": "backprop (gd)",
    "feedback_alignment": "feedback alignment",
    "kolen_pollack": "Kolen-Pollack",
    "weight_mirror": "weight mirror",
}
TRANSPORT_TOP = 5  # alignment in the weight-transport figure: min |cos| over the top 5 directions


def paper_matrix(seed: int = 0) -> np.ndarray:
    """Kunin et al.'s data: 20 x 20 with singular values 20, 19, ..., 1 and random orthogonal singular vectors."""
    U = scipy.stats.ortho_group.rvs(20, random_state=seed)
    V = scipy.stats.ortho_group.rvs(20, random_state=seed + 1)
    return U @ np.diag(np.arange(20, 0, -1.0)) @ V.T


def cells_matrix(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """A preprocessed single-cell matrix (n x m, centred), its labels, and its name.

    Without ``path``: scanpy's bundled ``pbmc68k_reduced`` through :func:`rlae_sc.preprocess`
    (log-normalised input, labels ``bulk_labels``). With ``path``: a ``preprocessed.h5ad``
    written by ``rlae-sc preprocess`` (labels from its first categorical obs column, if any).
    """
    if path is None:
        pre, _ = preprocess(bundled("pbmc68k_reduced"), input_kind="log_normalized", min_genes=50)
        return pre.X.astype(np.float64), pre.obs["bulk_labels"].astype(str).to_numpy(), "pbmc68k_reduced"
    pre = ad.read_h5ad(path)
    cats = [c for c in pre.obs.columns if str(pre.obs[c].dtype) == "category"]
    labels = pre.obs[cats[0]].astype(str).to_numpy() if cats else np.full(pre.n_obs, "cells")
    return trained_rows(pre).read(0, pre.n_obs).astype(np.float64), labels, Path(path).parent.name


def _losses_on(C: np.ndarray, k: int, lam: float, n_iter: int, seed: int = 0, tilt: float = 1.0) -> dict:
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


def fig3_transpose_distance(fits: dict) -> tuple[plt.Figure, str, dict]:
    fig, ax = plt.subplots(figsize=(6, 3.6))
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


def fig4_heatmaps(fits: dict, U: np.ndarray) -> tuple[plt.Figure, str, dict]:
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
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


def fig5_shrinkage(C: np.ndarray, e: np.ndarray, k: int = 10, n_iter: int = 3000) -> tuple[plt.Figure, str, dict]:
    lams = [(2 * j + 1) ** 2 for j in range(11)]  # 1, 9, 25, ..., 441
    Ct = torch.from_numpy(C)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), sharey=True)
    grid = np.linspace(1, e.max() * 1.05, 400)
    errors = {loss: 0.0 for loss in LOSS_NAMES}
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(lams)))
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


def fig6_unit_circle(
    C: np.ndarray, U: np.ndarray, lam: float = 10.0, n_iter: int = 20000
) -> tuple[plt.Figure, str, dict]:
    fits = _losses_on(C, 2, lam, n_iter, seed=3, tilt=2.0)
    U2 = U[:, :2]
    t = np.linspace(0, 2 * np.pi, 200)
    circle = np.vstack([np.cos(t), np.sin(t)])
    fig, axes = plt.subplots(3, 3, figsize=(8, 8))
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


def fig7_directions(X: np.ndarray, name: str, k: int = 10, n_iter: int = 2000) -> tuple[plt.Figure, str, dict, object]:
    C = scatter_matrix(X)
    e, U = theory.exact_pca(C, k + 1)
    lam = 0.3 * e[k - 1]
    fit = train_rule("tied_ridge", k=k, lam=lam, C=torch.from_numpy(C), n_iter=n_iter, trace_every=100)
    P, _, _ = theory.decoder_directions(fit.decoder, lam)
    cos = theory.alignment(P, U[:, :k])
    gaps = theory.eigengaps(e)
    fig, axes = plt.subplots(3, 3, figsize=(8.4, 8))
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
) -> tuple[plt.Figure, str, dict]:
    lae, pca = X @ P[:, :2], X @ U[:, :2]
    lae = lae * np.sign(np.sum(lae * pca, axis=0))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    cats = sorted(set(labels))
    cmap = plt.get_cmap("tab20" if len(cats) > 10 else "tab10")
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


def _nonuniform(e: np.ndarray, k: int) -> np.ndarray:
    """Increasing per-unit lambdas below e_k: ``e_k x linspace(0.1, 0.5, k)``."""
    return e[k - 1] * np.linspace(0.1, 0.5, k)


def _rule_lambda(rule: str, e: np.ndarray, k: int):
    return _nonuniform(e, k) if COMPARED_RULES[rule] == "nonuniform" else 0.3 * e[k - 1]


def bao_rules(C: np.ndarray, k: int, name: str, n_iter: int) -> tuple[plt.Figure, str, dict]:
    e, _ = theory.exact_pca(C, k)
    Ct = torch.from_numpy(C)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    final = {}
    for rule, loss in COMPARED_RULES.items():
        steps = min(n_iter, 100) if rule == "alternating" else n_iter
        fit = train_rule(
            rule,
            k=k,
            lam=_rule_lambda(rule, e, k),
            C=Ct,
            loss=loss,
            n_iter=steps,
            trace_every=max(1, steps // 150),
            seed=1,
        )
        it = np.maximum(fit.trace["iteration"], 1)
        label = f"{rule} ({loss})"
        a1.loglog(it, np.maximum(fit.trace["axis_alignment"], 1e-16), label=label)
        a2.loglog(it, np.maximum(fit.trace["subspace_distance"], 1e-16), label=label)
        final[rule] = (fit.trace["axis_alignment"][-1], fit.trace["subspace_distance"][-1])
    a1.set_ylabel("axis alignment (Bao)")
    a2.set_ylabel("subspace distance")
    for ax in (a1, a2):
        ax.set_xlabel("iteration")
    a2.legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.suptitle(f"Learning rules on {name} (k = {k})", fontsize=10)
    fig.tight_layout()
    caption = (
        f"Axis alignment (mean 1 - max cos^2 between principal directions and decoder columns) and subspace distance "
        f"against iterations for each rule on {name}, k = {k}; non-uniform lambda_i = e_k x linspace(0.1, 0.5) for "
        "GD, Adam, rotation-augmented GD and GHA, uniform 0.3 e_k for Oja, alternating and tied ridge updates. "
        "Theory (Bao et al.): every rule finds the subspace quickly; only ordered (non-uniform or GHA) rules align "
        "the columns with the axes, plain GD slowly, the rotation-augmented gradient fast; uniform rules leave the "
        "columns rotated. Measured final axis alignment: "
        + ", ".join(f"{r} {a:.1e}" for r, (a, _) in final.items())
        + "."
    )
    return fig, caption, {f"bao_{name}_axis_{r}": a for r, (a, _) in final.items()}


def iterations_to_threshold(C: np.ndarray, ks: list[int], n_iter: int) -> dict[str, list[float]]:
    """Iterations until axis alignment <= ``AXIS_THRESHOLD`` for GD, rotation-augmented GD and GHA.

    NaN where the threshold is not reached within ``n_iter``.
    """
    Ct = torch.from_numpy(C)
    out: dict[str, list[float]] = {}
    for rule in ("gd", "rotation", "gha"):
        for k in ks:
            e, _ = theory.exact_pca(C, k)
            fit = train_rule(
                rule, k=k, lam=_nonuniform(e, k), C=Ct, loss="nonuniform", n_iter=n_iter, trace_every=10, seed=1
            )
            axis = np.asarray(fit.trace["axis_alignment"])
            hit = np.flatnonzero(axis <= AXIS_THRESHOLD)
            out.setdefault(rule, []).append(float(fit.trace["iteration"][hit[0]]) if hit.size else float("nan"))
    return out


def bao_iterations_vs_k(results: dict[str, dict], ks: list[int], n_iter: int) -> tuple[plt.Figure, str, dict]:
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    numbers = {}
    for ax, (name, res) in zip(axes[0], results.items()):
        for rule, its in res.items():
            its = np.asarray(its)
            ax.plot(ks, np.where(np.isnan(its), n_iter, its), "o-", label=rule)
            ax.plot(np.asarray(ks)[np.isnan(its)], np.full(np.isnan(its).sum(), n_iter), "x", color="k")
            numbers.update({f"bao_{name}_{rule}_k{k}": v for k, v in zip(ks, its)})
        ax.set_yscale("log")
        ax.set_xlabel("latent units k")
        ax.set_ylabel(f"iterations to axis alignment <= {AXIS_THRESHOLD:g}")
        ax.set_title(name, fontsize=9)
        ax.legend(frameon=False, fontsize=8)
    fig.suptitle("Iterations to align the decoder's columns with the principal axes", fontsize=10)
    fig.tight_layout()
    caption = (
        f"Iterations until axis alignment falls to {AXIS_THRESHOLD:g} (x: not reached within {n_iter}) against k, "
        "with non-uniform lambda. Theory (Bao et al.): plain gradient descent slows down as k grows (the rotation "
        "inside the subspace is ill-conditioned); the rotation-augmented gradient removes most of that slowdown; GHA "
        "is ordered by construction."
    )
    return fig, caption, numbers


def mode_dynamics(C: np.ndarray, *, k: int, lam: float, lr: float, n_iter: int, trace_every: int = 1) -> dict:
    """Gradient descent on the sum loss from a small aligned, balanced start; measured and predicted mode strengths.

    The start is ``W2 = DYNAMICS_START U_k O``, ``W1 = W2^T`` (``U_k`` the exact top-k
    directions of ``C`` (m x m), O a random k x k rotation). Returns a dict with
    ``iteration`` (T,), ``measured`` (T x k, :func:`rlae_sc.lae.theory.mode_strengths` from
    the trace), ``steps`` (the exact discrete-time solution) and ``flow`` (the gradient-flow
    sigmoid at ``t = lr x iteration``), ``half`` (first traced iteration at half the fixed
    point, per mode), ``e`` (k,) and ``u_star`` (k,). ``lam`` and ``lr`` are in the rules' units.
    """
    e, U = theory.exact_pca(C, k)
    W2 = DYNAMICS_START * U @ scipy.stats.ortho_group.rvs(k, random_state=2)
    fit = train_rule(
        "gd",
        k=k,
        lam=lam,
        C=torch.from_numpy(C),
        lr=lr,
        n_iter=n_iter,
        trace_every=trace_every,
        init=(torch.from_numpy(W2.T.copy()), torch.from_numpy(W2)),
    )
    it = np.asarray(fit.trace["iteration"])
    u = np.column_stack([fit.trace[f"strength_{i + 1}"] for i in range(k)])
    u_star = theory.mode_fixed_point(e, lam)
    return {
        "iteration": it,
        "measured": u,
        "steps": theory.mode_strength_steps(n_iter, e=e, lam=lam, lr=lr, u0=u[0])[it.astype(int)],
        "flow": theory.mode_strength_flow(lr * it, e=e, lam=lam, u0=u[0]),
        "half": theory.half_way_iterations(it, u, u_star),
        "e": e,
        "u_star": u_star,
    }


def _plot_strengths(ax, run: dict, title: str) -> None:
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, run["measured"].shape[1]))
    it = run["iteration"]
    for i, color in enumerate(colors):
        ax.plot(it, run["measured"][:, i], "o", ms=2.2, color=color)
        ax.plot(it, run["steps"][:, i], "-", lw=0.9, color=color)
        ax.plot(it, run["flow"][:, i], "--", lw=0.7, color=color)
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("gradient-descent iteration")


def saxe_mode_strengths(runs: dict[str, dict], names: dict[str, str]) -> tuple[plt.Figure, str, dict]:
    """Figure of :func:`mode_dynamics` runs: ``runs`` has keys ``synthetic``, ``small_step`` and ``cells``."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9), sharey=True)
    dev = {key: float(np.max(np.abs(run["measured"] - run["steps"]))) for key, run in runs.items()}
    flow = {key: float(np.max(np.abs(run["measured"] - run["flow"]))) for key, run in runs.items()}
    for ax, key in zip(axes, ("synthetic", "small_step", "cells")):
        worst = f"worst |measured - discrete| {dev[key]:.1e}\nworst |measured - sigmoid| {flow[key]:.3f}"
        _plot_strengths(ax, runs[key], f"{names[key]}\n{worst}")
    axes[0].set_ylabel("mode strength u_i = u_i^T W2 W1 u_i")
    viridis = plt.get_cmap("viridis")
    handles = [
        plt.Line2D([], [], color="0.3", ls="", marker="o", ms=3, label="measured"),
        plt.Line2D([], [], color="0.3", ls="-", label="exact discrete-time solution"),
        plt.Line2D([], [], color="0.3", ls="--", label="gradient-flow sigmoid"),
        plt.Line2D([], [], color=viridis(0.0), label="mode 1 (largest e)"),
        plt.Line2D([], [], color=viridis(0.9), label="mode 10"),
    ]
    axes[2].legend(handles=handles, frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.suptitle("Exact learning dynamics: each principal mode rises along its own curve", fontsize=10)
    fig.tight_layout()
    order = {key: bool(np.all(np.diff(run["half"]) > 0)) for key, run in runs.items()}
    halves = {key: ", ".join(f"{h:g}" for h in run["half"]) for key, run in runs.items()}
    caption = (
        "What it shows: gradient descent learns the principal modes one at a time, the largest first, each along "
        "an S-shaped curve that theory predicts exactly. Gradient descent on the sum loss (k = 10) from a small "
        "balanced start aligned with the principal directions (each mode's singular value "
        f"{DYNAMICS_START:g} in encoder and decoder, so strength u_i(0) = 1e-6). Points: the measured strength of "
        "mode i, u_i^T W2 W1 u_i with u_i the exact principal direction. Dashed: the closed form of gradient flow "
        "(Saxe, McClelland, Ganguli, here for the sum loss in the rules' units), the logistic curve "
        "u_i(t) = u*_i / (1 + (u*_i/u_i(0) - 1) exp(-r_i t)) with fixed point u*_i = 1 - lambda/e_i, rate "
        "r_i = 4 (e_i - lambda) and t = step x iterations. Solid: the exact solution for a finite step, the "
        "recursion u <- u (1 + 2 step (e_i - lambda - e_i u))^2, which rises later than the sigmoid and, at the "
        "figures' step 0.5/(e_1 + lambda), overshoots and rings around u*_i for the top modes. "
        f"Left: Kunin et al.'s 20 x 20 matrix, lambda = 10, the figures' step; measured worst deviation from the "
        f"discrete solution {dev['synthetic']:.1e} over the whole run (from the sigmoid {flow['synthetic']:.2f}). "
        f"Middle: the same at {SMALL_STEP:g} x that step, where the sigmoid itself holds: worst deviation "
        f"{flow['small_step']:.3f}. Right: {names['cells']}, lambda = 0.3 e_k, the figures' step: worst deviation "
        f"from the discrete solution {dev['cells']:.1e} (from the sigmoid {flow['cells']:.2f}). Learning order: the "
        f"iterations at which modes 1-10 first reach half their fixed point are {halves['synthetic']} (20 x 20), "
        f"{halves['small_step']} (small step, traced every 20) and {halves['cells']} ({names['cells']}, traced "
        "every 2): "
        + (
            "strictly increasing in every run, so modes are learned in decreasing eigenvalue order."
            if all(order.values())
            else "NOT strictly increasing in every run."
        )
    )
    numbers = {f"saxe_{key}_max_dev_steps": v for key, v in dev.items()}
    numbers.update({f"saxe_{key}_max_dev_flow": v for key, v in flow.items()})
    numbers.update({f"saxe_{key}_ordered": float(v) for key, v in order.items()})
    for key, run in runs.items():
        numbers.update({f"saxe_{key}_half_iteration_{i + 1}": float(h) for i, h in enumerate(run["half"])})
    return fig, caption, numbers


def dynamics_runs(C: np.ndarray, Cc: np.ndarray) -> dict[str, dict]:
    """The three runs of :func:`saxe_mode_strengths`: the 20 x 20 matrix ``C`` (lambda = 10) at the figures' step
    and at ``SMALL_STEP`` of it, and the cells' ``Cc`` (lambda = 0.3 e_k) at the figures' step."""
    e = theory.exact_pca(C, 1)[0][0]
    ec = theory.exact_pca(Cc, 10)[0]
    lam_c = 0.3 * ec[-1]
    return {
        "synthetic": mode_dynamics(C, k=10, lam=10.0, lr=0.5 / (e + 10.0), n_iter=60),
        "small_step": mode_dynamics(
            C, k=10, lam=10.0, lr=SMALL_STEP * 0.5 / (e + 10.0), n_iter=int(40 / SMALL_STEP), trace_every=20
        ),
        "cells": mode_dynamics(Cc, k=10, lam=lam_c, lr=0.5 / (ec[0] + lam_c), n_iter=300, trace_every=2),
    }


def transport_runs(C: np.ndarray, *, k: int, lam: float, n_iter: int) -> dict[tuple[str, bool], dict]:
    """Each rule of ``TRANSPORT_RULES`` with weight decay ``lam`` and without (lam = 0), from one random start.

    All runs use the step ``0.2 / (e_1 + lam)`` (the feedback rules' default) on ``C`` (m x m).
    Returns the traces, keyed by ``(rule, decayed)``.
    """
    e1 = theory.exact_pca(C, 1)[0][0]
    Ct = torch.from_numpy(C)
    return {
        (rule, decay > 0): train_rule(
            rule, k=k, lam=decay, C=Ct, lr=0.2 / (e1 + lam), n_iter=n_iter, trace_every=max(1, n_iter // 150), seed=1
        ).trace
        for rule in TRANSPORT_RULES
        for decay in (lam, 0.0)
    }


def _top_cos(trace: dict) -> np.ndarray:
    return np.min([trace[f"cos_{i + 1}"] for i in range(TRANSPORT_TOP)], axis=0)


def _transport_numbers(name: str, runs: dict) -> dict:
    numbers = {}
    for (rule, decayed), trace in runs.items():
        key = f"transport_{name}_{rule}_{'decay' if decayed else 'no_decay'}"
        numbers[f"{key}_top{TRANSPORT_TOP}_cos"] = float(_top_cos(trace)[-1])
        numbers[f"{key}_transpose_distance"] = trace["transpose_distance"][-1]
        if "feedback_distance" in trace:
            numbers[f"{key}_feedback_distance"] = trace["feedback_distance"][-1]
    return numbers


def _transport_summary(key: str, name: str, numbers: dict) -> str:
    n = {k.removeprefix(f"transport_{key}_"): v for k, v in numbers.items() if k.startswith(f"transport_{key}_")}
    return (
        f"{name}: Kolen-Pollack with decay ||B - W2^T||/||W2|| {n['kolen_pollack_decay_feedback_distance']:.1e}, "
        f"top-5 |cos| {n['kolen_pollack_decay_top5_cos']:.6f} (backprop {n['gd_decay_top5_cos']:.6f}), without decay "
        f"{n['kolen_pollack_no_decay_feedback_distance']:.2f}; feedback alignment without decay "
        f"{n['feedback_alignment_no_decay_feedback_distance']:.2f} (top-5 |cos| "
        f"{n['feedback_alignment_no_decay_top5_cos']:.2f}), with decay "
        f"{n['feedback_alignment_decay_feedback_distance']:.2f}; "
        f"weight mirror with decay {n['weight_mirror_decay_feedback_distance']:.1e}, without "
        f"{n['weight_mirror_no_decay_feedback_distance']:.1e} (top-5 |cos| {n['weight_mirror_no_decay_top5_cos']:.2f})"
    )


def weight_transport(runs: dict[str, dict], names: dict[str, str]) -> tuple[plt.Figure, str, dict]:
    """Figure of :func:`transport_runs` for each data set in ``runs`` (key -> runs; ``names``: key -> title)."""
    fig, axes = plt.subplots(len(runs), 3, figsize=(13, 3.6 * len(runs)), squeeze=False)
    labels = ("||B - W2^T|| / ||W2||", "||W1 - W2^T|| / ||W2||", f"1 - min top-{TRANSPORT_TOP} |cos| with PCA")
    numbers = {}
    for row, (key, res) in zip(axes, runs.items()):
        for (rule, decayed), trace in res.items():
            style = dict(color=f"C{list(TRANSPORT_RULES).index(rule)}", ls="-" if decayed else "--", lw=1.0)
            it = np.maximum(trace["iteration"], 1)
            if "feedback_distance" in trace:
                row[0].semilogy(it, np.maximum(trace["feedback_distance"], 1e-17), **style)
            row[1].semilogy(it, np.maximum(trace["transpose_distance"], 1e-17), **style)
            row[2].semilogy(it, np.maximum(1 - _top_cos(trace), 1e-17), **style)
        for ax, label in zip(row, labels):
            ax.set_ylabel(label, fontsize=8)
            ax.set_xlabel("iteration")
            ax.set_title(names[key], fontsize=9)
        numbers.update(_transport_numbers(key, res))
    handles = [plt.Line2D([], [], color=f"C{i}", label=label) for i, label in enumerate(TRANSPORT_RULES.values())]
    handles += [plt.Line2D([], [], color="k", ls=ls, label=lab) for ls, lab in (("-", "weight decay"), ("--", "none"))]
    axes[0, 2].legend(handles=handles, frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.suptitle("Learning without weight transport: feedback B in place of W2^T", fontsize=10)
    fig.tight_layout()
    caption = (
        "What it shows: the autoencoder can learn PCA without its backward pass reading the forward weights, if "
        "the backward copy B gets the decoder's updates and the same weight decay (Kolen-Pollack): decay alone "
        "makes the copy equal the transpose; a fixed random copy (feedback alignment) never does. "
        "The encoder's update needs the decoder read backwards (W2^T); the rules here send the error back through a "
        "separate matrix B instead: fixed and random (feedback alignment), given the decoder's own update and "
        "weight decay (Kolen-Pollack), or learned from the decoder's response to noise in the hidden units (weight "
        "mirror). Backprop uses W2^T itself (B - W2^T = 0, not drawn). Solid: sum loss with weight decay "
        "(lambda = 10 on the 20 x 20 matrix, 0.3 e_k on cells); dashed: without (lambda = 0); k = 10, same start "
        "and step for every rule. Theory: with Kolen-Pollack B - W2^T shrinks by exactly 1 - 2 step lambda per step, "
        "so weight decay alone makes the two copies agree, and the autoencoder then is the sum-regularized one and "
        "learns the principal directions; without decay the difference never shrinks; a fixed random B stays "
        "random. Measured at the end: " + "; ".join(_transport_summary(key, names[key], numbers) for key in runs) + "."
    )
    return fig, caption, numbers


def _in_table(key: str) -> bool:
    """The page's table: every number but the per-k iterations of Bao's figure and the per-mode half-way iterations."""
    return not (key.startswith("bao_") and "axis" not in key) and "half_iteration" not in key


def _entries(cells: str | Path | None, scale: float) -> list[tuple[str, plt.Figure, str, dict]]:
    """Every figure as ``(name, figure, caption, numbers)``, in ``FIGURE_NAMES`` order; ``scale`` shortens runs."""
    X = paper_matrix()
    C = X.T @ X
    e, U = theory.exact_pca(C, 10)
    fits = _losses_on(C, 10, 10.0, int(20000 * scale))
    Xc, labels, name = cells_matrix(cells)
    Cc = scatter_matrix(Xc)
    ks = [2, 4, 8, 16]
    synth = scipy.stats.ortho_group.rvs(40, random_state=5) @ np.diag(np.linspace(10, 1, 40))
    entries = [
        ("kunin_fig3_transpose_distance", *fig3_transpose_distance(fits)),
        ("kunin_fig4_heatmaps", *fig4_heatmaps(fits, U)),
        ("kunin_fig5_shrinkage", *fig5_shrinkage(C, e, n_iter=int(3000 * scale))),
        ("kunin_fig6_unit_circle", *fig6_unit_circle(C, theory.exact_pca(C, 2)[1], n_iter=int(20000 * scale))),
    ]
    fig7, cap7, num7, (P, Uc) = fig7_directions(Xc, name, n_iter=int(2000 * scale))
    entries.append(("kunin_fig7_directions", fig7, cap7, num7))
    entries.append(("kunin_fig8_embeddings", *fig8_embeddings(Xc, labels, name, P, Uc)))
    entries.append(("bao_rules_synthetic", *bao_rules(C, 10, "synthetic 20 x 20", int(3000 * scale))))
    entries.append(("bao_rules_cells", *bao_rules(Cc, 10, name, int(3000 * scale))))
    thr = {
        "synthetic 40 x 40": iterations_to_threshold(synth.T @ synth, ks, int(3000 * scale)),
        name: iterations_to_threshold(Cc, ks, int(3000 * scale)),
    }
    entries.append(("bao_iterations_vs_k", *bao_iterations_vs_k(thr, ks, int(3000 * scale))))
    dyn_names = {
        "synthetic": "20 x 20, the figures' step",
        "small_step": f"20 x 20, {SMALL_STEP:g} x the figures' step",
        "cells": f"{name}, the figures' step",
    }
    entries.append(("saxe_mode_strengths", *saxe_mode_strengths(dynamics_runs(C, Cc), dyn_names)))
    transport = {
        "synthetic": transport_runs(C, k=10, lam=10.0, n_iter=int(1000 * scale)),
        "cells": transport_runs(Cc, k=10, lam=0.3 * theory.exact_pca(Cc, 10)[0][-1], n_iter=int(1000 * scale)),
    }
    entries.append(
        ("weight_transport", *weight_transport(transport, {"synthetic": "synthetic 20 x 20", "cells": name}))
    )
    return entries


def make_figures(out_dir: str | Path, *, cells: str | Path | None = None, quick: bool = False) -> dict:
    """Compute every figure, write ``figures/*.png``, ``figures.html`` and ``figures.json`` under ``out_dir``.

    ``quick`` shortens every run (for tests); the published figures use the defaults.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # matrices of at most 765 x 765: on a busy machine extra threads cost 10-30x
    try:
        entries = _entries(cells, 0.1 if quick else 1.0)
    finally:
        torch.set_num_threads(threads)
    numbers = {}
    for _, _, _, num in entries:
        numbers.update({key: None if np.isnan(value) else value for key, value in num.items()})
    assert tuple(name for name, *_ in entries) == FIGURE_NAMES
    out_dir = Path(out_dir)
    write_page(
        out_dir,
        title="rlae-sc: the papers' figures reproduced",
        page="figures.html",
        intro="Kunin, Bloom, Goeva, Seed (ICML 2019), 'Loss landscapes of regularized linear autoencoders', "
        "figures 3-8; Bao, Lucas, Sachdeva, Grosse (NeurIPS 2020), 'Regularized linear autoencoders recover "
        "the principal components, eventually', comparisons of learning rules; the exact learning dynamics of "
        "Saxe, McClelland, Ganguli on the sum loss; learning without weight transport (Kunin, Nayebi, "
        "Sagastuy-Brena, Ganguli, Bloom, Yamins, ICML 2020, 'Two routes to scalable credit assignment without "
        "weight symmetry'). Every number in a caption comes from this run.",
        table=[(key, key, value) for key, value in numbers.items() if _in_table(key)],
        figures=[(fname, fig, cap) for fname, fig, cap, _ in entries],
    )
    write_json(numbers, out_dir / "figures.json")
    return numbers
