"""Benchmark: rlae-sc's fit against scanpy's PCA solvers and scikit-learn's IncrementalPCA, same matrix, one run.

Full run (on a quiet machine; about 10 minutes on 2 cores, most of it IncrementalPCA and arpack at 100k)::

    .venv/bin/python benchmarks/bench.py                       # 10k and 100k cells x 2,000 genes, k = 50
    # writes benchmarks/results.json (the record), results.md and results.png

The 1M-cell table (needs the streaming run's file from stream.py; about 15 minutes, 10 GB of memory at most)::

    .venv/bin/python benchmarks/bench.py --preprocessed benchmarks/data/stream_1000000/preprocessed.h5ad \\
        --name results_1m --methods rlae_sc scanpy_covariance_eigh

Smoke check (2,000 cells, 2 rounds; about 2 minutes on a busy 2-core machine; written to benchmarks/data/smoke,
never over the committed records)::

    .venv/bin/python benchmarks/bench.py --smoke

1. The matrix: cells of a real count matrix resampled to each size (cells drawn with replacement, each count
   binomially thinned with a per-cell keep probability in [0.5, 1); soupx_pbmc4k_2170 from ../shared/data by
   default), preprocessed once with rlae-sc's recipe (QC, normalise, log1p, 2,000 HVGs, scale); or, with
   ``--preprocessed``, a preprocessed.h5ad as the pipeline writes it (sparse log-normalised values, scaled on
   the fly by the recipe; a dense scaled file is read as it is), scaled here once. Either way every method
   gets the SAME dense float32 scaled matrix (a .npy in ``--work``).
2. The reference: ``scipy.linalg.eigh`` of the float64 covariance (centred scatter ``sum_i (x_i - mu)(x_i -
   mu)^T``) of that matrix, computed here in numpy, apart from every method.
3. Each method runs in a fresh process of its own, ``--repeats`` rounds with the methods' order rotated each
   round; in its process a first, untimed call on the first 2,000 rows warms it up (imports, thread pools,
   torch's first use), then the call on the whole matrix is timed (loading excluded). The peak resident memory
   of the process (the matrix included) is recorded. Medians over the rounds are reported.
   rlae-sc's row is :func:`rlae_sc.fit` (what ``rl.tl.rlae`` and ``rlae-sc train`` call) with
   ``trace_metrics=False``: the pass that builds C, the solver and the decoder's SVD, and the exact eigh of C
   that every fit runs as its PCA check. That check is its own column: the time the library reports for it
   (``params['exact_reference_seconds']``) is subtracted from the call to give the fit time.
4. Accuracy against the reference, the same for every method: subspace distance ``1 - ||U^T Q||_F^2 / k``
   (Q an orthonormal basis of the method's k directions, U the exact top k), the largest principal angle
   between the two subspaces (``scipy.linalg.subspace_angles``), the top-10 min |cos| and the top-10
   eigenvalue error; the worst over the rounds.

A method that fails stops the run with a non-zero exit that names the row (cells, method) and shows the end of
its log; nothing is written then.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import record  # noqa: E402

DEFAULT_SEED = HERE.parent.parent / "shared" / "data" / "soupx_pbmc4k_2170.h5ad"
METHODS = ["rlae_sc", "scanpy_covariance_eigh", "scanpy_arpack", "scanpy_randomized", "sklearn_incremental"]
EXTRA_METHODS = ["scanpy_full"]  # LAPACK's full SVD of the matrix: slow, on request only
WARMUP_ROWS = 2000
TOP = 10
PACKAGES = ("rlae-sc", "numpy", "scipy", "torch", "scanpy", "scikit-learn", "anndata", "threadpoolctl")


class RowFailed(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------- resampling


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


# ------------------------------------------------------------------------------------------------ matrices


def scaled_matrix(pre) -> tuple[np.ndarray, dict]:
    """The dense float32 matrix rlae-sc trains on for a preprocessed AnnData (in memory or backed; ``X``
    scaled, or log-normalised values / counts that the recipe scales), and the ``uns`` an AnnData holding
    that matrix needs for :func:`rlae_sc.fit` (``rlae_recipe``, ``rlae_preprocess`` saying ``X`` is scaled)."""
    from rlae_sc.preprocess import trained_rows
    from rlae_sc.recipe import SCALED

    rows = trained_rows(pre)
    n, m = rows.shape
    X = np.empty((n, m), dtype=np.float32)
    for start in range(0, n, 65_536):
        stop = min(n, start + 65_536)
        block = rows.read(start, stop)
        X[start:stop] = block.toarray() if hasattr(block, "toarray") else block
    stats = {key: _plain(value) for key, value in dict(pre.uns["rlae_preprocess"]).items()}
    uns = {"rlae_recipe": str(pre.uns["rlae_recipe"]), "rlae_preprocess": {**stats, "X": SCALED}}
    return X, uns


def _plain(value):
    """A JSON-storable copy of an ``uns`` value as h5py returns it (numpy scalars, bytes)."""
    if isinstance(value, bytes):
        return value.decode()
    return record.clean(value)


def matrices(args):
    """``(label, [X], uns)`` for each size: resampled and preprocessed here, or read from ``--preprocessed``.
    ``X`` comes in a list that holds the only reference to it: the taker pops it and frees it when saved, before
    the workers load their copies (at 1M cells it is 8 GB)."""
    import anndata as ad

    from rlae_sc.io import read
    from rlae_sc.preprocess import preprocess

    if args.preprocessed is not None:
        t0 = time.perf_counter()
        X, uns = scaled_matrix(ad.read_h5ad(args.preprocessed, backed="r"))
        print(f"{args.preprocessed}: {X.shape} scaled in {time.perf_counter() - t0:.0f} s", flush=True)
        box = [X]
        del X
        yield str(args.preprocessed), box, uns
        return
    seed_counts = read(args.seed_data)
    for n in args.sizes:
        t0 = time.perf_counter()
        pre, _ = preprocess(resample(seed_counts, n))
        X, uns = scaled_matrix(pre)
        del pre
        print(f"{n} cells: resampled and preprocessed to {X.shape} in {time.perf_counter() - t0:.0f} s", flush=True)
        box = [X]
        del X
        yield f"{args.seed_data.name} resampled to {n:,} cells", box, uns


def covariance_scatter(X: np.ndarray, block: int = 32_768) -> np.ndarray:
    """``sum_i (x_i - mu)(x_i - mu)^T`` in float64 (m x m), by blocks of rows in numpy."""
    n, m = X.shape
    C = np.zeros((m, m))
    total = np.zeros(m)
    for start in range(0, n, block):
        B = X[start : start + block].astype(np.float64)
        C += B.T @ B
        total += B.sum(axis=0)
    C -= np.outer(total, total) / n
    return C


def exact_reference(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """``scipy.linalg.eigh`` of ``X``'s float64 covariance scatter: the top ``k + 1`` eigenvalues (decreasing),
    their eigenvectors (m x (k + 1)) and the seconds taken (scatter and eigh)."""
    import scipy.linalg

    t0 = time.perf_counter()
    C = covariance_scatter(X)
    e, U = scipy.linalg.eigh(C)
    top = min(k + 1, len(e))
    return e[::-1][:top].copy(), U[:, ::-1][:, :top].copy(), time.perf_counter() - t0


# --------------------------------------------------------------------------------------------------- scores


def score(P: np.ndarray, e_hat: np.ndarray, U: np.ndarray, e: np.ndarray) -> dict:
    """A method's k directions ``P`` (m x k) and eigenvalue estimates (sums over cells) against the exact
    eigenpairs ``U`` (m x k or more) and ``e``."""
    import scipy.linalg

    k = P.shape[1]
    U = U[:, :k]
    Q, _ = np.linalg.qr(P)
    top = min(TOP, k)
    Pn = P[:, :top] / np.linalg.norm(P[:, :top], axis=0)
    return {
        "subspace_distance": float(1.0 - np.linalg.norm(U.T @ Q) ** 2 / k),
        "max_angle_rad": float(np.max(scipy.linalg.subspace_angles(P, U))),
        "min_abs_cos_top10": float(np.min(np.abs(np.sum(Pn * U[:, :top], axis=0)))),
        "eigenvalue_max_rel_err_top10": float(np.max(np.abs(e_hat[:top] - e[:top]) / e[:top])),
    }


# --------------------------------------------------------------------------------------------------- worker


def fit_once(method: str, X: np.ndarray, k: int, uns: dict) -> tuple[np.ndarray, np.ndarray, dict, float]:
    """Run ``method`` on ``X``: directions (m x k), eigenvalue estimates (sums over cells), extras, and the
    seconds of the call itself."""
    n = X.shape[0]
    if method == "rlae_sc":
        import anndata as ad
        import torch

        import rlae_sc

        pre = ad.AnnData(X=X, uns=json.loads(json.dumps(uns)))
        t0 = time.perf_counter()
        model = rlae_sc.fit(pre, n_components=k, trace_metrics=False)
        seconds = time.perf_counter() - t0
        p = model.params
        from rlae_sc.directions import compare_with_pca

        certified = compare_with_pca(model)[0]  # the fit's certificate, no eigh (exact_check is off)
        extra = {
            "certificate_min_cos_top10": certified["certificate_min_cos_top10"],
            "certificate_seconds": p.get("certificate_seconds"),
            "check_seconds": p.get("exact_reference_seconds"),
            "library_fit_seconds": p.get("fit_seconds"),
            "library_solver_seconds": p.get("solver_seconds"),
            "n_iter": p.get("n_iter"),
            "lambda": model.lam,
            "torch_threads": torch.get_num_threads(),
        }
        return model.directions, model.eigenvalues, extra, seconds
    if method.startswith("scanpy_"):
        import anndata as ad
        import scanpy as sc

        adata = ad.AnnData(X=X)
        t0 = time.perf_counter()
        sc.pp.pca(adata, n_comps=k, svd_solver=method.removeprefix("scanpy_"), zero_center=True, random_state=0)
        seconds = time.perf_counter() - t0
        return adata.varm["PCs"], adata.uns["pca"]["variance"] * (n - 1), {}, seconds
    if method == "sklearn_incremental":
        from sklearn.decomposition import IncrementalPCA

        t0 = time.perf_counter()
        ipca = IncrementalPCA(n_components=k, batch_size=max(5 * k, 10_000)).fit(X)
        seconds = time.perf_counter() - t0
        return ipca.components_.T, ipca.explained_variance_ * (n - 1), {}, seconds
    raise ValueError(f"unknown method {method}")


def worker(method: str, matrix: Path, k: int, out: Path, warmup_rows: int = WARMUP_ROWS) -> None:
    """In this (fresh) process: a warm-up call on the first rows, then the timed call on the whole matrix.
    Writes ``out`` (JSON: seconds, peak memory, eigenvalues, extras) and ``out.npy`` (the directions)."""
    X = np.load(matrix)
    uns = json.loads(matrix.with_suffix(".uns.json").read_text())
    fit_once(method, np.ascontiguousarray(X[: min(len(X), warmup_rows)]), k, uns)
    P, e, extra, seconds = fit_once(method, X, k, uns)
    np.save(out.with_suffix(".npy"), np.asarray(P, dtype=np.float64))
    # VmHWM: this process's peak resident memory since exec (ru_maxrss would include the parent's fork)
    hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    out.write_text(
        json.dumps(
            {
                "call_seconds": seconds,
                "peak_rss_gb": hwm_kb / 1024**2,
                "eigenvalues": np.asarray(e, dtype=float).tolist(),
                **extra,
            }
        )
    )


def run_worker(method: str, matrix: Path, k: int, out: Path, *, row: str) -> dict:
    """One fresh process of :func:`worker`; :class:`RowFailed`, naming ``row``, when it fails."""
    log = out.with_suffix(".log")
    out.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--worker", method, "--matrix", str(matrix), "--k", str(k), "--result", str(out)]
    with open(log, "w") as handle:
        status = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT).returncode
    if status != 0 or not out.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise RowFailed(f"row {row} failed (exit status {status}); last lines of {log}:\n{tail}")
    result = json.loads(out.read_text())
    result["directions"] = np.load(out.with_suffix(".npy"))
    return result


# ----------------------------------------------------------------------------------------------------- main


def blas() -> list[str]:
    import threadpoolctl

    return [
        f"{p['internal_api']} {p.get('version', '')} ({p['num_threads']} threads)"
        for p in threadpoolctl.threadpool_info()
    ]


def machine() -> str:
    """One line: CPU, cores, Python, package versions, BLAS (``atlas.py``'s record uses it)."""
    pkgs = ", ".join(f"{p} {version(p)}" for p in ("numpy", "scipy", "torch", "scanpy", "scikit-learn", "anndata"))
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {pkgs}; BLAS: {'; '.join(blas())}"
    )


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def measure(label: str, box: list[np.ndarray], uns: dict, args) -> tuple[dict, list[dict]]:
    """Every method on the matrix in ``box`` (taken out of it) in ``args.repeats`` rounds; the matrix's entry and
    one row per method."""
    X = box.pop()
    n, m = X.shape
    matrix = args.work / f"X_{n}.npy"
    np.save(matrix, X)
    matrix.with_suffix(".uns.json").write_text(json.dumps(uns))
    e, U, reference_s = exact_reference(X, args.k)
    del X
    print(f"{n:,} x {m:,}: reference eigh in {reference_s:.1f} s", flush=True)
    runs: dict[str, list[dict]] = {method: [] for method in args.methods}
    for r in range(args.repeats):
        order = args.methods[r % len(args.methods) :] + args.methods[: r % len(args.methods)]
        for method in order:
            res = run_worker(method, matrix, args.k, args.work / f"{method}_{n}.json", row=f"{n:,} cells / {method}")
            res.update(score(res.pop("directions"), np.asarray(res.pop("eigenvalues")), U, e))
            check = res.get("check_seconds") or 0.0
            res["fit_seconds"] = res["call_seconds"] - check
            runs[method].append(res)
            print(f"  round {r + 1} {method}: {json.dumps(res)}", flush=True)
    matrix.unlink()
    matrix.with_suffix(".uns.json").unlink()
    rows = []
    for method, results in runs.items():
        row = {"n_cells": n, "n_genes": m, "method": method, "rounds": len(results)}
        for key in ("fit_seconds", "call_seconds", "check_seconds"):
            row[key] = median([res.get(key) for res in results])
            row[f"{key}_all"] = [res.get(key) for res in results]
        row["peak_rss_gb"] = max(res["peak_rss_gb"] for res in results)
        for key in ("subspace_distance", "max_angle_rad", "eigenvalue_max_rel_err_top10"):
            row[key] = max(res[key] for res in results)
        row["min_abs_cos_top10"] = min(res["min_abs_cos_top10"] for res in results)
        if "certificate_min_cos_top10" in results[0]:
            row["certificate_min_cos_top10"] = min(res["certificate_min_cos_top10"] for res in results)
        for key in ("library_fit_seconds", "library_solver_seconds", "certificate_seconds", "n_iter", "lambda",
                    "torch_threads"):  # fmt: skip
            if key in results[0]:
                row[key] = results[0][key] if key in ("torch_threads",) else median([res[key] for res in results])
        rows.append(row)
    entry = {"source": label, "n_cells": n, "n_genes": m, "reference_seconds": reference_s}
    return entry, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed-data", type=Path, default=DEFAULT_SEED)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS + EXTRA_METHODS)
    ap.add_argument("--repeats", type=int, default=3, help="rounds of fresh processes (median reported)")
    ap.add_argument(
        "--preprocessed",
        type=Path,
        help="take the matrix from this preprocessed.h5ad (e.g. of a streaming run) instead of resampling",
    )
    ap.add_argument("--name", default="results", help="basename of the .md/.json/.png written to --out")
    ap.add_argument("--out", type=Path, default=None, help="folder of the record (default: here; --smoke: data/)")
    ap.add_argument("--work", type=Path, default=HERE / "data", help="scratch folder for matrices (git-ignored)")
    ap.add_argument("--smoke", action="store_true", help="2,000 cells, 2 rounds, written to benchmarks/data/smoke")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--matrix", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.matrix, args.k, args.result)
        return
    if args.smoke:
        args.sizes, args.repeats = [2000], 2
        args.out = args.out or HERE / "data" / "smoke"
    args.out = args.out or HERE
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    run = record.header(PACKAGES)
    run["blas"] = blas()
    run["smoke"] = args.smoke
    entries, rows = [], []
    for label, box, uns in matrices(args):
        entry, new_rows = measure(label, box, uns, args)
        entries.append(entry)
        rows += new_rows
    record.finish(run)
    result = record.clean(
        {
            "benchmark": "fit",
            "issue": 25,
            "run": run,
            "settings": {
                "k": args.k,
                "repeats": args.repeats,
                "methods": args.methods,
                "warmup_rows": WARMUP_ROWS,
                "matrix": str(args.preprocessed) if args.preprocessed else f"{args.seed_data.name}, resampled",
            },
            "matrices": entries,
            "rows": rows,
        }
    )
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(result))
    plot(rows, args.k, args.out / f"{args.name}.png")
    print((args.out / f"{args.name}.md").read_text())
    print(f"wrote {args.out / args.name}.json, .md and .png")


def _e(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}e}"


def _s(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def markdown(result: dict) -> str:
    """The fit table of a record (``results.json``)."""
    run, s = result["run"], result["settings"]
    lines = [
        "# Fit: rlae-sc against scanpy's PCA solvers (issue 25)",
        "",
        "Written by `benchmarks/bench.py` from its JSON record"
        + (" (**--smoke**: not a result)" if run.get("smoke") else "")
        + ".",  # fmt: skip
        "",
        *record.markdown_header(run),
        f"- BLAS: {'; '.join(run.get('blas', []))}",
        "",
        f"Matrix: {s['matrix']}, preprocessed with rlae-sc's recipe (2,000 HVGs), dense float32, scaled; every "
        f"method on the same matrix, k = {s['k']}. Each method in a fresh process per round, warmed up on the "
        f"first {s['warmup_rows']:,} rows, then timed on the whole matrix (loading excluded); the median of "
        f"{s['repeats']} rounds, methods' order rotated per round. **fit**: the call, less rlae-sc's exact-PCA "
        "check when it runs one; **check**: that `scipy.linalg.eigh` of C (off by default: each fit certifies its "
        "directions instead, inside fit); **call**: the whole call. rlae-sc: `rlae_sc.fit(pre, "
        "trace_metrics=False)` (the pass that builds C, the solver, the decoder's SVD, the residual certificate); "
        "**certified**: the certificate's lower bound on the top-10 |cos|, as 1 - bound. Accuracy against "
        "`scipy.linalg.eigh` of the float64 covariance of the "
        "same matrix (computed apart): subspace distance 1 - ||U^T Q||_F^2 / k, largest principal angle (rad), "
        "top-10 min |cos| and eigenvalue error; the worst round. Peak RSS: the worker process, matrix included.",
        "",
        "| cells x genes | method | fit (s) | check (s) | call (s) | subspace distance | max angle (rad) "
        "| top-10 min \\|cos\\|, 1 - | certified, 1 - | top-10 eig. rel. err. | peak RSS (GB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['n_cells']:,} x {r['n_genes']:,} | {r['method']} | {_s(r['fit_seconds'])} | "
            f"{_s(r['check_seconds'])} | {_s(r['call_seconds'])} | {_e(r['subspace_distance'])} | "
            f"{_e(r['max_angle_rad'])} | {_e(1 - r['min_abs_cos_top10'], 1)} | "
            f"{_e(1 - r['certificate_min_cos_top10'], 1) if 'certificate_min_cos_top10' in r else '-'} | "
            f"{_e(r['eigenvalue_max_rel_err_top10'])} | {r['peak_rss_gb']:.2f} |"
        )
    lines.append("")
    for m in result["matrices"]:
        size = f"{m['n_cells']:,} x {m['n_genes']:,}"
        lines.append(f"- {m['source']} ({size}): reference (float64 covariance, eigh) {m['reference_seconds']:.1f} s")
    for n in sorted({r["n_cells"] for r in result["rows"]}):
        here = [r for r in result["rows"] if r["n_cells"] == n and r["fit_seconds"] is not None]
        ours = [r for r in here if r["method"] == "rlae_sc"]
        theirs = [r for r in here if r["method"].startswith("scanpy_")]
        if ours and theirs:
            best = min(theirs, key=lambda r: r["fit_seconds"])
            lines.append(
                f"- {n:,} cells: rlae-sc fit / scanpy's fastest ({best['method']}) = "
                f"{ours[0]['fit_seconds'] / best['fit_seconds']:.2f}; with the check "
                f"{ours[0]['call_seconds'] / best['fit_seconds']:.2f}"
            )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], k: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["n_cells"], r["fit_seconds"]) for r in rows if r["method"] == method)
        ax.loglog(*zip(*pts), "o-", label=method)
    ax.set_xlabel("cells")
    ax.set_ylabel("fit (s; rlae-sc without its exact-PCA check)")
    ax.set_title(f"PCA of a cells x 2,000 scaled matrix, k = {k}")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    try:
        main()
    except RowFailed as exc:
        sys.exit(f"bench.py: {exc}\nNothing was written.")
