"""Dask as deployed: a ``dask scheduler`` and ``dask worker`` processes over TCP on 127.0.0.1.

The passes of preprocess, train and directions run on the workers and give the serial directions; a worker
killed (SIGKILL) in the middle of a pass costs its blocks, which are computed again, and the pass gives the
same sums as an undisturbed one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from distributed import Client, get_task_stream

from rlae_sc import pipeline
from rlae_sc.dask_engine import ONE_BLAS_THREAD, WorkersLost
from rlae_sc.engine import run_pass
from rlae_sc.lae import theory
from rlae_sc.model import load_model
from rlae_sc.products import scatter_block
from rlae_sc.rows import H5adMatrix
from rlae_sc.simulate import synthetic_counts
from tests.conftest import blocks_per_worker

ROOT = Path(__file__).resolve().parents[1]
PRE = {"min_genes": 50, "n_top_genes": 200}
K = 10


@contextmanager
def tcp_cluster(n_workers: int, tmp_path: Path, **scheduler_config: str):
    """``dask scheduler`` and ``n_workers`` ``dask worker`` processes (one thread each, with a nanny) on
    127.0.0.1; yields ``(address, workers)``. ``scheduler_config``: ``DASK_DISTRIBUTED__SCHEDULER__*`` values."""
    tmp_path.mkdir(exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),  # workers unpickle rlae_sc's (and this module's) block functions
        **ONE_BLAS_THREAD,
        **{f"DASK_DISTRIBUTED__SCHEDULER__{key.upper()}": val for key, val in scheduler_config.items()},
    )
    local = ["--host", "127.0.0.1", "--no-dashboard"]

    def start(name: str, *args: str) -> subprocess.Popen:
        with open(tmp_path / f"{name}.log", "w") as log:
            cmd = [sys.executable, "-m", "dask", *args, *local]
            return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=log)

    procs = [start("scheduler", "scheduler", "--port", str(port))]
    try:
        procs += [
            start(f"worker{i}", "worker", address, "--nthreads", "1", "--name", f"w{i}") for i in range(n_workers)
        ]
        with Client(address, timeout=60) as client:
            client.wait_for_workers(n_workers, timeout=120)
        yield address, procs[1:]
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)


@pytest.fixture(scope="module")
def counts(tmp_path_factory):
    """20,000 cells (two blocks of up to 16,384 rows in every pass of the stages) x 400 genes, rank 12."""
    path = tmp_path_factory.mktemp("dask") / "counts.h5ad"
    synthetic_counts(n_cells=20_000, n_genes=400, n_types=6, rank=12, seed=3).write_h5ad(path)
    return path


def stages(counts: Path, out: Path, dask: str | None, watch: Client | None = None) -> tuple[Path, dict]:
    """preprocess (streaming), train and directions, with their passes on ``dask``; returns the model file and,
    by stage: the blocks of rows read in this process (``H5adMatrix.read`` calls) and, with ``watch`` (a client
    of the scheduler at ``dask``), the blocks each Dask worker computed (the scheduler's task stream)."""
    out.mkdir()
    pre, model = out / "pre.h5ad", out / "model.npz"
    run = {
        "preprocess": lambda: pipeline.preprocess_file(counts, pre, streaming=True, dask=dask, **PRE),
        "train": lambda: pipeline.train_file(pre, model, n_components=K, dask=dask),
        "directions": lambda: pipeline.directions_file(pre, model, out / "dir.h5ad", dask=dask),
    }
    read, reads = H5adMatrix.read, []

    def counted(self, start, stop):
        reads.append(start)
        return read(self, start, stop)

    blocks = {}
    try:
        H5adMatrix.read = counted  # in this process only: workers unpickle the class from rlae_sc itself
        for name, stage in run.items():
            reads.clear()
            with get_task_stream(watch) if watch is not None else nullcontext() as stream:
                stage()
            blocks[name] = {"here": len(reads), "workers": blocks_per_worker(stream.data) if watch else {}}
    finally:
        H5adMatrix.read = read
    return model, blocks


def test_passes_on_tcp_workers_give_the_serial_directions(counts, tmp_path):
    model, serial_blocks = stages(counts, tmp_path / "serial", None)
    serial = load_model(model)
    with tcp_cluster(2, tmp_path) as (address, _), Client(address) as client:
        workers = set(client.scheduler_info()["workers"])
        assert len(workers) == 2
        assert os.getpid() not in client.run(os.getpid).values()  # the workers are processes of their own
        model, dask_blocks = stages(counts, tmp_path / "dask", address, watch=client)
        on_dask = load_model(model)
    # every block that a stage's passes read here when serial was computed by this cluster's workers instead,
    # and none here; over the run, both workers took part
    for name, serial_run in serial_blocks.items():
        on_workers = dask_blocks[name]["workers"]
        assert serial_run["here"] >= 2 and serial_run["workers"] == {}, (name, serial_run)
        assert sum(on_workers.values()) == serial_run["here"] and set(on_workers) <= workers, (name, on_workers)
        assert dask_blocks[name]["here"] == 0, (name, dask_blocks[name])
    assert set().union(*(b["workers"] for b in dask_blocks.values())) == workers, dask_blocks
    cos = theory.alignment(serial.directions, on_dask.directions)
    assert cos[:10].min() >= 1 - 1e-9, cos
    assert on_dask.lam == pytest.approx(serial.lam, rel=1e-5)  # estimated by float32 iterations


def slow(block, start: int, *, inner, delay: float, calls: str):
    """``inner(block, start)`` after ``delay`` seconds, noting each call's first row and the process group of
    the worker that runs it in the file ``calls``."""
    with open(calls, "a") as f:
        f.write(f"{start} {os.getpgrp()}\n")
    time.sleep(delay)
    return inner(block, start)


def started(calls: Path, group: int | None = None) -> list[int]:
    """First rows of the blocks computed so far (a block computed twice counts twice); with ``group``, only
    those started by the worker of that process group."""
    lines = [line.split() for line in calls.read_text().splitlines()] if calls.exists() else []
    return [int(start) for start, pgrp in lines if group is None or int(pgrp) == group]


def kill_when_started(calls: Path, n_blocks: int, worker: subprocess.Popen) -> None:
    """SIGKILL ``worker`` (the worker process and its nanny, whose process group is ``worker.pid``) mid-pass:
    once ``n_blocks`` blocks have started, at the moment ``worker`` starts its next one, so that block is
    running (for its ``delay``) when the worker dies. Polled every 20 ms."""

    def watch():
        while len(started(calls)) < n_blocks:
            time.sleep(0.02)
        before = len(started(calls, worker.pid))
        while len(started(calls, worker.pid)) == before:
            time.sleep(0.02)
        os.killpg(worker.pid, signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


@pytest.fixture(scope="module")
def preprocessed(counts, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "pre.h5ad"
    pipeline.preprocess_file(counts, out, streaming=True, **PRE)
    return H5adMatrix(str(out))


@pytest.fixture(scope="module")
def serial_scatter(preprocessed, tmp_path_factory):
    return scatter_pass(preprocessed, tmp_path_factory.mktemp("serial") / "calls", client=None)


def scatter_pass(matrix: H5adMatrix, calls: Path, **kw) -> np.ndarray:
    """The sums ``X^T X`` of the scatter pass, over 20 blocks of 1,000 rows that take at least 0.2 s each."""
    fn = partial(slow, inner=partial(scatter_block, precision="float64"), delay=0.2, calls=str(calls))
    return run_pass(matrix, fn, chunk_size=1000, **kw)[0]["C"]


def assert_same_sums(C: np.ndarray, C_serial: np.ndarray) -> None:
    # the same blocks summed in the same order: equal to the serial sums up to each block's product rounding
    np.testing.assert_allclose(C, C_serial, rtol=1e-12, atol=1e-12 * np.abs(C_serial).max())


@pytest.mark.parametrize("allowed_failures", [None, "0"], ids=["dask-reruns", "rlae-resubmits"])
def test_a_worker_killed_mid_pass_costs_nothing_but_time(preprocessed, serial_scatter, tmp_path, allowed_failures):
    """With Dask's defaults the scheduler reruns the lost blocks itself; with ``allowed-failures: 0`` it gives
    up on the blocks that were running (KilledWorker) and :func:`run_pass` submits them again."""
    config = {} if allowed_failures is None else {"allowed_failures": allowed_failures}
    calls = tmp_path / "calls"
    with tcp_cluster(2, tmp_path, **config) as (address, workers), Client(address) as client:
        kill_when_started(calls, 6, workers[0])
        C = scatter_pass(preprocessed, calls, client=client)
        assert len(client.scheduler_info()["workers"]) == 1
    assert sorted(set(started(calls))) == list(range(0, 20_000, 1000))
    assert len(started(calls)) > 20, "no block was computed twice: the worker died with nothing to lose"
    assert_same_sums(C, serial_scatter)


def test_a_pass_that_loses_every_worker_stops_with_a_named_error_and_resumes(preprocessed, serial_scatter, tmp_path):
    checkpoint = tmp_path / "scatter.checkpoint.npz"
    calls = tmp_path / "calls"  # one file for both runs: the checkpoint is for the same pass function
    with tcp_cluster(1, tmp_path / "first") as (address, workers), Client(address) as client:
        kill_when_started(calls, 9, workers[0])  # as the tenth block starts
        with pytest.raises(WorkersLost, match=f"run it again to resume from {checkpoint}"):
            scatter_pass(preprocessed, calls, client=client, checkpoint=checkpoint, no_workers_seconds=3)
    with np.load(checkpoint) as saved:
        resume_at = int(saved["next_block"]) * 1000
    assert 0 < resume_at < 10_000
    n_first = len(started(calls))
    with tcp_cluster(1, tmp_path / "second") as (address, _), Client(address) as client:
        C = scatter_pass(preprocessed, calls, client=client, checkpoint=checkpoint)
    assert started(calls)[n_first:] == list(range(resume_at, 20_000, 1000))  # only the blocks not yet summed
    assert_same_sums(C, serial_scatter)
