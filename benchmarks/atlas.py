"""Benchmark: every stage at atlas scale, and rlae-sc against scanpy's standard pipeline on the same counts.

    python benchmarks/atlas.py [--cells 1000000] [--zarr] [--compare 100000] [--kang PATH] [--scanpy-minutes 15]

1. ``--compare`` cells (default 100,000) resampled from soupx_pbmc4k_2170, and kang_se_12261: in one run,
   ``rlae-sc run COUNTS`` end to end (one process, defaults) against scanpy's standard pipeline on the same
   counts (read, normalize_total, log1p, 2,000 HVG, scale, PCA 50, neighbors, Leiden, UMAP), each in its own
   process, timed with its peak memory. Both embeddings are scored the same way: the fraction of each
   cell's 15 nearest neighbours (exact, Euclidean) that share its label; rlae-sc's kNN graph also by its
   recall@15 against exact neighbours in ``X_rlae``; ARI of each Leiden partition against the labels.
2. ``--cells`` (default 1,000,000) resampled cells (an ``.h5ad`` file, or with ``--zarr`` a compressed anndata
   zarr store) through the Snakemake workflow with streaming, every
   stage included (preprocess, train, directions, cluster, report, index), in a work directory of its own;
   per-stage wall time and peak memory from the rules' Snakemake benchmark files; kNN recall and ARI.
3. scanpy's standard pipeline on the same 1M counts, stopped when it would exceed ``--scanpy-gb`` of
   memory or ``--scanpy-minutes`` of time; the step it reached is recorded.

Cells are resampled with two same-label cells pooled per new cell (``bench.resample(mix_key=...)``), so
that cells do not pile up as near-copies of the 2,170 seed cells. Writes atlas.json here (``--record``: another
file, such as atlas_5m.json for a run of five million cells); the parts a run skips (``--compare 0``,
``--scanpy-minutes 0``) keep their earlier record. atlas.md is written by hand from the records.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import record  # noqa: E402
from bench import DEFAULT_SEED  # noqa: E402
from stream import write_counts  # noqa: E402

K = 15
STAGES = ["preprocess", "train", "directions", "cluster", "report"]
PACKAGES = ("rlae-sc", "numpy", "scipy", "torch", "scanpy", "scikit-learn", "anndata", "faiss-cpu", "numba")
MISSING = {"?", "nan", "unknown", ""}


def counts_file(n: int, work: Path, *, suffix: str = ".h5ad") -> Path:
    """The resampled counts of ``n`` cells (written once): an ``.h5ad`` file, or with ``suffix=".zarr"`` a
    compressed anndata zarr store (:func:`stream.write_counts`)."""
    path = work / f"atlas_{n}{suffix}"
    if not path.exists():
        import anndata as ad

        write_counts(ad.read_h5ad(DEFAULT_SEED), n, path, mix_key="cell_type")
    return path


def monitored(cmd: list[str], *, limit_gb: float = 1e9, limit_s: float = 1e9, log: Path | None = None) -> dict:
    """Run ``cmd``; wall seconds, peak resident memory of its process tree (GB, sampled every 0.2 s), the largest
    high-water mark of any one process in it (``VmHWM``, the kernel's own peak, so a short peak between samples
    still counts; GB, with that process's command), and whether it was stopped at ``limit_gb`` or ``limit_s``."""
    t0 = time.perf_counter()
    out = open(log, "w") if log else subprocess.DEVNULL
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # rules' python
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    peak, stopped = 0.0, ""
    marks: dict[int, tuple[float, str]] = {}  # each process's high-water mark (GB) and command

    def watch() -> None:
        nonlocal peak, stopped
        while proc.poll() is None:
            rss = _tree_rss_gb(proc.pid, marks)
            peak = max(peak, rss)
            if rss > limit_gb or time.perf_counter() - t0 > limit_s:
                stopped = f"memory above {limit_gb:g} GB" if rss > limit_gb else f"over {limit_s / 60:g} min"
                os.killpg(proc.pid, 9)
            time.sleep(0.2)

    thread = threading.Thread(target=watch)
    thread.start()
    proc.wait()
    thread.join()
    largest = max(marks.values(), default=(0.0, ""))
    return {
        "seconds": time.perf_counter() - t0,
        "peak_gb": peak,
        "process_peak_gb": largest[0],
        "process_peak_command": largest[1],
        "returncode": proc.returncode,
        "stopped": stopped,
    }


def _tree_rss_gb(pid: int, marks: dict | None = None) -> float:
    """Resident memory of ``pid`` and its descendants, GB; with ``marks``, each process's high-water mark
    (``VmHWM``, GB) and command are kept there by process id."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            if marks is not None:
                with open(f"/proc/{p}/status") as f:
                    hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:")) / 1e9
                with open(f"/proc/{p}/cmdline") as f:
                    command = " ".join(f.read().split("\0")).strip()
                marks[p] = (max(hwm, marks.get(p, (0.0, ""))[0]), command)
            for task in Path(f"/proc/{p}/task").iterdir():  # children of every thread (Snakemake starts jobs from one)
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total / 1e9


def scanpy_pipeline(counts: str, out: str, label_key: str) -> None:
    """scanpy's standard pipeline; prints each step as it starts; writes X_pca, leiden and the step times."""
    import anndata as ad
    import scanpy as sc

    times = {}

    def step(name: str, fn) -> None:
        print(f"step {name}", flush=True)
        t0 = time.perf_counter()
        fn()
        times[name] = time.perf_counter() - t0

    box = {}
    step("read", lambda: box.update(a=ad.read_h5ad(counts)))
    a = box["a"]
    step("normalize_total", lambda: sc.pp.normalize_total(a))
    step("log1p", lambda: sc.pp.log1p(a))
    step("highly_variable_genes", lambda: sc.pp.highly_variable_genes(a, n_top_genes=2000, subset=True))
    step("scale", lambda: sc.pp.scale(a))
    step("pca", lambda: sc.pp.pca(a, n_comps=50))
    step("neighbors", lambda: sc.pp.neighbors(a))
    step("leiden", lambda: sc.tl.leiden(a, flavor="igraph", n_iterations=2, directed=False))
    step("umap", lambda: sc.tl.umap(a))
    np.save(out + ".X_pca.npy", a.obsm["X_pca"])
    Path(out + ".json").write_text(
        json.dumps({"times": times, "leiden": a.obs["leiden"].astype(str).tolist(), "obs_names": list(a.obs_names)})
    )


def neighbours_of(X: np.ndarray, queries: np.ndarray, k: int = K, *, chunk: int = 50_000) -> np.ndarray:
    """Exact ``k`` nearest other cells of each query (float64 distances), scanning ``X`` ``chunk`` cells at a time
    and keeping each query's best ``k`` so far (memory: about queries x chunk distances, 800 MB for 2,000 queries)."""
    Q = X[queries].astype(np.float64)
    q_sq = np.einsum("ij,ij->i", Q, Q)
    best_d, best_i = np.full((len(Q), k), np.inf), np.zeros((len(Q), k), dtype=np.int64)
    for start in range(0, len(X), chunk):
        C = X[start : start + chunk].astype(np.float64)
        D = q_sq[:, None] - 2 * Q @ C.T + np.einsum("ij,ij->i", C, C)[None, :]
        own = np.flatnonzero((queries >= start) & (queries < start + len(C)))
        D[own, queries[own] - start] = np.inf  # not the query itself
        top = np.argpartition(D, min(k, len(C) - 1), axis=1)[:, :k]
        cand_d = np.hstack([best_d, np.take_along_axis(D, top, axis=1)])
        cand_i = np.hstack([best_i, top + start])
        keep = np.argpartition(cand_d, k - 1, axis=1)[:, :k]
        best_d, best_i = np.take_along_axis(cand_d, keep, axis=1), np.take_along_axis(cand_i, keep, axis=1)
    return best_i


def label_agreement(X: np.ndarray, labels: np.ndarray, sample: np.ndarray) -> float:
    """Mean fraction of a labelled cell's 15 exact nearest neighbours (labelled) that share its label."""
    nn = neighbours_of(X, sample)
    fractions = []
    for i, row in zip(sample, nn, strict=True):
        if labels[i] in MISSING:
            continue
        others = labels[row][~np.isin(labels[row], list(MISSING))]
        if len(others):
            fractions.append(np.mean(others == labels[i]))
    return float(np.mean(fractions))


def graph_recall(X: np.ndarray, distances, sample: np.ndarray) -> float:
    """Recall of the stored kNN graph (``obsp['distances']``; the cell itself, stored by some transformers at
    distance 0, left out) against the same number of exact nearest other cells in ``X``, over the sampled cells."""
    stored = [np.setdiff1d(distances[i].indices, [i]) for i in sample]
    k = min(len(s) for s in stored)
    nn = neighbours_of(X, sample, k)
    return float(np.mean([len(np.intersect1d(s, row)) / len(s) for s, row in zip(stored, nn, strict=True)]))


def compare(counts: Path, name: str, work: Path, *, label_key: str = "cell_type") -> dict:
    """rlae-sc run against scanpy's standard pipeline on ``counts``, in this run; both embeddings scored."""
    import anndata as ad
    from sklearn.metrics import adjusted_rand_score

    out = work / f"compare_{name}"
    rlae = monitored(
        [sys.executable, "-m", "rlae_sc", "run", str(counts), "--out", str(out), "--label-key", label_key],
        log=work / f"compare_{name}_rlae.log",
    )
    base = str(work / f"compare_{name}_scanpy")
    scanpy = monitored(
        [sys.executable, __file__, "--scanpy-worker", str(counts), base, label_key], log=work / f"{name}_scanpy.log"
    )
    emb = ad.read_h5ad(out / "embedding.h5ad", backed="r")
    labels = emb.obs[label_key].astype(str).str.strip().to_numpy()
    X = np.asarray(emb.obsm["X_rlae"])
    sample = np.random.default_rng(0).choice(len(X), min(5000, len(X)), replace=False)
    metrics = json.loads((out / "metrics.json").read_text())
    theirs = json.loads(Path(base + ".json").read_text())
    their_labels = ad.read_h5ad(counts, backed="r").obs[label_key].astype(str).str.strip()
    their_labels = their_labels.loc[theirs["obs_names"]].to_numpy()
    Y = np.load(base + ".X_pca.npy")
    sample_y = np.random.default_rng(0).choice(len(Y), min(5000, len(Y)), replace=False)
    has = ~np.isin(their_labels, list(MISSING))
    return {
        "dataset": name,
        "n_cells": int(emb.n_obs),
        "rlae_seconds": rlae["seconds"],
        "rlae_peak_gb": rlae["peak_gb"],
        "scanpy_seconds": scanpy["seconds"],
        "scanpy_peak_gb": scanpy["peak_gb"],
        "ratio": rlae["seconds"] / scanpy["seconds"],
        "scanpy_steps": theirs["times"],
        "rlae_label_agreement": label_agreement(X, labels, sample),
        "scanpy_label_agreement": label_agreement(Y, their_labels, sample_y),
        "rlae_knn_recall": graph_recall(X, emb.obsp["distances"], sample),
        "rlae_ari": metrics.get("ari"),
        "rlae_n_clusters": metrics["n_clusters"],
        "scanpy_ari": float(adjusted_rand_score(their_labels[has], np.asarray(theirs["leiden"])[has])),
        "scanpy_n_clusters": len(set(theirs["leiden"])),
        "rlae_metrics": {k: v for k, v in metrics.items() if k.endswith("seconds")},
    }


def atlas(counts: Path, work: Path, *, rescore: bool = False) -> dict:
    """The workflow on ``counts`` with streaming, in a work directory of its own; per-stage numbers. With
    ``rescore``, the workflow is not run again: the record is rebuilt from a finished run's files (its total time
    is then Snakemake's own elapsed time only)."""
    wd = work / f"atlas_wd_{counts.name.replace('.', '_')}"
    (wd / "config").mkdir(parents=True, exist_ok=True)
    (wd / "config" / "config.yaml").write_text(
        f"datasets:\n  atlas:\n    path: {counts}\n    label_key: cell_type\n    passes:\n      streaming: true\n"
    )
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2", "--directory", str(wd)]
    log = work / f"{counts.name.replace('.', '_')}_snakemake.log"
    total = {"rescored": True} if rescore else monitored(cmd, log=log)
    return scored(counts, wd, {**total, **snakemake_total(log)})


def snakemake_total(log: Path) -> dict:
    """The last lines of a Snakemake log and its elapsed time (seconds) when it reports one."""
    lines = log.read_text().splitlines()
    elapsed = [line.split("Elapsed time:")[1].strip() for line in lines if "Elapsed time:" in line]
    out = {"snakemake_log": lines[-3:]}
    if elapsed:
        h, m, sec = elapsed[-1].split(":")
        out["snakemake_elapsed_seconds"] = 3600 * int(h) + 60 * int(m) + float(sec)
    return out


def scored(counts: Path, wd: Path, total: dict) -> dict:
    """The record of a finished workflow in ``wd`` on ``counts``: each stage's numbers from the rules' benchmark
    files, the input's size, and the result scored (kNN recall, label agreement)."""
    import anndata as ad

    stages = {}
    for stage in STAGES:
        path = wd / "logs" / "atlas" / f"{stage}.benchmark.tsv"
        if path.exists():
            head, row = path.read_text().splitlines()[:2]
            values = dict(zip(head.split("\t"), row.split("\t"), strict=True))
            stages[stage] = {"seconds": float(values["s"]), "peak_gb": float(values["max_rss"]) / 1024}
    files = [counts] if counts.is_file() else [p for p in counts.rglob("*") if p.is_file()]
    result = {
        "n_cells_in": int(counts.stem.split("_")[-1]),
        "input": counts.name,
        "input_gb": sum(p.stat().st_size for p in files) / 1e9,
        "total": total,
        "stages": stages,
    }
    emb_path = wd / "results" / "atlas" / "embedding.h5ad"
    if emb_path.exists():
        emb = ad.read_h5ad(emb_path, backed="r")
        metrics = json.loads((wd / "results" / "atlas" / "metrics.json").read_text())
        X = np.asarray(emb.obsm["X_rlae"])
        sample = np.random.default_rng(0).choice(len(X), 2000, replace=False)
        labels = emb.obs["cell_type"].astype(str).str.strip().to_numpy()
        result.update(
            metrics=metrics,
            knn_recall=graph_recall(X, emb.obsp["distances"], sample),
            label_agreement=label_agreement(X, labels, sample),
            preprocessed_gb=(wd / "results" / "atlas" / "preprocessed.h5ad").stat().st_size / 1e9,
            dense_gb=emb.n_obs * metrics["n_genes"] * 4 / 1e9,
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=1_000_000, help="0 to skip the atlas run")
    parser.add_argument("--zarr", action="store_true", help="the atlas counts as a compressed zarr store")
    parser.add_argument(
        "--rescore", action="store_true", help="score a finished atlas run's files again without running the workflow"
    )
    parser.add_argument("--compare", type=int, default=100_000, help="0 to skip both comparisons")
    parser.add_argument("--kang", type=Path, default=ROOT.parent / "shared" / "data" / "kang_se_12261.h5ad")
    parser.add_argument("--scanpy-gb", type=float, default=20.0)
    parser.add_argument(
        "--scanpy-minutes", type=float, default=15.0, help="0 to skip scanpy on the atlas counts (keeps its record)"
    )
    parser.add_argument("--work", type=Path, default=HERE / "data")
    parser.add_argument("--record", type=Path, default=HERE / "atlas.json", help="the record to write (JSON)")
    parser.add_argument("--scanpy-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scanpy_worker:
        scanpy_pipeline(*args.scanpy_worker)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    # parts not run this time are kept from the record (each carries its own run block)
    report = json.loads(args.record.read_text()) if args.record.exists() else {}
    report = {"compare": [], "atlas": None, "scanpy_atlas": None, **report}
    if args.compare:
        report["compare"] = []
        counts = counts_file(args.compare, args.work)
        report["compare"].append(timed_part(lambda: compare(counts, f"resampled_{args.compare}", args.work)))
        _save(report, args.record)
    if args.compare and args.kang.exists():
        report["compare"].append(timed_part(lambda: compare(args.kang, "kang_se_12261", args.work)))
        _save(report, args.record)
    if args.cells:
        counts = counts_file(args.cells, args.work, suffix=".zarr" if args.zarr else ".h5ad")
        report["atlas"] = timed_part(lambda: atlas(counts, args.work, rescore=args.rescore))
        _save(report, args.record)
        if args.scanpy_minutes > 0:
            report["scanpy_atlas"] = timed_part(lambda: scanpy_atlas(counts, args))
            _save(report, args.record)


def scanpy_atlas(counts: Path, args) -> dict:
    """scanpy's standard pipeline on the atlas counts, stopped at ``--scanpy-gb`` or ``--scanpy-minutes``; the
    step it reached."""
    log = args.work / f"scanpy_{args.cells}.log"
    run = monitored(
        [sys.executable, __file__, "--scanpy-worker", str(counts), str(args.work / f"scanpy_{args.cells}"), "x"],
        limit_gb=args.scanpy_gb,
        limit_s=args.scanpy_minutes * 60,
        log=log,
    )
    steps = [line.split()[1] for line in log.read_text().splitlines() if line.startswith("step ")]
    return {**run, "last_step": steps[-1] if steps else ""}


def timed_part(run) -> dict:
    """``run()``'s result with its own ``run`` block (commit, machine, load before and after: benchmarks/record.py),
    as the parts of atlas.json may come from different runs."""
    header = record.header(PACKAGES)
    result = run()
    return {**result, "run": record.finish(header)}


def _save(report: dict, path: Path) -> None:
    """Write the record ``path``; parts this run skipped (``--compare 0``, ``--cells 0``) keep their previous
    results."""
    previous = json.loads(path.read_text()) if path.exists() else {}
    merged = {**report}
    # parts kept from a run before the parts had their own run block: the machine and date it recorded
    older = {key: previous[key] for key in ("machine", "date") if key in previous}
    for key in ("atlas", "scanpy_atlas"):
        if merged.get(key) is None and previous.get(key) is not None:
            merged[key] = {"run": older, **previous[key]}
    if not merged["compare"]:
        merged["compare"] = [{"run": older, **part} for part in previous.get("compare", [])]
    path.write_text(json.dumps(merged, indent=1, default=float))
    print(json.dumps(report, indent=1, default=float)[:4000], flush=True)


if __name__ == "__main__":
    main()
