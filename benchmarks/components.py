"""How many components: auto k (noise floor by parallel analysis) against k = 50 on the shared labelled sets.

For each labelled dataset in ../shared/data (skipped when absent): the default recipe in memory, then
``fit(n_components="auto")`` and ``fit(n_components=50)``; the 15-nearest-neighbour label agreement (share of
each labelled cell's 15 nearest cells, Euclidean in the embedding, that carry its label; mean over cells) of
each embedding; the noise floor beside the Marchenko-Pastur edge and the elbow rule's k on the exact spectrum.
Writes benchmarks/components.json; benchmarks/components.md holds the numbers.

``--stability``: on garnett (k = 50), the fast direction stability (:func:`rlae_sc.stability.direction_stability`)
against a plain Poisson bootstrap of the full eigenproblem (``N_FULL`` resamples, exact top-50 eigenvectors of each
resampled C), with the reference's own split-half agreement (how far its ranks can be trusted), and the time of
the stability computation against one scatter pass over the same rows. Writes benchmarks/stability.json.

``--demo``: where the demo data's auto k comes from. The demo (:func:`rlae_sc.simulate.synthetic_counts`) has
a latent rank of 8 in its log-rates, not in the log-normalised matrix the autoencoder sees. At 2,000 and 8,000
cells: the spectrum of that matrix, of its expectation (the mean of ``N_REPLICATES`` matrices preprocessed with
the same recipe from counts redrawn at the same Poisson means, :func:`rlae_sc.simulate.synthetic_rates`), and of
the noise itself (the matrix minus that expectation), whose top eigenvalue is set beside the same noise permuted
(parallel analysis) and with random sign flips of its entries. Writes benchmarks/components_demo.json.

    .venv/bin/python benchmarks/components.py [--stability | --demo | DATASET ...]
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.linalg
from scipy.stats import spearmanr
from sklearn.neighbors import NearestNeighbors

from rlae_sc.noise_floor import elbow, parallel_analysis, top_eigenvalue
from rlae_sc.preprocess import preprocess, trained_rows
from rlae_sc.products import scatter_matrix
from rlae_sc.simulate import synthetic_counts, synthetic_rates
from rlae_sc.stability import direction_stability
from rlae_sc.train import fit

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {  # file -> (label column, unlabelled values, preprocess overrides)
    "garnett_pbmc800.h5ad": ("cell_type", (), {}),
    "kang_se_12261.h5ad": ("cell_type", (), {"max_pct_mito": None}),
    "soupx_pbmc4k_2170.h5ad": ("cell_type", ("?",), {}),
    "descend_zeisel_1464x1000.h5ad": ("cell_type", (), {}),
    "worm_neuron_4186.h5ad": ("cell_type", (), {"min_genes": 50}),
}


def label_agreement(Z: np.ndarray, labels: np.ndarray, k: int = 15) -> float:
    """Mean share of each cell's ``k`` nearest other cells (Euclidean in ``Z``) that carry its label."""
    idx = NearestNeighbors(n_neighbors=k + 1).fit(Z).kneighbors(Z, return_distance=False)[:, 1:]
    return float(np.mean(labels[idx] == labels[:, None]))


def centred_matrix(pre: ad.AnnData) -> np.ndarray:
    """The matrix the autoencoder trains on (:func:`rlae_sc.preprocess.trained_rows`), float64, centred (n x m)."""
    X = np.asarray(trained_rows(pre).read(0, pre.n_obs), dtype=np.float64)
    X -= X.mean(0)
    return X


def main(only: list[str]) -> None:
    """Every set of ``SETS`` (or those whose file stems are in ``only``); rows of earlier runs for the other
    sets are kept in components.json."""
    out = Path(__file__).with_suffix(".json")
    rows = [r for r in json.loads(out.read_text()) if only and r["dataset"] not in only] if out.exists() else []
    for name, (key, unlabelled, pp) in SETS.items():
        if only and name.removesuffix(".h5ad") not in only:
            continue
        path = DATA / name
        if not path.exists():
            print(f"skip {name}: not found")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pre, _ = preprocess(ad.read_h5ad(path), **pp)
        labels = pre.obs[key].astype(str).to_numpy()
        X = centred_matrix(pre)
        keep = ~np.isin(labels, unlabelled)
        row = {"dataset": name.removesuffix(".h5ad"), "n_cells": pre.n_obs, "n_genes": pre.n_vars}
        for k in ("auto", 50):
            t0 = time.perf_counter()
            model = fit(pre, n_components=k, trace_metrics=False, device="cpu")
            seconds = time.perf_counter() - t0
            Z = X @ model.directions
            row[f"k_{k}"] = model.n_components
            row[f"agreement_{k}"] = label_agreement(Z[keep], labels[keep])
            row[f"fit_seconds_{k}"] = seconds
            if k == "auto":
                rounds = model.params["noise_floor_rounds"]
                row |= {
                    "k_plain": rounds["k"][0],
                    "noise_floor": model.lam,
                    "noise_floor_plain": rounds["noise_floor"][0],
                    "noise_floor_spread": model.params["noise_floor_spread"],
                    "mp_edge": model.params["mp_edge"],
                }
        m = X.shape[1]
        e = scipy.linalg.eigh(X.T @ X, subset_by_index=[m - 100, m - 1], eigvals_only=True)[::-1]
        row["k_mp"] = int(np.sum(e > row["mp_edge"]))
        row["k_elbow"] = elbow(e)
        rows.append(row)
        print(json.dumps(row), flush=True)
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {out}")


N_FULL = 50  # Poisson resamples of the full eigenproblem (the reference)
N_PRECISE = 500  # resamples of a reference precise enough to rank the components (the first N_FULL are the issue's)


def full_bootstrap(X: np.ndarray, U: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    """|cos(u_i, u_i^b)| (n x k) for ``n`` Poisson resamples of the cells of centred ``X`` (n x m), exact eigh."""
    rng = np.random.default_rng(seed)
    m, k = U.shape
    out = np.zeros((n, k))
    for b in range(n):
        w = rng.poisson(1.0, size=len(X)).astype(np.float64)
        Y = (X - (w @ X) / w.sum()) * np.sqrt(w)[:, None]
        Ub = scipy.linalg.eigh(Y.T @ Y, subset_by_index=[m - k, m - 1])[1][:, ::-1]
        out[b] = np.abs(np.sum(Ub * U, axis=0))
    return out


def stability_check() -> None:
    pre, _ = preprocess(ad.read_h5ad(DATA / "garnett_pbmc800.h5ad"))
    rows = trained_rows(pre)
    model = fit(pre, n_components=50, trace_metrics=False, device="cpu")
    t0 = time.perf_counter()
    C = scatter_matrix(rows, precision="float32", device="cpu")
    scatter_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.scores(rows, device="cpu")
    scores_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores, residual_sq = model.scores(rows, residuals=True, device="cpu")  # the directions stage's one pass
    fast = direction_stability(model, scores, residual_sq)
    stability_seconds = time.perf_counter() - t0 - scores_seconds  # beyond the scores the stage needs anyway
    X = centred_matrix(pre)
    t0 = time.perf_counter()
    precise = full_bootstrap(X, model.directions.astype(np.float64), N_PRECISE)
    cos = precise[:N_FULL]
    full_seconds = (time.perf_counter() - t0) / N_PRECISE  # per resample
    full = cos.mean(axis=0)
    halves = spearmanr(cos[::2].mean(0), cos[1::2].mean(0))[0]  # two independent 25-resample references
    # how well a 50-resample reference can rank at all: each block of 50 against the mean of the other 450
    blocks = range(0, N_PRECISE, N_FULL)
    ceiling = [
        spearmanr(precise[b : b + N_FULL].mean(0), np.delete(precise, np.s_[b : b + N_FULL], 0).mean(0))[0]
        for b in blocks
    ]
    fast_vs_blocks = [spearmanr(fast, precise[b : b + N_FULL].mean(0))[0] for b in blocks]
    floor = parallel_analysis(rows, sum_squares=np.diag(C), device="cpu").value  # the plain round's floor
    above = int(np.sum(model.eigenvalues > floor))
    row = {
        "dataset": "garnett_pbmc800",
        "k": model.n_components,
        "n_full": N_FULL,
        "spearman_all": float(spearmanr(fast, full)[0]),
        "reference_split_half_spearman": float(halves),
        "n_precise": N_PRECISE,
        "spearman_vs_precise": float(spearmanr(fast, precise.mean(0))[0]),
        "spearman_50_block_vs_rest_450": [float(c) for c in ceiling],
        "spearman_fast_vs_each_50_block": [float(c) for c in fast_vs_blocks],
        "k_above_floor": above,
        "spearman_above_floor": float(spearmanr(fast[:above], full[:above])[0]) if above > 2 else None,
        "max_abs_diff": float(np.max(np.abs(fast - full))),
        "max_abs_diff_above_floor": float(np.max(np.abs(fast - full)[:above])),
        "fast": fast.tolist(),
        "full": full.tolist(),
        "full_se": (cos.std(axis=0, ddof=1) / np.sqrt(N_FULL)).tolist(),
        "scatter_pass_seconds": scatter_seconds,
        "scores_pass_seconds": scores_seconds,
        "stability_seconds": stability_seconds,
        "full_bootstrap_seconds_per_resample": full_seconds,
    }
    print(json.dumps({key: val for key, val in row.items() if not isinstance(val, list)}))
    out = Path(__file__).with_name("stability.json")
    out.write_text(json.dumps(row, indent=1) + "\n")
    print(f"wrote {out}")


N_REPLICATES = 40  # redrawn count matrices averaged into the demo's expected matrix
DEMO_CELLS = (2000, 8000)


def demo_check() -> None:
    """The demo's spectrum, its expectation's and its noise's at ``DEMO_CELLS`` cells (see the module's doc)."""
    rows = []
    for n_cells in DEMO_CELLS:
        counts = synthetic_counts(n_cells=n_cells)
        pre, recipe = preprocess(counts)
        X = centred_matrix(pre)
        e = scipy.linalg.eigh(X.T @ X, eigvals_only=True)[::-1]
        model = fit(pre, n_components="auto", trace_metrics=False, device="cpu")
        kept = counts.obs_names.get_indexer(pre.obs_names)
        rate = synthetic_rates(counts)[kept]
        rng = np.random.default_rng(1)
        M = np.zeros_like(X)
        for _ in range(N_REPLICATES):
            redrawn = ad.AnnData(X=rng.poisson(rate).astype(np.float32), var=counts.var)
            M += recipe.transform(redrawn)
        M /= N_REPLICATES
        M -= M.mean(0)
        expected = scipy.linalg.eigh(M.T @ M, eigvals_only=True)[::-1]
        noise = X - M  # the noise of X plus 1/N_REPLICATES of the redrawn matrices' own
        noise_top = top_eigenvalue(noise.T @ noise)
        permuted = parallel_analysis(noise, sum_squares=np.sum(noise**2, 0), device="cpu").samples
        flipped = [top_eigenvalue((s := noise * rng.choice([-1.0, 1.0], size=noise.shape)).T @ s) for _ in range(5)]
        rounds = model.params["noise_floor_rounds"]
        row = {
            "n_cells": pre.n_obs,
            "n_genes": pre.n_vars,
            "k_auto": model.n_components,
            "noise_floor_rounds": rounds,
            "mp_edge": model.params["mp_edge"],
            "eigenvalues": e[:25].tolist(),
            "expected_eigenvalues": expected[:25].tolist(),
            "noise_top_eigenvalue": noise_top,
            "noise_permuted_top_eigenvalues": list(permuted),
            "noise_sign_flipped_top_eigenvalues": flipped,
            "k_above_noise_top": int(np.sum(e > noise_top)),
        }
        print(json.dumps({key: val for key, val in row.items() if key not in ("eigenvalues", "expected_eigenvalues")}))
        print("eigenvalues", np.round(e[:20]).tolist(), "\nexpected", np.round(expected[:20]).tolist(), flush=True)
        rows.append(row)
    out = Path(__file__).with_name("components_demo.json")
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    if "--stability" in sys.argv[1:]:
        stability_check()
    elif "--demo" in sys.argv[1:]:
        demo_check()
    else:
        main(sys.argv[1:])
