"""Batch integration (issue 22): rlae-sc with and without its batch corrections against scanpy PCA, Harmony
and scVI on three tasks, scored with scib-metrics; and cross-study label mapping.

    .venv/bin/python benchmarks/integration.py                       # everything (scVI: about an hour on 2 cores)
    .venv/bin/python benchmarks/integration.py --skip-scvi --tasks pbmc3 kang_donors
    .venv/bin/python benchmarks/integration.py --quick --skip-scvi   # harness check; writes benchmarks/data/

Tasks (the counts are built by ``integration_data.py`` into ``benchmarks/data/integration/``):

- ``pbmc3``: garnett + soupx + kang on 1,272 shared genes, batch = study, label = coarse (15,231 cells).
- ``kang_donors``: kang_se_12261, batch = donor (sample_id), label = cell_type.
- ``confounded``: ``rlae_sc.simulate.batch_confounded(seed=0)``, batch = batch, label = cell_type; scanpy
  PCA of the same cells without the planted batch shifts is added as a reference row, and every embedding's
  15-NN are compared with that reference's.
- ``pbmc3_map``: train on two studies (``rlae-sc run``, labels ``coarse``), map the third (``rlae-sc map``);
  accuracy and macro-F1 of the transferred coarse labels on the held-out study, against a logistic
  regression on log-CPM trained on the same two studies.

Methods (``--methods``), each in a fresh process whose wall time, CPU time and peak memory are recorded:
``rlae`` (``rlae-sc run``), ``rlae_linear`` (``--batch-key``), ``rlae_mean`` (``--batch-key
--batch-centering mean``), ``rlae_harmony`` (``--batch-key --harmony``, obsm['X_rlae_harmony']),
``scanpy_pca`` (normalize_total, log1p, 2,000 seurat_v3 HVGs on counts with the batch key, scale, PCA 50),
``scanpy_harmony`` (that, then harmonypy on X_pca), ``scvi`` (scvi-tools SCVI on the same HVGs' counts,
defaults: n_latent 10, its default max_epochs, CPU) and ``logreg`` (the mapping baseline).

Scoring, per task, on the labelled cells every method embedded: scib-metrics' ``Benchmarker`` with its
default metrics (its own PCA of the log-normalised HVG matrix as the unintegrated reference, its own
pynndescent neighbours; timed apart from the methods), ``get_results(min_max_scale=False)``, total =
0.6 bio + 0.4 batch; and two numbers from exact neighbours: the mean fraction of a cell's 15 nearest
neighbours sharing its label, and the batch mixing of its 30 nearest neighbours, (inverse Simpson index of
their batches - 1) / (batches - 1), averaged over cells.

Writes ``integration.json`` (the record) and ``integration.md`` (tables, written from the JSON) here, or
with ``--quick`` into ``benchmarks/data/``; any method that fails stops the run with a non-zero exit.
A run of some ``--tasks`` keeps the other tasks' earlier results in the JSON (each task records its own run).

Wall times need an otherwise idle machine: torch's OpenMP threads spin while they wait, and on a busy 2-core
machine a 2-thread scVI epoch took 10x longer than a 1-thread one. On a shared machine run with
``OMP_WAIT_POLICY=PASSIVE`` in the environment or ``--threads 1``; both are recorded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import integration_data as data  # noqa: E402
import record  # noqa: E402
from record import clean as _clean  # noqa: E402
from record import git_state, machine  # noqa: E402

N_TOP_GENES = 2000
N_PCS = 50
K_LABEL = 15
K_MIX = 30
QUICK_SCVI_EPOCHS = 3
PACKAGES = (
    "rlae-sc",
    "torch",
    "numpy",
    "scipy",
    "pandas",
    "anndata",
    "scanpy",
    "pynndescent",
    "scikit-learn",
    "scikit-misc",
    "umap-learn",
    "faiss-cpu",
    "leidenalg",
    "harmonypy",
    "scvi-tools",
    "lightning",
    "scib-metrics",
    "jax",
    "jaxlib",
)


@dataclass(frozen=True)
class Task:
    name: str
    batch_key: str
    label_key: str
    rlae_args: tuple[str, ...] = ()  # extra `rlae-sc run` options for this data
    note: str = ""


# --min-genes 100 for pbmc3 and kang: they hold 1,272 and 1,287 pre-filtered genes, so the default 200 (meant for
# a whole transcriptome) would drop 216 and 161 cells; no cell of either detects fewer than 100.
FEW_GENES = (
    "; about 1,300 pre-filtered genes, so no cell detects fewer than 100 (rlae-sc's default 200 would drop 1.4%)"
)
TASKS = {
    "pbmc3": Task(
        "pbmc3", "study", "coarse", ("--min-genes", "100"), "garnett + soupx + kang, 1,272 shared genes" + FEW_GENES
    ),
    "kang_donors": Task(
        "kang_donors", "batch", "cell_type", ("--min-genes", "100"), "kang_se_12261, 8 donors" + FEW_GENES
    ),
    "confounded": Task("confounded", "batch", "cell_type", (), "rlae_sc.simulate.batch_confounded(seed=0)"),
}
MAP_TASK = "pbmc3_map"
ALL_TASKS = [*TASKS, MAP_TASK]
HELD_OUT = ("garnett", "soupx", "kang")


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    rlae_args: tuple[str, ...] | None = None  # an `rlae-sc run` variant; {batch} is the task's batch key
    obsm: str = "X_rlae"
    worker: str = ""  # otherwise a worker of this script
    needs: tuple[str, ...] = field(default=())  # `rlae-sc run` options the variant needs


# The rlae-sc variants, in table order; add a row here to benchmark another option of `rlae-sc run`.
RLAE_VARIANTS = [
    Method("rlae", "rlae-sc", ()),
    Method("rlae_linear", "rlae-sc + linear correction", ("--batch-key", "{batch}"), needs=("--batch-key",)),
    Method(
        "rlae_mean",
        "rlae-sc + linear correction (batch means)",
        ("--batch-key", "{batch}", "--batch-centering", "mean"),
        needs=("--batch-key", "--batch-centering"),
    ),
    Method(
        "rlae_harmony",
        "rlae-sc + Harmony",
        ("--batch-key", "{batch}", "--harmony"),
        obsm="X_rlae_harmony",
        needs=("--batch-key", "--harmony"),
    ),
]
OTHER_METHODS = [
    Method("scanpy_pca", "scanpy PCA", worker="scanpy_pca"),
    Method("scanpy_harmony", "scanpy PCA + Harmony", worker="scanpy_harmony"),
    Method("scvi", "scVI", worker="scvi"),
]
METHODS = {m.key: m for m in [*RLAE_VARIANTS, *OTHER_METHODS]}
LOGREG = "logreg"
MAP_METHODS = ("rlae", "rlae_linear", "rlae_mean")  # variants with a model that embeds new cells
UNASSIGNED = "unassigned"  # rlae-sc map's label for a cell it cannot vouch for (rlae_sc.mapping.UNASSIGNED)
METHOD_CHOICES = [*METHODS, LOGREG]
TRUTH = Method("batch_free_pca", "scanpy PCA of the batch-free counts (reference)", worker="scanpy_pca")


GNU_TIME = Path("/usr/bin/time")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
CHILD_ENV: dict[str, str] = {}  # --threads: set in every method's process


class MethodFailed(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------- processes


def rlae_exe() -> str:
    return str(Path(sys.executable).parent / "rlae-sc")


def timed(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` in a new process, its output to ``log``; wall seconds, CPU seconds and peak resident memory
    (GB) of the process. A non-zero exit raises :class:`MethodFailed` with the log's last lines.

    The peak comes from GNU ``/usr/bin/time`` where it exists: Linux carries a process's peak across exec, so
    the peak wait4 reports for a child of this script is at least this script's own size at the fork."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **CHILD_ENV}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    peak_file = log.with_name(log.name + ".maxrss")
    prefix = [str(GNU_TIME), "-f", "%M", "-o", str(peak_file)] if GNU_TIME.exists() else []
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen([*prefix, *cmd], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise MethodFailed(f"exit {rc}: {shlex.join(cmd)}\n--- last lines of {log} ---\n{tail}")
    peak_kb = int(peak_file.read_text().split()[-1]) if prefix else usage.ru_maxrss
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_gb": peak_kb * 1024 / 1e9,
        "peak_rss_from": "/usr/bin/time" if prefix else "wait4 (an upper bound: includes this script at the fork)",
        "command": shlex.join(cmd),
    }


def run_help() -> str:
    return subprocess.run([rlae_exe(), "run", "--help"], capture_output=True, text=True, check=True).stdout


def preflight(tasks: list[str], methods: list[str]) -> None:
    """Refuse before any work when a method or task cannot run here (missing option, package or function)."""
    problems = []
    helptext = run_help()
    for key in methods:
        m = METHODS.get(key)
        if m is None:
            continue
        missing = [opt for opt in m.needs if opt not in helptext]
        if missing:
            problems.append(
                f"method {key} needs `rlae-sc run {' '.join(missing)}`, which this rlae-sc lacks; "
                "leave it out of --methods"
            )
    modules = {"scanpy_harmony": "harmonypy", "scvi": "scvi"}
    wanted = {modules[k] for k in methods if k in modules}
    if set(tasks) & set(TASKS):
        wanted.add("scib_metrics")
    for mod in sorted(wanted):
        try:
            __import__(mod)
        except ImportError as exc:
            problems.append(f"cannot import {mod} ({exc}): .venv/bin/pip install -e '.[bench]'")
    if "confounded" in tasks:
        try:
            from rlae_sc.simulate import batch_confounded  # noqa: F401
        except ImportError:
            problems.append("task confounded needs rlae_sc.simulate.batch_confounded, which this rlae-sc lacks")
    if problems:
        sys.exit("integration.py: cannot run:\n  " + "\n  ".join(problems))


# ------------------------------------------------------------------------------------------------ workers


def hvg_genes(adata, batch_key: str | None) -> list[str]:
    """seurat_v3 highly variable genes of the counts in ``adata.X`` (batch-aware with ``batch_key``): 2,000,
    or every gene when there are no more."""
    import scanpy as sc

    if adata.n_vars <= N_TOP_GENES:
        return list(adata.var_names)
    hv = sc.pp.highly_variable_genes(
        adata, n_top_genes=N_TOP_GENES, flavor="seurat_v3", batch_key=batch_key, inplace=False
    )
    return list(adata.var_names[hv["highly_variable"].to_numpy()])


def worker(args: argparse.Namespace) -> None:
    """One method in this process: read ``--input``, write ``--result``.npz (embedding or predictions) and
    ``--result``.json (step times)."""
    t_start = time.perf_counter()
    import anndata as ad

    steps: dict[str, float] = {}
    info: dict = {}

    def step(name, fn):
        t0 = time.perf_counter()
        value = fn()
        steps[name] = time.perf_counter() - t0
        return value

    adata = step("read", lambda: ad.read_h5ad(args.input))
    if args.worker in ("scanpy_pca", "scanpy_harmony"):
        import scanpy as sc

        genes = step("hvg", lambda: hvg_genes(adata, args.batch_key))
        info["n_hvg"] = len(genes)
        step("normalize_log1p", lambda: (sc.pp.normalize_total(adata), sc.pp.log1p(adata)))
        adata = adata[:, genes].copy()
        step("scale", lambda: sc.pp.scale(adata))
        step("pca", lambda: sc.pp.pca(adata, n_comps=N_PCS))
        emb = adata.obsm["X_pca"]
        if args.worker == "scanpy_harmony":
            import harmonypy

            def harmony():
                h = harmonypy.run_harmony(emb, adata.obs, args.batch_key, verbose=False)
                z = np.asarray(h.Z_corr)
                return z if z.shape[0] == adata.n_obs else z.T

            emb = step("harmony", harmony)
    elif args.worker == "scvi":
        import scvi
        import torch

        genes = step("hvg", lambda: hvg_genes(adata, args.batch_key))
        info["n_hvg"] = len(genes)
        adata = adata[:, genes].copy()
        scvi.model.SCVI.setup_anndata(adata, batch_key=args.batch_key)
        model = scvi.model.SCVI(adata)
        info["max_epochs_default"] = scvi.model._utils.get_max_epochs_heuristic(adata.n_obs)
        info["max_epochs"] = QUICK_SCVI_EPOCHS if args.quick else info["max_epochs_default"]
        kwargs = {"max_epochs": QUICK_SCVI_EPOCHS} if args.quick else {}
        step("train", lambda: model.train(accelerator="cpu", **kwargs))
        info["epochs_run"] = len(model.history["elbo_train"])
        info["n_latent"] = model.module.n_latent
        info["seed"] = scvi.settings.seed
        info["torch_threads"] = torch.get_num_threads()
        emb = step("latent", lambda: model.get_latent_representation())
    elif args.worker == "logreg":
        from sklearn.linear_model import LogisticRegression

        from rlae_sc.labels import labelled_mask

        query = step("read_query", lambda: ad.read_h5ad(args.query))

        def log_cpm(a):
            import scipy.sparse as sp

            totals = np.asarray(a.X.sum(axis=1)).ravel()
            X = sp.diags(1e6 / np.maximum(totals, 1)) @ sp.csr_matrix(a.X, dtype=np.float64)
            return X.log1p().tocsr()

        has = labelled_mask(adata.obs[args.label_key])
        X_ref = step("log_cpm", lambda: log_cpm(adata[has]))
        y_ref = adata.obs[args.label_key][has].astype(str).to_numpy()
        clf = LogisticRegression(max_iter=2000)
        step("fit", lambda: clf.fit(X_ref, y_ref))
        X_query = log_cpm(query[:, adata.var_names])
        pred = step("predict", lambda: clf.predict(X_query))
        np.savez(args.result + ".npz", obs_names=np.asarray(query.obs_names, dtype=str), predicted=pred.astype(str))
        info["n_train"] = int(has.sum())
    else:
        raise SystemExit(f"unknown worker {args.worker}")
    if args.worker != "logreg":
        np.savez(
            args.result + ".npz",
            obs_names=np.asarray(adata.obs_names, dtype=str),
            embedding=np.asarray(emb, np.float32),
        )
    Path(args.result + ".json").write_text(
        json.dumps({"steps": steps, "in_process_s": time.perf_counter() - t_start, **info})
    )


def worker_cmd(name: str, input_path: Path, result: Path, *, batch_key: str | None, quick: bool, **extra) -> list:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--input", str(input_path)]
    cmd += ["--result", str(result)]
    if batch_key:
        cmd += ["--batch-key", batch_key]
    if quick:
        cmd += ["--quick"]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return cmd


# ----------------------------------------------------------------------------------------------- methods


def rlae_run_cmd(counts: Path, out: Path, task: Task, method: Method, *, label_key: str, batch_key: str) -> list:
    extra = [a.format(batch=batch_key) for a in method.rlae_args]
    return [
        rlae_exe(), "run", str(counts), "--out", str(out), "--label-key", label_key,
        "--dataset", f"{task.name}_{method.key}", *task.rlae_args, *extra,
    ]  # fmt: skip


def run_method(method: Method, task: Task, counts: Path, work: Path, quick: bool) -> tuple[dict, tuple]:
    """Run one method on a task's counts; its record and its embedding (obs_names, matrix)."""
    import anndata as ad

    out = work / method.key
    print(f"[{task.name}] {method.label} ...", flush=True)
    if method.rlae_args is not None:
        cmd = rlae_run_cmd(counts, out, task, method, label_key=task.label_key, batch_key=task.batch_key)
        record = timed(cmd, work / f"{method.key}.log")
        emb = ad.read_h5ad(out / "embedding.h5ad", backed="r")
        if method.obsm not in emb.obsm:
            raise MethodFailed(f"{out / 'embedding.h5ad'} has no obsm[{method.obsm!r}]")
        names, X = np.asarray(emb.obs_names), np.asarray(emb.obsm[method.obsm], dtype=np.float32)
        emb.file.close()
        metrics = json.loads((out / "metrics.json").read_text())
        record["stages"] = {k: v for k, v in metrics.items() if k.endswith("_seconds")}
        record["k"] = metrics.get("k")
        record["n_cells_removed_by_qc"] = metrics.get("n_cells_removed")
    else:
        result = work / method.key
        cmd = worker_cmd(method.worker, counts, result, batch_key=task.batch_key, quick=quick)
        record = timed(cmd, work / f"{method.key}.log")
        saved = np.load(str(result) + ".npz", allow_pickle=False)
        names, X = saved["obs_names"], saved["embedding"]
        info = json.loads(Path(str(result) + ".json").read_text())
        record["stages"] = info.pop("steps")
        record.update(info)
    if not np.isfinite(X).all():
        raise MethodFailed(f"{method.label} on {task.name}: the embedding has non-finite values")
    record.update(label=method.label, n_cells_embedded=int(len(names)), dims=int(X.shape[1]))
    print(f"[{task.name}] {method.label}: {record['wall_s']:.1f} s, {len(names)} cells x {X.shape[1]}", flush=True)
    return record, (names, X)


# ----------------------------------------------------------------------------------------------- scoring


def neighbours(X: np.ndarray, k: int) -> np.ndarray:
    """The k nearest other cells of every cell (exact, Euclidean), n x k."""
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X, return_distance=False)
    self_hit = idx == np.arange(len(X))[:, None]
    self_hit[~self_hit.any(axis=1), -1] = True  # duplicates can push a cell out of its own list: drop the last
    return idx[~self_hit].reshape(len(X), k)


def knn_graph(nn: np.ndarray):
    """The neighbour lists ``nn`` (cells x k) as a kNN graph (cells x cells, CSR), the form that
    :func:`rlae_sc.cluster.label_agreement` and :func:`rlae_sc.cluster.batch_mixing` read."""
    import scipy.sparse as sp

    n, k = nn.shape
    return sp.csr_matrix((np.ones(nn.size), nn.ravel(), np.arange(0, nn.size + 1, k)), shape=(n, n))


def label_agreement(nn: np.ndarray, labels: np.ndarray) -> float:
    """Mean fraction of each cell's neighbours (rows of ``nn``) that share its label (rlae-sc's own measure)."""
    from rlae_sc.cluster import label_agreement as on_graph

    return on_graph(knn_graph(nn), pd.Series(labels))


def batch_mixing(nn: np.ndarray, batches: np.ndarray) -> float:
    """Mean over cells of (inverse Simpson index of the neighbours' batches - 1) / (batches - 1): 0 when every
    neighbour is from one batch, 1 when the neighbours spread evenly over all batches (rlae-sc's own measure)."""
    from rlae_sc.cluster import batch_mixing as on_graph

    return on_graph(knn_graph(nn), pd.Series(batches))


def knn_overlap(nn: np.ndarray, nn_ref: np.ndarray) -> float:
    """Mean fraction of each cell's neighbours in ``nn`` that are among its neighbours in ``nn_ref``."""
    return float(np.mean([len(np.intersect1d(a, b)) / len(a) for a, b in zip(nn, nn_ref, strict=True)]))


def score(task: Task, counts: Path, embeddings: dict[str, tuple], truth_key: str | None = None) -> dict:
    """scib-metrics' Benchmarker (defaults) and the exact-neighbour numbers, on the labelled cells that every
    method embedded."""
    import anndata as ad
    import pandas as pd
    import scanpy as sc
    from scib_metrics.benchmark import Benchmarker

    from rlae_sc.labels import labelled_mask

    a = ad.read_h5ad(counts)
    common = set(a.obs_names)
    for names, _ in embeddings.values():
        common &= set(names)
    embedded = a.obs_names.isin(list(common))
    labelled = labelled_mask(a.obs[task.label_key])
    keep = embedded & labelled
    cells = {
        "n_cells": int(a.n_obs),
        "n_unlabelled": int((~labelled).sum()),
        "n_not_embedded_by_every_method": int((~embedded).sum()),
        "n_scored": int(keep.sum()),
    }
    genes = hvg_genes(a, task.batch_key)
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    s = a[keep, genes].copy()
    s.obs = pd.DataFrame(
        {
            task.batch_key: s.obs[task.batch_key].astype(str).to_numpy(),
            task.label_key: s.obs[task.label_key].astype(str).to_numpy(),
        },
        index=s.obs_names,
    )
    for key, (names, X) in embeddings.items():
        rows = pd.Index(names).get_indexer(s.obs_names)
        assert (rows >= 0).all()
        s.obsm[key] = X[rows]
    print(f"[{task.name}] scib-metrics on {s.n_obs} cells, {len(embeddings)} embeddings ...", flush=True)
    bm = Benchmarker(s, task.batch_key, task.label_key, list(embeddings), progress_bar=False)
    t0 = time.perf_counter()
    bm.prepare()
    t1 = time.perf_counter()
    bm.benchmark()
    t2 = time.perf_counter()
    table = bm.get_results(min_max_scale=False)
    table = table.drop(index="Metric Type")
    labels = s.obs[task.label_key].to_numpy()
    batches = s.obs[task.batch_key].to_numpy()
    nn_truth = neighbours(s.obsm[truth_key], K_LABEL) if truth_key else None
    scores = {}
    for key in embeddings:
        row = {col: _num(v) for col, v in table.loc[key].items()}
        bio, batch = row.pop("Bio conservation"), row.pop("Batch correction")
        total = row.pop("Total")
        assert math.isclose(total, 0.6 * bio + 0.4 * batch, rel_tol=1e-9, abs_tol=1e-12)
        nn = neighbours(s.obsm[key], K_MIX)
        scores[key] = {
            "bio_conservation": bio,
            "batch_correction": batch,
            "total": total,
            "metrics": row,
            f"knn{K_LABEL}_label_agreement": label_agreement(nn[:, :K_LABEL], labels),
            f"knn{K_MIX}_batch_mixing": batch_mixing(nn, batches),
        }
        if nn_truth is not None:
            scores[key][f"knn{K_LABEL}_overlap_with_batch_free"] = knn_overlap(nn[:, :K_LABEL], nn_truth)
    return {
        "cells": cells,
        "n_genes_for_scib_pca": len(genes),
        "n_batches": int(len(np.unique(batches))),
        "batch_sizes": {str(k): int(v) for k, v in pd.Series(batches).value_counts().sort_index().items()},
        "label_sizes": {str(k): int(v) for k, v in pd.Series(labels).value_counts().sort_index().items()},
        "scib_prepare_s": t1 - t0,
        "scib_benchmark_s": t2 - t1,
        "scores": scores,
    }


def _num(v) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


# ------------------------------------------------------------------------------------------------- tasks


def build_task_data(name: str, work: Path) -> dict[str, Path]:
    """Write the task's counts (and the batch-free counts for ``confounded``); their paths."""
    if name == "pbmc3":
        return {"counts": data.write(data.build_pbmc3(), work / "pbmc3.h5ad")}
    if name == "kang_donors":
        return {"counts": data.write(data.build_kang_donors(), work / "kang_donors.h5ad")}
    if name == "confounded":
        counts, truth = data.build_confounded()
        return {
            "counts": data.write(counts, work / "confounded.h5ad"),
            "truth": data.write(truth, work / "confounded_batch_free.h5ad"),
        }
    raise ValueError(name)


def run_integration_task(name: str, methods: list[str], args, work_root: Path) -> dict:
    task = TASKS[name]
    work = work_root / name
    paths = build_task_data(name, work_root)
    records, embeddings = {}, {}
    for key in methods:
        if key not in METHODS:
            continue
        records[key], embeddings[key] = run_method(METHODS[key], task, paths["counts"], work, args.quick)
    truth_key = None
    if "truth" in paths:
        records[TRUTH.key], embeddings[TRUTH.key] = run_method(TRUTH, task, paths["truth"], work, args.quick)
        records[TRUTH.key]["reference"] = True
        truth_key = TRUTH.key
    scoring = score(task, paths["counts"], embeddings, truth_key=truth_key)
    for key, numbers in scoring.pop("scores").items():
        records[key].update(numbers)
    return {
        "kind": "integration",
        "batch_key": task.batch_key,
        "label_key": task.label_key,
        "data": task.note,
        "rlae_run_options": list(task.rlae_args),
        "scoring": scoring,
        "methods": records,
    }


def mapping_scores(truth, predicted, ref_labels: set[str]) -> dict:
    """Accuracy and macro-F1 over the labelled query cells whose label the reference has; a missing or
    unassigned prediction (no label, or rlae-sc map's ``unassigned``) counts as wrong. Macro-F1 averages over
    the labels of those cells."""
    import pandas as pd
    from sklearn.metrics import f1_score

    from rlae_sc.labels import labelled_mask

    truth, pred = pd.Series(truth), pd.Series(predicted)
    labelled = labelled_mask(truth)
    known = truth.astype(str).isin(ref_labels).to_numpy()
    scored, novel = labelled & known, labelled & ~known
    assigned = labelled_mask(pred) & (pred.astype(str) != UNASSIGNED).to_numpy()
    p_all = np.where(assigned, pred.astype(str), "(unassigned)")
    t, p = truth[scored].astype(str).to_numpy(), p_all[scored]
    classes = sorted(set(t))
    return {
        "n_scored": int(scored.sum()),
        "accuracy": float(np.mean(p == t)),
        "macro_f1": float(f1_score(t, p, labels=classes, average="macro", zero_division=0)),
        "n_unassigned": int(np.sum(p == "(unassigned)")),
        "recall": {c: float(np.mean(p[t == c] == c)) for c in classes},
        "n_novel": int(novel.sum()),  # labelled with a label the reference lacks: not scored
        "novel_unassigned_share": float(np.mean(~assigned[novel])) if novel.any() else None,
    }


def run_mapping_task(methods: list[str], args, work_root: Path) -> dict:
    import anndata as ad
    import pandas as pd

    from rlae_sc.labels import labelled_mask

    task = TASKS["pbmc3"]
    pbmc3 = data.build_pbmc3()
    out = {
        "kind": "mapping",
        "label_key": "coarse",
        "batch_key": "study",
        "rlae_run_options": list(task.rlae_args),
        "held_out": {},
    }
    for held in args.held_out:
        work = work_root / MAP_TASK / held
        in_ref = (pbmc3.obs["study"] != held).to_numpy()
        ref_path = data.write(pbmc3[in_ref].copy(), work / "reference.h5ad")
        query_path = data.write(pbmc3[~in_ref].copy(), work / "query.h5ad")
        ref_coarse = pbmc3.obs["coarse"][in_ref]
        ref_labels = set(ref_coarse[labelled_mask(ref_coarse)].astype(str))
        truth = pbmc3.obs["coarse"][~in_ref]
        query_names = pbmc3.obs_names[~in_ref]
        entry = {
            "reference_studies": sorted(set(pbmc3.obs["study"][in_ref].astype(str))),
            "n_reference": int(in_ref.sum()),
            "n_query": int((~in_ref).sum()),
            "reference_labels": sorted(ref_labels),
            "query_labels_not_in_reference": {
                str(k): int(v)
                for k, v in truth[labelled_mask(truth) & ~truth.astype(str).isin(ref_labels).to_numpy()]
                .astype(str)
                .value_counts()
                .items()
            },
            "n_query_unlabelled": int((~labelled_mask(truth)).sum()),
            "methods": {},
        }
        for key in methods:
            if key in MAP_METHODS:
                m = METHODS[key]
                print(f"[{MAP_TASK}/{held}] {m.label} ...", flush=True)
                run_dir, map_dir = work / key / "reference_run", work / key / "map"
                cmd = rlae_run_cmd(ref_path, run_dir, task, m, label_key="coarse", batch_key="study")
                train = timed(cmd, work / f"{key}.run.log")
                cmd = [
                    rlae_exe(), "map", str(query_path), "--model", str(run_dir / "model.npz"),
                    "--reference", str(run_dir / "embedding.h5ad"), "--out-dir", str(map_dir),
                    "--label-key", "coarse", "--truth-key", "coarse",
                ]  # fmt: skip
                mapped = timed(cmd, work / f"{key}.map.log")
                q = ad.read_h5ad(map_dir / "mapped.h5ad", backed="r")
                pred = q.obs["rlae_label"].astype(object).reindex(query_names)
                q.file.close()
                summary = json.loads((map_dir / "mapping.json").read_text())
                record = {
                    "label": m.label,
                    "train": train,
                    "map": mapped,
                    "wall_s": train["wall_s"] + mapped["wall_s"],
                    "n_not_in_mapped": int(pred.isna().sum()),
                    "rlae_map_summary": {k: v for k, v in summary.items() if not isinstance(v, (dict, list))},
                    **mapping_scores(truth.to_numpy(), pred.to_numpy(), ref_labels),
                }
            elif key == LOGREG:
                print(f"[{MAP_TASK}/{held}] logistic regression ...", flush=True)
                result = work / "logreg"
                cmd = worker_cmd(
                    "logreg", ref_path, result, batch_key=None, quick=False, query=query_path, label_key="coarse"
                )
                record = timed(cmd, work / "logreg.log")
                saved = np.load(str(result) + ".npz", allow_pickle=False)
                pred = pd.Series(saved["predicted"], index=saved["obs_names"]).reindex(query_names)
                info = json.loads(Path(str(result) + ".json").read_text())
                record.update(label="logistic regression on log-CPM", stages=info.pop("steps"), **info)
                record.update(mapping_scores(truth.to_numpy(), pred.to_numpy(), ref_labels))
            else:
                continue
            entry["methods"][key] = record
            print(
                f"[{MAP_TASK}/{held}] {record['label']}: accuracy {record['accuracy']:.3f}, "
                f"macro-F1 {record['macro_f1']:.3f}, {record['wall_s']:.1f} s",
                flush=True,
            )
        out["held_out"][held] = entry
    return out


# ------------------------------------------------------------------------------------------------ record


def packages() -> dict:
    return record.packages(PACKAGES)


# -------------------------------------------------------------------------------------------------- tables


def _f(x, digits=3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


METRIC_ORDER = [
    "Isolated labels",
    "KMeans NMI",
    "KMeans ARI",
    "Silhouette label",
    "cLISI",
    "BRAS",
    "iLISI",
    "KBET",
    "Graph connectivity",
    "PCR comparison",
]


def markdown(record: dict) -> str:
    run = record["run"]
    lines = [
        "# Batch integration (issue 22)",
        "",
        "Written by `benchmarks/integration.py` from `integration.json`"
        + (" (**--quick**: scVI for a few epochs only; not a result)" if run.get("quick") else "")
        + ".",
        "",
        f"- Run: {run['started']} to {run['finished']}; `{run['command']}`",
        f"- Commit {run['git']['commit'][:12]}" + (" with uncommitted changes" if run["git"]["dirty"] else ""),
        f"- Machine: {run['machine']['processor']}, {run['machine']['cpu_count']} cores, "
        f"{run['machine']['memory_total_gb']} GB; {run['machine']['platform']}; load average "
        f"{' / '.join(f'{v:.2f}' for v in run['load_before'])} before, "
        f"{' / '.join(f'{v:.2f}' for v in run['load_after'])} after",
        "- Threads: "
        + (
            ", ".join(f"{k}={v}" for k, v in run.get("thread_environment", {}).items() if v)
            or "the libraries' defaults (no OMP/MKL/OpenBLAS/numba thread variables set)"
        ),
        "- Packages: " + ", ".join(f"{k} {v}" for k, v in run["packages"].items() if v),
        "",
        "Scores are scib-metrics' `Benchmarker` with its default metrics, unscaled (`min_max_scale=False`); "
        "total = 0.6 bio conservation + 0.4 batch correction. Its PCR comparison uses its own PCA (50 "
        "components) of the log-normalised highly variable genes as the unintegrated reference. "
        f"{K_LABEL}-NN label: mean fraction of a cell's {K_LABEL} nearest neighbours (exact, Euclidean) sharing "
        f"its label; {K_MIX}-NN mixing: (inverse Simpson index of the batches of its {K_MIX} nearest neighbours "
        "- 1) / (batches - 1), averaged over cells (1: neighbours spread evenly over all batches; with unequal "
        "batch sizes a random embedding scores below 1). Scores use the labelled cells that every method "
        "embedded. Wall time is that of the method's own process: for rlae-sc rows the whole `rlae-sc run` "
        "(QC, preprocessing, training, embedding, kNN graph, Leiden, UMAP, report), for the others reading the "
        "counts, preprocessing and the embedding; scib-metrics' time is listed apart.",
    ]
    for name in ALL_TASKS:
        t = record["tasks"].get(name)
        if t is None:
            continue
        lines += ["", f"## {name}", ""]
        trun = t.get("run", {})
        if trun and trun.get("started") != run.get("started"):
            lines += [f"From an earlier run: {trun.get('started')}, commit {trun.get('commit', '')[:12]}, "
                      f"`{trun.get('command')}`.", ""]  # fmt: skip
        if t["kind"] == "integration":
            lines += integration_table(t)
        else:
            lines += mapping_table(t)
    return "\n".join(lines) + "\n"


def integration_table(t: dict) -> list[str]:
    sc_ = t["scoring"]
    c = sc_["cells"]
    lines = [
        f"{t['data']}; batch key `{t['batch_key']}` ({sc_['n_batches']} batches), label key `{t['label_key']}`. "
        f"{c['n_scored']:,} of {c['n_cells']:,} cells scored ({c['n_unlabelled']} unlabelled, "
        f"{c['n_not_embedded_by_every_method']} removed by some method's QC). rlae-sc options: "
        f"`{' '.join(t['rlae_run_options']) or 'defaults'}`. scib-metrics: prepare (PCA, neighbours) "
        f"{sc_['scib_prepare_s']:.0f} s, metrics {sc_['scib_benchmark_s']:.0f} s.",
        "",
    ]
    methods = t["methods"]
    overlap = any(f"knn{K_LABEL}_overlap_with_batch_free" in m for m in methods.values())
    head = "| method | bio | batch | total | 15-NN label | 30-NN mixing |" + (
        " 15-NN of batch-free |" if overlap else ""
    )
    lines += [head + " wall s | CPU s | peak GB |", "|---" * (head.count("|") + 2) + "|"]
    for m in methods.values():
        row = (
            f"| {m['label']} | {_f(m['bio_conservation'])} | {_f(m['batch_correction'])} | **{_f(m['total'])}** "
            f"| {_f(m[f'knn{K_LABEL}_label_agreement'])} | {_f(m[f'knn{K_MIX}_batch_mixing'])} |"
        )
        if overlap:
            row += f" {_f(m.get(f'knn{K_LABEL}_overlap_with_batch_free'))} |"
        lines.append(row + f" {m['wall_s']:.1f} | {m['cpu_s']:.1f} | {m['peak_rss_gb']:.2f} |")
    lines += ["", "| method | " + " | ".join(METRIC_ORDER) + " |", "|---" * (len(METRIC_ORDER) + 1) + "|"]
    for m in methods.values():
        lines.append(f"| {m['label']} | " + " | ".join(_f(m["metrics"].get(k)) for k in METRIC_ORDER) + " |")
    notes = [
        f"{m['label']}: {m['epochs_run']} epochs (its default for these cells: {m['max_epochs_default']}), "
        f"n_latent {m['n_latent']}, {m['n_hvg']:,} genes"
        for m in methods.values()
        if "epochs_run" in m
    ]
    if notes:
        lines += ["", "; ".join(notes) + "."]
    return lines


def mapping_table(t: dict) -> list[str]:
    lines = [
        "Train on two studies, map the third: `rlae-sc run` on the reference studies (labels `coarse`), then "
        "`rlae-sc map` of the held-out study's cells with its defaults (cells it cannot vouch for are "
        "`unassigned`); baseline: logistic regression on log-CPM of all shared genes, trained on the same "
        "reference cells (it assigns every cell). Accuracy and macro-F1 over the held-out study's labelled "
        "cells whose coarse label the reference has; an unassigned cell counts as wrong. Cells of labels the "
        "reference lacks are not scored; the last column gives the share of them left unassigned. Wall time: "
        "training run plus mapping (rlae-sc), or the whole fit and prediction (baseline). Only the rlae-sc "
        "variants whose model embeds new cells are mapped (not Harmony's).",
        "",
        "| held out | reference | scored cells | method | accuracy | macro-F1 | unassigned | wall s "
        "| novel-label cells unassigned |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for held, e in t["held_out"].items():
        for m in e["methods"].values():
            lines.append(
                f"| {held} | {' + '.join(e['reference_studies'])} | {m['n_scored']:,} | {m['label']} "
                f"| **{_f(m['accuracy'])}** | {_f(m['macro_f1'])} | {m['n_unassigned']} | {m['wall_s']:.1f} "
                f"| {_f(m.get('novel_unassigned_share'))} |"
            )
    excluded = [
        f"{held}: " + ", ".join(f"{k} {v}" for k, v in e["query_labels_not_in_reference"].items())
        for held, e in t["held_out"].items()
        if e["query_labels_not_in_reference"]
    ]
    if excluded:
        lines += ["", "Not scored (labels absent from the reference): " + "; ".join(excluded) + "."]
    return lines


# ---------------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=ALL_TASKS, choices=ALL_TASKS)
    ap.add_argument("--methods", nargs="+", default=METHOD_CHOICES, choices=METHOD_CHOICES)
    ap.add_argument("--skip-scvi", action="store_true", help="leave scVI out (it takes most of the time)")
    ap.add_argument("--quick", action="store_true", help=f"scVI for {QUICK_SCVI_EPOCHS} epochs: a harness check")
    ap.add_argument("--held-out", nargs="+", default=list(HELD_OUT), choices=HELD_OUT, help="pbmc3_map studies")
    ap.add_argument("--out", type=Path, default=None, help="folder for integration.json/.md (default: here)")
    ap.add_argument("--work", type=Path, default=HERE / "data" / "integration", help="scratch (git-ignored)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="set OMP/MKL/OpenBLAS/numba threads to N in every method's process (default: the libraries' own)",
    )
    ap.add_argument("--markdown-only", action="store_true", help="rewrite integration.md from integration.json")
    for hidden in ("--worker", "--input", "--result", "--batch-key", "--query", "--label-key"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    out_dir = args.out or (HERE / "data" if args.quick else HERE)
    json_path, md_path = out_dir / "integration.json", out_dir / "integration.md"
    if args.markdown_only:
        md_path.write_text(markdown(json.loads(json_path.read_text())))
        print(md_path.read_text())
        return
    methods = [m for m in args.methods if not (args.skip_scvi and m == "scvi")]
    if args.threads:
        CHILD_ENV.update({var: str(args.threads) for var in THREAD_VARS})
    preflight(args.tasks, methods)
    args.work.mkdir(parents=True, exist_ok=True)
    started = datetime.now().astimezone()
    run = {
        "started": started.isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "cwd": os.getcwd(),
        "quick": args.quick,
        "tasks": args.tasks,
        "methods": methods,
        "git": git_state(),
        "machine": machine(),
        "load_before": list(os.getloadavg()),
        "thread_environment": {
            var: ({**os.environ, **CHILD_ENV}).get(var) for var in (*THREAD_VARS, "OMP_WAIT_POLICY")
        },
        "packages": packages(),
    }
    tasks = {}
    for name in args.tasks:
        t0 = time.perf_counter()
        tasks[name] = (
            run_mapping_task(methods, args, args.work)
            if name == MAP_TASK
            else run_integration_task(name, methods, args, args.work)
        )
        tasks[name]["task_wall_s"] = time.perf_counter() - t0
        tasks[name]["run"] = {
            "started": run["started"],
            "commit": run["git"]["commit"],
            "dirty": run["git"]["dirty"],
            "command": run["command"],
        }
    run["finished"] = datetime.now().astimezone().isoformat(timespec="seconds")
    run["load_after"] = list(os.getloadavg())
    previous = json.loads(json_path.read_text()) if json_path.exists() else {}
    kept = {k: v for k, v in previous.get("tasks", {}).items() if k not in tasks and k in ALL_TASKS}
    record = _clean({"benchmark": "integration", "issue": 22, "run": run, "tasks": {**kept, **tasks}})
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(record, indent=1) + "\n")
    text = markdown(record)
    md_path.write_text(text)
    print(text)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    try:
        main()
    except MethodFailed as exc:
        sys.exit(f"integration.py: a method failed, nothing written:\n{exc}")
