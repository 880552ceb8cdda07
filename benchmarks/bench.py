"""Benchmark: rlae-sc's fit against scanpy's PCA solvers and scikit-learn's IncrementalPCA.

    python benchmarks/bench.py [--seed-data COUNTS.h5ad] [--sizes 10000 100000] [--k 50] [--out benchmarks]
    python benchmarks/bench.py --preprocessed PRE.h5ad --name results_1m --methods rlae_sc scanpy_covariance_eigh

1. Builds datasets of each size by resampling the cells of a real count matrix
   (cells drawn with replacement, each count binomially thinned with a per-cell
   keep probability in [0.5, 1)); soupx_pbmc4k_2170 from ../shared/data by default.
2. Preprocesses each once with rlae-sc's recipe (QC, normalise, log1p, 2,000 HVGs, scale);
   or takes the matrix of a preprocessed.h5ad (--preprocessed; e.g. the 1M-cell file
   written by stream.py, too large to preprocess in memory here).
3. Runs every method on the same float32 matrix, each in a fresh subprocess, and
   records wall time (the method's own call, loading excluded) and the process's
   peak resident memory (the matrix itself included).
4. Scores each method against exact PCA (float64 scatter matrix, scipy eigh)
   with the THEORY.md metrics, and writes <name>.md, <name>.json and <name>.png (name: results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from importlib.metadata import version
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_SEED = HERE.parent.parent / "shared" / "data" / "soupx_pbmc4k_2170.h5ad"
METHODS = ["rlae_sc", "scanpy_arpack", "scanpy_randomized", "scanpy_covariance_eigh", "sklearn_incremental"]


def resample(counts, n_cells: int, *, seed: int = 0, mix_key: str | None = None):
    """``n_cells`` cells drawn with replacement from ``counts`` (AnnData), counts binomially thinned; ``obs``
    holds the drawn cells' columns (labels included), indexed ``cell00000000``, ...

    With ``mix_key`` (an ``obs`` column of labels), each new cell pools the thinned counts of two drawn
    cells with the same label (weights ``w`` and ``1 - w``, ``w`` uniform): cells then fill the space
    between cells of a type instead of piling up as near-copies of each drawn cell. Without mixing, at
    100k cells each of 2,170 seed cells has ~46 near-copies, which are each other's nearest neighbours:
    the kNN graph falls apart into ~1,000 components, and Leiden returns ~1,000 clusters at any resolution.
    """
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    X = sp.csr_matrix(counts.X)
    if mix_key is not None:
        labels = counts.obs[mix_key].astype(str).to_numpy()
        peers = {lab: np.flatnonzero(labels == lab) for lab in np.unique(labels)}
    blocks, drawn = [], []
    for start in range(0, n_cells, 20_000):
        rows = rng.integers(0, X.shape[0], size=min(20_000, n_cells - start))
        drawn.append(rows)
        keep = rng.uniform(0.5, 1.0, size=len(rows))
        if mix_key is None:
            block = _thinned(X[rows], keep, rng)
        else:
            partner = np.array([rng.choice(peers[labels[r]]) for r in rows])
            w = rng.uniform(0.0, 1.0, size=len(rows))
            block = _thinned(X[rows], keep * w, rng) + _thinned(X[partner], keep * (1 - w), rng)
        block.eliminate_zeros()
        blocks.append(block.tocsr())
    obs = counts.obs.iloc[np.concatenate(drawn)].reset_index(drop=True)
    obs.index = [f"cell{i:08d}" for i in range(n_cells)]
    return ad.AnnData(X=sp.vstack(blocks).tocsr(), obs=obs, var=counts.var[[]].copy())


def _thinned(block, keep: np.ndarray, rng):
    """Each row's counts kept with that row's probability ``keep`` (binomial thinning), float32 CSR."""
    block = block.astype(np.float32)
    block.data = rng.binomial(block.data.astype(np.int64), np.repeat(keep, np.diff(block.indptr))).astype(np.float32)
    return block


def worker(method: str, matrix: Path, k: int, out: Path) -> None:
    """Fit one method on the matrix and save its directions (m x k) and eigenvalue estimates (sums over cells)."""
    import anndata as ad
    import scanpy as sc
    import torch
    from sklearn.decomposition import IncrementalPCA

    from rlae_sc.model import fit
    from rlae_sc.preprocess import Recipe

    X = np.load(matrix)
    n = X.shape[0]
    t0 = time.perf_counter()
    if method == "rlae_sc":  # the pipeline's own fit with its defaults: scatter pass + training + decoder SVD
        pre = ad.AnnData(X=X, uns={"rlae_recipe": json.dumps(Recipe().to_dict())})
        model = fit(pre, n_components=k, trace_metrics=False)
        P, e = model.directions, model.eigenvalues
        extra = {"n_iter": model.params["n_iter"], "lambda": model.lam, "torch_threads": torch.get_num_threads()}
    elif method.startswith("scanpy_"):
        adata = ad.AnnData(X=X)
        sc.pp.pca(adata, n_comps=k, svd_solver=method.removeprefix("scanpy_"), zero_center=True)
        P, e = adata.varm["PCs"], adata.uns["pca"]["variance"] * (n - 1)
        extra = {}
    elif method == "sklearn_incremental":
        ipca = IncrementalPCA(n_components=k, batch_size=max(5 * k, 10_000)).fit(X)
        P, e = ipca.components_.T, ipca.explained_variance_ * (n - 1)
        extra = {}
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - t0
    np.save(out.with_suffix(".npy"), np.asarray(P, dtype=np.float64))
    # VmHWM: this process's peak resident memory since exec (ru_maxrss would include the parent's fork)
    hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    out.write_text(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_gb": hwm_kb / 1024**2,
                "eigenvalues": np.asarray(e, dtype=float).tolist(),
                **extra,
            }
        )
    )


def run_worker(method: str, matrix: Path, k: int, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--matrix", str(matrix), "--k", str(k), "--result", str(out)]
    status = subprocess.run(cmd).returncode
    if status != 0:
        return {"method": method, "error": f"exit status {status}"}
    result = json.loads(out.read_text())
    result["directions"] = np.load(out.with_suffix(".npy"))
    return result


def score(P: np.ndarray, e_hat: np.ndarray, U: np.ndarray, e: np.ndarray) -> dict:
    from rlae_sc.lae import theory

    cos = theory.alignment(P, U)
    return {
        "min_abs_cos_top10": float(cos[:10].min()),
        "subspace_distance": theory.subspace_distance(P, U),
        "eigenvalue_max_rel_err_top10": float(np.max(np.abs(e_hat[:10] - e[:10]) / e[:10])),
    }


def machine() -> str:
    import threadpoolctl

    blas = [
        f"{p['internal_api']} {p.get('version', '')} ({p['num_threads']} threads)"
        for p in threadpoolctl.threadpool_info()
    ]
    pkgs = ", ".join(f"{p} {version(p)}" for p in ("numpy", "scipy", "torch", "scanpy", "scikit-learn", "anndata"))
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {pkgs}; BLAS: {'; '.join(blas)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed-data", type=Path, default=DEFAULT_SEED)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument(
        "--preprocessed",
        type=Path,
        help="take the matrix from this preprocessed.h5ad (e.g. of a streaming run) instead of resampling",
    )
    ap.add_argument("--name", default="results", help="basename of the .md/.json/.png written to --out")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--work", type=Path, default=HERE / "data", help="scratch folder for matrices (git-ignored)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--matrix", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.matrix, args.k, args.result)
        return

    from rlae_sc.lae import theory
    from rlae_sc.passes import scatter_matrix

    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, X in matrices(args):
        matrix = args.work / f"X_{n}.npy"
        np.save(matrix, X)
        e, U = theory.exact_pca(scatter_matrix(X), args.k)
        del X
        for method in args.methods:
            res = run_worker(method, matrix, args.k, args.work / f"{method}_{n}.json")
            if "error" in res:
                rows.append({"n_cells": n, "method": method, "error": res["error"]})
                continue
            row = {
                "n_cells": n,
                "method": method,
                "seconds": res["seconds"],
                "peak_rss_gb": res["peak_rss_gb"],
                **score(res["directions"], np.asarray(res["eigenvalues"]), U, e),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        matrix.unlink()
    write_results(rows, args, machine())


def matrices(args):
    """``(n_cells, X)`` for each size: resampled and preprocessed here, or read from ``--preprocessed``."""
    import anndata as ad

    from rlae_sc.io import read
    from rlae_sc.preprocess import preprocess

    if args.preprocessed is not None:
        X = ad.read_h5ad(args.preprocessed).X
        yield X.shape[0], X
        return
    seed_counts = read(args.seed_data)
    for n in args.sizes:
        t0 = time.perf_counter()
        pre, _ = preprocess(resample(seed_counts, n))
        print(f"{n} cells: resampled and preprocessed to {pre.shape} in {time.perf_counter() - t0:.0f} s", flush=True)
        yield n, pre.X


def write_results(rows: list[dict], args, info: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        f"# Benchmark: rlae-sc vs scanpy PCA ({date.today().isoformat()})",
        "",
        (f"Matrix: `{args.preprocessed}`" if args.preprocessed else f"Seed data: `{args.seed_data.name}`, resampled")
        + f"; k = {args.k}; 2,000 HVGs after rlae-sc preprocessing; "
        "float32 matrix. Time: the method's call only (for rlae-sc: scatter pass + training + decoder SVD). "
        "Peak RSS: the whole worker process, the dense matrix included. Accuracy against exact PCA "
        "(float64 scatter matrix, scipy eigh).",
        "",
        f"Machine: {info}",
        "",
        "| cells | method | seconds | peak RSS (GB) | min abs cos top 10 | subspace distance "
        "| max eig. rel. err. top 10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['n_cells']:,} | {r['method']} | {r['error']} | | | | |")
        else:
            lines.append(
                f"| {r['n_cells']:,} | {r['method']} | {r['seconds']:.2f} | {r['peak_rss_gb']:.2f} | "
                f"1 - {1 - r['min_abs_cos_top10']:.1e} | {r['subspace_distance']:.2e} | "
                f"{r['eigenvalue_max_rel_err_top10']:.2e} |"
            )
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    (args.out / f"{args.name}.json").write_text(
        json.dumps({"machine": info, "k": args.k, "rows": rows}, indent=1) + "\n"
    )
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = [(r["n_cells"], r["seconds"]) for r in rows if r["method"] == method and "seconds" in r]
        if pts:
            ax.loglog(*zip(*pts), "o-", label=method)
    ax.set_xlabel("cells")
    ax.set_ylabel("wall time of the fit (s)")
    ax.set_title(f"PCA of a cells x 2,000 matrix, k = {args.k}")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / f"{args.name}.png", dpi=110)


if __name__ == "__main__":
    main()
