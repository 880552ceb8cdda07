"""Benchmark: approximate nearest neighbours on the LAE embedding, recall against exact, time and memory.

    python benchmarks/knn.py EMBEDDING.h5ad [EMBEDDING.h5ad ...] [--queries 10000] [--k 15]

For each embedding (``obsm['X_rlae']`` of a ``directions.h5ad``, e.g. of the 100k- and 1M-cell runs of
``atlas.py``), builds the 15-nearest-neighbour graph of all cells with each method, in its own process
(peak memory measured before the recall check), and scores recall@15 on ``--queries`` random cells against exact
neighbours (brute force, float64 distances, the cell itself excluded). Methods: scikit-learn's exact
brute force (only up to 200k cells), pynndescent (scanpy's default), hnswlib and faiss (HNSW and IVF-flat).

Writes knn.md and knn.json here.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import machine  # noqa: E402

METHODS = {
    "sklearn_exact": "scikit-learn brute force (exact)",
    "pynndescent": "pynndescent (n_neighbors 15, scanpy's settings)",
    "hnswlib": "hnswlib HNSW (M 16, ef_construction 100, ef 40; built on 2 threads: not reproducible)",
    "hnswlib_1thread": "hnswlib HNSW (as above, built on 1 thread: reproducible)",
    "faiss_hnsw": "faiss HNSW flat (M 16, efConstruction 100, efSearch 40)",
    "faiss_ivf8": "faiss IVF flat (nlist 4 sqrt(n), nprobe 8)",
    "faiss_ivf16": "faiss IVF flat (nlist 4 sqrt(n), nprobe 16)",
    "faiss_ivf32": "faiss IVF flat (nlist 4 sqrt(n), nprobe 32)",
}


def load(path: Path) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        return np.ascontiguousarray(f["obsm/X_rlae"][:], dtype=np.float32)


def graph(method: str, X: np.ndarray, k: int) -> np.ndarray:
    """Indices (n x k) of each cell's k nearest other cells."""
    n, d = X.shape
    if method == "sklearn_exact":
        from sklearn.neighbors import NearestNeighbors

        return NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(X).kneighbors(X)[1][:, 1:]
    if method == "pynndescent":
        from pynndescent import NNDescent

        index = NNDescent(X, n_neighbors=k + 1, random_state=0, low_memory=True, n_jobs=-1)
        return index.neighbor_graph[0][:, 1:]
    if method.startswith("hnswlib"):
        import hnswlib

        index = hnswlib.Index(space="l2", dim=d)
        index.init_index(max_elements=n, M=16, ef_construction=100, random_seed=0)
        index.add_items(X, np.arange(n), num_threads=1 if method.endswith("1thread") else 2)
        index.set_ef(40)
        return index.knn_query(X, k=k + 1, num_threads=2)[0][:, 1:].astype(np.int64)
    import faiss

    faiss.omp_set_num_threads(2)
    if method == "faiss_hnsw":
        index = faiss.IndexHNSWFlat(d, 16)
        index.hnsw.efConstruction = 100
        index.add(X)
        index.hnsw.efSearch = 40
    else:
        nlist = int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
        index.train(X[np.random.default_rng(0).choice(n, min(n, 64 * nlist), replace=False)])
        index.add(X)
        index.nprobe = int(method.removeprefix("faiss_ivf"))
    return index.search(X, k + 1)[1][:, 1:]


def exact_neighbours(X: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact k nearest other cells of the ``queries`` (float64 distances, blocks of 200 queries)."""
    out = []
    sq = np.einsum("ij,ij->i", X.astype(np.float64), X.astype(np.float64))
    for start in range(0, len(queries), 200):
        q = queries[start : start + 200]
        D = sq[None, :] - 2 * X[q].astype(np.float64) @ X.T.astype(np.float64) + sq[q][:, None]
        D[np.arange(len(q)), q] = np.inf
        part = np.argpartition(D, k, axis=1)[:, :k]
        out.append(part)
    return np.concatenate(out)


def worker(method: str, path: Path, k: int, queries: int, out: Path) -> None:
    X = load(path)
    t0 = time.perf_counter()
    idx = graph(method, X, k)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # GB (Linux: KB), before the recall check
    q = np.random.default_rng(1).choice(len(X), min(queries, len(X)), replace=False)
    truth = exact_neighbours(X, q, k)
    recall = np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(idx[q], truth, strict=True)])
    out.write_text(json.dumps({"seconds": seconds, "recall": float(recall), "peak_gb": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("embeddings", nargs="*", type=Path)
    parser.add_argument("--k", type=int, default=15)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, path, out = args.worker
        worker(method, Path(path), args.k, args.queries, Path(out))
        return
    rows = []
    for path in args.embeddings:
        n = int(load(path).shape[0])
        for method in args.methods:
            if method == "sklearn_exact" and n > 200_000:
                continue
            tmp = HERE / "data" / f"knn_{method}.json"
            cmd = [sys.executable, __file__, "--k", str(args.k)]
            cmd += ["--queries", str(args.queries), "--worker", method, str(path), str(tmp)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                continue
            row = {"n_cells": n, "method": method, **json.loads(tmp.read_text())}
            rows.append(row)
            print(
                f"{n:>9,} {method:<15} {row['seconds']:8.1f} s  recall@{args.k} {row['recall']:.4f}  "
                f"{row['peak_gb']:.2f} GB",
                flush=True,
            )
    write(rows, args)


def write(rows: list[dict], args) -> None:
    report = {"machine": machine(), "date": str(date.today()), "rows": rows}
    (HERE / "knn.json").write_text(json.dumps(report, indent=1))
    lines = [
        f"# Approximate neighbours on `X_rlae` ({date.today()}, {machine()})",
        "",
        f"Graph of each cell's {args.k} nearest other cells (50 components), built and queried for all cells, in "
        f"one process per method; recall@{args.k} over {args.queries:,} random cells against exact neighbours.",
        "",
        "| cells | method | seconds | recall | peak GB |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['n_cells']:,} | {METHODS[r['method']]} | {r['seconds']:.1f} | {r['recall']:.4f} | {r['peak_gb']:.2f} |"
        for r in rows
    ]
    (HERE / "knn.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
