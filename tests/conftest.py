"""Shared fixtures: small synthetic counts, and the real matrices in ../shared/data when present."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import anndata as ad
import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.metrics import adjusted_rand_score

from rlae_sc.simulate import synthetic_counts

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


# Files whose tests read one session fixture's long run (conftest's workflow_run, kang_run) share a worker.
SHARED_RUNS = {
    "test_browser": "workflow_run",
    "test_slurm": "workflow_run",
    "test_workflow": "workflow_run",
    "test_federated": "kang_run",
    "test_real_data": "kang_run",
}


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist's ``--dist loadgroup`` (``make test``: ``-n auto``), each file runs whole on one
    worker, so its module fixtures are built once, and the files of one shared run (``SHARED_RUNS``) on the
    same worker, so the run is made once. A wrapper: the marks must be there before xdist's own hook reads them."""
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        item.add_marker(pytest.mark.xdist_group(SHARED_RUNS.get(module, module)))
    return (yield)


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a test module (restored after): the theory's tests take thousands of steps on
    small matrices (20 x 20 up to pbmc68k_reduced's 765 genes), where a second thread costs 5-10x on a busy
    2-core machine (rlae_sc.papers.page does the same for the figures)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def small_counts():
    """600 cells x 400 genes, 4 cell types, rank-5 structure, 13 MT- genes."""
    return synthetic_counts(n_cells=600, n_genes=400, n_types=4, rank=5, seed=1)


@pytest.fixture(scope="session")
def small_counts_file(small_counts, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "small.h5ad"
    small_counts.write_h5ad(path)
    return path


# What a test needs from its machine, and the environment variable with which CI makes it mandatory (``.ci/run``
# sets each where it can provide the piece; tests/test_slurm.py has its own RLAE_SC_REQUIRE_SLURM).
REQUIRE_DATA = "RLAE_SC_REQUIRE_DATA"  # the real matrices of ../shared/data
REQUIRE_BROWSER = "RLAE_SC_REQUIRE_BROWSER"  # Chromium, chromedriver and selenium (tests/test_browser.py)


def required(switch: str) -> bool:
    """Whether the environment variable ``switch`` asks for its piece: set to anything but empty or ``0``."""
    return os.environ.get(switch, "") not in ("", "0")


def unavailable(reason: str, switch: str) -> NoReturn:
    """End the calling test for want of a piece of its machine: skipped with ``reason``, or failed with the same
    reason where the environment variable ``switch`` (``REQUIRE_DATA``, ``REQUIRE_BROWSER``) requires the piece."""
    if required(switch):
        pytest.fail(f"{reason} ({switch} is set: this test may not be skipped)", pytrace=False)
    pytest.skip(reason)


def shared_file(name: str) -> Path:
    """A file of ../shared/data; else the test is skipped with the reason, or failed under ``RLAE_SC_REQUIRE_DATA``."""
    path = SHARED_DATA / name
    if not path.exists():
        unavailable(f"{path} not found: real-data tests need ../shared/data beside the checkout", REQUIRE_DATA)
    return path


@pytest.fixture(scope="session")
def kang_run(tmp_path_factory):
    """``rlae-sc run`` on kang_se_12261 (12,261 cells, label key ``cell_type``), once for the tests that read its
    outputs (the end-to-end bars in tests/test_real_data.py, the pooled reference in tests/test_federated.py);
    returns the output folder."""
    from rlae_sc.pipeline import run

    out = tmp_path_factory.mktemp("kang") / "pooled"
    run(shared_file("kang_se_12261.h5ad"), out, label_key="cell_type")
    return out


def blocks_per_worker(task_stream: list[dict]) -> dict[str, int]:
    """How many blocks of :func:`rlae_sc.engine.run_pass` (tasks ``_block-...``) each Dask worker computed, by
    worker address, from the records of the scheduler's task stream (``distributed.get_task_stream``)."""
    counts: dict[str, int] = {}
    for task in task_stream:  # keys of client.submit: the function's name, "-", a random id
        if str(task["key"]).startswith("_block-") and task["status"] == "OK":
            counts[task["worker"]] = counts.get(task["worker"], 0) + 1
    return counts


def trained_matrix(pre: ad.AnnData) -> np.ndarray:
    """The matrix a preprocessed AnnData trains on (float64, dense), recomputed here: ``X`` itself, or, when
    ``X`` holds log-normalised values, centred and scaled with ``var['mean']`` and ``var['std']``, then clipped
    and re-centred with the recipe's ``clip`` and ``offset``."""
    if pre.uns["rlae_preprocess"].get("X") != "log_normalized":
        return np.asarray(pre.X, dtype=np.float64)
    Z = (pre.X.toarray().astype(np.float64) - pre.var["mean"].to_numpy()) / pre.var["std"].to_numpy()
    recipe = json.loads(pre.uns["rlae_recipe"])
    if recipe["clip"] is not None:
        Z = np.clip(Z, -recipe["clip"], recipe["clip"]) - np.asarray(recipe["offset"])
    return Z


def recompute(out: Path, k: int) -> dict:
    """The acceptance metrics recomputed from ``preprocessed.h5ad`` and ``embedding.h5ad`` with scipy's eigh,
    independently of rlae-sc's own metric code. Returns per-component ``cos`` (k,) and the summary numbers."""
    pre = ad.read_h5ad(out / "preprocessed.h5ad")
    emb = ad.read_h5ad(out / "embedding.h5ad")
    Z = trained_matrix(pre)
    X = Z - Z.mean(axis=0)
    m = X.shape[1]
    e, U = scipy.linalg.eigh(X.T @ X, subset_by_index=[m - k, m - 1])
    e, U = e[::-1], U[:, ::-1]
    P = emb.varm["rlae_directions"][emb.var["rlae_used"].to_numpy()].astype(np.float64)
    cos = np.abs(np.sum(P * U, axis=0)) / np.linalg.norm(P, axis=0)
    rel = np.abs(emb.uns["rlae"]["eigenvalues"] - e) / e
    Q = np.linalg.qr(P)[0]
    return {
        "cos": cos,
        "min_abs_cos_top10": cos[:10].min(),
        "eigenvalue_max_rel_err": rel.max(),
        "eigenvalue_max_rel_err_top10": rel[:10].max(),
        "subspace_distance": 1 - np.linalg.norm(U.T @ Q) ** 2 / k,
        "ari": adjusted_rand_score(emb.obs["cell_type"].astype(str), emb.obs["leiden"].astype(str)),
        "scores_check": np.abs(emb.obsm["X_rlae"] - Z @ P).max(),
    }


def scanpy_seurat_v3(cells: ad.AnnData, n_top_genes: int) -> ad.AnnData:
    """scanpy's own selection on ``cells`` (counts): genes in at least 3 cells, then ``seurat_v3``;
    ``var['highly_variable']`` marks the chosen genes."""
    import warnings

    import scanpy as sc

    ref = cells.copy()
    sc.pp.filter_genes(ref, min_cells=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.highly_variable_genes(ref, flavor="seurat_v3", n_top_genes=n_top_genes)
    return ref


def thread_vars(threads: int) -> dict[str, str]:
    """Environment variables that set OpenMP's, MKL's, OpenBLAS's and numba's threads to ``threads`` in a fresh
    process (before numpy and torch load)."""
    return {
        var: str(threads) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
    }


def rlae_cli(
    *args, check: bool = True, threads: int | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``rlae-sc ARGS...`` in a fresh interpreter; output captured as text. ``threads``: torch's (and
    OpenMP's) threads there (``OMP_NUM_THREADS``), as ``one_torch_thread`` sets them in this process; ``env``:
    more environment variables there."""
    env = os.environ | ({"OMP_NUM_THREADS": str(threads)} if threads else {}) | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "rlae_sc", *map(str, args)], capture_output=True, text=True, check=check, env=env
    )


def snakemake(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    """``snakemake -s Snakefile ARGS...`` in a fresh interpreter, with this interpreter's bin first on PATH (the
    rules call ``rlae-sc``); output captured as text."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )


def workflow_dir(counts: ad.AnnData, wd: Path) -> Path:
    """``wd`` made ready for the ``.test`` configuration: its ``config/`` and ``counts`` as ``data/tiny.h5ad``."""
    shutil.copytree(ROOT / ".test" / "config", wd / "config")
    (wd / "data").mkdir()
    counts.write_h5ad(wd / "data" / "tiny.h5ad")
    return wd


@pytest.fixture(scope="session")
def workflow_run(small_counts, tmp_path_factory):
    """The ``.test`` configuration on ``small_counts``, run once, uninterrupted and locally (``--cores 2``), for
    every test that only reads its outputs (tests/test_workflow.py, and the local reference of
    tests/test_slurm.py). Returns ``(workdir, log)``, the log being Snakemake's output."""
    wd = workflow_dir(small_counts, tmp_path_factory.mktemp("wf"))
    res = snakemake("--cores", "2", "--directory", str(wd))
    assert res.returncode == 0, res.stderr[-3000:]
    return wd, res.stdout + res.stderr
